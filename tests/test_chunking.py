"""Tests for ragpipe.chunking: passages fit the encoder, cover their document, and map back to it."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from ragpipe.chunking import ChunkingConfig, Passages, split_documents
from ragpipe.corpus import load_corpus
from ragpipe.errors import RagpipeError
from ragpipe.types import Document


def _split(encoder, documents, config=ChunkingConfig(), prefix=""):
    return split_documents(documents, encoder.tokenizer, encoder.max_tokens, encoder.special_tokens, config, prefix)


def _token_counts(encoder, texts: list[str]) -> list[int]:
    """Length of each text as the model sees it, special tokens included."""
    return [len(e.ids) for e in encoder.tokenizer.encode_batch(texts)]


def _rows(passages: Passages, row: int) -> list[tuple[int, int, int]]:
    mask = passages.doc_rows == row
    return list(zip(passages.starts[mask].tolist(), passages.ends[mask].tolist(), passages.title_chars[mask].tolist()))


@pytest.fixture(scope="module")
def scifact_docs(data_dir) -> list[Document]:
    return load_corpus(data_dir / "scifact").documents


@pytest.fixture(scope="module")
def scifact_passages(encoder, scifact_docs) -> Passages:
    return _split(encoder, scifact_docs)


def test_the_default_encoder_is_what_these_tests_assume(encoder):
    assert encoder.max_tokens == 256
    assert encoder.special_tokens == 2  # [CLS] and [SEP]


# --- fitting the encoder -----------------------------------------------------------------------


def test_every_scifact_passage_fits_the_encoder_with_its_special_tokens(encoder, scifact_docs, scifact_passages):
    counts = _token_counts(encoder, scifact_passages.texts(scifact_docs))
    assert max(counts) <= 256
    # and the budget is used: long documents are not cut into needlessly short pieces
    assert max(counts) >= 240
    assert len(scifact_passages) > len(scifact_docs)
    assert set(scifact_passages.doc_rows.tolist()) == set(range(len(scifact_docs)))


def test_passages_of_a_document_are_in_order_and_rows_ascend(scifact_passages):
    rows = scifact_passages.doc_rows
    assert (np.diff(rows) >= 0).all()
    same_doc = np.diff(rows) == 0
    assert (np.diff(scifact_passages.starts)[same_doc] > 0).all()
    assert (scifact_passages.ends > scifact_passages.starts).all()


def test_passages_of_a_long_document_cover_it_and_neighbours_overlap(encoder, scifact_docs, scifact_passages):
    lengths = np.bincount(scifact_passages.doc_rows)
    row = int(np.argmax(lengths))
    doc = scifact_docs[row]
    spans = _rows(scifact_passages, row)
    assert len(spans) >= 5
    assert not doc.text[:1].isspace()
    assert spans[0][0] == 0 and spans[-1][1] == len(doc.text)
    for (_, end, _), (next_start, next_end, _) in zip(spans, spans[1:]):
        assert next_start < end < next_end  # no gap, and every passage brings new text
        # the shared text is about `overlap` (64) tokens; a cut inside a word can add one or two
        shared = len(encoder.tokenizer.encode(doc.text[next_start:end], add_special_tokens=False).ids)
        assert 64 <= shared <= 66
    assert {title_chars for _, _, title_chars in spans} == {len(doc.title)}
    texts = [t for t, r in zip(scifact_passages.texts(scifact_docs), scifact_passages.doc_rows) if r == row]
    assert all(t.startswith(doc.title + " ") for t in texts)


def test_short_documents_are_one_passage_with_the_whole_text(encoder, small_corpus):
    passages = _split(encoder, small_corpus)
    assert passages.doc_rows.tolist() == list(range(12))
    assert passages.starts.tolist() == [0] * 12
    assert passages.ends.tolist() == [len(d.text) for d in small_corpus]
    assert passages.title_chars.tolist() == [len(d.title) for d in small_corpus]
    texts = passages.texts(small_corpus)
    assert texts[0] == "Solar panels Photovoltaic cells convert sunlight into electricity without moving parts."
    assert texts[10] == small_corpus[10].text  # no title, no leading space


def test_max_tokens_zero_gives_one_whole_passage_per_document(encoder, scifact_docs):
    docs = scifact_docs[:200]
    passages = _split(encoder, docs, ChunkingConfig(max_tokens=0))
    assert passages.doc_rows.tolist() == list(range(200))
    assert passages.starts.tolist() == [0] * 200
    assert passages.ends.tolist() == [len(d.text) for d in docs]
    assert passages.title_chars.tolist() == [len(d.title) for d in docs]


def test_smaller_passages_on_request_fit_that_size(encoder, scifact_docs):
    docs = scifact_docs[:100]
    passages = _split(encoder, docs, ChunkingConfig(max_tokens=64, overlap=8))
    counts = _token_counts(encoder, passages.texts(docs))
    assert max(counts) <= 64
    assert len(passages) > 3 * len(docs)


def test_prefix_is_counted_in_the_budget_but_not_stored_in_the_passage(encoder):
    text = " ".join(f"word{i}" for i in range(400))
    doc = Document("d", text, "Title")
    prefix = "passage: "
    passages = _split(encoder, [doc], prefix=prefix)
    counts = _token_counts(encoder, [prefix + t for t in passages.texts([doc])])
    assert max(counts) <= 256
    assert all(t.startswith("Title ") for t in passages.texts([doc]))


@pytest.fixture(scope="module")
def megabyte_doc(scifact_docs) -> Document:
    """1,000,000 characters of real abstracts, one document."""
    text = "\n".join(d.text for d in scifact_docs)[:1_000_000]
    return Document("big", text, "A megabyte of abstracts")


@pytest.fixture(scope="module")
def megabyte_passages(encoder, megabyte_doc) -> Passages:
    return _split(encoder, [megabyte_doc])


def test_a_one_megabyte_document_splits_into_many_passages_covering_it(megabyte_passages):
    passages = megabyte_passages
    assert len(passages) > 1000
    assert passages.starts[0] == 0 and passages.ends[-1] == 1_000_000
    assert (passages.starts[1:] < passages.ends[:-1]).all()
    assert (np.diff(passages.starts) > 0).all()


def test_every_passage_of_a_one_megabyte_document_fits(encoder, megabyte_doc, megabyte_passages):
    assert max(_token_counts(encoder, megabyte_passages.texts([megabyte_doc]))) <= 256


def test_a_very_long_title_is_cut_so_passages_still_fit(encoder, scifact_docs):
    long_title = " ".join(["photosynthesis"] * 200)
    doc = Document("t", scifact_docs[0].text, long_title)
    passages = _split(encoder, [doc])
    assert len(passages) >= 2
    (title_chars,) = set(passages.title_chars.tolist())
    assert 0 < title_chars < len(long_title)
    texts = passages.texts([doc])
    assert all(t.startswith(long_title[:title_chars] + " ") for t in texts)
    # the title keeps at most a quarter of the budget: 64 tokens
    assert len(encoder.tokenizer.encode(long_title[:title_chars], add_special_tokens=False).ids) <= 64
    assert max(_token_counts(encoder, texts)) <= 256
    assert passages.starts[0] == 0 and passages.ends[-1] == len(doc.text)


def test_document_with_empty_text_is_one_passage_of_its_title(encoder):
    docs = [Document("e", "", "Only a title"), Document("f", "Some text.", "")]
    passages = _split(encoder, docs)
    assert passages.doc_rows.tolist() == [0, 1]
    assert passages.starts.tolist() == [0, 0] and passages.ends.tolist() == [0, 10]
    texts = passages.texts(docs)
    # the title and the empty span joined by a space; the trailing space adds no token
    assert texts[0].rstrip() == "Only a title"
    assert _token_counts(encoder, [texts[0]]) == _token_counts(encoder, ["Only a title"])
    assert texts[1] == "Some text."


def test_no_documents_give_no_passages(encoder):
    passages = _split(encoder, [])
    assert len(passages) == 0
    assert passages.texts([]) == []


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ChunkingConfig(overlap=128), r"passage overlap \(--overlap\) must be within 0\.\.127 tokens, got 128"),
        (ChunkingConfig(max_tokens=100, overlap=50), r"passage overlap \(--overlap\) must be within 0\.\.49 tokens, got 50"),
        (ChunkingConfig(max_tokens=100, overlap=-1), r"passage overlap \(--overlap\) must be within 0\.\.49 tokens, got -1"),
        (ChunkingConfig(max_tokens=257), r"passage size must be 0 \(no splitting\) or within 16\.\.256 tokens for this encoder, got 257"),
        (ChunkingConfig(max_tokens=-1), r"passage size must be 0 \(no splitting\) or within 16\.\.256 tokens for this encoder, got -1"),
    ],
)
def test_invalid_configs_are_rejected(encoder, small_corpus, config, message):
    with pytest.raises(RagpipeError, match=message):
        config.validate(encoder.max_tokens)
    with pytest.raises(RagpipeError, match=message):
        _split(encoder, small_corpus, config)


@pytest.mark.parametrize(
    ("config", "size"),
    [(ChunkingConfig(), 256), (ChunkingConfig(overlap=127), 256), (ChunkingConfig(max_tokens=100, overlap=49), 100),
     (ChunkingConfig(max_tokens=0, overlap=500), 0)],
)
def test_valid_configs_give_the_passage_size(encoder, config, size):
    assert config.validate(encoder.max_tokens) == size


class _Hung(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hung("split_documents did not return within 1 s")


@pytest.mark.parametrize(("max_tokens", "overlap"), [(4, 1), (8, 3)])
def test_tiny_passage_sizes_are_rejected_or_still_fit(encoder, scifact_docs, max_tokens, overlap):
    doc = Document("x", scifact_docs[0].text, "A title here")
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        passages = _split(encoder, [doc], ChunkingConfig(max_tokens=max_tokens, overlap=overlap))
    except RagpipeError:
        return  # a clear error is a fine answer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert max(_token_counts(encoder, passages.texts([doc]))) <= max_tokens
