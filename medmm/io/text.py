"""User-facing text helpers: single-line, printable, truncated (messages must stay one line).

`one_line` is the one helper every error message goes through (see :mod:`medmm.errors`): a path
or reason that holds a newline, a carriage return or an ANSI escape must not be able to forge a
second ``error:`` line or repaint the terminal, so control characters are escaped, not dropped.
"""

from __future__ import annotations

import re

# DICOM UIDs (dotted digit groups such as 1.2.840.113619.2.55...): identifying, never shown.
_UID = re.compile(r"(?<![\w.])(?=[\d.]{10})[0-2](?:\.\d+){2,}(?![\w.])")


def one_line(value) -> str:
    """``value`` as text on one line: every non-printable character is backslash-escaped.

    Printable text (including spaces and non-ASCII letters) is kept as is, so ordinary paths read
    unchanged; ``"a\\nb"`` becomes ``a\\\\nb`` (a literal backslash-n).

    >>> one_line("scan\\nerror: forged")
    'scan\\\\nerror: forged'
    >>> one_line("/data/ct scan")
    '/data/ct scan'
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def safe_text(value, limit: int = 48) -> str:
    """Printable, single-line, truncated text for user-facing summaries."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(value or "")).split())
    return text[:limit]


def redact_uids(text: str) -> str:
    """Replace DICOM UIDs in ``text`` by ``<uid>`` (library warnings quote the source's UIDs)."""
    return _UID.sub("<uid>", str(text))


def short_reason(err: BaseException, limit: int = 120) -> str:
    """``"TypeName: first words of the message"`` of a third-party exception, on one line, UIDs
    redacted (pydicom/nibabel messages may quote header values)."""
    text = redact_uids(" ".join(one_line(err).split()))
    text = text[:limit] + ("..." if len(text) > limit else "")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
