"""Time and peak memory of ``Predictor.predict`` for growing CT volumes.

Each size runs in its own subprocess (so peak RSS is that scan's alone, read from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in the child). Volumes are synthetic chest-like
phantoms at CT spacing (0.7 x 0.7 x 1.0 mm), written once to a scratch folder as NIfTI (or as a
DICOM series with ``--format dicom``). Prints time, peak RSS and time per input voxel relative to
the 64^3 baseline.

Usage::

    python benchmarks/infer_scaling.py                    # tiny model trained on the fly (~20 s)
    python benchmarks/infer_scaling.py --run demo_out/run # a trained run, e.g. from `medmm demo`
    python benchmarks/infer_scaling.py --sizes 64,64,64 512,512,300 --threads 2 --format dicom
    python benchmarks/infer_scaling.py --workflow workflows/ct_chest.yaml --format dicom

The model is trained tiny (32^3 ROI at 4 mm) when no run is given, so volumes larger than the
ROI go through the sliding-window path; the demo run fits every scan to 64^3 instead.
``--workflow`` measures the production shapes instead: that workflow's network (e.g. DenseNet121),
spacing and sliding-window ROI with *untrained* weights (time and memory do not depend on the
weights' values); labels, ontology and thresholds come from the tiny run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZES = ["64,64,64", "128,128,128", "256,256,256", "512,512,300", "512,512,400"]
SPACING = (0.7, 0.7, 1.0)
GIB = 1024**3


def phantom_slices(shape: tuple[int, int, int]):
    """Yield axial HU slices of an elliptic body with two lungs (2D grids only: low memory)."""
    import numpy as np

    nx, ny, nz = shape
    x = np.linspace(-1, 1, nx, dtype=np.float32)[:, None]
    y = np.linspace(-1, 1, ny, dtype=np.float32)[None, :]
    body = (x**2 + (y / 0.8) ** 2) < 0.8
    rng = np.random.default_rng(0)
    for k in range(nz):
        z = -1 + 2 * k / max(nz - 1, 1)
        s = np.full((nx, ny), -1000.0, np.float32)
        s[body] = 40.0
        radius = 0.3 * (1 - 0.5 * z**2)
        for cx in (-0.4, 0.4):
            s[((x - cx) ** 2 / 0.6 + y**2) < radius] = -850.0
        yield s + rng.normal(0, 10, (nx, ny)).astype(np.float32)


def write_volume(shape: tuple[int, int, int], folder: Path, fmt: str) -> Path:
    """Write a phantom as NIfTI (or a DICOM series) and return its path."""
    import numpy as np

    affine = np.diag([*SPACING, 1.0])
    name = "x".join(map(str, shape))
    if fmt == "dicom":
        from medmm.io import write_dicom_series

        target = folder / f"dicom_{name}"
        if not target.exists():
            hu = np.stack(list(phantom_slices(shape)), axis=-1)
            write_dicom_series(hu, affine, target, patient_name="BENCH^MARK", patient_id="B1", birth_date="19700101",
                               study_date="20200101", series_description="bench", uid_seed=name)
        return target
    target = folder / f"{name}.nii"
    if not target.exists():
        from medmm.io import write_nifti

        hu = np.empty(shape, np.float32)
        for k, s in enumerate(phantom_slices(shape)):
            hu[:, :, k] = s
        write_nifti(hu, affine, target)
    return target


def train_tiny(folder: Path) -> Path:
    """Train the tests' tiny workflow (32^3 ROI at 4 mm) once into ``folder/run``."""
    from medmm.training import train

    run_dir = folder / "run"
    if (run_dir / "best.safetensors").exists():
        return run_dir
    workflow = {
        "name": "bench_tiny",
        "seed": 0,
        "data": {"source": "synthetic", "synthetic": {"n": 8, "size": 32, "seed": 0, "cache_dir": str(folder / "synth")},
                 "val_fraction": 0.25, "test_fraction": 0.25},
        "preprocessing": {"spacing": [4.0, 4.0, 4.0], "roi_size": [32, 32, 32], "hu_window": [-1000, 400]},
        "network": {"image_encoder": {"widths": [8, 8, 8, 16], "depth": [1, 1, 1, 1], "embed_dim": 32},
                    "report_generator": {"n_layer": 1, "n_embd": 32, "max_new_tokens": 16, "max_report_tokens": 32},
                    "fusion": {"hidden": 16}},
        "training": {"epochs": 1, "batch_size": 4},
    }
    train(workflow, run_dir=run_dir, verbose=False)
    return run_dir


def untrained_run(workflow: Path, template: Path, folder: Path) -> Path:
    """A run folder with untrained weights shaped by ``workflow`` (network, preprocessing, inferer)."""
    import torch

    from medmm.config import load_workflow
    from medmm.models import MedMM, save_checkpoint

    cfg = load_workflow(workflow)
    run_dir = folder / f"untrained_{cfg.name}"
    if (run_dir / "best.safetensors").exists():
        return run_dir
    meta = json.loads((template / "medmm.json").read_text())
    for key in ("model", "text_encoder", "versions", "checkpoints"):
        meta.pop(key, None)
    meta.update(name=cfg.name, run_id=run_dir.name, workflow=cfg.to_yaml_dict(),
                preprocessing=cfg.preprocessing.model_dump(mode="json"), inferer=cfg.inferer.model_dump(mode="json"))
    torch.manual_seed(0)
    model = MedMM(cfg.network, meta["labels"]).eval()
    save_checkpoint(model, run_dir, "best", meta)
    return run_dir


CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from medmm.inference import load_model
# timing only: a cached scratch run may predate an ontology edit
predictor = load_model(sys.argv[1], device="cpu", allow_ontology_mismatch=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = predictor.predict(sys.argv[2])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kib": peak, "model_kib": before,
                  "sliding": result.inference["sliding_window"], "model_shape": result.preprocessed["shape"]}))
"""


def measure(run_dir: Path, scan: Path, threads: int) -> dict:
    """Run one prediction in a fresh interpreter and return its timing/memory record."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(scan), str(threads)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"predict failed for {scan.name}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="trained run dir (default: train a tiny one)")
    parser.add_argument("--workflow", type=Path, default=None,
                        help="measure this workflow's network/spacing/ROI with untrained weights")
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="X,Y,Z sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--format", choices=["nifti", "dicom"], default="nifti")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "medmm_bench")
    args = parser.parse_args(argv)

    args.scratch.mkdir(parents=True, exist_ok=True)
    run_dir = args.run or train_tiny(args.scratch)
    if args.workflow is not None:
        run_dir = untrained_run(args.workflow, run_dir, args.scratch)
    print(f"model: {run_dir}  threads: {args.threads}  input spacing: {SPACING} mm  format: {args.format}")
    print(f"{'input shape':>16} {'voxels':>11} {'model grid':>14} {'sliding':>7} {'time s':>8} "
          f"{'peak RSS GiB':>12} {'s/voxel vs 64^3':>15}")
    base = None
    for text in args.sizes:
        shape = tuple(int(v) for v in text.split(","))
        t0 = time.perf_counter()
        scan = write_volume(shape, args.scratch, args.format)
        write_s = time.perf_counter() - t0
        rec = measure(run_dir, scan, args.threads)
        voxels = shape[0] * shape[1] * shape[2]
        per_voxel = rec["seconds"] / voxels
        base = base if base is not None else per_voxel
        grid = "x".join(map(str, rec["model_shape"]))
        print(f"{'x'.join(map(str, shape)):>16} {voxels:>11,} {grid:>14} {str(rec['sliding']):>7} "
              f"{rec['seconds']:8.2f} {rec['peak_kib'] * 1024 / GIB:12.2f} {per_voxel / base:15.3f}"
              + (f"   (volume written in {write_s:.0f} s)" if write_s > 5 else ""))


if __name__ == "__main__":
    main()
