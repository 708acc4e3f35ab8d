"""The data types passed between stages.

A :data:`Run` is the one interchange format: ``{query_id: {doc_id: score}}``, higher is better, as
BEIR and ranx pass it and as a TREC run file stores it. Retrievers produce Runs, fusion combines
them, evaluation scores them. :data:`Qrels` holds judgments ``{query_id: {doc_id: grade}}``; a grade
of 0 or below means judged not relevant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Document:
    """One corpus record. ``doc_id`` is unique within a corpus; ``title`` may be empty."""

    doc_id: str
    text: str
    title: str = ""
    metadata: dict = field(default_factory=dict)


def document_text(doc: Document) -> str:
    """The text lexical retrieval and rerankers read for a document: title, newline, body."""
    return f"{doc.title}\n{doc.text}" if doc.title else doc.text


def ranked(scores: dict[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """Return ``(doc_id, score)`` pairs best first, cut to ``k`` if given.

    Tie rule, used everywhere in ragpipe (retrieval, fusion, evaluation, run files): higher score
    first, then the lexicographically smaller doc id. The order is therefore deterministic and does
    not depend on dict insertion order.
    """
    items = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return items if k is None else items[:k]
