"""De-identified metadata for a `Volume`: an allow-list of technical attributes, nothing else.

An allow-list (not a block-list) is used on purpose: any attribute not named here — names, IDs,
dates, times, UIDs, institution, physicians, private tags — never reaches ``Volume.meta``.
"""

from __future__ import annotations

from typing import Any

from medmm.io.text import safe_text

# DICOM keyword -> meta key; values are technical, not identifying.
_TEXT = {
    "Modality": "modality",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
    "SeriesDescription": "series_description",
    "BodyPartExamined": "body_part",
    "ConvolutionKernel": "convolution_kernel",
    "PatientPosition": "patient_position",
    "PhotometricInterpretation": "photometric_interpretation",
}
_NUMBER = {
    "SliceThickness": "slice_thickness",
    "KVP": "kvp",
    "MagneticFieldStrength": "field_strength",
    "RepetitionTime": "repetition_time",
    "EchoTime": "echo_time",
}


def _first(value: Any) -> Any:
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    try:
        return list(value)[0]
    except (TypeError, IndexError):
        return value


def dicom_meta(ds, **extra: Any) -> dict[str, Any]:
    """Allow-listed technical attributes of ``ds`` plus ``extra`` (source_format, n_files ...)."""
    meta: dict[str, Any] = {}
    for keyword, key in _TEXT.items():
        value = _first(ds.get(keyword))
        if value not in (None, ""):
            meta[key] = safe_text(value, 64)
    for keyword, key in _NUMBER.items():
        try:
            value = float(_first(ds.get(keyword)))
        except (TypeError, ValueError):
            continue
        meta[key] = value
    meta.setdefault("modality", "?")
    file_meta = getattr(ds, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if ts is not None:
        meta["transfer_syntax"] = getattr(ts, "name", str(ts))
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta
