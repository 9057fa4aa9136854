"""`--ray` option errors: one line, exit code 2, before any Ray cluster is started (fast)."""

from __future__ import annotations

import sys

import pytest

from reliability.realrun import run_cli


@pytest.fixture
def fake_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "medmm.json").write_text("{}")
    return run


def _one_error_line(err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_infer_ray_needs_a_batch(fake_run, tmp_path, capfd):
    scan = tmp_path / "one.nii.gz"
    scan.write_bytes(b"x")
    code, _, err = run_cli(["infer", str(scan), "--model", str(fake_run), "--ray"], capfd)
    assert code == 2
    _one_error_line(err, "--ray runs a batch")


def test_serve_ray_refuses_the_dicom_node(fake_run, capfd):
    pytest.importorskip("fastapi")
    code, _, err = run_cli(["serve", "--model", str(fake_run), "--ray", "--dicom-port", "11112", "--allow-ae", "X"], capfd)
    assert code == 2
    _one_error_line(err, "DICOM node does not run under --ray")


def test_serve_ray_replica_range(fake_run, capfd):
    pytest.importorskip("fastapi")
    code, _, err = run_cli(["serve", "--model", str(fake_run), "--ray", "--min-replicas", "3", "--max-replicas", "2"], capfd)
    assert code == 2
    _one_error_line(err, "min (3) <= max (2)")


def test_missing_ray_names_the_extra(monkeypatch):
    from medmm.errors import MedmmConfigError
    from medmm.scale import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MedmmConfigError, match=r"pip install 'medmm\[ray\]'"):
        import_ray()


def test_ray_options_need_ray(fake_run, tmp_path, capfd):
    folder = tmp_path / "cohort"
    (folder / "case").mkdir(parents=True)
    code, _, err = run_cli(["infer", str(folder), "--model", str(fake_run), "--workers", "2"], capfd)
    assert code == 2
    _one_error_line(err, "--workers: applies only with --ray")


def test_no_cluster_at_address_is_one_line(tmp_path, capfd, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no `ray start` cluster recorded here
    from medmm.errors import MedmmConfigError
    from medmm.scale import connect

    with pytest.raises(MedmmConfigError, match="no Ray cluster at 'auto'"):
        connect("auto")
