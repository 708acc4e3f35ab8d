"""Second-stage rerankers: rescore the top candidates of a first-stage Run.

A reranker is anything with ``name`` and ``score(query, documents) -> np.ndarray`` (higher is more
relevant). :func:`load_reranker` builds one from a spec string such as ``cross-encoder:DIR`` or
``llm,method=head,layer=12,depth=20``; :func:`rerank_run` applies it to a Run, with the spec's
depth and interpolation weight (or a trained folder's fitted weight) unless told otherwise.
Backends import torch and transformers only when built.
"""

from ragpipe.rerankers.base import Reranker, RerankerSpec, load_reranker, parse_spec, rerank_run, split_interpolation

__all__ = ["Reranker", "RerankerSpec", "load_reranker", "parse_spec", "rerank_run", "split_interpolation"]
