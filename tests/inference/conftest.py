"""Fixtures for inference tests: a stand-in predictor and DICOM/zip/NIfTI scans with planted PHI."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from inference_helpers import AFFINE, PHI, make_predictor, phantom


@pytest.fixture
def tiny_predictor(tmp_path):
    return make_predictor(tmp_path)


@pytest.fixture(scope="session")
def scans(tmp_path_factory) -> dict[str, Path]:
    """DICOM folder (planted PHI), zip of it, and NIfTI of the same phantom."""
    from medmm.io import write_dicom_series, write_nifti

    root = tmp_path_factory.mktemp("scans")
    hu = phantom()
    dicom_dir = root / "dicom_case"
    write_dicom_series(hu, AFFINE, dicom_dir, series_description="chest", uid_seed="inference-tests", **PHI)
    zip_path = root / "zip_case.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(dicom_dir.iterdir()):
            zf.write(f, f"series/{f.name}")
    nifti = root / "nifti_case.nii.gz"
    write_nifti(hu, AFFINE, nifti)
    return {"dicom": dicom_dir, "zip": zip_path, "nifti": nifti}


