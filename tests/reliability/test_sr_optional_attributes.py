"""Issue 21 class 2: a source series without optional / Type 2 attributes still gets a valid SR.

Real scanners and anonymisers drop PatientSex, PatientBirthDate, StudyID, AccessionNumber,
ReferringPhysicianName, Manufacturer, ...; the SR writer must neither crash nor write an invalid
object (Type 2 attributes are written empty, Type 1 ones are never blank).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from inference_helpers import AFFINE, PHI, make_predictor, phantom  # noqa: E402

from medmm.inference.writers import write_outputs  # noqa: E402

TYPE2_AND_OPTIONAL = ["PatientSex", "PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                      "Manufacturer", "StudyDate", "StudyTime", "SeriesNumber", "InstitutionName"]


def _series_without(tmp_path: Path, keywords: list[str]) -> Path:
    from medmm.io import write_dicom_series

    src = tmp_path / "dicom"
    write_dicom_series(phantom(), AFFINE, src, series_description="chest", uid_seed="optional-attrs", **PHI)
    for f in src.iterdir():
        ds = pydicom.dcmread(f)
        for keyword in keywords:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(f)
    return src


def _sr(tmp_path: Path, src: Path, keep_phi: bool) -> pydicom.Dataset:
    result = make_predictor(tmp_path).predict(src)
    write_outputs(result, tmp_path / "out", input_path=src, html=False, dicom_sr=True, keep_phi=keep_phi)
    return pydicom.dcmread(tmp_path / "out" / "report_sr.dcm")


@pytest.mark.parametrize("keyword", TYPE2_AND_OPTIONAL)
def test_each_missing_attribute_alone(tmp_path, keyword):
    sr = _sr(tmp_path, _series_without(tmp_path, [keyword]), keep_phi=True)
    assert sr.Modality == "SR" and len(sr.ContentSequence) > 0


@pytest.mark.parametrize("keep_phi", [False, True])
def test_all_missing_at_once(tmp_path, keep_phi):
    sr = _sr(tmp_path, _series_without(tmp_path, TYPE2_AND_OPTIONAL), keep_phi=keep_phi)
    for keyword in ("PatientSex", "PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        assert keyword in sr and not sr[keyword].value  # Type 2: present and empty


def test_missing_patient_identity_is_written_empty_when_keeping_phi(tmp_path):
    sr = _sr(tmp_path, _series_without(tmp_path, ["PatientName", "PatientID"]), keep_phi=True)
    assert "PatientName" in sr and "PatientID" in sr and not sr.PatientID


def test_deidentified_sr_keeps_type1_content_date_and_time(tmp_path):
    sr = _sr(tmp_path, _series_without(tmp_path, TYPE2_AND_OPTIONAL), keep_phi=False)
    assert len(sr.ContentDate) == 8 and len(sr.ContentTime) >= 6  # Type 1: never blanked
    assert PHI["study_date"] not in str(sr) and PHI["birth_date"] not in str(sr)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy missing: apt-get install dicom3tools")
@pytest.mark.parametrize("keep_phi", [False, True])
def test_sparse_source_sr_has_no_dciodvfy_errors(tmp_path, keep_phi):
    _sr(tmp_path, _series_without(tmp_path, TYPE2_AND_OPTIONAL), keep_phi=keep_phi)
    proc = subprocess.run(["dciodvfy", str(tmp_path / "out" / "report_sr.dcm")], capture_output=True, text=True,
                          timeout=60)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
