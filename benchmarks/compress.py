"""What compression costs: the original model and each compressed variant on the same held-out scans.

For the demo model (accuracy + speed) and for DenseNet121 at ``workflows/ct_chest.yaml`` shapes
(untrained weights: speed and size only), in one process so variants are compared under the same
machine load (the latency rows are measured round-robin, one scan per variant in turn):

- parameters, stored size (``best.safetensors``), CPU latency per scan at ``--threads`` threads
  (image path = encoder incl. histogram pathways + fusion head with the run's text; the report LM
  is not timed) and of the CNN backbone alone (what pruning and int8 act on), peak RSS of
  a fresh process that loads the variant and predicts (``ru_maxrss``);
- macro AUROC with a 95 % bootstrap CI (scans resampled) and its paired change vs the original
  (same resamples, 95 % CI) on held-out scans from a seed the demo never used;
- ONNX Runtime vs PyTorch latency of the fp32 image path.

Variants (made with `medmm.deploy.compress_run` into ``<out>/variants/``, reused when present):
``int8``, ``prune{25,50,75}`` (structured, no fine-tuning), ``prune50_int8``, ``unstructured50``,
``student`` (structured 0.5 + ``--distill-epochs`` of distillation from the original) and
``student_int8``.

Usage::

    python benchmarks/compress.py --run demo_out/run --heldout heldout/manifest.csv --out bench_compress

Writes ``<out>/compress.json`` and prints one table per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "int8": dict(quantize="int8"),
    "prune25": dict(prune=0.25),
    "prune50": dict(prune=0.5),
    "prune75": dict(prune=0.75),
    "prune50_int8": dict(prune=0.5, quantize="int8"),
    "unstructured50": dict(prune=0.5, prune_kind="unstructured"),
    "student": dict(prune=0.5, distill=True),
    "student_int8": dict(prune=0.5, distill=True, quantize="int8"),
}


def heldout_cases(manifest: Path, labels: list[str]) -> list:
    """All rows of the held-out manifest (a seed the demo never used; split column ignored)."""
    from medmm.data import read_manifest

    return list(read_manifest(manifest, labels=labels))


def make_variant(name: str, run: Path, out: Path, distill_epochs: int) -> Path:
    from medmm.deploy import compress_run

    target = out / "variants" / name
    if (target / "best.safetensors").is_file():
        return target
    spec = dict(VARIANTS[name])
    distill = spec.pop("distill", False)
    if distill:
        spec.update(finetune_epochs=distill_epochs, distill_from=run)
    t0 = time.perf_counter()
    compress_run(run, target, verbose=False, **spec)
    print(f"made {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return target


class Scorer:
    """A loaded run's image path with the run's own fusion text for each case."""

    def __init__(self, run_dir: Path):
        from medmm.deploy.run_data import run_workflow
        from medmm.inference import load_model

        self.predictor = load_model(run_dir, device="cpu")
        self.workflow = run_workflow(self.predictor.meta, str(run_dir))

    def probabilities(self, cases: list) -> np.ndarray:
        from medmm.deploy.finetuning import run_probabilities

        probs = run_probabilities(self.predictor, cases, self.workflow)
        return np.stack([probs[c.case_id].numpy() for c in cases])

    def timed_backbone(self, image: torch.Tensor) -> float:
        """Seconds of the CNN backbone alone (what pruning and int8 change)."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.predictor.model.image_encoder._features(image)
        return time.perf_counter() - t0

    def timed(self, image: torch.Tensor, indication: str | None) -> float:
        p = self.predictor
        t0 = time.perf_counter()
        with torch.inference_mode():
            p.model.predict_step(feature_map=p.feature_map(image), indications=[indication],
                                 use_generated_report=p.use_generated_report, use_indication=p.use_indication,
                                 generate=p.use_generated_report)
        return time.perf_counter() - t0


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paired_delta(y: np.ndarray, base: np.ndarray, other: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Macro AUROC change other - base with a paired percentile bootstrap (same resampled scans)."""
    from medmm.evaluation.metrics import _resample_counts, _weighted_auroc, auroc

    counts = _resample_counts(len(y), n_boot, seed)
    deltas, points = [], []
    for j in range(y.shape[1]):
        known = y[:, j] >= 0
        a, b = auroc(y[:, j], base[:, j]), auroc(y[:, j], other[:, j])
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        points.append(b - a)
        deltas.append(_weighted_auroc(y[known, j], other[known, j], counts[:, known])
                      - _weighted_auroc(y[known, j], base[known, j], counts[:, known]))
    boot = np.nanmean(np.stack(deltas, 1), 1)
    lo, hi = np.percentile(boot[np.isfinite(boot)], [2.5, 97.5])
    return {"delta": float(np.mean(points)), "ci_low": float(lo), "ci_high": float(hi)}


def peak_rss_mb(run_dir: Path, image_path: Path, threads: int) -> float:
    """Peak RSS (MB) of a fresh process that loads ``run_dir`` and predicts one scan."""
    code = ("import resource, sys, torch; torch.set_num_threads(%d); import medmm; "
            "m = medmm.load_model(sys.argv[1], device='cpu'); m.predict(sys.argv[2]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)" % threads)
    out = subprocess.run([sys.executable, "-c", code, str(run_dir), str(image_path)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def demo_benchmark(args: argparse.Namespace) -> dict:
    from medmm.deploy.export_formats import export_onnx, onnx_session
    from medmm.deploy.image_path import load_image_path
    from medmm.deploy.provenance import history
    from medmm.deploy.run_data import preprocessed
    from medmm.evaluation.metrics import bootstrap_auroc

    names = ["original"] + [v for v in args.variants.split(",") if v]
    dirs = {"original": args.run}
    for name in names[1:]:
        dirs[name] = make_variant(name, args.run, args.out, args.distill_epochs)
    scorers = {name: Scorer(d) for name, d in dirs.items()}
    labels = scorers["original"].predictor.labels
    cases = heldout_cases(args.heldout, labels)
    y = np.array([[int((c.labels or {}).get(name, -1)) for name in labels] for c in cases])
    rows: dict[str, dict] = {}
    probs = {}
    for name, scorer in scorers.items():
        probs[name] = scorer.probabilities(cases)
        macro = bootstrap_auroc(y, probs[name], n_bootstrap=1000, seed=0)["macro"]
        weights = dirs[name] / "best.safetensors"
        rows[name] = {"params": n_params(scorer.predictor.model),
                      "image_params": n_params(scorer.predictor.model.image_encoder) + n_params(scorer.predictor.model.fusion),
                      "file_mb": weights.stat().st_size / 2**20, "auroc": macro["auroc"],
                      "auroc_ci": [macro["ci_low"], macro["ci_high"]],
                      "history": history(scorers[name].predictor.meta)}
        if name != "original":
            rows[name]["auroc_change"] = paired_delta(y, probs["original"], probs[name])
    # latency: round-robin over variants, one scan each in turn, after one warm-up pass
    torch.set_num_threads(args.threads)
    images = [(preprocessed(scorers["original"].workflow, c), c.indication) for c in cases[: args.latency_scans]]
    times: dict[str, list[float]] = {name: [] for name in scorers}
    cnn_times: dict[str, list[float]] = {name: [] for name in scorers}
    for name, scorer in scorers.items():
        scorer.timed(*images[0])
    for image, indication in images:
        for name, scorer in scorers.items():
            times[name].append(scorer.timed(image, indication))
            cnn_times[name].append(scorer.timed_backbone(image))
    # ONNX Runtime vs PyTorch, fp32 image path of the original
    module, meta = load_image_path(args.run)
    onnx_path = export_onnx(module, images[0][0], args.out / "original.onnx")
    session = onnx_session(onnx_path, args.threads)
    ort_t, pt_t = [], []
    for image, _ in images:
        t0 = time.perf_counter()
        session.run(["probabilities"], {"image": image.numpy()})
        ort_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            module(image)
        pt_t.append(time.perf_counter() - t0)
    base_ms = statistics.median(times["original"]) * 1000
    base_cnn = statistics.median(cnn_times["original"]) * 1000
    for name in scorers:
        ms = statistics.median(times[name]) * 1000
        cnn_ms = statistics.median(cnn_times[name]) * 1000
        rows[name].update(latency_ms=ms, speedup=base_ms / ms, backbone_ms=cnn_ms, backbone_speedup=base_cnn / cnn_ms,
                          latency_min_ms=min(times[name]) * 1000, backbone_min_ms=min(cnn_times[name]) * 1000,
                          size_ratio=rows["original"]["file_mb"] / rows[name]["file_mb"])
        if not args.skip_rss:
            rows[name]["peak_rss_mb"] = peak_rss_mb(dirs[name], Path(cases[0].image), args.threads)
    return {"rows": rows, "n_heldout": len(cases), "latency_scans": len(images),
            "onnxruntime_vs_pytorch": {"ort_ms": statistics.median(ort_t) * 1000,
                                       "pytorch_ms": statistics.median(pt_t) * 1000,
                                       "speedup": statistics.median(pt_t) / statistics.median(ort_t)}}


def densenet_benchmark(args: argparse.Namespace) -> dict:
    """DenseNet121 backbone at ct_chest.yaml shapes, untrained: size and latency only."""
    from medmm.config import load_workflow
    from medmm.deploy.export_formats import onnx_session
    from medmm.deploy.pruning import structured_prune
    from medmm.deploy.quantization import BackboneFeatures, calibrate_backbone, encode_int8, quantised_backbone
    from medmm.models import ImageEncoder

    cfg = load_workflow(Path(__file__).resolve().parents[1] / "workflows" / "ct_chest.yaml")
    enc_cfg = cfg.network.image_encoder
    roi = list(cfg.preprocessing.roi_size)
    torch.manual_seed(0)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = cfg.network
            self.image_encoder = ImageEncoder(enc_cfg).eval()
            self.fusion = torch.nn.Identity()

    full = Holder()
    pruned = structured_prune(Holder(), 0.5)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, *roi, generator=gen)
    calib = [torch.rand(1, 1, *roi, generator=gen) for _ in range(2)]
    variants = {"fp32": BackboneFeatures(full.image_encoder).eval(), "prune50": BackboneFeatures(pruned.image_encoder).eval()}
    for name, holder in (("int8", full), ("prune50_int8", pruned)):
        state, _ = calibrate_backbone(holder.image_encoder, calib)
        variants[name] = quantised_backbone(holder.image_encoder, state)
    sizes = {}
    for name, holder in (("fp32", full), ("prune50", pruned)):
        state = holder.image_encoder.backbone.state_dict()
        sizes[name] = sum(v.numel() * v.element_size() for v in state.values()) / 2**20
        sizes[name + "_int8"] = sum(v.numel() * v.element_size() for v in encode_int8(state).values()) / 2**20
    torch.set_num_threads(args.threads)
    times = {name: [] for name in variants}
    with torch.inference_mode():
        for module in variants.values():
            module(x)
        for _ in range(args.densenet_repeats):
            for name, module in variants.items():
                t0 = time.perf_counter()
                module(x)
                times[name].append(time.perf_counter() - t0)
    onnx_path = args.out / "densenet121_fp32.onnx"
    with torch.no_grad():
        torch.onnx.export(variants["fp32"], (x,), str(onnx_path), input_names=["image"], opset_version=17, dynamo=False)
    session = onnx_session(onnx_path, args.threads)
    session.run(None, {"image": x.numpy()})
    ort = []
    for _ in range(args.densenet_repeats):
        t0 = time.perf_counter()
        session.run(None, {"image": x.numpy()})
        ort.append(time.perf_counter() - t0)
    base = statistics.median(times["fp32"])
    size_key = {"fp32": "fp32", "prune50": "prune50", "int8": "fp32_int8", "prune50_int8": "prune50_int8"}
    rows = {name: {"params": n_params(full.image_encoder.backbone if "prune" not in name else pruned.image_encoder.backbone),
                   "size_mb": sizes[size_key[name]], "latency_s": statistics.median(t),
                   "speedup": base / statistics.median(t), "size_ratio": sizes["fp32"] / sizes[size_key[name]]}
            for name, t in times.items()}
    return {"roi": roi, "rows": rows, "onnxruntime_fp32_s": statistics.median(ort),
            "onnxruntime_speedup_vs_pytorch": base / statistics.median(ort)}


def print_demo(result: dict) -> None:
    print(f"\ndemo model, {result['n_heldout']} held-out scans; latency = median over {result['latency_scans']} scans, "
          "2 threads, on a CPU shared with other jobs (compare the ratios)")
    print(f"{'variant':<15}{'params':>10}{'img params':>11}{'file MB':>9}{'x smaller':>10}{'ms/scan':>9}"
          f"{'x faster':>9}{'CNN ms':>8}{'x faster':>9}{'RSS MB':>8}{'AUROC [95% CI]':>24}{'change [95% CI]':>26}")
    for name, r in result["rows"].items():
        ch = r.get("auroc_change")
        change = f"{ch['delta']:+.4f} [{ch['ci_low']:+.3f}, {ch['ci_high']:+.3f}]" if ch else ""
        print(f"{name:<15}{r['params']:>10}{r['image_params']:>11}{r['file_mb']:>9.2f}{r['size_ratio']:>10.2f}"
              f"{r['latency_ms']:>9.1f}{r['speedup']:>9.2f}{r['backbone_ms']:>8.1f}{r['backbone_speedup']:>9.2f}"
              f"{r.get('peak_rss_mb', float('nan')):>8.0f}"
              f"{r['auroc']:>8.4f} [{r['auroc_ci'][0]:.3f}, {r['auroc_ci'][1]:.3f}]{change:>26}")
    o = result["onnxruntime_vs_pytorch"]
    print(f"ONNX Runtime fp32 image path {o['ort_ms']:.1f} ms vs PyTorch {o['pytorch_ms']:.1f} ms ({o['speedup']:.2f}x)")


def print_densenet(result: dict) -> None:
    print(f"\nDenseNet121 backbone at ct_chest.yaml ROI {result['roi']}, untrained (speed/size only), 2 threads")
    print(f"{'variant':<15}{'params':>10}{'MB':>8}{'x smaller':>10}{'s/scan':>9}{'x faster':>9}")
    for name, r in result["rows"].items():
        print(f"{name:<15}{r['params']:>10}{r['size_mb']:>8.2f}{r['size_ratio']:>10.2f}{r['latency_s']:>9.2f}{r['speedup']:>9.2f}")
    print(f"ONNX Runtime fp32 {result['onnxruntime_fp32_s']:.2f} s ({result['onnxruntime_speedup_vs_pytorch']:.2f}x vs PyTorch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained demo run dir (the original)")
    parser.add_argument("--heldout", type=Path, required=True, help="manifest of held-out scans (unseen seed)")
    parser.add_argument("--out", type=Path, default=Path("bench_compress"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--distill-epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-scans", type=int, default=20)
    parser.add_argument("--densenet-repeats", type=int, default=3)
    parser.add_argument("--skip-densenet", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"demo": demo_benchmark(args)}
    print_demo(result["demo"])
    (args.out / "compress.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if not args.skip_densenet:
        result["densenet121"] = densenet_benchmark(args)
        print_densenet(result["densenet121"])
    (args.out / "compress.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out / 'compress.json'}")


if __name__ == "__main__":
    main()
