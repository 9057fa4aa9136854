"""Benchmark: `medmm data prepare` throughput and cached-loader speed at CT-RATE size.

Generates ``--cases`` synthetic phantoms at 512 × 512 × ``--slices`` (`medmm.data.synth.ctrate_layout`)
as NIfTI (.nii.gz, CT-RATE's format) and as DICOM series in a temporary folder, then measures

1. ``prepare`` per core: one worker, one torch thread, ``workflows/ct_chest.yaml`` preprocessing
   (RAS, 1.5 mm, window, body crop, 224 × 224 × 160): wall and CPU seconds per case;
2. ``prepare`` with ``--workers`` processes: cases/s (all cores of this machine);
3. the cached training loader (`medmm.data.dataset.build_dataset` reading the prepared entries),
   without and with ct_chest's random augmentation: volumes/s and CPU s per volume; and the CPU
   cost of each augmentation forced on, giving the expected CPU s per training volume
   (read + 0.3 × affine + 0.2 × noise with ct_chest's probabilities), steadier than a short pass;
4. the cores that keep one GPU busy = expected CPU seconds per training volume / GPU seconds per
   volume. The GPU
   step is **assumed**, not measured (no GPU here): DenseNet121's forward FLOPs at 224 × 224 × 160
   are counted exactly (``torch.utils.flop_counter`` on the meta device), a training step is taken
   as 3 × forward, at ``--gpu-tflops`` sustained (default 50 TFLOP/s: an assumption, about 16 % of an
   A100's 312 TFLOP/s bf16 peak, since DenseNet's concatenations and norms keep 3D training far
   below peak; the cores needed scale linearly with it). Pass ``--gpu-step-s`` to use a measured
   time instead.

The load average is printed before and after: on a shared machine every number is a contended
measurement; CPU seconds are the steadier figure.

    python benchmarks/data_throughput.py [--cases 2] [--slices 300] [--workers 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "ct_chest.yaml"


def make_inputs(root: Path, n: int, slices: int) -> dict[str, list]:
    """NIfTI and DICOM copies of ``n`` full-size phantoms as `Case` lists per format."""
    from medmm.data.case import Case
    from medmm.data.synth.ctrate_layout import ctrate_names, write_ctrate_layout
    from medmm.io.nifti import load_nifti
    from medmm.io.writers import write_dicom_series

    names = ctrate_names(n)
    paths = write_ctrate_layout(root / "ctrate", names, shape=(512, 512, slices))
    nifti, dicom = [], []
    for k, name in enumerate(names):
        stem = name.removesuffix(".nii.gz")
        image = next(paths["volumes_dir"].rglob(name))
        nifti.append(Case(stem, stem, str(image)))
        volume = load_nifti(image)
        write_dicom_series(volume.array, volume.affine, root / "dicom" / stem, patient_name="Bench^Mark",
                           patient_id=f"BENCH{k}", birth_date="19600101", study_date="20240101",
                           series_description="benchmark", uid_seed=f"medmm-throughput-{k}")
        dicom.append(Case(stem, stem, str(root / "dicom" / stem)))
    return {"nifti": nifti, "dicom": dicom}


def prepare_timed(cases, cfg, cache_dir: Path, workers: int) -> dict[str, float]:
    """Wall and (this process's) CPU seconds of one `prepare_cases` run."""
    from medmm.data.prepare import prepare_cases

    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = prepare_cases(cases, cfg, cache_dir, workers=workers)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if summary.failures or summary.prepared != len(cases):
        raise RuntimeError(f"prepare failed: {summary.failures}")
    return {"wall_s": wall, "cpu_s": cpu, "cases_per_s": len(cases) / wall,
            "cache_mib": summary.cache_bytes / 2**20}


def loader_timed(cases, cfg, cache_dir: Path, epochs: int, augment: bool) -> dict[str, float]:
    """Volumes/s of the training loader over the prepared cache (batch 4, no worker processes)."""
    from monai.data import DataLoader

    from medmm.data.dataset import augmented, build_dataset, reseed

    base = build_dataset(cases, cfg.data.labels, cfg.preprocessing, train=False, cache="disk", cache_dir=cache_dir)
    dataset = augmented(base, cfg.preprocessing, seed=0) if augment else base
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        reseed(dataset, epoch)
        for batch in DataLoader(dataset, batch_size=4, num_workers=0):
            n += batch["image"].shape[0]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"volumes": n, "volumes_per_s": n / wall, "cpu_s_per_volume": cpu / n}


def augmentation_cpu_s(cases, cfg, cache_dir: Path, repeat: int = 3) -> dict[str, float]:
    """CPU seconds per volume of each random augmentation forced on (probability 1).

    The loader's augmentation cost is random (affine on 30 % of the volumes, noise on 20 %), so a
    short empirical pass is noisy; its expectation is ``read + Σ probability × cost``.
    """
    from monai.transforms import Compose

    from medmm.data.dataset import build_dataset
    from medmm.data.transforms import augmentation_transforms

    base = build_dataset(cases, cfg.data.labels, cfg.preprocessing, train=False, cache="disk", cache_dir=cache_dir)
    images = [base[k] for k in range(len(base))]
    aug = cfg.preprocessing.augmentation
    costs = {}
    for name, update in (("affine", {"affine_prob": 1.0, "noise_prob": 0.0, "flip_prob": 0.0}),
                         ("noise", {"affine_prob": 0.0, "noise_prob": 1.0, "flip_prob": 0.0})):
        forced = cfg.preprocessing.model_copy(update={"augmentation": aug.model_copy(update=update)})
        pipeline = Compose(augmentation_transforms(forced))
        pipeline.set_random_state(seed=0)
        cpu0 = time.process_time()
        for _ in range(repeat):
            for item in images:
                pipeline(dict(item))
        costs[name] = (time.process_time() - cpu0) / (repeat * len(images))
    return costs


def densenet_forward_tflop(roi: tuple[int, int, int]) -> float:
    """Exact forward FLOPs (TFLOP) of the ct_chest DenseNet121 encoder on one ``roi`` volume."""
    from torch.utils.flop_counter import FlopCounterMode

    from medmm.config.network import ImageEncoderConfig
    from medmm.models.image_encoder import ImageEncoder

    with torch.device("meta"):
        encoder = ImageEncoder(ImageEncoderConfig(name="densenet121", embed_dim=512, token_grid=(4, 4, 2)))
        x = torch.zeros(1, 1, *roi)
        with FlopCounterMode(display=False) as counter:
            encoder.embed(encoder.feature_map(x))
    return counter.get_total_flops() / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="passes of the cached loader")
    parser.add_argument("--gpu-tflops", type=float, default=50.0, help="assumed sustained GPU TFLOP/s")
    parser.add_argument("--gpu-step-s", type=float, default=None, help="measured GPU s per volume (overrides)")
    args = parser.parse_args()

    from medmm.config import load_workflow

    cfg = load_workflow(WORKFLOW)
    results: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "cases": args.cases,
                     "shape": [512, 512, args.slices]}
    with tempfile.TemporaryDirectory(prefix="medmm-throughput-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        inputs = make_inputs(root, args.cases, args.slices)
        results["generate_s"] = time.perf_counter() - t0
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for fmt, cases in inputs.items():  # warm-up: imports and first-call set-up stay out of the timings
            prepare_timed(cases[:1], cfg.preprocessing, root / f"warmup-{fmt}", workers=1)
        for fmt, cases in inputs.items():
            torch.set_num_threads(1)
            one = prepare_timed(cases, cfg.preprocessing, root / f"cache-{fmt}-1", workers=1)
            torch.set_num_threads(threads)
            many = prepare_timed(cases, cfg.preprocessing, root / f"cache-{fmt}-{args.workers}", workers=args.workers)
            results[f"prepare_{fmt}"] = {
                "per_core_s_per_case_wall": one["wall_s"] / len(cases),
                "per_core_s_per_case_cpu": one["cpu_s"] / len(cases),
                "per_core_cases_per_s": len(cases) / one["cpu_s"],
                f"cases_per_s_{args.workers}_workers": many["cases_per_s"],
                "cache_mib_per_case": one["cache_mib"] / len(cases),
            }
        cache = root / "cache-nifti-1"
        results["loader_cached"] = loader_timed(inputs["nifti"], cfg, cache, args.epochs, augment=False)
        results["loader_cached_augmented"] = loader_timed(inputs["nifti"], cfg, cache, args.epochs, augment=True)
        costs = augmentation_cpu_s(inputs["nifti"], cfg, cache)
        aug = cfg.preprocessing.augmentation
        results["augmentation_cpu_s_forced"] = costs
        results["expected_cpu_s_per_training_volume"] = (results["loader_cached"]["cpu_s_per_volume"]
                                                         + aug.affine_prob * costs["affine"]
                                                         + aug.noise_prob * costs["noise"])
    roi = tuple(cfg.preprocessing.roi_size)
    fwd = densenet_forward_tflop(roi)
    gpu_s = args.gpu_step_s if args.gpu_step_s is not None else 3 * fwd / args.gpu_tflops
    results["gpu"] = {"densenet121_forward_tflop": fwd, "gpu_s_per_volume": gpu_s,
                      "source": "measured (--gpu-step-s)" if args.gpu_step_s is not None
                      else f"assumed: 3 x forward FLOPs at {args.gpu_tflops:g} TFLOP/s sustained"}
    cached = results["expected_cpu_s_per_training_volume"]
    results["cores_per_gpu"] = {
        "training_from_cache": cached / gpu_s,
        "preprocessing_on_the_fly_nifti": results["prepare_nifti"]["per_core_s_per_case_cpu"] / gpu_s,
        "preprocessing_on_the_fly_dicom": results["prepare_dicom"]["per_core_s_per_case_cpu"] / gpu_s,
    }
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
