"""Index build, load and search: results per document, stored files, and refusals of bad state."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ragpipe.chunking import ChunkingConfig
from ragpipe.errors import IndexStoreError, QueryError, RagpipeError
from ragpipe.index import Index, IndexConfig, SearchOptions
from ragpipe.retrievers.dense import DenseConfig
from ragpipe.types import Document


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_corpus):
    path = tmp_path_factory.mktemp("idx") / "small"
    Index.build(small_corpus, path)
    return path


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_finds_the_obvious_document(built, mode):
    index = Index.load(built)
    result = index.search({"q": "coffee espresso pressure"}, k=3, options=SearchOptions(mode=mode))
    assert list(result.run["q"])[0] == "d04"


def test_semantic_query_without_shared_words_is_found_by_dense_only(built):
    index = Index.load(built)
    query = {"q": "how do plants make food from sunlight"}
    dense = index.search(query, k=1, options=SearchOptions(mode="dense")).run["q"]
    assert list(dense) == ["d06"]


def test_k_larger_than_corpus_returns_only_real_documents(built):
    index = Index.load(built)
    for mode in ("dense", "hybrid"):
        run = index.search({"q": "energy"}, k=50, options=SearchOptions(mode=mode)).run["q"]
        assert len(run) == 12
        assert set(run) == {f"d{i:02d}" for i in range(1, 13)}
        assert all(abs(s) < 1e6 for s in run.values())  # no FAISS sentinel scores


def test_bm25_returns_only_documents_sharing_a_term(built):
    run = Index.load(built).search({"q": "glaciers"}, k=10, options=SearchOptions(mode="bm25")).run["q"]
    assert list(run) == ["d12"]


def test_hybrid_lists_each_document_once_and_both_retrievers_agreeing_wins(built):
    index = Index.load(built)
    result = index.search({"q": "wind turbine generator"}, k=12, options=SearchOptions(mode="hybrid"))
    ranking = list(result.run["q"])
    assert len(ranking) == len(set(ranking))
    assert ranking[0] == "d02"


def test_weighted_fusion_extremes_reduce_to_single_retrievers(built):
    index = Index.load(built)
    q = {"q": "energy from the ocean"}
    only_dense = index.search(q, k=5, options=SearchOptions(mode="hybrid", fusion="weighted", dense_weight=1.0)).run["q"]
    dense = index.search(q, k=5, options=SearchOptions(mode="dense")).run["q"]
    assert list(only_dense) == list(dense)


def test_manifest_records_model_settings_and_checksums(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["encoder"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["encoder"]["dim"] == 384 and manifest["encoder"]["normalized"] is True
    assert manifest["documents"] == 12 and manifest["passages"] == 12
    assert manifest["bm25"]["analyzer"] == {"lowercase": True, "stopwords": "english", "stemmer": "english"}
    files = manifest["files"]
    assert {"documents.parquet", "passages.parquet", "dense/vectors.faiss", "bm25/tf_data.npy"} <= set(files)
    assert all(len(f["sha256"]) == 64 for f in files.values())
    assert not list(built.rglob("*.pkl")) and not list(built.rglob("*.pickle"))
    assert Index.load(built).verify() == []


def test_long_document_is_split_and_counted_once(tmp_path, encoder):
    filler = " ".join(f"sentence {i} talks about river boats and harbours." for i in range(200))
    docs = [Document("long", filler, "Boats"), Document("other", "Mountain goats climb steep cliffs.", "Goats")]
    index = Index.build(docs, tmp_path / "i", IndexConfig(chunking=ChunkingConfig(overlap=32)))
    assert index.manifest["passages"] > 5
    run = index.search({"q": "river boats harbours"}, k=10, options=SearchOptions(mode="dense")).run["q"]
    assert list(run) == ["long", "other"]


def test_rebuild_replaces_the_index_and_leaves_one_generation(tmp_path, small_corpus):
    path = tmp_path / "i"
    Index.build(small_corpus, path, IndexConfig(dense=None))
    Index.build(small_corpus[:3], path, IndexConfig(dense=None))
    assert Index.load(path).manifest["documents"] == 3
    assert len(list(path.glob("gen-*"))) == 1


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_dense_indexes_agree_on_the_top_hit(tmp_path, small_corpus, kind):
    index = Index.build(small_corpus, tmp_path / kind, IndexConfig(dense=DenseConfig(kind=kind)))
    index = Index.load(tmp_path / kind)
    run = index.search({"q": "coffee espresso pressure"}, k=3, options=SearchOptions(mode="dense")).run["q"]
    assert list(run)[0] == "d04"


def test_bm25_only_index_needs_no_encoder(tmp_path, small_corpus):
    index = Index.build(small_corpus, tmp_path / "b", IndexConfig(dense=None))
    assert index.manifest["encoder"] is None
    with pytest.raises(QueryError, match="BM25-only"):
        index.search({"q": "coffee"}, options=SearchOptions(mode="dense"))


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_query_is_refused(built, text):
    with pytest.raises(QueryError, match="empty"):
        Index.load(built).search({"q": text})


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_is_refused(built, k):
    with pytest.raises(QueryError, match="k must be >= 1"):
        Index.load(built).search({"q": "coffee"}, k=k)


def test_unknown_mode_is_refused(built):
    with pytest.raises(QueryError, match="unknown mode"):
        Index.load(built).search({"q": "coffee"}, options=SearchOptions(mode="sparse"))


def test_missing_index_directory(tmp_path):
    with pytest.raises(IndexStoreError, match="no index at .*ragpipe index"):
        Index.load(tmp_path / "nothing")


def test_half_written_index_without_manifest(tmp_path, built):
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(IndexStoreError, match="interrupted"):
        Index.load(broken)


def test_truncated_component_file_is_detected(tmp_path, built):
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    generation = json.loads((broken / "manifest.json").read_text())["generation"]
    faiss_file = broken / generation / "dense" / "vectors.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    with pytest.raises(IndexStoreError, match="vectors.faiss has the wrong size"):
        Index.load(broken)


def test_damaged_manifest(tmp_path, built):
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(IndexStoreError, match="damaged"):
        Index.load(broken)


def test_query_with_another_encoder_is_refused_naming_both(built):
    with pytest.raises(IndexStoreError, match="built with encoder 'sentence-transformers/all-MiniLM-L6-v2', not 'BAAI/bge-small-en-v1.5'"):
        Index.load(built, encoder_model="BAAI/bge-small-en-v1.5")


def test_changed_encoder_weights_are_refused(tmp_path, built):
    moved = tmp_path / "moved"
    shutil.copytree(built, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["encoder"]["fingerprint"] = "0" * 64
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexStoreError, match="weights .* differ"):
        Index.load(moved).search({"q": "coffee"}, options=SearchOptions(mode="dense"))


def test_building_into_a_foreign_directory_is_refused(tmp_path, small_corpus):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(IndexStoreError, match="not empty"):
        Index.build(small_corpus, tmp_path, IndexConfig(dense=None))
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_empty_corpus_and_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(RagpipeError, match="empty"):
        Index.build([], tmp_path / "e", IndexConfig(dense=None))
    docs = [Document("a", "one"), Document("a", "two")]
    with pytest.raises(RagpipeError, match="duplicate document id 'a'"):
        Index.build(docs, tmp_path / "d", IndexConfig(dense=None))
    assert not (tmp_path / "d").exists()


def test_hits_quote_the_best_passage(built):
    index = Index.load(built)
    result = index.search({"q": "black hole event horizon"}, k=2)
    hits = index.hits(result, "q", "black hole event horizon")
    assert hits[0].doc_id == "d05" and hits[0].title == "Black holes"
    assert "event horizon" in hits[0].snippet
    assert [h.rank for h in hits] == [1, 2]
    assert np.isfinite([h.score for h in hits]).all()


def test_manifest_missing_a_field_is_damaged_not_a_crash(tmp_path, built):
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["bm25"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexStoreError, match="damaged .*bm25"):
        Index.load(broken)
