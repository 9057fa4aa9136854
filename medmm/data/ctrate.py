"""CT-RATE adapter: the public CT-RATE release (NIfTI volumes + labels CSV + reports CSV) as `Case`s.

CT-RATE names volumes ``<split>_<patient>_<scan>_<reconstruction>.nii.gz`` (e.g.
``train_1_a_1.nii.gz``: patient 1, scan a, reconstruction 1) and stores them nested as
``<split>_<patient>/<split>_<patient>_<scan>/<name>``. The patient id is taken from the name so
splits stay patient-level (several scans and reconstructions share one patient).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from medmm.data.case import SPLITS, Case
from medmm.data.manifest import _parse_label
from medmm.errors import MedmmInputError
from medmm.labels import CT_RATE_FINDINGS

log = logging.getLogger(__name__)

VOLUME_NAME = re.compile(r"^(?P<split>[a-z]+)_(?P<patient>\d+)_(?P<scan>[a-z]+)_(?P<recon>\d+)(?P<ext>\.nii(\.gz)?)?$")
REPORT_COLUMNS: tuple[str, ...] = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
DEFAULT_SPLIT_MAP: dict[str, str] = {"train": "train", "valid": "test"}  # CT-RATE "valid" = published test set


def parse_volume_name(name: str) -> dict[str, str]:
    """Split a CT-RATE volume name into ``split, patient_id, scan_id, recon``.

    >>> parse_volume_name("train_12_b_2.nii.gz")["patient_id"]
    'train_12'
    """
    m = VOLUME_NAME.match(Path(name).name)
    if m is None:
        raise ValueError(f"not a CT-RATE volume name: {name!r}")
    split, patient, scan = m["split"], m["patient"], m["scan"]
    return {
        "split": split,
        "patient_id": f"{split}_{patient}",
        "scan_id": f"{split}_{patient}_{scan}",
        "recon": m["recon"],
        "stem": f"{split}_{patient}_{scan}_{m['recon']}",
    }


def volume_path(volumes_dir: Path, name: str) -> Path | None:
    """Where a volume lives: CT-RATE's nested layout first, then directly in ``volumes_dir``."""
    parts = parse_volume_name(name)
    stem = parts["stem"]
    for folder in (volumes_dir / parts["patient_id"] / parts["scan_id"], volumes_dir):
        for ext in (".nii.gz", ".nii"):
            candidate = folder / f"{stem}{ext}"
            if candidate.exists():
                return candidate
    return None


def _read_csv(path: Path, required: Sequence[str]) -> dict[str, dict[str, str]]:
    """Rows keyed by VolumeName; checks the required columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            missing = [c for c in required if c not in columns]
            if missing:
                raise MedmmInputError(path, f"missing column(s): {', '.join(missing)}")
            rows: dict[str, dict[str, str]] = {}
            for row in reader:
                name = (row.get("VolumeName") or "").strip()
                if not name:
                    raise MedmmInputError(path, f"line {reader.line_num}: empty VolumeName")
                try:
                    parse_volume_name(name)
                except ValueError:
                    raise MedmmInputError(path, f"line {reader.line_num}: VolumeName {name!r} is not like train_1_a_1.nii.gz") from None
                rows[name] = {**row, "_line": str(reader.line_num)}
            return rows
    except FileNotFoundError:
        raise MedmmInputError(path, "file not found") from None


def _report(row: Mapping[str, str]) -> str | None:
    findings = (row.get("Findings_EN") or "").strip()
    impression = (row.get("Impressions_EN") or "").strip()
    parts = [f"FINDINGS: {findings}" if findings else "", f"IMPRESSION: {impression}" if impression else ""]
    text = "\n\n".join(p for p in parts if p)
    return text or None


def read_ctrate(
    volumes_dir: str | Path,
    labels_csv: str | Path | None,
    reports_csv: str | Path | None,
    *,
    labels: Sequence[str] = CT_RATE_FINDINGS,
    labeler: Callable[[str], dict[str, int]] | None = None,
    split_map: Mapping[str, str] | None = None,
    missing: str = "error",
) -> list[Case]:
    """Read the CT-RATE layout into cases.

    Args:
        volumes_dir: folder holding ``train_1/train_1_a/train_1_a_1.nii.gz`` ... (or the files flat).
        labels_csv: CT-RATE multi-abnormality labels CSV (``VolumeName`` + one column per finding);
            None to derive labels from the reports with ``labeler``.
        reports_csv: CT-RATE reports CSV (``VolumeName, ClinicalInformation_EN, Technique_EN,
            Findings_EN, Impressions_EN``) or None.
        labels: finding columns to read (exact names).
        labeler: callable report -> {label: 0/1}, used when ``labels_csv`` is None.
        split_map: CT-RATE name prefix -> medmm split (default train -> train, valid -> test).
        missing: ``"error"`` or ``"skip"`` for listed volumes absent from ``volumes_dir``
            (a partial download).

    Returns:
        One case per volume (reconstructions are separate cases of the same patient), sorted
        by volume name; ``report`` = FINDINGS + IMPRESSION, ``indication`` = clinical information.

    Raises:
        MedmmInputError: missing files/columns, bad names or label values, nothing to label with.
    """
    volumes_dir = Path(volumes_dir)
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    if not volumes_dir.is_dir():
        raise MedmmInputError(volumes_dir, "CT-RATE volumes folder not found")
    if labels_csv is None and (labeler is None or reports_csv is None):
        raise MedmmInputError(volumes_dir, "no labels CSV: give reports_csv and a labeler to derive labels from reports")
    split_map = dict(DEFAULT_SPLIT_MAP if split_map is None else split_map)
    label_rows = _read_csv(Path(labels_csv), ["VolumeName", *labels]) if labels_csv is not None else {}
    report_rows = _read_csv(Path(reports_csv), REPORT_COLUMNS) if reports_csv is not None else {}
    names = sorted(label_rows or report_rows)
    cases, skipped = [], 0
    for name in names:
        parts = parse_volume_name(name)
        image = volume_path(volumes_dir, name)
        if image is None:
            if missing == "skip":
                skipped += 1
                continue
            raise MedmmInputError(volumes_dir, f"volume {name} listed in the CSV is missing")
        rrow = report_rows.get(name, {})
        report = _report(rrow)
        if label_rows:
            row = label_rows[name]
            values = {}
            for label in labels:
                value = _parse_label(row.get(label))
                if value is None:
                    raise MedmmInputError(labels_csv, f"line {row['_line']} ({name}): label {label!r} has value {row.get(label)!r}")
                values[label] = value
        else:
            if report is None:
                raise MedmmInputError(reports_csv, f"{name}: empty report, cannot derive labels")
            derived = labeler(report)
            values = {label: int(derived.get(label, 0)) for label in labels}
        split = split_map.get(parts["split"])
        if split is not None and split not in SPLITS:
            raise ValueError(f"split_map maps {parts['split']!r} to {split!r}, not one of {SPLITS}")
        technique = (rrow.get("Technique_EN") or "").strip()
        cases.append(
            Case(
                case_id=parts["stem"],
                patient_id=parts["patient_id"],
                image=str(image),
                report=report,
                indication=(rrow.get("ClinicalInformation_EN") or "").strip() or None,
                labels=values,
                split=split,
                meta={"technique": technique} if technique else {},
            )
        )
    if skipped:
        log.warning("%s: %d listed volume(s) not found, skipped", volumes_dir, skipped)
    if not cases:
        raise MedmmInputError(volumes_dir, "no CT-RATE volumes found for the CSV rows")
    return cases
