"""Split documents into overlapping passages that fit the bi-encoder's input.

Lengths are counted in tokens of the encoder's own tokenizer, so a passage is never silently
truncated by the model: each passage is ``title + " " + span of the text`` and fits in
``max_tokens`` including the tokenizer's special tokens and the document prefix (each is measured
after it is cut). Spans start at word starts where the text has spaces and are kept as character
offsets into the original text, so every passage maps back to its document and a snippet can quote
it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragpipe.errors import RagpipeError
from ragpipe.types import Document

# A title longer than this share of the budget is cut, so that every passage keeps room for text.
_MAX_TITLE_SHARE = 0.25
# Smaller passages leave no room for text next to a title and the special tokens.
_MIN_TOKENS = 16


@dataclass(frozen=True)
class ChunkingConfig:
    """``max_tokens`` of each passage (None: the encoder's limit); ``overlap`` tokens shared by
    neighbouring passages. ``max_tokens=0`` disables splitting: one passage per document, truncated
    by the encoder as sentence-transformers would."""

    max_tokens: int | None = None
    overlap: int = 64

    def validate(self, encoder_limit: int) -> int:
        size = encoder_limit if self.max_tokens is None else self.max_tokens
        if size != 0 and not _MIN_TOKENS <= size <= encoder_limit:
            raise RagpipeError(
                f"passage size must be 0 (no splitting) or within {_MIN_TOKENS}..{encoder_limit} tokens "
                f"for this encoder, got {size}"
            )
        if size and not 0 <= self.overlap < size // 2:
            raise RagpipeError(f"passage overlap (--overlap) must be within 0..{size // 2 - 1} tokens, got {self.overlap}")
        return size


@dataclass
class Passages:
    """Passages of a corpus as parallel arrays: document row, character span of the text, and how
    many characters of the title are prepended (titles too long for the budget are cut)."""

    doc_rows: np.ndarray  # int32, row of the document in the corpus
    starts: np.ndarray  # int32, character offset into Document.text
    ends: np.ndarray  # int32, exclusive
    title_chars: np.ndarray  # int32, prefix of Document.title used

    def __len__(self) -> int:
        return int(self.doc_rows.shape[0])

    def texts(self, documents: Sequence[Document]) -> list[str]:
        """The text each passage is encoded from: the title, then the span of the text."""
        rows = zip(self.doc_rows.tolist(), self.starts.tolist(), self.ends.tolist(), self.title_chars.tolist())
        return [_passage_text(documents[row], start, end, title_chars) for row, start, end, title_chars in rows]


def split_documents(documents: Sequence[Document], tokenizer, encoder_limit: int, special_tokens: int,
                    config: ChunkingConfig = ChunkingConfig(), prefix: str = "") -> Passages:
    """Passages of ``documents`` for an encoder taking ``encoder_limit`` tokens.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` without truncation. Every document yields at least
    one passage (an empty text gives one empty span, encoded from the title alone).
    """
    size = config.validate(encoder_limit)
    columns: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])

    def add(row: int, start: int, end: int, title_chars: int) -> None:
        for column, value in zip(columns, (row, start, end, title_chars)):
            column.append(value)

    if size == 0:
        for row, doc in enumerate(documents):
            add(row, 0, len(doc.text), len(doc.title))
        return _as_passages(columns)
    text_encodings = tokenizer.encode_batch([doc.text for doc in documents], add_special_tokens=False)
    # The prefix and the separating space are counted with the title.
    head_encodings = tokenizer.encode_batch([f"{prefix}{doc.title} " for doc in documents], add_special_tokens=False)
    max_head = int(size * _MAX_TITLE_SHARE)
    prefix_chars = len(prefix)
    for row, (doc, enc, head) in enumerate(zip(documents, text_encodings, head_encodings)):
        title_chars = len(doc.title)
        head_len = len(head.ids)
        if head_len > max_head:
            head_len = max_head
            title_chars = max(0, head.offsets[max_head - 1][1] - prefix_chars)
        # One token of slack: tokenizing title and span together can merge or split a token at the join.
        budget = size - special_tokens - head_len - 1
        offsets = enc.offsets
        n = len(offsets)
        if n <= budget:
            add(row, 0, len(doc.text), title_chars)
            continue
        stride = budget - config.overlap
        if stride < 1:
            raise RagpipeError(
                f"passages of {size} tokens leave no room for text after the title, special tokens and an "
                f"overlap of {config.overlap}; use a larger passage size or a smaller overlap"
            )
        word_starts = _word_starts(offsets)
        first = 0
        while True:
            last = min(first + budget, n)
            if last < n:
                last = _last_word_start(word_starts, first + 1, last)
            end_char = offsets[last - 1][1] if last < n else len(doc.text)
            # Re-tokenising a span can differ from the document's tokens at its edges; measure the
            # real passage and shorten it until it fits, so the encoder never truncates it.
            while last - first > 1:
                text = prefix + _passage_text(doc, offsets[first][0], end_char, title_chars)
                excess = len(tokenizer.encode(text).ids) - size
                if excess <= 0:
                    break
                last = max(first + 1, last - excess)
                end_char = offsets[last - 1][1]
            add(row, offsets[first][0], end_char, title_chars)
            if last >= n:
                break
            first = _last_word_start(word_starts, first + 1, max(first + 1, last - config.overlap))
    return _as_passages(columns)


def _passage_text(doc: Document, start: int, end: int, title_chars: int) -> str:
    span = doc.text[start:end]
    return f"{doc.title[:title_chars]} {span}" if title_chars else span


def _word_starts(offsets: list[tuple[int, int]]) -> np.ndarray:
    """True for tokens that begin a whitespace-separated word (a gap before them, or first)."""
    starts = np.array([start for start, _ in offsets], dtype=np.int64)
    ends = np.array([end for _, end in offsets], dtype=np.int64)
    out = np.ones(len(offsets), dtype=bool)
    out[1:] = starts[1:] > ends[:-1]
    return out


def _last_word_start(word_starts: np.ndarray, low: int, high: int) -> int:
    """The largest token position in [low, high] that starts a word, else ``high``.

    Cutting passages at word starts keeps words whole (a span that begins mid-word re-tokenises
    into more pieces) and makes snippets readable. Text without spaces (CJK) has no word starts
    and is cut at ``high``.
    """
    candidates = np.flatnonzero(word_starts[low : high + 1])
    return low + int(candidates[-1]) if len(candidates) else high


def _as_passages(columns: tuple[list[int], ...]) -> Passages:
    return Passages(*(np.asarray(column, dtype=np.int32) for column in columns))
