"""Combine several Runs over the same queries into one Run.

Two methods:

* :func:`reciprocal_rank_fusion` uses only ranks, so runs whose scores live on unrelated scales
  (BM25 scores, cosine similarities) combine without tuning.
* :func:`weighted_sum` adds per-query normalised scores, so a run's confidence margins count.

Every query present in any input run appears in the output, with every document that any run
returned for it (once). Ranks come from :func:`ragpipe.types.ranked` (score descending, then doc id
ascending), so fusion is deterministic whatever the dict order of the inputs. The output dicts carry
no meaningful order; rank them with :func:`~ragpipe.types.ranked`.

Bad parameters (weights, ``k``, ``depth``, normalisation name) and NaN scores raise
:class:`~ragpipe.errors.QueryError`. This module needs no torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from ragpipe.errors import QueryError
from ragpipe.types import Run, ranked

__all__ = ["normalize_minmax", "reciprocal_rank_fusion", "weighted_sum"]

_NORMALIZATIONS = ("minmax", None)


def reciprocal_rank_fusion(
    runs: Sequence[Run],
    k: float = 60,
    weights: Sequence[float] | None = None,
    depth: int | None = None,
) -> Run:
    """Fuse runs by reciprocal rank: ``score(d) = sum_i weights[i] / (k + rank_i(d))``.

    ``rank_i(d)`` is the 1-based rank of ``d`` in run ``i`` for its query; a run that did not return
    ``d`` (or returned it below ``depth``) adds nothing. ``k`` (>= 0, 60 in Cormack et al. 2009)
    damps the lead of the very top ranks. ``weights`` default to 1 for every run. ``depth``, if
    given, counts only each run's top ``depth`` documents per query; documents below it in every run
    are left out of the output.

    Raises :class:`~ragpipe.errors.QueryError` when ``runs`` is empty, ``k`` is negative or not
    finite, ``depth`` is not a positive integer, the weights are invalid (see :func:`weighted_sum`),
    or a run holds a NaN score.
    """
    runs = _check_runs(runs)
    run_weights = _check_weights(weights, len(runs)) if weights is not None else [1.0] * len(runs)
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not math.isfinite(k) or k < 0:
        raise QueryError(f"RRF k must be a finite number >= 0 (60 is usual), got {k!r}")
    if depth is not None and (
        isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1
    ):
        raise QueryError(f"RRF depth must be a positive integer or None, got {depth!r}")

    fused: Run = {qid: {} for qid in _query_ids(runs)}
    for run_index, (run, weight) in enumerate(zip(runs, run_weights, strict=True)):
        for qid, doc_scores in run.items():
            _check_not_nan(doc_scores, qid, run_index)
            query_fused = fused[qid]
            for rank, (doc_id, _) in enumerate(ranked(doc_scores, depth), start=1):
                query_fused[doc_id] = query_fused.get(doc_id, 0.0) + weight / (k + rank)
    return fused


def normalize_minmax(scores: dict[str, float]) -> dict[str, float]:
    """Rescale one query's scores linearly so the best is 1.0 and the worst 0.0.

    When all scores are equal (including a single document) every document maps to 1.0. The run
    ranked these documents as its answer and cannot tell them apart; giving them 0 would make them
    indistinguishable from documents the run did not return at all, which also count 0 in
    :func:`weighted_sum`. (ranx maps this case to 0.) An empty dict gives an empty dict.

    Raises :class:`~ragpipe.errors.QueryError` for NaN or infinite scores, which have no place on a
    0-1 scale.
    """
    for doc_id, score in scores.items():
        if not math.isfinite(score):
            raise QueryError(
                f"cannot min-max normalise document {doc_id!r} with score {score!r}; "
                "scores must be finite numbers"
            )
    if not scores:
        return {}
    low = min(scores.values())
    high = max(scores.values())
    spread = high - low
    if spread == 0:
        return dict.fromkeys(scores, 1.0)
    return {doc_id: (score - low) / spread for doc_id, score in scores.items()}


def weighted_sum(
    runs: Sequence[Run],
    weights: Sequence[float],
    normalization: str | None = "minmax",
) -> Run:
    """Fuse runs by ``score(d) = sum_i weights[i] * norm_i(d)``.

    ``norm_i`` is :func:`normalize_minmax` applied to run ``i``'s scores for the query when
    ``normalization="minmax"``, or the raw score when ``normalization=None`` (only sensible when the
    runs share a scale). A run that did not return ``d`` for the query contributes 0.

    Raises :class:`~ragpipe.errors.QueryError` when ``runs`` is empty, the normalisation is unknown,
    a run holds a NaN or infinite score, or the weights are invalid: there must be one per run, each
    finite and >= 0, and not all 0.
    """
    runs = _check_runs(runs)
    run_weights = _check_weights(weights, len(runs))
    if normalization not in _NORMALIZATIONS:
        raise QueryError(
            f"unknown normalization {normalization!r}; use 'minmax' or None (raw scores)"
        )

    fused: Run = {qid: {} for qid in _query_ids(runs)}
    for run_index, (run, weight) in enumerate(zip(runs, run_weights, strict=True)):
        for qid, doc_scores in run.items():
            _check_finite(doc_scores, qid, run_index)
            if normalization == "minmax":
                doc_scores = normalize_minmax(doc_scores)
            query_fused = fused[qid]
            for doc_id, score in doc_scores.items():
                query_fused[doc_id] = query_fused.get(doc_id, 0.0) + weight * score
    return fused


def _check_runs(runs: Sequence[Run]) -> list[Run]:
    if isinstance(runs, dict):
        raise QueryError(
            "fusion takes a list of runs, got a single run (a dict); wrap it in a list"
        )
    runs = list(runs)
    if not runs:
        raise QueryError("fusion needs at least one run, got none")
    return runs


def _check_weights(weights: Sequence[float], num_runs: int) -> list[float]:
    weights = list(weights)
    if len(weights) != num_runs:
        raise QueryError(f"got {len(weights)} weights for {num_runs} runs; give one weight per run")
    for index, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise QueryError(f"weight {index} is {weight!r}; weights must be numbers")
        if not math.isfinite(weight) or weight < 0:
            raise QueryError(f"weight {index} is {weight!r}; weights must be finite and >= 0")
    if not any(weights):
        raise QueryError(
            "all weights are 0, so every fused score would be 0; give at least one run a weight > 0"
        )
    return [float(weight) for weight in weights]


def _query_ids(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(qid for run in runs for qid in run))


def _check_not_nan(doc_scores: dict[str, float], qid: str, run_index: int) -> None:
    for doc_id, score in doc_scores.items():
        if score != score:
            raise QueryError(
                f"run {run_index}, query {qid!r}: document {doc_id!r} has a NaN score, "
                "which cannot be ranked"
            )


def _check_finite(doc_scores: dict[str, float], qid: str, run_index: int) -> None:
    for doc_id, score in doc_scores.items():
        if not math.isfinite(score):
            raise QueryError(
                f"run {run_index}, query {qid!r}: document {doc_id!r} has score {score!r}; "
                "weighted_sum needs finite scores"
            )
