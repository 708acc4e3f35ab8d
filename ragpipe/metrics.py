"""Rank-based retrieval metrics, scored the way trec_eval scores them.

Metrics are named by strings of the form ``NAME@K`` with ``K`` a positive integer:

``ndcg@K``
    Normalised discounted cumulative gain of the top ``K`` (trec_eval ``ndcg_cut_K``). The gain of a
    document is its qrels grade (linear gains, not ``2**grade - 1``); rank ``r`` (1-based) is
    discounted by ``log2(r + 1)``. The ideal DCG is built from every judged relevant document of the
    query, whether the run retrieved it or not.
``recall@K``
    Relevant documents in the top ``K`` divided by all relevant documents of the query
    (``recall_K``).
``precision@K`` (alias ``p@K``)
    Relevant documents in the top ``K`` divided by ``K``, even when the run returned fewer than
    ``K`` documents (``P_K``).
``mrr@K``
    ``1 / rank`` of the first relevant document if it is within the top ``K``, else 0. trec_eval's
    ``recip_rank`` has no cutoff; ``mrr@K`` with ``K`` at least the run depth equals it.
``map@K``
    Sum of the precision at the rank of each relevant document retrieved within the top ``K``,
    divided by the number of relevant documents of the query, retrieved or not (``map_cut_K``).

Relevance: a judgment with grade > 0 is relevant; grade 0 or below is judged not relevant and
contributes no gain. Documents without a judgment are not relevant.

Which queries are scored: every query in the qrels with at least one relevant judgment. Such a query
that is missing from the run, or has no documents in it, scores 0 on every metric (as ``trec_eval
-c``; pytrec_eval instead leaves it out). Queries whose judgments are all grade <= 0 are left out
of the mean, since no ranking can be right or wrong for them. Run queries without judgments are
ignored.

Ranking within a query uses :func:`ragpipe.types.ranked`: higher score first, ties broken by the
smaller doc id. trec_eval breaks ties the other way (tied documents in descending docno order), so
on runs with tied scores the two can disagree slightly; on runs without ties they agree to
rounding.

This module needs only numpy, so any run file can be scored without torch or faiss installed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragpipe.errors import QueryError
from ragpipe.types import Qrels, Run, ranked

__all__ = ["EvalResult", "Metric", "evaluate", "parse_metric"]

_METRIC_KINDS = {
    "ndcg": "ndcg",
    "recall": "recall",
    "precision": "precision",
    "p": "precision",
    "mrr": "mrr",
    "map": "map",
}
_VALID_FORMS = (
    "ndcg@K, recall@K, precision@K (or p@K), mrr@K, map@K, with K a positive integer (e.g. ndcg@10)"
)
_METRIC_PATTERN = re.compile(r"([a-z]+)@([0-9]+)")


@dataclass(frozen=True)
class Metric:
    """A parsed metric name: ``kind`` (ndcg, recall, precision, mrr, map) and cutoff ``k`` >= 1."""

    kind: str
    k: int


def parse_metric(name: str) -> Metric:
    """Parse a metric name such as ``"ndcg@10"`` or ``"P@5"`` (case-insensitive).

    Raises :class:`~ragpipe.errors.QueryError` naming the bad string and listing the valid forms
    when the name is unknown, has no cutoff, or the cutoff is not a positive integer.
    """
    if not isinstance(name, str):
        raise QueryError(f"metric names must be strings, got {name!r}; valid forms: {_VALID_FORMS}")
    match = _METRIC_PATTERN.fullmatch(name.lower())
    if match is None or match.group(1) not in _METRIC_KINDS or int(match.group(2)) < 1:
        raise QueryError(f"unknown metric {name!r}; valid forms: {_VALID_FORMS}")
    return Metric(_METRIC_KINDS[match.group(1)], int(match.group(2)))


@dataclass(frozen=True)
class EvalResult:
    """Scores of one run against one set of qrels.

    ``mean[metric]`` is the mean over the ``num_queries`` scored queries; ``per_query[metric][qid]``
    holds each scored query's value. Metric keys are the strings the caller passed, so ``"p@10"``
    stays ``"p@10"``. Every value lies in [0, 1].
    """

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]
    num_queries: int


def evaluate(qrels: Qrels, run: Run, metrics: Sequence[str]) -> EvalResult:
    """Score ``run`` against ``qrels`` on each metric in ``metrics``.

    See the module docstring for the metric definitions and for which queries count. Repeated metric
    names are scored once.

    Raises :class:`~ragpipe.errors.QueryError` for an unknown metric name, an empty metric list, a
    NaN score in the run, or qrels with no relevant judgment at all (there is nothing to average).
    """
    if isinstance(metrics, str):
        # A lone string would otherwise be read character by character.
        metrics = [metrics]
    names = list(dict.fromkeys(metrics))
    if not names:
        raise QueryError(f"no metrics requested; valid forms: {_VALID_FORMS}")
    parsed = [(name, parse_metric(name)) for name in names]
    depth = max(metric.k for _, metric in parsed)
    # Sized by the longest ranking seen, not by the cutoff, so "ndcg@1000000000" costs nothing.
    discounts = np.empty(0)

    per_query: dict[str, dict[str, float]] = {name: {} for name in names}
    for qid, judgments in qrels.items():
        ideal_gains = sorted((float(g) for g in judgments.values() if g > 0), reverse=True)
        num_relevant = len(ideal_gains)
        if num_relevant == 0:
            continue
        doc_scores = run.get(qid) or {}
        _check_scores(qid, doc_scores)
        # Gains of the retrieved documents, best first; unjudged and grade <= 0 give 0.
        gains = np.array(
            [max(float(judgments.get(doc_id, 0)), 0.0) for doc_id, _ in ranked(doc_scores, depth)],
            dtype=np.float64,
        )
        hits = gains > 0
        hits_so_far = np.cumsum(hits)
        ideal = np.array(ideal_gains[:depth], dtype=np.float64)
        if len(discounts) < max(len(gains), len(ideal)):
            discounts = 1.0 / np.log2(np.arange(2, 2 * max(len(gains), len(ideal)) + 2.0))
        for name, metric in parsed:
            per_query[name][qid] = _score_one(
                metric, gains, hits, hits_so_far, ideal, num_relevant, discounts
            )

    num_queries = len(per_query[names[0]])
    if num_queries == 0:
        raise QueryError(
            "the qrels hold no relevant judgment (grade > 0), so no query can be scored; "
            "check that the qrels file is the right one"
        )
    mean = {name: math.fsum(values.values()) / num_queries for name, values in per_query.items()}
    return EvalResult(mean=mean, per_query=per_query, num_queries=num_queries)


def _score_one(
    metric: Metric,
    gains: np.ndarray,
    hits: np.ndarray,
    hits_so_far: np.ndarray,
    ideal: np.ndarray,
    num_relevant: int,
    discounts: np.ndarray,
) -> float:
    k = metric.k
    top_hits = hits[:k]
    if metric.kind == "ndcg":
        top_gains = gains[:k]
        dcg = float(np.dot(top_gains, discounts[: len(top_gains)]))
        ideal_top = ideal[:k]
        return dcg / float(np.dot(ideal_top, discounts[: len(ideal_top)]))
    # The run may hold fewer than k documents; then every retrieved one is in the top k.
    retrieved = min(k, len(hits_so_far))
    retrieved_relevant = int(hits_so_far[retrieved - 1]) if retrieved else 0
    if metric.kind == "recall":
        return retrieved_relevant / num_relevant
    if metric.kind == "precision":
        return retrieved_relevant / k
    if metric.kind == "mrr":
        first = np.flatnonzero(top_hits)
        return 1.0 / (int(first[0]) + 1) if len(first) else 0.0
    # map: precision at each relevant rank within k, summed, over all relevant documents.
    ranks = np.flatnonzero(top_hits) + 1
    return float(np.sum(hits_so_far[ranks - 1] / ranks)) / num_relevant


def _check_scores(qid: str, doc_scores: dict[str, float]) -> None:
    # NaN has no place in an ordering, so sorting would silently depend on dict order.
    for doc_id, score in doc_scores.items():
        if score != score:
            raise QueryError(
                f"run query {qid!r} gives document {doc_id!r} a NaN score; scores must be numbers"
            )
