"""Knowledge-regularisation ablation: does the ontology loss help when labels are scarce?

Trains the same small image-only model on synthetic chest CTs four times — KR weight 0 and > 0,
each with 10 % and 100 % of the training labels visible to the BCE (``training.label_fraction``:
a seeded mask hides the rest; the KR loss still sees every training case) — and reports, on the
held-out **test** split (never on training data):

* macro AUROC over the labels with both classes in the test split (and over the labels that
  appear in a constraint, where the KR loss can act),
* the constraint-violation rate of the raw probabilities, *before* the consistency operator
  (share of (case, constraint) pairs violated at threshold 0.5, and the continuous share
  ``p_a > p_b`` / ``p_a + p_b > 1``),
* the same after :func:`medmm.knowledge.make_consistent` (0 by construction) and its AUROC.

Usage::

    python experiments/kr_ablation.py --tiny            # ~1 minute on 2 CPU cores
    python experiments/kr_ablation.py --n 240 --size 64 --epochs 15 --out bench_out/kr_ablation

Results are printed as a table and written to ``<out>/kr_ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def workflow(args: argparse.Namespace, fraction: float, kr_weight: float) -> dict[str, Any]:
    """The workflow of one run: identical for all four runs except label_fraction and kr_weight."""
    size = args.size
    data: dict[str, Any] = {"val_fraction": 0.2, "test_fraction": 0.25}
    if args.manifest:
        data.update(source="manifest", manifest={"path": str(args.manifest)})
    else:
        data.update(source="synthetic", synthetic={"n": args.n, "size": size, "seed": args.data_seed,
                                                    "cache_dir": str(args.cache_dir)})
    return {
        "name": f"kr-ablation-f{int(fraction * 100)}-kr{kr_weight:g}",
        "seed": args.seed,
        "data": data,
        "preprocessing": {"spacing": None, "hu_window": [-1000, 400], "roi_size": [size] * 3, "fit": "resize"},
        "network": {
            "image_encoder": {"name": "slim", "widths": args.widths, "depth": [1, 1, 1, 1],
                              "embed_dim": 32, "token_grid": 1},
            "report_generator": {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 40,
                                 "max_report_tokens": 16, "max_new_tokens": 4},
            "fusion": {"use_text": False, "hidden": 32},
        },
        "ontology": {"kr_weight": kr_weight, "kr_form": args.kr_form},
        "loss": {"lm_weight": 0.0, "pos_weight": args.pos_weight},
        "optimizer": {"lr": args.lr},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "label_fraction": fraction,
                     "amp": False, "cache": "memory",
                     "text": {"use_generated_report": False, "use_indication": False}},
        "output": {"run_root": str(args.out)},
    }


def evaluate_on_test(run_dir: Path, cfg: Any, device: str) -> dict[str, Any]:
    """Macro AUROC and violation rates of the best checkpoint on the run's test split."""
    import torch

    from medmm.data.dataset import build_dataset, load_cases, split_cases
    from medmm.knowledge import load_ontology, make_consistent, violation_rate
    from medmm.models import load_checkpoint
    from medmm.training.validation import macro_auroc, per_label_auroc, predict
    from monai.data import DataLoader

    labels = list(cfg.data.labels)
    splits = split_cases(load_cases(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    if not splits["test"]:
        raise SystemExit("the test split is empty: use more cases (--n)")
    dataset = build_dataset(splits["test"], labels=labels, cfg=cfg.preprocessing, train=False, cache="none")
    model, _ = load_checkpoint(run_dir, "best", map_location=device)
    pred = predict(model, DataLoader(dataset, batch_size=8, shuffle=False), torch.device(device),
                   use_generated_report=False, use_indication=False)
    y, p = pred["labels"], pred["probs"]
    constraints = load_ontology(cfg.ontology.path).constraints(labels)
    raw = torch.as_tensor(p, dtype=torch.float32)
    fixed = make_consistent(raw, constraints, track_repairs=False).probs
    auroc_raw = per_label_auroc(y, p, labels)
    auroc_fixed = per_label_auroc(y, fixed.double().numpy(), labels)
    pairs = torch.cat([constraints.implications, constraints.exclusions]).flatten().tolist()
    constrained = sorted({labels[i] for i in pairs})  # the labels the KR loss can act on
    return {
        "n_test": int(len(y)),
        "n_auroc_labels": len(auroc_raw),
        "macro_auroc": macro_auroc(auroc_raw),
        "macro_auroc_consistent": macro_auroc(auroc_fixed),
        "constrained_labels": constrained,
        "macro_auroc_constrained_labels": macro_auroc(auroc_raw, constrained),
        "violation_rate": violation_rate(raw, constraints, threshold=0.5),
        "violation_rate_continuous": violation_rate(raw, constraints, threshold=None),
        "violating_cases": violation_rate(raw, constraints, threshold=0.5, per="sample"),
        "violation_rate_after_consistency": violation_rate(fixed, constraints, threshold=None),
        "constraints": constraints.describe(),
        "per_label_auroc": auroc_raw,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    import medmm
    from medmm.config import load_workflow

    torch.set_num_threads(args.threads)
    results = []
    for fraction in args.fractions:
        for kr_weight in (0.0, args.kr_weight):
            wf = workflow(args, fraction, kr_weight)
            run_dir = args.out / wf["name"]
            t0 = time.perf_counter()
            trained = medmm.train(wf, run_dir=run_dir, device=args.device, verbose=args.verbose)
            cfg = load_workflow(wf)
            row = {"label_fraction": fraction, "kr_weight": kr_weight, "run_dir": str(trained.run_dir),
                   "best_epoch": trained.best.get("epoch"), "train_s": round(time.perf_counter() - t0, 1),
                   **evaluate_on_test(Path(trained.run_dir), cfg, args.device)}
            results.append(row)
            print(_row(row), flush=True)
    return results


def _row(r: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "   n/a" if v is None else f"{v:6.3f}"

    return (f"labels {r['label_fraction']:>5.0%}  kr {r['kr_weight']:<4g} | test macro AUROC {f(r['macro_auroc'])} "
            f"(consistent {f(r['macro_auroc_consistent'])}, constrained labels "
            f"{f(r['macro_auroc_constrained_labels'])}) | violations before consistency: "
            f"{f(r['violation_rate'])} @0.5, {f(r['violation_rate_continuous'])} continuous, "
            f"{f(r['violating_cases'])} of cases | after: {f(r['violation_rate_after_consistency'])} "
            f"| n_test {r['n_test']} | {r['train_s']} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny data/model/epochs: ~1 minute on CPU")
    parser.add_argument("--n", type=int, default=240, help="synthetic cases")
    parser.add_argument("--size", type=int, default=64, help="synthetic cube edge (voxels) = roi size")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 64])
    parser.add_argument("--pos-weight", choices=["auto"], default=None, help="BCE positive weight (default none)")
    parser.add_argument("--kr-weight", type=float, default=1.0, help="the > 0 KR weight")
    parser.add_argument("--kr-form", choices=["hinge", "product"], default="hinge")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--manifest", type=Path, default=None, help="use this manifest instead of synthetic data")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/medmm/synthetic").expanduser())
    parser.add_argument("--out", type=Path, default=Path("bench_out/kr_ablation"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.n, args.size, args.epochs, args.widths = min(args.n, 32), 24, 2, [4, 8, 8, 8]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"KR ablation: n={args.n} size={args.size} epochs={args.epochs} kr_form={args.kr_form} "
          f"kr_weight={args.kr_weight} fractions={args.fractions} seed={args.seed} (test split metrics)")
    results = run(args)
    out = args.out / "kr_ablation.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    finite = [r["macro_auroc"] for r in results if r["macro_auroc"] is not None]
    return 0 if finite and all(np.isfinite(finite)) else 1


if __name__ == "__main__":
    sys.exit(main())
