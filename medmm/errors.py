"""User-facing error types.

Two kinds of failure are the user's to fix and end the CLI with exit code 2:
bad input data (:class:`MedmmInputError`) and a bad workflow/config (:class:`MedmmConfigError`).
Everything else is a bug and should surface loudly.
"""

from __future__ import annotations

from pathlib import Path


class MedmmError(Exception):
    """Base class of every error medmm raises on purpose."""


class MedmmInputError(MedmmError):
    """An input file or folder cannot be used; names the path and a one-line reason (no PHI)."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)


class MedmmConfigError(MedmmError):
    """A workflow/config value is invalid; names where (file and key path) and why."""

    def __init__(self, where: str | Path | None, reason: str):
        self.where = None if where is None else str(where)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.where}: {self.reason}" if self.where else self.reason)
