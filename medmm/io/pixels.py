"""Decode DICOM pixel data into stored values, strictly, and turn them into HU.

Uncompressed little-endian pixel data is read straight from the file at the offset found while
reading the header (``np.frombuffer`` on the element's bytes: one read, no pydicom parse of the
whole file, no extra copy). Everything else (compressed transfer syntaxes, big endian, odd bit
depths) goes through pydicom's decoders. The declared size is checked against the file *before*
anything is allocated, so a header claiming 65535×65535 pixels in a 1 kB file fails at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medmm.errors import MedmmInputError
from medmm.io.dicom_header import SliceHeader

log = logging.getLogger("medmm.io")

CODECS_HINT = (
    "pip install 'medmm[codecs]' (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls)"
)
# Upper bound on one file's decoded pixel data; beyond this the header is not believed.
MAX_DECODED_BYTES = 8 * 1024**3
# Lossless codecs on CT reach ~3-10x; far beyond this a small file cannot hold the declared image.
MAX_COMPRESSION_RATIO = 1000
_NATIVE_LE = {"1.2.840.10008.1.2": False, "1.2.840.10008.1.2.1": True}  # uid -> explicit VR
_COLOUR = ("RGB", "YBR", "PALETTE")


def _int(ds, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise KeyError(keyword)
        return default
    return int(value)


def check_greyscale(h: SliceHeader) -> None:
    """Refuse colour images (CT/MR models take one greyscale channel)."""
    ds = h.ds
    spp = _int(ds, "SamplesPerPixel", 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if spp != 1 or photometric.startswith(_COLOUR):
        raise MedmmInputError(
            h.path, f"colour image ({photometric}, {spp} samples per pixel); CT/MR volumes must be greyscale"
        )


def expected_nbytes(h: SliceHeader) -> int:
    """Bytes the uncompressed pixel data must hold: frames × rows × columns × bytes per sample."""
    ds = h.ds
    try:
        rows, cols, bits = _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "BitsAllocated")
    except (KeyError, TypeError, ValueError):
        raise MedmmInputError(h.path, "image header lacks valid Rows/Columns/BitsAllocated") from None
    if rows <= 0 or cols <= 0 or bits not in (1, 8, 16, 32, 64):
        raise MedmmInputError(h.path, f"invalid image size {rows}x{cols} with BitsAllocated={bits}")
    n = rows * cols * h.n_frames * _int(ds, "SamplesPerPixel", 1)
    return (n + 7) // 8 if bits == 1 else n * bits // 8


def _transfer_syntax(h: SliceHeader) -> str:
    meta = getattr(h.ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def check_pixel_size(h: SliceHeader) -> int:
    """Check the declared pixel data size against the file before anything is allocated.

    Returns:
        the expected uncompressed byte count.

    Raises:
        MedmmInputError: no pixel data, colour, implausible size, or a file too small to hold it.
    """
    if h.pixel_offset is None:
        raise MedmmInputError(h.path, "DICOM file has no pixel data")
    check_greyscale(h)
    nbytes = expected_nbytes(h)
    dims = f"{h.ds.Rows}x{h.ds.Columns}x{h.n_frames} frame(s)"
    if nbytes > MAX_DECODED_BYTES:
        raise MedmmInputError(h.path, f"declared image size ({dims}) is implausibly large")
    available = max(0, h.file_size - h.pixel_offset)
    if _transfer_syntax(h) in _NATIVE_LE:
        if available < nbytes:
            raise MedmmInputError(
                h.path, f"truncated pixel data: file holds {available} bytes after the pixel data tag, "
                f"{nbytes} needed for {dims}",
            )
    elif nbytes > MAX_COMPRESSION_RATIO * max(available, 1) and nbytes > 64 * 1024**2:
        raise MedmmInputError(
            h.path, f"declared image size ({dims}, {nbytes} bytes) cannot come from {available} bytes of compressed data"
        )
    return nbytes


def read_stored(h: SliceHeader) -> np.ndarray:
    """Stored pixel values of one file as ``(frames, rows, columns)`` (no rescale yet).

    Raises:
        MedmmInputError: colour, truncated or oversized pixel data, missing codec, decode failure.
    """
    nbytes = check_pixel_size(h)
    ts = _transfer_syntax(h)
    bits = _int(h.ds, "BitsAllocated")
    if ts in _NATIVE_LE and bits in (8, 16, 32):
        stored = _read_native(h, nbytes, explicit=_NATIVE_LE[ts], bits=bits)
    else:
        stored = _read_with_pydicom(h, ts, nbytes)
    return _mask_stored_bits(h, stored)


def _read_native(h: SliceHeader, nbytes: int, *, explicit: bool, bits: int) -> np.ndarray:
    with open(h.path, "rb") as fp:
        fp.seek(h.pixel_offset)
        head = fp.read(12 if explicit else 8)
        length = int.from_bytes(head[8:12] if explicit else head[4:8], "little")
        if len(head) < (12 if explicit else 8) or length == 0xFFFFFFFF:
            raise MedmmInputError(h.path, "malformed pixel data element for an uncompressed transfer syntax")
        if length < nbytes:
            raise MedmmInputError(
                h.path, f"truncated pixel data: element holds {length} bytes, {nbytes} needed"
            )
        if explicit:
            fp.seek(h.pixel_offset + 12)
        buf = fp.read(nbytes)
    if len(buf) < nbytes:
        raise MedmmInputError(h.path, f"truncated pixel data: file ends after {len(buf)} of {nbytes} bytes")
    signed = _int(h.ds, "PixelRepresentation", 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    return np.frombuffer(buf, dtype=dtype).reshape(h.n_frames, int(h.ds.Rows), int(h.ds.Columns))


def _read_with_pydicom(h: SliceHeader, ts: str, nbytes: int) -> np.ndarray:
    import pydicom
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(ts) if ts else None
    if uid is not None and uid.is_compressed:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise MedmmInputError(h.path, f"unsupported transfer syntax {uid.name}") from None
        if not decoder.is_available:
            raise MedmmInputError(h.path, f"pixel data is compressed ({uid.name}) and no decoder is installed: {CODECS_HINT}")
    try:
        ds = pydicom.dcmread(h.path)
        if uid is not None and not uid.is_compressed and len(ds.PixelData) < nbytes:
            raise MedmmInputError(h.path, f"truncated pixel data: {len(ds.PixelData)} of {nbytes} bytes")
        arr = ds.pixel_array
    except MedmmInputError:
        raise
    except Exception as err:  # decoders raise many types (RuntimeError, ValueError, struct.error ...)
        raise MedmmInputError(h.path, f"cannot decode pixel data ({type(err).__name__}: {_short(err)})") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (int(h.ds.Rows), int(h.ds.Columns)):
        raise MedmmInputError(h.path, f"decoded pixel data has unexpected shape {arr.shape}")
    return arr


def _short(err: Exception, n: int = 120) -> str:
    text = " ".join(str(err).split())
    return text[:n] + ("..." if len(text) > n else "")


def _mask_stored_bits(h: SliceHeader, stored: np.ndarray) -> np.ndarray:
    """Keep only BitsStored bits (sign-extended when signed): high bits may hold overlays."""
    bits, bs = stored.dtype.itemsize * 8, _int(h.ds, "BitsStored", stored.dtype.itemsize * 8)
    if stored.dtype.kind not in "iu" or not 0 < bs < bits:
        return stored
    if stored.dtype.kind == "u":
        return stored & np.array((1 << bs) - 1, dtype=stored.dtype)
    shift = bits - bs
    return (stored << shift) >> shift


def rescale_params(ds, path: Path) -> tuple[float, float]:
    """(slope, intercept) of the Modality LUT rescale; (1, 0) when absent.

    Raises:
        MedmmInputError: slope zero or non-finite, intercept non-finite.
    """
    try:
        slope = float(ds.get("RescaleSlope", 1.0) if ds.get("RescaleSlope", None) not in (None, "") else 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) if ds.get("RescaleIntercept", None) not in (None, "") else 0.0)
    except (TypeError, ValueError):
        raise MedmmInputError(path, "unreadable RescaleSlope/RescaleIntercept") from None
    if not np.isfinite(slope) or slope == 0 or not np.isfinite(intercept):
        raise MedmmInputError(path, f"invalid rescale (slope {slope}, intercept {intercept})")
    return slope, intercept


def invert_monochrome1(stored: np.ndarray, ds) -> np.ndarray:
    """Invert MONOCHROME1 stored values over the full BitsStored range (not per-slice min/max).

    Using the fixed range keeps every slice of a series on the same scale.
    """
    bs = _int(ds, "BitsStored", stored.dtype.itemsize * 8)
    if stored.dtype.kind == "u" or _int(ds, "PixelRepresentation", 0) == 0:
        top = (1 << bs) - 1
        return (top - stored.astype(np.int64)).astype(np.float32)
    return (-1 - stored.astype(np.int64)).astype(np.float32)


def needs_inversion(ds) -> bool:
    """MONOCHROME1 is inverted for non-CT data only.

    For CT the Modality LUT (rescale) defines Hounsfield units, a physical quantity; the standard
    makes MONOCHROME1 a *display* instruction applied after the VOI LUT, so HU are left unchanged.
    For MR/other modalities values have no physical unit and are inverted so that bright means
    high signal, as in MONOCHROME2.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    return photometric == "MONOCHROME1" and str(ds.get("Modality", "")).upper() != "CT"


def to_float(stored: np.ndarray, ds, slope: float, intercept: float, out: np.ndarray | None = None) -> np.ndarray:
    """Apply MONOCHROME1 inversion (non-CT) and the rescale, exactly once, into float32."""
    values = invert_monochrome1(stored, ds) if needs_inversion(ds) else stored
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    np.multiply(values, np.float32(slope), out=out, casting="unsafe")
    out += np.float32(intercept)
    return out


def decode_file(path: str | Path) -> np.ndarray:
    """Decode every frame of one DICOM file to float32 ``(frames, rows, columns)`` (rescaled).

    Uses the top-level rescale, or the per-frame functional groups of an enhanced multi-frame file.

    Raises:
        MedmmInputError: not DICOM, colour, truncated, missing codec, invalid rescale.
    """
    from medmm.io.dicom_header import NotDicomError, read_header
    from medmm.io.multiframe import frame_rescale

    path = Path(path)
    try:
        h = read_header(path)
    except NotDicomError:
        raise MedmmInputError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    stored = read_stored(h)
    slopes, intercepts = frame_rescale(h)
    out = np.empty(stored.shape, dtype=np.float32)
    for f in range(stored.shape[0]):
        to_float(stored[f], h.ds, slopes[f], intercepts[f], out=out[f])
    return out
