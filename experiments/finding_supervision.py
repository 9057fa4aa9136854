"""Does telling the image encoder *where* findings are help it learn the small ones?

An ablation for the demo's accuracy goal. Small focal findings (nodules, calcified plaques, nodes,
fibrotic bands) stay near chance while large ones reach 0.95+, so this script trains the demo
workflow's image encoder alone (image -> encoder embedding -> linear -> one logit per finding; no
text, no report LM, so a variant costs about 2 minutes on 2 CPU cores) under several objectives,
with the same data, seed, optimiser and schedule, and prints each variant's validation macro AUROC
next to the baseline's, in one run. Only the validation split is scored; the test split is never
read.

Variants (``--variants``, comma-separated):

* ``baseline``: image-level BCE (the workflow's ``pos_weight``), what the demo optimises.
* ``dense``: baseline + a BCE on per-cell finding scores on the backbone's ``layer1`` and
  ``layer2`` grids (16³ and 8³ at 64³ input), whose target is where the phantom drew each finding
  (`finding_map` below, max-pooled to the grid), plus random flips on all three axes. The
  phantom knows where it drew a finding, real data sets do not: the question is whether
  localisation supervision is the missing signal.
* ``mil``: a class-wise score map on ``layer3`` with log-sum-exp pooling (multiple-instance
  learning) in place of global average pooling + linear.
* ``long``: the baseline trained for three times ``--epochs`` (more steps, or overfitting?).

Usage::

    python experiments/finding_supervision.py                          # ~8 minutes on 2 CPU cores
    python experiments/finding_supervision.py --variants baseline,long --epochs 14

Writes ``<out>/finding_supervision.json`` with per-finding AUROCs of every variant.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESNET_LEVELS = ("layer1", "layer2", "layer3")
VARIANTS = ("baseline", "dense", "mil", "long")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", type=Path, default=ROOT / "workflows" / "ct_chest_demo.yaml")
    parser.add_argument("--variants", default="baseline,dense,mil",
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--dense-weight", type=float, default=5.0, help="weight of the map BCE")
    parser.add_argument("--dense-pos-weight", type=float, default=10.0, help="weight of positive map cells")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="workflow override, as for medmm train (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/finding_supervision"))
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return args


# ----------------------------------------------------------------------------------------- data
def load_split(cfg: Any) -> tuple[dict[str, list[Any]], list[str]]:
    """The workflow's cases split by patient exactly as `medmm train` splits them."""
    from medmm.data.dataset import load_cases, split_cases

    if cfg.data.source != "synthetic":
        raise SystemExit(f"{cfg.data.source!r} data has no finding maps: this ablation needs data.source: synthetic")
    cases = load_cases(cfg.data)
    return split_cases(cases, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed), list(cfg.data.labels)


def stack_images(cases: list[Any], labels: list[str], cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed images ``[N, 1, *roi]`` and labels ``[N, L]`` through the training pipeline."""
    from medmm.data.dataset import build_dataset

    items = build_dataset(cases, labels, cfg.preprocessing, train=False, cache="none")
    images, targets = zip(*[(item["image"], item["label"]) for item in items])
    return torch.stack(images), torch.stack(targets)


def stack_maps(cases: list[Any], cfg: Any) -> torch.Tensor:
    """Finding bitmasks ``[N, *roi]`` on the network's input grid.

    The maps go through the same orientation / resampling / fit transforms as the images (nearest
    interpolation, identity intensity scaling), so bit k of a voxel marks finding k where the
    network sees it.
    """
    from concurrent.futures import ProcessPoolExecutor
    from itertools import repeat

    from monai.transforms import Compose

    from medmm.data.transforms import deterministic_transforms, volume_to_metatensor
    from medmm.io import Volume

    pre = cfg.preprocessing
    if pre.crop_foreground or (pre.roi_size is not None and pre.fit == "resize"):
        raise SystemExit("finding maps follow only orientation, spacing and pad/crop: set "
                         "preprocessing.crop_foreground: false and fit: pad_crop")
    geometry = pre.model_copy(update={"hu_window": (0.0, 1.0), "intensity_range": (0.0, 1.0), "clip": False,
                                      "interpolation": "nearest"})
    pipeline = Compose(deterministic_transforms(geometry, fit_roi=True))
    s = cfg.data.synthetic
    args = ([c.case_id for c in cases], repeat(s.n), repeat(s.seed), repeat(s.size))
    if s.workers > 1:
        with ProcessPoolExecutor(s.workers) as pool:
            rendered = list(pool.map(finding_map, *args, chunksize=8))
    else:
        rendered = list(map(finding_map, *args))
    maps = [pipeline({"image": volume_to_metatensor(Volume(bits.astype(np.float32), affine))})["image"][0]
            for bits, affine in rendered]
    return torch.stack(maps).round().to(torch.int32)


def pooled_targets(bits: torch.Tensor, n_labels: int, grid: tuple[int, ...]) -> torch.Tensor:
    """``[N, L, *grid]`` uint8: finding k present anywhere in a grid cell (max pooling per bit)."""
    out = []
    for start in range(0, len(bits), 16):
        chunk = bits[start:start + 16]
        planes = torch.stack([(chunk >> k) & 1 for k in range(n_labels)], 1).float()
        out.append(F.adaptive_max_pool3d(planes, grid).to(torch.uint8))
    return torch.cat(out)


# ----------------------------------------------------------------------------------- finding maps
def finding_map(case_id: str, n: int, seed: int = 0, size: int = 64, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Where each finding was drawn in one case of the ``(n, seed, size)`` set, as a bitmask volume.

    Renders the case again (deterministic). Bit ``k`` of a voxel is set when finding
    ``CT_RATE_FINDINGS[k]`` covers more than ``threshold`` of it. Findings drawn as a change of
    anatomy rather than a lesion (cardiomegaly, pericardial effusion, peribronchial thickening,
    bronchiectasis) have no map. Meant for experiments on localisation supervision
    (this experiment); real data sets have no such maps.

    Returns:
        ``(bits, affine)``: int32 ``(X, Y, Z)`` on the scan's voxel grid and its voxel -> RAS affine
        (the same affine as the case's image).
    """
    from medmm.data.synth.generator import _entropy, locate, render_scan
    from medmm.labels import CT_RATE_FINDINGS

    patient_no, scan_index, n_scans = locate(case_id, n, seed)
    phantom, *_ = render_scan(_entropy(int(seed), patient_no), int(size), None, scan_index, n_scans)
    bits = np.zeros(phantom.hu.shape, np.int32)
    for k, name in enumerate(CT_RATE_FINDINGS):
        if name in phantom.effects:
            bits |= (phantom.effects[name] > threshold).astype(np.int32) << k
    return bits, phantom.affine


# ---------------------------------------------------------------------------------------- model
class Probe(nn.Module):
    """The workflow's image encoder + a linear head, optionally with map heads on inner layers."""

    def __init__(self, cfg: Any, n_labels: int, roi: tuple[int, ...], map_levels: tuple[str, ...] = (),
                 mil_level: str | None = None):
        super().__init__()
        from medmm.models import ImageEncoder

        enc_cfg = cfg.network.image_encoder
        if enc_cfg.name not in ("slim", "resnet10", "resnet18"):
            raise SystemExit(f"inner-layer heads need a ResNet-family encoder, not {enc_cfg.name!r}")
        self.encoder = ImageEncoder(enc_cfg)
        self.head = None if mil_level else nn.Linear(enc_cfg.embed_dim, n_labels)
        self.map_levels, self.mil_level = map_levels, mil_level
        self._inner: dict[str, torch.Tensor] = {}
        for level in RESNET_LEVELS:
            getattr(self.encoder.backbone, level).register_forward_hook(self._keep(level))
        with torch.no_grad():
            self.encoder.eval()
            self.encoder.feature_map(torch.zeros(1, enc_cfg.in_channels, *roi))
            self.encoder.train()
        width = {level: int(t.shape[1]) for level, t in self._inner.items()}
        self.grids = {level: tuple(int(d) for d in t.shape[2:]) for level, t in self._inner.items()}
        self.map_heads = nn.ModuleDict({level: _score_head(width[level], n_labels) for level in map_levels})
        self.mil_head = _score_head(width[mil_level], n_labels) if mil_level else None

    def _keep(self, level: str):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self._inner[level] = output
        return hook

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fmap = self.encoder.feature_map(x)  # the hooks keep the inner layers' outputs
        if self.mil_head is not None:
            scores = self.mil_head(self._inner[self.mil_level]).flatten(2)
            r = 5.0  # log-sum-exp sharpness: between mean (r -> 0) and max (r -> inf)
            logits = (torch.logsumexp(r * scores, 2) - math.log(scores.shape[2])) / r
        else:
            logits = self.head(self.encoder.embed(fmap)[0])
        return logits, {level: head(self._inner[level]) for level, head in self.map_heads.items()}


def _score_head(channels: int, n_labels: int) -> nn.Module:
    return nn.Sequential(nn.Conv3d(channels, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(),
                         nn.Conv3d(32, n_labels, 1))


# ------------------------------------------------------------------------------------- training
def train_variant(name: str, cfg: Any, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant and score it on the validation split."""
    from medmm.training.losses import masked_bce, resolve_pos_weight
    from medmm.training.optim import build_optimizer, build_scheduler
    from medmm.training.validation import macro_auroc, per_label_auroc

    torch.manual_seed(cfg.seed)
    labels, roi = data["labels"], tuple(data["x_train"].shape[2:])
    dense = name == "dense"
    model = Probe(cfg, len(labels), roi, map_levels=("layer1", "layer2") if dense else (),
                  mil_level="layer3" if name == "mil" else None)
    epochs = args.epochs * (3 if name == "long" else 1)
    x, y = data["x_train"], data["y_train"]
    batch = cfg.training.batch_size
    steps = math.ceil(len(x) / batch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, steps, epochs)
    pos_weight = resolve_pos_weight(cfg.loss.pos_weight, y)
    targets = {level: pooled_targets(data["bits_train"], len(labels), model.grids[level])
               for level in model.map_levels} if dense else {}
    has_map = data["has_map"].float()[None, :, None, None, None]
    generator = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            image = x[idx]
            maps = {level: t[idx].float() for level, t in targets.items()}
            if dense:  # flips keep every label and move the maps with the image
                for dim in (2, 3, 4):
                    flip = (torch.rand(len(idx), generator=generator) < 0.5)[:, None, None, None, None]
                    image = torch.where(flip, image.flip(dim), image)
                    maps = {level: torch.where(flip, m.flip(dim), m) for level, m in maps.items()}
            logits, scores = model(image)
            loss = masked_bce(logits, y[idx], None, pos_weight)
            for level, score in scores.items():
                weight = torch.where(maps[level] > 0, args.dense_pos_weight, 1.0) * has_map
                loss = loss + args.dense_weight * F.binary_cross_entropy_with_logits(score, maps[level], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    seconds = time.perf_counter() - start
    per_label = per_label_auroc(data["y_val"].numpy(), predict(model, data["x_val"]), labels)
    train_auc = macro_auroc(per_label_auroc(y.numpy(), predict(model, x), labels))
    return {"variant": name, "epochs": epochs, "train_s": round(seconds, 1),
            "val_macro_auroc": macro_auroc(per_label), "train_macro_auroc": train_auc, "val_auroc": per_label}


@torch.no_grad()
def predict(model: Probe, images: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([torch.sigmoid(model(images[i:i + 16])[0]) for i in range(0, len(images), 16)]).numpy()


def main(argv: list[str] | None = None) -> int:
    from medmm.config import load_workflow
    from medmm.data.synth import RENDERED_FINDINGS
    from medmm.io.writers import atomic_write_text as atomic_write

    args = parse_args(argv)
    cfg = load_workflow(args.workflow, args.overrides)
    splits, labels = load_split(cfg)
    t0 = time.perf_counter()
    x_train, y_train = stack_images(splits["train"], labels, cfg)
    x_val, y_val = stack_images(splits["val"], labels, cfg)
    data: dict[str, Any] = {"labels": labels, "x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    if "dense" in args.variants:
        bits = stack_maps(splits["train"], cfg)
        data["bits_train"] = bits
        present = 0
        for value in torch.unique(bits).tolist():
            present |= int(value)
        data["has_map"] = torch.tensor([bool(present >> k & 1) for k in range(len(labels))])
    else:
        data["has_map"] = torch.zeros(len(labels), dtype=torch.bool)
    print(f"data: {len(x_train)} train / {len(x_val)} val scans of {tuple(x_train.shape[2:])} "
          f"({time.perf_counter() - t0:.0f} s); rendered findings: {len(RENDERED_FINDINGS)}", flush=True)
    results = []
    for name in args.variants:
        result = train_variant(name, cfg, data, args)
        results.append(result)
        print(f"  {name:9s} val macro AUROC {result['val_macro_auroc']:.3f} (train {result['train_macro_auroc']:.3f}) "
              f"in {result['train_s']:.0f} s", flush=True)
    base = next((r for r in results if r["variant"] == "baseline"), None)
    print(f"\n{'variant':9s}  epochs  val AUROC  vs baseline  train AUROC  small findings*")
    small = ("Lung nodule", "Arterial wall calcification", "Coronary artery wall calcification",
             "Lymphadenopathy", "Pulmonary fibrotic sequela", "Emphysema")
    for r in results:
        ratio = f"{r['val_macro_auroc'] / base['val_macro_auroc']:.3f}x" if base else "-"
        focal = np.mean([r["val_auroc"][k] for k in small if k in r["val_auroc"]])
        print(f"{r['variant']:9s}  {r['epochs']:6d}  {r['val_macro_auroc']:9.3f}  {ratio:>11s}  "
              f"{r['train_macro_auroc']:11.3f}  {focal:.3f}")
    print("* mean AUROC of nodule, arterial + coronary calcification, lymphadenopathy, fibrotic sequela, emphysema")
    atomic_write(args.out / "finding_supervision.json", json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
