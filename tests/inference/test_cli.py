"""`medmm infer` (in-process through the CLI entry point) with a stand-in model: single, batch, errors, PHI."""

from __future__ import annotations

import json
import logging

import pytest
from inference_helpers import assert_no_phi, make_predictor

from medmm.cli import main


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """`load_model` returns the stand-in predictor (the real one is covered in test_end_to_end.py)."""
    import medmm.inference

    predictor = make_predictor(tmp_path)
    monkeypatch.setattr(medmm.inference, "load_model", lambda *a, **k: predictor)
    run_dir = tmp_path / "run_tiny"
    (run_dir / "medmm.json").write_text("{}")
    return run_dir


def run_cli(args, capfd):
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["dicom", "zip", "nifti"])
def test_single_scan(kind, scans, fake_model, tmp_path, capfd, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    extra = ["--dicom-sr"] if kind != "nifti" else []
    code, out, err = run_cli(["infer", str(scans[kind]), "--model", str(fake_model), "--fhir", "-q", *extra], capfd)
    assert code == 0, err
    out_dir = tmp_path / "medmm_out" / scans[kind].name.split(".")[0]
    expected = {"result.json", "report.html", "fhir.json"} | ({"report_sr.dcm"} if extra else set())
    assert {p.name for p in out_dir.iterdir()} == expected
    assert "result.json" in out
    assert_no_phi([*out_dir.iterdir(), out, err, caplog.text])


def test_prints_findings_and_report(scans, fake_model, tmp_path, capfd):
    code, out, _ = run_cli(["infer", str(scans["nifti"]), "--model", str(fake_model), "--out", str(tmp_path / "o")], capfd)
    assert code == 0 and "Pleural effusion" in out and "Report:" in out
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert doc["report"] in out


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda s, t: ["infer", str(t / "missing.nii.gz")], "does not exist"),
        (lambda s, t: ["infer", str(s["dicom"]), "--out", str(s["dicom"] / "res")], "inside the input"),
        (lambda s, t: ["infer", str(t / "bad.nii.gz")], "bad.nii.gz"),
        (lambda s, t: ["infer", str(s["nifti"]), "--dicom-sr", "--out", str(t / "o")], "DICOM"),
    ],
)
def test_bad_input_exits_2_with_one_line(make_args, message, scans, fake_model, tmp_path, capfd):
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti at all")
    code, out, err = run_cli([*make_args(scans, tmp_path), "--model", str(fake_model)], capfd)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in err + out


def test_batch_folder_resume_and_failure(scans, fake_model, tmp_path, capfd):
    import shutil

    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copytree(scans["dicom"], batch / "case_a")
    shutil.copy(scans["nifti"], batch / "case_b.nii.gz")
    shutil.copy(scans["zip"], batch / "case_c.zip")
    (batch / "case_bad.nii.gz").write_bytes(b"garbage")
    out = tmp_path / "out"
    args = ["infer", str(batch), "--model", str(fake_model), "--out", str(out), "--fhir"]

    code, stdout, err = run_cli(args, capfd)
    assert code == 0, err
    assert "3 done, 0 skipped (already finished), 1 failed" in stdout
    assert [line for line in err.splitlines() if line.startswith("failed")] == [
        line for line in err.splitlines() if "case_bad" in line and line.startswith("failed")
    ]
    assert sorted(p.name for p in out.iterdir()) == ["case_a", "case_b", "case_c"]
    mtimes = {p.name: (p / "result.json").stat().st_mtime_ns for p in out.iterdir()}

    code, stdout, _ = run_cli(args, capfd)
    assert code == 0 and "0 done, 3 skipped (already finished), 1 failed" in stdout
    assert mtimes == {p.name: (p / "result.json").stat().st_mtime_ns for p in out.iterdir()}
    assert_no_phi([f for d in out.iterdir() for f in d.iterdir()])


def test_batch_redoes_scans_of_another_model(scans, fake_model, tmp_path, capfd):
    import shutil

    batch = tmp_path / "b"
    batch.mkdir()
    shutil.copy(scans["nifti"], batch / "one.nii.gz")
    out = tmp_path / "out"
    run_cli(["infer", str(batch), "--model", str(fake_model), "--out", str(out)], capfd)
    doc = json.loads((out / "one" / "result.json").read_text())
    doc["model"]["id"] = "another@000000000000"
    (out / "one" / "result.json").write_text(json.dumps(doc))
    code, stdout, _ = run_cli(["infer", str(batch), "--model", str(fake_model), "--out", str(out)], capfd)
    assert code == 0 and stdout.startswith("1 done, 0 skipped")


def test_batch_manifest(scans, fake_model, tmp_path, capfd):
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"case_id": "c1", "patient_id": "p1", "image": str(scans["nifti"]), "indication": "fever"},
        {"case_id": "c2", "patient_id": "p2", "image": str(scans["dicom"])},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["infer", str(manifest), "--model", str(fake_model), "--out", str(out)], capfd)
    assert code == 0, err
    assert stdout.startswith("2 done")
    assert json.loads((out / "c1" / "result.json").read_text())["indication"] == "fever"
