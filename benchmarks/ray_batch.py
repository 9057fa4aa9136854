"""Speed-up of Ray batch inference (``medmm infer MANIFEST --ray``) with 2 workers over 1.

One run measures, on the same synthetic cohort and the same machine:

* the single-process batch mode (``run_batch``), in a child process with 1 thread everywhere
  (``OMP_NUM_THREADS=1``, as Ray gives a 1-CPU worker) at Ray's worker niceness (15), and with
  ``--all-threads`` also with all cores;
* :class:`medmm.scale.RayBatch` with 1 and with 2 workers (1 CPU each) on a local Ray instance,
  alternated ``--repeats`` times (1, 2, 2, 1, ...) so a shared machine's changing load hits both
  alike; the speed-up is the median of the per-repeat ratios.

Ray times are the batch alone (workers started and models loaded beforehand; the start-up is
reported separately). The 1-minute load average is recorded before and after each measurement,
and the CPU the batch's processes actually got (``cores_used``: CPU seconds per wall second): on
a machine other work saturates, 2 workers only help if they get more CPU than 1; compare ratios
from one run. Every mode's outputs are checked to be the same findings and
probabilities.

Usage::

    python benchmarks/ray_batch.py --run demo_out/run                 # 16 synthetic 64^3 scans, 3 repeats
    python benchmarks/ray_batch.py --run demo_out/run --n 32 --repeats 5 --json bench_out/ray_batch.json
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
RAY_WORKER_NICENESS = 15  # Ray's default ``worker_niceness``


def make_cohort(folder: Path, n: int, size: int, seed: int) -> Path:
    """A manifest of ``n`` synthetic scans (``medmm data synth``'s generator)."""
    from medmm.data import synthesize

    manifest = synthesize(folder / "synth", n, seed=seed, size=size, fmt="nifti")
    out = folder / "cohort.csv"
    with manifest.open(newline="") as f, out.open("w", newline="") as g:
        writer = csv.DictWriter(g, fieldnames=["case_id", "patient_id", "image", "indication"])
        writer.writeheader()
        for row in csv.DictReader(f):
            image = str((manifest.parent / row["image"]).resolve())
            writer.writerow({"case_id": row["case_id"], "patient_id": row["patient_id"], "image": image,
                             "indication": row["indication"]})
    return out


def findings(out: Path) -> dict[str, dict[str, float]]:
    return {p.parent.name: {f["finding"]: round(f["probability"], 5) for f in json.loads(p.read_text())["findings"]}
            for p in sorted(out.glob("*/result.json"))}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids``."""
    import psutil

    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def measure(label: str, fn, pids: list[int], **extra) -> dict:
    """Time ``fn()`` (a batch returning a BatchSummary) with the load average around it, and the
    CPU the processes ``pids`` got meanwhile (``cores_used``: CPU seconds per wall second)."""
    load_before, cpu_before = os.getloadavg()[0], cpu_seconds(pids)
    start = time.perf_counter()
    summary = fn()
    seconds = time.perf_counter() - start
    cores = (cpu_seconds(pids) - cpu_before) / seconds
    row = {"mode": label, "seconds": round(seconds, 2), "scans": len(summary.done), "failed": len(summary.failed),
           "scans_per_s": round(len(summary.done) / seconds, 3), "cores_used": round(cores, 2),
           "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), **extra}
    print(json.dumps(row), flush=True)
    return row


def single_process_child(run: Path, manifest: Path, out: Path, threads: int) -> None:
    """``--child``: the single-process batch mode, threads fixed before torch/numpy load, at the
    niceness Ray gives its workers (15), so that on a shared machine both compete alike."""
    os.nice(RAY_WORKER_NICENESS - os.nice(0))
    import torch

    from medmm.inference import load_model
    from medmm.inference.batch import discover_jobs, run_batch

    torch.set_num_threads(threads)
    jobs = discover_jobs(manifest)
    predictor = load_model(run, device="cpu")
    quiet = {"progress": False, "echo": lambda m: None}
    run_batch(predictor, jobs[:1], out.parent / f"{out.name}_warmup", {"html": True}, **quiet)
    row = measure(f"single process, {threads} thread(s)", lambda: run_batch(predictor, jobs, out, {"html": True},
                                                                            **quiet), [os.getpid()],
                  workers=1, threads=threads)
    (out.parent / f"{out.name}.json").write_text(json.dumps(row))


def single_process(args, manifest: Path, out: Path, threads: int) -> dict:
    env = {**os.environ, **{var: str(threads) for var in _THREAD_VARS},
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, __file__, "--child", str(threads), "--run", str(args.run), "--manifest",
                    str(manifest), "--out", str(out)], env=env, check=True)
    return json.loads((out.parent / f"{out.name}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("demo_out/run"), help="trained run directory")
    parser.add_argument("--n", type=int, default=16, help="scans in the cohort")
    parser.add_argument("--size", type=int, default=64, help="synthetic volume edge (voxels)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--repeats", type=int, default=3, help="alternated 1-worker / 2-worker measurements")
    parser.add_argument("--all-threads", action="store_true", help="also time one process using all cores")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return single_process_child(args.run, args.manifest, args.out, args.child)
    if not (args.run / "medmm.json").is_file():
        sys.exit(f"error: {args.run}: not a run directory (train one, e.g. `medmm demo --out demo_out`)")

    from medmm.inference.batch import discover_jobs
    from medmm.scale import RayBatch, RaySettings, import_ray

    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="medmm_ray_bench_"))
    results: list[dict] = []
    try:
        manifest = make_cohort(scratch, args.n, args.size, args.seed)
        jobs = discover_jobs(manifest)
        for threads in sorted({1, cores} if args.all_threads else {1}):
            results.append(single_process(args, manifest, scratch / f"single_{threads}", threads))
        ray = import_ray()
        ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=256 * 1024**2, log_to_driver=False,
                 logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        quiet = {"progress": False, "echo": lambda m: None}
        ratios = []
        start = time.perf_counter()
        with RayBatch(args.run, RaySettings(workers=2), device="cpu") as two:
            startup = round(time.perf_counter() - start, 2)
            one = copy.copy(two)
            one.actors = two.actors[:1]  # the same pool with one worker used (the other stays idle)
            pids = two.pids()
            two.run(jobs[:2], scratch / "warmup", {"html": True}, **quiet)  # first calls out of the timing
            for rep in range(args.repeats):
                rows = {}
                for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    pool = one if workers == 1 else two
                    rows[workers] = measure(f"ray, {workers} worker(s)",
                                            lambda: pool.run(jobs, scratch / f"ray{workers}_{rep}", {"html": True},
                                                             **quiet), pids,
                                            workers=workers, threads=1, repeat=rep, startup_s=startup)
                results += [rows[1], rows[2]]
                ratios.append(rows[1]["seconds"] / rows[2]["seconds"])
        ray.shutdown()
        reference = findings(scratch / "single_1")
        same = all(findings(d) == reference for d in scratch.glob("ray*_*"))
        ray2 = statistics.median(r["seconds"] for r in results if r["mode"] == "ray, 2 worker(s)")
        summary = {"run": str(args.run), "n": args.n, "size": args.size, "cores": cores, "repeats": args.repeats,
                   "speedup_2_over_1_ray_workers_median": round(statistics.median(ratios), 2),
                   "speedup_per_repeat": [round(r, 2) for r in ratios],
                   "speedup_2_ray_workers_over_single_process_1_thread": round(results[0]["seconds"] / ray2, 2),
                   "ray_startup_s_2_workers": startup, "outputs_identical_across_modes": same, "results": results}
        print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
        print(f"\n{'mode':34s} {'s':>7s} {'scans/s':>8s} {'cores used':>10s} {'load 1 min':>12s}")
        for r in results:
            load = f"{r['load_before']:5.2f}->{r['load_after']:<5.2f}"
            print(f"{r['mode']:34s} {r['seconds']:7.2f} {r['scans_per_s']:8.3f} {r['cores_used']:10.2f} {load}")
        print(f"speed-up of 2 Ray workers over 1 (median of {args.repeats}): {statistics.median(ratios):.2f}x; "
              f"outputs identical across modes: {same}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
