"""Prometheus metrics of one server (its own registry, so several servers can live in one process).

Labels never carry PHI or unbounded values: endpoints are route *templates* (``/v1/jobs/{job_id}``),
error types are exception class names, features are finding names from the model's label list.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServeMetrics:
    """All metrics of ``medmm serve`` (names documented in ``docs/serve.md``)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("medmm_requests_total", "HTTP requests", ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("medmm_request_seconds", "HTTP request latency", ["endpoint"],
                                         buckets=_STAGE_BUCKETS, registry=r)
        self.stage_seconds = Histogram("medmm_job_stage_seconds", "job stage durations "
                                       "(queue_wait, load, model, writers, send)", ["stage"],
                                       buckets=_STAGE_BUCKETS, registry=r)
        self.jobs = Counter("medmm_jobs_total", "finished jobs", ["source", "outcome"], registry=r)
        self.errors = Counter("medmm_errors_total", "errors by type", ["type"], registry=r)
        self.queue_depth = Gauge("medmm_queue_depth", "jobs waiting for a worker", registry=r)
        self.inflight = Gauge("medmm_inflight_jobs", "jobs being diagnosed now", registry=r)
        self.ready = Gauge("medmm_ready", "1 when the model is loaded", registry=r)
        self.model_info = Gauge("medmm_model_info", "the served model (value 1)", ["model_id"], registry=r)
        self.rejected = Counter("medmm_rejected_total", "requests refused by a limit", ["reason"], registry=r)
        self.dicom_associations = Counter("medmm_dicom_associations_total", "DICOM associations", ["outcome"],
                                          registry=r)
        self.dicom_instances = Counter("medmm_dicom_instances_total", "DICOM instances received", registry=r)
        self.dicom_series = Counter("medmm_dicom_series_total", "DICOM series processed", ["outcome"], registry=r)
        self.drift_psi = Gauge("medmm_drift_psi", "population stability index vs the training reference",
                               ["feature"], registry=r)
        self.drift_alert = Gauge("medmm_drift_alert", "1 when a PSI is above its threshold", registry=r)
        self.drift_samples = Gauge("medmm_drift_samples", "scans in the running drift window", registry=r)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
