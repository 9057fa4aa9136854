"""Load NIfTI-1/2 (``.nii``, ``.nii.gz``) into a `Volume` with nibabel's voxel → RAS affine.

Affine precedence is nibabel's (``header.get_best_affine``): the sform when ``sform_code > 0``,
else the qform when ``qform_code > 0``. When both codes are 0 the file has no world orientation;
medmm then uses nibabel's fallback (pixdim scaling, centred, axes assumed RAS) and warns.

Scaling follows the NIfTI standard as nibabel implements it: ``scl_slope`` 0 or NaN means
"no scaling". medmm refuses the ambiguous ``scl_slope == 0`` with a non-zero ``scl_inter`` (the
writer clearly meant *some* scaling), infinite scaling values, and NaN/Inf voxels.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np

from medmm.errors import MedmmInputError
from medmm.io.text import short_reason
from medmm.io.volume import MAX_VOXELS, Volume

log = logging.getLogger("medmm.io")

_STREAM_CHECK_BYTES = 64 * 1024**2
_CHUNK = 4 * 1024**2


def is_nifti_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _raw_scaling(img, path: Path) -> tuple[float, float]:
    """scl_slope/scl_inter as stored on disk (nibabel resets them in ``img.header`` on load)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fobj:
        raw = type(img.header).from_fileobj(fobj, check=False)
    return float(raw["scl_slope"]), float(raw["scl_inter"])


def _check_scaling(img, path: Path) -> None:
    slope, inter = _raw_scaling(img, path)
    if np.isinf(slope) or (np.isfinite(slope) and slope != 0 and not np.isfinite(inter)):
        raise MedmmInputError(path, f"non-finite intensity scaling (scl_slope={slope}, scl_inter={inter})")
    if slope == 0 and np.isfinite(inter) and inter != 0:
        raise MedmmInputError(
            path, f"scl_slope is 0 with scl_inter={inter:g}: by the NIfTI standard this disables scaling, "
            "which the writer cannot have meant; fix the header (scl_slope=1 or NaN)",
        )


def check_declared_size(path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    """Believe the header's image size only if it is sane and the file really holds that much data.

    Checked before anything is allocated: a 350-byte header declaring 30000³ voxels must fail
    with one line, not with a MemoryError. An uncompressed file must be long enough; a gzipped
    one is stream-decompressed (nothing kept) up to the declared length when that is large.

    Raises:
        MedmmInputError: more than `MAX_VOXELS` voxels, or data shorter than declared.
    """
    n = 1
    for s in shape:
        n *= int(s)
    dims = "x".join(str(s) for s in shape)
    if n > MAX_VOXELS:
        raise MedmmInputError(path, f"NIfTI header declares {dims} = {n} voxels (limit {MAX_VOXELS}); not a plausible scan")
    needed = offset + n * dtype.itemsize
    if not path.name.lower().endswith(".gz"):
        size = path.stat().st_size
        if size < needed:
            raise MedmmInputError(path, f"truncated NIfTI: header declares {dims} voxels ({needed} bytes) but the file holds {size}")
        return
    if needed < _STREAM_CHECK_BYTES:
        return  # small: the normal read finds a truncation without a large allocation
    got = 0
    try:
        with gzip.open(path, "rb") as fh:
            while got < needed and (chunk := fh.read(min(_CHUNK, needed - got))):
                got += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
        raise MedmmInputError(path, f"truncated or corrupt NIfTI data ({short_reason(err)})") from None
    if got < needed:
        raise MedmmInputError(path, f"truncated NIfTI: header declares {dims} voxels ({needed} bytes) but the data ends after {got}")


def load_nifti(path: Path, warnings: list[str] | None = None) -> Volume:
    """Read a 3D NIfTI (a 4D one with a single volume is accepted) as float32 ``(X, Y, Z)``.

    Raises:
        MedmmInputError: unreadable/truncated file, not 3D, complex/RGB data, bad scaling,
            NaN/Inf voxels.
    """
    import nibabel as nib

    warnings = [] if warnings is None else warnings
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel: ImageFileError, HeaderDataError, EOFError, OSError ...
        raise MedmmInputError(path, f"not a readable NIfTI file ({short_reason(err)})") from None
    header = img.header
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise MedmmInputError(path, f"NIfTI image has shape {tuple(img.shape)}; medmm needs one 3D volume")
    if min(shape) < 1:
        raise MedmmInputError(path, f"NIfTI image has an empty dimension {shape}")
    dtype = header.get_data_dtype()
    if dtype.kind == "c" or dtype.names is not None:
        raise MedmmInputError(path, f"NIfTI data type {dtype} (complex/RGB) is not a scalar image")
    check_declared_size(path, shape, dtype, int(header.get_data_offset()))
    try:
        _check_scaling(img, path)
    except MedmmInputError:
        raise
    except Exception as err:
        raise MedmmInputError(path, f"unreadable NIfTI header ({type(err).__name__})") from None
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code <= 0 and qform_code <= 0:
        msg = ("NIfTI sform and qform codes are both 0 (no world orientation); using nibabel's "
               "fallback affine from pixdim with axes assumed RAS")
        warnings.append(msg)
        log.warning("%s: %s", path, msg)
    try:
        array = img.get_fdata(dtype=np.float32)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as err:
        raise MedmmInputError(path, f"truncated or corrupt NIfTI data ({short_reason(err)})") from None
    array = array.reshape(shape)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise MedmmInputError(path, f"{bad} voxel(s) are NaN or Inf after scaling; medmm needs finite intensities")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedmmInputError(path, "NIfTI affine is singular or non-finite")
    zooms = header.get_zooms()[:3]
    meta = {
        "modality": "?",
        "source_format": "nifti",
        "sform_code": sform_code,
        "qform_code": qform_code,
        "nifti_dtype": str(dtype),
        "pixdim": [float(z) for z in zooms],
        "warnings": list(warnings),
    }
    return Volume(array=array, affine=affine, meta=meta, source_files=[])
