"""``medmm serve --ray``: the same FastAPI app and :class:`Service` on autoscaled Ray Serve replicas.

Each replica builds the app of :mod:`medmm.serve.app` over its own :class:`Service` (its own
model, worker pool and metrics), so routes, auth, limits and error answers are exactly those of
the single-process server. Ray Serve's proxy spreads requests over the replicas and adds one
when the ongoing requests per replica exceed ``target_ongoing_requests`` (default: the
inferences a replica runs at once, ``limits.max_concurrent``), down to ``min_replicas`` when idle.

All replicas share ``state_dir`` (one job table): a job is run by the replica that accepted it,
and any replica answers its status and artefacts. On a multi-node cluster ``state_dir`` must
therefore be storage every node sees. The DICOM node is not part of the Ray deployment (one
fixed port cannot be spread over replicas): run it with a plain ``medmm serve --dicom-port``.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmm.errors import MedmmConfigError
from medmm.serve.config import ServeConfig
from medmm.serve.store import JobStore

log = logging.getLogger("medmm.serve")
APP_NAME = "medmm"


@dataclass
class ReplicaSettings:
    """Cluster address, replica count range and size (see ``medmm serve --help``)."""

    address: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float | None = None
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0


class SharedJobStore(JobStore):
    """The job table as replicas share it: a (re)starting replica must not take over jobs that
    another live replica is running, so only ``running`` rows older than ``stale_after_s`` (their
    replica died) go back to the queue, and only uploads idle that long are purged; queued rows
    are taken by whichever worker claims them first."""

    def __init__(self, state_dir: str | Path, stale_after_s: float):
        super().__init__(state_dir)
        self.stale_after_s = stale_after_s

    def recover(self) -> list[str]:
        with self._lock:
            self._db.execute("UPDATE jobs SET status='queued', started=NULL WHERE status='running' AND started < ?",
                             (time.time() - self.stale_after_s,))
        return self.ids_with_status("queued")

    def purge_uncommitted(self) -> list[str]:
        """As :meth:`JobStore.purge_uncommitted`, but only for uploads untouched for ``stale_after_s``:
        a spool folder without a row may be an upload another live replica is receiving now."""
        cutoff = time.time() - self.stale_after_s
        purged = []
        for folder in self.spool.iterdir():
            if (folder.is_dir() and not (folder / "input").is_dir() and self.get(folder.name) is None
                    and _last_change(folder) < cutoff):
                shutil.rmtree(folder, ignore_errors=True)
                purged.append(folder.name)
        return purged


def _last_change(folder: Path) -> float:
    """Latest modification time of ``folder`` and the files directly in it (0 if it vanished)."""
    try:
        return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
    except OSError:
        return 0.0


class MedmmReplica:
    """One Ray Serve replica: a :class:`Service` and its FastAPI app (wrapped by ``serve.ingress``)."""

    def __init__(self, config: ServeConfig):
        self.config = config

    def __serve_build_asgi_app__(self) -> Any:
        from medmm.serve.app import create_app
        from medmm.serve.server import configure_logging
        from medmm.serve.service import Service

        configure_logging("INFO")
        service = Service(self.config)
        service.store.close()
        service.store = SharedJobStore(self.config.state_dir, self.config.limits.predict_timeout_s)
        return create_app(service)  # its lifespan starts and stops the service with the replica


def check_ray_config(config: ServeConfig, settings: ReplicaSettings) -> None:
    """Refuse what the Ray deployment does not do (one line, before any cluster is touched)."""
    if config.dicom.port is not None:
        raise MedmmConfigError("--dicom-port", "the DICOM node does not run under --ray (one port cannot be spread "
                               "over replicas); run it with a plain `medmm serve --dicom-port` next to the deployment")
    if not 1 <= settings.min_replicas <= settings.max_replicas:
        raise MedmmConfigError("--min-replicas/--max-replicas",
                               f"need 1 <= min ({settings.min_replicas}) <= max ({settings.max_replicas})")


def build_app(config: ServeConfig, settings: ReplicaSettings) -> Any:
    """The Ray Serve application (deployment bound to ``config``), autoscaling on ongoing requests."""
    from ray import serve

    target = settings.target_ongoing_requests or float(config.limits.max_concurrent)
    deployment = serve.deployment(
        serve.ingress()(MedmmReplica),
        name="medmm",
        ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica},
        # a replica queues beyond its running inferences (its own job table bounds the queue)
        max_ongoing_requests=max(8, 4 * config.limits.max_concurrent),
        autoscaling_config={"min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
                            "target_ongoing_requests": target},
        health_check_period_s=10,
    )
    return deployment.bind(config)


def deploy(config: ServeConfig, settings: ReplicaSettings) -> str:
    """Connect to (or start) Ray, start Serve's HTTP proxy on ``config``'s host/port, deploy; returns the URL."""
    from medmm.scale import import_ray
    from medmm.scale.ray_batch import connect

    check_ray_config(config, settings)
    serve = import_ray(serve=True).serve
    connect(settings.address, log_to_driver=True)  # replicas' log lines are the server's log
    config = config.model_copy(update={"state_dir": Path(config.state_dir).resolve()})  # replicas run elsewhere
    if config.model is not None:
        config = config.model_copy(update={"model": Path(config.model).resolve()})
    http = {"host": config.host, "port": config.port}
    if config.ssl_certfile:
        http.update(ssl_certfile=str(config.ssl_certfile), ssl_keyfile=str(config.ssl_keyfile))
    serve.start(http_options=http)
    serve.run(build_app(config, settings), name=APP_NAME, route_prefix="/")
    scheme = "https" if config.ssl_certfile else "http"
    return f"{scheme}://{config.host}:{config.port}"


def run_ray_server(config: ServeConfig, settings: ReplicaSettings) -> None:
    """Deploy, then serve until Ctrl-C / SIGTERM; the deployment is deleted on the way out."""
    from medmm.serve.server import configure_logging

    configure_logging("INFO")
    url = deploy(config, settings)
    from ray import serve

    log.info("medmm serve on Ray: %s (%d-%d replicas)", url, settings.min_replicas, settings.max_replicas)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.delete(APP_NAME)
    serve.shutdown()
