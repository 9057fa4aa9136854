"""User-facing error types.

Two kinds of failure are the user's to fix and end the CLI with exit code 2:
bad input data (:class:`MedmmInputError`) and a bad workflow/config (:class:`MedmmConfigError`).
Everything else is a bug and should surface loudly.
"""

from __future__ import annotations

from pathlib import Path


def _one_line(value) -> str:
    # medmm.io.text.one_line, imported lazily so that `medmm.errors` stays import-free
    from medmm.io.text import one_line

    return one_line(value)


def _reason(reason) -> str:
    return " ".join(_one_line(" ".join(str(reason).split())).split())


class MedmmError(Exception):
    """Base class of every error medmm raises on purpose."""


class MedmmInputError(MedmmError):
    """An input file or folder cannot be used; names the path and a one-line reason (no PHI)."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = _reason(reason)  # always one line, control characters escaped
        shown = None if self.path is None else _one_line(self.path)  # a path may hold "\n"
        super().__init__(f"{shown}: {self.reason}" if shown else self.reason)


class MedmmConfigError(MedmmError):
    """A workflow/config value is invalid; names where (file and key path) and why."""

    def __init__(self, where: str | Path | None, reason: str):
        self.where = None if where is None else str(where)
        self.reason = _reason(reason)
        shown = None if self.where is None else _one_line(self.where)
        super().__init__(f"{shown}: {self.reason}" if shown else self.reason)
