"""Output folder policy, atomic writes, and :func:`write_outputs` (all formats for one Result)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medmm.errors import MedmmInputError
from medmm.io.writers import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)

_SUFFIXES = (".nii.gz", ".nii", ".zip", ".dcm")


def scan_name(path: str | Path) -> str:
    """Folder-safe name of a scan from its path: the file/folder name without image suffixes.

    >>> scan_name("/data/case_07.nii.gz")
    'case_07'
    """
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "scan"
    return name


def default_out_dir(path: str | Path) -> Path:
    """``./medmm_out/<scan name>`` under the current working directory."""
    return Path.cwd() / "medmm_out" / scan_name(path)


def check_out_dir(out_dir: str | Path, input_path: str | Path | None) -> Path:
    """Refuse an output folder inside the input: a DICOM folder, or the folder holding an input file.

    Writing next to DICOM files would change what the next ``load_volume`` of that folder sees,
    and results must never mix with source data.

    Raises:
        MedmmInputError: ``out_dir`` is inside (or equal to) the input folder.
    """
    out = Path(out_dir).resolve()
    blocking = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise MedmmInputError(out_dir, f"cannot write outputs here: {blocking.name} is a file, not a folder")
    if input_path is None:
        return out
    src = Path(input_path).resolve()
    if src.is_dir():
        if out == src or src in out.parents:
            raise MedmmInputError(out_dir, "output folder is inside the input folder; pass --out somewhere else")
    elif out == src.parent:
        raise MedmmInputError(out_dir, "output folder is the input file's folder; pass --out to a separate folder")
    return out


def write_outputs(
    result: Any,
    out_dir: str | Path,
    input_path: str | Path | None = None,
    html: bool = True,
    dicom_sr: bool = False,
    fhir: bool = False,
    keep_phi: bool = False,
) -> dict[str, Path]:
    """Write ``result.json`` (always), ``report.html``, ``report_sr.dcm`` and ``fhir.json`` on request.

    ``result.json`` is written last, so its presence marks a finished scan (batch resume).

    Args:
        result: the :class:`~medmm.inference.Result`.
        out_dir: target folder (created).
        input_path: the scanned path, to refuse writing inside it.
        html: write the self-contained HTML report.
        dicom_sr: write a DICOM Comprehensive 3D SR (needs a DICOM input).
        fhir: write a FHIR R4 Bundle (DiagnosticReport + Observations).
        keep_phi: copy the source patient/study identity into the SR (off: de-identified SR).

    Returns:
        Format name → written path.

    Raises:
        MedmmInputError: bad output folder; SR requested for a non-DICOM input.
    """
    out = check_out_dir(out_dir, input_path)
    try:
        return _write_all(result, out, html, dicom_sr, fhir, keep_phi)
    except OSError as err:  # disk full, permissions...: one line naming the folder (atomic: no partial file)
        raise MedmmInputError(out_dir, f"cannot write outputs ({err.strerror or type(err).__name__})") from None


def _write_all(result: Any, out: Path, html: bool, dicom_sr: bool, fhir: bool, keep_phi: bool) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if dicom_sr:
        from medmm.inference.writers.dicom_sr import write_dicom_sr

        written["dicom_sr"] = write_dicom_sr(result, out / "report_sr.dcm", keep_phi=keep_phi)
    if fhir:
        from medmm.inference.writers.fhir import write_fhir

        written["fhir"] = write_fhir(result, out / "fhir.json")
    if html:
        from medmm.inference.writers.html import write_html

        written["html"] = write_html(result, out / "report.html")
    written["json"] = atomic_write_text(out / "result.json", result.to_json())
    return written
