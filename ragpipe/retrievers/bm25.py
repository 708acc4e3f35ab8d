"""BM25 over a sparse term-document matrix.

Scores follow Okapi BM25 with Lucene's idf, ``log(1 + (N - df + 0.5) / (df + 0.5))``, which is
positive for every term. rank-bm25's ``BM25Okapi`` uses ``log((N - df + 0.5) / (df + 0.5))`` and
floors negative values at a fraction of the mean idf, so a term found in half of a corpus or more
scores every document about 0; with ``idf="okapi"`` this module reproduces that variant exactly
(tests hold both to rank-bm25).

Why not rank-bm25 itself: it keeps per-document ``dict`` term counts, which can only be persisted
with pickle, and scores a query with a Python loop over documents' dicts. Here term frequencies
live in a CSR matrix (one row per term), saved as ``.npy`` arrays and memory-mapped on load;
scoring a query sums a few sparse rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ragpipe.errors import IndexStoreError, RagpipeError
from ragpipe.text import Analyzer


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.2
    b: float = 0.75
    idf: str = "lucene"  # or "okapi" (rank-bm25's BM25Okapi, with its epsilon floor)
    epsilon: float = 0.25  # only used by idf="okapi"

    def validate(self) -> None:
        if not (self.k1 >= 0 and math.isfinite(self.k1)):
            raise RagpipeError(f"BM25 k1 must be a finite number >= 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise RagpipeError(f"BM25 b must be within [0, 1], got {self.b}")
        if self.idf not in ("lucene", "okapi"):
            raise RagpipeError(f"BM25 idf must be 'lucene' or 'okapi', got {self.idf!r}")


class BM25Index:
    """A BM25 index over documents, addressed by row (0..n_docs-1).

    Build with :meth:`build`, persist with :meth:`save` / :meth:`load`. :meth:`scores` returns a
    dense score vector for one query; :meth:`top_k` the best rows.
    """

    def __init__(
        self,
        vocabulary: dict[str, int],
        tf_data: np.ndarray,
        tf_indices: np.ndarray,
        tf_indptr: np.ndarray,
        doc_lengths: np.ndarray,
        analyzer: Analyzer,
        params: BM25Params,
        weights: np.ndarray | None = None,
    ):
        params.validate()
        self.vocabulary = vocabulary
        self.tf_data = tf_data
        self.tf_indices = tf_indices
        self.tf_indptr = tf_indptr
        self.doc_lengths = doc_lengths
        self.analyzer = analyzer
        self.params = params
        self._weights = self._compute_weights() if weights is None else weights

    @property
    def n_docs(self) -> int:
        return int(self.doc_lengths.shape[0])

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        analyzer: Analyzer | None = None,
        params: BM25Params | None = None,
    ) -> BM25Index:
        """Index ``texts``; row i of the index is ``texts[i]``. An empty text is a valid document."""
        analyzer = analyzer or Analyzer()
        vocabulary: dict[str, int] = {}
        terms, docs, tf, doc_lengths = _count_terms(texts, analyzer, vocabulary, first_row=0)
        return cls(vocabulary, *_term_major_csr(terms, docs, tf, len(vocabulary)), doc_lengths, analyzer,
                   params or BM25Params())

    def updated(self, keep_rows: np.ndarray, new_texts: Sequence[str]) -> BM25Index:
        """The index of rows ``keep_rows`` (in that order) followed by ``new_texts``.

        Kept documents are not re-analysed: their term counts are carried over, and corpus
        statistics (N, df, avgdl) are recomputed, so scores equal those of a full build over the
        same final documents. Terms no remaining document uses are dropped.
        """
        keep_rows = np.asarray(keep_rows, dtype=np.int64)
        row_map = np.full(self.n_docs, -1, dtype=np.int64)
        row_map[keep_rows] = np.arange(len(keep_rows))
        new_row = row_map[self.tf_indices]
        kept = new_row >= 0
        term_of_entry = np.repeat(np.arange(len(self.tf_indptr) - 1), np.diff(self.tf_indptr))
        vocabulary = dict(self.vocabulary)
        terms, docs, tf, lengths = _count_terms(new_texts, self.analyzer, vocabulary, first_row=len(keep_rows))
        terms = np.concatenate([term_of_entry[kept], terms])
        docs = np.concatenate([new_row[kept], docs])
        tf = np.concatenate([np.asarray(self.tf_data)[kept], tf])
        used, compact = np.unique(terms, return_inverse=True)
        by_id = {row: term for term, row in vocabulary.items()}
        vocabulary = {by_id[int(old)]: new for new, old in enumerate(used)}
        doc_lengths = np.concatenate([np.asarray(self.doc_lengths)[keep_rows], lengths]).astype(np.int32)
        return BM25Index(vocabulary, *_term_major_csr(compact, docs, tf, len(vocabulary)), doc_lengths,
                         self.analyzer, self.params)

    def _compute_weights(self) -> np.ndarray:
        """Per-(term, doc) BM25 contributions, aligned with ``tf_data``.

        Precomputing them makes a query a sum of sparse rows. They depend on corpus statistics
        (N, df, avgdl), so every build or update derives them again from the term counts; they are
        saved beside the counts and memory-mapped on load.
        """
        n = self.n_docs
        if n == 0 or self.tf_data.size == 0:
            return np.zeros(0, dtype=np.float32)
        df = np.diff(self.tf_indptr).astype(np.float64)
        idf = _idf(df, n, self.params)
        avgdl = float(self.doc_lengths.mean()) or 1.0
        tf = self.tf_data.astype(np.float64)
        dl = self.doc_lengths[self.tf_indices].astype(np.float64)
        k1, b = self.params.k1, self.params.b
        norm = tf + k1 * (1.0 - b + b * dl / avgdl)
        term_of_entry = np.repeat(np.arange(len(df)), np.diff(self.tf_indptr))
        return (idf[term_of_entry] * tf * (k1 + 1.0) / norm).astype(np.float32)

    def query_term_ids(self, query: str) -> list[int]:
        """Vocabulary rows of the query's terms, repeats kept (a repeated term counts twice)."""
        return [self.vocabulary[t] for t in self.analyzer(query) if t in self.vocabulary]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query``, as float32 of length ``n_docs``."""
        out = np.zeros(self.n_docs, dtype=np.float32)
        for term in self.query_term_ids(query):
            start, end = self.tf_indptr[term], self.tf_indptr[term + 1]
            out[self.tf_indices[start:end]] += self._weights[start:end]
        return out

    def top_k(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the ``k`` best documents that share at least one term with the query.

        Documents without any query term are not returned (their score is 0 by construction), so
        fewer than ``k`` rows can come back. Ties, also at the cut-off, are broken by row order.
        """
        term_ids = self.query_term_ids(query)
        if not term_ids or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = np.zeros(self.n_docs, dtype=np.float32)
        touched = []
        for term in term_ids:
            start, end = self.tf_indptr[term], self.tf_indptr[term + 1]
            rows = self.tf_indices[start:end]
            scores[rows] += self._weights[start:end]
            touched.append(rows)
        candidates = np.unique(np.concatenate(touched))  # ascending rows
        cand_scores = scores[candidates]
        if len(candidates) > k:
            # Keep everything tied with the k-th best score, so the row-order tie rule below
            # decides which tied documents make the cut (argpartition alone picks arbitrarily).
            kth_best = -np.partition(-cand_scores, k - 1)[k - 1]
            keep = cand_scores >= kth_best
            candidates, cand_scores = candidates[keep], cand_scores[keep]
        order = np.lexsort((candidates, -cand_scores))[:k]
        return candidates[order], cand_scores[order]

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "tf_data.npy", self.tf_data)
        np.save(directory / "tf_indices.npy", self.tf_indices)
        np.save(directory / "tf_indptr.npy", self.tf_indptr)
        np.save(directory / "doc_lengths.npy", self.doc_lengths)
        np.save(directory / "weights.npy", self._weights)
        terms = [""] * len(self.vocabulary)
        for term, row in self.vocabulary.items():
            terms[row] = term
        with open(directory / "vocabulary.json", "w", encoding="utf-8") as f:
            json.dump(terms, f, ensure_ascii=False)
        with open(directory / "params.json", "w", encoding="utf-8") as f:
            json.dump({"bm25": asdict(self.params), "analyzer": self.analyzer.to_config()}, f, indent=2)

    @classmethod
    def load(cls, directory: Path, mmap: bool = True) -> BM25Index:
        mode = "r" if mmap else None
        try:
            with open(directory / "params.json", encoding="utf-8") as f:
                params = json.load(f)
            with open(directory / "vocabulary.json", encoding="utf-8") as f:
                terms = json.load(f)
            arrays = {
                name: np.load(directory / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
                for name in ("tf_data", "tf_indices", "tf_indptr", "doc_lengths", "weights")
            }
            analyzer = Analyzer.from_config(params["analyzer"])
            bm25_params = BM25Params(**params["bm25"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            detail = f"params.json lacks {exc}" if isinstance(exc, KeyError) else str(exc)
            raise IndexStoreError(f"cannot read the BM25 index in {directory}: {detail}; rebuild the index") from exc
        return cls(
            {term: row for row, term in enumerate(terms)},
            arrays["tf_data"],
            arrays["tf_indices"],
            arrays["tf_indptr"],
            arrays["doc_lengths"],
            analyzer,
            bm25_params,
            arrays["weights"],
        )


def _idf(df: np.ndarray, n: int, params: BM25Params) -> np.ndarray:
    if params.idf == "lucene":
        return np.log1p((n - df + 0.5) / (df + 0.5))
    raw = np.log((n - df + 0.5) / (df + 0.5))
    # rank-bm25 floors negative idf at epsilon * (mean idf over the vocabulary).
    floor = params.epsilon * raw.mean() if raw.size else 0.0
    return np.where(raw < 0, floor, raw)


def _count_terms(
    texts: Sequence[str], analyzer: Analyzer, vocabulary: dict[str, int], first_row: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(term id, document row, tf) entries and the lengths of ``texts``, numbering rows from
    ``first_row``; new terms are added to ``vocabulary``."""
    terms: list[np.ndarray] = []
    docs: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int32)
    for offset, text in enumerate(texts):
        tokens = analyzer(text)
        lengths[offset] = len(tokens)
        if not tokens:
            continue
        ids = np.fromiter((vocabulary.setdefault(t, len(vocabulary)) for t in tokens), dtype=np.int64, count=len(tokens))
        unique, count = np.unique(ids, return_counts=True)
        terms.append(unique)
        docs.append(np.full(len(unique), first_row + offset, dtype=np.int64))
        counts.append(count.astype(np.int32))
    if not terms:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.int32), lengths
    return np.concatenate(terms), np.concatenate(docs), np.concatenate(counts), lengths


def _term_major_csr(
    terms: np.ndarray, docs: np.ndarray, tf: np.ndarray, n_terms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays (data, indices, indptr) of the term x document tf matrix from its entries;
    documents are ascending within each term's row."""
    order = np.lexsort((docs, terms))
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=n_terms), out=indptr[1:])
    return tf[order].astype(np.int32), docs[order].astype(np.int32), indptr
