"""The worker pool: at most K jobs diagnosed at once, fed in arrival order from the job table.

Each job: load the volume (the same reader and checks as ``medmm infer``) → HU histogram for
drift → ``Predictor.predict`` → writers (result.json, report.html, FHIR, and the de-identified SR
for DICOM input) → for DICOM-node jobs, C-STORE the SR to the destination. Every stage is timed
into ``medmm_job_stage_seconds``; the outcome goes to the job table, the metrics and the audit log.
A job that fails gets its one-line error; a bug in one job never stops the pool.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from medmm.errors import MedmmError

log = logging.getLogger("medmm.serve")
INTERNAL_ERROR = "internal error (see the server log)"


class WorkerPool:
    """K threads taking job ids from a queue (the job table is the durable copy of that queue)."""

    def __init__(self, service: Any, workers: int):
        self.service = service
        self.n_workers = workers
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._waiters: dict[str, list[Future]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.n_workers):
            thread = threading.Thread(target=self._loop, name=f"medmm-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Let running jobs finish; queued ones stay queued in the table for the next start."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def submit(self, job_id: str) -> Future:
        """Queue ``job_id``; the future resolves to the finished :class:`~medmm.serve.store.Job`."""
        future: Future = Future()
        with self._lock:
            self._waiters.setdefault(job_id, []).append(future)
        self._queue.put(job_id)
        self.service.metrics.queue_depth.set(self.service.store.count("queued"))
        return future

    def _loop(self) -> None:
        self.service.model_ready.wait()
        while True:
            job_id = self._queue.get()
            if job_id is None or self.service.stopping.is_set():
                return
            try:
                self._run(job_id)
            except Exception:  # noqa: BLE001 - a bug in one job must not kill the worker
                log.exception("job %s: internal error", job_id)
                self.service.store.set_status(job_id, "failed", INTERNAL_ERROR)
            finally:
                job = self.service.store.get(job_id)
                with self._lock:
                    waiters = self._waiters.pop(job_id, [])
                for future in waiters:
                    future.set_result(job)
                self.service.metrics.queue_depth.set(self.service.store.count("queued"))

    def _run(self, job_id: str) -> None:
        svc = self.service
        job = svc.store.get(job_id)
        if job is None or job.status != "queued":
            return
        svc.store.set_status(job_id, "running")
        svc.metrics.queue_depth.set(svc.store.count("queued"))
        svc.metrics.stage_seconds.labels(stage="queue_wait").observe(max(0.0, time.time() - job.created))
        durations: dict[str, float] = {}
        svc.metrics.inflight.inc()
        try:
            result = self._diagnose(job, durations)
            svc.store.set_status(job_id, "done")
            outcome, error = "done", None
        except MedmmError as err:
            outcome, error, result = "failed", svc.scrub(str(err), job), None
            svc.metrics.errors.labels(type=type(err).__name__).inc()
            svc.store.set_status(job_id, "failed", error)
            log.info("job %s failed: %s", job_id, error)
        except Exception as err:  # noqa: BLE001 - a bug: logged with its traceback, the job fails
            outcome, error, result = "failed", INTERNAL_ERROR, None
            svc.metrics.errors.labels(type=type(err).__name__).inc()
            svc.store.set_status(job_id, "failed", error)
            log.exception("job %s: internal error", job_id)
        finally:
            svc.metrics.inflight.dec()
        svc.metrics.jobs.labels(source=job.source, outcome=outcome).inc()
        svc.audit.record("job", token=job.token, job_id=job_id, input_sha256=job.input_sha256, outcome=outcome,
                         error=error, source=job.source, durations_s={k: round(v, 4) for k, v in durations.items()})
        if job.source == "dicom":
            svc.after_dicom_job(job, result, durations)

    def _diagnose(self, job: Any, durations: dict[str, float]) -> Any:
        from medmm.inference.writers import write_outputs
        from medmm.io import load_volume

        svc = self.service
        timed = _Timer(svc.metrics, durations)
        with timed("load"):
            volume = load_volume(svc.store.input_path(job))
            drift_sample = svc.drift_sample(volume.array)
        with timed("model"):
            result = svc.predictor.predict(volume, indication=job.indication)
        del volume
        with timed("writers"):
            write_outputs(result, svc.store.out_dir(job.id), html=True, fhir=True,
                          dicom_sr=bool(result.source_files), keep_phi=job.keep_phi)
        if drift_sample is not None:
            svc.drift.observe(drift_sample, {r["finding"]: bool(r["positive"]) for r in result.findings})
        return result


class _Timer:
    """``with timer("stage"):`` records the stage's seconds in the histogram and ``durations``."""

    def __init__(self, metrics: Any, durations: dict[str, float]):
        self.metrics, self.durations = metrics, durations

    def __call__(self, stage: str) -> "_Stage":
        return _Stage(self, stage)


class _Stage:
    def __init__(self, timer: _Timer, stage: str):
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self.start
        self.timer.durations[self.stage] = seconds
        self.timer.metrics.stage_seconds.labels(stage=self.stage).observe(seconds)


def timer(metrics: Any, durations: dict[str, float]) -> Callable[[str], _Stage]:
    """A stage timer writing into ``metrics`` and ``durations`` (also used by the DICOM node)."""
    return _Timer(metrics, durations)
