"""Index lifecycle: appends and deletes equal a rebuild, kills never lose the old index, readers
never see a mix of generations, ``check`` finds damage, and writers exclude each other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ragpipe.errors import IndexStoreError, RagpipeError
from ragpipe.index import LOCK, Index, IndexConfig, SearchOptions
from ragpipe.types import Document

QUERIES = {
    "q1": "coffee pressure",
    "q2": "energy from wind and sun",
    "q3": "animals that make honey",
    "q4": "ice and snow in the mountains",
    "q5": "tidal ocean currents",
}
FP32 = IndexConfig(precision="fp32")  # bit-stable encoding so rankings compare exactly


def extra_documents() -> list[Document]:
    return [
        Document("n1", "Geothermal plants tap heat from deep underground to make steam.", "Geothermal energy"),
        Document("n2", "Bumblebees are larger and hairier than honey bees and nest in the ground.", "Bumblebees"),
        Document("n3", "Sea ice forms when ocean water freezes in polar winters.", "Sea ice"),
    ]


def assert_same_results(a: Index, b: Index) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        ra = a.search(QUERIES, k=20, options=SearchOptions(mode=mode)).run
        rb = b.search(QUERIES, k=20, options=SearchOptions(mode=mode)).run
        for qid in QUERIES:
            assert list(ra[qid]) == list(rb[qid]), (mode, qid)
            np.testing.assert_allclose(list(ra[qid].values()), list(rb[qid].values()), rtol=1e-5, atol=1e-6)


def test_appends_and_deletes_equal_a_full_rebuild(tmp_path, small_corpus):
    live = tmp_path / "live"
    Index.build(small_corpus[:8], live, FP32)
    # Reload before each change, as separate `ragpipe index --append` / `delete` runs would.
    Index.load(live).append(small_corpus[8:])
    Index.load(live).delete(["d03", "d08"])
    Index.load(live).append(extra_documents())
    index = Index.load(live).delete(["n2"])
    final = [d for d in small_corpus if d.doc_id not in ("d03", "d08")] + [d for d in extra_documents() if d.doc_id != "n2"]
    assert index.doc_ids == [d.doc_id for d in final]
    assert index.manifest["encoder"]["document_precision"] == "fp32"
    rebuilt = Index.build(final, tmp_path / "rebuilt", FP32)
    reloaded = Index.load(live)
    assert reloaded.verify() == []
    assert [c["op"] for c in reloaded.manifest["changes"]] == ["append", "delete", "append", "delete"]
    assert_same_results(reloaded, rebuilt)


def test_bm25_only_index_appends_and_deletes(tmp_path, small_corpus):
    bm25_only = IndexConfig(dense=None)
    index = Index.build(small_corpus[:5], tmp_path / "live", bm25_only).append(small_corpus[5:]).delete(["d01"])
    rebuilt = Index.build(small_corpus[1:], tmp_path / "rebuilt", bm25_only)
    for qid, text in QUERIES.items():
        a = index.search({qid: text}, k=20, options=SearchOptions(mode="bm25")).run[qid]
        b = rebuilt.search({qid: text}, k=20, options=SearchOptions(mode="bm25")).run[qid]
        assert list(a) == list(b)
        np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-6)


def test_appending_an_existing_id_or_deleting_an_unknown_one_changes_nothing(tmp_path, small_corpus):
    index = Index.build(small_corpus, tmp_path / "i", IndexConfig(dense=None))
    generation = index.manifest["generation"]
    with pytest.raises(RagpipeError, match="already in .*'d01'.*delete those documents first"):
        index.append([Document("d01", "replacement text")])
    with pytest.raises(RagpipeError, match="no document with id 'zzz'; nothing was deleted"):
        index.delete(["d02", "zzz"])
    with pytest.raises(RagpipeError, match="leave .* empty"):
        index.delete([d.doc_id for d in small_corpus])
    assert Index.load(tmp_path / "i").manifest["generation"] == generation
    assert len(Index.load(tmp_path / "i").doc_ids) == 12


def test_a_stale_handle_cannot_overwrite_a_newer_generation(tmp_path, small_corpus):
    first = Index.build(small_corpus, tmp_path / "i", IndexConfig(dense=None))
    first.delete(["d01"])
    with pytest.raises(IndexStoreError, match="changed since it was loaded"):
        first.delete(["d02"])  # would silently resurrect d01


def test_a_second_writer_is_refused(tmp_path, small_corpus):
    import fcntl

    path = tmp_path / "i"
    Index.build(small_corpus, path, IndexConfig(dense=None))
    with open(path / LOCK, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(IndexStoreError, match="another ragpipe process is writing"):
            Index.build(small_corpus[:2], path, IndexConfig(dense=None))
    assert len(Index.load(path).doc_ids) == 12


def _ragpipe(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ragpipe", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kwargs)


def _write_jsonl(path: Path, documents: list[Document]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")


def test_sigkill_during_a_rebuild_keeps_the_previous_index(tmp_path, small_corpus):
    path = tmp_path / "i"
    Index.build(small_corpus, path)
    before = Index.load(path).search(QUERIES, k=5).run
    bigger = tmp_path / "bigger.jsonl"
    # Enough text that a rebuild takes seconds, so kills land in loading, chunking, encoding and writing.
    _write_jsonl(bigger, [Document(f"b{i}", f"passage {i} " + "words about many topics " * 120, f"Doc {i}")
                          for i in range(200)])
    for delay in (0.2, 1.0, 2.0, 3.0, 4.5, 6.0):
        process = _ragpipe("index", str(bigger), "--index", str(path))
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        index = Index.load(path)
        if len(index.doc_ids) == 200:  # the rebuild finished before the kill: a complete new index
            assert index.verify() == []
            break
        assert index.search(QUERIES, k=5).run == before
        assert index.verify() == []


def test_readers_during_rebuilds_see_one_generation_or_the_other(tmp_path, small_corpus):
    path = tmp_path / "i"
    config = IndexConfig(dense=None)
    Index.build(small_corpus, path, config)
    small = tmp_path / "small.jsonl"
    _write_jsonl(small, small_corpus[:3])
    full = tmp_path / "full.jsonl"
    _write_jsonl(full, small_corpus)
    script = (
        "import sys\nfrom ragpipe.corpus import load_corpus\nfrom ragpipe.index import Index, IndexConfig\n"
        "for i in range(30):\n"
        f"    Index.build(load_corpus(sys.argv[1 + i % 2]).documents, {str(path)!r}, IndexConfig(dense=None))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(small), str(full)])
    seen = set()
    loads = 0
    deadline = time.monotonic() + 120
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            index = Index.load(path)
            n = len(index.doc_ids)
            assert n in (3, 12)
            run = index.search({"q": "glaciers ice"}, k=20, options=SearchOptions(mode="bm25")).run["q"]
            assert set(run) <= set(index.doc_ids)
            assert (list(run) == ["d12"]) == (n == 12) and (run == {}) == (n == 3)
            seen.add(n)
            loads += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert loads >= 5, f"the reader overlapped the rebuilds only {loads} times"


def test_check_reports_a_corrupted_file(tmp_path, small_corpus):
    path = tmp_path / "i"
    Index.build(small_corpus, path, IndexConfig(dense=None))
    ok = subprocess.run([sys.executable, "-m", "ragpipe", "check", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "12 documents" in ok.stdout and "match their checksums" in ok.stdout
    generation = json.loads((path / "manifest.json").read_text())["generation"]
    target = path / generation / "bm25" / "doc_lengths.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(data))
    bad = subprocess.run([sys.executable, "-m", "ragpipe", "check", str(path)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "doc_lengths.npy fails its checksum" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_append_and_delete(tmp_path, small_corpus):
    path = tmp_path / "i"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    _write_jsonl(first, small_corpus[:6])
    _write_jsonl(second, small_corpus[6:])
    env = {**os.environ}
    run = lambda *a: subprocess.run([sys.executable, "-m", "ragpipe", *a], capture_output=True, text=True, env=env)  # noqa: E731
    assert run("index", str(first), "--index", str(path), "--bm25-only").returncode == 0
    appended = run("index", str(second), "--index", str(path), "--append")
    assert appended.returncode == 0, appended.stderr
    assert "appended 6 documents" in appended.stdout and "now holds 12 documents" in appended.stdout
    again = run("index", str(second), "--index", str(path), "--append")
    assert again.returncode == 2 and "already in" in again.stderr
    deleted = run("delete", str(path), "d12", "d11")
    assert deleted.returncode == 0 and "10 remain" in deleted.stdout
    missing = run("delete", str(path), "d12")
    assert missing.returncode == 2 and "no document with id 'd12'" in missing.stderr
