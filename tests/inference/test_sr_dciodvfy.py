"""The DICOM SR passes dciodvfy (dicom3tools) with 0 errors, de-identified and with identity kept."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from inference_helpers import AFFINE, PHI, make_predictor, phantom

from medmm.inference.writers import write_outputs

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy missing: apt-get install dicom3tools (.ci/run does)")


def dciodvfy(path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of dciodvfy on ``path``."""
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


@pytest.mark.parametrize("keep_phi", [False, True])
def test_sr_has_no_dciodvfy_errors(tmp_path, keep_phi):
    from medmm.io import write_dicom_series

    src = tmp_path / "dicom"
    write_dicom_series(phantom(), AFFINE, src, series_description="chest", uid_seed="dciodvfy", **PHI)
    result = make_predictor(tmp_path).predict(src)
    write_outputs(result, tmp_path / "out", input_path=src, html=False, dicom_sr=True, keep_phi=keep_phi)
    errors, warnings = dciodvfy(tmp_path / "out" / "report_sr.dcm")
    assert errors == []
    assert not [w for w in warnings if "99MEDMM" in w]  # standard codes where the ontology has them
    if keep_phi:
        assert warnings == []
    else:  # only "needed for DICOMDIR" notes about the emptied study date/time/ID remain
        assert all("DICOMDIR" in w for w in warnings), warnings
