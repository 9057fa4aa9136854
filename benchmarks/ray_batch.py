"""Speed-up of Ray batch inference (``medmm infer MANIFEST --ray``) with 2 workers over 1.

One run measures, on the same synthetic cohort and the same machine:

* the single-process batch mode (``run_batch``) with 1 torch thread and with all cores;
* :class:`medmm.scale.RayBatch` with 1 and with 2 workers (1 CPU each, so 1 torch thread each),
  on a local Ray instance started with the machine's cores.

Ray times are the batch alone (workers started and models loaded beforehand; that start-up is
reported separately). The 1-minute load average is recorded before and after each mode, since
a shared machine's other work changes every number; compare ratios from one run. Outputs of
every mode are checked to be the same findings and probabilities.

Usage::

    python benchmarks/ray_batch.py --run demo_out/run            # 16 synthetic 64^3 scans
    python benchmarks/ray_batch.py --run demo_out/run --n 32 --json bench_out/ray_batch.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def timed(label: str, fn, results: list[dict], **extra) -> None:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    summary = fn()
    seconds = time.perf_counter() - start
    row = {"mode": label, "seconds": round(seconds, 2), "scans": len(summary.done), "failed": len(summary.failed),
           "scans_per_s": round(len(summary.done) / seconds, 3), "load_before": round(load_before, 2),
           "load_after": round(os.getloadavg()[0], 2), **extra}
    results.append(row)
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("demo_out/run"), help="trained run directory")
    parser.add_argument("--n", type=int, default=16, help="scans in the cohort")
    parser.add_argument("--size", type=int, default=64, help="synthetic volume edge (voxels)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if not (args.run / "medmm.json").is_file():
        sys.exit(f"error: {args.run}: not a run directory (train one, e.g. `medmm demo --out demo_out`)")

    import torch

    from medmm.inference import load_model
    from medmm.inference.batch import discover_jobs, run_batch
    from medmm.scale import RayBatch, RaySettings, import_ray

    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="medmm_ray_bench_"))
    results: list[dict] = []
    try:
        jobs = discover_jobs(make_cohort(scratch, args.n, args.size, args.seed))
        quiet = {"progress": False, "echo": lambda m: None}
        options = {"html": True}
        predictor = load_model(args.run, device="cpu")
        run_batch(predictor, jobs[:1], scratch / "warmup", options, **quiet)  # first-call costs out of the timing
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            timed(f"single process, {threads} torch thread(s)",
                  lambda: run_batch(predictor, jobs, scratch / f"single_{threads}", options, **quiet), results,
                  workers=1, torch_threads=threads)
        del predictor
        ray = import_ray()
        ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=256 * 1024**2, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path[:1] + [os.environ.get(
                     "PYTHONPATH", "")])}})
        for workers in (1, 2):
            start = time.perf_counter()
            with RayBatch(args.run, RaySettings(workers=workers), device="cpu") as pool:
                startup = round(time.perf_counter() - start, 2)
                pool.run(jobs[:1], scratch / f"warmup_ray{workers}", options, **quiet)
                timed(f"ray, {workers} worker(s)", lambda: pool.run(jobs, scratch / f"ray_{workers}", options, **quiet),
                      results, workers=workers, torch_threads=1, startup_s=startup)
        ray.shutdown()
        reference = findings(scratch / "single_1")
        same = all(findings(scratch / d) == reference for d in ("ray_1", "ray_2"))
        by_mode = {r["mode"]: r for r in results}
        speedup = by_mode["ray, 1 worker(s)"]["seconds"] / by_mode["ray, 2 worker(s)"]["seconds"]
        baseline = by_mode["single process, 1 torch thread(s)"]["seconds"]
        summary = {"run": str(args.run), "n": args.n, "size": args.size, "cores": cores,
                   "speedup_2_over_1_ray_workers": round(speedup, 2),
                   "speedup_2_ray_workers_over_single_process_1_thread": round(
                       baseline / by_mode["ray, 2 worker(s)"]["seconds"], 2),
                   "outputs_identical_across_modes": same, "results": results}
        print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
        print(f"\n{'mode':38s} {'s':>7s} {'scans/s':>8s} {'load':>11s}")
        for r in results:
            load = f"{r['load_before']:5.2f}->{r['load_after']:<5.2f}"
            print(f"{r['mode']:38s} {r['seconds']:7.2f} {r['scans_per_s']:8.3f} {load}")
        print(f"speed-up of 2 Ray workers over 1: {speedup:.2f}x; outputs identical across modes: {same}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
