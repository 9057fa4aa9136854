"""Every CT/MR file shipped with pydicom decodes correctly or fails with a clear MedmmInputError."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures.dicom_cases import pydicom_ct_mr_files
from medmm.errors import MedmmInputError
from medmm.io import Volume, load_volume
from fixtures.dicom_cases import decode_file

pydicom = pytest.importorskip("pydicom")


FILES = pydicom_ct_mr_files()
DATA_ROOT = Path(FILES[0]).parents[0] if FILES else None


def _id(p: Path) -> str:
    return str(p).split("test_files/")[-1]


def _one_line(err: MedmmInputError, path: Path) -> None:
    assert "\n" not in str(err) and str(path.parent) in str(err)


def test_there_are_many_files():
    assert len(FILES) >= 30


@pytest.mark.parametrize("src", FILES, ids=_id)
def test_load_volume_never_crashes(tmp_path, src):
    path = tmp_path / src.name
    shutil.copy(src, path)
    try:
        vol = load_volume(path)
    except MedmmInputError as err:
        _one_line(err, path)
        return
    assert isinstance(vol, Volume) and np.isfinite(vol.array).all() and min(vol.shape) >= 1


def _reference(path: Path):
    """pydicom's own decode + modality LUT, or None when pydicom cannot decode it either."""
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
        arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    except Exception:
        return None, None
    return ds, arr


@pytest.mark.parametrize("src", FILES, ids=_id)
def test_decode_matches_pydicom_or_clear_error(tmp_path, src):
    from medmm.io.pixels import needs_inversion

    path = tmp_path / src.name
    shutil.copy(src, path)
    try:
        frames = decode_file(path)
    except MedmmInputError as err:
        _one_line(err, path)
        return
    ds, ref = _reference(path)
    if ref is None:
        return
    ref = ref.reshape(frames.shape)
    from medmm.io.dicom_header import read_header

    if needs_inversion(read_header(path).f):
        pytest.skip("MONOCHROME1 non-CT is inverted on purpose; covered in test_io_dicom")
    np.testing.assert_allclose(frames, ref, rtol=1e-6, atol=1e-3)


@pytest.mark.skipif(DATA_ROOT is None, reason="no pydicom test data")
@pytest.mark.parametrize(
    "rel, expect",
    [
        ("dicomdirtests/98892001/CT5N", (16, 16, 5)),
        ("dicomdirtests/98892003/MR700", "inconsistent ImageOrientationPatient"),
        ("dicomdirtests", "3 CT/MR series found"),
        ("dicomdirtests/DICOMDIR", "3 CT/MR series found"),
        ("dicomdirtests/TINY_ALPHA", "no DICOM images found"),  # CT stubs without pixel data
    ],
)
def test_pydicom_folders_in_place(rel, expect):
    path = DATA_ROOT / rel
    if not path.exists():
        pytest.skip(f"{rel} not shipped with this pydicom")
    if isinstance(expect, tuple):
        vol = load_volume(path)
        assert vol.shape == expect and vol.meta["modality"] == "CT"
        return
    with pytest.raises(MedmmInputError, match=expect):
        load_volume(path)
