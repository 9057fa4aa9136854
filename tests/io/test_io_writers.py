"""medmm.io.writers: deterministic, valid DICOM series and NIfTI files."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.dicom_cases import AFFINE, make_hu, oblique_affine, write_series
from medmm.io import write_nifti
from medmm.io.volume import lps_to_ras


def _series_bytes(folder) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def test_dicom_series_is_byte_identical_and_valid(tmp_path):
    a = write_series(tmp_path / "a", uid_seed="same")
    b = write_series(tmp_path / "b", uid_seed="same")
    assert [p.name for p in a] == [p.name for p in b]
    assert _series_bytes(tmp_path / "a") == _series_bytes(tmp_path / "b")
    raw = a[0].read_bytes()
    assert raw[:128] == b"\0" * 128 and raw[128:132] == b"DICM"
    c = write_series(tmp_path / "c", uid_seed="other")
    assert _series_bytes(tmp_path / "c") != _series_bytes(tmp_path / "a")

    import pydicom

    ds = pydicom.dcmread(a[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in a}) == len(a)
    assert float(ds.SliceThickness) == pytest.approx(2.0)
    assert float(ds.SpacingBetweenSlices) == pytest.approx(2.0)


@pytest.mark.parametrize("affine", [AFFINE, oblique_affine(25.0)], ids=["axial", "oblique"])
def test_dicom_geometry_matches_simpleitk(tmp_path, affine):
    sitk = pytest.importorskip("SimpleITK")
    hu = make_hu()
    files = write_series(tmp_path / "s", hu, affine)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    lps = np.eye(4)
    lps[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    assert len(files) == hu.shape[2]
    np.testing.assert_array_equal(arr, hu)
    np.testing.assert_allclose(lps_to_ras(lps), affine, atol=1e-5)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_is_byte_identical_and_round_trips(tmp_path, name):
    nib = pytest.importorskip("nibabel")
    hu = make_hu()
    a = write_nifti(hu, AFFINE, tmp_path / "a" / name)
    b = write_nifti(hu, AFFINE, tmp_path / "b" / name)
    assert a.read_bytes() == b.read_bytes()
    img = nib.load(a)
    np.testing.assert_array_equal(img.get_fdata(), hu)
    np.testing.assert_allclose(img.affine, AFFINE)
    assert not list((tmp_path / "a").glob(".*tmp"))  # atomic write left no temporary file


@pytest.mark.parametrize(
    "hu, message",
    [
        (np.zeros((4, 4)), "3D"),
        (np.full((4, 4, 4), np.nan), "NaN"),
        (np.full((4, 4, 4), 1e9), "16 bits"),
    ],
)
def test_dicom_writer_rejects_bad_input(tmp_path, hu, message):
    with pytest.raises(ValueError, match=message):
        write_series(tmp_path, hu, AFFINE)


def test_writer_uses_signed_pixels_when_needed(tmp_path):
    import pydicom

    hu = make_hu()
    hu[0, 0, 0] = -2000  # below the -1024 intercept -> stored value negative
    files = write_series(tmp_path, hu, AFFINE)
    assert pydicom.dcmread(files[0]).PixelRepresentation == 1
    from medmm.io import load_volume

    np.testing.assert_array_equal(load_volume(tmp_path).array, hu)
