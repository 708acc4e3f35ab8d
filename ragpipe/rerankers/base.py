"""The reranker interface, spec strings, and reranking of a Run.

Spec grammar: ``KIND[:MODEL][,key=value...]``, for example ``cross-encoder:models/scifact-ce``,
``llm``, ``llm,method=yesno,layer=30``, ``llm:models/scifact-head``. KIND is ``cross-encoder`` or
``llm``; MODEL is a hub name or a local folder (a folder written by ``ragpipe train-reranker``
carries its own settings); the keys are backend options (see each backend's ``OPTIONS``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ragpipe._files import atomic_write_text, publish_folder
from ragpipe.errors import ModelError, QueryError, RagpipeError
from ragpipe.fusion import normalize_minmax
from ragpipe.types import Run, ranked

KINDS = ("cross-encoder", "llm")
DEFAULT_DEPTH = 50  # first-stage candidates a reranker rescores unless told otherwise
CONFIG_FILE = "reranker.json"  # what a trained reranker folder holds beside its weights


class Reranker(Protocol):
    """What :func:`rerank_run` needs. A reranker may also carry ``depth`` and ``interpolation``
    attributes (``load_reranker`` sets both): rerank_run uses them where it is not given its own."""

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
        QueryError: an unknown kind, an option without ``=`` or an option given twice.
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
        if key.strip() in options:
            raise QueryError(f"reranker option {key.strip()!r} is given twice in {spec!r}")
        options[key.strip()] = value.strip()
    return RerankerSpec(kind, model.strip() or None, options)


def load_reranker(spec: str | RerankerSpec) -> Reranker:
    """Build the reranker a spec names (loads its model), e.g.
    ``load_reranker("cross-encoder:models/scifact-ce,max_tokens=96,depth=50")``.

    The spec's ``interpolation=W`` and ``depth=N`` (see :func:`check_spec`) become the reranker's
    ``interpolation`` (over the weight a trained folder brings) and ``depth`` attributes, which
    :func:`rerank_run` uses where it is not given them.

    Raises:
        RagpipeError: an unknown option, or a model that cannot be found or loaded offline.
    """
    backend, weight, depth = check_spec(spec)
    if backend.kind == "cross-encoder":
        from ragpipe.rerankers.cross_encoder import CrossEncoderReranker

        reranker = CrossEncoderReranker.from_spec(backend)
    else:
        from ragpipe.rerankers.llm import LLMReranker

        reranker = LLMReranker.from_spec(backend)
    if weight is not None:
        reranker.interpolation = weight
    reranker.depth = depth
    return reranker


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
        weight = float("nan")
    if not 0.0 <= weight <= 1.0:  # checked here, before any model is loaded or scored
        raise QueryError(f"reranker option interpolation={text!r} must be a number within [0, 1]")
    return RerankerSpec(spec.kind, spec.model, options), weight


def check_options(spec: RerankerSpec, allowed: Mapping[str, Callable[[str], object]]) -> dict[str, object]:
    """Convert a spec's options with ``allowed`` (name -> parser); unknown names are an error."""
    out = {}
    for key, value in spec.options.items():
        if key not in allowed:
            raise QueryError(f"reranker {spec.kind} has no option {key!r}; options: {', '.join(sorted(allowed))}, and "
                             "depth and interpolation for any reranker")
        try:
            out[key] = allowed[key](value)
        except ValueError as exc:
            raise QueryError(f"reranker option {key}={value!r}: {exc}") from None
    return out


def whole_number(value: str) -> int:
    """An integer option value."""
    try:
        return int(value)
    except ValueError:
        raise ValueError("expected a whole number") from None


def at_least(low: int) -> Callable[[str], int]:
    """A parser for whole numbers >= ``low``: a limit that does not depend on the model is
    checked with the spec, before any model loads."""

    def parse(value: str) -> int:
        number = whole_number(value)
        if number < low:
            raise ValueError(f"must be >= {low}")
        return number

    return parse


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser accepting only ``choices``: a wrong value is refused before any model loads."""

    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def parse_flag(value: str) -> bool:
    """A yes/no option value: 1, true, yes, on or 0, false, no, off (any case)."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/true/yes/on or 0/false/no/off")


def check_spec(spec: str | RerankerSpec) -> tuple[RerankerSpec, float | None, int | None]:
    """Parse a spec and check its options against the backend's, without loading a model.

    Two options belong to reranking rather than to a backend and are taken out: ``interpolation=W``
    (see :func:`split_interpolation`) and ``depth=N``, how many first-stage candidates this
    reranker rescores (so one eval can give a cheap model 50 candidates and a slow one 20).
    Returns the backend's spec, W and N (None where not given).

    Raises:
        QueryError: an unknown kind, a malformed or unknown option, a value that does not parse,
            or a depth below 1.
    """
    spec, weight = split_interpolation(parse_spec(spec) if isinstance(spec, str) else spec)
    options = dict(spec.options)
    depth_text = options.pop("depth", None)
    depth = None
    if depth_text is not None:
        try:
            depth = at_least(1)(depth_text)
        except ValueError:
            raise QueryError(f"reranker option depth={depth_text!r} must be a whole number >= 1") from None
        spec = RerankerSpec(spec.kind, spec.model, options)
    if spec.kind == "cross-encoder":
        from ragpipe.rerankers.cross_encoder import OPTIONS
    else:
        from ragpipe.rerankers.llm import OPTIONS
    check_options(spec, OPTIONS)
    return spec, weight, depth


class ScoreCache:
    """A reranker that remembers every score it gave, per (query, document text): runs that
    differ only in the interpolation weight or the depth replay the scores instead of running the
    model again. ``release()`` frees the model and keeps the scores."""

    def __init__(self, reranker: Reranker):
        self.reranker: Reranker | None = reranker
        self.name = reranker.name
        self.interpolation = getattr(reranker, "interpolation", None)
        self.depth = getattr(reranker, "depth", None)
        self.scores: dict[tuple[str, str], float] = {}

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        missing = [d for d in dict.fromkeys(documents) if (query, d) not in self.scores]
        if missing:
            if self.reranker is None:
                raise RagpipeError(f"reranker {self.name} was released; it cannot score new documents")
            values = np.asarray(self.reranker.score(query, missing), dtype=np.float64)
            if values.shape != (len(missing),):
                raise RagpipeError(f"reranker {self.name} returned {values.shape} scores for {len(missing)} documents")
            for document, value in zip(missing, values.tolist()):
                self.scores[query, document] = value
        return np.array([self.scores[query, d] for d in documents])

    def release(self) -> None:
        self.reranker = None


# The ``--rerank`` prefix that loads each kind of trained reranker folder, and what to call it.
SPEC_PREFIX = {"cross-encoder": "cross-encoder", "llm-head": "llm"}
KIND_NAMES = {"cross-encoder": "a cross-encoder", "llm-head": "an LLM head"}


def check_kind(folder: Path, settings: dict, expected: str, model: str) -> None:
    """Refuse a trained reranker folder (its ``settings``) of another kind than ``expected``.

    Raises:
        ModelError: naming the ``--rerank`` spec that loads the folder, or saying to retrain when
            its ``reranker.json`` names no known kind.
    """
    kind = settings.get("kind")
    if kind == expected:
        return
    if kind in SPEC_PREFIX:
        raise ModelError(f"{folder} holds {KIND_NAMES[kind]} reranker, not {KIND_NAMES[expected]}; "
                         f"use {SPEC_PREFIX[kind]}:{model}")
    raise ModelError(f"{Path(folder) / CONFIG_FILE} names no known reranker kind ({kind!r}, expected one of "
                     f"{', '.join(SPEC_PREFIX)}); retrain with ragpipe train-reranker")


def read_settings(folder: Path) -> dict:
    """A trained reranker folder's ``reranker.json`` ({} where there is none).

    Raises:
        ModelError: the file is not readable JSON.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is damaged ({exc}); retrain the reranker or restore the file") from None


def update_settings(folder: str | Path, **values) -> None:
    """Add keys (e.g. a fitted ``interpolation``) to a saved reranker's reranker.json atomically."""
    settings = read_settings(Path(folder))
    settings.update(values)
    atomic_write_text(Path(folder) / CONFIG_FILE, json.dumps(settings, indent=1))


def publish_reranker(out: str | Path, write: Callable[[Path], None], settings: dict) -> None:
    """Write a reranker folder: ``write(staging)`` puts the weights, then ``settings`` become its
    reranker.json; ``out`` is replaced only once complete (see :func:`ragpipe._files.publish_folder`).

    Raises:
        RagpipeError: ``out`` exists and is not a reranker folder (it is never replaced).
    """

    def write_all(staging: Path) -> None:
        write(staging)
        (staging / CONFIG_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")

    publish_folder(Path(out), write_all, marker=CONFIG_FILE)


@dataclass
class RerankResult:
    run: Run
    timings_ms: dict[str, float]  # per query: milliseconds spent in the reranker


def rerank_run(
    run: Run,
    queries: Mapping[str, str],
    document_text: Callable[[str], str],
    reranker: Reranker,
    depth: int | None = None,
    interpolation: float | None = None,
) -> RerankResult:
    """Rescore each query's top ``depth`` documents with ``reranker``.

    Reranked documents come first, in the reranker's order; documents below ``depth`` follow in
    their first-stage order (their scores are shifted below the reranked ones). With
    ``interpolation`` = w in [0, 1], the new score is ``w * minmax(reranker) + (1 - w) *
    minmax(first stage)`` over the reranked documents, so w = 0 reproduces the first stage and w = 1
    follows the reranker alone. Not given, ``depth`` is the reranker's ``depth`` attribute (set by a
    spec's ``depth=N``) or 50, and ``interpolation`` the reranker's ``interpolation`` attribute (a
    spec's ``interpolation=W``, else the weight a trained folder was fitted with) or none.

    Raises:
        QueryError: depth < 1, an interpolation weight outside [0, 1], or a query id of the run
            missing from ``queries``.
    """
    if depth is None:
        depth = getattr(reranker, "depth", None)
        depth = DEFAULT_DEPTH if depth is None else depth
    if interpolation is None:
        interpolation = getattr(reranker, "interpolation", None)
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
