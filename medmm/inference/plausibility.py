"""Input plausibility gate: is this volume something a chest-CT model can honestly diagnose?

A model returns probabilities for *any* array, so an MR series, a PET series, an all-zero volume,
one 2D slice or data misread as unsigned (air at +64536 HU) would get a confident, meaningless
diagnosis. Before the model runs, :func:`check_input` compares facts of the loaded volume with
the reference of what the model was trained on (:func:`training_reference`):

* **refused** (``MedmmInputError``, CLI exit 2) when clearly impossible: a modality other than
  CT; fewer than `MIN_AXIS_VOXELS` voxels along an axis (not 3D); a thin rod (e.g. 1000 slices
  of 8x8); one value everywhere (no image); values outside every CT scale (-10240..30710 HU)
  in more than 1 % of voxels; no air at all (a chest CT always shows lungs or air around the
  body) or nothing denser than fat (no body in view).
* **warned** when doubtful: field of view or covered length far from a chest, very few slices,
  odd spacing, air/body/bone fractions outside the reference ranges, many voxels above the
  standard CT range. Warnings go into ``result.json`` (``warnings``), the HTML, the FHIR
  bundle, the SR and stderr.

``force=True`` (``--force``) diagnoses refused input anyway; the refusal reasons become warnings.
Fractions are computed on a strided subsample (at most ~2 M voxels), so the gate costs
milliseconds even for a 512 x 512 x 600 scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from medmm.errors import MedmmInputError

# Extended CT scales (e.g. Siemens "extended HU") span -10240..30710 HU; nothing real lies outside.
CT_SCALE = (-10240.0, 30710.0)
STANDARD_CT = (-1024.0, 3071.0)  # the 12-bit scale nearly every CT uses
MIN_AXIS_VOXELS = 4  # a "volume" thinner than this is a 2D image (same bound as a DICOM series)
ROD_RATIO = 20.0  # longest / second-longest physical extent; a whole-body CT is about 4
_SAMPLE_VOXELS = 2_000_000
_MODALITY_UNKNOWN = ("?", "", "OT")  # NIfTI carries no modality; OT = "other" (secondary capture)


@dataclass(frozen=True)
class InputReference:
    """What the training inputs looked like (ranges a plausible input falls into).

    Defaults are CT physics and chest anatomy; a run directory's ``reference`` profile (input
    statistics of its training set, see `training_reference`) overrides them field by field.
    """

    modality: str = "CT"
    air_fraction: tuple[float, float] = (0.02, 0.97)  # voxels below -400 HU: lungs + outside air
    body_fraction: tuple[float, float] = (0.03, 0.98)  # voxels at or above -300 HU: soft tissue + bone
    bone_fraction_max: float = 0.35  # voxels above 300 HU
    above_standard_max: float = 0.01  # voxels above 3071 HU (metal is far rarer)
    inplane_fov_mm: tuple[float, float] = (150.0, 700.0)
    length_mm: tuple[float, float] = (50.0, 2000.0)
    min_slices: int = 16
    spacing_mm: tuple[float, float] = (0.1, 20.0)


def training_reference(meta: Any) -> InputReference:
    """The plausibility reference of a run: CT-physics defaults, refined by the run's reference.

    ``meta`` is the run's `RunMeta` (or its ``medmm.json`` dict). Its ``reference.input_hu``
    profile (HU quantiles of the training inputs, written by ``training/reference.py``) sets the
    air and body fraction ranges around the training set's own fractions; a ``reference`` dict
    may also name `InputReference` fields directly (bad values fall back to the default). A run
    without a profile gets the defaults.
    """
    stored = _reference_dict(meta)
    if not stored:
        return InputReference()
    default = InputReference()
    values: dict[str, Any] = {}
    hu = stored.get("input_hu") if isinstance(stored.get("input_hu"), dict) else None
    if hu and isinstance(hu.get("quantiles"), dict):
        air = _cdf(hu["quantiles"], -400.0)
        body = None if air is None else 1.0 - (_cdf(hu["quantiles"], -300.0) or 0.0)
        if air is not None and body is not None:
            values["air_fraction"] = _band(air)
            values["body_fraction"] = _band(body)
    for f in fields(InputReference):
        if f.name not in stored:
            continue
        value, fallback = stored[f.name], getattr(default, f.name)
        try:
            if isinstance(fallback, tuple):
                value = tuple(float(v) for v in value)
                ok = len(value) == 2 and all(math.isfinite(v) for v in value) and value[0] <= value[1]
            elif isinstance(fallback, str):
                value, ok = str(value).upper(), bool(str(value).strip())
            else:
                value = type(fallback)(value)
                ok = math.isfinite(value) and value >= 0
        except (TypeError, ValueError):
            ok = False
        if ok:
            values[f.name] = value
    return InputReference(**values)


def _reference_dict(meta: Any) -> dict[str, Any]:
    ref = meta.get("reference") if isinstance(meta, dict) else getattr(meta, "reference", None)
    if hasattr(ref, "model_dump"):
        ref = ref.model_dump()
    return ref if isinstance(ref, dict) else {}


def _cdf(quantiles: dict[str, Any], hu: float) -> float | None:
    """Fraction of training voxels below ``hu``, interpolated between the stored quantiles."""
    try:
        points = sorted((float(v), float(q)) for q, v in quantiles.items())
    except (TypeError, ValueError):
        return None
    points = [(v, q) for v, q in points if math.isfinite(v) and 0.0 <= q <= 1.0]
    if len(points) < 2:
        return None
    values, levels = zip(*points)
    return float(np.interp(hu, values, levels, left=0.0, right=1.0))


def _band(fraction: float, factor: float = 5.0) -> tuple[float, float]:
    """Plausible range around a training fraction: up to ``factor`` x less of it, or of the rest."""
    return fraction / factor, 1.0 - (1.0 - fraction) / factor


@dataclass(frozen=True)
class InputFacts:
    """What the gate looks at, measured once (all de-identified numbers)."""

    modality: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    extent_mm: tuple[float, float, float]
    value_min: float
    value_max: float
    air: float
    body: float
    bone: float
    above_standard: float
    outside_ct_scale: float

    @classmethod
    def of(cls, volume: Any) -> InputFacts:
        arr = np.asarray(volume.array)
        spacing = tuple(float(s) for s in volume.spacing)
        step = max(1, int(math.ceil((arr.size / _SAMPLE_VOXELS) ** (1 / 3))))
        sample = arr[::step, ::step, ::step].astype(np.float32, copy=False)
        n = max(1, sample.size)

        def frac(mask: np.ndarray) -> float:
            return float(np.count_nonzero(mask)) / n

        return cls(
            modality=str(volume.meta.get("modality") or "?").upper(),
            shape=tuple(int(s) for s in arr.shape),  # type: ignore[arg-type]
            spacing=spacing,  # type: ignore[arg-type]
            extent_mm=tuple(float(n_ * s) for n_, s in zip(arr.shape, spacing)),  # type: ignore[arg-type]
            value_min=float(arr.min()) if arr.size else 0.0,
            value_max=float(arr.max()) if arr.size else 0.0,
            air=frac(sample < -400),
            body=frac(sample >= -300),
            bone=frac(sample > 300),
            above_standard=frac(sample > STANDARD_CT[1]),
            outside_ct_scale=frac((sample < CT_SCALE[0]) | (sample > CT_SCALE[1])),
        )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def refusals(facts: InputFacts, ref: InputReference) -> list[str]:
    """Reasons why the input is clearly not a chest CT this model can read (empty: none)."""
    reasons = []
    dims = "x".join(str(s) for s in facts.shape)
    if facts.modality not in _MODALITY_UNKNOWN and facts.modality != ref.modality:
        reasons.append(f"modality {facts.modality}, but this model reads {ref.modality} (Hounsfield units)")
    if min(facts.shape) < MIN_AXIS_VOXELS:
        reasons.append(f"a {dims} grid is not a 3D volume (fewer than {MIN_AXIS_VOXELS} voxels along an axis)")
    else:
        e = sorted(facts.extent_mm)
        n = sorted(facts.shape)
        if e[2] > ROD_RATIO * e[1] or (n[1] < 16 and n[2] > 32 * n[1]):
            reasons.append(f"a {dims} grid ({' x '.join(f'{x:.0f}' for x in facts.extent_mm)} mm) is a thin rod, "
                           "not a chest")
    if facts.value_min == facts.value_max:
        reasons.append(f"every voxel has the same value ({facts.value_min:g}): there is no image")
        return reasons  # the fractions below would only repeat this
    if facts.outside_ct_scale > 0.01:
        reasons.append(f"{_pct(facts.outside_ct_scale)} of voxels lie outside every CT scale "
                       f"({CT_SCALE[0]:.0f}..{CT_SCALE[1]:.0f} HU; range {facts.value_min:g}..{facts.value_max:g}): "
                       "not Hounsfield units (signed data read as unsigned?)")
    elif facts.air == 0:
        reasons.append(f"no voxel below -400 HU (range {facts.value_min:g}..{facts.value_max:g}): a chest CT always "
                       "shows air in the lungs or around the body; not CT in Hounsfield units?")
    elif facts.body == 0:
        reasons.append(f"nothing denser than -300 HU (range {facts.value_min:g}..{facts.value_max:g}): no body "
                       "in the field of view")
    return reasons


def doubts(facts: InputFacts, ref: InputReference) -> list[str]:
    """Reasons to distrust the result although the input is not impossible (empty: none)."""
    out = []
    if facts.modality == "OT":
        out.append("modality OT (other): assumed to be CT in Hounsfield units")
    inplane = sorted(facts.extent_mm)[1:]  # the two longest extents span the axial plane of a chest
    lo, hi = ref.inplane_fov_mm
    if min(inplane) < lo or max(inplane) > hi:
        out.append(f"field of view {inplane[0]:.0f} x {inplane[1]:.0f} mm is outside a chest's "
                   f"{lo:.0f}-{hi:.0f} mm")
    length = min(facts.extent_mm)
    if length < ref.length_mm[0] or length > ref.length_mm[1]:
        out.append(f"covers only {length:.0f} mm along its shortest axis (a chest needs {ref.length_mm[0]:.0f}+)"
                   if length < ref.length_mm[0] else f"covers {length:.0f} mm, more than a chest")
    if min(facts.shape) < ref.min_slices:
        out.append(f"only {min(facts.shape)} slices (fewer than {ref.min_slices}): partial coverage")
    sp_lo, sp_hi = ref.spacing_mm
    if min(facts.spacing) < sp_lo or max(facts.spacing) > sp_hi:
        out.append(f"voxel spacing {' x '.join(f'{s:.3g}' for s in facts.spacing)} mm is outside {sp_lo:g}-{sp_hi:g} mm")
    if facts.value_min == facts.value_max or facts.outside_ct_scale > 0.01:
        return out
    checks = (("air (below -400 HU)", facts.air, ref.air_fraction), ("body (at or above -300 HU)", facts.body,
                                                                     ref.body_fraction))
    for name, value, (a, b) in checks:
        if not a <= value <= b:
            out.append(f"{_pct(value)} of voxels are {name}; training inputs have {_pct(a)}-{_pct(b)}")
    if facts.bone > ref.bone_fraction_max:
        out.append(f"{_pct(facts.bone)} of voxels are above 300 HU (bone/contrast/metal); expected at most "
                   f"{_pct(ref.bone_fraction_max)}")
    if facts.above_standard > ref.above_standard_max:
        out.append(f"{_pct(facts.above_standard)} of voxels are above {STANDARD_CT[1]:.0f} HU (the standard CT range)")
    return out


def check_input(volume: Any, meta: Any = None, *, force: bool = False,
                where: Any = None) -> list[str]:
    """Refuse an implausible input or return warnings about a doubtful one.

    Args:
        volume: the loaded :class:`medmm.io.Volume`.
        meta: the run's metadata (``Predictor.meta``: `RunMeta` or dict), for its training reference.
        force: diagnose refused input anyway; refusal reasons are returned as warnings.
        where: the input path, named in the error.

    Returns:
        Warnings (one line each, no PHI) for ``result.json`` and every report format.

    Raises:
        MedmmInputError: the input is clearly not a chest CT this model can read.
    """
    ref = training_reference(meta)
    facts = InputFacts.of(volume)
    refused = refusals(facts, ref)
    if refused and not force:
        raise MedmmInputError(
            where, "not a plausible chest CT for this model: " + "; ".join(refused)
            + " (pass --force / force=True to diagnose it anyway)",
        )
    notes = [f"diagnosed despite: {r}" for r in refused]
    notes += [str(w) for w in volume.meta.get("value_warnings", [])]
    return notes + doubts(facts, ref)
