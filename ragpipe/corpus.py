"""Read corpora and queries from the formats users have.

A corpus source is one of:

* a BEIR-layout folder (``corpus.jsonl``, optionally ``queries.jsonl`` and ``qrels/``);
* a ``.jsonl`` file, one JSON object per line;
* a ``.csv`` / ``.tsv`` file with a header row;
* a ``.parquet`` file;
* a folder of ``.txt`` / ``.md`` files (id = path relative to the folder, title = the first
  Markdown heading or else the file name).

Fields: the id is read from ``_id``, ``id``, ``doc_id`` or ``docid``; the text from ``text``,
``contents`` or ``body``; ``title`` is optional. Policy for imperfect records, the same in every
format:

* a record without an id or text field, or a line that is not valid JSON or UTF-8, is an error
  naming the file and line, or with ``on_bad_line="skip"`` is skipped and counted;
* a document whose text is empty or whitespace but has a title is indexed by its title;
* a document with neither text nor title is skipped and counted (there is nothing to index);
* a duplicate id is an error naming both lines: ragpipe never silently overwrites a document;
* a corpus with no indexable document is an error.

Files may start with a UTF-8 byte-order mark and use Windows line endings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ragpipe.errors import CorpusError
from ragpipe.types import Document

ID_FIELDS = ("_id", "id", "doc_id", "docid")
TEXT_FIELDS = ("text", "contents", "body")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")


@dataclass
class LoadReport:
    """What a load read, and what it left out and why (``(location, reason)`` pairs)."""

    documents: list[Document]
    skipped_bad_lines: list[tuple[str, str]] = field(default_factory=list)
    skipped_empty: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.documents)} documents"]
        if self.skipped_bad_lines:
            parts.append(f"{len(self.skipped_bad_lines)} bad lines skipped")
        if self.skipped_empty:
            parts.append(f"{len(self.skipped_empty)} empty documents skipped")
        return ", ".join(parts)


def load_corpus(source: str | Path, on_bad_line: str = "error") -> LoadReport:
    """Read the documents of ``source`` (see the module docstring for formats and policy).

    Raises:
        CorpusError: the source does not exist, has an unsupported format, holds a bad record
            (unless ``on_bad_line="skip"``), a duplicate id, or no indexable document.
    """
    if on_bad_line not in ("error", "skip"):
        raise CorpusError(f"on_bad_line must be 'error' or 'skip', not {on_bad_line!r}")
    path = Path(source)
    if not path.exists():
        raise CorpusError("no such file or folder", path)
    report = LoadReport(documents=[])
    seen: dict[str, str] = {}
    for location, row in _records(path, on_bad_line, report):
        try:
            doc = _to_document(location, row)
        except _FieldError as exc:
            if on_bad_line == "skip":
                report.skipped_bad_lines.append((location, str(exc)))
                continue
            raise CorpusError(f"{exc} (pass --skip-bad-lines to skip such records)") from None
        if doc.doc_id in seen:
            raise CorpusError(
                f"{location}: duplicate document id {doc.doc_id!r}, first seen at {seen[doc.doc_id]}; "
                "ids must be unique (remove or rename one of them)"
            )
        seen[doc.doc_id] = location
        if not doc.text.strip() and not doc.title.strip():
            report.skipped_empty.append(doc.doc_id)
            continue
        report.documents.append(doc)
    if not report.documents:
        raise CorpusError("holds no document with text or a title; nothing to index", path)
    return report


class _FieldError(Exception):
    pass


def _to_document(location: str, row: dict) -> Document:
    if not isinstance(row, dict):
        raise _FieldError(f"{location}: expected an object with id and text fields, got {type(row).__name__}")
    doc_id = _first(row, ID_FIELDS)
    if doc_id is None or str(doc_id).strip() == "":
        raise _FieldError(f"{location}: missing id field (one of {', '.join(ID_FIELDS)})")
    text = _first(row, TEXT_FIELDS)
    if text is None:
        raise _FieldError(f"{location}: document {doc_id!r} has no text field (one of {', '.join(TEXT_FIELDS)})")
    title = row.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise _FieldError(f"{location}: document {doc_id!r}: text and title must be strings")
    metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    return Document(doc_id=str(doc_id).strip(), text=text, title=title.strip(), metadata=metadata)


def _first(row: dict, names: tuple[str, ...]):
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


def _records(path: Path, on_bad_line: str, report: LoadReport) -> Iterator[tuple[str, tuple[str, dict]]]:
    """Yield ``(location, record)`` for every record of the source; location is ``file:line``."""
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            yield from _jsonl_records(path / "corpus.jsonl", on_bad_line, report)
        else:
            yield from _text_folder_records(path, on_bad_line, report)
        return
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        yield from _jsonl_records(path, on_bad_line, report)
    elif suffix in (".csv", ".tsv"):
        yield from _csv_records(path, "\t" if suffix == ".tsv" else ",", on_bad_line, report)
    elif suffix == ".parquet":
        yield from _parquet_records(path)
    elif suffix in TEXT_SUFFIXES:
        yield from _text_file_records([path], path.parent, on_bad_line, report)
    else:
        raise CorpusError(
            "unsupported corpus format; use a BEIR folder, .jsonl, .csv, .tsv, .parquet, "
            "or a folder of .txt/.md files", path
        )


def iter_lines(path: Path, on_bad_line: str, report: LoadReport | None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 file; BOM and CR/LF endings handled.

    A line that is not valid UTF-8 raises :class:`CorpusError` naming it, or with
    ``on_bad_line="skip"`` is recorded in ``report`` and skipped.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not valid UTF-8 at byte {exc.start}"
                if on_bad_line == "skip" and report is not None:
                    report.skipped_bad_lines.append((f"{path}:{number}", reason))
                    continue
                raise CorpusError(f"{reason} (pass --skip-bad-lines to skip such lines)", path, number) from None
            yield number, line.rstrip("\r\n")


def _jsonl_records(path: Path, on_bad_line: str, report: LoadReport):
    for number, line in iter_lines(path, on_bad_line, report):
        if not line.strip():
            continue
        location = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if on_bad_line == "skip":
                report.skipped_bad_lines.append((location, f"invalid JSON: {exc.msg}"))
                continue
            raise CorpusError(
                f"invalid JSON ({exc.msg} at column {exc.colno}); pass --skip-bad-lines to skip such lines",
                path, number,
            ) from None
        yield location, row


def _csv_records(path: Path, delimiter: str, on_bad_line: str, report: LoadReport):
    lines = iter_lines(path, on_bad_line, report)
    numbered = list(lines)
    if not numbered:
        return
    # TSV has no quoting convention: a text starting with '"' must not swallow the next lines.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO("\n".join(line for _, line in numbered)), delimiter=delimiter, quoting=quoting)

    def physical_line() -> int:
        # A quoted field can span lines, so map the reader's position back to the file's line.
        return numbered[min(max(reader.line_num, 1), len(numbered)) - 1][0]

    def rows():
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a NUL byte, a stray carriage return, ...
                number = physical_line()
                if on_bad_line == "skip":
                    report.skipped_bad_lines.append((f"{path}:{number}", f"malformed CSV: {exc}"))
                    continue
                raise CorpusError(f"malformed CSV ({exc}); pass --skip-bad-lines to skip such lines", path, number) from None
            yield physical_line(), values

    records = rows()
    first = next(records, None)
    if first is None:
        return
    header = [h.strip() for h in first[1]]
    if not any(h in ID_FIELDS for h in header) or not any(h in TEXT_FIELDS for h in header):
        raise CorpusError(
            f"header must name an id column ({', '.join(ID_FIELDS)}) and a text column "
            f"({', '.join(TEXT_FIELDS)}); found {header}", path, first[0]
        )
    for number, values in records:
        location = f"{path}:{number}"
        if not values:
            continue
        if len(values) != len(header):
            message = f"expected {len(header)} columns, found {len(values)}"
            if on_bad_line == "skip":
                report.skipped_bad_lines.append((location, message))
                continue
            raise CorpusError(f"{message}; pass --skip-bad-lines to skip such lines", path, number)
        yield location, dict(zip(header, values))


def _parquet_records(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise CorpusError(f"cannot read Parquet: {exc}", path) from None
    for number, row in enumerate(table.to_pylist(), start=1):
        location = f"{path}: row {number}"
        yield location, row


def _text_folder_records(folder: Path, on_bad_line: str, report: LoadReport):
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise CorpusError("folder holds no corpus.jsonl and no .txt/.md files", folder)
    yield from _text_file_records(files, folder, on_bad_line, report)


def _text_file_records(files: list[Path], root: Path, on_bad_line: str, report: LoadReport):
    for file in files:
        location = str(file)
        lines = [line for _, line in iter_lines(file, on_bad_line, report)]
        title = file.stem
        for line in lines:
            if line.startswith("# "):
                title = line[2:].strip()
                break
        yield location, {"id": file.relative_to(root).as_posix(), "title": title, "text": "\n".join(lines)}


def load_queries(path: str | Path) -> dict[str, str]:
    """Read queries from BEIR ``queries.jsonl`` (``_id``, ``text``) or a ``qid<TAB>text`` file.

    Raises:
        CorpusError: a malformed line (named), a duplicate query id, or no query at all.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError("no such queries file", path)
    queries: dict[str, str] = {}
    is_jsonl = path.suffix.lower() in (".jsonl", ".json")
    for number, line in iter_lines(path, "error", None):
        if not line.strip():
            continue
        if is_jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"invalid JSON ({exc.msg})", path, number) from None
            qid, text = (_first(row, ID_FIELDS), row.get("text")) if isinstance(row, dict) else (None, None)
        else:
            qid, _, text = line.partition("\t")
        if qid is None or not str(qid).strip() or text is None or not str(text).strip():
            raise CorpusError("expected a query id and a non-empty text", path, number)
        qid = str(qid).strip()
        if qid in queries:
            raise CorpusError(f"duplicate query id {qid!r}", path, number)
        queries[qid] = str(text)
    if not queries:
        raise CorpusError("holds no queries", path)
    return queries
