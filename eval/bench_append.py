"""Append vs. full rebuild on a SciFact-size index, measured in the same run.

Builds an index over all but the last N SciFact documents, appends the last N, and compares the
append's wall time with a full rebuild over the same final documents (baseline). Also checks that
the appended index answers like the rebuilt one (top-10 overlap per query, hybrid).

Usage: python eval/bench_append.py [--append 100] [--work /tmp/ragpipe-bench-append]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from ragpipe.corpus import load_corpus
from ragpipe.datasets import load_dataset
from ragpipe.index import Index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RAGPIPE_DATA", "../shared/datasets")))
    parser.add_argument("--append", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ragpipe-bench-append"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    documents = load_corpus(args.data / "scifact").documents
    head, tail = documents[: -args.append], documents[-args.append :]

    Index.build(head, args.work / "live")
    live = Index.load(args.work / "live")
    live.encoder  # noqa: B018 - load the model outside the timed append, as the rebuild's is below
    t = time.perf_counter()
    appended = live.append(tail)
    append_s = time.perf_counter() - t

    from ragpipe.encoders import BiEncoder

    BiEncoder()  # resolve the model outside the timed rebuild too
    t = time.perf_counter()
    rebuilt = Index.build(documents, args.work / "rebuilt")
    rebuild_s = time.perf_counter() - t

    queries = load_dataset(args.data / "scifact").queries
    a = appended.search(queries, k=10).run
    b = rebuilt.search(queries, k=10).run
    overlap = sum(len(set(a[q]) & set(b[q])) for q in queries) / (10 * len(queries))
    identical = sum(list(a[q]) == list(b[q]) for q in queries)
    print(f"SciFact: {len(head)} documents indexed, then {len(tail)} appended")
    print(f"  append {len(tail)} documents:            {append_s:7.2f} s")
    print(f"  baseline full rebuild ({len(documents)} docs): {rebuild_s:7.2f} s")
    print(f"  rebuild / append: {rebuild_s / append_s:.1f}x")
    print(f"  hybrid top-10 agreement with the rebuild: {overlap:.4f} of results, "
          f"{identical}/{len(queries)} queries identical in order")


if __name__ == "__main__":
    main()
