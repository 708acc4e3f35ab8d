"""Layer sweep of the LLM reranker on SciFact: quality and cost of stopping the forward pass early.

For every layer L in --layers, on the first --queries judged TEST queries, reranking the hybrid
(weighted) first stage's top --depth:

  cosine      hidden-cosine (mean-pooled states of query and document, each run alone), zero-shot
  yesno       yes/no next-token score of the joint prompt at L (logit lens below the top), zero-shot
  head last   logistic-regression head on the joint prompt's last-token state at L
  head mean   the same on the mean of the joint prompt's states (first token left out)
              Heads are trained on SciFact TRAIN judgments (hard negatives mined from the same
              first stage), never on test.
  +fs (w)     the better head (by held-out TRAIN pairwise accuracy) interpolated with the first
              stage, w * minmax(head) + (1 - w) * minmax(first stage), w fitted on held-out TRAIN
              queries' own top --depth
  ms p50/p95  warm in-process rerank latency per query (--depth candidates) of rerankers that stop
              the forward pass at L (hidden-cosine; head), measured last, on --timing-queries

The first stage alone, and a random order of its top --depth, are scored on the same queries in the
same run. One forward pass to the highest layer yields every layer's features (the early-exit
hooks capture each requested layer), so quality costs one pass per input; latency is measured with
real rerankers that stop at L (a head's latency does not depend on its weights, so untrained heads
time it before the heads exist).

    python eval/llm_layer_sweep.py                     # all 300 test queries (about an hour on 2 cores)
    python eval/llm_layer_sweep.py --queries 100       # the first 100
    python eval/llm_layer_sweep.py --timing-only       # re-time into the saved result (quiet machine)

Features are cached per query under $RAGPIPE_CACHE/llm_sweep/, so a stopped run resumes.

Writes eval/results/llm_layer_sweep.txt and .json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ragpipe.datasets import load_dataset  # noqa: E402
from ragpipe.evaluation import open_or_build_index  # noqa: E402
from ragpipe.index import IndexConfig, SearchOptions  # noqa: E402
from ragpipe.metrics import evaluate  # noqa: E402
from ragpipe.rerankers import load_reranker, rerank_run  # noqa: E402
from ragpipe.rerankers.llm import (  # noqa: E402
    DEFAULT_LLM,
    DEFAULT_MAX_TOKENS_BY_METHOD,
    cache_dir,
    NO_SPELLINGS,
    YES_SPELLINGS,
    LinearHead,
    LLMReranker,
    example_pairs,
    fit_linear_head,
    joint_prompt,
    log_loss,
    pair_features,
    pairwise_accuracy,
    save_head,
)
from ragpipe.training import document_text, judged_examples, split_examples  # noqa: E402

FIRST_STAGE = SearchOptions(mode="hybrid", fusion="weighted")
GRID = [i / 10 for i in range(11)]
POOLINGS = ("last", "mean")


class FeatureCache:
    """Features per query on disk (``.npz``, no pickle), so a stopped sweep resumes where it was."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get(self, kind: str, key: str, compute) -> dict[str, np.ndarray]:
        path = self.root / kind / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        arrays = compute()
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return arrays


def flat(features: dict[str, dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{p}/{layer}": x for p, by_layer in features.items() for layer, x in by_layer.items()}


def nested(arrays: dict[str, np.ndarray]) -> dict[str, dict[int, np.ndarray]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    for name, x in arrays.items():
        p, layer = name.split("/")
        out.setdefault(p, {})[int(layer)] = x
    return out


class Precomputed:
    """A reranker that replays scores computed beforehand; its ``documents`` are doc ids."""

    def __init__(self, scores: dict[str, dict[str, float]]):
        self.name, self.scores = "replay", scores

    def score(self, query, documents):
        return np.array([self.scores[query][d] for d in documents])


def rerank_ndcg(first, queries, qrels, scores, depth, weight=None) -> float:
    """nDCG@10 of ``first`` reranked (top ``depth``) by ``scores`` ({qid: {doc: score}})."""
    first = {q: first[q] for q in queries}
    by_text = {queries[q]: scores[q] for q in first}
    run = rerank_run(first, queries, lambda d: d, Precomputed(by_text), depth=depth, interpolation=weight).run
    return evaluate(qrels, run, ["ndcg@10"]).mean["ndcg@10"]


def latency(reranker, queries, first, docs, depth) -> tuple[float, float]:
    """(p50, p95) ms per query of ``reranker`` in rerank_run, after one warm-up query."""
    warm = next(iter(queries))
    reranker.score(queries[warm], [document_text(docs[d]) for d in list(first[warm])[:depth]])
    result = rerank_run({q: first[q] for q in queries}, queries, lambda d: document_text(docs[d]), reranker, depth=depth)
    ms = np.array(list(result.timings_ms.values()))
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def head_settings(layer: int, pooling: str, max_tokens: int, prompt: str) -> dict:
    return {"kind": "llm-head", "base_model": DEFAULT_LLM, "layer": layer, "pooling": pooling,
            "max_tokens": max_tokens, "prompt": prompt, "head": "head.npz"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "scifact")
    parser.add_argument("--queries", type=int, default=None, help="first N judged test queries (default all)")
    parser.add_argument("--train-queries", type=int, default=None, help="first N judged train queries (default all)")
    parser.add_argument("--negatives", type=int, default=7, help="hard negatives per training query")
    parser.add_argument("--layers", default="3,6,9,12,15,18,21,24,27,30")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--timing-queries", type=int, default=20)
    parser.add_argument("--ql-queries", type=int, default=100, help="queries for the query-likelihood row (top layer)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, capped at the cores)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where features are kept between runs (default $RAGPIPE_CACHE/llm_sweep/<settings>)")
    parser.add_argument("--timing-only", action="store_true",
                        help="re-measure only the latencies (e.g. on a quiet machine) into an existing result")
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results" / "llm_layer_sweep")
    args = parser.parse_args()
    layers = sorted({int(x) for x in args.layers.split(",")})
    started = time.perf_counter()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731

    test = load_dataset(args.dataset, "test")
    train_data = load_dataset(args.dataset, "train")
    index, _ = open_or_build_index(test, args.index, IndexConfig(), True, False, True)
    docs = {d.doc_id: d for d in index.documents()}
    test_queries = dict(list(test.queries.items())[: args.queries]) if args.queries else dict(test.queries)
    test_qrels = {q: test.qrels[q] for q in test_queries}
    first = index.search(test_queries, k=100, options=FIRST_STAGE).run
    first_ndcg = evaluate(test_qrels, first, ["ndcg@10"]).mean["ndcg@10"]
    rng = random.Random(0)
    random_ndcg = float(np.mean([
        rerank_ndcg(first, test_queries, test_qrels,
                    {q: {d: rng.random() for d in list(first[q])[: args.depth]} for q in test_queries}, args.depth)
        for _ in range(10)
    ]))
    log(f"first stage (hybrid weighted) nDCG@10 {first_ndcg:.4f}, random order of its top {args.depth} "
        f"{random_ndcg:.4f}, on {len(test_queries)} test queries")

    extractor = LLMReranker(method="hidden-cosine", layer=max(layers), max_tokens=args.max_tokens, threads=args.threads)
    import torch

    threads = torch.get_num_threads()
    prompt = joint_prompt(extractor.lm).template
    settings = json.dumps([args.dataset, layers, args.max_tokens, extractor.precision, POOLINGS, prompt])
    cache = FeatureCache(args.cache or cache_dir() / "llm_sweep" / hashlib.sha1(settings.encode()).hexdigest()[:12])
    hidden = extractor.lm.hidden_size

    timing_queries = dict(list(test_queries.items())[: args.timing_queries])
    if args.timing_only:  # e.g. again on a quiet machine, when another process competed
        timing = measure_latency(layers, timing_queries, first, docs, args, prompt, hidden)
        result = json.loads(args.out.with_suffix(".json").read_text())
        for row in result["layers"]:
            row.update(timing["layers"][row["layer"]])
        result.update({k: v for k, v in timing.items() if k != "layers"})
        write(result, args.out)
        return

    # -- query likelihood (top layer only: it needs its own prompt and pass) ---------------------
    ql_queries = dict(list(test_queries.items())[: args.ql_queries])
    ql_qrels = {q: test_qrels[q] for q in ql_queries}
    ql_row = {"queries": len(ql_queries),
              "first_stage": evaluate(ql_qrels, {q: first[q] for q in ql_queries}, ["ndcg@10"]).mean["ndcg@10"]}
    for max_tokens in sorted({DEFAULT_MAX_TOKENS_BY_METHOD["query-likelihood"], args.max_tokens}):
        ql = LLMReranker(method="query-likelihood", max_tokens=max_tokens, threads=args.threads)
        ql_scores = {}
        for qid, text in ql_queries.items():
            candidates = list(first[qid])[: args.depth]
            texts = [document_text(docs[d]) for d in candidates]
            scored = cache.get(f"ql-{max_tokens}", text + "\0" + "\0".join(texts), lambda: {"scores": ql.score(text, texts)})
            ql_scores[qid] = dict(zip(candidates, scored["scores"].tolist()))
        ql_row[f"max_tokens_{max_tokens}"] = rerank_ndcg(first, ql_queries, ql_qrels, ql_scores, args.depth)
        log(f"query-likelihood, max_tokens={max_tokens}: nDCG@10 {ql_row[f'max_tokens_{max_tokens}']:.4f} on {len(ql_queries)} queries")

    # -- training the heads (TRAIN split only) -----------------------------------------------------
    train_queries = dict(list(train_data.queries.items())[: args.train_queries]) if args.train_queries else dict(train_data.queries)
    examples = judged_examples(index, train_queries, train_data.qrels, negatives=args.negatives)
    train, held = split_examples(examples, 0.1)
    train_pairs, held_pairs = example_pairs(train), example_pairs(held)
    t = time.perf_counter()
    x_train = joint_pair_features(cache, "train", extractor, train, layers, log)
    x_held = joint_pair_features(cache, "held", extractor, held, layers, log)
    feature_seconds = time.perf_counter() - t
    heads, head_stats = {}, {}
    for layer in layers:
        for p in POOLINGS:
            t = time.perf_counter()
            head = heads[layer, p] = fit_linear_head(x_train[p][layer], train_pairs.labels)
            fit = time.perf_counter() - t
            held_scores = head.decision(x_held[p][layer])
            head_stats[layer, p] = {
                "train_pairwise_accuracy": pairwise_accuracy(head.decision(x_train[p][layer]), train_pairs.labels, train_pairs.groups),
                "held_out_pairwise_accuracy": pairwise_accuracy(held_scores, held_pairs.labels, held_pairs.groups),
                "held_out_log_loss": log_loss(held_scores, held_pairs.labels),
                "fit_seconds": fit,
            }
        log(f"layer {layer}: held-out pairwise accuracy " + ", ".join(
            f"{p} {head_stats[layer, p]['held_out_pairwise_accuracy']:.3f}" for p in POOLINGS))
    best_pooling = {layer: max(POOLINGS, key=lambda p: head_stats[layer, p]["held_out_pairwise_accuracy"]) for layer in layers}

    # Interpolation weight per layer, on the held-out TRAIN queries' own first-stage candidates.
    held_queries = {e.qid: e.query for e in held}
    held_qrels = {q: train_data.qrels[q] for q in held_queries}
    held_first = index.search(held_queries, k=100, options=FIRST_STAGE).run
    held_features = {}
    for qid, text in held_queries.items():
        candidates = [document_text(docs[d]) for d in list(held_first[qid])[: args.depth]]
        held_features[qid] = nested(cache.get("held-candidates", text + "\0" + "\0".join(candidates),
                                              lambda: flat(extractor.joint_features(text, candidates, layers, POOLINGS))))
    weights, held_curves = {}, {}
    for layer in layers:
        p = best_pooling[layer]
        scores = {q: dict(zip(list(held_first[q])[: args.depth], heads[layer, p].decision(held_features[q][p][layer]).tolist()))
                  for q in held_queries}
        curve = {w: rerank_ndcg(held_first, held_queries, held_qrels, scores, args.depth, w) for w in GRID}
        weights[layer] = max(curve, key=lambda w: (curve[w], -abs(w - 0.5)))
        held_curves[layer] = curve

    # -- test: every layer's features in one pass per input ----------------------------------------
    yes_ids, no_ids = extractor.lm.token_ids(YES_SPELLINGS), extractor.lm.token_ids(NO_SPELLINGS)
    cosine = {layer: {} for layer in layers}
    yesno = {layer: {} for layer in layers}
    head_scores = {(layer, p): {} for layer in layers for p in POOLINGS}
    t = time.perf_counter()
    for n, (qid, text) in enumerate(test_queries.items(), start=1):
        candidates = list(first[qid])[: args.depth]
        texts = [document_text(docs[d]) for d in candidates]
        key = text + "\0" + "\0".join(texts)
        joint = nested(cache.get("test-joint", key, lambda: flat(extractor.joint_features(text, texts, layers, POOLINGS))))
        alone = nested(cache.get("test-alone", key, lambda: flat(extractor.text_features([text, *texts], layers, ["mean"]))))["mean"]
        for layer in layers:
            v = alone[layer] / np.maximum(np.linalg.norm(alone[layer], axis=1, keepdims=True), 1e-12)
            cosine[layer][qid] = dict(zip(candidates, (v[1:] @ v[0]).tolist()))
            for p in POOLINGS:
                head_scores[layer, p][qid] = dict(zip(candidates, heads[layer, p].decision(joint[p][layer]).tolist()))
            with torch.inference_mode():
                logp = extractor.lm.logits(torch.from_numpy(joint["last"][layer]), layer).log_softmax(-1)
            yesno[layer][qid] = dict(zip(candidates, (logp[:, yes_ids].logsumexp(-1) - logp[:, no_ids].logsumexp(-1)).tolist()))
        if n % 10 == 0 or n == len(test_queries):
            log(f"test features: {n}/{len(test_queries)} queries, {(time.perf_counter() - t) / n:.1f} s/query")

    rows = []
    for layer in layers:
        p = best_pooling[layer]
        rows.append({
            "layer": layer,
            "cosine": rerank_ndcg(first, test_queries, test_qrels, cosine[layer], args.depth),
            "yesno": rerank_ndcg(first, test_queries, test_qrels, yesno[layer], args.depth),
            "head_last": rerank_ndcg(first, test_queries, test_qrels, head_scores[layer, "last"], args.depth),
            "head_mean": rerank_ndcg(first, test_queries, test_qrels, head_scores[layer, "mean"], args.depth),
            "interpolated_pooling": p,
            "interpolation": weights[layer],
            "head_interpolated": rerank_ndcg(first, test_queries, test_qrels, head_scores[layer, p], args.depth, weights[layer]),
            "held_out_interpolation_curve": {f"{w:g}": round(v, 4) for w, v in held_curves[layer].items()},
            **{f"{k}_{q}": round(v, 4) for q in POOLINGS for k, v in head_stats[layer, q].items()},
        })

    # The sweep's heads, saved and loaded as `llm:DIR`, must reproduce the sweep's scores.
    q0 = next(iter(test_queries))
    texts0 = [document_text(docs[d]) for d in list(first[q0])[: args.depth]]
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            layer, p = row["layer"], row["interpolated_pooling"]
            save_head(Path(tmp) / f"h{layer}", heads[layer, p], head_settings(layer, p, args.max_tokens, prompt))
            real = load_reranker(f"llm:{Path(tmp) / f'h{layer}'}").score(test_queries[q0], texts0)
            row["head_replay_max_abs_diff"] = float(np.max(np.abs(real - np.array(list(head_scores[layer, p][q0].values())))))

    # -- latency last: every quality number above is cached, so a rerun to re-time is cheap ------
    timing = measure_latency(layers, timing_queries, first, docs, args, prompt, hidden)
    for row in rows:
        row.update(timing["layers"][row["layer"]])

    result = {
        "dataset": args.dataset,
        "split": "test",
        "index": str(args.index),
        "test_queries": len(test_queries),
        "all_test_queries": len(test.queries),
        "depth": args.depth,
        "max_tokens": args.max_tokens,
        "model": DEFAULT_LLM,
        "precision": extractor.precision,
        "threads": threads,
        "cores": len(os.sched_getaffinity(0)),
        "cpu": platform.processor() or platform.machine(),
        "first_stage": {"name": "hybrid weighted", "ndcg@10": first_ndcg},
        "random_order_of_top_depth": random_ndcg,
        "train": {"queries": len(train), "pairs": int(len(train_pairs.labels)), "held_out_queries": len(held),
                  "held_out_pairs": int(len(held_pairs.labels)), "negatives": args.negatives,
                  "feature_seconds_all_layers_both_poolings": round(feature_seconds, 1)},
        "layers": rows,
        **{k: v for k, v in timing.items() if k != "layers"},
        "query_likelihood_top_layer": ql_row,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write(result, args.out)


def joint_pair_features(cache: FeatureCache, kind: str, extractor, examples, layers, log) -> dict[str, dict[int, np.ndarray]]:
    """Joint-prompt features of every (query, positive / negative) pair of ``examples``, rows in
    :func:`example_pairs` order, computed one query at a time through ``cache``."""
    parts = []
    t = time.perf_counter()
    for n, example in enumerate(examples, start=1):
        pairs = example_pairs([example])
        key = example.query + "\0" + "\0".join(pairs.documents)
        parts.append(nested(cache.get(kind, key, lambda: flat(pair_features(extractor, pairs, layers, poolings=POOLINGS, progress=False)))))
        if n % 50 == 0 or n == len(examples):
            log(f"{kind} pairs: {n}/{len(examples)} queries, {time.perf_counter() - t:.0f} s")
    return {p: {layer: np.concatenate([part[p][layer] for part in parts]) for layer in layers} for p in POOLINGS}


def measure_latency(layers, queries, first, docs, args, prompt: str, hidden: int) -> dict:
    """Warm ms per query of rerankers that stop at each layer, and of the top-layer methods."""
    timings: dict[int, dict[str, float]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        untrained = LinearHead(np.zeros(hidden), np.ones(hidden), np.random.default_rng(0).normal(size=hidden), 0.0)
        for layer in layers:
            folder = Path(tmp) / f"head-{layer}"
            save_head(folder, untrained, head_settings(layer, "last", args.max_tokens, prompt))
            cosine_reranker = LLMReranker(method="hidden-cosine", layer=layer, max_tokens=args.max_tokens, threads=args.threads)
            head_reranker = load_reranker(f"llm:{folder}")
            cosine_p50, cosine_p95 = latency(cosine_reranker, queries, first, docs, args.depth)
            head_p50, head_p95 = latency(head_reranker, queries, first, docs, args.depth)
            timings[layer] = {"cosine_ms_p50": cosine_p50, "cosine_ms_p95": cosine_p95, "head_ms_p50": head_p50, "head_ms_p95": head_p95}
            print(f"layer {layer}: cosine {cosine_p50:.0f} ms, head {head_p50:.0f} ms per query (p50)", file=sys.stderr, flush=True)
    top = {}
    for method in ("yesno", "query-likelihood"):
        for max_tokens in sorted({DEFAULT_MAX_TOKENS_BY_METHOD[method], args.max_tokens}):
            reranker = LLMReranker(method=method, max_tokens=max_tokens, threads=args.threads)
            p50, p95 = latency(reranker, queries, first, docs, args.depth)
            top[f"{method},max_tokens={max_tokens}"] = {"p50": p50, "p95": p95}
    return {"layers": timings, "top_layer_ms": top, "timing_queries": len(queries),
            "load_average_during_timing": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def write(result: dict, out: Path) -> None:
    text = render(result)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".txt").write_text(text + "\n")


def render(r: dict) -> str:
    subset = (f"the first {r['test_queries']} of {r['all_test_queries']} judged test queries (a subset: the full sweep is slow on 2 cores)"
              if r["test_queries"] < r["all_test_queries"] else f"all {r['test_queries']} judged test queries")
    t = r["train"]
    lines = [
        f"LLM reranker layer sweep: {r['model']} (bundled Q4_1 GGUF, dequantised) on {r['dataset']}, {subset}.",
        f"Reranks the top {r['depth']} of the {r['first_stage']['name']} first stage; prompts cut to {r['max_tokens']} tokens; "
        f"{r['precision']}, {r['threads']} torch threads on {r['cores']} cores; latency on the first {r['timing_queries']} queries, load average {r['load_average_during_timing'][0]} "
        f"before / {r['load_average_during_timing'][1]} after timing (>{r['cores']} means another process competed).",
        f"First stage alone (same queries, same run): nDCG@10 {r['first_stage']['ndcg@10']:.4f}; a random order of its top "
        f"{r['depth']}: {r['random_order_of_top_depth']:.4f}.",
        f"Heads: trained on {t['queries']} TRAIN queries ({t['pairs']} pairs, up to {t['negatives']} hard negatives each), "
        f"checked on {t['held_out_queries']} held-out train queries ({t['held_out_pairs']} pairs); features of every layer and "
        f"both poolings took {t['feature_seconds_all_layers_both_poolings']:.0f} s.",
        "",
        "layer | cosine | yesno  | head last | head mean | head+fs (pool, w) | held-out pair acc last/mean | cosine ms p50/p95 | head ms p50/p95",
        "------|--------|--------|-----------|-----------|-------------------|-----------------------------|-------------------|----------------",
    ]
    for row in r["layers"]:
        lines.append(
            f"{row['layer']:5d} | {row['cosine']:.4f} | {row['yesno']:.4f} | {row['head_last']:9.4f} | {row['head_mean']:9.4f} | "
            f"{row['head_interpolated']:.4f} ({row['interpolated_pooling']}, {row['interpolation']:.1f}) | "
            f"{row['held_out_pairwise_accuracy_last']:13.3f} / {row['held_out_pairwise_accuracy_mean']:<11.3f} | "
            f"{row['cosine_ms_p50']:7.0f} / {row['cosine_ms_p95']:<7.0f} | {row['head_ms_p50']:6.0f} / {row['head_ms_p95']:.0f}"
        )
    ql = r["query_likelihood_top_layer"]
    lines += [
        "",
        f"query-likelihood (top layer) on the first {ql['queries']} queries: nDCG@10 " + ", ".join(
            f"{v:.4f} at max_tokens={k.rsplit('_', 1)[1]}" for k, v in ql.items() if k.startswith("max_tokens"))
        + f" vs first stage {ql['first_stage']:.4f} on the same queries.",
        "Top-layer latency (ms per query p50 / p95): " + "; ".join(
            f"{m} {v['p50']:.0f} / {v['p95']:.0f}" for m, v in r["top_layer_ms"].items()) + ".",
        "cosine and yesno are zero-shot; yesno below the top layer reads the answer through the final norm and LM head (logit lens).",
        "head+fs: w * minmax(head) + (1 - w) * minmax(first stage) with the pooling of better held-out accuracy and w fitted on the",
        "held-out train queries (w = 0 is the first stage alone). Max |score| difference of the saved heads reloaded as llm:DIR: "
        f"{max(row['head_replay_max_abs_diff'] for row in r['layers']):.2g}.",
        f"Peak RSS {r['peak_rss_mb']:.0f} MB; {r['seconds'] / 60:.0f} min in all.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
