"""ragpipe: two-stage retrieval for RAG: bi-encoder + BM25 recall, fusion, reranking, evaluation.

``import ragpipe`` is cheap: the names below load their modules (and torch, FAISS) on first use.

    >>> import ragpipe
    >>> index = ragpipe.Index.build(ragpipe.load_corpus("docs/").documents, "indexes/docs")
    >>> index = ragpipe.Index.load("indexes/docs")
    >>> result = index.search({"q1": "how do I rotate the logs?"}, k=5)
    >>> ragpipe.evaluate(qrels, result.run, ["ndcg@10"]).mean
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Document": "ragpipe.types",
    "Run": "ragpipe.types",
    "Qrels": "ragpipe.types",
    "ranked": "ragpipe.types",
    "RagpipeError": "ragpipe.errors",
    "load_corpus": "ragpipe.corpus",
    "load_queries": "ragpipe.corpus",
    "read_qrels": "ragpipe.trec",
    "read_run": "ragpipe.trec",
    "write_run": "ragpipe.trec",
    "evaluate": "ragpipe.metrics",
    "reciprocal_rank_fusion": "ragpipe.fusion",
    "weighted_sum": "ragpipe.fusion",
    "normalize_minmax": "ragpipe.fusion",
    "Analyzer": "ragpipe.text",
    "AnalyzerConfig": "ragpipe.text",
    "BM25Index": "ragpipe.retrievers.bm25",
    "BM25Params": "ragpipe.retrievers.bm25",
    "DenseIndex": "ragpipe.retrievers.dense",
    "DenseConfig": "ragpipe.retrievers.dense",
    "ChunkingConfig": "ragpipe.chunking",
    "BiEncoder": "ragpipe.encoders",
    "EncoderSpec": "ragpipe.encoders",
    "Index": "ragpipe.index",
    "IndexConfig": "ragpipe.index",
    "SearchOptions": "ragpipe.index",
    "load_dataset": "ragpipe.datasets",
    "run_eval": "ragpipe.evaluation",
    "document_text": "ragpipe.types",
    "load_reranker": "ragpipe.rerankers",
    "rerank_run": "ragpipe.rerankers",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
