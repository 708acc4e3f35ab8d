"""Tests for ragpipe.retrievers.bm25: parity with rank-bm25 on SciFact, hand-computed scores,
top-k edge cases, and the on-disk round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from ragpipe.corpus import load_corpus, load_queries
from ragpipe.errors import IndexStoreError, RagpipeError
from ragpipe.retrievers.bm25 import BM25Index, BM25Params
from ragpipe.text import Analyzer, AnalyzerConfig
from ragpipe.trec import read_qrels

N_PARITY_QUERIES = 50


class LuceneIdfBM25(BM25Okapi):
    """rank-bm25's Okapi scorer with Lucene's always-positive idf, the ragpipe default."""

    def _calc_idf(self, nd):
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


# --- parity with rank-bm25 on SciFact ----------------------------------------------------------


@pytest.fixture(scope="module")
def scifact(data_dir):
    """SciFact texts as the index builder joins them, their analyzed tokens, and 50 test queries."""
    folder = data_dir / "scifact"
    documents = load_corpus(folder).documents
    # as ragpipe.index._lexical_text: the title on its own line before the text
    texts = [f"{d.title}\n{d.text}" if d.title else d.text for d in documents]
    analyzer = Analyzer()
    tokens = [analyzer(text) for text in texts]
    queries = load_queries(folder / "queries.jsonl")
    test_ids = sorted(read_qrels(folder / "qrels" / "test.tsv"))[:N_PARITY_QUERIES]
    return {
        "texts": texts,
        "tokens": tokens,
        "queries": [queries[qid] for qid in test_ids],
        "analyzer": analyzer,
    }


@pytest.mark.parametrize(
    ("params", "reference"),
    [
        (BM25Params(idf="okapi", k1=1.5, b=0.75), lambda tokens: BM25Okapi(tokens, k1=1.5, b=0.75)),
        (BM25Params(), lambda tokens: LuceneIdfBM25(tokens, k1=1.2, b=0.75)),
    ],
    ids=["okapi-idf", "lucene-idf"],
)
def test_scores_match_rank_bm25_on_scifact(scifact, params, reference):
    assert len(scifact["texts"]) == 5183
    assert len(scifact["queries"]) == N_PARITY_QUERIES
    ours = BM25Index.build(scifact["texts"], scifact["analyzer"], params)
    theirs = reference(scifact["tokens"])
    matched = 0
    for query in scifact["queries"]:
        expected = theirs.get_scores(scifact["analyzer"](query))
        got = ours.scores(query)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=query)
        matched += int(np.count_nonzero(expected))
        # the ranking agrees too, not only the numbers
        top = ours.top_k(query, 10)[0]
        assert np.allclose(got[top], np.sort(expected)[::-1][: len(top)], rtol=1e-5)
    assert matched > 1000 * N_PARITY_QUERIES // 10  # the queries really hit the corpus


# --- hand-computed cases -----------------------------------------------------------------------


def test_term_in_one_of_two_documents_scores_it_above_zero_where_okapi_idf_gives_zero():
    texts = ["magma erupts", "bread rises"]
    index = BM25Index.build(texts)
    scores = index.scores("magma")
    # Lucene idf = ln(1 + (2 - 1 + 0.5) / (1 + 0.5)) = ln 2; both docs have length avgdl = 2, so the
    # tf part is 1 * 2.2 / (1 + 1.2) = 1 and the score is ln 2.
    assert scores.tolist() == pytest.approx([math.log(2), 0.0], rel=1e-6)
    assert index.top_k("magma", 10)[0].tolist() == [0]
    # Okapi idf = ln((2 - 1 + 0.5) / (1 + 0.5)) = ln 1 = 0: the matching document cannot be told
    # from the other, in rank-bm25 and in idf="okapi". That is why Lucene's idf is the default.
    okapi = BM25Index.build(texts, params=BM25Params(idf="okapi"))
    assert okapi.scores("magma").tolist() == [0.0, 0.0]
    analyzer = Analyzer()
    assert BM25Okapi([analyzer(t) for t in texts]).get_scores(analyzer("magma")).tolist() == [0.0, 0.0]


def test_term_in_exactly_half_the_documents_still_ranks_them_first():
    texts = ["lava flows", "lava cools", "snow falls", "snow melts"]
    index = BM25Index.build(texts)
    rows, scores = index.top_k("lava", 4)
    assert rows.tolist() == [0, 1]
    # ln(1 + 2.5 / 2.5) = ln 2, every document of length 2 = avgdl
    assert scores.tolist() == pytest.approx([math.log(2)] * 2, rel=1e-6)
    assert index.scores("lava")[2:].tolist() == [0.0, 0.0]
    # Okapi idf of a term in half the corpus is ln 1 = 0: nothing is ranked.
    okapi = BM25Index.build(texts, params=BM25Params(idf="okapi"))
    assert okapi.scores("lava").tolist() == [0.0] * 4


def test_three_document_scores_computed_by_hand():
    # Terms after analysis: d0 [appl, appl, banana], d1 [appl, cherri], d2 [cherri, date].
    # N = 3, avgdl = 7/3, k1 = 1.2, b = 0.75.
    # "apple": df = 2, idf = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln 1.6 = 0.4700036
    #   d0: tf 2, dl 3: 0.4700036 * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 3 / (7/3))) = 0.5981864
    #   d1: tf 1, dl 2: 0.4700036 * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / (7/3))) = 0.4991763
    # "date": df = 1, idf = ln(1 + 2.5 / 1.5) = 0.9808293
    #   d2: tf 1, dl 2: 0.9808293 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / (7/3))) = 1.0417083
    index = BM25Index.build(["apple apple banana", "apple cherry", "cherry date"])
    assert index.scores("apple").tolist() == pytest.approx([0.5981864, 0.4991763, 0.0], rel=1e-6)
    assert index.scores("date").tolist() == pytest.approx([0.0, 0.0, 1.0417083], rel=1e-6)
    # query terms add up; a repeated query term counts twice, as in rank-bm25
    assert index.scores("apple date").tolist() == pytest.approx([0.5981864, 0.4991763, 1.0417083], rel=1e-6)
    assert index.scores("apple apple").tolist() == pytest.approx([2 * 0.5981864, 2 * 0.4991763, 0.0], rel=1e-6)
    rows, scores = index.top_k("apple date", 3)
    assert rows.tolist() == [2, 0, 1]
    assert scores.tolist() == pytest.approx([1.0417083, 0.5981864, 0.4991763], rel=1e-6)


def test_k1_and_b_change_scores_as_the_formula_says():
    texts = ["apple apple banana", "apple cherry", "cherry date"]
    # b = 0: no length normalisation; k1 = 0: tf saturates at once, the score is the idf.
    flat = BM25Index.build(texts, params=BM25Params(k1=0.0, b=0.0))
    assert flat.scores("apple").tolist() == pytest.approx([math.log(1.6)] * 2 + [0.0], rel=1e-6)
    no_length = BM25Index.build(texts, params=BM25Params(k1=1.2, b=0.0))
    # d0: ln 1.6 * 2 * 2.2 / (2 + 1.2); d1: ln 1.6 * 2.2 / (1 + 1.2) = ln 1.6
    assert no_length.scores("apple").tolist() == pytest.approx(
        [math.log(1.6) * 4.4 / 3.2, math.log(1.6), 0.0], rel=1e-6
    )


def test_empty_documents_are_valid_rows_that_never_match():
    index = BM25Index.build(["", "the of and", "volcanic ash"])
    assert index.n_docs == 3
    assert index.doc_lengths.tolist() == [0, 0, 2]
    assert index.top_k("ash", 5)[0].tolist() == [2]
    assert index.scores("ash")[:2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (BM25Params(k1=-0.1), "k1 must be a finite number >= 0, got -0.1"),
        (BM25Params(k1=float("inf")), "k1 must be a finite number >= 0, got inf"),
        (BM25Params(b=1.5), r"b must be within \[0, 1\], got 1.5"),
        (BM25Params(idf="bm25+"), "idf must be 'lucene' or 'okapi', got 'bm25\\+'"),
    ],
)
def test_invalid_params_are_rejected(params, message):
    with pytest.raises(RagpipeError, match=message):
        BM25Index.build(["some text"], params=params)


# --- top_k -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_index(small_corpus):
    return BM25Index.build([f"{d.title}\n{d.text}" if d.title else d.text for d in small_corpus])


def test_top_k_finds_the_document_with_the_phrase(small_corpus, small_index):
    rows, scores = small_index.top_k("wild yeast starter", 3)
    assert small_corpus[rows[0]].doc_id == "d03"
    assert scores[0] > 0


def test_k_larger_than_the_matching_documents_returns_only_those(small_corpus, small_index):
    # "water" is in d04 (espresso) and d06 (photosynthesis) only
    rows, scores = small_index.top_k("water", 100)
    assert sorted(small_corpus[r].doc_id for r in rows) == ["d04", "d06"]
    assert len(scores) == 2 and (scores > 0).all()
    assert list(scores) == sorted(scores, reverse=True)


def test_top_k_agrees_with_the_full_score_vector(small_index):
    query = "light water wind energy"
    all_scores = small_index.scores(query)
    rows, scores = small_index.top_k(query, 3)
    assert scores.tolist() == sorted(all_scores, reverse=True)[:3]
    assert all_scores[rows].tolist() == scores.tolist()


def test_k_zero_returns_nothing(small_index):
    rows, scores = small_index.top_k("water", 0)
    assert rows.shape == (0,) and scores.shape == (0,)


@pytest.mark.parametrize("query", ["zeppelin quasar", "", "the of and is", "!!!"])
def test_query_without_a_known_term_returns_nothing(small_index, query):
    rows, scores = small_index.top_k(query, 10)
    assert rows.tolist() == [] and scores.tolist() == []
    assert not small_index.scores(query).any()


def test_tied_scores_come_back_in_row_order():
    texts = ["pawn", "queen", "pawn", "rook", "pawn", "pawn king"]
    index = BM25Index.build(texts)
    rows, scores = index.top_k("pawn", 10)
    # rows 0, 2, 4 tie (same length and tf); row 5 is longer and scores lower
    assert rows.tolist() == [0, 2, 4, 5]
    assert scores[0] == scores[1] == scores[2] > scores[3]
    assert index.top_k("pawn", 10)[0].tolist() == rows.tolist()


def test_ties_cut_at_k_keep_the_first_rows_of_a_small_index():
    index = BM25Index.build(["same words"] * 10)
    assert index.top_k("same", 3)[0].tolist() == [0, 1, 2]


def test_ties_cut_at_k_keep_the_first_rows():
    index = BM25Index.build(["same words"] * 1000)
    assert index.top_k("same", 3)[0].tolist() == [0, 1, 2]


# --- persistence -------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_save_and_load_give_identical_scores_and_settings(tmp_path, small_corpus, mmap):
    params = BM25Params(k1=0.9, b=0.4)
    analyzer = Analyzer(AnalyzerConfig(stemmer=None))
    index = BM25Index.build([d.text for d in small_corpus], analyzer, params)
    index.save(tmp_path / "bm25")
    assert sorted(p.name for p in (tmp_path / "bm25").iterdir()) == [
        "doc_lengths.npy", "params.json", "tf_data.npy", "tf_indices.npy", "tf_indptr.npy", "vocabulary.json",
        "weights.npy",
    ]
    loaded = BM25Index.load(tmp_path / "bm25", mmap=mmap)
    assert loaded.params == params
    assert loaded.analyzer.to_config() == analyzer.to_config()
    assert loaded.vocabulary == index.vocabulary
    for query in ["pawn", "running runs", "wind turbines generator", "light", "紅茶", ""]:
        assert loaded.scores(query).tolist() == index.scores(query).tolist()
        for got, expected in zip(loaded.top_k(query, 5), index.top_k(query, 5)):
            assert got.tolist() == expected.tolist()


def test_vocabulary_with_cjk_is_stored_as_readable_json(tmp_path):
    BM25Index.build(["東京"]).save(tmp_path)
    assert json.loads((tmp_path / "vocabulary.json").read_text(encoding="utf-8")) == ["東", "京", "東京"]


@pytest.mark.parametrize("missing", ["tf_indptr.npy", "vocabulary.json", "params.json"])
def test_load_with_a_missing_file_is_an_index_store_error_naming_the_folder(tmp_path, missing):
    BM25Index.build(["lava flows", "snow falls"]).save(tmp_path / "bm25")
    (tmp_path / "bm25" / missing).unlink()
    with pytest.raises(IndexStoreError) as caught:
        BM25Index.load(tmp_path / "bm25")
    assert f"cannot read the BM25 index in {tmp_path / 'bm25'}" in str(caught.value)
    assert missing in str(caught.value)


def test_load_of_a_missing_folder_is_an_index_store_error(tmp_path):
    with pytest.raises(IndexStoreError, match="cannot read the BM25 index"):
        BM25Index.load(tmp_path / "nowhere")


def test_load_with_incomplete_params_is_an_index_store_error(tmp_path):
    BM25Index.build(["lava flows", "snow falls"]).save(tmp_path)
    (tmp_path / "params.json").write_text('{"bm25": {"k1": 1.2, "b": 0.75}}', encoding="utf-8")
    with pytest.raises(IndexStoreError):
        BM25Index.load(tmp_path)
