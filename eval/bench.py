"""Cost benchmarks, each printed as a ratio against a named baseline measured in the same run.

1. Document encoding throughput: ragpipe's encoder (passages sorted by length, bf16 where the CPU
   has it) vs. the baseline "sentence-transformers defaults" (SentenceTransformer.encode, fp32,
   batch 32) on the same SciFact texts.
2. Cold query: wall time of a fresh `ragpipe query` process on a built index (hybrid) vs. the
   baseline of a fresh process that only imports sentence-transformers and encodes the query.

Usage: python eval/bench.py [--index indexes/scifact] [--docs 600] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUERY = "statins reduce breast cancer mortality"


def encoding(data: Path, n_docs: int) -> None:
    from sentence_transformers import SentenceTransformer

    from ragpipe.encoders import BiEncoder

    with open(data / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(n_docs), f)]
    texts = [f"{r['title']} {r['text']}" for r in rows]
    encoder = BiEncoder()
    baseline = SentenceTransformer(str(encoder.folder), device="cpu")
    baseline.encode(texts[:8])
    encoder.encode_documents(texts[:8])
    t = time.perf_counter()
    baseline.encode(texts, batch_size=32)
    base_s = time.perf_counter() - t
    t = time.perf_counter()
    encoder.encode_documents(texts)
    ours_s = time.perf_counter() - t
    print(f"encoding {n_docs} SciFact documents (truncated at 256 tokens):")
    print(f"  baseline sentence-transformers defaults (fp32, batch 32): {n_docs / base_s:6.1f} docs/s")
    print(f"  ragpipe BiEncoder (precision={encoder.precision}, batch {encoder.batch_size}, length-sorted): "
          f"{n_docs / ours_s:6.1f} docs/s")
    print(f"  speed-up: {base_s / ours_s:.2f}x")


def cold_query(index: Path, repeats: int) -> None:
    from ragpipe.models import resolve_model

    folder = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    baseline_code = (
        "from sentence_transformers import SentenceTransformer\n"
        f"SentenceTransformer({str(folder)!r}, device='cpu').encode([{QUERY!r}])\n"
    )
    commands = {
        "baseline: python -c 'import sentence_transformers; encode query'": [sys.executable, "-c", baseline_code],
        "ragpipe query (hybrid, prints results)": [sys.executable, "-m", "ragpipe", "query", str(index), QUERY],
    }
    medians = {}
    for name, command in commands.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            times.append(time.perf_counter() - t)
        medians[name] = statistics.median(times)
        print(f"cold {name}: median {medians[name]:.2f} s over {repeats} runs (min {min(times):.2f}, max {max(times):.2f})")
    base, ours = medians.values()
    print(f"  ragpipe cold query / baseline encode-only process: {ours / base:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/scifact"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RAGPIPE_DATA", "../shared/datasets")))
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not (args.index / "manifest.json").is_file():
        sys.exit(f"no index at {args.index}: build it first with `ragpipe eval scifact` or `ragpipe index`")
    cold_query(args.index, args.repeats)
    encoding(args.data, args.docs)


if __name__ == "__main__":
    main()
