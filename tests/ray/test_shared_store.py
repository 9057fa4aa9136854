"""The job table as Ray Serve replicas share it: a starting replica never takes a live replica's job."""

from __future__ import annotations

import time

from medmm.serve.ray_serve import SharedJobStore


def test_recover_requeues_only_stale_running_jobs(tmp_path):
    store = SharedJobStore(tmp_path, stale_after_s=60)
    for job_id in ("live", "dead", "waiting"):
        (store.job_dir(job_id)).mkdir(parents=True)
        store.add(job_id, "http", "nifti", "input.nii.gz")
    store.set_status("live", "running")
    store.set_status("dead", "running")
    store._db.execute("UPDATE jobs SET started=? WHERE id='dead'", (time.time() - 3600,))  # its replica died

    queued = store.recover()

    assert store.get("live").status == "running"  # another replica is running it right now
    assert sorted(queued) == ["dead", "waiting"]
    store.close()


def test_start_keeps_an_upload_another_replica_is_receiving(tmp_path):
    import os

    store = SharedJobStore(tmp_path, stale_after_s=60)
    receiving, abandoned = store.job_dir("receiving"), store.job_dir("abandoned")
    for folder in (receiving, abandoned):
        folder.mkdir(parents=True)
        (folder / "upload.part").write_bytes(b"partial")
    old = time.time() - 3600
    for path in (abandoned / "upload.part", abandoned):
        os.utime(path, (old, old))

    assert store.purge_uncommitted() == ["abandoned"]
    assert receiving.is_dir() and not abandoned.exists()
    store.close()
