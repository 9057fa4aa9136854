"""The running service: model, job store, workers, DICOM node, drift, retention — started and stopped together.

HTTP routes (:mod:`medmm.serve.app`) and the DICOM node (:mod:`medmm.serve.dicom_node`) are two
doors into the same :class:`Service`; neither has model logic of its own.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from medmm.serve.audit import AuditLog
from medmm.serve.config import ServeConfig
from medmm.serve.drift import DriftMonitor, ensure_reference, hu_sample, hu_window_of
from medmm.serve.metrics import ServeMetrics
from medmm.serve.ratelimit import RateLimiter
from medmm.serve.store import JobStore
from medmm.serve.tokens import TokenStore
from medmm.serve.worker import WorkerPool

log = logging.getLogger("medmm.serve")


class Service:
    """Everything behind ``medmm serve`` (see module docstring)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        state = Path(config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(state)
        self.metrics = ServeMetrics()
        self.audit = AuditLog(state / "audit.jsonl")
        self.tokens = TokenStore(config.tokens_file) if config.tokens_file else None
        self.rate = RateLimiter(config.limits.rate_per_minute, config.limits.rate_burst)
        self.pool = WorkerPool(self, config.limits.max_concurrent)
        self.predictor: Any = None
        self.drift: DriftMonitor | None = None
        self.dicom: Any = None
        self.model_ready = threading.Event()
        self.stopping = threading.Event()
        self.load_error: str | None = None
        self._threads: list[threading.Thread] = []

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Load the model (background), resume durable jobs, start workers, retention and DICOM node."""
        if self.tokens is None:
            log.warning("no tokens file: every endpoint except /healthz answers 401 (add one with "
                        "`medmm serve token add NAME --tokens-file F`)")
        if purged := self.store.purge_uncommitted():
            log.info("deleted %d uploads cut off by a restart (never accepted)", len(purged))
        for job_id in self.store.recover():
            self.pool.submit(job_id)
        self.pool.start()
        self._spawn(self._load_model, "medmm-load")
        self._spawn(self._retention_loop, "medmm-retention")
        if self.config.dicom.port is not None:
            from medmm.serve.dicom_node import DicomNode

            self.dicom = DicomNode(self)
            self.dicom.start()

    def stop(self) -> None:
        self.stopping.set()
        self.model_ready.set()  # release workers still waiting for a model that will not come
        if self.dicom is not None:
            self.dicom.stop()
        self.pool.stop()
        self.store.close()

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _load_model(self) -> None:
        from medmm.errors import MedmmError
        from medmm.inference import load_model

        try:
            self.predictor = load_model(self.config.model, device=self.config.device)
        except MedmmError as err:
            self.load_error = str(err)
            log.error("model not loaded: %s", err)
            return
        self.metrics.model_info.labels(model_id=self.predictor.model_id).set(1)
        log.info("model %s loaded on %s", self.predictor.model_id, self.predictor.device)
        drift_cfg = self.config.drift
        if drift_cfg.enabled:
            self.drift = DriftMonitor(None, self.metrics, drift_cfg.psi_alert, drift_cfg.per_feature,
                                      drift_cfg.min_samples, drift_cfg.window, hu_window_of(self.predictor))
        self.model_ready.set()
        self.metrics.ready.set(1)
        if self.drift is not None:
            self.drift.set_reference(ensure_reference(self.predictor, Path(self.config.state_dir)))

    def _retention_loop(self) -> None:
        interval = max(1.0, min(60.0, self.config.retention_s / 4))
        while not self.stopping.wait(interval):
            purged = self.store.purge_finished(self.config.retention_s)
            if purged:
                log.info("retention: deleted %d finished jobs", len(purged))

    # ----------------------------------------------------------------- helpers
    @property
    def ready(self) -> bool:
        return self.model_ready.is_set() and self.predictor is not None

    def queue_full(self) -> bool:
        return self.store.count("queued") >= self.config.limits.max_queue

    def scrub(self, message: str, job: Any) -> str:
        """An error line with the spool path of ``job`` replaced by ``input`` (paths are internal)."""
        return " ".join(message.replace(str(self.store.input_path(job)), "input").replace(
            str(self.store.job_dir(job.id)), "job").split())

    def drift_sample(self, hu: Any):
        """The HU sample of a scan the drift monitor keeps (None when drift is off)."""
        return hu_sample(hu, hu_window_of(self.predictor)) if self.drift is not None else None

    def after_dicom_job(self, job: Any, result: Any, durations: dict[str, float]) -> None:
        """Send the SR of a DICOM-node job to the destination (``result`` None: the job failed)."""
        if result is None:
            self.metrics.dicom_series.labels(outcome="failed").inc()
        elif self.dicom is not None:
            self.dicom.send_result(job, result, durations)
