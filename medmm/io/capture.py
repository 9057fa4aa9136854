"""Capture warnings of third-party libraries (pydicom, highdicom, nibabel) and de-identify them.

pydicom's validation warnings quote the offending value, e.g. ``Invalid value for VR UI:
'1.2.840...'`` for every source instance an SR references: left alone they print source UIDs,
names or dates on stderr. Inside :func:`library_warnings_deidentified` every Python warning and
every WARNING log record of those libraries is collected, de-identified (quoted values, UIDs and
long digit runs replaced) and shown once per distinct message when the block ends.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from medmm.io.text import one_line, redact_uids

LIBRARY_LOGGERS = ("pydicom", "highdicom", "nibabel")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_DIGITS = re.compile(r"\d{5,}")
_MAX_LEN = 200
_owner_lock = threading.Lock()
_active = False  # one capture per process: warnings state is global, and catch_warnings is not thread-safe


def deidentify(message: str) -> str:
    """A library message with quoted values, UIDs and digit runs (IDs, dates) removed, one line."""
    text = redact_uids(str(message))
    text = _QUOTED.sub("'...'", text)
    text = _DIGITS.sub("<n>", text)
    text = " ".join(one_line(" ".join(text.split())).split())
    return text[:_MAX_LEN]


class _Collect(logging.Handler):
    def __init__(self, counts: Counter):
        super().__init__(logging.WARNING)
        self.counts = counts
        self.last: str | None = None  # pydicom's warn_and_log logs, then warns the same text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            key = deidentify(record.getMessage())
        except Exception:  # a broken log record must never break a run
            key = f"{record.name}: (unprintable warning)"
        self.counts[key] += 1
        self.last = key


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@contextmanager
def library_warnings_deidentified(echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """Collect library warnings in the block; show each distinct one once, de-identified.

    Nested blocks (and blocks entered by other threads meanwhile) defer to the one already active,
    which collects and shows their warnings too. ``echo`` receives ``warning: ...`` lines
    (default: stderr).
    """
    global _active
    with _owner_lock:
        owner = not _active
        _active = True
    if not owner:
        yield
        return
    counts: Counter = Counter()
    handler = _Collect(counts)
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [lg.propagate for lg in loggers]

    def show(message, category, filename, lineno, file=None, line=None):
        key = deidentify(message)
        if handler.last == key:  # the warning half of a pydicom warn_and_log: counted once
            handler.last = None
            return
        counts[key] += 1

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            for lg in loggers:
                lg.addHandler(handler)
                lg.propagate = False
            yield
    finally:
        for lg, propagate in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.propagate = propagate
        with _owner_lock:
            _active = False
        out = echo or _stderr
        for text, n in counts.items():
            out(f"warning: {text}" + (f" (x{n})" if n > 1 else ""))
