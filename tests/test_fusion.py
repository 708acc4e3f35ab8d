"""Tests for ragpipe.fusion: hand-computed values, validation, properties, and ranx parity."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragpipe.errors import QueryError, RagpipeError
from ragpipe.fusion import normalize_minmax, reciprocal_rank_fusion, weighted_sum
from ragpipe.types import ranked

# --- reciprocal rank fusion, by hand ---------------------------------------------------------

# Run A ranks a, b, c; run B ranks b, d.
RUN_A = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
RUN_B = {"q": {"b": 0.9, "d": 0.5}}


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion([RUN_A, RUN_B], k=60)
    # a: A rank 1            -> 1/61        = 0.0163934
    # b: A rank 2, B rank 1  -> 1/62 + 1/61 = 0.0325225
    # c: A rank 3            -> 1/63        = 0.0158730
    # d: B rank 2            -> 1/62        = 0.0161290
    assert fused["q"] == pytest.approx(
        {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62}, abs=1e-15
    )
    assert [doc_id for doc_id, _ in ranked(fused["q"])] == ["b", "a", "d", "c"]


def test_rrf_weights_depth_and_k_by_hand():
    weighted = reciprocal_rank_fusion([RUN_A, RUN_B], k=60, weights=[2, 1])
    # a: 2/61; b: 2/62 + 1/61; c: 2/63; d: 1/62
    assert weighted["q"] == pytest.approx(
        {"a": 2 / 61, "b": 2 / 62 + 1 / 61, "c": 2 / 63, "d": 1 / 62}, abs=1e-15
    )
    # depth 1: only a (from A) and b (from B) count, each at rank 1.
    shallow = reciprocal_rank_fusion([RUN_A, RUN_B], k=60, depth=1)
    assert shallow == {"q": pytest.approx({"a": 1 / 61, "b": 1 / 61}, abs=1e-15)}
    # k = 0: plain reciprocal ranks. b: 1/2 + 1/1 = 1.5
    plain = reciprocal_rank_fusion([RUN_A, RUN_B], k=0)
    assert plain["q"] == pytest.approx({"a": 1.0, "b": 1.5, "c": 1 / 3, "d": 0.5}, abs=1e-15)


def test_rrf_doc_in_both_runs_appears_once_and_beats_single_run_doc_at_same_rank():
    run_a = {"q": {"p": 0.9, "s": 0.8}}
    run_b = {"q": {"t": 0.9, "s": 0.5}}
    fused = reciprocal_rank_fusion([run_a, run_b])
    # s is rank 2 in both runs: 2/62 = 0.0322581; p and t are rank 1 in one run: 1/61 = 0.0163934.
    assert sorted(fused["q"]) == ["p", "s", "t"]
    assert fused["q"]["s"] == pytest.approx(2 / 62)
    assert fused["q"]["p"] == fused["q"]["t"] == pytest.approx(1 / 61)
    assert ranked(fused["q"])[0][0] == "s"


def test_rrf_ranks_tied_scores_by_doc_id():
    fused = reciprocal_rank_fusion([{"q": {"b": 1.0, "a": 1.0, "c": 2.0}}])
    # c first (higher score), then a before b (smaller id): c 1/61, a 1/62, b 1/63
    assert fused["q"] == pytest.approx({"c": 1 / 61, "a": 1 / 62, "b": 1 / 63}, abs=1e-15)


def test_rrf_keeps_every_query_of_every_run():
    fused = reciprocal_rank_fusion([{"q1": {"a": 1.0}}, {"q2": {"b": 1.0}, "q3": {}}])
    assert fused == {"q1": {"a": 1 / 61}, "q2": {"b": 1 / 61}, "q3": {}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": -1}, "k must be a finite number >= 0"),
        ({"k": float("inf")}, "k must be a finite number >= 0"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"depth": 2.5}, "depth must be a positive integer"),
        ({"weights": [1.0]}, "got 1 weights for 2 runs"),
        ({"weights": [1.0, -0.5]}, "weight 1 is -0.5"),
    ],
)
def test_rrf_rejects_bad_parameters(kwargs, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        reciprocal_rank_fusion([RUN_A, RUN_B], **kwargs)


def test_rrf_rejects_no_runs_a_bare_run_and_nan_scores():
    with pytest.raises(QueryError, match="at least one run"):
        reciprocal_rank_fusion([])
    with pytest.raises(QueryError, match="single run"):
        reciprocal_rank_fusion(RUN_A)
    with pytest.raises(QueryError, match=r"run 1, query 'q': document 'x' has a NaN score"):
        reciprocal_rank_fusion([RUN_A, {"q": {"x": float("nan")}}])


# --- min-max normalisation and weighted sum, by hand -----------------------------------------


def test_minmax_by_hand():
    # min 1, max 3, spread 2: a (3-1)/2 = 1, b (1-1)/2 = 0, c (2-1)/2 = 0.5
    assert normalize_minmax({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 1.0, "b": 0.0, "c": 0.5}
    # negative scores: min -3, spread 2: a (-1+3)/2 = 1, b 0, c (-2.5+3)/2 = 0.25
    assert normalize_minmax({"a": -1.0, "b": -3.0, "c": -2.5}) == {"a": 1.0, "b": 0.0, "c": 0.25}


def test_minmax_equal_scores_all_map_to_one():
    assert normalize_minmax({"a": 2.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}
    assert normalize_minmax({"only": -7.5}) == {"only": 1.0}
    assert normalize_minmax({}) == {}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_minmax_rejects_non_finite_scores(bad):
    with pytest.raises(QueryError, match="'b'"):
        normalize_minmax({"a": 1.0, "b": bad})


def test_weighted_sum_by_hand():
    run_a = {"q": {"a": 10.0, "b": 6.0, "c": 2.0}}
    run_b = {"q": {"b": 0.8, "d": 0.4}}
    fused = weighted_sum([run_a, run_b], weights=[0.3, 0.7])
    # min-max: A -> a 1, b 0.5, c 0;  B -> b 1, d 0.  Missing docs count 0.
    # a 0.3*1 = 0.3; b 0.3*0.5 + 0.7*1 = 0.85; c 0; d 0
    assert fused["q"] == pytest.approx({"a": 0.3, "b": 0.85, "c": 0.0, "d": 0.0}, abs=1e-15)
    raw = weighted_sum([run_a, run_b], weights=[0.3, 0.7], normalization=None)
    # a 0.3*10 = 3; b 0.3*6 + 0.7*0.8 = 2.36; c 0.3*2 = 0.6; d 0.7*0.4 = 0.28
    assert raw["q"] == pytest.approx({"a": 3.0, "b": 2.36, "c": 0.6, "d": 0.28}, abs=1e-12)


def test_weighted_sum_equal_score_run_counts_as_full_confidence():
    # B returned one document: under the all-equal policy it scores 1.0, so e gets 0.5 * 1.
    fused = weighted_sum([{"q": {"a": 2.0, "b": 1.0}}, {"q": {"e": 5.0}}], weights=[0.5, 0.5])
    assert fused["q"] == pytest.approx({"a": 0.5, "b": 0.0, "e": 0.5}, abs=1e-15)


def test_weighted_sum_keeps_every_query_of_every_run():
    fused = weighted_sum([{"q1": {"a": 1.0}}, {"q2": {"b": 3.0}, "q3": {}}], weights=[1, 2])
    assert fused == {"q1": {"a": 1.0}, "q2": {"b": 2.0}, "q3": {}}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "got 1 weights for 2 runs; give one weight per run"),
        ([1.0, 2.0, 3.0], "got 3 weights for 2 runs"),
        ([1.0, -1.0], "weight 1 is -1.0; weights must be finite and >= 0"),
        ([float("nan"), 1.0], "weight 0 is nan; weights must be finite and >= 0"),
        ([float("inf"), 1.0], "weight 0 is inf"),
        ([0, 0.0], "all weights are 0"),
        (["1", 1.0], "weight 0 is '1'; weights must be numbers"),
    ],
)
def test_weighted_sum_rejects_bad_weights(weights, message):
    with pytest.raises(QueryError, match=re.escape(message)) as caught:
        weighted_sum([RUN_A, RUN_B], weights=weights)
    assert isinstance(caught.value, RagpipeError)


def test_weighted_sum_rejects_unknown_normalization_and_non_finite_scores():
    with pytest.raises(QueryError, match="unknown normalization 'zscore'"):
        weighted_sum([RUN_A, RUN_B], weights=[1, 1], normalization="zscore")
    with pytest.raises(QueryError, match=r"run 1, query 'q': document 'x' has score inf"):
        weighted_sum([RUN_A, {"q": {"x": float("inf")}}], weights=[1, 1], normalization=None)


def test_weighted_sum_accepts_numpy_weights():
    fused = weighted_sum([RUN_A, RUN_B], weights=np.array([0.3, 0.7]))
    assert fused["q"]["b"] == pytest.approx(0.85)


# --- properties ------------------------------------------------------------------------------

_scores = st.dictionaries(
    st.sampled_from([f"d{i}" for i in range(10)]),
    st.floats(-100, 100, allow_nan=False),
    max_size=10,
)
_runs = st.lists(
    st.dictionaries(st.sampled_from(["q1", "q2", "q3"]), _scores, max_size=3),
    min_size=1,
    max_size=4,
)


@given(runs=_runs)
def test_fused_runs_hold_each_input_document_once(runs):
    expected = {}
    for run in runs:
        for qid, scores in run.items():
            expected.setdefault(qid, set()).update(scores)
    weights = [1.0] * len(runs)
    for fused in (
        reciprocal_rank_fusion(runs),
        weighted_sum(runs, weights),
        weighted_sum(runs, weights, None),
    ):
        assert {qid: set(scores) for qid, scores in fused.items()} == expected


@given(runs=_runs, weights=st.lists(st.floats(0, 10), min_size=4, max_size=4).filter(any))
def test_minmax_weighted_sum_lies_between_zero_and_total_weight(runs, weights):
    weights = weights[: len(runs)]
    if not any(weights):
        weights[0] = 1.0
    for scores in weighted_sum(runs, weights).values():
        for value in scores.values():
            assert -1e-12 <= value <= math.fsum(weights) + 1e-9


@given(scores=_scores)
def test_rrf_of_one_run_keeps_its_ranking(scores):
    fused = reciprocal_rank_fusion([{"q": scores}])
    assert [doc for doc, _ in ranked(fused["q"])] == [doc for doc, _ in ranked(scores)]


# --- parity with ranx on real BM25 runs ------------------------------------------------------

_TOKEN = re.compile(r"\w+")


def _data_dir() -> Path:
    configured = os.environ.get("RAGPIPE_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def scifact_title_and_text_runs():
    """BM25 top 100 over titles only and over abstracts only: two real runs on unrelated scales."""
    rank_bm25 = pytest.importorskip("rank_bm25")
    from ragpipe.trec import read_qrels

    folder = _data_dir() / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(
            f"dataset 'scifact' not found in {folder.parent}; "
            "set RAGPIPE_DATA to the folder holding it"
        )
    judged = read_qrels(folder / "qrels" / "test.tsv")
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        queries = {r["_id"]: r["text"] for r in map(json.loads, handle) if r["_id"] in judged}
    doc_ids = [record["_id"] for record in records]
    runs = []
    for field in ("title", "text"):
        bm25 = rank_bm25.BM25Okapi(
            [_TOKEN.findall(record[field].lower()) or [""] for record in records]
        )
        run = {}
        for qid, text in queries.items():
            scores = bm25.get_scores(_TOKEN.findall(text.lower()))
            top = np.argsort(-scores, kind="stable")[:100]
            run[qid] = {doc_ids[i]: float(scores[i]) for i in top}
        runs.append(run)
    return runs


def test_fusing_real_runs_keeps_what_either_run_found(scifact_title_and_text_runs):
    from ragpipe.metrics import evaluate
    from ragpipe.trec import read_qrels

    title_run, text_run = scifact_title_and_text_runs
    qrels = read_qrels(_data_dir() / "scifact" / "qrels" / "test.tsv")
    rrf_run = reciprocal_rank_fusion([title_run, text_run])
    wsum_run = weighted_sum([title_run, text_run], [0.3, 0.7])
    for fused in (rrf_run, wsum_run):
        assert all(
            len(fused[qid]) == len(title_run[qid].keys() | text_run[qid].keys()) for qid in fused
        )

    metrics = ["ndcg@10", "recall@100", "recall@200"]
    title, text, rrf, wsum = (
        evaluate(qrels, run, metrics).mean for run in (title_run, text_run, rrf_run, wsum_run)
    )
    # Both fused runs hold the union of the two top-100 lists: their recall@200 is the union's.
    union_recall = evaluate(
        qrels, {q: {**title_run[q], **text_run[q]} for q in title_run}, ["recall@200"]
    )
    assert rrf["recall@200"] == wsum["recall@200"] == union_recall.mean["recall@200"]
    # Measured here: title 0.689, abstract 0.871, RRF 0.888 recall@100; the weighted sum's
    # nDCG@10 (0.651) beats the abstract-only run's (0.636). Broken fusion would fall below.
    assert rrf["recall@100"] > max(title["recall@100"], text["recall@100"])
    assert wsum["ndcg@10"] > text["ndcg@10"] > title["ndcg@10"]


def _untied(run):
    # ranx ranks tied documents in its own order; strictly decreasing scores remove the question.
    return {
        qid: {doc_id: float(len(scores) - rank) for rank, (doc_id, _) in enumerate(ranked(scores))}
        for qid, scores in run.items()
    }


def test_rrf_and_minmax_weighted_sum_match_ranx(scifact_title_and_text_runs):
    ranx = pytest.importorskip("ranx", reason="ranx not installed (its dependencies weigh ~440 MB)")
    title_run, text_run = scifact_title_and_text_runs

    untied = [_untied(title_run), _untied(text_run)]
    ours_rrf = reciprocal_rank_fusion(untied, k=60)
    their_rrf = ranx.fuse(
        [ranx.Run(run) for run in untied], norm=None, method="rrf", params={"k": 60}
    ).to_dict()
    assert ours_rrf.keys() == their_rrf.keys()
    for qid, scores in ours_rrf.items():
        assert scores == pytest.approx(their_rrf[qid], abs=1e-9), qid

    weights = [0.3, 0.7]
    ours_sum = weighted_sum([title_run, text_run], weights)
    their_sum = ranx.fuse(
        [ranx.Run(title_run), ranx.Run(text_run)],
        norm="min-max",
        method="wsum",
        params={"weights": weights},
    ).to_dict()
    compared = 0
    for qid, scores in ours_sum.items():
        if any(len(set(run[qid].values())) == 1 for run in (title_run, text_run)):
            continue  # all-equal scores: ranx maps them to 0, ragpipe to 1 (documented policy)
        assert scores == pytest.approx(their_sum[qid], abs=1e-9), qid
        compared += 1
    assert compared >= 290
