"""Rerank latency benchmarks, each printed against a named baseline measured in the same process.

Both rerankers score real SciFact candidates: each test claim's top documents of the first-stage
run that `ragpipe eval` wrote (hybrid-weighted by default). Setups are timed in turn on every query
(so drift in the machine's speed hits all of them alike), warm, one query at a time, as
`ragpipe eval` times them; the first query is a warm-up and is not counted.

1. Cross-encoder over 50 candidates: baseline sentence-transformers ``CrossEncoder.predict`` on the
   same trained folder (fp32, its default batch of 32, pairs cut at the same 128 tokens), against
   ragpipe's cross-encoder at the trained 128 tokens in fp32, in bf16 where that is the default
   (a CPU with native bf16), and at 96 tokens in the default precision.
2. LLM head over 20 candidates: baseline ragpipe with ``share_prefix=0`` (every prompt runs whole),
   against the default, where the start all prompts share runs once. Scores are compared too; in
   bf16 both differ from fp32 by rounding, printed beside the gap for scale.

Usage: python eval/bench_rerank.py [--queries 40] [--ce models/scifact-ce] [--llm models/scifact-llm-head]
       [--run runs/scifact-rerank/hybrid-weighted.trec] [--dataset scifact]

It needs what eval/rerank_all.sh makes first: the trained models (the training commands are in its
header) and the first-stage run (``DATASETS=scifact eval/rerank_all.sh`` writes it). Dataset names
resolve under $RAGPIPE_DATA, by default ../shared/datasets as in the other scripts here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np


def _candidates(dataset: str, run_path: str, queries: int, depth: int) -> list[tuple[str, list[str]]]:
    from ragpipe.corpus import load_corpus
    from ragpipe.datasets import load_dataset
    from ragpipe.trec import read_run
    from ragpipe.types import document_text, ranked

    data = load_dataset(dataset)
    docs = {d.doc_id: d for d in load_corpus(data.path / "corpus.jsonl").documents}
    run = read_run(run_path)
    out = []
    for qid in [q for q in data.queries if run.get(q)][: queries + 1]:  # a query the run left empty is skipped
        top = [doc_id for doc_id, _ in ranked(run[qid])[:depth]]
        out.append((data.queries[qid], [document_text(docs[d]) for d in top]))
    return out


def _race(setups: dict[str, Callable[[str, Sequence[str]], np.ndarray]], work) -> dict[str, list[float]]:
    """Milliseconds per query for each setup, the setups taking turns on each query."""
    times: dict[str, list[float]] = {name: [] for name in setups}
    for position, (query, documents) in enumerate(work):
        for name, score in setups.items():
            t = time.perf_counter()
            score(query, documents)
            if position:  # the first query warms up every setup
                times[name].append((time.perf_counter() - t) * 1000.0)
    return times


def _report(title: str, times: dict[str, list[float]], baseline: str) -> None:
    print(title)
    base = statistics.median(times[baseline])
    width = max(len(name) for name in times)
    for name, values in times.items():
        p50, p95 = statistics.median(values), float(np.percentile(values, 95))
        tag = "baseline" if name == baseline else f"{base / p50:.2f}x the baseline's speed"
        print(f"  {name:<{width}} p50 {p50:7.0f} ms  p95 {p95:7.0f} ms  ({tag})")


def cross_encoder(folder: str, work) -> None:
    from sentence_transformers import CrossEncoder

    from ragpipe.rerankers.cross_encoder import CrossEncoderReranker

    trained = CrossEncoderReranker(folder, precision="fp32")
    baseline = CrossEncoder(folder, device="cpu", max_length=trained.max_tokens)
    setups = {
        f"baseline: sentence-transformers CrossEncoder.predict, {trained.max_tokens} tokens, fp32":
            lambda q, docs: baseline.predict([(q, d) for d in docs], show_progress_bar=False),
        f"ragpipe cross-encoder, max_tokens={trained.max_tokens} (as trained), fp32": trained.score,
    }
    default = CrossEncoderReranker(folder)  # precision=auto: bf16 where the CPU has it natively
    if default.precision != "fp32":
        setups[f"ragpipe cross-encoder, max_tokens={trained.max_tokens}, {default.precision} (default here)"] = default.score
    short = CrossEncoderReranker(folder, max_tokens=96)
    setups[f"ragpipe cross-encoder, max_tokens=96, {short.precision}"] = short.score
    _report(f"cross-encoder {folder}, {len(work[0][1])} candidates, {len(work) - 1} queries:",
            _race(setups, work), next(iter(setups)))


def llm_head(folder: str, work) -> None:
    from ragpipe.rerankers.llm import LLMReranker

    whole = LLMReranker(folder, share_prefix=False)
    shared = LLMReranker(folder)
    setups = {"baseline: ragpipe LLM head, share_prefix=0 (every prompt whole)": whole.score,
              "ragpipe LLM head, share_prefix=1 (default)": shared.score}
    _report(f"LLM head {folder} (layer {shared.layer}, {shared.max_tokens} tokens, {shared.precision}), "
            f"{len(work[0][1])} candidates, "
            f"{len(work) - 1} queries:", _race(setups, work), next(iter(setups)))
    sample = work[:5]
    whole_scores = [whole.score(q, d) for q, d in sample]
    gap = max(float(np.abs(w - shared.score(q, d)).max()) for w, (q, d) in zip(whole_scores, sample))
    spread = min(float(np.ptp(w)) for w in whole_scores)
    print(f"  largest score difference between the two on 5 queries: {gap:.1e} (smallest score spread of a query: "
          f"{spread:.1f})")
    if shared.precision != "fp32":  # rounding, not sharing, sets the gap: compare whole prompts across precisions
        exact = LLMReranker(folder, share_prefix=False, precision="fp32")
        rounding = max(float(np.abs(w - exact.score(q, d)).max()) for w, (q, d) in zip(whole_scores, sample))
        print(f"  for scale: whole prompts in {shared.precision} vs fp32 differ by up to {rounding:.1e} on the same queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--run", default="runs/scifact-rerank/hybrid-weighted.trec")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--ce", default="models/scifact-ce")
    parser.add_argument("--llm", default="models/scifact-llm-head")
    args = parser.parse_args()
    os.environ.setdefault("RAGPIPE_DATA", "../shared/datasets")
    missing = [p for p in (args.run, args.ce, args.llm) if p and not os.path.exists(p)]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not found; run eval/rerank_all.sh first (see this "
                         "script's docstring)")
    from ragpipe.encoders.bi_encoder import machine_summary

    print(f"machine: {machine_summary()}")
    if args.ce:
        cross_encoder(args.ce, _candidates(args.dataset, args.run, args.queries, 50))
    if args.llm:
        llm_head(args.llm, _candidates(args.dataset, args.run, args.queries, 20))


if __name__ == "__main__":
    main()
