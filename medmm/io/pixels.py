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
from medmm.io.dicom_header import ImageFields, SliceHeader
from medmm.io.text import short_reason

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
_PIXEL_VRS = (b"OB", b"OW", b"UN")


def check_greyscale(h: SliceHeader) -> None:
    """Refuse colour images (CT/MR models take one greyscale channel)."""
    f = h.f
    if f.samples_per_pixel != 1 or f.photometric.startswith(_COLOUR):
        raise MedmmInputError(
            h.path, f"colour image ({f.photometric}, {f.samples_per_pixel} samples per pixel); "
            "CT/MR volumes must be greyscale",
        )


def expected_nbytes(h: SliceHeader) -> int:
    """Bytes the uncompressed pixel data must hold: frames × rows × columns × bytes per sample."""
    rows, cols, bits = h.f.rows, h.f.columns, h.f.bits_allocated
    if rows is None or cols is None or bits is None:
        raise MedmmInputError(h.path, "image header lacks valid Rows/Columns/BitsAllocated")
    if rows <= 0 or cols <= 0 or bits not in (1, 8, 16, 32, 64):
        raise MedmmInputError(h.path, f"invalid image size {rows}x{cols} with BitsAllocated={bits}")
    n = rows * cols * h.n_frames * h.f.samples_per_pixel
    return (n + 7) // 8 if bits == 1 else n * bits // 8


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
    dims = f"{h.f.rows}x{h.f.columns}x{h.n_frames} frame(s)"
    if nbytes > MAX_DECODED_BYTES:
        raise MedmmInputError(h.path, f"declared image size ({dims}) is implausibly large")
    available = max(0, h.file_size - h.pixel_offset)
    if h.f.transfer_syntax in _NATIVE_LE:
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
    ts, bits = h.f.transfer_syntax, h.f.bits_allocated
    if ts in _NATIVE_LE and bits in (8, 16, 32):
        stored = _read_native(h, nbytes, explicit=_NATIVE_LE[ts], bits=bits)
    else:
        stored = _read_with_pydicom(h, ts, nbytes)
    return _mask_stored_bits(h, stored)


def _read_native(h: SliceHeader, nbytes: int, *, explicit: bool, bits: int) -> np.ndarray:
    """Read uncompressed little-endian pixel data straight from the file (one read, no copy).

    The element header is tag + VR + 2 reserved + 4-byte length (explicit VR) or tag + 4-byte
    length (implicit VR). Files labelled explicit but written implicit exist (pydicom warns
    about them); the VR bytes decide, as in pydicom, so the data never starts 4 bytes off.
    """
    with open(h.path, "rb") as fp:
        fp.seek(h.pixel_offset)
        head = fp.read(12)
        if len(head) < 12:
            raise MedmmInputError(h.path, "truncated pixel data element")
        if explicit and head[4:6] in _PIXEL_VRS and head[6:8] == b"\0\0":
            start, length = 12, int.from_bytes(head[8:12], "little")
        else:
            start, length = 8, int.from_bytes(head[4:8], "little")
        if length == 0xFFFFFFFF:
            raise MedmmInputError(h.path, "malformed pixel data element for an uncompressed transfer syntax")
        if length < nbytes:
            raise MedmmInputError(h.path, f"truncated pixel data: element holds {length} bytes, {nbytes} needed")
        fp.seek(h.pixel_offset + start)
        buf = fp.read(nbytes)
    if len(buf) < nbytes:
        raise MedmmInputError(h.path, f"truncated pixel data: file ends after {len(buf)} of {nbytes} bytes")
    dtype = np.dtype(f"<{'i' if h.f.pixel_representation == 1 else 'u'}{bits // 8}")
    return np.frombuffer(buf, dtype=dtype).reshape(h.n_frames, h.f.rows, h.f.columns)


def _read_with_pydicom(h: SliceHeader, ts: str, nbytes: int) -> np.ndarray:
    """Decode compressed / big-endian / odd-depth pixel data with pydicom's decoders."""
    import pydicom
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(ts) if ts else None
    try:
        compressed = uid is not None and uid.is_compressed
    except ValueError:  # pydicom: "UID is not a transfer syntax" (damaged file meta header)
        raise MedmmInputError(h.path, "the file meta header names no known transfer syntax") from None
    if compressed:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise MedmmInputError(h.path, f"unsupported transfer syntax {uid.name}") from None
        if not decoder.is_available:
            raise MedmmInputError(h.path, f"pixel data is compressed ({uid.name}) and no decoder is installed: {CODECS_HINT}")
    try:
        ds = pydicom.dcmread(h.path)
        if uid is not None and not compressed and len(ds.PixelData) < nbytes:
            raise MedmmInputError(h.path, f"truncated pixel data: {len(ds.PixelData)} of {nbytes} bytes")
        arr = np.asarray(ds.pixel_array)
    except MedmmInputError:
        raise
    except Exception as err:  # decoders raise many types (RuntimeError, ValueError, struct.error ...)
        raise MedmmInputError(h.path, f"cannot decode pixel data ({short_reason(err)})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (h.f.rows, h.f.columns):
        raise MedmmInputError(h.path, f"decoded pixel data has unexpected shape {arr.shape}")
    return arr


def _mask_stored_bits(h: SliceHeader, stored: np.ndarray) -> np.ndarray:
    """Keep only BitsStored bits (sign-extended when signed): high bits may hold overlays."""
    bits = stored.dtype.itemsize * 8
    bs = h.f.bits_stored or bits
    if stored.dtype.kind not in "iu" or not 0 < bs < bits:
        return stored
    if stored.dtype.kind == "u":
        return stored & np.array((1 << bs) - 1, dtype=stored.dtype)
    shift = bits - bs
    return (stored << shift) >> shift


# Extended CT scales (e.g. Siemens extended HU) reach 30710 HU; no CT value lies beyond.
CT_MAX_HU = 30710.0
CT_MIN_HU = -10240.0
SIGNED_MISREAD_NOTE = (
    "PixelRepresentation says unsigned, but stored values with the sign bit set would be above "
    f"{CT_MAX_HU:.0f} HU (beyond any CT scale) while as two's complement they are ordinary CT "
    "numbers; read them as signed"
)


def signed_misread(stored: np.ndarray, f: ImageFields, slope: float, intercept: float) -> bool:
    """True when CT pixels labelled unsigned (PixelRepresentation 0) are really two's complement.

    Some exporters write int16 CT numbers (air = -1000 with intercept 0) but declare
    PixelRepresentation 0, so air reads as 64536 and the rescale gives +64536 HU. Only values
    with the sign bit (bit BitsStored-1) set differ between the two readings, so the question is
    whether *those* values are possible as unsigned: a CT number above `CT_MAX_HU` is not, on any
    scanner. The signed reading is chosen only if it puts every such value inside the CT scale;
    otherwise the data are left as declared (and the plausibility gate judges them). Deciding per
    slice is consistent: a slice without sign-bit values reads the same both ways.
    """
    if f.modality != "CT" or f.pixel_representation != 0 or stored.dtype.kind != "u" or stored.size == 0:
        return False
    bits = f.bits_stored or stored.dtype.itemsize * 8
    sign = 1 << (bits - 1)
    top = int(stored.max())
    if top < sign:
        return False
    as_unsigned = sorted((top * slope + intercept, sign * slope + intercept))
    if as_unsigned[1] <= CT_MAX_HU:
        return False  # the largest reading is still a possible CT number: believe the header
    low = int(stored[stored >= sign].min())
    as_signed = [(v - (1 << bits)) * slope + intercept for v in (low, top)]
    return all(CT_MIN_HU <= v <= CT_MAX_HU for v in as_signed)


def to_signed(stored: np.ndarray, f: ImageFields) -> np.ndarray:
    """Two's-complement reading of unsigned stored values over BitsStored bits (int32)."""
    bits = f.bits_stored or stored.dtype.itemsize * 8
    out = stored.astype(np.int32)
    out[out >= (1 << (bits - 1))] -= 1 << bits
    return out


def rescale_params(slope, intercept, path: Path) -> tuple[float, float]:
    """(slope, intercept) of the Modality LUT rescale as floats; missing values mean (1, 0).

    Args:
        slope, intercept: header values (text, number or None).

    Raises:
        MedmmInputError: unreadable, slope zero or non-finite, intercept non-finite.
    """
    try:
        slope = 1.0 if slope in (None, "") else float(slope)
        intercept = 0.0 if intercept in (None, "") else float(intercept)
    except (TypeError, ValueError):
        raise MedmmInputError(path, "unreadable RescaleSlope/RescaleIntercept") from None
    if not np.isfinite(slope) or slope == 0 or not np.isfinite(intercept):
        raise MedmmInputError(path, f"invalid rescale (slope {slope}, intercept {intercept})")
    return slope, intercept


def needs_inversion(f: ImageFields) -> bool:
    """MONOCHROME1 is inverted for non-CT data only.

    For CT the Modality LUT (rescale) defines Hounsfield units, a physical quantity; the standard
    makes MONOCHROME1 a *display* instruction applied after the VOI LUT, so HU are left unchanged.
    For MR/other modalities values have no physical unit and are inverted so that bright means
    high signal, as in MONOCHROME2.
    """
    return f.photometric == "MONOCHROME1" and f.modality != "CT"


def invert_monochrome1(stored: np.ndarray, f: ImageFields) -> np.ndarray:
    """Invert MONOCHROME1 stored values over the full BitsStored range (not per-slice min/max).

    Using the fixed range keeps every slice of a series on the same scale.
    """
    bs = f.bits_stored or stored.dtype.itemsize * 8
    if stored.dtype.kind == "u" or f.pixel_representation == 0:
        return ((1 << bs) - 1 - stored.astype(np.int64)).astype(np.float32)
    return (-1 - stored.astype(np.int64)).astype(np.float32)


def to_float(stored: np.ndarray, f: ImageFields, slope: float, intercept: float,
             out: np.ndarray | None = None) -> np.ndarray:
    """Apply MONOCHROME1 inversion (non-CT) and the rescale, exactly once, into float32."""
    values = invert_monochrome1(stored, f) if needs_inversion(f) else stored
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    if slope == 1.0:  # the common CT case: one pass instead of two
        np.add(values, np.float32(intercept), out=out, casting="unsafe")
        return out
    np.multiply(values, np.float32(slope), out=out, casting="unsafe")
    out += np.float32(intercept)
    return out
