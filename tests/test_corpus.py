"""Tests for ragpipe.corpus: every supported format, and bad input named by file and line."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragpipe.corpus import load_corpus, load_queries
from ragpipe.errors import CorpusError
from ragpipe.types import Document


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _jsonl(path: Path, *rows: dict | str) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    return _write(path, "".join(line + "\n" for line in lines))


def _docs(report) -> list[tuple[str, str, str]]:
    return [(d.doc_id, d.title, d.text) for d in report.documents]


# --- JSONL: the happy path ---------------------------------------------------------------------


def test_jsonl_reads_ids_titles_texts_and_metadata_in_order(tmp_path):
    path = _jsonl(
        tmp_path / "corpus.jsonl",
        {"_id": "b", "title": "Bees", "text": "Worker bees dance.", "metadata": {"year": 2020}},
        {"id": 7, "text": "An integer id."},
        {"doc_id": "c", "title": None, "contents": "Contents field."},
        {"docid": "d", "body": "Body field."},
    )
    report = load_corpus(path)
    assert _docs(report) == [
        ("b", "Bees", "Worker bees dance."),
        ("7", "", "An integer id."),
        ("c", "", "Contents field."),
        ("d", "", "Body field."),
    ]
    assert report.documents[0].metadata == {"year": 2020}
    assert report.skipped_bad_lines == [] and report.skipped_empty == []
    assert report.summary() == "4 documents"


def test_blank_lines_are_ignored(tmp_path):
    path = _write(tmp_path / "c.jsonl", '\n{"_id": "a", "text": "x"}\n\n   \n{"_id": "b", "text": "y"}\n')
    assert [d.doc_id for d in load_corpus(path).documents] == ["a", "b"]


def test_utf8_bom_and_crlf_line_endings_load(tmp_path):
    path = _write(
        tmp_path / "c.jsonl",
        b'\xef\xbb\xbf{"_id": "a", "text": "caf\xc3\xa9 au lait"}\r\n'
        b'{"_id": "b", "text": "\xe6\x9d\xb1\xe4\xba\xac"}\r\n',
    )
    assert _docs(load_corpus(path)) == [("a", "", "café au lait"), ("b", "", "東京")]


def test_real_beir_folder_of_scifact_loads_every_document(data_dir):
    report = load_corpus(data_dir / "scifact")
    assert len(report.documents) == 5183
    assert report.skipped_bad_lines == [] and report.skipped_empty == []
    first = report.documents[0]
    assert first.doc_id == "4983"
    assert first.title.startswith("Microstructural development of human newborn cerebral white matter")
    assert len({d.doc_id for d in report.documents}) == 5183


# --- JSONL: bad records ------------------------------------------------------------------------


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": "ok"}, {"_id": "b", "text": "ok"}, '{"_id": "c", "text": ')
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: invalid JSON (")
    assert "--skip-bad-lines" in message
    assert caught.value.path == str(path) and caught.value.line == 3


def test_malformed_json_line_is_skipped_and_counted_on_request(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": "ok"}, "not json", {"_id": "b", "text": "ok"})
    report = load_corpus(path, on_bad_line="skip")
    assert [d.doc_id for d in report.documents] == ["a", "b"]
    assert len(report.skipped_bad_lines) == 1
    location, reason = report.skipped_bad_lines[0]
    assert location == f"{path}:2" and reason.startswith("invalid JSON")
    assert report.summary() == "2 documents, 1 bad lines skipped"


def test_record_without_text_field_names_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": "ok"}, {"_id": "b", "title": "Only a title"})
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    assert str(caught.value) == (
        f"{path}:2: document 'b' has no text field (one of text, contents, body) "
        "(pass --skip-bad-lines to skip such records)"
    )


def test_record_without_id_names_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": "ok"}, {"text": "no id"})
    with pytest.raises(CorpusError, match=re.escape(f"{path}:2: missing id field (one of _id, id, doc_id, docid)")):
        load_corpus(path)


@pytest.mark.parametrize("blank_id", ["", "   ", None])
def test_blank_id_counts_as_missing(tmp_path, blank_id):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": blank_id, "text": "x"})
    with pytest.raises(CorpusError, match=re.escape(f"{path}:1: missing id field")):
        load_corpus(path)


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ({"_id": "a", "text": 5}, "text and title must be strings"),
        ({"_id": "a", "text": "x", "title": ["t"]}, "text and title must be strings"),
        (["a", "x"], "expected an object with id and text fields, got list"),
        ("42", "expected an object with id and text fields, got int"),
    ],
)
def test_record_of_the_wrong_shape_names_the_line(tmp_path, row, what):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "ok", "text": "fine"}, row)
    with pytest.raises(CorpusError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(what)):
        load_corpus(path)


def test_records_without_id_or_text_are_skipped_and_counted_on_request(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"text": "no id"}, {"_id": "a", "text": "ok"}, {"_id": "b"})
    report = load_corpus(path, on_bad_line="skip")
    assert [d.doc_id for d in report.documents] == ["a"]
    assert [location for location, _ in report.skipped_bad_lines] == [f"{path}:1", f"{path}:3"]
    assert "missing id field" in report.skipped_bad_lines[0][1]
    assert "has no text field" in report.skipped_bad_lines[1][1]


def test_duplicate_ids_name_both_lines(tmp_path):
    path = _jsonl(
        tmp_path / "c.jsonl",
        {"_id": "a", "text": "first"},
        {"_id": "b", "text": "other"},
        {"_id": "a", "text": "second"},
    )
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    assert str(caught.value) == (
        f"{path}:3: duplicate document id 'a', first seen at {path}:1; "
        "ids must be unique (remove or rename one of them)"
    )


def test_duplicate_ids_are_an_error_even_when_skipping_bad_lines(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": "first"}, {"_id": "a", "text": "second"})
    with pytest.raises(CorpusError, match="duplicate document id 'a'"):
        load_corpus(path, on_bad_line="skip")


def test_invalid_utf8_line_names_the_line(tmp_path):
    path = _write(tmp_path / "c.jsonl", b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    assert str(caught.value) == f"{path}:2: not valid UTF-8 at byte 25 (pass --skip-bad-lines to skip such lines)"
    assert caught.value.line == 2


def test_invalid_utf8_line_is_skipped_and_counted_on_request(tmp_path):
    path = _write(
        tmp_path / "c.jsonl",
        b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n{"_id": "c", "text": "fine"}\n',
    )
    report = load_corpus(path, on_bad_line="skip")
    assert [d.doc_id for d in report.documents] == ["a", "c"]
    assert report.skipped_bad_lines == [(f"{path}:2", "not valid UTF-8 at byte 25")]


def test_unknown_bad_line_policy_is_rejected(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": "ok"})
    with pytest.raises(CorpusError, match="on_bad_line must be 'error' or 'skip', not 'ignore'"):
        load_corpus(path, on_bad_line="ignore")


# --- empty documents and corpora ---------------------------------------------------------------


def test_empty_text_with_a_title_is_kept(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "title": "  Glaciers  ", "text": ""})
    report = load_corpus(path)
    assert _docs(report) == [("a", "Glaciers", "")]
    assert report.skipped_empty == []


def test_whitespace_text_without_title_is_skipped_and_listed(tmp_path):
    path = _jsonl(
        tmp_path / "c.jsonl",
        {"_id": "a", "text": "kept"},
        {"_id": "blank", "text": " \n\t "},
        {"_id": "untitled", "title": "   ", "text": ""},
    )
    report = load_corpus(path)
    assert [d.doc_id for d in report.documents] == ["a"]
    assert report.skipped_empty == ["blank", "untitled"]
    assert report.summary() == "1 documents, 2 empty documents skipped"


def test_empty_corpus_file_is_an_error_naming_it(tmp_path):
    path = _write(tmp_path / "c.jsonl", "")
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    assert str(caught.value) == f"{path}: holds no document with text or a title; nothing to index"


def test_corpus_of_only_empty_documents_is_an_error_naming_it(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", {"_id": "a", "text": ""}, {"_id": "b", "text": "  ", "title": ""})
    with pytest.raises(CorpusError, match=re.escape(f"{path}: holds no document with text or a title")):
        load_corpus(path)


# --- CSV, TSV, Parquet -------------------------------------------------------------------------


def test_csv_with_header_and_quoted_commas_and_newlines(tmp_path):
    path = _write(
        tmp_path / "c.csv",
        'id,title,text\r\n'
        '1,"Hello, world","a, b, and c"\r\n'
        '2,Plain,"two\nphysical lines"\r\n'
        '3,,"He said ""hi"""\r\n',
    )
    assert _docs(load_corpus(path)) == [
        ("1", "Hello, world", "a, b, and c"),
        ("2", "Plain", "two\nphysical lines"),
        ("3", "", 'He said "hi"'),
    ]


def test_csv_columns_may_come_in_any_order_and_extra_ones_are_ignored(tmp_path):
    path = _write(tmp_path / "c.csv", "lang,text,_id\nen,Some text,x1\n")
    assert _docs(load_corpus(path)) == [("x1", "", "Some text")]


def test_csv_header_without_id_or_text_column_names_the_header(tmp_path):
    path = _write(tmp_path / "c.csv", "name,content\na,b\n")
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:1: header must name an id column (_id, id, doc_id, docid)")
    assert "found ['name', 'content']" in message


def test_csv_row_with_wrong_column_count_names_its_line(tmp_path):
    path = _write(tmp_path / "c.csv", "id,title,text\n1,T,fine\n\n2,too,many,cols\n")
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    assert str(caught.value) == f"{path}:4: expected 3 columns, found 4; pass --skip-bad-lines to skip such lines"
    report = load_corpus(path, on_bad_line="skip")
    assert [d.doc_id for d in report.documents] == ["1"]
    assert report.skipped_bad_lines == [(f"{path}:4", "expected 3 columns, found 4")]


def test_csv_with_only_a_header_holds_no_documents(tmp_path):
    path = _write(tmp_path / "c.csv", "id,text\n")
    with pytest.raises(CorpusError, match="holds no document"):
        load_corpus(path)


def test_tsv_with_header(tmp_path):
    path = _write(
        tmp_path / "c.tsv", "docid\ttitle\ttext\nd1\tCommas, fine\tTabs split; commas, do not\nd2\t\t東京\n"
    )
    assert _docs(load_corpus(path)) == [("d1", "Commas, fine", "Tabs split; commas, do not"), ("d2", "", "東京")]


def test_tsv_text_starting_with_a_quote_does_not_swallow_the_next_lines(tmp_path):
    path = _write(tmp_path / "c.tsv", 'id\ttext\nd1\tfine\nd2\t"unclosed quote\nd3\tplain\n')
    try:
        documents = load_corpus(path).documents
    except CorpusError as exc:  # an error naming the line would be a fine answer too
        assert str(exc).startswith(f"{path}:3:")
        return
    assert [d.doc_id for d in documents] == ["d1", "d2", "d3"]
    assert documents[2].text == "plain"


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    table = pa.table({"_id": ["p1", "p2", "p3"], "title": ["First", None, ""], "text": ["Alpha.", "Beta.", " "]})
    pq.write_table(table, path)
    report = load_corpus(path)
    assert _docs(report) == [("p1", "First", "Alpha."), ("p2", "", "Beta.")]
    assert report.skipped_empty == ["p3"]


def test_parquet_record_without_text_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["Alpha.", None]}), path)
    with pytest.raises(CorpusError, match=re.escape(f"{path}: row 2: document 'p2' has no text field")):
        load_corpus(path)


def test_unreadable_parquet_is_a_corpus_error_naming_the_file(tmp_path):
    path = _write(tmp_path / "c.parquet", "this is not parquet")
    with pytest.raises(CorpusError, match=re.escape(f"{path}: cannot read Parquet")):
        load_corpus(path)


# --- folders of text files ---------------------------------------------------------------------


def test_folder_of_text_and_markdown_files(tmp_path):
    folder = tmp_path / "notes"
    _write(folder / "b.md", "Intro line\n# Volcanoes\n\nMagma rises.\n")
    _write(folder / "a.txt", "Plain text without a heading.")
    _write(folder / "sub" / "c.md", "#Not a heading\n## Sub heading\nBody\n")
    _write(folder / "ignored.pdf", "binary")
    report = load_corpus(folder)
    assert _docs(report) == [
        ("a.txt", "a", "Plain text without a heading."),
        ("b.md", "Volcanoes", "Intro line\n# Volcanoes\n\nMagma rises."),
        ("sub/c.md", "c", "#Not a heading\n## Sub heading\nBody"),
    ]


def test_single_markdown_file(tmp_path):
    path = _write(tmp_path / "doc.md", "\ufeff# Title here\r\nText.\r\n")
    assert _docs(load_corpus(path)) == [("doc.md", "Title here", "# Title here\nText.")]


def test_folder_without_corpus_or_text_files_is_an_error(tmp_path):
    _write(tmp_path / "data.xml", "<x/>")
    with pytest.raises(CorpusError, match=re.escape(f"{tmp_path}: folder holds no corpus.jsonl and no .txt/.md files")):
        load_corpus(tmp_path)


def test_invalid_utf8_in_a_text_file_names_file_and_line(tmp_path):
    path = _write(tmp_path / "docs" / "a.txt", b"fine\nbad \xff byte\n")
    with pytest.raises(CorpusError, match=re.escape(f"{path}:2: not valid UTF-8")):
        load_corpus(tmp_path / "docs")


def test_invalid_utf8_in_a_text_file_is_skipped_on_request(tmp_path):
    _write(tmp_path / "docs" / "a.txt", b"fine\nbad \xff byte\n")
    _write(tmp_path / "docs" / "b.txt", "all good")
    report = load_corpus(tmp_path / "docs", on_bad_line="skip")
    assert _docs(report) == [("a.txt", "a", "fine"), ("b.txt", "b", "all good")]
    assert [location for location, _ in report.skipped_bad_lines] == [f"{tmp_path / 'docs' / 'a.txt'}:2"]


# --- sources that cannot be read ---------------------------------------------------------------


def test_unsupported_suffix_is_an_error_listing_the_formats(tmp_path):
    path = _write(tmp_path / "corpus.xml", "<docs/>")
    with pytest.raises(CorpusError) as caught:
        load_corpus(path)
    assert str(caught.value) == (
        f"{path}: unsupported corpus format; use a BEIR folder, .jsonl, .csv, .tsv, .parquet, "
        "or a folder of .txt/.md files"
    )


def test_nonexistent_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(CorpusError) as caught:
        load_corpus(tmp_path / "missing.jsonl")
    assert str(caught.value) == f"{tmp_path / 'missing.jsonl'}: no such file or folder"


# --- queries -----------------------------------------------------------------------------------


def test_load_queries_jsonl(tmp_path):
    path = _jsonl(tmp_path / "queries.jsonl", {"_id": "q1", "text": "what is magma"}, {"_id": 2, "text": "東京"})
    assert load_queries(path) == {"q1": "what is magma", "2": "東京"}


def test_load_queries_tsv_keeps_tabs_after_the_first(tmp_path):
    path = _write(tmp_path / "queries.tsv", "\ufeffq1\twhat is magma\r\n\r\nq2\ta\tb\r\n")
    assert load_queries(path) == {"q1": "what is magma", "q2": "a\tb"}


def test_real_scifact_queries(data_dir):
    queries = load_queries(data_dir / "scifact" / "queries.jsonl")
    assert len(queries) == 1109
    assert queries["1"] == "0-dimensional biomaterials show inductive properties."


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("q.jsonl", '{"_id": "q1", "text": "ok"}\n{"_id": "q2"\n', ":2: invalid JSON ("),
        ("q.jsonl", '{"_id": "q1", "text": "ok"}\n{"text": "no id"}\n', ":2: expected a query id and a non-empty text"),
        ("q.jsonl", '{"_id": "q1", "text": "  "}\n', ":1: expected a query id and a non-empty text"),
        ("q.jsonl", '["q1", "text"]\n', ":1: expected a query id and a non-empty text"),
        ("q.tsv", "q1\tok\nq2 without a tab\n", ":2: expected a query id and a non-empty text"),
        ("q.tsv", "q1\tok\nq2\tfine\nq1\tagain\n", ":3: duplicate query id 'q1'"),
        ("q.tsv", "\n\n", ": holds no queries"),
        ("q.tsv", b"q1\tok\nq2\t\xff\n", ":2: not valid UTF-8 at byte 3"),
    ],
)
def test_load_queries_errors_name_file_and_line(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(CorpusError) as caught:
        load_queries(path)
    assert str(caught.value).startswith(f"{path}{message}")


def test_load_queries_missing_file(tmp_path):
    with pytest.raises(CorpusError, match=re.escape(f"{tmp_path / 'q.jsonl'}: no such queries file")):
        load_queries(tmp_path / "q.jsonl")


@pytest.mark.parametrize(
    ("name", "content"),
    [("q.tsv", "q1\tok\n\tno id here\n"), ("q.jsonl", '{"_id": "q1", "text": "ok"}\n{"_id": "", "text": "no id"}\n')],
)
def test_load_queries_rejects_an_empty_query_id(tmp_path, name, content):
    path = _write(tmp_path / name, content)
    with pytest.raises(CorpusError, match=re.escape(f"{path}:2: expected a query id")):
        load_queries(path)


# --- property: what goes in as JSONL comes out -------------------------------------------------

_any_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=("Cs",)),  # any code point but surrogates: CJK, emoji, controls ...
        st.sampled_from(list("\n\r\t \u3000東京北京😀🎉é")),
    ),
    max_size=30,
)
_MISSING = object()


@st.composite
def _record(draw) -> dict:
    record = {"_id": draw(st.one_of(st.integers(-5, 10**6), _any_text.filter(bool)))}
    title = draw(st.one_of(st.just(_MISSING), st.none(), _any_text))
    if title is not _MISSING:
        record["title"] = title
    if draw(st.integers(0, 39)):  # one record in forty lacks its text field
        record["text"] = draw(_any_text)
    return record


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(_record(), max_size=8, unique_by=lambda r: str(r["_id"]).strip()),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_jsonl_round_trip_keeps_exactly_the_indexable_records(records, crlf, bom):
    newline = "\r\n" if crlf else "\n"
    content = ("\ufeff" if bom else "") + "".join(json.dumps(r, ensure_ascii=False) + newline for r in records)
    # What the policy promises: ids and titles are stripped; a blank id, a missing text, or an id
    # seen before is an error; a record with neither text nor title is left out; no survivor is an error.
    ids = [str(r["_id"]).strip() for r in records]
    bad = any(not i for i in ids) or any("text" not in r for r in records) or len(set(ids)) < len(ids)
    expected = [
        Document(doc_id=i, title=(r.get("title") or "").strip(), text=r["text"])
        for i, r in zip(ids, records)
        if not bad and (r["text"].strip() or (r.get("title") or "").strip())
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_bytes(content.encode("utf-8"))
        if bad or not expected:
            with pytest.raises(CorpusError):
                load_corpus(path)
            return
        report = load_corpus(path)
    assert report.documents == expected
    assert report.skipped_bad_lines == []
    assert len(report.skipped_empty) == len(records) - len(expected)
