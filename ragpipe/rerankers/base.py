"""The reranker interface, spec strings, and reranking of a Run.

Spec grammar: ``KIND[:MODEL][,key=value...]``, for example ``cross-encoder:models/scifact-ce``,
``llm``, ``llm,method=yesno,layer=30``, ``llm:models/scifact-head``. KIND is ``cross-encoder`` or
``llm``; MODEL is a hub name or a local folder (a folder written by ``ragpipe train-reranker``
carries its own settings); the keys are backend options (see each backend's ``OPTIONS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ragpipe.errors import QueryError, RagpipeError
from ragpipe.fusion import normalize_minmax
from ragpipe.types import Run, ranked

KINDS = ("cross-encoder", "llm")


class Reranker(Protocol):
    name: str

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Relevance of each document to ``query``, higher is better, shape (len(documents),)."""
        ...


@dataclass(frozen=True)
class RerankerSpec:
    kind: str
    model: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = self.kind + (f":{self.model}" if self.model else "")
        return text + "".join(f",{k}={v}" for k, v in sorted(self.options.items()))


def parse_spec(spec: str) -> RerankerSpec:
    """Parse ``KIND[:MODEL][,key=value...]``.

    Raises:
        QueryError: an unknown kind or an option without ``=``.
    """
    head, *pairs = spec.split(",")
    kind, _, model = head.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise QueryError(f"unknown reranker {kind!r} in {spec!r}; use cross-encoder[:MODEL] or llm[:MODEL]")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise QueryError(f"reranker option {pair!r} in {spec!r} must look like key=value")
        options[key.strip()] = value.strip()
    return RerankerSpec(kind, model.strip() or None, options)


def load_reranker(spec: str | RerankerSpec) -> Reranker:
    """Build the reranker a spec names (loads its model).

    Raises:
        RagpipeError: an unknown option, or a model that cannot be found or loaded offline.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "cross-encoder":
        from ragpipe.rerankers.cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker.from_spec(spec)
    from ragpipe.rerankers.llm import LLMReranker

    return LLMReranker.from_spec(spec)


def split_interpolation(spec: RerankerSpec) -> tuple[RerankerSpec, float | None]:
    """Take the ``interpolation=W`` option (handled by :func:`rerank_run`, not by a backend) out
    of ``spec``.

    Raises:
        QueryError: W is not a number.
    """
    options = dict(spec.options)
    text = options.pop("interpolation", None)
    if text is None:
        return spec, None
    try:
        weight = float(text)
    except ValueError:
        raise QueryError(f"reranker option interpolation={text!r} must be a number within [0, 1]") from None
    return RerankerSpec(spec.kind, spec.model, options), weight


def check_options(spec: RerankerSpec, allowed: Mapping[str, Callable[[str], object]]) -> dict[str, object]:
    """Convert a spec's options with ``allowed`` (name -> parser); unknown names are an error."""
    out = {}
    for key, value in spec.options.items():
        if key not in allowed:
            raise QueryError(f"reranker {spec.kind} has no option {key!r}; options: {', '.join(sorted(allowed))}")
        try:
            out[key] = allowed[key](value)
        except ValueError as exc:
            raise QueryError(f"reranker option {key}={value!r}: {exc}") from None
    return out


@dataclass
class RerankResult:
    run: Run
    timings_ms: dict[str, float]  # per query: milliseconds spent in the reranker


def rerank_run(
    run: Run,
    queries: Mapping[str, str],
    document_text: Callable[[str], str],
    reranker: Reranker,
    depth: int = 50,
    interpolation: float | None = None,
) -> RerankResult:
    """Rescore each query's top ``depth`` documents with ``reranker``.

    Reranked documents come first, in the reranker's order; documents below ``depth`` follow in
    their first-stage order (their scores are shifted below the reranked ones). With
    ``interpolation`` = w in [0, 1], the new score is ``w * minmax(reranker) + (1 - w) *
    minmax(first stage)`` over the reranked documents, so w = 0 reproduces the first stage.

    Raises:
        QueryError: depth < 1, an interpolation weight outside [0, 1], or a query id of the run
            missing from ``queries``.
    """
    if depth < 1:
        raise QueryError(f"rerank depth must be >= 1, got {depth}")
    if interpolation is not None and not 0.0 <= interpolation <= 1.0:
        raise QueryError(f"interpolation weight must be within [0, 1], got {interpolation}")
    out: Run = {}
    timings: dict[str, float] = {}
    for qid, scores in run.items():
        if qid not in queries:
            raise QueryError(f"run has query {qid!r} but no text was given for it")
        order = ranked(scores)
        head, tail = order[:depth], order[depth:]
        if not head:
            out[qid] = {}
            continue
        t = time.perf_counter()
        new = np.asarray(reranker.score(queries[qid], [document_text(doc_id) for doc_id, _ in head]), dtype=np.float64)
        timings[qid] = (time.perf_counter() - t) * 1000.0
        if new.shape != (len(head),) or not np.isfinite(new).all():
            raise RagpipeError(f"reranker {reranker.name} returned {new.shape} scores (non-finite or wrong count) for {len(head)} documents")
        head_scores = dict(zip((doc_id for doc_id, _ in head), new.tolist()))
        if interpolation is not None:
            first = normalize_minmax(dict(head))
            second = normalize_minmax(head_scores)
            head_scores = {d: interpolation * second[d] + (1.0 - interpolation) * first[d] for d in head_scores}
        reranked = dict(head_scores)
        if tail:
            floor = min(reranked.values())
            # Keep first-stage order below the reranked block: strictly below its lowest score.
            for position, (doc_id, _) in enumerate(tail, start=1):
                reranked[doc_id] = floor - position
        out[qid] = reranked
    return RerankResult(out, timings)
