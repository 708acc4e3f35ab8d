"""Tests for ragpipe.metrics: hand-computed values, properties, and parity with pytrec_eval."""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragpipe.errors import QueryError, RagpipeError
from ragpipe.metrics import EvalResult, Metric, evaluate, parse_metric
from ragpipe.trec import read_qrels

ALL_KINDS = ("ndcg", "recall", "precision", "mrr", "map")


# --- metric names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ndcg@10", Metric("ndcg", 10)),
        ("nDCG@10", Metric("ndcg", 10)),
        ("recall@100", Metric("recall", 100)),
        ("precision@5", Metric("precision", 5)),
        ("p@5", Metric("precision", 5)),
        ("P@1", Metric("precision", 1)),
        ("mrr@10", Metric("mrr", 10)),
        ("map@1000", Metric("map", 1000)),
    ],
)
def test_parse_metric_accepts_valid_names(name, expected):
    assert parse_metric(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "ndcg",
        "ndcg@0",
        "ndcg@-1",
        "ndcg@1.5",
        "ndcg@",
        "bpref@10",
        "ndcg_cut_10",
        " ndcg@10",
        "ndcg@10x",
        "",
    ],
)
def test_parse_metric_rejects_bad_names_and_lists_valid_forms(name):
    with pytest.raises(QueryError) as caught:
        parse_metric(name)
    message = str(caught.value)
    assert repr(name) in message
    for form in ("ndcg@K", "recall@K", "precision@K", "p@K", "mrr@K", "map@K"):
        assert form in message
    assert isinstance(caught.value, RagpipeError)


def test_evaluate_rejects_bad_metric_and_empty_metric_list():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0}}
    with pytest.raises(QueryError, match="'ndcg@ten'"):
        evaluate(qrels, run, ["ndcg@10", "ndcg@ten"])
    with pytest.raises(QueryError, match="no metrics"):
        evaluate(qrels, run, [])


def test_evaluate_accepts_a_single_metric_string():
    result = evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, "p@1")
    assert result.mean == {"p@1": 1.0}


# --- values computed by hand -----------------------------------------------------------------

# q1: graded judgments; b is judged not relevant (grade 0); d is relevant but never retrieved;
#     e is retrieved but unjudged. Ranking: a(2) b(0) c(1) e(-).
# q2: one relevant doc, at rank 3 (MRR cutoff).
# q3: judged but absent from the run: scores 0 everywhere, still counts in the mean.
# q4: judged, but nothing relevant: left out of the mean.
# q5: in the run without judgments: ignored.
HAND_QRELS = {
    "q1": {"a": 2, "b": 0, "c": 1, "d": 3},
    "q2": {"x": 1, "y": 0},
    "q3": {"m": 1},
    "q4": {"n": 0, "o": -1},
}
HAND_RUN = {
    "q1": {"a": 0.9, "b": 0.8, "c": 0.7, "e": 0.6},
    "q2": {"y": 0.9, "z": 0.8, "x": 0.7},
    "q4": {"n": 1.0},
    "q5": {"a": 1.0},
}


def test_graded_ndcg_by_hand():
    result = evaluate(HAND_QRELS, HAND_RUN, ["ndcg@3", "ndcg@1", "ndcg@10"])
    # q1 ndcg@3: DCG = 2/log2(2) + 0/log2(3) + 1/log2(4) = 2 + 0 + 0.5 = 2.5
    #   ideal gains 3, 2, 1 (d counts although not retrieved; b's 0 is no gain):
    #   IDCG@3 = 3/1 + 2/log2(3) + 1/2 = 3 + 1.2618595 + 0.5 = 4.7618595
    #   nDCG@3 = 2.5 / 4.7618595 = 0.5250050
    assert result.per_query["ndcg@3"]["q1"] == pytest.approx(0.5250049893849101, abs=1e-12)
    # q1 ndcg@1: 2/1 over ideal 3/1 = 0.6667
    assert result.per_query["ndcg@1"]["q1"] == pytest.approx(2 / 3, abs=1e-12)
    # q1 ndcg@10: same DCG 2.5 (e is unjudged, gain 0); ideal unchanged since only 3 relevant docs.
    assert result.per_query["ndcg@10"]["q1"] == pytest.approx(0.5250049893849101, abs=1e-12)
    # q2 ndcg@3: DCG = 1/log2(4) = 0.5; IDCG = 1/log2(2) = 1 -> 0.5
    assert result.per_query["ndcg@3"]["q2"] == pytest.approx(0.5, abs=1e-12)
    assert result.per_query["ndcg@1"]["q2"] == 0.0
    # q3 missing from the run
    assert result.per_query["ndcg@3"]["q3"] == 0.0
    # Mean over q1, q2, q3 only: (0.5250050 + 0.5 + 0) / 3 = 0.3416683
    assert result.num_queries == 3
    assert set(result.per_query["ndcg@3"]) == {"q1", "q2", "q3"}
    assert result.mean["ndcg@3"] == pytest.approx((0.5250049893849101 + 0.5) / 3, abs=1e-12)


def test_recall_precision_mrr_map_by_hand():
    metrics = [
        "recall@3",
        "recall@1",
        "p@3",
        "precision@10",
        "mrr@1",
        "mrr@2",
        "mrr@3",
        "map@4",
        "map@1",
    ]
    result = evaluate(HAND_QRELS, HAND_RUN, metrics)
    q1 = {name: result.per_query[name]["q1"] for name in metrics}
    # q1 relevant: a, c, d (3 of them). Top 3 = a b c -> 2 relevant.
    assert q1["recall@3"] == pytest.approx(2 / 3)
    assert q1["recall@1"] == pytest.approx(1 / 3)
    assert q1["p@3"] == pytest.approx(2 / 3)
    # Only 4 documents retrieved, precision@10 still divides by 10: 2/10.
    assert q1["precision@10"] == pytest.approx(0.2)
    assert q1["mrr@1"] == 1.0
    # map@4: relevant at rank 1 (precision 1/1) and rank 3 (precision 2/3); d never retrieved still
    # counts in the denominator: (1 + 2/3) / 3 = 5/9 = 0.5556
    assert q1["map@4"] == pytest.approx(5 / 9)
    # map@1: only rank 1 counts: 1/1 / 3 = 1/3
    assert q1["map@1"] == pytest.approx(1 / 3)

    q2 = {name: result.per_query[name]["q2"] for name in metrics}
    # q2's only relevant doc x is at rank 3: cut off by mrr@1 and mrr@2.
    assert q2["mrr@1"] == 0.0
    assert q2["mrr@2"] == 0.0
    assert q2["mrr@3"] == pytest.approx(1 / 3)
    assert q2["recall@3"] == 1.0
    # map@4: x at rank 3 with precision 1/3, one relevant doc: 1/3
    assert q2["map@4"] == pytest.approx(1 / 3)

    for name in metrics:
        assert result.per_query[name]["q3"] == 0.0
    # Means over 3 queries; e.g. mrr@3 = (1 + 1/3 + 0) / 3 = 4/9
    assert result.mean["mrr@3"] == pytest.approx(4 / 9)
    assert result.mean["map@4"] == pytest.approx((5 / 9 + 1 / 3) / 3)


def test_result_keys_follow_the_caller_spelling():
    result = evaluate(HAND_QRELS, HAND_RUN, ["P@3", "precision@3", "P@3"])
    assert list(result.mean) == ["P@3", "precision@3"]
    assert result.mean["P@3"] == result.mean["precision@3"]
    assert isinstance(result, EvalResult)


def test_query_with_empty_ranking_scores_zero():
    result = evaluate(
        {"q": {"a": 1}}, {"q": {}}, ["ndcg@10", "recall@10", "p@10", "mrr@10", "map@10"]
    )
    assert result.num_queries == 1
    assert all(value == 0.0 for value in result.mean.values())


def test_qrels_without_any_relevant_judgment_is_an_error():
    with pytest.raises(QueryError, match="no relevant judgment"):
        evaluate({"q": {"a": 0}}, {"q": {"a": 1.0}}, ["ndcg@10"])


def test_nan_score_is_an_error_naming_query_and_document():
    with pytest.raises(QueryError, match=r"'q'.*'b'.*NaN"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0, "b": float("nan")}}, ["ndcg@10"])


def test_ties_are_broken_by_doc_id_ascending_unlike_trec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {"q": {"a": 1}}
    run = {"q": {"b": 1.0, "a": 1.0}}
    # ragpipe: tie -> smaller doc id first -> a at rank 1 -> MRR 1.
    assert evaluate(qrels, run, ["mrr@10"]).mean["mrr@10"] == 1.0
    # trec_eval puts tied docs in descending docno order: b first, a at rank 2.
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
    assert reference["q"]["recip_rank"] == 0.5


def test_dict_order_does_not_change_results():
    reordered_qrels = {
        qid: dict(reversed(list(j.items()))) for qid, j in reversed(list(HAND_QRELS.items()))
    }
    reordered_run = {
        qid: dict(reversed(list(s.items()))) for qid, s in reversed(list(HAND_RUN.items()))
    }
    metrics = [f"{kind}@{k}" for kind in ALL_KINDS for k in (1, 3, 10)]
    assert evaluate(reordered_qrels, reordered_run, metrics) == evaluate(
        HAND_QRELS, HAND_RUN, metrics
    )


# --- properties ------------------------------------------------------------------------------

_doc_ids = st.sampled_from([f"d{i}" for i in range(12)])
_grades = st.integers(min_value=-1, max_value=3)
_judgments = st.dictionaries(_doc_ids, _grades, min_size=1, max_size=12)
_scores = st.dictionaries(
    _doc_ids, st.floats(min_value=-5, max_value=5, allow_nan=False), max_size=12
)
_qids = st.sampled_from(["q1", "q2", "q3", "q4"])
_qrels = st.dictionaries(_qids, _judgments, min_size=1, max_size=4).filter(
    lambda qrels: any(g > 0 for judgments in qrels.values() for g in judgments.values())
)
_runs = st.dictionaries(_qids, _scores, max_size=4)
_cutoffs = st.integers(min_value=1, max_value=15)


@given(judgments=_judgments.filter(lambda j: any(g > 0 for g in j.values())), k=_cutoffs)
def test_ndcg_of_the_ideal_ranking_is_one(judgments, k):
    # Score each doc by its grade: the ranking is ideal whatever order ties take.
    run = {"q": {doc_id: float(grade) for doc_id, grade in judgments.items()}}
    assert evaluate({"q": judgments}, run, [f"ndcg@{k}"]).mean[f"ndcg@{k}"] == pytest.approx(
        1.0, abs=1e-12
    )


@given(qrels=_qrels, run=_runs, seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_line_or_dict_order(qrels, run, seed):
    shuffler = random.Random(seed)

    def shuffled(mapping):
        items = list(mapping.items())
        shuffler.shuffle(items)
        return {key: dict(value) if isinstance(value, dict) else value for key, value in items}

    shuffled_qrels = {qid: shuffled(j) for qid, j in shuffled(qrels).items()}
    shuffled_run = {qid: shuffled(s) for qid, s in shuffled(run).items()}
    metrics = ["ndcg@5", "recall@5", "p@5", "mrr@5", "map@5"]
    assert evaluate(shuffled_qrels, shuffled_run, metrics) == evaluate(qrels, run, metrics)


@given(qrels=_qrels, run=_runs)
def test_recall_never_decreases_with_k(qrels, run):
    result = evaluate(qrels, run, [f"recall@{k}" for k in range(1, 15)])
    for qid in result.per_query["recall@1"]:
        values = [result.per_query[f"recall@{k}"][qid] for k in range(1, 15)]
        assert values == sorted(values)


@given(qrels=_qrels, run=_runs, k=_cutoffs)
def test_all_metrics_lie_in_unit_interval(qrels, run, k):
    result = evaluate(qrels, run, [f"{kind}@{k}" for kind in ALL_KINDS])
    for per_query in result.per_query.values():
        for value in per_query.values():
            assert 0.0 <= value <= 1.0 + 1e-12
    judged = {qid for qid, judgments in qrels.items() if any(g > 0 for g in judgments.values())}
    assert result.num_queries == len(judged)


@settings(max_examples=200)
@given(qrels=_qrels, run=_runs, k=_cutoffs)
def test_matches_pytrec_eval_on_random_runs_without_ties(qrels, run, k):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    unique_run = _untied(run)
    ours = evaluate(qrels, unique_run, [f"ndcg@{k}", f"recall@{k}", f"p@{k}", f"map@{k}"])
    measures = {f"ndcg_cut_{k}", f"recall_{k}", f"P_{k}", f"map_cut_{k}"}
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(unique_run)
    for qid, theirs in reference.items():
        if qid not in ours.per_query[f"ndcg@{k}"]:
            continue  # no relevant judgment: ragpipe leaves the query out
        assert ours.per_query[f"ndcg@{k}"][qid] == pytest.approx(theirs[f"ndcg_cut_{k}"], abs=1e-9)
        assert ours.per_query[f"recall@{k}"][qid] == pytest.approx(theirs[f"recall_{k}"], abs=1e-9)
        assert ours.per_query[f"p@{k}"][qid] == pytest.approx(theirs[f"P_{k}"], abs=1e-9)
        assert ours.per_query[f"map@{k}"][qid] == pytest.approx(theirs[f"map_cut_{k}"], abs=1e-9)


# --- parity with pytrec_eval on real BM25 runs ----------------------------------------------

BM25_DEPTH = 100
_TOKEN = re.compile(r"\w+")


def _data_dir() -> Path:
    configured = os.environ.get("RAGPIPE_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _untied(run):
    """Keep ragpipe's ranking but make scores strictly decreasing, so no tie rule can apply."""
    from ragpipe.types import ranked

    return {
        qid: {doc_id: float(len(scores) - rank) for rank, (doc_id, _) in enumerate(ranked(scores))}
        for qid, scores in run.items()
    }


def _bm25_test_run(name: str):
    rank_bm25 = pytest.importorskip("rank_bm25")
    folder = _data_dir() / name
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(
            f"dataset {name!r} not found in {folder.parent}; "
            "set RAGPIPE_DATA to the folder holding it"
        )
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    doc_ids, doc_tokens = [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            doc_ids.append(record["_id"])
            doc_tokens.append(_tokens(record.get("title", "") + " " + record["text"]))
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["_id"] in qrels:
                queries[record["_id"]] = record["text"]
    bm25 = rank_bm25.BM25Okapi(doc_tokens)
    run = {}
    for qid, text in queries.items():
        scores = bm25.get_scores(_tokens(text))
        top = np.argsort(-scores, kind="stable")[:BM25_DEPTH]
        run[qid] = {doc_ids[i]: float(scores[i]) for i in top}
    return qrels, _untied(run)


@pytest.fixture(scope="module", params=["scifact", "nfcorpus-preproc"])
def bm25_run(request):
    return request.param, *_bm25_test_run(request.param)


def test_per_query_parity_with_pytrec_eval_on_bm25_runs(bm25_run):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    name, qrels, run = bm25_run
    ours = evaluate(qrels, run, ["ndcg@10", "recall@100", "p@10", "mrr@1000", "map@100"])
    measures = {"ndcg_cut_10", "recall_100", "P_10", "recip_rank", "map_cut_100"}
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    assert len(reference) == ours.num_queries == len(qrels)  # every judged query has relevant docs
    pairs = [
        ("ndcg@10", "ndcg_cut_10"),
        ("recall@100", "recall_100"),
        ("p@10", "P_10"),
        ("mrr@1000", "recip_rank"),
        ("map@100", "map_cut_100"),
    ]
    for ours_name, their_name in pairs:
        for qid, theirs in reference.items():
            assert ours.per_query[ours_name][qid] == pytest.approx(theirs[their_name], abs=1e-6), (
                name,
                ours_name,
                qid,
            )
        their_mean = math.fsum(values[their_name] for values in reference.values()) / len(reference)
        assert ours.mean[ours_name] == pytest.approx(their_mean, abs=1e-6)
    # A plain BM25 on these copies scores about 0.661 (scifact) and 0.318 (nfcorpus-preproc)
    # nDCG@10 (datasets README); a wildly different figure means the run or the metric broke.
    expected_ndcg = {"scifact": 0.661, "nfcorpus-preproc": 0.318}[name]
    assert ours.mean["ndcg@10"] == pytest.approx(expected_ndcg, abs=0.03)


def test_mrr_cutoff_matches_recip_rank_of_a_cut_run(bm25_run):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    _, qrels, run = bm25_run
    from ragpipe.types import ranked

    cut_run = {qid: dict(ranked(scores, 10)) for qid, scores in run.items()}
    ours = evaluate(qrels, run, ["mrr@10"])
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut_run)
    for qid, theirs in reference.items():
        assert ours.per_query["mrr@10"][qid] == pytest.approx(theirs["recip_rank"], abs=1e-6)
    # Some first hits fall below rank 10, so the cutoff must matter on this run.
    full = evaluate(qrels, run, ["mrr@100"])
    assert full.mean["mrr@100"] > ours.mean["mrr@10"]


def test_huge_cutoff_equals_a_cutoff_past_the_run_depth():
    # Relevant a (1) and b (2); run holds a then c. DCG = 1; IDCG = 2 + 1/log2(3) = 2.6309298
    # -> nDCG = 0.3800938 at any cutoff >= 2, including one far beyond the run.
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 1.0, "c": 0.5}}
    result = evaluate(qrels, run, ["ndcg@2", "ndcg@1000000000"])
    assert result.mean["ndcg@1000000000"] == result.mean["ndcg@2"]
    assert result.mean["ndcg@2"] == pytest.approx(1 / (2 + 1 / math.log2(3)), abs=1e-12)
