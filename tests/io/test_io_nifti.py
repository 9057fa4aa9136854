"""medmm.io.load_volume on NIfTI: affine precedence, scaling and corrupt files."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fixtures.dicom_cases import AFFINE, make_hu, oblique_affine, patch_nifti_scaling
from medmm.errors import MedmmInputError
from medmm.io import load_volume, write_nifti

nib = pytest.importorskip("nibabel")


def _save(tmp_path, array, affine=AFFINE, name="v.nii.gz", header_edit=None, dtype=None):
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype or np.float32), affine)
    if header_edit:
        header_edit(img)
    path = tmp_path / name
    nib.save(img, path)
    return path


def _error(path) -> str:
    with pytest.raises(MedmmInputError) as info:
        load_volume(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    return info.value.reason


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("affine", [AFFINE, oblique_affine(35.0)], ids=["axial", "oblique"])
def test_round_trip_matches_nibabel(tmp_path, name, affine):
    hu = make_hu()
    path = write_nifti(hu, affine, tmp_path / name)
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, hu)
    np.testing.assert_array_equal(vol.affine, nib.load(path).affine)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.source_files == [] and vol.meta["source_format"] == "nifti"


def test_volume_to_nifti_round_trip(tmp_path):
    hu = make_hu()
    vol = load_volume(write_nifti(hu, oblique_affine(), tmp_path / "a.nii.gz"))
    again = load_volume(vol.to_nifti(tmp_path / "b.nii"))
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_allclose(again.affine, vol.affine)


def _sform_differs(img):
    qform = img.affine.copy()
    img.set_qform(qform, code=1)
    sform = qform.copy()
    sform[:3, 3] += [5.0, -7.0, 11.0]
    img.set_sform(sform, code=2)


def _qform_only(img):
    img.set_qform(oblique_affine(10.0), code=1)
    img.set_sform(np.eye(4), code=0)


def _no_codes(img):
    img.set_qform(img.affine, code=0)
    img.set_sform(img.affine, code=0)


@pytest.mark.parametrize("edit, warns", [(_sform_differs, False), (_qform_only, False), (_no_codes, True)],
                         ids=["sform-over-qform", "qform-only", "both-codes-0"])
def test_affine_precedence_equals_nibabel(tmp_path, caplog, edit, warns):
    path = _save(tmp_path, make_hu(), header_edit=edit)
    with caplog.at_level(logging.WARNING, logger="medmm.io"):
        vol = load_volume(path)
    np.testing.assert_allclose(vol.affine, nib.load(path).affine, atol=1e-6)
    assert ("both 0" in caplog.text) == warns
    assert any("both 0" in w for w in vol.meta["warnings"]) == warns


def _slope(value, inter=0.0):
    """Marker for test_bad_nifti: patch scl_slope/scl_inter on disk after saving."""
    return ("patch", value, inter)


def test_scaling_is_applied(tmp_path):
    stored = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(stored, AFFINE)
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "s.nii")
    np.testing.assert_array_equal(load_volume(tmp_path / "s.nii").array, stored * 2.0 - 1024.0)


@pytest.mark.parametrize("slope, inter", [(0.0, 0.0), (np.nan, 0.0)], ids=["zero-means-none", "nan-means-none"])
def test_standard_no_scaling_values_load(tmp_path, slope, inter):
    stored = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = patch_nifti_scaling(_save(tmp_path, stored, dtype=np.int16, name="s.nii"), slope, inter)
    np.testing.assert_array_equal(load_volume(path).array, stored)


@pytest.mark.parametrize(
    "array, edit, dtype, message",
    [
        (np.full((4, 4, 4), np.nan), None, np.float32, "NaN or Inf"),
        (np.where(np.eye(4)[:, :, None] > 0, np.inf, 0.0) * np.ones((4, 4, 4)), None, np.float32, "NaN or Inf"),
        (np.ones((4, 4, 4)), _slope(0.0, -1024.0), np.int16, "scl_slope is 0"),
        (np.ones((4, 4, 4)), _slope(np.inf), np.int16, "non-finite intensity scaling"),
        (np.ones((4, 4)), None, np.float32, "needs one 3D volume"),
        (np.ones((4, 4, 4, 2)), None, np.float32, "needs one 3D volume"),
        (np.ones((4, 4, 4)), None, np.complex64, "complex"),
    ],
    ids=["nan", "inf", "slope0-inter", "slope-inf", "2d", "4d", "complex"],
)
def test_bad_nifti(tmp_path, array, edit, dtype, message):
    path = _save(tmp_path, array.astype(dtype), dtype=dtype, name="bad.nii")
    if edit:
        patch_nifti_scaling(path, edit[1], edit[2])
    assert message in _error(path)


def test_single_volume_4d_is_accepted(tmp_path):
    hu = make_hu()
    path = _save(tmp_path, hu[..., None])
    np.testing.assert_array_equal(load_volume(path).array, hu)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_gz(tmp_path, keep):
    path = write_nifti(make_hu((16, 16, 16)), AFFINE, tmp_path / "t.nii.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    assert "NIfTI" in _error(path)


def test_garbage_with_nifti_name(tmp_path):
    (tmp_path / "x.nii").write_bytes(b"definitely not nifti" * 30)
    assert "not a readable NIfTI" in _error(tmp_path / "x.nii")
