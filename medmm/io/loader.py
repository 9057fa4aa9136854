"""`load_volume` and `list_series`: one entry point for every input a user may point at.

Dispatch: a folder → DICOM series under it (recursive); ``.nii``/``.nii.gz`` → NIfTI; a zip →
DICOM inside it (extracted safely to a temporary folder); any other file → DICOM (enhanced
multi-frame → that file; single-frame → its series from the same folder; a lone slice → error).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

from medmm.errors import MedmmInputError
from medmm.io.archive import extract_zip
from medmm.io.capture import library_warnings_deidentified
from medmm.io.dicom_header import NotDicomError, read_header
from medmm.io.dicom_volume import load_multiframe, load_series
from medmm.io.nifti import is_nifti_path, load_nifti
from medmm.io.series import Scan, SeriesInfo, choose_series, scan_files, scan_path, unique_suffixes
from medmm.io.text import safe_text
from medmm.io.volume import Volume

log = logging.getLogger("medmm.io")
_EXTRACTED_NAME = re.compile(r"(?<![\w.])\d{6}(?:\.[a-z0-9]{1,8})?(?![\w.])")  # archive._target_name


def _existing(path: str | Path) -> Path:
    if path is None or (isinstance(path, str) and not path.strip()):
        raise MedmmInputError(None, "no input path given")
    if not isinstance(path, (str, os.PathLike)):
        raise MedmmInputError(None, f"expected a file or folder path, got a {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise MedmmInputError(p, "no such file or directory")
    return p


def _is_zip(p: Path) -> bool:
    """A zip by name or by its first bytes; a file with the DICOM marker is DICOM, even if it
    also parses as a zip (a DICOM/zip polyglot must not smuggle other files in)."""
    with open(p, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return False
    return p.suffix.lower() == ".zip" or head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(p)


def load_volume(path: str | Path, series: str | None = None) -> Volume:
    """Load a CT/MR volume from a DICOM file, DICOM folder, zip of DICOM, or NIfTI file.

    Args:
        path: what the user points at.
        series: SeriesInstanceUID or a unique suffix of it, when a DICOM input holds several.

    Returns:
        A `Volume` (float32 ``(X, Y, Z)``, voxel → RAS affine, de-identified ``meta``).

    Raises:
        MedmmInputError: anything wrong with the input, in one line naming the file (no PHI).

    >>> vol = load_volume("scan_dir/")          # doctest: +SKIP
    >>> vol.array.shape, vol.spacing            # doctest: +SKIP
    ((512, 512, 200), (0.7, 0.7, 1.25))
    """
    return inspect_input(path, series, listing=False)[1]


def inspect_input(path: str | Path, series: str | None = None, listing: bool = True) -> tuple[list[SeriesInfo], Volume]:
    """The series under ``path`` (when ``listing``) and the loaded volume, reading a zip only once.

    `medmm info` needs both; extracting an archive twice would double its cost (and its risk).

    Raises:
        MedmmInputError: see `load_volume`; also an input that needs more memory than there is.
    """
    p = _existing(path)
    try:
        with library_warnings_deidentified(echo=_rewarn):
            return _inspect(p, series, listing)
    except MemoryError:
        raise MedmmInputError(p, "not enough memory to load this input (is its declared size plausible?)") from None


def _rewarn(line: str) -> None:
    import warnings

    warnings.warn(line.removeprefix("warning: "), UserWarning, stacklevel=4)


def _inspect(p: Path, series: str | None, listing: bool) -> tuple[list[SeriesInfo], Volume]:
    if p.is_dir():
        return _dicom_dir(p, series, listing=listing)
    if p.stat().st_size == 0:
        raise MedmmInputError(p, "empty file (0 bytes)")
    if is_nifti_path(p):
        return [], load_nifti(p)
    if _is_zip(p):
        return _load_zip(p, series, listing)
    infos = _infos(_scan_for_listing(p)) if listing else []
    return infos, _load_dicom_file(p, series)


def _load_dicom_dir(p: Path, series: str | None, source_format: str = "dicom") -> Volume:
    return _dicom_dir(p, series, source_format)[1]


def _dicom_dir(p: Path, series: str | None, source_format: str = "dicom",
               listing: bool = False) -> tuple[list[SeriesInfo], Volume]:
    """Scan a folder once; list its series (on request) and load the chosen one."""
    scan = scan_path(p)
    infos = _infos(scan) if listing else []
    chosen = choose_series(scan, p, series)
    return infos, load_series(chosen, p, list(scan.warnings), source_format=source_format)


def _header_or_error(p: Path):
    try:
        return read_header(p)
    except NotDicomError:
        raise MedmmInputError(
            p, "not a DICOM (no 'DICM' marker after a 128-byte preamble), NIfTI or zip file"
        ) from None


def _load_dicom_file(p: Path, series: str | None) -> Volume:
    h = _header_or_error(p)
    if h.is_dicomdir:
        return _load_dicom_dir(p.parent, series)
    if h.problem:
        raise MedmmInputError(p, h.problem)
    if not h.is_image:
        raise MedmmInputError(p, f"DICOM object without image pixel data (modality {safe_text(h.f.modality, 8)})")
    if series and not (h.series_uid == series or h.series_uid.endswith(str(series).lstrip("."))):
        raise MedmmInputError(p, f"this file is not in the requested series '{str(series)[-16:]}'")
    if h.n_frames > 1:
        return load_multiframe(h, p, [])
    scan = scan_files(sorted(f for f in p.parent.iterdir() if f.is_file()), p.parent)
    same = [s for s in scan.series if s.uid == h.series_uid]
    if not same or len(same[0].headers) < 2:
        raise MedmmInputError(
            p, "a single 2D slice; a 3D volume needs its whole series (point at the folder holding all slices)"
        )
    chosen = same[0]
    note = f"loading the whole series ({len(chosen.headers)} files) from the folder of {p.name}"
    log.info("%s: %s", p, note)
    return load_series(chosen, p, [note, *scan.warnings])


def _load_zip(p: Path, series: str | None, listing: bool = False) -> tuple[list[SeriesInfo], Volume]:
    with tempfile.TemporaryDirectory(prefix="medmm-zip-") as tmp:
        root = Path(tmp)
        members = extract_zip(p, root)
        try:
            infos, vol = _dicom_dir(root, series, source_format="dicom-zip", listing=listing)
        except MedmmInputError as err:
            raise _rebase(err, root, p, members) from None
    vol.source_files = [p / members.get(f, f.name) for f in vol.source_files]
    vol.meta["warnings"] = [_member_names(w, root, p, members) for w in vol.meta.get("warnings", [])]
    return infos, vol


def _member_names(text: str, root: Path, zip_path: Path, members: dict[Path, str]) -> str:
    """Message about the extracted copy → message about the zip (extracted names → member names)."""
    names = {target.name: member[:80] for target, member in members.items()}
    text = _EXTRACTED_NAME.sub(lambda m: names.get(m.group(0), m.group(0)), text)
    return text.replace(str(root) + "/", "").replace(str(root), zip_path.name)


def _rebase(err: MedmmInputError, root: Path, zip_path: Path, members: dict[Path, str]) -> MedmmInputError:
    """Re-issue an error about the extracted copy so that it names the zip (and member)."""
    reason = _member_names(err.reason, root, zip_path, members)
    if err.path and Path(err.path) != root:
        member = members.get(Path(err.path), Path(err.path).name)
        reason = f"member '{member[:80]}': {reason}"
    return MedmmInputError(zip_path, reason)


def _scan_for_listing(p: Path) -> Scan:
    if p.is_dir():
        return scan_path(p)
    if p.stat().st_size == 0:
        raise MedmmInputError(p, "empty file (0 bytes)")
    if is_nifti_path(p):
        raise MedmmInputError(p, "a NIfTI file holds one volume, not DICOM series")
    if _is_zip(p):
        with tempfile.TemporaryDirectory(prefix="medmm-zip-") as tmp:
            members = extract_zip(p, Path(tmp))
            try:
                return scan_path(Path(tmp))
            except MedmmInputError as err:
                raise _rebase(err, Path(tmp), p, members) from None
    h = _header_or_error(p)
    return scan_files(sorted(f for f in p.parent.iterdir() if f.is_file()), p.parent) if h.is_image else Scan([], [])


def list_series(path: str | Path) -> list[SeriesInfo]:
    """De-identified summaries of the DICOM series under ``path`` (folder, zip or one file's folder).

    Returns:
        One `SeriesInfo` per series (uid_suffix unique among them), largest first.

    Raises:
        MedmmInputError: missing path, unsafe zip, NIfTI input, corrupt DICOM header.
    """
    p = _existing(path)
    with library_warnings_deidentified(echo=_rewarn):
        return _infos(_scan_for_listing(p))


def _infos(scan: Scan) -> list[SeriesInfo]:
    suffixes = unique_suffixes(scan.series)
    infos = []
    for s, suffix in zip(scan.series, suffixes):
        info = s.info()
        infos.append(SeriesInfo(**{**info.__dict__, "uid_suffix": suffix}))
    return infos
