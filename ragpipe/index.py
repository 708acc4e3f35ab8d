"""The on-disk index: documents, passages, a FAISS index and a BM25 index, behind one manifest.

Layout of an index directory::

    DIR/manifest.json            what was built, how, from what, and checksums of every file
    DIR/gen-<id>/documents.parquet
    DIR/gen-<id>/passages.parquet
    DIR/gen-<id>/dense/vectors.faiss
    DIR/gen-<id>/bm25/*.npy, vocabulary.json, params.json

A build writes a new ``gen-*`` folder completely, then replaces ``manifest.json`` in one atomic
rename. A process killed at any moment therefore leaves the previous index intact, and a reader
sees either the old or the new generation, never a mix. Old generations are deleted after the
switch. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ragpipe import __version__
from ragpipe._files import atomic_write_text, sha256_file
from ragpipe.chunking import ChunkingConfig, Passages, split_documents
from ragpipe.encoders.bi_encoder import EncoderSpec
from ragpipe.errors import IndexStoreError, QueryError, RagpipeError
from ragpipe.fusion import reciprocal_rank_fusion, weighted_sum
from ragpipe.retrievers.bm25 import BM25Index, BM25Params
from ragpipe.retrievers.dense import DenseConfig, DenseIndex
from ragpipe.text import Analyzer, AnalyzerConfig
from ragpipe.types import Document, Run, document_text, ranked

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
_MANIFEST_KEYS = ("format_version", "generation", "files", "documents", "passages", "encoder", "chunking", "dense", "bm25")
MODES = ("dense", "bm25", "hybrid")
FUSIONS = ("rrf", "weighted")


@dataclass(frozen=True)
class IndexConfig:
    """How to build an index. ``dense=None`` builds a BM25-only index (no model, no torch)."""

    encoder: EncoderSpec | None = None  # None: the default bi-encoder
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    dense: DenseConfig | None = field(default_factory=DenseConfig)
    bm25: BM25Params = field(default_factory=BM25Params)
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    batch_size: int = 16
    precision: str = "auto"  # document encoding: auto | fp32 | bf16 (see BiEncoder.encode_documents)


@dataclass(frozen=True)
class SearchOptions:
    """``depth``: candidates each first-stage retriever contributes to fusion (at least k).
    ``rrf_k``: the RRF constant. ``dense_weight``: weight of the dense run in the weighted sum
    (BM25 gets 1 - dense_weight); scores are min-max normalised per query first."""

    mode: str = "hybrid"
    fusion: str = "rrf"
    depth: int = 100
    rrf_k: int = 60
    dense_weight: float = 0.5

    def validate(self) -> None:
        if self.mode not in MODES:
            raise QueryError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise QueryError(f"unknown fusion {self.fusion!r}; use one of {', '.join(FUSIONS)}")
        if self.depth < 1:
            raise QueryError(f"depth must be >= 1, got {self.depth}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise QueryError(f"dense weight must be within [0, 1], got {self.dense_weight}")


@dataclass
class Hit:
    """One ranked document for display: its best passage is quoted as ``snippet``."""

    rank: int
    doc_id: str
    score: float
    title: str
    snippet: str


@dataclass
class SearchResult:
    """A :data:`Run` plus, per query, the milliseconds spent in each stage and the best passage
    row of each dense hit (used for snippets)."""

    run: Run
    timings_ms: dict[str, dict[str, float]]
    best_passage: dict[str, dict[str, int]]


class Index:
    """A loaded index. Build with :meth:`build`, open with :meth:`load`, query with :meth:`search`."""

    def __init__(self, path: Path, manifest: dict, generation_dir: Path):
        self.path = path
        self.manifest = manifest
        self._dir = generation_dir
        import pyarrow.parquet as pq

        try:
            self._documents = pq.read_table(generation_dir / "documents.parquet")
            passages = pq.read_table(generation_dir / "passages.parquet")
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for damaged files
            raise IndexStoreError(f"{path}: cannot read stored documents ({exc}); rebuild the index") from exc
        self.doc_ids: list[str] = self._documents.column("doc_id").to_pylist()
        self.passages = Passages(*(passages.column(c).to_numpy() for c in ("doc_row", "start", "end", "title_chars")))
        self.bm25: BM25Index | None = BM25Index.load(generation_dir / "bm25") if manifest["bm25"] else None
        self.dense: DenseIndex | None = None
        if manifest["dense"]:
            self.dense = DenseIndex.load(generation_dir / "dense", DenseConfig(**manifest["dense"]))
        self._encoder = None
        self._row_of: dict[str, int] | None = None

    # -- building --------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        path: str | Path,
        config: IndexConfig = IndexConfig(),
        source: dict | None = None,
        progress: bool = False,
    ) -> Index:
        """Index ``documents`` into the directory ``path`` and return the loaded index.

        ``source`` is recorded in the manifest as given (e.g. ``{"path": ..., "sha256": ...}``).
        An existing index at ``path`` is replaced only once the new one is complete; a directory
        that holds other files is refused rather than overwritten.

        Raises:
            RagpipeError: empty corpus, duplicate ids, a bad configuration, an unusable model, or
                another process writing the same index.
        """
        path = Path(path)
        _check_documents(documents)
        _check_target(path)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        encoder = None
        if config.dense is not None:
            from ragpipe.encoders import BiEncoder

            config.dense.validate()
            encoder = BiEncoder(config.encoder or EncoderSpec(), batch_size=config.batch_size, precision=config.precision)
        manifest: dict = {
            "format_version": FORMAT_VERSION,
            "ragpipe_version": __version__,
            "created": _now(),
            "source": source,
            "encoder": _encoder_manifest(encoder),
            "chunking": asdict(config.chunking) if encoder else None,
            "dense": asdict(config.dense) if encoder else None,
            "bm25": {"params": asdict(config.bm25), "analyzer": asdict(config.analyzer)},
        }
        with _writer_lock(path):
            passages = _split(documents, encoder, config.chunking, timings)
            t = time.perf_counter()
            bm25 = BM25Index.build([document_text(d) for d in documents], Analyzer(config.analyzer), config.bm25)
            timings["bm25"] = time.perf_counter() - t
            vectors = _encode(encoder, passages, documents, timings, progress)
            return cls._commit(path, manifest, documents, passages, bm25, vectors, timings, started, encoder)

    def append(self, documents: Sequence[Document], progress: bool = False) -> Index:
        """Add ``documents`` and return the updated index (this object keeps the old state).

        Only the new documents are analysed and encoded; results equal those of a full rebuild
        over the old documents followed by the new ones.

        Raises:
            RagpipeError: an empty list, duplicate ids among the new documents, or an id the index
                already holds (delete it first to replace it).
        """
        _check_documents(documents)
        existing = set(self.doc_ids)
        clashes = [d.doc_id for d in documents if d.doc_id in existing]
        if clashes:
            raise RagpipeError(
                f"{len(clashes)} document ids are already in {self.path} (e.g. {', '.join(map(repr, clashes[:3]))}); "
                "ids must stay unique: delete those documents first to replace them"
            )
        return self._rewrite(np.arange(len(self.doc_ids)), documents, progress, {"op": "append", "documents": len(documents)})

    def delete(self, doc_ids: Sequence[str]) -> Index:
        """Remove the documents ``doc_ids`` and return the updated index.

        Raises:
            RagpipeError: an id the index does not hold (nothing is changed), or a deletion that
                would leave the index empty.
        """
        wanted = set(doc_ids)
        unknown = sorted(wanted.difference(self.doc_ids))
        if unknown:
            raise RagpipeError(f"{self.path} holds no document with id {', '.join(map(repr, unknown[:5]))}; nothing was deleted")
        keep = np.array([row for row, doc_id in enumerate(self.doc_ids) if doc_id not in wanted], dtype=np.int64)
        if len(keep) == 0:
            raise RagpipeError(f"deleting every document would leave {self.path} empty; remove the directory instead")
        return self._rewrite(keep, [], False, {"op": "delete", "documents": len(wanted)})

    def _rewrite(self, keep_rows: np.ndarray, new_documents: Sequence[Document], progress: bool, change: dict) -> Index:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        encoder = self.encoder if self.dense is not None else None
        with _writer_lock(self.path):
            if read_manifest(self.path)["generation"] != self.manifest["generation"]:
                raise IndexStoreError(f"{self.path} changed since it was loaded; load it again and retry")
            documents = self.documents(keep_rows) + list(new_documents)
            row_map = np.full(len(self.doc_ids), -1, dtype=np.int64)
            row_map[keep_rows] = np.arange(len(keep_rows))
            kept = row_map[self.passages.doc_rows] >= 0
            chunking = ChunkingConfig(**self.manifest["chunking"]) if encoder else ChunkingConfig(max_tokens=0)
            added = _split(new_documents, encoder, chunking, timings)
            passages = Passages(
                np.concatenate([row_map[self.passages.doc_rows[kept]], added.doc_rows + len(keep_rows)]).astype(np.int32),
                *(np.concatenate([getattr(self.passages, name)[kept], getattr(added, name)]).astype(np.int32)
                  for name in ("starts", "ends", "title_chars")),
            )
            t = time.perf_counter()
            bm25 = self.bm25.updated(keep_rows, [document_text(d) for d in new_documents])
            timings["bm25"] = time.perf_counter() - t
            vectors = None
            if encoder is not None:
                new_vectors = _encode(encoder, added, new_documents, timings, progress)
                vectors = np.vstack([self.dense.vectors()[kept], new_vectors])
            manifest = {key: value for key, value in self.manifest.items() if key not in ("generation", "files")}
            manifest["updated"] = _now()
            manifest["changes"] = [*self.manifest.get("changes", []), {**change, "at": manifest["updated"]}]
            if isinstance(manifest.get("source"), dict):
                # The index no longer mirrors its source file byte for byte.
                manifest["source"] = {**manifest["source"], "sha256": None}
            return Index._commit(self.path, manifest, documents, passages, bm25, vectors, timings, started, encoder)

    def documents_by_id(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The stored documents with these ids (reads only those rows).

        Raises:
            QueryError: an id the index does not hold.
        """
        if self._row_of is None:
            self._row_of = {doc_id: row for row, doc_id in enumerate(self.doc_ids)}
        unknown = [d for d in doc_ids if d not in self._row_of]
        if unknown:
            raise QueryError(f"{self.path} holds no document with id {unknown[0]!r}")
        return {doc.doc_id: doc for doc in self.documents([self._row_of[d] for d in doc_ids])}

    def documents(self, rows: Sequence[int] | np.ndarray | None = None) -> list[Document]:
        """The stored documents (all, or those at ``rows``), in index order."""
        table = self._documents if rows is None else self._documents.take(np.asarray(rows, dtype=np.int64))
        columns = {name: table.column(name).to_pylist() for name in ("doc_id", "title", "text", "metadata")}
        return [
            Document(doc_id=i, text=x, title=t, metadata=json.loads(m) if m else {})
            for i, t, x, m in zip(columns["doc_id"], columns["title"], columns["text"], columns["metadata"])
        ]

    @classmethod
    def _commit(cls, path: Path, manifest: dict, documents: Sequence[Document], passages: Passages, bm25: BM25Index,
                vectors: np.ndarray | None, timings: dict[str, float], started: float, encoder) -> Index:
        """Write a complete new generation beside the current one, then switch the manifest to it.

        A failure before the switch removes only the unfinished generation; nothing the index
        held before is touched, and nothing is cleaned up after the switch.
        """
        generation = f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        staging = path / f"{generation}.tmp"
        staging.mkdir()
        try:
            _write_tables(staging, documents, passages)
            bm25.save(staging / "bm25")
            if vectors is not None:
                t = time.perf_counter()
                DenseIndex.build(vectors, DenseConfig(**manifest["dense"])).save(staging / "dense")
                timings["dense_index"] = time.perf_counter() - t
            timings["total"] = time.perf_counter() - started
            manifest = {
                **manifest,
                "generation": generation,
                "documents": len(documents),
                "passages": len(passages),
                "bm25": {**manifest["bm25"], "terms": len(bm25.vocabulary)},
                "build_seconds": {k: round(v, 3) for k, v in timings.items()},
                "files": _checksums(staging),
            }
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.rename(staging, path / generation)
        _fsync_dir(path)
        try:
            atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        except BaseException:
            shutil.rmtree(path / generation, ignore_errors=True)  # never referenced: safe to drop
            raise
        _fsync_dir(path)
        _remove_stale_generations(path, keep=generation)
        index = cls(path, manifest, path / generation)
        index._encoder = encoder
        return index

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, encoder_model: str | None = None) -> Index:
        """Open the index at ``path``.

        ``encoder_model``, if given, must name the model the index was built with.

        Raises:
            IndexStoreError: no index there, an interrupted or damaged build, a format this version
                cannot read, or a different encoder than the one requested.
        """
        path = Path(path)
        for attempt in range(2):
            manifest = read_manifest(path)
            generation_dir = path / manifest["generation"]
            try:
                _check_files(path, generation_dir, manifest["files"], full=False)
                index = cls(path, manifest, generation_dir)
                break
            except IndexStoreError:
                # A concurrent rebuild may have switched generations between our reads; retry once.
                if attempt == 1 or read_manifest(path)["generation"] == manifest["generation"]:
                    raise
        if encoder_model is not None:
            index.check_encoder(encoder_model)
        return index

    def check_encoder(self, model: str) -> None:
        """Refuse a query encoder that differs from the one the index was built with."""
        from ragpipe.models import canonical_name

        built = self.manifest["encoder"]
        if built is None:
            raise IndexStoreError(f"{self.path} is a BM25-only index; it has no encoder (query with --mode bm25)")
        if canonical_name(model) != built["model"]:
            raise IndexStoreError(
                f"{self.path} was built with encoder {built['model']!r}, not {model!r}; "
                "query without --model, or rebuild the index with the new model"
            )

    def verify(self) -> list[str]:
        """Problems found by re-reading every file against the manifest's checksums ([] if none)."""
        try:
            _check_files(self.path, self._dir, self.manifest["files"], full=True)
        except IndexStoreError as exc:
            return [str(exc)]
        problems = []
        if len(self.doc_ids) != self.manifest["documents"]:
            problems.append(f"manifest says {self.manifest['documents']} documents, documents.parquet has {len(self.doc_ids)}")
        if len(self.passages) != self.manifest["passages"]:
            problems.append(f"manifest says {self.manifest['passages']} passages, passages.parquet has {len(self.passages)}")
        if self.dense is not None and self.dense.n_vectors != len(self.passages):
            problems.append(f"FAISS index holds {self.dense.n_vectors} vectors for {len(self.passages)} passages")
        if self.bm25 is not None and self.bm25.n_docs != len(self.doc_ids):
            problems.append(f"BM25 index covers {self.bm25.n_docs} documents, not {len(self.doc_ids)}")
        return problems

    @property
    def encoder(self):
        """The query encoder, created on first use and checked against the manifest's weights."""
        if self._encoder is None:
            built = self.manifest["encoder"]
            if built is None:
                raise QueryError(f"{self.path} is a BM25-only index; use mode 'bm25'")
            from ragpipe.encoders import BiEncoder

            # Appends must encode like the original build did, so reuse its precision.
            encoder = BiEncoder(EncoderSpec(built["model"], built["query_prefix"], built["document_prefix"]),
                                precision=built.get("document_precision", "auto"))
            if encoder.fingerprint != built["fingerprint"]:
                raise IndexStoreError(
                    f"the weights of {built['model']!r} found at {encoder.folder} differ from those the index "
                    f"{self.path} was built with; rebuild the index or restore the original model"
                )
            self._encoder = encoder
        return self._encoder

    def size_bytes(self, component: str | None = None) -> int:
        """Bytes on disk of one component (``dense``, ``bm25``, ``documents``) or of all files."""
        files = self.manifest["files"]
        if component is None:
            return sum(f["bytes"] for f in files.values())
        if component == "documents":
            return sum(f["bytes"] for name, f in files.items() if name.endswith(".parquet"))
        return sum(f["bytes"] for name, f in files.items() if name.startswith(component + "/"))

    # -- searching -------------------------------------------------------------------------------

    def search(self, queries: Mapping[str, str], k: int = 10, options: SearchOptions = SearchOptions()) -> SearchResult:
        """Rank documents for each query; returns the top ``k`` per query as a Run.

        Documents are ranked by their best passage. Queries are processed one at a time so that
        the per-stage timings are what a single interactive query costs.

        Raises:
            QueryError: an empty query text, k < 1, or an option this index cannot serve.
        """
        options.validate()
        if k < 1:
            raise QueryError(f"k must be >= 1, got {k}")
        for qid, text in queries.items():
            if not isinstance(text, str) or not text.strip():
                raise QueryError(f"query {qid!r} is empty; give some text to search for")
        needs_dense = options.mode in ("dense", "hybrid")
        needs_bm25 = options.mode in ("bm25", "hybrid")
        if needs_dense and self.dense is None:
            raise QueryError(f"{self.path} has no dense index (built BM25-only); use mode 'bm25'")
        if needs_bm25 and self.bm25 is None:
            raise QueryError(f"{self.path} has no BM25 index; use mode 'dense'")
        depth = max(k, options.depth) if options.mode == "hybrid" else k
        encoder = self.encoder if needs_dense else None
        run: Run = {}
        timings: dict[str, dict[str, float]] = {}
        best_passage: dict[str, dict[str, int]] = {}
        for qid, text in queries.items():
            stage: dict[str, float] = {}
            start = time.perf_counter()
            runs = []
            if needs_dense:
                t = time.perf_counter()
                vector = encoder.encode_queries([text])
                stage["encode"] = _ms(t)
                t = time.perf_counter()
                dense_scores, best_passage[qid] = self._dense_documents(vector, depth)
                stage["faiss"] = _ms(t)
                runs.append(dense_scores)
            if needs_bm25:
                t = time.perf_counter()
                rows, scores = self.bm25.top_k(text, depth)
                runs.append({self.doc_ids[r]: float(s) for r, s in zip(rows.tolist(), scores.tolist())})
                stage["bm25"] = _ms(t)
            if options.mode == "hybrid":
                t = time.perf_counter()
                pair = [{qid: runs[0]}, {qid: runs[1]}]
                if options.fusion == "rrf":
                    fused = reciprocal_rank_fusion(pair, k=options.rrf_k)
                else:
                    fused = weighted_sum(pair, [options.dense_weight, 1.0 - options.dense_weight])
                scores_by_doc = fused.get(qid, {})
                stage["fusion"] = _ms(t)
            else:
                scores_by_doc = runs[0]
            run[qid] = dict(ranked(scores_by_doc, k))
            stage["total"] = _ms(start)
            timings[qid] = stage
        return SearchResult(run, timings, best_passage)

    def _dense_documents(self, vector: np.ndarray, depth: int) -> tuple[dict[str, float], dict[str, int]]:
        """Best-passage score of the top ``depth`` documents, and which passage was best."""
        fetch = min(self.dense.n_vectors, depth * 2)
        while True:
            rows, scores = self.dense.search(vector, fetch)
            doc_scores: dict[str, float] = {}
            best: dict[str, int] = {}
            for row, score in zip(rows[0].tolist(), scores[0].tolist()):
                if row < 0:
                    continue
                doc_id = self.doc_ids[self.passages.doc_rows[row]]
                if doc_id not in doc_scores:  # FAISS returns passages best first
                    doc_scores[doc_id] = score
                    best[doc_id] = row
            if len(doc_scores) >= depth or fetch >= self.dense.n_vectors:
                top = dict(ranked(doc_scores, depth))
                return top, {doc_id: best[doc_id] for doc_id in top}
            fetch = min(self.dense.n_vectors, fetch * 4)

    def hits(self, result: SearchResult, qid: str, query: str, snippet_chars: int = 240) -> list[Hit]:
        """The ranked documents of ``qid`` with titles and a snippet of each one's best passage."""
        rows_by_id = {doc_id: row for row, doc_id in enumerate(self.doc_ids)} if result.run.get(qid) else {}
        titles = self._documents.column("title")
        texts = self._documents.column("text")
        best = result.best_passage.get(qid, {})
        out = []
        for rank, (doc_id, score) in enumerate(ranked(result.run.get(qid, {})), start=1):
            row = rows_by_id[doc_id]
            text = texts[row].as_py()
            if doc_id in best:
                passage = best[doc_id]
                span = text[self.passages.starts[passage] : self.passages.ends[passage]]
            else:
                span = self._lexical_best_span(row, text, query)
            snippet = " ".join(span.split())
            if len(snippet) > snippet_chars:
                snippet = snippet[: snippet_chars - 1].rsplit(" ", 1)[0] + "…"
            out.append(Hit(rank, doc_id, score, titles[row].as_py(), snippet))
        return out

    def _lexical_best_span(self, row: int, text: str, query: str) -> str:
        """The passage of document ``row`` sharing the most query terms (for BM25-only hits)."""
        candidates = np.flatnonzero(self.passages.doc_rows == row)
        if len(candidates) <= 1 or self.bm25 is None:
            return text
        terms = set(self.bm25.analyzer(query))
        spans = [text[self.passages.starts[p] : self.passages.ends[p]] for p in candidates]
        overlap = [len(terms.intersection(self.bm25.analyzer(span))) for span in spans]
        return spans[int(np.argmax(overlap))]


# -- helpers ---------------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _split(documents: Sequence[Document], encoder, chunking: ChunkingConfig, timings: dict[str, float]) -> Passages:
    t = time.perf_counter()
    if encoder is None:  # BM25-only: one passage per document, only used for snippets
        passages = split_documents(documents, None, 0, 0, ChunkingConfig(max_tokens=0))
    else:
        passages = split_documents(documents, encoder.tokenizer, encoder.max_tokens, encoder.special_tokens,
                                   chunking, encoder.spec.document_prefix)
    timings["chunk"] = time.perf_counter() - t
    return passages


def _encode(encoder, passages: Passages, documents: Sequence[Document], timings: dict[str, float],
            progress: bool) -> np.ndarray | None:
    if encoder is None:
        return None
    t = time.perf_counter()
    vectors = encoder.encode_documents(passages.texts(documents), progress=progress)
    timings["encode"] = time.perf_counter() - t
    return vectors


def _encoder_manifest(encoder) -> dict | None:
    if encoder is None:
        return None
    return {
        **encoder.spec.to_dict(),
        "fingerprint": encoder.fingerprint,
        "dim": encoder.dim,
        "pooling": encoder.pooling,
        "normalized": True,
        "max_tokens": encoder.max_tokens,
        "special_tokens": encoder.special_tokens,
        "document_precision": encoder.precision,
    }


@contextmanager
def _writer_lock(path: Path):
    """Exclusive right to write the index at ``path``; a second writer fails at once.

    Without it two writers could each build from the same old generation and the later switch
    would silently drop the earlier one's changes.
    """
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; single-writer use is the caller's duty
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexStoreError(f"another ragpipe process is writing {path}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _check_documents(documents: Sequence[Document]) -> None:
    if not documents:
        raise RagpipeError("no documents given: the corpus is empty, nothing to index")
    seen: set[str] = set()
    for doc in documents:
        if doc.doc_id in seen:
            raise RagpipeError(f"duplicate document id {doc.doc_id!r}; ids must be unique")
        seen.add(doc.doc_id)


def _check_target(path: Path) -> None:
    """Refuse to build into a non-empty directory that is not a ragpipe index."""
    if path.exists() and not path.is_dir():
        raise IndexStoreError(f"{path} exists and is not a directory; choose another --index path")
    if path.is_dir() and not (path / MANIFEST).exists():
        others = [p.name for p in path.iterdir() if not p.name.startswith("gen-") and p.name != LOCK]
        if others:
            raise IndexStoreError(
                f"{path} is not empty and holds no ragpipe index ({', '.join(sorted(others)[:3])}…); "
                "choose a new or empty directory"
            )


def _write_tables(directory: Path, documents: Sequence[Document], passages: Passages) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = pa.table(
        {
            "doc_id": [d.doc_id for d in documents],
            "title": [d.title for d in documents],
            "text": [d.text for d in documents],
            "metadata": [json.dumps(d.metadata, ensure_ascii=False) if d.metadata else "" for d in documents],
        }
    )
    pq.write_table(docs, directory / "documents.parquet")
    pq.write_table(
        pa.table({"doc_row": passages.doc_rows, "start": passages.starts, "end": passages.ends, "title_chars": passages.title_chars}),
        directory / "passages.parquet",
    )


def _checksums(directory: Path) -> dict[str, dict]:
    out = {}
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        with open(file, "rb") as f:
            os.fsync(f.fileno())
        out[file.relative_to(directory).as_posix()] = {"bytes": file.stat().st_size, "sha256": sha256_file(file)}
    return out


def _check_files(path: Path, generation_dir: Path, files: dict, full: bool) -> None:
    """Sizes (and with ``full``, checksums) of every file against the manifest."""
    for name, expected in files.items():
        file = generation_dir / name
        if not file.is_file():
            raise IndexStoreError(f"{path}: {generation_dir.name}/{name} is missing; the index is damaged, rebuild it")
        if file.stat().st_size != expected["bytes"]:
            raise IndexStoreError(f"{path}: {generation_dir.name}/{name} has the wrong size; the index is damaged, rebuild it")
        if full and sha256_file(file) != expected["sha256"]:
            raise IndexStoreError(f"{path}: {generation_dir.name}/{name} fails its checksum; the index is damaged, rebuild it")


def read_manifest(path: Path) -> dict:
    """The parsed manifest of the index at ``path``.

    Raises:
        IndexStoreError: no index, an interrupted first build, a damaged manifest or a newer format.
    """
    manifest_path = path / MANIFEST
    if not path.exists():
        raise IndexStoreError(f"no index at {path}; build one with: ragpipe index SOURCE --index {path}")
    if not manifest_path.is_file():
        hint = " (an index build was interrupted before it finished)" if any(path.glob("gen-*")) else ""
        raise IndexStoreError(f"{path} holds no {MANIFEST}{hint}; rebuild with: ragpipe index SOURCE --index {path}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        missing = [key for key in _MANIFEST_KEYS if key not in manifest]
        if missing or not isinstance(manifest["format_version"], int):
            raise KeyError(f"missing or malformed fields: {', '.join(missing) or 'format_version'}")
        version = manifest["format_version"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise IndexStoreError(f"{manifest_path} is damaged ({exc}); rebuild the index") from exc
    if version > FORMAT_VERSION:
        raise IndexStoreError(
            f"{path} uses index format {version}, newer than this ragpipe reads ({FORMAT_VERSION}); upgrade ragpipe"
        )
    return manifest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_generations(path: Path, keep: str) -> None:
    for child in path.iterdir():
        if child.name.startswith("gen-") and child.name != keep and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(f".{MANIFEST}.") and child.name.endswith(".tmp"):
            child.unlink(missing_ok=True)
