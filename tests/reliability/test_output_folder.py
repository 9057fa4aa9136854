"""Class 5 of issue 21: an output folder holds one complete output set of one scan, never debris.

* concurrent runs into one ``--out`` never mix scans (the folder is locked; the set is swapped in
  whole, result.json last);
* a re-run removes outputs it does not write (``--no-html`` leaves no old report.html);
* a killed run's staging folders and ``.*.tmp`` files are cleaned when the next run starts;
* outputs never go inside the input series; unusable ``--out`` and ``--dicom-sr`` on NIfTI fail
  before the model is loaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from medmm.errors import MedmmInputError
from medmm.inference.writers import write_outputs
from medmm.io.writers import write_nifti

from .realrun import AFFINE, one_error_line, phantom, run_cli, shared_run, write_phi_series


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("out_scans")
    a, _ = write_phi_series(root / "a")
    b = write_nifti(phantom((24, 24, 12), seed=3), AFFINE, root / "b.nii.gz")
    return {"dicom": a, "nifti": b}


@pytest.fixture(scope="module")
def results(predictor, scans):
    return {k: predictor.predict(v) for k, v in scans.items()}


@pytest.fixture
def no_model(monkeypatch):
    """load_model must not be reached: the failure has to come first."""
    import medmm.inference

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the output checks failed")

    monkeypatch.setattr(medmm.inference, "load_model", refuse)


def _one_scan(out: Path) -> None:
    """Every output in ``out`` belongs to the scan named in result.json."""
    doc = json.loads((out / "result.json").read_text())
    text = (out / "result.json").read_text()
    shape = doc["input"]["shape"]
    if (out / "report.html").exists():
        assert f"input {shape} voxels" in (out / "report.html").read_text().replace("\n", " ")
    if (out / "fhir.json").exists():
        bundle = json.loads((out / "fhir.json").read_text())
        ns = uuid.uuid5(uuid.NAMESPACE_URL, f"medmm:{doc['model']['id']}:{text}")
        assert bundle["entry"][0]["resource"]["id"] == str(uuid.uuid5(ns, "report")), "fhir.json of another scan"


def _debris(out: Path) -> list[str]:
    """Hidden files inside ``out`` and staging folders next to it."""
    inside = [p.name for p in out.rglob(".*")]
    return sorted(inside + [p.name for p in out.parent.glob(f".{out.name}.medmm-staging-*")])


# ------------------------------------------------------------------ stale outputs
def test_rerun_with_no_html_removes_the_old_html_and_fhir(cached_model, scans, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["infer", str(scans["dicom"]), "--model", "m", "--out", str(out), "-q", "--fhir"], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"result.json", "report.html", "fhir.json"}
    code, _, err = run_cli(["infer", str(scans["nifti"]), "--model", "m", "--out", str(out), "-q", "--no-html"], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"result.json"}
    assert json.loads((out / "result.json").read_text())["input"]["shape"] == [24, 24, 12]


@pytest.mark.parametrize("first,second,left", [
    ({"fhir": True}, {}, {"result.json", "report.html"}),
    ({"html": False}, {"fhir": True}, {"result.json", "report.html", "fhir.json"}),
    ({"fhir": True, "html": True}, {"html": False}, {"result.json"}),
])
def test_api_rewrite_keeps_exactly_the_new_set(results, scans, tmp_path, first, second, left):
    out = tmp_path / "o"
    write_outputs(results["dicom"], out, **first)
    write_outputs(results["nifti"], out, **second)
    assert {p.name for p in out.iterdir()} == left
    _one_scan(out)


def test_files_medmm_did_not_write_are_kept(results, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / ".hidden_user_file").write_text("mine too")
    write_outputs(results["dicom"], out, html=False)
    write_outputs(results["nifti"], out, html=False)
    assert (out / "notes.txt").read_text() == "mine" and (out / ".hidden_user_file").exists()


def test_failed_write_keeps_the_previous_complete_set(results, tmp_path, monkeypatch):
    import medmm.inference.writers.files as files

    out = tmp_path / "o"
    write_outputs(results["dicom"], out, fhir=True, html=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "atomic_write_text", disk_full)
    with pytest.raises(MedmmInputError, match="No space left"):
        write_outputs(results["nifti"], out, fhir=True, html=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _debris(out) == []


def test_failed_first_run_leaves_no_empty_folder(no_model, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    nifti = write_nifti(phantom(), AFFINE, tmp_path / "x.nii.gz")
    code, _, err = run_cli(["infer", str(nifti), "--model", "m", "--out", str(out), "--dicom-sr"], capsys)
    assert code == 2 and not out.exists()


# ------------------------------------------------------------------ debris of killed runs
def test_debris_and_incomplete_sets_are_cleaned_on_start(results, tmp_path):
    out = tmp_path / "o"
    (out / ".medmm-staging-4242-abcd").mkdir(parents=True)
    (out / ".medmm-staging-4242-abcd" / "report_sr.dcm").write_bytes(b"half")
    (tmp_path / ".o.medmm-staging-4243-efgh").mkdir()
    (tmp_path / ".o.medmm-staging-4243-efgh" / ".report_sr.dcm.x.tmp").write_bytes(b"half")
    (out / ".report_sr.dcm.k1ll3d.tmp").write_bytes(b"half")
    (out / ".result.json.x.tmp").write_bytes(b"{")
    (out / "report.html").write_text("<html>of a killed run, no result.json</html>")
    write_outputs(results["nifti"], out, html=False)
    assert _debris(out) == [] and {p.name for p in out.iterdir()} == {"result.json"}


@pytest.mark.slow
def test_sigkill_mid_write_then_rerun_leaves_one_clean_set(scans, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medmm", "infer", str(scans["dicom"]), "--model", str(run), "--out", str(out),
           "--device", "cpu", "-q", "--dicom-sr", "--fhir"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if any(tmp_path.glob(".out.medmm-staging-*")):
                break
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # the process this test started, by id
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert not [p for p in out.rglob(".*")], "a killed run left hidden files inside --out"
    if (out / "result.json").exists():
        _one_scan(out)  # killed after the commit: a complete set
    done = subprocess.run(cmd[:-1] + ["--no-html"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _debris(out) == [] and {p.name for p in out.iterdir()} == {"result.json", "report_sr.dcm"}


# ------------------------------------------------------------------ concurrency
def test_concurrent_writers_never_mix_scans(results, tmp_path):
    out = tmp_path / "o"
    errors = []

    def writer(kind, rounds=6):
        try:
            for _ in range(rounds):
                write_outputs(results[kind], out, html=False, fhir=True)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in ("dicom", "nifti", "dicom", "nifti")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    _one_scan(out)
    assert _debris(out) == []


def test_a_locked_folder_makes_the_second_run_wait_then_time_out(results, tmp_path):
    from medmm.inference.writers.outfolder import OutputFolder

    out = tmp_path / "o"
    waited = []
    with OutputFolder(out):
        def second():
            try:
                with OutputFolder(out, on_wait=waited.append, timeout=0.5):
                    pass
            except MedmmInputError as err:
                waited.append(str(err))
        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=30)
    assert waited and "waiting for another medmm run" in waited[0] and "in use by another medmm run" in waited[-1]


@pytest.mark.slow
def test_two_cli_processes_into_one_out(scans, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-m", "medmm", "infer", str(scans[k]), "--model", str(run), "--out",
                               str(out), "--device", "cpu", "-q", "--fhir"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in ("dicom", "nifti")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    _one_scan(out)
    assert _debris(out) == []


# ------------------------------------------------------------------ where outputs may go
@pytest.mark.parametrize("rel", ["results", "results/deeper", ".", "../series/x"])
def test_single_slice_input_cannot_write_into_its_series(no_model, scans, tmp_path, capsys, rel):
    import shutil

    series = tmp_path / "series"
    shutil.copytree(scans["dicom"], series)
    one = sorted(series.iterdir())[3]
    before = sorted(p.name for p in series.rglob("*"))
    out = series / rel
    code, _, err = run_cli(["infer", str(one), "--model", "m", "--out", str(out), "-q"], capsys)
    assert code == 2 and one_error_line(err) and "input" in err, err
    assert sorted(p.name for p in series.rglob("*")) == before


def test_nifti_input_may_write_into_a_subfolder_of_its_folder(results, scans, tmp_path):
    from medmm.inference.writers import check_out_dir

    nifti = scans["nifti"]
    assert check_out_dir(nifti.parent / "results", nifti) == (nifti.parent / "results").resolve()


def test_dicom_sr_on_nifti_fails_before_the_model(no_model, scans, tmp_path, capsys):
    code, _, err = run_cli(["infer", str(scans["nifti"]), "--model", "m", "--out", str(tmp_path / "o"),
                            "--dicom-sr"], capsys)
    assert code == 2 and one_error_line(err) and "--dicom-sr needs a DICOM input" in err, err


def test_dicom_sr_on_nifti_in_a_batch_fails_that_scan_without_inference(cached_model, scans, tmp_path, capsys,
                                                                        monkeypatch):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "b.nii.gz").write_bytes(scans["nifti"].read_bytes())
    calls = []
    monkeypatch.setattr(type(cached_model), "predict", lambda self, *a, **k: calls.append(a))
    code, out, err = run_cli(["infer", str(batch), "--model", "m", "--out", str(tmp_path / "o"), "--dicom-sr", "-q"],
                             capsys)
    assert code == 0 and "1 failed" in out and "--dicom-sr needs a DICOM input" in out and calls == []


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a read-only /sys")
@pytest.mark.parametrize("target", ["/sys/kernel", "/sys/kernel/medmm_out"])
def test_read_only_out_fails_before_the_model(no_model, scans, capsys, target):
    code, _, err = run_cli(["infer", str(scans["nifti"]), "--model", "m", "--out", target, "-q"], capsys)
    assert code == 2 and one_error_line(err) and target in err and "cannot write outputs" in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_out_folder_by_permissions(no_model, scans, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = run_cli(["infer", str(scans["nifti"]), "--model", "m", "--out", str(out), "-q"], capsys)
    finally:
        out.chmod(0o755)
    assert code == 2 and one_error_line(err) and "cannot write outputs" in err, err


def test_unwritable_out_probe_fails_before_the_model(no_model, scans, tmp_path, capsys, monkeypatch):
    import medmm.inference.writers.outfolder as outfolder

    def denied(out):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outfolder, "_probe_writable", denied)
    code, _, err = run_cli(["infer", str(scans["nifti"]), "--model", "m", "--out", str(tmp_path / "o"), "-q"], capsys)
    assert code == 2 and one_error_line(err) and "Permission denied" in err, err
    assert not (tmp_path / "o").exists()
