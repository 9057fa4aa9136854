"""``medmm data prepare``: run a workflow's deterministic preprocessing once per case, in parallel.

Each case is loaded, oriented, resampled, windowed, cropped and fitted exactly as the training
loader would (`medmm.data.dataset.PreparedImaged`) and written to the workflow's
`medmm.data.cache.PreparedCache`. The run is

* resumable: entries are written atomically and valid ones are skipped, so a killed run continues
  where it stopped;
* shardable: ``shard=(i, n)`` takes every n-th case of the list sorted by case id (1-based i), so
  n machines given the same data cover every case exactly once;
* fault-tolerant: a case that cannot be read is listed with a one-line reason and the run goes on.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medmm.config.preprocessing import PreprocessingConfig
from medmm.data.cache import PreparedCache
from medmm.errors import MedmmConfigError


@dataclass
class CaseOutcome:
    """What happened to one case: ``prepared``, ``cached`` (valid entry already there) or ``failed``."""

    case_id: str
    status: str
    seconds: float = 0.0
    reason: str = ""


@dataclass
class PrepareSummary:
    """Counts, failures and speed of one ``prepare`` run (one shard)."""

    cache_folder: str
    shard: tuple[int, int]
    total_cases: int
    shard_cases: int
    workers: int
    prepared: int = 0
    cached: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    busy_seconds: float = 0.0
    cache_entries: int = 0
    cache_bytes: int = 0

    @property
    def cases_per_s(self) -> float:
        """Newly prepared cases per wall-clock second (cached cases excluded)."""
        return self.prepared / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The human-readable summary printed by the CLI."""
        i, n = self.shard
        out = [f"cache: {self.cache_folder}",
               f"shard {i}/{n}: {self.shard_cases} of {self.total_cases} cases; {self.prepared} prepared, "
               f"{self.cached} already cached, {len(self.failures)} failed",
               f"{self.seconds:.1f} s with {self.workers} worker(s): {self.cases_per_s:.2f} cases/s"
               + (f", {self.busy_seconds / self.prepared:.1f} s per case per worker" if self.prepared else ""),
               f"cache size: {self.cache_entries} entries, {self.cache_bytes / 2**20:.1f} MiB"]
        if self.failures:
            out.append(f"failed cases ({len(self.failures)}; skipped, rerun to retry):")
            out += [f"  - {case_id}: {reason}" for case_id, reason in self.failures]
        return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/8"`` -> ``(3, 8)``; shards are numbered 1..n."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise MedmmConfigError("--shard", f"expected I/N such as 3/8, got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise MedmmConfigError("--shard", f"I/N needs 1 <= I <= N, got {text!r}")
    return i, n


def shard_cases(cases: Sequence[Any], shard: tuple[int, int]) -> list[Any]:
    """The cases of shard ``(i, n)``: every n-th case of the list sorted by case id, from the i-th."""
    i, n = shard
    ordered = sorted(cases, key=lambda c: str(c.case_id))
    return ordered[i - 1::n]


# ------------------------------------------------------------------------------ worker side
_WORKER: dict[str, Any] = {}


def _init_worker(cfg_json: str, cache_root: str, threads: int | None = None) -> None:
    """Build the pipeline once per process; pool workers get one torch thread so N workers use N cores."""
    import torch

    from medmm.data.dataset import PreparedImaged

    if threads is not None:
        torch.set_num_threads(threads)
    cfg = PreprocessingConfig.model_validate_json(cfg_json)
    cache = PreparedCache(cache_root, cfg)
    _WORKER.update(cache=cache, transform=PreparedImaged(cfg, cache=None))


def _prepare_one(job: tuple[str, str]) -> CaseOutcome:
    """Prepare one case (never raises: failures come back as outcomes)."""
    case_id, image = job
    cache: PreparedCache = _WORKER["cache"]
    start = time.perf_counter()
    try:
        if cache.has(image):
            return CaseOutcome(case_id, "cached")
        out = _WORKER["transform"]({"image": image})
        cache.store(image, out["image"])
    except Exception as err:  # noqa: BLE001 - any unreadable case is listed, never aborts the run
        return CaseOutcome(case_id, "failed", time.perf_counter() - start, _reason(err))
    return CaseOutcome(case_id, "prepared", time.perf_counter() - start)


def _reason(err: BaseException) -> str:
    from medmm.errors import MedmmError
    from medmm.io.text import one_line

    while err.__cause__ is not None and not isinstance(err, MedmmError):  # MONAI wraps it in "applying transform"
        err = err.__cause__
    text = str(err) if isinstance(err, MedmmError) else f"{type(err).__name__}: {err}"
    if isinstance(err, FileNotFoundError):
        text = f"{err.filename or ''}: file not found".lstrip(": ")
    return one_line(" ".join(text.split()))[:300]


# ------------------------------------------------------------------------------ driver
def prepare_cases(cases: Sequence[Any], cfg: PreprocessingConfig, cache_root: str | Path, *,
                  workers: int = 1, shard: tuple[int, int] = (1, 1),
                  progress: Callable[[CaseOutcome], None] | None = None) -> PrepareSummary:
    """Prepare the shard's cases into ``cache_root`` with ``workers`` processes.

    Args:
        cases: all `Case`s of the workflow (the shard is taken here, so every machine passes the same list).
        cfg: the workflow's preprocessing.
        cache_root: the workflow's ``training.cache_dir``.
        workers: processes (1 = in this process).
        shard: ``(i, n)``, 1-based.
        progress: called with each case's outcome as it finishes.

    Returns:
        The `PrepareSummary`; it is also written to ``<cache folder>/prepare-shard-<i>-of-<n>.json``.
    """
    cache = PreparedCache(cache_root, cfg)
    mine = shard_cases(cases, shard)
    jobs = [(str(c.case_id), str(c.image)) for c in mine]
    summary = PrepareSummary(str(cache.folder), shard, len(cases), len(mine), workers)
    start = time.perf_counter()
    init = (cfg.model_dump_json(), str(cache_root))
    for outcome in _run(jobs, workers, init):
        if outcome.status == "prepared":
            summary.prepared += 1
            summary.busy_seconds += outcome.seconds
        elif outcome.status == "cached":
            summary.cached += 1
        else:
            summary.failures.append((outcome.case_id, outcome.reason))
        if progress is not None:
            progress(outcome)
    summary.seconds = time.perf_counter() - start
    summary.failures.sort()
    summary.cache_entries, summary.cache_bytes = cache.entries(), cache.size_bytes()
    _write_summary(cache, summary)
    return summary


def _run(jobs: list[tuple[str, str]], workers: int, init: tuple[str, str]):
    """Outcomes in completion order, from a process pool (or this process when ``workers`` is 1)."""
    if workers <= 1 or len(jobs) <= 1:
        try:
            _init_worker(*init)  # this process keeps its own thread count
            yield from map(_prepare_one, jobs)
        finally:
            _WORKER.clear()
        return
    # fork keeps start-up cheap; each worker builds its own pipeline in the initializer.
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(*init, 1)) as pool:
        yield from pool.imap_unordered(_prepare_one, jobs, chunksize=1)


def _write_summary(cache: PreparedCache, summary: PrepareSummary) -> None:
    from medmm.io.writers import atomic_write_text

    i, n = summary.shard
    record = {**asdict(summary), "cases_per_s": summary.cases_per_s}
    atomic_write_text(cache.folder / f"prepare-shard-{i}-of-{n}.json", json.dumps(record, indent=2) + "\n")
