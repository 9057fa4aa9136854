"""Class 1 of issue 21: input that is not a plausible chest CT is never diagnosed silently.

Clearly impossible input (MR/PET, one value everywhere, a 2D image, a thin rod, values outside
every CT scale, no air, no body) is refused with one line and exit 2; doubtful input is diagnosed
with ``warnings`` in result.json, the HTML, the FHIR bundle, the SR and on stderr; ``--force``
diagnoses refused input and keeps the reasons as warnings. Signed CT data labelled unsigned
(PixelRepresentation 0) is read correctly at the io level.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medmm.errors import MedmmInputError
from medmm.io import Volume, load_volume
from medmm.io.writers import build_dicom_series, save_datasets, write_nifti

from .realrun import AFFINE, PHI, one_error_line, phantom, run_cli

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


def chest(shape=(64, 64, 48), spacing=(5.5, 5.5, 5.5), seed=0) -> Volume:
    """A chest-sized body phantom (352 mm field of view): nothing doubtful about it."""
    hu = phantom(shape, seed)
    hu[shape[0] // 2, shape[1] // 2, :] = 700.0  # a little bone
    return Volume(hu, np.diag([*spacing, 1.0]), meta={"modality": "CT"})


# ------------------------------------------------------------------ builders
def _series(d: Path, hu: np.ndarray, mutate=None, **kw) -> Path:
    datasets = build_dicom_series(hu, AFFINE, series_description="chest", uid_seed=f"gate-{d.name}", **PHI, **kw)
    if mutate:
        for ds in datasets:
            mutate(ds)
    save_datasets(datasets, d)
    return d


def _mr(d: Path) -> Path:
    mr = np.clip(phantom() + 1000.0, 0, None)  # MR signal: no negative values, no HU
    return _series(d / "mr", mr, modality="MR", rescale_intercept=0)


def _pet(d: Path) -> Path:
    def to_pet(ds):
        ds.Modality = "PT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PET_STORAGE
        ds.RescaleType = "BQML"
    activity = np.clip(phantom() + 1000.0, 0, None) * 3.0
    return _series(d / "pet", activity, mutate=to_pet, rescale_intercept=0)


def _nifti(d: Path, array: np.ndarray, spacing=(2.0, 2.0, 2.0), name="scan.nii.gz") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return write_nifti(np.asarray(array), np.diag([*spacing, 1.0]), d / name)


def _signed_as_unsigned(d: Path, hu: np.ndarray, intercept: float = 0.0) -> Path:
    """int16 CT numbers written with PixelRepresentation 0 (the exporter bug from the issue)."""
    def relabel(ds):
        ds.PixelRepresentation = 0
    stored = np.rint(hu - intercept).astype(np.int16)
    datasets = build_dicom_series(hu, AFFINE, series_description="chest", uid_seed=f"pr0-{d.name}",
                                  rescale_intercept=intercept, **PHI)
    for k, ds in enumerate(datasets):
        relabel(ds)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
    save_datasets(datasets, d / "pr0")
    return d / "pr0"


REFUSED = {
    "mr_series": (_mr, "modality MR"),
    "pet_series": (_pet, "modality PT"),
    "all_zero_nifti": (lambda d: _nifti(d, np.zeros((24, 24, 16), np.float32)), "same value"),
    "all_zero_dicom": (lambda d: _series(d / "zero", np.zeros((24, 24, 16), np.float32)), "same value"),
    "constant_air": (lambda d: _nifti(d, np.full((24, 24, 16), -1000.0, np.float32)), "same value"),
    "air_and_noise_no_body": (lambda d: _nifti(d, -1000 + np.random.default_rng(0).normal(0, 20, (24, 24, 16))),
                              "no body"),
    "water_and_noise_no_air": (lambda d: _nifti(d, np.random.default_rng(1).normal(0, 30, (24, 24, 16))), "no voxel below"),
    "mr_like_nifti": (lambda d: _nifti(d, np.clip(phantom() + 1000.0, 0, None)), "no voxel below"),
    "single_slice_48x48x1": (lambda d: _nifti(d, phantom((48, 48, 1))), "not a 3D volume"),
    "two_slices_48x48x2": (lambda d: _nifti(d, phantom((48, 48, 2))), "not a 3D volume"),
    "rod_8x8x1000": (lambda d: _nifti(d, phantom((8, 8, 1000)), spacing=(1.0, 1.0, 1.0)), "thin rod"),
    "rod_1000x8x8": (lambda d: _nifti(d, phantom((1000, 8, 8)), spacing=(0.7, 0.7, 1.25)), "thin rod"),
    "rod_thin_slices": (lambda d: _nifti(d, phantom((6, 6, 400)), spacing=(1.0, 1.0, 0.1)), "thin rod"),
    "unsigned_nifti_air_64536": (lambda d: _nifti(d, np.where(phantom() < 0, phantom() + 65536, phantom())
                                                  .astype(np.uint16)), "outside every CT scale"),
    "hu_beyond_any_scale": (lambda d: _nifti(d, phantom() * 60.0), "outside every CT scale"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_api_refuses(predictor, tmp_path, name):
    build, phrase = REFUSED[name]
    path = build(tmp_path)
    with pytest.raises(MedmmInputError) as info:
        predictor.predict(path)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg and "not a plausible chest CT" in msg and phrase in msg, msg
    assert "--force" in msg


@pytest.mark.parametrize("name", ["mr_series", "pet_series", "all_zero_nifti", "single_slice_48x48x1",
                                  "rod_8x8x1000", "unsigned_nifti_air_64536"])
def test_cli_refuses_with_exit_2_and_writes_nothing(cached_model, tmp_path, capsys, name):
    path = REFUSED[name][0](tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["infer", str(path), "--model", "m", "--out", str(out), "-q"], capsys)
    assert code == 2 and one_error_line(err) and "not a plausible chest CT" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_force_diagnoses_and_reports_the_reasons_everywhere(cached_model, tmp_path, capsys):
    path = _mr(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["infer", str(path), "--model", "m", "--out", str(out), "-q", "--force",
                                 "--fhir", "--dicom-sr"], capsys)
    assert code == 0, err
    doc = json.loads((out / "result.json").read_text())
    assert any("modality MR" in w for w in doc["warnings"])
    assert "warning: diagnosed despite: modality MR" in err
    assert "modality MR" in (out / "report.html").read_text()
    bundle = json.loads((out / "fhir.json").read_text())
    report = bundle["entry"][0]["resource"]
    assert any("modality MR" in e["valueString"] for e in report["extension"])
    import pydicom

    sr = pydicom.dcmread(out / "report_sr.dcm")
    texts = [item.get("TextValue", "") for item in sr.ContentSequence]
    assert any("modality MR" in t for t in texts)


def test_doubtful_input_is_diagnosed_with_warnings(cached_model, tmp_path, capsys):
    """The 24 x 24 x 16 test phantom at 2 mm is body-like but far too small for a chest."""
    path = _nifti(tmp_path, phantom())
    out = tmp_path / "out"
    code, stdout, err = run_cli(["infer", str(path), "--model", "m", "--out", str(out), "-q"], capsys)
    assert code == 0, err
    doc = json.loads((out / "result.json").read_text())
    assert any("field of view 48 x 48 mm" in w for w in doc["warnings"]), doc["warnings"]
    assert "warning: field of view" in err
    assert "field of view 48 x 48 mm" in (out / "report.html").read_text()


def test_result_warnings_validate_against_the_schema(predictor, tmp_path):
    import jsonschema

    from medmm.inference.schema import RESULT_JSON_SCHEMA

    result = predictor.predict(_nifti(tmp_path, phantom()))
    jsonschema.validate(result.to_dict(), RESULT_JSON_SCHEMA)
    assert json.loads(result.to_json())["warnings"] == result.warnings and result.warnings


def test_api_volume_input_refused_without_a_path(predictor):
    with pytest.raises(MedmmInputError, match="same value"):
        predictor.predict(Volume(np.zeros((24, 24, 16), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])))


# ------------------------------------------------------------------ the gate itself
def test_chest_sized_phantom_passes_without_warnings():
    from medmm.inference.plausibility import check_input

    assert check_input(chest()) == []


@pytest.mark.parametrize("mutate,phrase", [
    (lambda v: Volume(v.array[:, :, :6], v.affine, v.meta), "slices"),
    (lambda v: Volume(v.array, np.diag([25.0, 25.0, 25.0, 1.0]), v.meta), "spacing"),
    (lambda v: Volume(np.where(v.array > 0, 900.0, v.array), v.affine, v.meta), "above 300 HU"),
    (lambda v: Volume(np.pad(v.array, ((200, 200), (200, 200), (0, 0)), constant_values=-1000.0),
                      np.diag([0.7, 0.7, 5.5, 1.0]), v.meta), "body"),
    (lambda v: Volume(v.array, v.affine, {"modality": "OT"}), "modality OT"),
    (lambda v: Volume(np.where(v.array > 0, 4000.0, v.array), v.affine, v.meta), "above 3071 HU"),
])
def test_doubts(mutate, phrase):
    from medmm.inference.plausibility import check_input

    warnings = check_input(mutate(chest()))
    assert any(phrase in w for w in warnings), warnings


def test_training_reference_overrides_defaults_and_ignores_bad_values():
    from medmm.inference.plausibility import InputReference, check_input, training_reference

    tiny = Volume(phantom(), np.diag([2.0, 2.0, 2.0, 1.0]), meta={"modality": "CT"})
    meta = {"reference": {"inplane_fov_mm": [20, 100], "length_mm": [10, 100], "min_slices": 8,
                          "air_fraction": ["nan", 1], "body_fraction": "bad", "unknown": 1}}
    ref = training_reference(meta)
    assert ref.inplane_fov_mm == (20.0, 100.0) and ref.min_slices == 8
    assert ref.air_fraction == InputReference().air_fraction and ref.body_fraction == InputReference().body_fraction
    assert not any("field of view" in w for w in check_input(tiny, meta))
    assert any("field of view" in w for w in check_input(tiny, {}))


# ------------------------------------------------------------------ PixelRepresentation 0
def _hu_with_air() -> np.ndarray:
    return np.rint(phantom()).astype(np.float32)


@pytest.mark.parametrize("intercept", [0.0, -1024.0])
def test_signed_data_labelled_unsigned_reads_as_signed(tmp_path, intercept):
    hu = _hu_with_air()
    if intercept:
        hu[0, 0, :] = -3024.0  # padding below the intercept: the only sign-bit values
    vol = load_volume(_signed_as_unsigned(tmp_path, hu, intercept))
    np.testing.assert_array_equal(vol.array, hu)
    assert any("read them as signed" in w for w in vol.meta["warnings"])


def test_signed_misread_fix_gives_the_same_findings(predictor, tmp_path):
    hu = _hu_with_air()
    fixed = predictor.predict(_signed_as_unsigned(tmp_path / "a", hu))
    honest = predictor.predict(_series(tmp_path / "b", hu))
    np.testing.assert_allclose(fixed.to_dataframe()["probability"], honest.to_dataframe()["probability"], atol=1e-5)
    assert any("read them as signed" in w for w in fixed.warnings)


def test_honest_unsigned_data_with_a_large_intercept_is_not_reinterpreted(tmp_path):
    """Unsigned storage with intercept -32768 uses the sign bit for ordinary HU: leave it alone."""
    hu = _hu_with_air()
    vol = load_volume(_series(tmp_path / "u", hu, rescale_intercept=-32768))
    np.testing.assert_array_equal(vol.array, hu)
    assert not any("signed" in w for w in vol.meta["warnings"])


def test_batch_refuses_the_mr_scan_and_diagnoses_the_ct(cached_model, tmp_path, capsys):
    root = tmp_path / "batch"
    _mr(root / "a")
    _nifti(root, phantom(), name="b_ct.nii.gz")
    code, stdout, err = run_cli(["infer", str(root), "--model", "m", "--out", str(tmp_path / "o"), "-q"], capsys)
    assert code == 0, err
    assert "1 done" in stdout and "1 failed" in stdout and "modality MR" in stdout


def test_reference_profile_of_a_run_sets_the_fraction_ranges(predictor):
    """A trained run's RunMeta.reference.input_hu (HU quantiles of its training inputs) is read."""
    from medmm.inference.plausibility import InputReference, training_reference

    meta = {"reference": {"input_hu": {"mean": -500.0, "std": 400.0, "quantiles": {
        "0.01": -1000.0, "0.25": -1000.0, "0.5": -400.0, "0.75": 40.0, "0.99": 900.0}}}}
    ref = training_reference(meta)
    assert ref.air_fraction == pytest.approx((0.1, 0.9))
    assert ref.inplane_fov_mm == InputReference().inplane_fov_mm
    assert isinstance(training_reference(predictor.meta), InputReference)  # the typed RunMeta works too
