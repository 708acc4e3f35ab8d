"""Inputs that real users of BM25, FAISS and IR evaluators have seen go wrong, each with the right
answer asserted through the public API, plus fuzzed corpus files that must never crash a load."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragpipe.corpus import load_corpus
from ragpipe.errors import CorpusError, IndexStoreError, QueryError
from ragpipe.fusion import reciprocal_rank_fusion
from ragpipe.index import Index, IndexConfig, SearchOptions
from ragpipe.metrics import evaluate
from ragpipe.types import Document

BM25_ONLY = IndexConfig(dense=None)


def bm25_run(index: Index, text: str, k: int = 10) -> dict[str, float]:
    return index.search({"q": text}, k=k, options=SearchOptions(mode="bm25")).run["q"]


def test_01_bm25_on_two_documents_ranks_the_match_first(tmp_path):
    index = Index.build([Document("a", "the cat sat"), Document("b", "a dog ran")], tmp_path / "i", BM25_ONLY)
    run = bm25_run(index, "cat")
    assert list(run) == ["a"] and run["a"] > 0


def test_02_bm25_term_in_exactly_half_the_documents_still_separates_them(tmp_path):
    docs = [Document(f"m{i}", f"apple pie number {i}") for i in range(3)]
    docs += [Document(f"o{i}", f"banana split number {i}") for i in range(3)]
    run = bm25_run(Index.build(docs, tmp_path / "i", BM25_ONLY), "apple")
    assert sorted(run) == ["m0", "m1", "m2"] and min(run.values()) > 0


def test_03_k_above_corpus_size_returns_real_documents_only(tmp_path):
    docs = [Document("x", "red apples"), Document("y", "green pears"), Document("z", "yellow bananas")]
    index = Index.build(docs, tmp_path / "i")
    for mode in ("dense", "hybrid"):
        run = index.search({"q": "fruit"}, k=10, options=SearchOptions(mode=mode)).run["q"]
        assert sorted(run) == ["x", "y", "z"]
        assert all(-1e30 < s < 1e30 for s in run.values())


def test_04_score_zero_judgments_are_not_relevant():
    qrels = {"q": {"rel": 1, "judged_no": 0}}
    result = evaluate(qrels, {"q": {"judged_no": 1.0}}, ["recall@10", "ndcg@10"])
    assert result.mean == {"recall@10": 0.0, "ndcg@10": 0.0}


def test_05_document_from_both_retrievers_appears_once_and_outranks_a_single_retriever_hit():
    dense = {"q": {"both": 0.9, "dense_only": 0.8}}
    lexical = {"q": {"both": 12.0, "lexical_only": 11.0}}
    fused = reciprocal_rank_fusion([dense, lexical])["q"]
    assert sorted(fused) == ["both", "dense_only", "lexical_only"]
    assert fused["both"] > fused["dense_only"] == fused["lexical_only"]
    # and at the same rank in both runs: rank 2 + rank 2 beats rank 1 in a single run
    fused = reciprocal_rank_fusion([{"q": {"a": 2.0, "s": 1.0}}, {"q": {"b": 2.0, "s": 1.0}}])["q"]
    assert fused["s"] > fused["a"]


def test_06_document_of_five_matching_passages_counts_once(tmp_path):
    body = " ".join(["the lighthouse keeper watched the stormy harbour every night."] * 95)
    docs = [Document("long", body, "Lighthouse"), Document("short", "A harbour pilot guides ships.", "Pilots")]
    index = Index.build(docs, tmp_path / "i")
    assert (index.passages.doc_rows == 0).sum() >= 5
    for mode in ("dense", "bm25", "hybrid"):
        run = index.search({"q": "lighthouse harbour storm"}, k=10, options=SearchOptions(mode=mode)).run
        assert list(run["q"]).count("long") == 1
        assert evaluate({"q": {"long": 1}}, run, ["recall@10"]).mean["recall@10"] == 1.0


def test_07_megabyte_document_empty_text_and_whitespace_records(tmp_path):
    source = tmp_path / "odd.jsonl"
    import json

    sentences = [f"The committee reviewed section {i} of the annual budget report." for i in range(16_000)]
    sentences[8_000] = "A zeppelin drifted over the committee during the budget review."
    big = " ".join(sentences)  # ~1.06 MB of text
    rows = [
        {"_id": "big", "title": "Big", "text": big},
        {"_id": "title-only", "title": "Quantum chromodynamics primer", "text": ""},
        {"_id": "blank", "title": "", "text": "   \n\t  "},
        {"_id": "normal", "title": "Normal", "text": "An ordinary record about gardening."},
    ]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert len(big.encode()) > 1_000_000
    report = load_corpus(source)
    assert [d.doc_id for d in report.documents] == ["big", "title-only", "normal"]
    assert report.skipped_empty == ["blank"]  # reported, not indexed: nothing to search
    index = Index.build(report.documents, tmp_path / "i")
    assert index.verify() == []
    assert (index.passages.doc_rows == 0).sum() > 500
    assert list(bm25_run(index, "chromodynamics")) == ["title-only"]
    assert list(bm25_run(index, "zeppelin")) == ["big"]
    dense = index.search({"q": "quantum chromodynamics"}, k=1, options=SearchOptions(mode="dense")).run["q"]
    assert list(dense) == ["title-only"]


def test_08_bom_crlf_and_invalid_utf8(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'\xef\xbb\xbf{"_id": "a", "text": "first"}\r\n{"_id": "b", "text": "second"}\r\n')
    assert [d.text for d in load_corpus(good).documents] == ["first", "second"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n{"_id": "c", "text": "fine"}\n')
    with pytest.raises(CorpusError, match=rf"{bad}:2: not valid UTF-8"):
        load_corpus(bad)
    report = load_corpus(bad, on_bad_line="skip")
    assert [d.doc_id for d in report.documents] == ["a", "c"]
    bad_byte = len(b'{"_id": "b", "text": "caf')  # the 0xE9 that starts no UTF-8 sequence
    assert report.skipped_bad_lines == [(f"{bad}:2", f"not valid UTF-8 at byte {bad_byte}")]


@pytest.mark.parametrize(
    ("sentence", "other", "query"),
    [
        ("我们今天在北京大学学习自然语言处理", "天气很好我们去公园", "自然语言"),
        ("私は東京大学で機械学習を研究しています", "完全に無関係な文章です", "機械学習"),
    ],
)
def test_09_cjk_word_inside_a_sentence_is_found(tmp_path, sentence, other, query):
    docs = [Document("target", sentence), Document("other", other)]
    assert list(bm25_run(Index.build(docs, tmp_path / "i", BM25_ONLY), query))[0] == "target"


@pytest.mark.parametrize(("text", "k", "message"), [("", 5, "empty"), ("   \t", 5, "empty"), ("ok", 0, "k must be"), ("ok", -3, "k must be")])
def test_10_empty_query_and_non_positive_k(tmp_path, text, k, message):
    index = Index.build([Document("a", "text")], tmp_path / "i", BM25_ONLY)
    with pytest.raises(QueryError, match=message):
        index.search({"q": text}, k=k, options=SearchOptions(mode="bm25"))


def test_11_query_with_a_changed_encoder_names_both_models(tmp_path):
    index = Index.build([Document("a", "text")], tmp_path / "i")
    with pytest.raises(IndexStoreError, match="built with encoder 'sentence-transformers/all-MiniLM-L6-v2', not 'intfloat/e5-small-v2'"):
        Index.load(index.path, encoder_model="intfloat/e5-small-v2")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".csv", ".tsv", ".parquet", ".md"]))
def test_fuzzed_corpus_files_load_or_fail_with_a_corpus_error(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    for policy in ("error", "skip"):
        try:
            report = load_corpus(path, on_bad_line=policy)
        except CorpusError as exc:
            assert str(path) in str(exc)
        else:
            assert report.documents and all(d.text.strip() or d.title for d in report.documents)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(max_size=60), max_size=8))
def test_fuzzed_jsonl_lines_load_or_fail_with_a_line_number(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        load_corpus(path)
    except CorpusError as exc:
        assert str(path) in str(exc)
