"""A bi-encoder over a sentence-transformers / Hugging Face model folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ragpipe.errors import MissingDependencyError, ModelError, QueryError
from ragpipe.models import DEFAULT_ENCODER, canonical_name, resolve_model, weights_fingerprint
from ragpipe.progress import Progress


@dataclass(frozen=True)
class EncoderSpec:
    """What an index records about its encoder; two specs must match for a query to be served.

    ``query_prefix`` / ``document_prefix`` are prepended before encoding (E5- and BGE-style models
    expect e.g. ``"query: "``).
    """

    model: str = DEFAULT_ENCODER
    query_prefix: str = ""
    document_prefix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class BiEncoder:
    """Encodes queries and documents into L2-normalised float32 vectors of dimension :attr:`dim`.

    Heavy libraries load on first use: torch and sentence-transformers when documents are encoded
    (or for queries of models NumPy cannot run), nothing beyond NumPy/SciPy for BERT-family queries.

    Raises:
        ModelError: the model cannot be resolved (see :func:`ragpipe.models.resolve_model`) or its
            folder lacks a fast tokenizer.
    """

    def __init__(
        self,
        spec: EncoderSpec | str = EncoderSpec(),
        batch_size: int = 16,
        query_backend: str = "auto",
        precision: str = "auto",
    ):
        if isinstance(spec, str):
            spec = EncoderSpec(model=spec)
        self.spec = EncoderSpec(canonical_name(spec.model), spec.query_prefix, spec.document_prefix)
        self.folder = resolve_model(self.spec.model)
        self.batch_size = batch_size
        if query_backend not in ("auto", "numpy", "torch"):
            raise ModelError(f"query_backend must be auto, numpy or torch, not {query_backend!r}")
        self.query_backend = query_backend
        self.precision = resolve_precision(precision)
        st_config = _read_json(self.folder / "sentence_bert_config.json")
        pooling_config = _read_json(self.folder / "1_Pooling" / "config.json")
        model_config = _read_json(self.folder / "config.json")
        self.pooling = "cls" if pooling_config.get("pooling_mode_cls_token") else "mean"
        self.max_tokens = int(st_config.get("max_seq_length") or min(model_config.get("max_position_embeddings", 512), 512))
        self.dim = int(pooling_config.get("word_embedding_dimension") or model_config["hidden_size"])
        self.tokenizer = self._load_tokenizer()
        self._st_model = None
        self._numpy_model = None

    # -- tokenizer -----------------------------------------------------------------------------

    def _load_tokenizer(self):
        from tokenizers import Tokenizer

        path = self.folder / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"model folder {self.folder} has no tokenizer.json (a fast tokenizer is required)")
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    @property
    def special_tokens(self) -> int:
        """Tokens the model adds around a single text ([CLS] and [SEP] for BERT)."""
        return self.tokenizer.post_processor.num_special_tokens_to_add(False) if self.tokenizer.post_processor else 0

    @property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.folder)

    # -- encoding ------------------------------------------------------------------------------

    def _sentence_transformer(self):
        if self._st_model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError("encoding needs sentence-transformers: pip install sentence-transformers") from exc
            from ragpipe.models import quiet_transformers

            quiet_transformers(warnings=True)  # uninitialised weights here would mean a broken model
            try:
                self._st_model = SentenceTransformer(str(self.folder), device="cpu")
            except Exception as exc:  # ST raises OSError/ValueError/RuntimeError for broken folders
                raise ModelError(f"cannot load {self.spec.model} from {self.folder}: {exc}") from exc
            self._st_model.max_seq_length = self.max_tokens
            self._st_model.eval()
        return self._st_model

    def _numpy_bert(self):
        if self._numpy_model is None:
            from ragpipe.encoders.numpy_bert import NumpyBert, UnsupportedModel

            try:
                self._numpy_model = NumpyBert(self.folder, self.pooling)
            except UnsupportedModel:
                if self.query_backend == "numpy":
                    raise ModelError(f"{self.spec.model} is not a BERT model the numpy backend can run; use query_backend='torch'")
                self._numpy_model = False
        return self._numpy_model

    def _encode_numpy(self, model, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        longest = min(max(len(e.ids) for e in encodings), self.max_tokens)
        ids = np.zeros((len(texts), longest), dtype=np.int64)
        mask = np.zeros((len(texts), longest), dtype=np.int64)
        for row, enc in enumerate(encodings):
            tokens = enc.ids
            if len(tokens) > self.max_tokens:  # keep the final [SEP], as HF truncation does
                tokens = tokens[: self.max_tokens - 1] + tokens[-1:]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return _l2_normalize(model(ids, mask))

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Vectors of shape (len(queries), dim) for ``queries``, prefixed with ``query_prefix``."""
        texts = [self.spec.query_prefix + q for q in queries]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.query_backend != "torch":
            model = self._numpy_bert()
            if model:
                return self._encode_numpy(model, texts)
        return self._encode_torch(texts)

    def _encode_torch(self, texts: Sequence[str], precision: str = "fp32") -> np.ndarray:
        import torch

        model = self._sentence_transformer()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            vectors = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return _l2_normalize(vectors.astype(np.float32))

    def encode_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Vectors of shape (len(texts), dim) for passage ``texts``, prefixed with ``document_prefix``.

        Texts are encoded shortest first across the whole input, not only within a batch, so each
        batch pads to a similar length; the output is in input order. With ``precision="bf16"``
        the matrix products run in bfloat16 (2-3x faster on CPUs with AMX / AVX512-BF16; vectors
        keep a cosine of at least 0.9999 to the float32 ones, tested); queries always use float32.
        """
        texts = [self.spec.document_prefix + t for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        lengths = np.array([len(e.ids) for e in self.tokenizer.encode_batch(texts)])
        order = np.argsort(lengths, kind="stable")
        meter = Progress("encoding", len(texts), unit="passages", enabled=progress)
        chunk = self.batch_size * 8
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            out[rows] = self._encode_torch([texts[i] for i in rows], self.precision)
            meter.update(len(rows))
        return out


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str) -> str:
    """``auto`` becomes bf16 where the CPU computes it natively, else fp32; fp32 and bf16 stay.

    Raises:
        QueryError: any other value.
    """
    if precision not in PRECISIONS:
        raise QueryError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return ("bf16" if cpu_has_native_bf16() else "fp32") if precision == "auto" else precision


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Intel AMX or AVX512-BF16), read from Linux's
    /proc/cpuinfo. Elsewhere False: emulated bfloat16 is slower than float32."""
    return bool(_cpu_info()[1] & {"amx_bf16", "avx512_bf16"})


def _cpu_info() -> tuple[str, set[str]]:
    """(CPU model name, feature flags) from Linux's /proc/cpuinfo; ("", set()) elsewhere."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    return model, set(line.split(":", 1)[1].split())
    except OSError:  # not Linux, or /proc unavailable
        pass
    return model, flags


def available_cpus() -> int:
    """CPUs this process may run on (its affinity on Linux, else all of them)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_summary() -> str:
    """What latencies measured here depend on, in one line: CPU model, the CPUs this process may
    use, its vector features, and the precision ``auto`` picks (e.g. "AMD EPYC, 2 CPUs, avx2,
    models in fp32")."""
    import platform

    model, flags = _cpu_info()
    cpus = available_cpus()
    vector = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"{model or platform.processor() or platform.machine()}, {cpus} CPUs, {'/'.join(vector) or 'no avx2'}, "
            f"models in {resolve_precision('auto')}")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
