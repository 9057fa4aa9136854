"""User-facing text helpers: single-line, printable, truncated (messages must stay one line)."""

from __future__ import annotations


def safe_text(value, limit: int = 48) -> str:
    """Printable, single-line, truncated text for user-facing summaries."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(value or "")).split())
    return text[:limit]


def short_reason(err: BaseException, limit: int = 120) -> str:
    """``"TypeName: first words of the message"`` of a third-party exception, on one line."""
    text = " ".join(str(err).split())
    text = text[:limit] + ("..." if len(text) > limit else "")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
