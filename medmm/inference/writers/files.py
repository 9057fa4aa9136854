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
    and results must never mix with source data. A single DICOM file stands for its whole series
    (its folder is read), so for such an input no folder at or below the file's folder is allowed.

    Raises:
        MedmmInputError: ``out_dir`` is inside (or equal to) the input folder, or is a file.
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
    elif src.parent in out.parents and _is_series_file(src):
        raise MedmmInputError(
            out_dir, "output folder is inside the input series' folder (a DICOM file is read with its whole "
            "series); pass --out somewhere else",
        )
    return out


def _is_series_file(src: Path) -> bool:
    """A single DICOM file (not NIfTI, not a zip): medmm loads its whole folder."""
    from medmm.io.nifti import is_nifti_path

    if is_nifti_path(src) or src.suffix.lower() in (".zip", ".csv", ".jsonl"):
        return False
    try:
        with open(src, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # unreadable: be strict
    return not head.startswith(b"PK\x03\x04") or head[128:132] == b"DICM"


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

    The set is written all-or-nothing into a locked folder, replacing (and removing the stale
    files of) any previous set: see :mod:`medmm.inference.writers.outfolder`. ``result.json``
    is put in place last, so its presence marks a finished scan (batch resume).

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
    from medmm.inference.writers.outfolder import OutputFolder

    with OutputFolder(out_dir, input_path, dicom_sr=dicom_sr) as folder:
        return write_into(folder, result, html=html, dicom_sr=dicom_sr, fhir=fhir, keep_phi=keep_phi)


def write_into(folder: Any, result: Any, **formats: bool) -> dict[str, Path]:
    """:meth:`OutputFolder.write` with disk errors turned into one line naming the folder."""
    from medmm.io.capture import library_warnings_deidentified

    try:
        with library_warnings_deidentified():
            return folder.write(result, json_writer=lambda p, text: atomic_write_text(p, text), **formats)
    except OSError as err:  # disk full, permissions...: one line naming the folder (atomic: no partial set)
        raise MedmmInputError(folder.out_dir, f"cannot write outputs ({err.strerror or type(err).__name__})") from None
