"""Manifests: the table of cases (CSV or JSONL) that every medmm stage reads.

Columns: ``case_id, patient_id, image, report, indication, split`` plus one column per finding
(names exactly as in the label set, values 1/0, empty or -1 = unknown). Relative image paths are
resolved against the manifest's folder, so a data folder can be moved as a whole.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from medmm.data.case import SPLITS, Case
from medmm.errors import MedmmInputError
from medmm.labels import CT_RATE_FINDINGS

log = logging.getLogger(__name__)

BASE_COLUMNS: tuple[str, ...] = ("case_id", "patient_id", "image", "report", "indication", "split")
REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "image")
_UNKNOWN = {"", "-1", "-1.0", "nan", "na", "none", "unknown"}
_POSITIVE = {"1", "1.0", "true"}
_NEGATIVE = {"0", "0.0", "false"}

Labeler = Callable[[str], dict[str, int]]


def _parse_label(value: Any) -> int | None:
    """1/0/-1 from a cell (CSV text or JSON number/bool/null); None when not a label value."""
    if value is None:
        return -1
    text = str(value).strip().lower()
    if text in _POSITIVE:
        return 1
    if text in _NEGATIVE:
        return 0
    if text in _UNKNOWN:
        return -1
    return None


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Rows of a CSV or JSONL manifest as (line number, dict) plus the column names."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MedmmInputError(path, "manifest not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MedmmInputError(path, f"cannot read manifest ({type(err).__name__})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows, columns = [], {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise MedmmInputError(path, f"line {number}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise MedmmInputError(path, f"line {number}: expected a JSON object per line")
            columns.update(dict.fromkeys(record))
            rows.append((number, record))
        return list(columns), rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        raise MedmmInputError(path, "manifest is empty (no header row)")
    columns = [c.strip() for c in reader.fieldnames]
    reader.fieldnames = columns
    rows = []
    for row in reader:
        if None in row:
            raise MedmmInputError(path, f"line {reader.line_num}: more cells than header columns")
        rows.append((reader.line_num, row))
    return columns, rows


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _call_labeler(labeler: Labeler | Any, report: str) -> dict[str, int]:
    fn = labeler if callable(labeler) else labeler.label
    return dict(fn(report))


def read_manifest(
    path: str | Path,
    labels: Sequence[str] = CT_RATE_FINDINGS,
    labeler: Labeler | None = None,
    *,
    check_files: bool = True,
) -> list[Case]:
    """Read a CSV or JSONL manifest into `Case` records.

    Args:
        path: ``.csv`` or ``.jsonl`` file.
        labels: finding names expected as columns (exact spelling); empty to read no labels.
        labeler: callable report text -> {label: 1/0}; used only when the manifest has no label
            columns (e.g. `medmm.knowledge.ReportLabeler`), as for CT-RATE, whose labels come
            from its reports.
        check_files: verify that every image path exists.

    Returns:
        The cases in file order, image paths absolute.

    Raises:
        MedmmInputError: missing file/columns/images, bad label or split values, duplicate
            case ids, labels neither given nor derivable; names the manifest and the line.

    >>> cases = read_manifest("data/manifest.csv")  # doctest: +SKIP
    """
    path = Path(path)
    columns, rows = _read_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise MedmmInputError(path, f"missing required column(s): {', '.join(missing)}")
    label_cols = [name for name in labels if name in columns]
    if label_cols and len(label_cols) != len(labels):
        absent = [name for name in labels if name not in columns]
        raise MedmmInputError(path, f"missing label column(s): {', '.join(absent)}")
    if labels and not label_cols and labeler is None:
        raise MedmmInputError(path, "no label columns and no labeler given to derive labels from reports")
    if "patient_id" not in columns:
        log.warning("%s: no patient_id column; each case is treated as its own patient", path)
    known = set(BASE_COLUMNS) | set(labels)
    base = path.parent
    cases: list[Case] = []
    seen: set[str] = set()
    for line, row in rows:
        where = f"line {line}"
        case_id = _text(row.get("case_id"))
        if case_id is None:
            raise MedmmInputError(path, f"{where}: empty case_id")
        case_id = case_id.strip()
        if case_id in seen:
            raise MedmmInputError(path, f"{where}: duplicate case_id {case_id!r}")
        seen.add(case_id)
        image = _text(row.get("image"))
        if image is None:
            raise MedmmInputError(path, f"{where} ({case_id}): empty image path")
        image_path = Path(image.strip())
        if not image_path.is_absolute():
            image_path = base / image_path
        if check_files and not image_path.exists():
            raise MedmmInputError(path, f"{where} ({case_id}): image not found: {image.strip()}")
        split = _text(row.get("split"))
        split = split.strip().lower() if split else None
        if split is not None and split not in SPLITS:
            raise MedmmInputError(path, f"{where} ({case_id}): split {split!r} is not one of {', '.join(SPLITS)}")
        report = _text(row.get("report"))
        if label_cols:
            values = {}
            for name in labels:
                value = _parse_label(row.get(name))
                if value is None:
                    raise MedmmInputError(
                        path, f"{where} ({case_id}): label {name!r} has value {row.get(name)!r}; expected 1, 0 or -1/empty"
                    )
                values[name] = value
        elif not labels:  # caller wants no labels (e.g. batch inference)
            values = {}
        else:
            if report is None:
                raise MedmmInputError(path, f"{where} ({case_id}): no label columns and no report to derive labels from")
            derived = _call_labeler(labeler, report)
            values = {name: int(derived.get(name, 0)) for name in labels}
        patient = _text(row.get("patient_id"))
        meta = {k: v for k, v in row.items() if k not in known and v not in (None, "")}
        cases.append(
            Case(
                case_id=case_id,
                patient_id=patient.strip() if patient else case_id,
                image=str(image_path),
                report=report,
                indication=_text(row.get("indication")),
                labels=values,
                split=split,
                meta=meta,
            )
        )
    if not cases:
        raise MedmmInputError(path, "manifest has no cases")
    return cases


def _relative(image: str, base: Path) -> str:
    """``image`` relative to ``base`` (posix separators) when it lies inside it, else unchanged."""
    p = Path(image)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return Path(os.path.relpath(p.resolve(), base.resolve())).as_posix() if p.resolve().is_relative_to(base.resolve()) else str(p)
    except (OSError, ValueError):
        return str(p)


def manifest_bytes(cases: Iterable[Case], path: str | Path, labels: Sequence[str] | None = None) -> bytes:
    """Serialise cases as the manifest ``path`` would hold them (CSV, or JSONL by suffix)."""
    path = Path(path)
    cases = list(cases)
    if labels is None:
        labels = list(cases[0].labels) if cases else list(CT_RATE_FINDINGS)
    meta_cols = sorted({k for c in cases for k in c.meta})
    records = []
    for c in cases:
        record: dict[str, Any] = {
            "case_id": c.case_id,
            "patient_id": c.patient_id,
            "image": _relative(c.image, path.parent),
            "report": c.report or "",
            "indication": c.indication or "",
            "split": c.split or "",
        }
        record.update({name: int(c.labels.get(name, -1)) for name in labels})
        record.update({k: c.meta.get(k, "") for k in meta_cols})
        records.append(record)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=[*BASE_COLUMNS, *labels, *meta_cols], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue().encode("utf-8")


def write_manifest(cases: Iterable[Case], path: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Write cases as a CSV (or ``.jsonl``) manifest, atomically; image paths made relative.

    Args:
        cases: the records to write.
        path: destination; image paths inside its folder are stored relative to it.
        labels: label columns in order (default: the first case's label names).

    Returns:
        ``path``.
    """
    from medmm.io.writers import atomic_write_bytes

    return atomic_write_bytes(path, manifest_bytes(cases, path, labels))
