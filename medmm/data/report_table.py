"""Report tables: a CSV with one report per row (and, for training a labeler, one 0/1 column per finding).

Read with pandas (quoted multi-line reports, any delimiter pandas sniffs as CSV); every problem is a
one-line :class:`~medmm.errors.MedmmInputError` naming the file. Label cells: ``1``/``0``; an
empty cell or ``-1`` means unknown (left out of the loss and the scores). Writes are atomic.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medmm.errors import MedmmInputError

UNKNOWN = -1


@dataclass
class ReportTable:
    """The rows of a report CSV: the frame as read, the report texts and (optionally) the labels."""

    path: Path
    frame: pd.DataFrame
    texts: list[str]
    labels: tuple[str, ...] = ()
    y: np.ndarray | None = None  # [N, L] int8: 1, 0 or UNKNOWN


def _closest(name: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(columns), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_report_table(path: str | Path, text_column: str, labels: Sequence[str] | None = None) -> ReportTable:
    """Read a report CSV; with ``labels``, also its 0/1 label columns (named exactly as the findings).

    Raises:
        MedmmInputError: missing/unreadable/empty file, missing text or label columns, label cells
            other than 0, 1, -1 or empty, or a label column without any known value.
    """
    path = Path(path)
    if not path.is_file():
        raise MedmmInputError(path, "report CSV not found" if not path.exists() else "is not a file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise MedmmInputError(path, "is not UTF-8 text") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise MedmmInputError(path, f"cannot be read as CSV ({reason})") from None
    if frame.empty:
        raise MedmmInputError(path, "has a header but no rows")
    columns = [str(c) for c in frame.columns]
    if text_column not in columns:
        raise MedmmInputError(path, f"no column {text_column!r}{_closest(text_column, columns)}; "
                                    f"columns: {', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''}")
    texts = [str(t) for t in frame[text_column].tolist()]
    if labels is None:
        return ReportTable(path, frame, texts)
    missing = [lab for lab in labels if lab not in columns]
    if missing:
        hint = _closest(missing[0], columns)
        raise MedmmInputError(path, f"missing label column(s) {', '.join(repr(m) for m in missing[:4])}"
                                    f"{' ...' if len(missing) > 4 else ''}{hint}; a column per finding, named as in the ontology, values 0/1")
    y = np.full((len(frame), len(labels)), UNKNOWN, dtype=np.int8)
    for j, lab in enumerate(labels):
        for i, cell in enumerate(frame[lab].tolist()):
            value = str(cell).strip()
            if value in ("", "-1", "-1.0"):
                continue
            if value in ("1", "1.0", "0", "0.0"):
                y[i, j] = int(float(value))
                continue
            raise MedmmInputError(path, f"line {i + 2}, column {lab!r}: {value[:20]!r} is not 0, 1 or empty")
        if (y[:, j] == UNKNOWN).all():
            raise MedmmInputError(path, f"label column {lab!r} has no 0/1 values")
    return ReportTable(path, frame, texts, tuple(labels), y)


def write_labelled_table(table: ReportTable, predicted: Sequence[dict[str, int]], labels: Sequence[str],
                         out: str | Path) -> Path:
    """The table's rows with one 0/1 column per label (replacing columns of the same name), atomically."""
    from medmm.io.writers import atomic_write_bytes

    if len(predicted) != len(table.texts):
        raise ValueError(f"{len(predicted)} label rows for {len(table.texts)} reports")
    frame = table.frame.copy()
    for lab in labels:
        frame[lab] = [int(row[lab] == 1) for row in predicted]
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    out = Path(out)
    try:
        return atomic_write_bytes(out, buffer.getvalue().encode("utf-8"))
    except OSError as err:
        raise MedmmInputError(out, f"cannot write ({err.strerror or type(err).__name__})") from None
