"""`medmm infer MANIFEST --ray` on a local 2-CPU Ray instance: same outputs as one process,
resumable, failures listed, and a worker killed mid-batch loses no scan."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from reliability.realrun import run_cli

pytest.importorskip("ray", reason="medmm[ray] extra not installed")
pytestmark = pytest.mark.slow


def _results(out: Path) -> dict[str, dict]:
    """Per scan: findings with their probabilities and calls, the report and the model id."""
    docs = {}
    for path in sorted(out.glob("*/result.json")):
        doc = json.loads(path.read_text())
        docs[path.parent.name] = {"model": doc["model"]["id"], "report": doc.get("report"),
                                  "findings": {f["finding"]: (round(f["probability"], 6), f["positive"])
                                               for f in doc["findings"]}}
    return docs




def test_two_workers_equal_one_process_and_resume(ray_local, tiny_run, cohort, tmp_path, capfd):
    from medmm.inference import load_model
    from medmm.inference.batch import discover_jobs, run_batch

    jobs = discover_jobs(cohort)
    single = run_batch(load_model(tiny_run, device="cpu"), jobs, tmp_path / "single", {"html": True}, progress=False,
                       echo=lambda m: None)
    assert len(single.done) == 6 and [n for n, _ in single.failed] == ["broken_case"]

    args = ["infer", str(cohort), "--model", str(tiny_run), "--out", str(tmp_path / "ray"), "--ray",
            "--workers", "2", "--device", "cpu", "-q"]
    code, out, err = run_cli(args, capfd)
    assert code == 0, err
    assert "6 done, 0 skipped (already finished), 1 failed" in out
    failures = [line for line in err.splitlines() if line.startswith("failed ")]
    assert len(failures) == 1 and failures[0].startswith("failed broken_case:") and "Traceback" not in err

    ray_docs, single_docs = _results(tmp_path / "ray"), _results(tmp_path / "single")
    assert len(ray_docs) == 6 and ray_docs == single_docs
    for name in single_docs:  # the same files, not only the same numbers
        assert sorted(p.name for p in (tmp_path / "ray" / name).iterdir()) == \
            sorted(p.name for p in (tmp_path / "single" / name).iterdir())

    code, out, _ = run_cli(args, capfd)  # resumable: finished scans are skipped, only the broken one retried
    assert code == 0 and "0 done, 6 skipped (already finished), 1 failed" in out


def test_killed_worker_loses_no_scan(ray_local, tiny_run, cohort, tmp_path):
    from medmm.inference.batch import discover_jobs
    from medmm.scale import RayBatch, RaySettings

    jobs = [j for j in discover_jobs(cohort) if j.name != "broken_case"]
    out = tmp_path / "out"
    with RayBatch(tiny_run, RaySettings(workers=2), device="cpu") as pool:
        victim = pool.pids()[0]
        killed = threading.Event()

        def kill_after_first_result() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not list(out.glob("*/result.json")):
                time.sleep(0.05)
            os.kill(victim, signal.SIGKILL)  # mid-batch: both workers are busy while scans remain
            killed.set()

        thread = threading.Thread(target=kill_after_first_result, daemon=True)
        thread.start()
        summary = pool.run(jobs, out, {"html": False}, progress=False, echo=lambda m: None)
        thread.join(10)
        assert killed.is_set()
        assert victim not in pool.pids()  # the worker really died and Ray restarted it
    assert summary.failed == [] and sorted(summary.done) == sorted(j.name for j in jobs)
    assert sorted(p.parent.name for p in out.glob("*/result.json")) == sorted(j.name for j in jobs)


def test_model_that_does_not_load_is_one_line(ray_local, cohort, tmp_path, capfd):
    run = tmp_path / "not_a_run"
    run.mkdir()
    (run / "medmm.json").write_text("{}")
    code, out, err = run_cli(["infer", str(cohort), "--model", str(run), "--out", str(tmp_path / "o"), "--ray",
                           "--workers", "1", "-q"], capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err + out, err


def test_scan_that_keeps_killing_its_worker_is_listed_and_the_batch_goes_on(ray_local, tiny_run, cohort, tmp_path):
    import crash_helpers
    from ray import cloudpickle

    from medmm.inference.batch import ScanJob, discover_jobs
    from medmm.scale import RayBatch, RaySettings

    cloudpickle.register_pickle_by_value(crash_helpers)  # workers cannot import the tests folder
    good = [j for j in discover_jobs(cohort) if j.name != "broken_case"][:2]
    jobs = [ScanJob("killer", crash_helpers.WorkerKillingPath()), *good]
    with RayBatch(tiny_run, RaySettings(workers=1, max_task_retries=1), device="cpu") as pool:
        summary = pool.run(jobs, tmp_path / "out", {"html": False}, progress=False, echo=lambda m: None)
    assert summary.failed == [("killer", "the worker died 2 times on this scan (out of memory, or the process "
                                         "was killed)")]
    assert sorted(summary.done) == sorted(j.name for j in good)  # the restarted worker went on
