"""Faults: a killed training resumes losing at most the current epoch; a full disk or an
unwritable --out gives one clear line (exit 2) and leaves no half-written result file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .realrun import one_error_line, run_cli, shared_phi_scan, shared_run

TINY_WORKFLOW = """\
name: tiny-faults
seed: 0
data:
  source: synthetic
  synthetic: {{n: 8, size: 16, seed: 0, cache_dir: {cache}}}
preprocessing: {{spacing: [4, 4, 4], roi_size: [16, 16, 16]}}
network:
  report_generator: {{max_new_tokens: 8, max_report_tokens: 32}}
training:
  epochs: {epochs}
  batch_size: 4
  amp: false
  text: {{use_generated_report: false}}
inferer: {{roi_size: [16, 16, 16]}}
"""

def _epochs(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

@pytest.mark.slow
def test_sigkill_mid_training_then_resume_loses_at_most_one_epoch(tmp_path):
    wf = tmp_path / "tiny.yaml"
    wf.write_text(TINY_WORKFLOW.format(cache=tmp_path / "cache", epochs=3))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "medmm", "train", str(wf), "--run-dir", str(run_dir), "--device", "cpu", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not _epochs(run_dir) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        assert _epochs(run_dir), "no epoch finished in time"
        time.sleep(2.0)  # into epoch 2
        os.kill(proc.pid, signal.SIGKILL)  # the process this test started, by id
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    done_before = _epochs(run_dir)
    assert done_before and [r["epoch"] for r in done_before] == list(range(1, len(done_before) + 1))
    for name in ("medmm.json", "state.json"):
        json.loads((run_dir / name).read_text())  # every result file is complete JSON

    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-1000:]
    after = _epochs(run_dir)
    assert [r["epoch"] for r in after] == [1, 2, 3]
    assert after[: len(done_before)] == done_before  # finished epochs are kept, not redone
    from medmm.inference import load_model

    assert load_model(run_dir, device="cpu").labels

@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    return shared_run(tmp_path_factory)

@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return shared_phi_scan(tmp_path_factory)[0]

def _manifest(tmp_path: Path, scan: Path) -> Path:
    from medmm.labels import CT_RATE_FINDINGS

    header = "case_id,patient_id,image,report,indication,split," + ",".join(f'"{n}"' for n in CT_RATE_FINDINGS)
    rows = [f"c{i},p{i},{scan},,,test," + ",".join(str((i + j) % 2) for j in range(18)) for i in range(2)]
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path

def _blocked_out(tmp_path: Path, kind: str) -> Path:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    return blocker if kind == "out-is-file" else blocker / "sub"

@pytest.mark.parametrize("kind", ["out-is-file", "parent-is-file"])
@pytest.mark.parametrize("command", ["infer", "evaluate"])
def test_unwritable_out_is_one_clear_line(real_run, scan, tmp_path, capsys, kind, command):
    out = _blocked_out(tmp_path, kind)
    argv = (["infer", str(scan), "--model", str(real_run), "--out", str(out), "--device", "cpu"] if command == "infer"
            else ["evaluate", str(real_run), "--data", str(_manifest(tmp_path, scan)), "--out", str(out), "--n-bootstrap", "10"])
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2, err
    assert one_error_line(err) and "Traceback" not in err and str(tmp_path / "blocker") in err
    assert (tmp_path / "blocker").read_text() == "not a folder"

class _DiskFull:
    """Wraps a file object: half of each write reaches the disk, then ENOSPC."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        self.fh.write(data[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)

@pytest.mark.parametrize("command", ["infer", "evaluate"])
def test_disk_full_leaves_no_half_written_result(real_run, scan, tmp_path, capsys, monkeypatch, command):
    out = tmp_path / "out"
    manifest = _manifest(tmp_path, scan)
    argv = (["infer", str(scan), "--model", str(real_run), "--out", str(out), "--device", "cpu"] if command == "infer"
            else ["evaluate", str(real_run), "--data", str(manifest), "--out", str(out), "--n-bootstrap", "10"])
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _DiskFull(real_fdopen(fd, *a, **k)))
    code, stdout, err = run_cli(argv, capsys)
    monkeypatch.undo()
    assert code == 2, err
    assert "No space left" in err and one_error_line(err)
    left = sorted(p.name for p in out.rglob("*") if p.is_file()) if out.exists() else []
    assert left == [], f"partial files left behind: {left}"
