"""Writers: result.json schema, self-contained HTML, DICOM SR codes and references, FHIR, PHI, policy."""

from __future__ import annotations

import base64
import json
import re

import pytest
from inference_helpers import assert_no_phi

from medmm.errors import MedmmInputError
from medmm.inference.schema import RESULT_JSON_SCHEMA
from medmm.inference.writers import check_out_dir, scan_name, write_outputs
from medmm.inference.writers.dicom_sr import pseudonym_uid
from medmm.inference.writers.html import MAX_CAM_FINDINGS


@pytest.fixture
def dicom_result(tiny_predictor, scans):
    result = tiny_predictor.predict(scans["dicom"], indication="chest pain")
    # make two findings positive so the HTML gets Grad-CAM panels and the SR both Present/Absent
    for name in ("Pleural effusion", "Hiatal hernia"):
        result.finding(name)["positive"] = True
    return result


def test_all_outputs(dicom_result, scans, tmp_path):
    import highdicom as hd
    import jsonschema
    import pydicom

    out = tmp_path / "out"
    written = write_outputs(dicom_result, out, input_path=scans["dicom"], dicom_sr=True, fhir=True)
    assert set(written) == {"json", "html", "dicom_sr", "fhir"}
    assert sorted(p.name for p in out.iterdir()) == ["fhir.json", "report.html", "report_sr.dcm", "result.json"]

    doc = json.loads((out / "result.json").read_text())
    jsonschema.validate(doc, RESULT_JSON_SCHEMA)

    page = (out / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    evidence = {e["finding"]: e for e in doc["evidence"]}  # the most probable positive findings
    assert set(evidence) <= set(dicom_result.positives)
    assert len(evidence) == min(MAX_CAM_FINDINGS, len(dicom_result.positives))
    drawn = sum(e["localised"] for e in evidence.values())
    assert len(images) == 2 + 2 * drawn  # key slices + axial/coronal overlays of localised evidence only
    assert page.count("class=\"noevidence\"") == len(evidence) - drawn  # said, not drawn
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert "http://" not in page and "https://" not in page  # offline: no external assets

    raw = (out / "report_sr.dcm").read_bytes()
    assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
    ds = pydicom.dcmread(out / "report_sr.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    sr = hd.sr.srread(out / "report_sr.dcm")
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == len(dicom_result.findings)
    decisions = {}
    for group in groups:
        (evaluation,) = group.get_qualitative_evaluations()
        decisions[group.finding_type.meaning] = (group.finding_type.scheme_designator, evaluation.value.meaning)
    assert decisions["Pleural effusion"] == ("SCT", "Present")
    assert decisions["Hiatal hernia"] == ("SCT", "Present")  # only a close SNOMED match: still SNOMED
    assert sum(v[1] == "Absent" for v in decisions.values()) == sum(not r["positive"] for r in dicom_result.findings)
    text = str(ds)
    assert "60046008" in text  # Pleural effusion, SNOMED CT (exact match in the ontology)
    assert "39839004" in text and "99MEDMM" not in text  # close SNOMED match beats a private code
    assert "52101004" in text and "272519000" in text  # Present and Absent
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_result.source_files]
    sources = {h.SOPInstanceUID for h in headers}
    assert referenced == {pseudonym_uid(uid) for uid in sources} and len(referenced) == len(sources)
    source_uids = sources | {headers[0].StudyInstanceUID, headers[0].SeriesInstanceUID}
    assert not any(uid.encode() in raw for uid in source_uids)  # de-identified: no source UIDs
    assert str(ds.PatientName) == "ANONYMOUS^" and ds.PatientID == "ANONYMOUS"

    bundle = json.loads((out / "fhir.json").read_text())
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["DiagnosticReport"] + ["Observation"] * 18
    report = bundle["entry"][0]["resource"]
    assert report["conclusion"] == dicom_result.report and len(report["result"]) == 18
    assert "subject" not in report
    assert_no_phi(list(out.iterdir()))


def test_keep_phi_copies_patient_into_sr(dicom_result, scans, tmp_path):
    import pydicom

    write_outputs(dicom_result, tmp_path / "o", input_path=scans["dicom"], html=False, dicom_sr=True, keep_phi=True)
    ds = pydicom.dcmread(tmp_path / "o" / "report_sr.dcm")
    assert str(ds.PatientName) == "SENTINEL^PHI"
    source = pydicom.dcmread(dicom_result.source_files[0], stop_before_pixels=True)
    assert ds.StudyInstanceUID == source.StudyInstanceUID  # files into the source study


def test_sr_needs_dicom(tiny_predictor, scans, tmp_path):
    result = tiny_predictor.predict(scans["nifti"])
    with pytest.raises(MedmmInputError, match="DICOM"):
        write_outputs(result, tmp_path / "o", dicom_sr=True)


@pytest.mark.parametrize(
    "out_rel,input_kind,ok",
    [("dicom_case/out", "dicom", False), ("dicom_case", "dicom", False), ("elsewhere", "dicom", True),
     (".", "nifti", False), ("res/nifti_case", "nifti", True)],
)
def test_out_dir_policy(scans, out_rel, input_kind, ok):
    src = scans[input_kind]
    root = scans["dicom"].parent
    out = root / out_rel
    if ok:
        assert check_out_dir(out, src) == out.resolve()
    else:
        with pytest.raises(MedmmInputError, match="input"):
            check_out_dir(out, src)


@pytest.mark.parametrize(
    "path,name", [("/d/case_07.nii.gz", "case_07"), ("/d/scan.zip", "scan"), ("/d/A b/", "A_b"), ("x.nii", "x")]
)
def test_scan_name(path, name):
    assert scan_name(path) == name


def test_unwritable_out_is_input_error(dicom_result, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(MedmmInputError, match="is a file"):
        write_outputs(dicom_result, tmp_path / "afile" / "sub")

    import medmm.inference.writers.files as files

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "atomic_write_text", disk_full)
    with pytest.raises(MedmmInputError, match="No space left"):
        write_outputs(dicom_result, tmp_path / "full", html=False)


def test_html_shows_report_repairs_and_unreliable_findings(tiny_predictor, scans):
    """The verifier's repairs and the calibration's unreliable flag reach result.json and the HTML."""
    from medmm.inference.writers.html import render_html
    from medmm.knowledge import ReportLabeler

    result = tiny_predictor.predict(scans["nifti"])
    check = result.report_check
    assert check["agrees"] and check["n_repairs"] == len(check["repairs"]) > 0  # the stub's text is repaired
    stated = ReportLabeler(tiny_predictor.ontology, tiny_predictor.labels).label(result.report)
    assert [bool(stated[row["finding"]]) for row in result.findings] == [row["positive"] for row in result.findings]
    result.findings[0]["reliable"] = False
    result.findings[0]["unreliable_reason"] = "F1-optimal threshold 0.008 outside [0.05, 0.95]"
    page = render_html(result)
    assert "agrees with the findings table" in page and 'class="medmm-repairs"' in page
    assert check["repairs"][0]["action"] in page
    assert 'title="F1-optimal threshold 0.008 outside [0.05, 0.95]">unreliable' in page
