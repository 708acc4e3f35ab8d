"""The bi-encoder: offline model resolution, NumPy query path parity with sentence-transformers,
bfloat16 document encoding close to float32."""

from __future__ import annotations

import numpy as np
import pytest

from ragpipe.errors import ModelError
from ragpipe.models import canonical_name, resolve_model, weights_fingerprint

TEXTS = [
    "0-dimensional biomaterials lack inductive properties.",
    "what causes breast cancer in women",
    "Photovoltaic cells convert sunlight into electricity without moving parts. " * 40,  # > 256 tokens
    "東京都に住んでいます",
]


def test_default_model_resolves_offline_to_a_folder_with_weights(encoder):
    assert (encoder.folder / "config.json").is_file()
    assert encoder.dim == 384 and encoder.max_tokens == 256 and encoder.pooling == "mean"
    assert encoder.special_tokens == 2


def test_short_alias_names_the_same_model():
    assert canonical_name("all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model("all-MiniLM-L6-v2") == resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def test_unknown_model_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolve_model.cache_clear()
    with pytest.raises(ModelError, match="not reachable on the Hugging Face hub.*pass the path"):
        resolve_model("no-such-org/no-such-model")


def test_hub_names_with_dots_are_not_mistaken_for_paths(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolve_model.cache_clear()
    with pytest.raises(ModelError, match="'BAAI/bge-small-en-v1.5' is not reachable on the Hugging Face hub"):
        resolve_model("BAAI/bge-small-en-v1.5")


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_numpy_query_vectors_equal_sentence_transformers(encoder):
    numpy_vectors = encoder.encode_queries(TEXTS)
    torch_vectors = encoder._encode_torch(TEXTS)
    assert numpy_vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(numpy_vectors, torch_vectors, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(numpy_vectors, axis=1), 1.0, atol=1e-5)


def test_sentence_transformers_reference_gives_the_same_vectors(encoder):
    """Guard against drift in our own wrapper: the library called directly agrees with it."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(encoder.folder), device="cpu").encode(TEXTS[:2], normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode_queries(TEXTS[:2]), reference, atol=1e-5)


def test_bf16_document_vectors_stay_close_to_float32(encoder):
    texts = TEXTS[:3]
    fp32 = encoder._encode_torch(texts, "fp32")
    bf16 = encoder._encode_torch(texts, "bf16")
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() > 0.999


def test_documents_come_back_in_input_order(encoder):
    texts = ["a much longer document " * 20, "short", "medium length text here"]
    vectors = encoder.encode_documents(texts)
    for row, text in enumerate(texts):
        single = encoder._encode_torch([text], encoder.precision)[0]
        assert float(vectors[row] @ single) > 0.999


def test_fingerprint_is_stable_and_depends_on_weights(encoder, tmp_path):
    assert weights_fingerprint(encoder.folder) == encoder.fingerprint
    (tmp_path / "model.safetensors").write_bytes(b"not the same weights")
    assert weights_fingerprint(tmp_path) != encoder.fingerprint
