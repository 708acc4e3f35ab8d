"""Bi-encoders: text in, L2-normalised float32 vectors out.

:class:`BiEncoder` reads a sentence-transformers (or plain Hugging Face) model folder. Documents are
encoded by sentence-transformers on torch. Queries of BERT-family models are encoded by
:mod:`ragpipe.encoders.numpy_bert`, a NumPy forward pass that gives the same vectors (a parity test
holds them within 1e-5) without importing torch, so a cold ``ragpipe query`` answers in about a
second instead of paying ~5 s of torch + sentence-transformers imports.
"""

from ragpipe.encoders.bi_encoder import BiEncoder, EncoderSpec

__all__ = ["BiEncoder", "EncoderSpec"]
