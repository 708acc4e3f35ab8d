"""Inference of BERT-architecture sentence encoders in NumPy.

Supports what sentence-transformers builds from a ``BertModel`` folder: absolute position
embeddings, post-LayerNorm encoder blocks with exact (erf) GELU, then mean or CLS pooling. Anything
else raises :class:`UnsupportedModel` so the caller can fall back to sentence-transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class UnsupportedModel(Exception):
    """The model folder is not a plain BERT encoder this module can run."""


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 is only 1e-7 accurate; scipy.special.erf is exact but costs ~0.3 s
    # of import, still far below torch, and is a dependency of sentence-transformers anyway.
    from scipy.special import erf

    return erf(x)


class NumpyBert:
    """A BERT encoder + pooling, loaded from a model folder's config.json and model.safetensors."""

    def __init__(self, folder: Path, pooling: str):
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedModel(f"model_type={config.get('model_type')}, hidden_act={config.get('hidden_act')}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModel("only absolute position embeddings are supported")
        if pooling not in ("mean", "cls"):
            raise UnsupportedModel(f"pooling {pooling!r}")
        weights_path = folder / "model.safetensors"
        if not weights_path.is_file():
            raise UnsupportedModel("no model.safetensors")
        from safetensors.numpy import load_file

        raw = load_file(str(weights_path))
        prefix = "bert." if any(k.startswith("bert.") for k in raw) else ""
        self.w = {k[len(prefix):]: v.astype(np.float32) for k, v in raw.items() if k.startswith(prefix)}
        self.n_layers = config["num_hidden_layers"]
        self.n_heads = config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self.pooling = pooling
        # Pre-transpose linear weights once: torch stores them as (out, in).
        for key in list(self.w):
            if key.endswith(".weight") and self.w[key].ndim == 2 and "embeddings" not in key:
                self.w[key] = np.ascontiguousarray(self.w[key].T)

    def _layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Pooled, unnormalised embeddings for a padded batch of shape (batch, seq)."""
        batch, seq = input_ids.shape
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][input_ids]
            + w["embeddings.position_embeddings.weight"][np.arange(seq)][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        hidden = x.shape[-1]
        head_dim = hidden // self.n_heads
        mask_bias = np.where(attention_mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}"

            def heads(t: np.ndarray) -> np.ndarray:
                return t.reshape(batch, seq, self.n_heads, head_dim).transpose(0, 2, 1, 3)

            q = heads(self._linear(x, f"{p}.attention.self.query"))
            k = heads(self._linear(x, f"{p}.attention.self.key"))
            v = heads(self._linear(x, f"{p}.attention.self.value"))
            att = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim)) + mask_bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
            x = self._layer_norm(self._linear(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            inter = self._linear(x, f"{p}.intermediate.dense")
            inter = 0.5 * inter * (1.0 + _erf(inter / np.float32(np.sqrt(2.0))))
            x = self._layer_norm(self._linear(inter, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        if self.pooling == "cls":
            return x[:, 0]
        mask = attention_mask[:, :, None].astype(np.float32)
        return (x * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
