"""Read and write qrels and run files in the formats trec_eval and BEIR use.

Qrels (:func:`read_qrels`) come in two layouts, told apart by the first non-blank line:

* BEIR TSV: a header ``query-id<TAB>corpus-id<TAB>score`` then ``qid<TAB>docid<TAB>grade`` lines.
  Fields are split on tabs only, so ids may contain spaces.
* TREC qrels: ``qid iteration docid grade``, whitespace separated; the iteration column (usually
  ``0``) is ignored.

Run files (:func:`write_run`, :func:`read_run`) use the TREC layout ``qid Q0 docid rank score tag``.

Files are UTF-8. Blank lines are skipped. Every problem with a file's content raises
:class:`~ragpipe.errors.CorpusError` naming the file and the 1-based line, saying what was expected.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ragpipe.errors import CorpusError
from ragpipe.types import Qrels, Run, ranked

__all__ = ["read_qrels", "read_run", "write_run"]

_BEIR_HEADER = ("query-id", "corpus-id", "score")
_BEIR_EXPECTED = "3 tab-separated fields 'query-id<TAB>corpus-id<TAB>score'"
_TREC_QRELS_EXPECTED = "4 whitespace-separated fields 'qid 0 docid grade'"
_RUN_EXPECTED = "6 whitespace-separated fields 'qid Q0 docid rank score tag'"


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read relevance judgments from a BEIR TSV or TREC qrels file into ``{qid: {docid: grade}}``.

    Grades are integers; ``"1.0"`` is accepted as 1, ``"1.5"`` is not. Grade 0 or below means judged
    not relevant and is kept (metrics treat it as not relevant). A (qid, docid) pair repeated with
    the same grade is accepted; repeated with a different grade it is an error naming both lines.

    Raises :class:`~ragpipe.errors.CorpusError` when the file is missing or unreadable, is not
    UTF-8, holds no judgment, has a line that does not match the layout of the first line, or has a
    grade that is not an integer.
    """
    path = Path(path)
    qrels: Qrels = {}
    first_seen: dict[tuple[str, str], int] = {}
    layout = None
    for line_number, text in _lines(path):
        if layout is None:
            layout = _qrels_layout(text, path, line_number)
            if layout == "beir-header":
                layout = "beir"
                continue
        if layout == "beir":
            fields = [field.strip() for field in text.split("\t")]
            if len(fields) != 3 or not all(fields):
                raise CorpusError(
                    f"expected {_BEIR_EXPECTED} (layout set by the first line), got {text!r}",
                    path,
                    line_number,
                )
            qid, doc_id, grade_text = fields
        else:
            fields = text.split()
            if len(fields) != 4:
                raise CorpusError(
                    f"expected {_TREC_QRELS_EXPECTED} (layout set by the first line), got {text!r}",
                    path,
                    line_number,
                )
            qid, _, doc_id, grade_text = fields
        grade = _parse_grade(grade_text, path, line_number)
        judgments = qrels.setdefault(qid, {})
        previous = judgments.get(doc_id)
        if previous is not None and previous != grade:
            raise CorpusError(
                f"query {qid!r} document {doc_id!r} is judged {grade} here but {previous} on line "
                f"{first_seen[(qid, doc_id)]}; keep one judgment per pair",
                path,
                line_number,
            )
        if previous is None:
            judgments[doc_id] = grade
            first_seen[(qid, doc_id)] = line_number
    if not qrels:
        raise CorpusError(
            f"holds no judgments; expected {_BEIR_EXPECTED} lines after a header, "
            f"or {_TREC_QRELS_EXPECTED} lines",
            path,
        )
    return qrels


def write_run(
    run: Run, path: str | os.PathLike, tag: str = "ragpipe", k: int | None = None
) -> None:
    """Write ``run`` as a TREC run file: one ``qid Q0 docid rank score tag`` line per document.

    Queries are written in sorted qid order, documents in :func:`~ragpipe.types.ranked` order with
    1-based ranks, at most ``k`` per query if ``k`` is given. Scores are written with ``repr`` so
    :func:`read_run` gives back the same floats. Queries with no documents leave no line, so they
    do not survive a round trip. The file is written to a temporary file in the same directory and
    renamed over ``path``, so readers never see a half-written file.

    Raises :class:`~ragpipe.errors.CorpusError` when ``tag`` or an id is empty or holds whitespace
    (the format could not be read back), a score is NaN, ``k`` is not a positive integer, or the
    file cannot be written.
    """
    path = Path(path)
    if not tag or _has_space(tag):
        raise CorpusError(f"run tag must be non-empty and without whitespace, got {tag!r}", path)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise CorpusError(f"k must be a positive integer or None, got {k!r}", path)

    lines = []
    for qid in sorted(run):
        doc_scores = run[qid]
        if not qid or _has_space(qid):
            raise CorpusError(
                f"query id {qid!r} is empty or holds whitespace; TREC run files cannot store it",
                path,
            )
        for doc_id, score in doc_scores.items():
            if not doc_id or _has_space(doc_id):
                raise CorpusError(
                    f"query {qid!r}: document id {doc_id!r} is empty or holds whitespace; "
                    "TREC run files cannot store it",
                    path,
                )
            if score != score:
                raise CorpusError(f"query {qid!r}: document {doc_id!r} has a NaN score", path)
        for rank, (doc_id, score) in enumerate(ranked(doc_scores, k), start=1):
            lines.append(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")

    # The temporary name starts with a dot so directory scans skip it; pid and random suffix keep
    # concurrent writers apart. Opening with "x" (not mkstemp) gives the file the usual umask mode.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    created = False
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            created = True
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise CorpusError(f"cannot write run file: {error.strerror or error}", path) from error
    finally:
        if created:
            temporary.unlink(missing_ok=True)


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag``) into ``{qid: {docid: score}}``.

    As in trec_eval, the rank column is not used: order comes from the scores (then doc ids), and
    the Q0 and tag columns are ignored. An empty file gives an empty run.

    Raises :class:`~ragpipe.errors.CorpusError` when the file is missing or unreadable, is not
    UTF-8, has a line without exactly six fields, a score that is not a number (NaN included), or a
    (qid, docid) pair listed twice.
    """
    path = Path(path)
    run: Run = {}
    first_seen: dict[tuple[str, str], int] = {}
    for line_number, text in _lines(path):
        fields = text.split()
        if len(fields) != 6:
            raise CorpusError(f"expected {_RUN_EXPECTED}, got {text!r}", path, line_number)
        qid, _, doc_id, _, score_text, _ = fields
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if score != score:
            raise CorpusError(
                f"expected a number in the score column (5th), got {score_text!r}",
                path,
                line_number,
            )
        doc_scores = run.setdefault(qid, {})
        if doc_id in doc_scores:
            raise CorpusError(
                f"query {qid!r} document {doc_id!r} was already listed on line "
                f"{first_seen[(qid, doc_id)]}; a run lists each document once per query",
                path,
                line_number,
            )
        doc_scores[doc_id] = score
        first_seen[(qid, doc_id)] = line_number
    return run


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, text without line ending)`` for each non-blank line."""
    # Opened outside ``with`` so that only a failure to open reads as "cannot open file".
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as error:
        raise CorpusError(f"cannot open file: {error.strerror or error}", path) from error
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(f"not valid UTF-8 ({error.reason})", path, line_number) from error
            text = text.rstrip("\r\n")
            if line_number == 1:
                text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not part of the first id
            if text.strip():
                yield line_number, text


def _qrels_layout(text: str, path: Path, line_number: int) -> str:
    fields = [field.strip() for field in text.split("\t")]
    if tuple(field.lower() for field in fields) == _BEIR_HEADER:
        return "beir-header"
    if len(fields) == 3:
        return "beir"
    if len(text.split()) == 4:
        return "trec"
    raise CorpusError(
        f"cannot tell the qrels layout from {text!r}; expected the BEIR header "
        f"'query-id<TAB>corpus-id<TAB>score', {_BEIR_EXPECTED}, or {_TREC_QRELS_EXPECTED}",
        path,
        line_number,
    )


def _parse_grade(text: str, path: Path, line_number: int) -> int:
    if text.strip().lstrip("+-").isdigit():
        return int(text)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not value.is_integer():
        raise CorpusError(f"expected an integer relevance grade, got {text!r}", path, line_number)
    return int(value)


def _has_space(text: str) -> bool:
    return any(character.isspace() for character in text)
