"""``run_eval``: a comparison over setups on a BEIR-layout dataset, and the SciFact floors."""

from __future__ import annotations

import json

import pytest

from ragpipe.errors import IndexStoreError, QueryError
from ragpipe.evaluation import parse_setups, run_eval, write_report
from ragpipe.trec import read_run


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, small_corpus):
    root = tmp_path_factory.mktemp("data") / "tiny"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc in small_corpus:
            f.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    queries = {"q1": "espresso coffee", "q2": "lava from volcanoes", "q3": "bees and flowers", "q4": "unjudged query"}
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td04\t1\nq2\td07\t2\nq3\td10\t1\nq3\td06\t0\n", encoding="utf-8"
    )
    return root


def test_eval_compares_setups_and_writes_runs_and_json(tiny_dataset, tmp_path):
    report = run_eval(
        tiny_dataset, index_dir=tmp_path / "index", modes="bm25,dense,hybrid", metrics="ndcg@10,recall@100",
        runs_dir=tmp_path / "runs",
    )
    assert report.num_queries == 3 and report.index_built_now
    assert [row.setup for row in report.rows] == ["bm25", "dense", "hybrid-rrf"]
    for row in report.rows:
        assert row.metrics["ndcg@10"] == pytest.approx(1.0)  # each query's one relevant doc ranks first
        assert set(row.per_query["ndcg@10"]) == {"q1", "q2", "q3"}
        assert row.latency_ms["total"]["p50"] > 0 and row.latency_ms["total"]["p95"] >= row.latency_ms["total"]["p50"]
        assert row.index_bytes > 0
        run = read_run(row.run_file)
        assert list(run["q1"])[0] == "d04"
    assert "encode" in report.rows[2].latency_ms and "fusion" in report.rows[2].latency_ms
    table = report.table()
    assert "tiny (test, 3 judged queries); latency on " in table and "hybrid-rrf" in table
    assert " CPUs, " in report.machine and report.machine.endswith(("models in fp32", "models in bf16"))
    write_report(report, tmp_path / "out.json")
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["dataset"] == "tiny" and saved["machine"] == report.machine
    assert saved["rows"][0]["setup"] == "bm25" and "p50" in saved["rows"][0]["latency_ms"]
    assert saved["rows"][0]["metrics"]["ndcg@10"] == pytest.approx(1.0)


def test_eval_reuses_a_matching_index(tiny_dataset, tmp_path):
    run_eval(tiny_dataset, index_dir=tmp_path / "index", modes="bm25", runs_dir=tmp_path / "runs")
    again = run_eval(tiny_dataset, index_dir=tmp_path / "index", modes="bm25", runs_dir=tmp_path / "runs")
    assert not again.index_built_now


def test_eval_refuses_an_index_of_another_corpus(tiny_dataset, tmp_path, small_corpus):
    from ragpipe.index import Index, IndexConfig

    Index.build(small_corpus[:4], tmp_path / "other", IndexConfig(dense=None), source={"path": "x", "sha256": "0" * 64})
    with pytest.raises(IndexStoreError, match="was built from x"):
        run_eval(tiny_dataset, index_dir=tmp_path / "other", modes="bm25", runs_dir=tmp_path / "runs")


def test_eval_refuses_an_explicit_index_built_with_other_settings(tiny_dataset, tmp_path):
    from ragpipe.corpus import load_corpus
    from ragpipe.evaluation import corpus_fingerprint
    from ragpipe.index import Index, IndexConfig

    target = tmp_path / "bm25-only"
    source = {"path": str(tiny_dataset / "corpus.jsonl"), "sha256": corpus_fingerprint(tiny_dataset)}
    built = Index.build(load_corpus(tiny_dataset).documents, target, IndexConfig(dense=None),
                        source=source)
    before = (target / "manifest.json").read_bytes()
    with pytest.raises(IndexStoreError, match="has no dense index.*--rebuild"):
        run_eval(tiny_dataset, index_dir=target, modes="bm25,dense", runs_dir=tmp_path / "runs")
    assert (target / "manifest.json").read_bytes() == before  # the user's index is untouched
    assert Index.load(target).manifest["documents"] == built.manifest["documents"]


def test_unknown_setup_and_metric_are_refused(tiny_dataset, tmp_path):
    with pytest.raises(QueryError, match="unknown setup 'splade'"):
        parse_setups("bm25,splade")
    with pytest.raises(QueryError, match="ndcg@ten"):
        run_eval(tiny_dataset, index_dir=tmp_path / "i", modes="bm25", metrics="ndcg@ten")
    assert list(parse_setups("hybrid", fusion="weighted")) == ["hybrid-weighted"]


@pytest.mark.slow
def test_scifact_reaches_the_floors(data_dir, tmp_path):
    """The issue's floors on SciFact test (300 queries), index build included (~3 min here)."""
    report = run_eval(
        data_dir / "scifact", index_dir=tmp_path / "scifact", modes="bm25,dense,hybrid-rrf,hybrid-weighted",
        metrics="ndcg@10,recall@100", runs_dir=tmp_path / "runs",
    )
    rows = {row.setup: row.metrics for row in report.rows}
    assert report.num_queries == 300
    assert rows["bm25"]["ndcg@10"] >= 0.68
    assert rows["dense"]["ndcg@10"] >= 0.64 and rows["dense"]["recall@100"] >= 0.92
    for hybrid in ("hybrid-rrf", "hybrid-weighted"):
        assert rows[hybrid]["ndcg@10"] >= 0.72 and rows[hybrid]["recall@100"] >= 0.95


def test_reranked_rows_score_once_and_weight_zero_reproduces_the_first_stage(tiny_dataset, tmp_path, encoder,
                                                                           monkeypatch):
    import ragpipe.rerankers as rerankers

    loads = []
    real_load = rerankers.load_reranker
    monkeypatch.setattr(rerankers, "load_reranker", lambda spec: loads.append(str(spec)) or real_load(spec))
    model = f"cross-encoder:{encoder.folder},max_tokens=64"  # real MiniLM weights, untrained head
    report = run_eval(tiny_dataset, index_dir=tmp_path / "index", modes="bm25", runs_dir=tmp_path / "runs",
                      rerankers=[model + ",interpolation=0", model + ",interpolation=1"], rerank_depth=5)
    first, frozen, alone = report.rows
    assert loads == [model]  # both rows replay one scoring pass
    assert frozen.setup.endswith("(w=0)") and alone.setup.endswith("(w=1)")
    assert frozen.per_query == first.per_query
    assert list(read_run(frozen.run_file)["q1"]) == list(read_run(first.run_file)["q1"])
    assert frozen.latency_ms == alone.latency_ms and frozen.latency_ms["rerank"]["p50"] > 0
    with pytest.raises(QueryError, match="interpolation='1.5' must be a number within"):
        run_eval(tiny_dataset, index_dir=tmp_path / "index", modes="bm25", runs_dir=tmp_path / "runs",
                 rerankers=[model + ",interpolation=1.5"])
    assert loads == [model]  # refused before any model was loaded
