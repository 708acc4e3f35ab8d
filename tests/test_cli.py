"""The ``ragpipe`` command end to end, in real subprocesses: what a user types and sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def ragpipe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ragpipe", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, small_corpus) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for doc in small_corpus:
            f.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    return path


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, corpus_file) -> Path:
    target = tmp_path_factory.mktemp("indexes") / "small"
    done = ragpipe("index", str(corpus_file), "--index", str(target))
    assert done.returncode == 0, done.stderr
    assert f"indexed into {target}: 12 documents as 12 passages" in done.stdout
    assert "read " in done.stderr and "12 documents" in done.stderr
    return target


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(("args", "fragment"), [
    (["query"], "Missing argument"),
    (["bogus"], "No such command 'bogus'"),
    (["query", "indexes/x", "a", "b"], "unexpected extra argument"),
    (["query", "indexes/x", "a", "-k", "abc"], "'-k'"),
    (["train-reranker", "scifact"], "Missing option '--out'"),
    (["eval", "scifact", "--nope"], "No such option"),
])
def test_usage_errors_are_one_line_without_traceback(args, fragment):
    # typer may bring its own copy of click, whose exceptions are not the click package's
    assert_one_line_error(ragpipe(*args), fragment, "--help")


@pytest.mark.parametrize("rich", ["1", "0"])
def test_bare_command_shows_help(rich, monkeypatch):
    monkeypatch.setenv("TYPER_USE_RICH", rich)
    done = ragpipe()
    assert "Usage: " in done.stdout and "COMMAND" in done.stdout, (done.stdout, done.stderr)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "error:" not in done.stderr


def test_the_api_exports_reranking():
    import ragpipe

    assert {"load_reranker", "rerank_run", "document_text"} <= set(dir(ragpipe))
    assert ragpipe.load_reranker.__module__ == "ragpipe.rerankers.base"


def test_help_answers_without_importing_torch():
    code = (
        "import sys, ragpipe.cli\n"
        "try:\n    ragpipe.cli.app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('torch', 'faiss', 'sentence_transformers', 'transformers') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    assert "index" in done.stdout and "query" in done.stdout and "eval" in done.stdout


def test_query_prints_a_ranked_table_with_titles_and_snippets(index_dir):
    done = ragpipe("query", str(index_dir), "espresso coffee pressure", "-k", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["rank", "doc", "id"]
    assert lines[1].split()[:2] == ["1", "d04"] and "Espresso" in lines[1]
    assert "nine bars of pressure" in lines[2]
    assert sum(1 for line in lines if line[:4].strip().isdigit()) == 3


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_query_json_lines(index_dir, mode):
    done = ragpipe("query", str(index_dir), "volcanic lava eruption", "--mode", mode, "-k", "2", "--json")
    assert done.returncode == 0, done.stderr
    hits = [json.loads(line) for line in done.stdout.splitlines()]
    assert hits[0]["doc_id"] == "d07" and hits[0]["rank"] == 1
    assert set(hits[0]) == {"rank", "doc_id", "score", "title", "snippet"}
    assert len(hits) <= 2


def test_query_errors_are_one_line(index_dir, tmp_path):
    assert_one_line_error(ragpipe("query", str(tmp_path / "missing"), "x"), "no index at")
    assert_one_line_error(ragpipe("query", str(index_dir), "   "), "empty")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "-k", "0"), "k must be >= 1")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--mode", "fuzzy"), "unknown mode")
    assert_one_line_error(
        ragpipe("query", str(index_dir), "coffee", "--model", "BAAI/bge-small-en-v1.5"),
        "built with encoder 'sentence-transformers/all-MiniLM-L6-v2'", "BAAI/bge-small-en-v1.5",
    )


def test_index_errors_are_one_line_and_keep_the_existing_index(index_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n', encoding="utf-8")
    assert_one_line_error(ragpipe("index", str(bad), "--index", str(index_dir)), f"{bad}:2", "invalid JSON")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "a", "text": "one"}\n{"_id": "a", "text": "two"}\n', encoding="utf-8")
    assert_one_line_error(ragpipe("index", str(dup), "--index", str(index_dir)), f"{dup}:2", "duplicate document id 'a'", f"{dup}:1")
    no_text = tmp_path / "notext.jsonl"
    no_text.write_text('{"_id": "a", "title": "t"}\n', encoding="utf-8")
    assert_one_line_error(ragpipe("index", str(no_text), "--index", str(index_dir)), f"{no_text}:1", "no text field")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert_one_line_error(ragpipe("index", str(empty), "--index", str(index_dir)), "no document")
    # None of the failures touched the index built before.
    done = ragpipe("query", str(index_dir), "glaciers", "--mode", "bm25", "--json")
    assert json.loads(done.stdout.splitlines()[0])["doc_id"] == "d12"


def test_skip_bad_lines_reports_what_it_skipped(tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b'{"_id": "a", "text": "alpha"}\n{"_id": "b", "text": "\xff\xfe"}\n{"_id": "c", "text": "gamma"}\n')
    done = ragpipe("index", str(source), "--index", str(tmp_path / "i"), "--bm25-only", "--skip-bad-lines")
    assert done.returncode == 0, done.stderr
    assert f"skipped {source}:2" in done.stderr and "1 bad lines skipped" in done.stderr
    assert "2 documents as 2 passages" in done.stdout


def test_eval_of_an_unknown_dataset_offline_is_one_line(tmp_path):
    env_data = os.environ.get("RAGPIPE_DATA")
    os.environ["RAGPIPE_DATA"] = str(tmp_path)
    try:
        done = subprocess.run(
            [sys.executable, "-c",
             "import urllib.request, urllib.error\n"
             "def offline(*a, **k):\n    raise urllib.error.URLError('offline')\n"
             "urllib.request.urlopen = offline\n"
             "import ragpipe.datasets as d, pathlib\n"
             f"d.CACHE_DIR = pathlib.Path({str(tmp_path / 'cache')!r})\n"
             "from ragpipe.cli import run\nimport sys\nsys.argv = ['ragpipe', 'eval', 'no-such-dataset']\nrun()"],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        if env_data is None:
            os.environ.pop("RAGPIPE_DATA")
        else:
            os.environ["RAGPIPE_DATA"] = env_data
    assert_one_line_error(done, "no-such-dataset", "downloading", "RAGPIPE_DATA")


def test_unwritable_index_path_is_one_line(tmp_path, corpus_file):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = ragpipe("index", str(corpus_file), "--index", str(blocker / "sub"), "--bm25-only")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == f"error: Not a directory ({blocker / 'sub'})"
    assert blocker.read_text() == "not a folder"


def test_rerank_option_errors_are_one_line(index_dir):
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", "llm,interpolation=abc"), "interpolation")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", "splade"), "unknown reranker")
    # Checked before any model loads: a bad k or depth, an unknown option, a value that does not parse.
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "-k", "0", "--rerank", "llm"), "k must be >= 1")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", "llm", "--rerank-depth", "0"),
                          "--rerank-depth must be >= 1")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", "cross-encoder,max_token=64"),
                          "has no option 'max_token'")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", "llm,layer=twelve"), "layer='twelve'")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", ""), "unknown reranker ''")
    # limits that do not depend on the model are refused before one loads (no such model exists here)
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", "cross-encoder:/no/such,batch_size=0"),
                          "batch_size='0': must be >= 1")
    assert_one_line_error(ragpipe("query", str(index_dir), "coffee", "--rerank", "llm:/no/such,method=bm25"),
                          "method='bm25': expected one of")
