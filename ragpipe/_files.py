"""Small file helpers shared by the index store, evaluation and rerankers."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from ragpipe.errors import RagpipeError


def sha256_file(path: Path, digest=None) -> str:
    """Hex SHA-256 of a file's bytes (fed into ``digest`` if one is given, e.g. to hash several
    files together)."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part:
    a uniquely named temporary file in the same folder, flushed to disk, then renamed over."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_replaceable(out: Path, marker: str) -> None:
    """Refuse an output folder that :func:`publish_folder` must not replace: ``out`` may be
    missing, an empty folder, or a folder holding ``marker`` (one this code wrote before).

    Raises:
        RagpipeError: ``out`` is a file, or a non-empty folder without ``marker`` (the user's
            data, an index, ...).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise RagpipeError(f"{out} exists and is not a folder ragpipe wrote (no {marker}); pass a new or empty folder")


def publish_folder(out: Path, write, marker: str | None = None) -> None:
    """Call ``write(staging)`` on a fresh folder beside ``out``, then move it to ``out``.

    ``out`` never holds a partly written result. An existing ``out`` is replaced by two renames,
    between which a crash leaves the old folder as ``.NAME.old-*`` beside it; a failed ``write``
    leaves ``out`` untouched. With ``marker``, ``out`` is first checked with
    :func:`check_replaceable`.

    Raises:
        RagpipeError: see :func:`check_replaceable`.
    """
    import shutil

    out = Path(out).resolve()  # "." has no name to put a staging folder beside
    if marker is not None:
        check_replaceable(out, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        write(staging)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out, old)
            os.rename(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
