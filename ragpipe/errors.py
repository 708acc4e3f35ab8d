"""Errors raised by ragpipe.

Every error a user can cause by what they pass in (a bad corpus line, a missing index, an unknown
model) is a :class:`RagpipeError`. Its message names the file, line or field at fault and says what
to do; the CLI prints that message as one line and exits non-zero, without a traceback. Anything
else that escapes is a bug in ragpipe.
"""

from __future__ import annotations

from pathlib import Path


class RagpipeError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a ragpipe bug."""

    exit_code = 2


class CorpusError(RagpipeError):
    """A corpus, query or qrels file cannot be read as given.

    ``path`` and ``line`` (1-based) locate the problem when it is tied to one place in a file.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)


class IndexStoreError(RagpipeError):
    """An index directory is missing, incomplete, corrupted, or incompatible with the request."""


class ModelError(RagpipeError):
    """A model cannot be resolved or loaded (for example offline, without a local copy)."""


class QueryError(RagpipeError):
    """A query or search request is invalid (empty text, k < 1, unknown mode)."""


class DatasetError(RagpipeError):
    """An evaluation dataset cannot be found or downloaded."""


class MissingDependencyError(RagpipeError):
    """An optional dependency is not installed; the message names the extra to install."""
