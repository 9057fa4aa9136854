"""Batch inference of a cohort on Ray: one actor per worker, each holding a loaded model.

The per-scan step, the "finished" test and the summary are the single-process batch mode's
(:mod:`medmm.inference.batch`), so outputs are the same files and a run mixes freely with
``medmm infer`` without ``--ray`` (resume either way). The driver hands one scan at a time to
each idle actor (a slow scan never holds up a queue behind it). A worker that dies (killed,
out of memory, node lost) is restarted by Ray and its scan retried, so no scan is lost; a scan
that kills its worker ``max_task_retries + 1`` times is listed as failed with that reason.

Inputs and outputs are paths: on a multi-node cluster they must be on storage every node sees.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmm.errors import MedmmConfigError, MedmmError, MedmmInputError
from medmm.inference.batch import BatchSummary, ScanJob, is_finished

# A locally started instance only moves paths and short strings between processes; Ray's default
# object store (30 % of RAM) would reserve memory the models need.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


def import_ray(serve: bool = False) -> Any:
    """The ``ray`` module (``ray.serve`` imported too with ``serve``), or a one-line error naming the extra.

    Ray's own import-time deprecation warnings (pydantic v1-style fields) are not the user's to act
    on, so they are not shown.
    """
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import ray

            if serve:
                import ray.serve
    except ImportError:
        extra = "'medmm[ray]'" if not serve else "'medmm[ray]' (it includes ray[serve])"
        raise MedmmConfigError("--ray", f"Ray is not installed: pip install {extra}") from None
    return ray


def connect(address: str | None, log_to_driver: bool = False) -> bool:
    """Join the Ray cluster at ``address`` (``"auto"``, ``HOST:PORT``, ``ray://HOST:PORT``) or, with
    None, start a new local instance; True when this call started Ray (the caller shuts it down).

    Raises:
        MedmmConfigError: no cluster answers at ``address``.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    where = {"address": address} if address is not None else \
        {"address": "local", "object_store_memory": LOCAL_OBJECT_STORE_BYTES}
    try:
        ray.init(include_dashboard=False, log_to_driver=log_to_driver, logging_level=logging.ERROR, **where)
    except ConnectionError as err:
        raise MedmmConfigError("--address", f"no Ray cluster at {address!r} ({' '.join(str(err).split())[:160]}); "
                               "start one with `ray start --head`, or omit --address for a local one") from None
    return True


@dataclass
class RaySettings:
    """Where the cluster is and how each worker is sized.

    ``address``: None starts a new local Ray instance; ``"auto"`` joins the running cluster (``ray
    start`` on this machine, or ``RAY_ADDRESS``); ``ray://host:10001`` a remote one.
    ``workers``: None = as many as the cluster's CPUs/GPUs fit. ``gpus_per_worker``: None = 1
    when the cluster has GPUs, else 0 (fractions share a GPU between workers).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    max_task_retries: int = 2


class _CaseWorker:
    """A Ray actor: loads the model once, then diagnoses scans with the batch mode's step.

    A model that does not load comes back as data (:func:`_error_data`), not as an exception:
    medmm's errors do not survive Ray's exception pickling with their one-line message.
    """

    def __init__(self, run_dir: str, load_options: dict[str, Any]):
        self.run_dir, self.load_options, self.predictor = run_dir, load_options, None

    def _model(self) -> Any:
        if self.predictor is None:  # also after a restart: an actor's state does not survive it
            from medmm.inference import load_model

            self.predictor = load_model(self.run_dir, **self.load_options)
        return self.predictor

    def model_id(self) -> tuple[str | None, tuple[str, str | None, str] | None]:
        """(model id, None), or (None, the load error as data)."""
        try:
            return self._model().model_id, None
        except MedmmError as err:
            return None, _error_data(err)

    def pid(self) -> int:
        return os.getpid()

    def diagnose(self, job: ScanJob, out_dir: str, writer_options: dict[str, Any], force: bool) -> str | None:
        from medmm.inference.batch import diagnose_job

        try:
            predictor = self._model()
        except MedmmError as err:  # e.g. the run directory vanished before a restarted worker reloaded it
            return f"the model did not load on this worker: {getattr(err, 'reason', err)}"
        return diagnose_job(predictor, job, out_dir, writer_options, force)


def _error_data(err: MedmmError) -> tuple[str, str | None, str]:
    """(kind, where, one-line reason) of a medmm error, to cross a process boundary."""
    if isinstance(err, MedmmConfigError):
        return "config", err.where, err.reason
    return "input", getattr(err, "path", None), str(getattr(err, "reason", err))


def _error_from_data(data: tuple[str, str | None, str]) -> MedmmError:
    kind, where, reason = data
    return (MedmmConfigError if kind == "config" else MedmmInputError)(where, reason)


class RayBatch:
    """A pool of model-holding actors on a Ray cluster (a context manager: actors end with it)."""

    def __init__(self, run_dir: str | Path, settings: RaySettings | None = None, device: str | None = None,
                 checkpoint: str = "best", allow_ontology_mismatch: bool = False):
        self.ray = import_ray()
        self.settings = settings or RaySettings()
        self.run_dir = str(run_dir)
        self.load_options = {"device": device, "checkpoint": checkpoint,
                             "allow_ontology_mismatch": allow_ontology_mismatch}
        self.actors: list[Any] = []
        self.model_id: str | None = None
        self._started_ray = False

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> "RayBatch":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Connect to (or start) Ray, start the actors and load the model in each.

        Raises:
            MedmmError: the model does not load (the first worker's one-line reason).
            MedmmConfigError: the cluster cannot host one worker of the requested size.
        """
        ray, s = self.ray, self.settings
        self._started_ray = connect(s.address)
        resources = ray.cluster_resources()
        gpus = s.gpus_per_worker if s.gpus_per_worker is not None else (1.0 if resources.get("GPU", 0) else 0.0)
        fit = int(resources.get("CPU", 0) // s.cpus_per_worker) if s.cpus_per_worker > 0 else 1 << 30
        if gpus > 0:
            fit = min(fit, int(resources.get("GPU", 0) // gpus))
        if fit < 1:
            raise MedmmConfigError("--ray", f"the Ray cluster ({_describe(resources)}) cannot host one worker of "
                                   f"{s.cpus_per_worker:g} CPU and {gpus:g} GPU")
        workers = min(s.workers or fit, fit)
        if s.workers and s.workers > fit:
            import warnings

            warnings.warn(f"only {fit} of {s.workers} workers fit the Ray cluster ({_describe(resources)})",
                          stacklevel=2)
        options = dict(self.load_options)
        if gpus > 0 and options["device"] is None:
            options["device"] = "cuda"
        elif gpus == 0 and options["device"] is None:
            options["device"] = "cpu"  # a worker without a GPU share must not grab a GPU it was not given
        actor_class = ray.remote(num_cpus=s.cpus_per_worker, num_gpus=gpus, max_restarts=-1,
                                 max_task_retries=s.max_task_retries)(_CaseWorker)
        self.actors = [actor_class.remote(self.run_dir, options) for _ in range(workers)]
        try:
            answers = ray.get([a.model_id.remote() for a in self.actors])
        except ray.exceptions.RayTaskError as err:  # a bug, not a MedmmError: still one line naming the run
            cause = getattr(err, "cause", None) or err
            raise MedmmInputError(self.run_dir, f"the model did not load on a Ray worker: {type(cause).__name__}: "
                                  f"{' '.join(str(cause).split())[:200]}") from None
        for _, error in answers:
            if error is not None:
                raise _error_from_data(error)
        ids = {model_id for model_id, _ in answers}
        if len(ids) != 1:  # the same run dir seen differently by two nodes: not a shared filesystem
            raise MedmmConfigError(self.run_dir, f"workers loaded different models ({', '.join(sorted(ids))}); "
                                   "put the run directory on storage every node sees")
        self.model_id = ids.pop()

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False

    def pids(self) -> list[int]:
        """Process ids of the workers (current incarnations)."""
        return self.ray.get([a.pid.remote() for a in self.actors])

    # ---------------------------------------------------------------------- work
    def run(self, jobs: list[ScanJob], out_root: str | Path, writer_options: dict[str, Any] | None = None,
            progress: bool = True, echo: Callable[[str], None] = print, force: bool = False) -> BatchSummary:
        """Diagnose ``jobs`` into ``out_root/<name>/`` (same contract as :func:`~medmm.inference.batch.run_batch`)."""
        from tqdm.auto import tqdm

        ray = self.ray
        out_root = Path(out_root)
        summary = BatchSummary()
        pending: deque[ScanJob] = deque()
        for job in jobs:
            if is_finished(out_root / job.name, self.model_id):
                summary.skipped.append(job.name)
            else:
                pending.append(job)
        options = dict(writer_options or {})
        idle, inflight = list(self.actors), {}
        with tqdm(total=len(pending), desc="medmm infer (ray)", unit="scan", disable=not progress) as bar:
            while pending or inflight:
                while idle and pending:
                    actor, job = idle.pop(), pending.popleft()
                    inflight[actor.diagnose.remote(job, str(out_root / job.name), options, force)] = (job, actor)
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    job, actor = inflight.pop(ref)
                    idle.append(actor)
                    summary.record(job.name, self._reason(ref), echo)
                    bar.update(1)
        return summary

    def _reason(self, ref: Any) -> str | None:
        """The scan's failure reason (None: done); a lost worker or a worker-side bug is a reason too."""
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return self.ray.get(ref)
        except RayActorError:
            return (f"the worker died {self.settings.max_task_retries + 1} times on this scan "
                    "(out of memory, or the process was killed)")
        except RayTaskError as err:
            cause = getattr(err, "cause", None) or err
            return f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"


def _describe(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU"


def run_batch_ray(run_dir: str | Path, jobs: list[ScanJob], out_root: str | Path,
                  writer_options: dict[str, Any] | None = None, settings: RaySettings | None = None,
                  progress: bool = True, echo: Callable[[str], None] = print, force: bool = False,
                  **load_options: Any) -> BatchSummary:
    """Start a :class:`RayBatch`, diagnose ``jobs``, stop it (``load_options``: device, checkpoint, ...)."""
    with RayBatch(run_dir, settings, **load_options) as pool:
        return pool.run(jobs, out_root, writer_options, progress=progress, echo=echo, force=force)
