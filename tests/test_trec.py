"""Tests for ragpipe.trec: qrels and run files, round trips, and line-numbered errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ragpipe.errors import CorpusError
from ragpipe.trec import read_qrels, read_run, write_run

EXPECTED_QRELS = {"q1": {"d1": 1, "d 2": 0}, "q2": {"d3": 2}}


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# --- qrels -----------------------------------------------------------------------------------


def test_reads_beir_tsv_qrels(tmp_path):
    # BEIR fields are split on tabs, so a doc id may hold a space; CRLF and blank lines are fine.
    path = _write(
        tmp_path / "test.tsv",
        "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td 2\t0\r\n\r\nq2\td3\t2\r\n",
    )
    assert read_qrels(path) == EXPECTED_QRELS


def test_reads_beir_tsv_without_header(tmp_path):
    path = _write(tmp_path / "test.tsv", "q1\td1\t1\nq2\td3\t2.0\n")
    assert read_qrels(path) == {"q1": {"d1": 1}, "q2": {"d3": 2}}


def test_reads_trec_qrels(tmp_path):
    path = _write(tmp_path / "qrels.txt", "q1 0 d1 1\nq1 0 d2 0\nq2\t0\td3\t2\nq2 0 d4 -1\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2, "d4": -1}}


def test_beir_and_trec_layouts_give_the_same_qrels(tmp_path):
    beir = _write(
        tmp_path / "a.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n"
    )
    trec = _write(tmp_path / "b.txt", "q1 0 d1 1\nq1 0 d2 0\nq2 0 d3 2\n")
    assert read_qrels(beir) == read_qrels(trec) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}


def test_reads_the_real_scifact_qrels():
    configured = os.environ.get("RAGPIPE_DATA")
    root = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    )
    path = root / "scifact" / "qrels" / "test.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not found; set RAGPIPE_DATA to the folder holding the BEIR datasets")
    qrels = read_qrels(path)
    # datasets/README.md: 300 judged test queries, 339 judgment lines, binary relevance.
    assert len(qrels) == 300
    assert sum(len(judgments) for judgments in qrels.values()) == 339
    assert {grade for judgments in qrels.values() for grade in judgments.values()} == {1}


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", 3, "expected 3 tab-separated fields"),
        (
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 0 d2 1\n",
            3,
            "expected 3 tab-separated fields",
        ),
        ("query-id\tcorpus-id\tscore\nq1\t\t1\n", 2, "expected 3 tab-separated fields"),
        (
            "q1 0 d1 1\nq1 0 d2 1 extra\n",
            2,
            "expected 4 whitespace-separated fields 'qid 0 docid grade'",
        ),
        ("q1 0 d1 1\n\nq1 0 d2 high\n", 3, "expected an integer relevance grade, got 'high'"),
        ("q1 0 d1 1.5\n", 1, "expected an integer relevance grade, got '1.5'"),
        ("q1 0 d1 nan\n", 1, "expected an integer relevance grade, got 'nan'"),
        ("just some words here now\n", 1, "cannot tell the qrels layout"),
    ],
)
def test_malformed_qrels_lines_name_file_and_line(tmp_path, text, line, expected):
    path = _write(tmp_path / "bad.qrels", text)
    with pytest.raises(CorpusError) as caught:
        read_qrels(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert expected in str(caught.value)
    assert caught.value.path == str(path)
    assert caught.value.line == line


def test_conflicting_duplicate_judgment_names_both_lines(tmp_path):
    path = _write(tmp_path / "dup.txt", "q1 0 d1 1\nq1 0 d2 0\nq1 0 d1 2\n")
    with pytest.raises(CorpusError) as caught:
        read_qrels(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert "judged 2 here but 1 on line 1" in message


def test_repeated_identical_judgment_is_accepted(tmp_path):
    path = _write(tmp_path / "dup.txt", "q1 0 d1 1\nq1 0 d1 1\n")
    assert read_qrels(path) == {"q1": {"d1": 1}}


@pytest.mark.parametrize("text", ["", "\n\n", "query-id\tcorpus-id\tscore\n"])
def test_qrels_without_judgments_is_an_error(tmp_path, text):
    path = _write(tmp_path / "empty.tsv", text)
    with pytest.raises(CorpusError, match=re.escape(f"{path}: holds no judgments")):
        read_qrels(path)


def test_missing_and_non_utf8_qrels_files_are_errors(tmp_path):
    with pytest.raises(CorpusError, match=re.escape(f"{tmp_path / 'nope.tsv'}: cannot open file")):
        read_qrels(tmp_path / "nope.tsv")
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"q1 0 d1 1\nq1 0 caf\xe9 1\n")
    with pytest.raises(CorpusError, match=re.escape(f"{path}:2: not valid UTF-8")):
        read_qrels(path)


# --- runs ------------------------------------------------------------------------------------

RUN = {
    "q2": {"b": 0.5, "a": 0.5, "c": 2.25},
    "q1": {"x": -1.0, "y": 0.1 + 0.2, "z": 1e-300},
    "q10": {"only": 3.0},
}


def test_write_run_layout_order_and_ranks(tmp_path):
    path = tmp_path / "run.txt"
    write_run(RUN, path, tag="bm25")
    # Queries sorted as strings; within a query score descending, ties by doc id (a before b);
    # repr keeps every digit of 0.1 + 0.2.
    assert path.read_text(encoding="utf-8").splitlines() == [
        "q1 Q0 y 1 0.30000000000000004 bm25",
        "q1 Q0 z 2 1e-300 bm25",
        "q1 Q0 x 3 -1.0 bm25",
        "q10 Q0 only 1 3.0 bm25",
        "q2 Q0 c 1 2.25 bm25",
        "q2 Q0 a 2 0.5 bm25",
        "q2 Q0 b 3 0.5 bm25",
    ]


def test_run_round_trip_is_exact(tmp_path):
    path = tmp_path / "run.txt"
    write_run(RUN, path)
    assert read_run(path) == RUN


def test_write_run_cuts_to_k_and_drops_empty_queries(tmp_path):
    path = tmp_path / "run.txt"
    write_run({**RUN, "q3": {}}, path, k=1)
    assert read_run(path) == {"q1": {"y": 0.1 + 0.2}, "q10": {"only": 3.0}, "q2": {"c": 2.25}}


def test_write_run_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("old content\n", encoding="utf-8")
    write_run({"q": {"d": 1.0}}, path)
    assert path.read_text(encoding="utf-8") == "q Q0 d 1 1.0 ragpipe\n"
    assert sorted(os.listdir(tmp_path)) == ["run.txt"]


def test_write_run_into_missing_directory_is_an_error(tmp_path):
    path = tmp_path / "missing" / "run.txt"
    with pytest.raises(CorpusError, match=re.escape(f"{path}: cannot write run file")):
        write_run({"q": {"d": 1.0}}, path)


@pytest.mark.parametrize(
    ("run", "kwargs", "expected"),
    [
        ({"q": {"d": 1.0}}, {"tag": "my run"}, "run tag must be non-empty and without whitespace"),
        ({"q": {"d": 1.0}}, {"tag": ""}, "run tag must be non-empty"),
        ({"q": {"d": 1.0}}, {"k": 0}, "k must be a positive integer"),
        ({"q 1": {"d": 1.0}}, {}, "query id 'q 1' is empty or holds whitespace"),
        ({"q": {"d\t1": 1.0}}, {}, "document id 'd\\t1' is empty or holds whitespace"),
        ({"q": {"d": float("nan")}}, {}, "document 'd' has a NaN score"),
    ],
)
def test_write_run_rejects_what_the_format_cannot_hold(tmp_path, run, kwargs, expected):
    path = tmp_path / "run.txt"
    with pytest.raises(CorpusError) as caught:
        write_run(run, path, **kwargs)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)
    assert not path.exists()


def test_read_run_uses_scores_not_the_rank_column(tmp_path):
    path = _write(tmp_path / "run.txt", "q1 Q0 a 1 0.5 t\nq1\tQ0\tb\t2\t0.9\tt\n\nq2 Q0 c 1 -3 t\n")
    assert read_run(path) == {"q1": {"a": 0.5, "b": 0.9}, "q2": {"c": -3.0}}


def test_empty_run_file_reads_as_an_empty_run(tmp_path):
    assert read_run(_write(tmp_path / "run.txt", "")) == {}


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (
            "q1 Q0 a 1 0.5 t\nq1 Q0 b 2 0.4\n",
            2,
            "expected 6 whitespace-separated fields 'qid Q0 docid rank score tag'",
        ),
        ("q1 Q0 a 1 high t\n", 1, "expected a number in the score column (5th), got 'high'"),
        ("q1 Q0 a 1 nan t\n", 1, "expected a number in the score column (5th), got 'nan'"),
        (
            "q1 Q0 a 1 0.5 t\nq2 Q0 a 1 0.5 t\nq1 Q0 a 2 0.4 t\n",
            3,
            "query 'q1' document 'a' was already listed on line 1",
        ),
    ],
)
def test_malformed_run_lines_name_file_and_line(tmp_path, text, line, expected):
    path = _write(tmp_path / "bad.run", text)
    with pytest.raises(CorpusError) as caught:
        read_run(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert expected in str(caught.value)


def test_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
    qrels = tmp_path / "bom.tsv"
    qrels.write_bytes("\ufeffquery-id\tcorpus-id\tscore\nq1\td1\t1\n".encode("utf-8"))
    assert read_qrels(qrels) == {"q1": {"d1": 1}}
    run = tmp_path / "bom.trec"
    run.write_bytes("\ufeffq1 Q0 d1 1 2.5 tag\n".encode("utf-8"))
    assert read_run(run) == {"q1": {"d1": 2.5}}
