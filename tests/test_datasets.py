"""Tests for ragpipe.datasets: finding BEIR folders by path or name, splits, and offline downloads."""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

import ragpipe.datasets
from ragpipe.datasets import BEIR_URL, load_dataset, resolve_dataset
from ragpipe.errors import DatasetError


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> Path:
    """No RAGPIPE_DATA, an empty home and an empty download cache; returns the cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.delenv("RAGPIPE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ragpipe.datasets, "CACHE_DIR", cache)
    return cache


def _mini_dataset(folder: Path, splits=("test",)) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "lava"}\n{"_id": "d2", "text": "snow"}\n')
    (folder / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "hot rock"}\n{"_id": "q2", "text": "cold"}\n{"_id": "q3", "text": "unjudged"}\n'
    )
    for split in splits:
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t0\n")
    return folder


# --- resolving ---------------------------------------------------------------------------------


def test_resolve_by_path(data_dir, isolated):
    assert resolve_dataset(data_dir / "scifact") == data_dir / "scifact"
    assert resolve_dataset(str(data_dir / "scifact")) == data_dir / "scifact"


def test_resolve_by_name_under_ragpipe_data(data_dir, isolated, monkeypatch):
    monkeypatch.setenv("RAGPIPE_DATA", str(data_dir))
    assert resolve_dataset("scifact") == data_dir / "scifact"


def test_resolve_by_name_in_the_download_cache(isolated, tmp_path):
    _mini_dataset(isolated / "mini")
    assert resolve_dataset("mini") == isolated / "mini"


def test_ragpipe_data_comes_before_the_cache(isolated, monkeypatch, tmp_path):
    _mini_dataset(isolated / "mini")
    _mini_dataset(tmp_path / "data" / "mini")
    monkeypatch.setenv("RAGPIPE_DATA", str(tmp_path / "data"))
    assert resolve_dataset("mini") == tmp_path / "data" / "mini"


def test_folder_without_corpus_is_not_a_dataset(isolated, tmp_path):
    (tmp_path / "empty").mkdir()
    expected = f"{tmp_path / 'empty'} is not a BEIR-layout dataset: it has no corpus.jsonl"
    with pytest.raises(DatasetError, match=re.escape(expected)):
        resolve_dataset(tmp_path / "empty")


def test_missing_folder_given_as_a_path_is_not_looked_up_or_downloaded(isolated, tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _fail_if_called)
    with pytest.raises(DatasetError, match=re.escape(f"dataset folder {tmp_path / 'nope'} does not exist")):
        resolve_dataset(str(tmp_path / "nope"))


def test_unknown_name_without_download_says_where_it_looked(isolated, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGPIPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(urllib.request, "urlopen", _fail_if_called)
    with pytest.raises(DatasetError) as caught:
        resolve_dataset("nosuch", download=False)
    assert str(caught.value) == (
        f"dataset 'nosuch' not found in {tmp_path / 'data'}, {isolated}; set RAGPIPE_DATA or pass a path"
    )


def _fail_if_called(*args, **kwargs):
    raise AssertionError("no download expected")


def _offline(url, *args, **kwargs):
    raise urllib.error.URLError("offline")


def test_unknown_name_offline_is_a_dataset_error_naming_url_and_ragpipe_data(isolated, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGPIPE_DATA", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(DatasetError) as caught:
        resolve_dataset("nosuch")
    message = str(caught.value)
    url = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/nosuch.zip"
    assert BEIR_URL.format(name="nosuch") == url
    assert message == (
        f"dataset 'nosuch' is not in {tmp_path}, {isolated} and downloading {url} failed (offline); "
        "set RAGPIPE_DATA to a folder that holds it, or pass the dataset's path"
    )
    # a failed download leaves nothing behind that a later lookup could mistake for the dataset
    assert list(isolated.iterdir()) == []


def test_load_dataset_of_an_unknown_name_offline_fails_the_same_way(isolated, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(DatasetError, match=r"downloading https://\S+/nosuch\.zip failed \(offline\); set RAGPIPE_DATA"):
        load_dataset("nosuch")


def _zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def test_download_unpacks_the_archive_into_the_cache(isolated, monkeypatch):
    archive = _zip_of({"mini/corpus.jsonl": '{"_id": "d1", "text": "lava"}\n', "mini/queries.jsonl": ""})
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(archive)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert resolve_dataset("mini") == isolated / "mini"
    assert requested == [BEIR_URL.format(name="mini")]
    assert (isolated / "mini" / "corpus.jsonl").read_text() == '{"_id": "d1", "text": "lava"}\n'
    assert sorted(p.name for p in isolated.iterdir()) == ["mini"]  # the temporary folder is gone
    # found in the cache the next time, without downloading again
    monkeypatch.setattr(urllib.request, "urlopen", _fail_if_called)
    assert resolve_dataset("mini") == isolated / "mini"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"mini/../../evil.txt": "x", "mini/corpus.jsonl": ""}, "unsafe path 'mini/../../evil.txt' in the archive"),
        ({"other/corpus.jsonl": ""}, "did not contain mini/corpus.jsonl"),
    ],
)
def test_bad_archives_are_refused(isolated, monkeypatch, tmp_path, files, message):
    archive = _zip_of(files)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(archive))
    with pytest.raises(DatasetError, match=message):
        resolve_dataset("mini")
    assert list(isolated.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_archive_is_a_dataset_error(isolated, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"not a zip"))
    with pytest.raises(DatasetError, match=r"downloading \S+/mini\.zip failed \(File is not a zip file\)"):
        resolve_dataset("mini")


# --- loading splits ----------------------------------------------------------------------------


def test_load_scifact_by_name_has_300_judged_test_queries(data_dir, isolated, monkeypatch):
    monkeypatch.setenv("RAGPIPE_DATA", str(data_dir))
    dataset = load_dataset("scifact")
    assert dataset.name == "scifact"
    assert dataset.path == data_dir / "scifact"
    assert dataset.split == "test"
    assert len(dataset.queries) == 300
    assert set(dataset.queries) == set(dataset.qrels)
    assert dataset.queries["1"] == "0-dimensional biomaterials show inductive properties."
    assert dataset.qrels["1"] == {"31715818": 1}


def test_load_scifact_train_split(data_dir, isolated):
    dataset = load_dataset(data_dir / "scifact", split="train")
    assert dataset.split == "train"
    assert len(dataset.queries) == 809


def test_missing_split_lists_the_available_ones(data_dir, isolated):
    with pytest.raises(DatasetError) as caught:
        load_dataset(data_dir / "scifact", split="dev")
    assert str(caught.value) == f"{data_dir / 'scifact'} has no qrels for split 'dev' (available: test, train)"


def test_missing_split_without_a_qrels_folder_says_none(isolated, tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    with pytest.raises(DatasetError, match=r"has no qrels for split 'test' \(available: none\)"):
        load_dataset(folder)


def test_queries_without_a_relevant_judgment_are_left_out(isolated, tmp_path):
    dataset = load_dataset(_mini_dataset(tmp_path / "mini"))
    # q2 is judged, but only not relevant (grade 0); q3 is not judged at all
    assert dataset.queries == {"q1": "hot rock"}
    assert dataset.qrels == {"q1": {"d1": 1}, "q2": {"d1": 0}}


def test_qrels_naming_an_unknown_query_is_an_error(isolated, tmp_path):
    folder = _mini_dataset(tmp_path / "mini")
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\nq9\td1\t1\n")
    with pytest.raises(DatasetError, match=r"judges queries missing from queries.jsonl, e.g. \['q9'\]"):
        load_dataset(folder)


def test_split_with_no_relevant_judgment_is_an_error(isolated, tmp_path):
    folder = _mini_dataset(tmp_path / "mini")
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t0\n")
    with pytest.raises(DatasetError, match="judges no query relevant to any document"):
        load_dataset(folder)
