"""Evaluate retrieval setups on a dataset: quality, latency and index cost side by side.

One call builds (or reuses) the index of a dataset's corpus, runs every judged query through each
setup, writes a TREC run file per setup, and returns one row per setup with the metrics, per-stage
latency percentiles, the bytes on disk and the build seconds of the components the setup uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ragpipe.corpus import load_corpus
from ragpipe.datasets import Dataset, load_dataset
from ragpipe.encoders.bi_encoder import machine_summary
from ragpipe.errors import IndexStoreError, QueryError
from ragpipe.index import Index, IndexConfig, SearchOptions, read_manifest
from ragpipe._files import atomic_write_text, sha256_file
from ragpipe.memory import PeakRSS
from ragpipe.metrics import evaluate, parse_metric
from ragpipe.progress import Progress
from ragpipe.trec import write_run

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")
DEFAULT_MODES = ("bm25", "dense", "hybrid-rrf", "hybrid-weighted")
_SETUPS = {
    "bm25": SearchOptions(mode="bm25"),
    "dense": SearchOptions(mode="dense"),
    "hybrid-rrf": SearchOptions(mode="hybrid", fusion="rrf"),
    "hybrid-weighted": SearchOptions(mode="hybrid", fusion="weighted"),
}
# Components each mode reads, for the cost columns.
_COMPONENTS = {"bm25": ("bm25",), "dense": ("dense",), "hybrid": ("dense", "bm25")}
_BUILD_STEPS = {"bm25": ("bm25",), "dense": ("chunk", "encode", "dense_index")}


@dataclass
class SetupResult:
    setup: str
    options: SearchOptions
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    latency_ms: dict[str, dict[str, float]]  # stage -> {"p50", "p95"}
    index_bytes: int
    build_seconds: float
    run_file: str | None
    peak_rss_bytes: int = 0  # growth of the process's RSS while the setup ran (models it loaded included)
    first_stage: str | None = None  # for reranked rows: the setup they rerank
    interpolation: float | None = None


@dataclass
class EvalReport:
    dataset: str
    split: str
    num_queries: int
    index_path: str
    index_built_now: bool
    rows: list[SetupResult] = field(default_factory=list)
    machine: str = ""  # where the latencies were measured (machine_summary)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "num_queries": self.num_queries,
            "index": {"path": self.index_path, "built_now": self.index_built_now},
            "machine": self.machine,
            "rows": [
                {
                    "setup": row.setup,
                    "options": row.options.__dict__,
                    "metrics": row.metrics,
                    "latency_ms": {"p50": row.latency_ms["total"]["p50"], "p95": row.latency_ms["total"]["p95"],
                                   "stages": row.latency_ms},
                    "index_bytes": row.index_bytes,
                    "build_seconds": row.build_seconds,
                    "rss_growth_mb": round(row.peak_rss_bytes / 1e6, 1),
                    "first_stage": row.first_stage,
                    "interpolation": row.interpolation,
                    "run_file": row.run_file,
                    "per_query": row.per_query,
                }
                for row in self.rows
            ],
        }

    def table(self) -> str:
        """A plain-text comparison table, one row per setup."""
        metric_names = list(self.rows[0].metrics) if self.rows else []
        by_setup = {row.setup: row for row in self.rows}
        header = ["setup", *metric_names, f"Δ {metric_names[0]}" if metric_names else "Δ", "p50 ms", "p95 ms",
                  "stages p50 ms", "+RSS MB", "index MB", "build s"]
        lines = []
        for row in self.rows:
            stages = ", ".join(f"{s} {v['p50']:.1f}" for s, v in row.latency_ms.items() if s != "total")
            base = by_setup.get(row.first_stage) if row.first_stage else None
            delta = f"{row.metrics[metric_names[0]] - base.metrics[metric_names[0]]:+.4f}" if base and metric_names else ""
            lines.append(
                [row.setup, *(f"{row.metrics[m]:.4f}" for m in metric_names), delta,
                 f"{row.latency_ms['total']['p50']:.1f}", f"{row.latency_ms['total']['p95']:.1f}", stages,
                 f"{row.peak_rss_bytes / 1e6:.0f}", f"{row.index_bytes / 1e6:.1f}", f"{row.build_seconds:.1f}"]
            )
        widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]

        def fmt(cells):
            return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

        title = f"{self.dataset} ({self.split}, {self.num_queries} judged queries)"
        if self.machine:
            title += f"; latency on {self.machine}"
        return "\n".join([title, fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines)])


def parse_setups(modes: str | list[str], fusion: str = "rrf") -> dict[str, SearchOptions]:
    """Setup names (comma-separated or a list) to search options; ``hybrid`` uses ``fusion``.

    Raises:
        QueryError: an unknown setup name.
    """
    names = [m.strip() for m in (modes.split(",") if isinstance(modes, str) else modes) if m.strip()]
    if not names:
        raise QueryError("no setups given; use e.g. --modes bm25,dense,hybrid")
    setups = {}
    for name in names:
        key = f"hybrid-{fusion}" if name == "hybrid" else name
        if key not in _SETUPS:
            raise QueryError(f"unknown setup {name!r}; use {', '.join(['hybrid', *_SETUPS])}")
        setups[key] = _SETUPS[key]
    return setups


def corpus_fingerprint(dataset_path: Path) -> str:
    return sha256_file(dataset_path / "corpus.jsonl")


def _index_mismatch(manifest: dict, fingerprint: str, config: IndexConfig, needs_dense: bool) -> str | None:
    """Why an index cannot serve this evaluation as it stands (None when it can)."""
    source = manifest.get("source") or {}
    if not isinstance(source, dict) or source.get("sha256") != fingerprint:
        return f"it was built from {source.get('path', 'another corpus') if isinstance(source, dict) else 'another corpus'}"
    if needs_dense and manifest.get("dense") is None:
        return "it has no dense index (built with --bm25-only)"
    if manifest.get("dense") is not None and config.dense is not None:
        from ragpipe.encoders import EncoderSpec
        from ragpipe.models import canonical_name

        wanted = canonical_name((config.encoder or EncoderSpec()).model)
        if manifest["encoder"]["model"] != wanted:
            return f"it was built with encoder {manifest['encoder']['model']}, not {wanted}"
        if manifest["chunking"] != config.chunking.__dict__:
            return f"its passages were cut with {manifest['chunking']}, not {config.chunking.__dict__}"
        if manifest["dense"] != config.dense.__dict__:
            return f"its dense index is {manifest['dense']}, not {config.dense.__dict__}"
    if manifest["bm25"] is None:
        return "it has no BM25 index"
    if manifest["bm25"]["params"] != config.bm25.__dict__ or manifest["bm25"]["analyzer"] != config.analyzer.__dict__:
        return "its BM25 settings differ from the ones asked for"
    return None


def open_or_build_index(
    dataset: Dataset, index_dir: Path | None, config: IndexConfig, needs_dense: bool, rebuild: bool, progress: bool
) -> tuple[Index, bool]:
    """Reuse the dataset's index if it was built from this corpus with this configuration, else
    build it under ``indexes/<dataset>``. An explicit ``index_dir`` that does not fit (another
    corpus, encoder, passage or BM25 settings) is refused, never replaced, unless ``rebuild``."""
    fingerprint = corpus_fingerprint(dataset.path)
    explicit = index_dir is not None
    path = index_dir if explicit else Path("indexes") / dataset.name
    if (path / "manifest.json").is_file() and not rebuild:
        mismatch = _index_mismatch(read_manifest(path), fingerprint, config, needs_dense)
        if mismatch is None:
            return Index.load(path), False
        if explicit:
            raise IndexStoreError(
                f"{path} does not fit {dataset.path}: {mismatch}; pass the settings it was built with, omit --index "
                "to use the dataset's own index, or pass --rebuild to replace it"
            )
    report = load_corpus(dataset.path)
    source = {"path": str(dataset.path / "corpus.jsonl"), "sha256": fingerprint}
    return Index.build(report.documents, path, config, source=source, progress=progress), True


def run_eval(
    dataset: str | Path,
    index_dir: str | Path | None = None,
    modes: str | list[str] = DEFAULT_MODES,
    metrics: str | list[str] = DEFAULT_METRICS,
    split: str = "test",
    fusion: str = "rrf",
    config: IndexConfig = IndexConfig(),
    search: SearchOptions = SearchOptions(),
    runs_dir: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = False,
    rerankers: Sequence[str] = (),
    rerank_depth: int = 50,
    rerank_stage: str | None = None,
) -> EvalReport:
    """Evaluate each setup in ``modes`` on the judged queries of ``dataset``'s ``split``.

    ``search`` supplies the fusion parameters (``depth``, ``rrf_k``, ``dense_weight``) of hybrid
    setups. Runs are retrieved to the largest metric cutoff (at least 100) and written as TREC run
    files to ``runs_dir`` (default ``runs/<dataset>``).

    Each spec in ``rerankers`` (see :func:`ragpipe.rerankers.parse_spec`; an ``interpolation=W``
    option mixes first- and second-stage scores, and a trained model's saved weight is used when
    none is given) adds a row that reranks the top ``rerank_depth`` documents of ``rerank_stage``
    (default: the last hybrid setup, else the last setup). Its latency stages are the first stage's
    total and the reranker's time per query; peak RSS includes the loaded reranker.

    Raises:
        RagpipeError: an unknown dataset, setup or metric, a malformed reranker spec or
            interpolation weight (all checked before any work), or an index that does not fit.
    """
    from ragpipe.rerankers.base import check_spec

    for spec in rerankers:
        check_spec(spec)
    if rerank_depth < 1:
        raise QueryError(f"--rerank-depth must be >= 1, got {rerank_depth}")
    metric_names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    if not metric_names:
        raise QueryError("no metrics given; use e.g. --metrics ndcg@10,recall@100")
    cutoff = max(100, *(parse_metric(m).k for m in metric_names))
    setups = parse_setups(modes, fusion)
    if rerankers and rerank_stage is not None and rerank_stage not in setups:
        raise QueryError(f"rerank stage {rerank_stage!r} is not among the evaluated setups ({', '.join(setups)})")
    data = load_dataset(dataset, split)
    needs_dense = any(options.mode != "bm25" for options in setups.values())
    if not needs_dense:
        config = replace(config, dense=None)
    index, built = open_or_build_index(
        data, Path(index_dir) if index_dir else None, config, needs_dense, rebuild, progress
    )
    runs_path = Path(runs_dir) if runs_dir else Path("runs") / data.name
    runs_path.mkdir(parents=True, exist_ok=True)
    report = EvalReport(data.name, split, len(data.queries), str(index.path), built, machine=machine_summary())
    first_stage_results = {}
    for name, options in setups.items():
        options = replace(options, depth=search.depth, rrf_k=search.rrf_k, dense_weight=search.dense_weight)
        meter = Progress(f"eval {name}", len(data.queries), unit="queries", enabled=progress)
        with PeakRSS() as peak:
            # One untimed query first, so model loading and lazy imports stay out of the latencies.
            first = next(iter(data.queries))
            index.search({first: data.queries[first]}, k=cutoff, options=options)
            result = index.search(data.queries, k=cutoff, options=options)
        meter.update(len(data.queries))
        evaluation = evaluate(data.qrels, result.run, metric_names)
        run_file = runs_path / f"{name}.trec"
        write_run(result.run, run_file, tag=f"ragpipe-{name}")
        components = _COMPONENTS[options.mode]
        report.rows.append(
            SetupResult(
                setup=name,
                options=options,
                metrics=evaluation.mean,
                per_query=evaluation.per_query,
                latency_ms=_percentiles(result.timings_ms),
                index_bytes=index.size_bytes("documents") + sum(index.size_bytes(c) for c in components),
                build_seconds=sum(index.manifest["build_seconds"].get(step, 0.0)
                                  for c in components for step in _BUILD_STEPS[c]),
                run_file=str(run_file),
                peak_rss_bytes=peak.growth,
            )
        )
        first_stage_results[name] = result
    if rerankers:
        stage = rerank_stage or next((n for n in reversed(list(setups)) if n.startswith("hybrid")), list(setups)[-1])
        scored: dict[str, _Scored] = {}
        for spec in rerankers:
            report.rows.append(_rerank_row(index, data, stage, first_stage_results[stage], report, spec,
                                           rerank_depth, metric_names, runs_path, progress, scored))
    return report


@dataclass
class _Scored:
    """Every score a reranker gave in this eval and what giving them cost: rows that differ only
    in the interpolation weight replay the scores (and report the cost measured when they were
    computed). The reranker is released once its scoring pass ends; an LLM's weights stay cached
    in the process for the next spec on the same model, whose +RSS then excludes them."""

    cache: object  # ragpipe.rerankers.base.ScoreCache
    timings: dict[str, float]
    peak_rss_bytes: int


def _rerank_row(index: Index, data: Dataset, stage: str, first, report: EvalReport, spec_text: str, depth: int,
                metric_names: list[str], runs_path: Path, progress: bool, scored: dict[str, _Scored]) -> SetupResult:
    from ragpipe.rerankers import load_reranker, rerank_run
    from ragpipe.rerankers.base import ScoreCache, check_spec
    from ragpipe.types import document_text

    spec, weight, spec_depth = check_spec(spec_text)
    depth = spec_depth or depth
    base = next(row for row in report.rows if row.setup == stage)
    docs = index.documents_by_id(sorted({d for scores in first.run.values() for d in list(scores)}))
    key = f"{spec},depth={depth}"  # rows that differ only in the weight replay one scoring pass
    replay = scored.get(key)
    if replay is None:
        with PeakRSS() as peak:
            cache = ScoreCache(load_reranker(spec))
            first_qid = next(iter(data.queries))
            # warm-up query, untimed (its scores are not kept: the timed pass scores it again)
            rerank_run({first_qid: first.run[first_qid]}, data.queries, lambda d: document_text(docs[d]),
                       cache.reranker, depth)
            meter = Progress(f"rerank {spec}", len(data.queries), unit="queries", enabled=progress)
            timings: dict[str, float] = {}
            for qid in data.queries:
                done = rerank_run({qid: first.run[qid]}, data.queries, lambda d: document_text(docs[d]), cache, depth)
                timings.update(done.timings_ms)
                meter.update(1)
        cache.release()
        replay = scored[key] = _Scored(cache, timings, peak.growth)
    interpolation = weight if weight is not None else replay.cache.interpolation
    run = rerank_run({qid: first.run[qid] for qid in data.queries}, data.queries, lambda d: document_text(docs[d]),
                     replay.cache, depth, interpolation=interpolation).run
    timings = replay.timings
    name = f"{stage} >> {key}" + (f" (w={interpolation:g})" if interpolation is not None else "")
    evaluation = evaluate(data.qrels, run, metric_names)
    run_file = runs_path / f"{stage}.rerank-{len(report.rows)}.trec"
    write_run(run, run_file, tag=f"ragpipe-rerank-{len(report.rows)}")
    first_ms = [first.timings_ms[qid]["total"] for qid in data.queries]
    rerank_ms = [timings.get(qid, 0.0) for qid in data.queries]
    latency = _percentiles({qid: {"first_stage": f, "rerank": r, "total": f + r}
                            for qid, f, r in zip(data.queries, first_ms, rerank_ms)})
    return SetupResult(
        setup=name, options=base.options, metrics=evaluation.mean, per_query=evaluation.per_query,
        latency_ms=latency, index_bytes=base.index_bytes, build_seconds=base.build_seconds,
        run_file=str(run_file), peak_rss_bytes=replay.peak_rss_bytes, first_stage=stage, interpolation=interpolation,
    )


def _percentiles(timings: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    stages: dict[str, list[float]] = {}
    for per_stage in timings.values():
        for stage, ms in per_stage.items():
            stages.setdefault(stage, []).append(ms)
    return {
        stage: {"p50": round(float(np.percentile(v, 50)), 3), "p95": round(float(np.percentile(v, 95)), 3)}
        for stage, v in stages.items()
    }


def write_report(report: EvalReport, path: str | Path) -> None:
    """Write the report as JSON (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report.to_json(), indent=1))
