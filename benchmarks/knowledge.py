"""Knowledge ablation: plain vs KR loss vs hierarchy (C-HMCNN) vs knowledge queries vs all.

Every variant is trained with `medmm.train` (the real engine) on the same synthetic training
phantoms at several label fractions (``training.label_fraction`` hides a seeded share of the
training (case, finding) labels from the supervised loss) and several seeds, and is scored on one
fixed held-out set of phantoms generated from *another* data seed (never seen in training or
validation, identical for every run). Reported per (fraction, variant):

* macro AUROC over the held-out findings with both classes: mean ± sd over seeds, and over the
  rarest third of the findings (lowest held-out prevalence);
* the paired difference to ``plain`` (same fractions and seeds, same scans) with a percentile
  bootstrap CI over held-out scans (`medmm.evaluation.paired`);
* the ontology violation rate of the *raw* outputs — before the max-constraint module and before
  the consistency step — at 0.5 and continuously (``p_a > p_b`` / ``p_a + p_b > 1``).

Usage (one command; ~30 min on 2 idle CPU cores with the defaults, where the plain model learns:
48³, 384 phantoms, 15 epochs, the demo's slim widths; the first defaults, 32³ and 4 epochs, left
every arm at chance)::

    PYTHONPATH=$PWD python benchmarks/knowledge.py --out bench_out/knowledge
    PYTHONPATH=$PWD python benchmarks/knowledge.py --tiny        # smoke run, ~2 min

Writes ``<out>/knowledge.json`` and ``<out>/knowledge.md``; each run's result is kept in
``<out>/runs/<name>/result.json`` so an interrupted benchmark resumes where it stopped.
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

VARIANTS = ("plain", "kr", "hierarchy", "queries", "all")


def variant_settings(variant: str, kr_weight: float) -> dict[str, Any]:
    """Workflow overrides of a variant (``all`` = KR loss + hierarchy + knowledge queries)."""
    kr = variant in ("kr", "all")
    hierarchy = variant in ("hierarchy", "all")
    queries = variant in ("queries", "all")
    return {"kr_weight": kr_weight if kr else 0.0, "hierarchy": {} if hierarchy else None,
            "head": "knowledge_queries" if queries else "fusion"}


def workflow(args: argparse.Namespace, variant: str, fraction: float, seed: int) -> dict[str, Any]:
    """The workflow of one run: identical across runs except variant, label fraction and seed."""
    v = variant_settings(variant, args.kr_weight)
    size = args.size
    return {
        "name": f"{variant}-f{round(fraction * 100)}-s{seed}",
        "seed": seed,
        "data": {"source": "synthetic", "val_fraction": 0.2, "test_fraction": 0.0,
                 "synthetic": {"n": args.n_train, "size": size, "seed": args.data_seed, "cache_dir": str(args.cache_dir)}},
        "preprocessing": {"spacing": None, "hu_window": list(args.hu_window), "roi_size": [size] * 3, "fit": "resize"},
        "network": {
            "image_encoder": {"name": "slim", "widths": args.widths, "depth": [1, 1, 1, 1],
                              "embed_dim": args.hidden, "token_grid": 2},
            "report_generator": {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 40,
                                 "max_report_tokens": 16, "max_new_tokens": 4},
            "fusion": {"use_text": False, "hidden": args.hidden, "head": v["head"]},
            "hierarchy": v["hierarchy"],
        },
        "ontology": {"kr_weight": v["kr_weight"], "kr_form": "hinge"},
        "loss": {"lm_weight": 0.0, "pos_weight": args.pos_weight},
        "optimizer": {"lr": args.lr},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "label_fraction": fraction,
                     "amp": False, "cache": "memory",
                     "text": {"use_generated_report": False, "use_indication": False}},
        "output": {"run_root": str(args.out / "runs")},
    }


def held_out(args: argparse.Namespace, wf: dict[str, Any]):
    """The fixed held-out dataset: ``n_test`` phantoms from ``test_seed`` (not the training seed)."""
    from medmm.config import load_workflow
    from medmm.data.dataset import build_dataset, label_matrix, load_cases

    test_wf = dict(wf, data={**wf["data"], "synthetic": {**wf["data"]["synthetic"], "n": args.n_test,
                                                           "seed": args.test_seed}})
    cfg = load_workflow(test_wf)
    cases = load_cases(cfg.data)
    labels = list(cfg.data.labels)
    dataset = build_dataset(cases, labels=labels, cfg=cfg.preprocessing, train=False, cache="memory")
    return dataset, label_matrix(cases, labels).numpy(), labels


def evaluate(run_dir: Path, dataset: Any, labels: list[str], constraints: Any) -> dict[str, Any]:
    """Held-out probabilities (after / before the max-constraint) and violation rates of the best checkpoint."""
    import torch
    from monai.data import DataLoader

    from medmm.knowledge import violation_rate
    from medmm.models import load_checkpoint
    from medmm.training.validation import predict

    model, _ = load_checkpoint(run_dir, "best")
    pred = predict(model, DataLoader(dataset, batch_size=16, shuffle=False), torch.device("cpu"),
                   use_generated_report=False, use_indication=False)
    raw = torch.as_tensor(pred["raw_probs"], dtype=torch.float32)
    out = torch.as_tensor(pred["probs"], dtype=torch.float32)
    return {"probs": pred["probs"].tolist(), "raw_probs": pred["raw_probs"].tolist(),
            "violation_raw": violation_rate(raw, constraints, threshold=0.5),
            "violation_raw_continuous": violation_rate(raw, constraints, threshold=None),
            "violation_output": violation_rate(out, constraints, threshold=0.5)}


def run_all(args: argparse.Namespace) -> tuple[list[dict[str, Any]], np.ndarray, list[str], list[str]]:
    import torch

    import medmm
    from medmm.knowledge import load_ontology
    from medmm.io.writers import atomic_write_text

    torch.set_num_threads(args.threads)
    first = workflow(args, "plain", 1.0, 0)
    dataset, y_test, labels = held_out(args, first)
    constraints = load_ontology().constraints(labels)
    rows = []
    for fraction in args.fractions:
        for seed in args.seeds:
            for variant in args.variants:
                wf = workflow(args, variant, fraction, seed)
                run_dir = args.out / "runs" / wf["name"]
                done = run_dir / "result.json"
                if done.is_file():
                    rows.append(json.loads(done.read_text()))
                    continue
                if args.summarise_only:
                    continue
                t0 = time.perf_counter()
                trained = medmm.train(wf, run_dir=run_dir, device="cpu", verbose=False)
                row = {"variant": variant, "label_fraction": fraction, "seed": seed,
                       "best_epoch": trained.best.get("epoch"), "train_s": round(time.perf_counter() - t0, 1),
                       **evaluate(Path(trained.run_dir), dataset, labels, constraints)}
                atomic_write_text(done, json.dumps(row))
                rows.append(row)
                print(f"{wf['name']:<22} best epoch {row['best_epoch']} | {row['train_s']:6.1f} s | "
                      f"raw violations {row['violation_raw']:.3f}", flush=True)
    return rows, y_test, labels, constraints.describe()


def summarise(rows: list[dict[str, Any]], y: np.ndarray, labels: list[str],
              args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """One summary row per (fraction, variant): mean ± sd, rare-finding AUROC, paired diff vs plain."""
    from medmm.evaluation.paired import paired_macro_auroc_difference
    from medmm.training.validation import macro_auroc, per_label_auroc

    prevalence = {name: float((y[:, j] == 1).sum() / max(1, (y[:, j] >= 0).sum())) for j, name in enumerate(labels)}
    scored = [n for n in labels if 0 < prevalence[n] < 1]
    rare = sorted(scored, key=lambda n: prevalence[n])[: max(1, len(scored) // 3)]
    table = []
    for fraction in args.fractions:
        plain = [np.asarray(r["probs"]) for r in rows if r["label_fraction"] == fraction and r["variant"] == "plain"]
        for variant in args.variants:
            runs = sorted((r for r in rows if r["label_fraction"] == fraction and r["variant"] == variant),
                          key=lambda r: r["seed"])
            if not runs:
                continue
            per = [per_label_auroc(y, np.asarray(r["probs"]), labels) for r in runs]
            macro = [macro_auroc(p) for p in per]
            rare_macro = [macro_auroc(p, rare) for p in per]
            row = {"label_fraction": fraction, "variant": variant, "n_seeds": len(runs),
                   "macro_auroc_mean": float(np.mean(macro)),
                   "macro_auroc_sd": float(np.std(macro, ddof=1)) if len(macro) > 1 else None,
                   "macro_auroc_per_seed": macro,
                   "rare_macro_auroc_mean": float(np.mean(rare_macro)),
                   "violation_raw_mean": float(np.mean([r["violation_raw"] for r in runs])),
                   "violation_raw_continuous_mean": float(np.mean([r["violation_raw_continuous"] for r in runs])),
                   "violation_output_mean": float(np.mean([r["violation_output"] for r in runs])),
                   "train_s_mean": float(np.mean([r["train_s"] for r in runs]))}
            if variant != "plain" and len(plain) == len(runs):
                row["vs_plain"] = paired_macro_auroc_difference(y, [np.asarray(r["probs"]) for r in runs], plain,
                                                                n_bootstrap=args.n_bootstrap, seed=0)
            table.append(row)
    return table, rare


def markdown(table: list[dict[str, Any]], rare: list[str], args: argparse.Namespace, wall_s: float) -> str:
    lines = [f"Held-out: {args.n_test} phantoms (data seed {args.test_seed}); training: {args.n_train} phantoms "
             f"(data seed {args.data_seed}, 20 % of them for validation/checkpoint choice), {args.size}^3, "
             f"{args.epochs} epochs, seeds {args.seeds}. Rare findings (lowest held-out prevalence): {', '.join(rare)}. "
             f"Wall time {wall_s / 60:.1f} min.", "",
             "| labels | variant | seeds | macro AUROC (mean ± sd) | Δ vs plain [95 % CI] | rare-finding AUROC | "
             "raw violations @0.5 | raw violations (continuous) | output violations @0.5 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        sd = f" ± {r['macro_auroc_sd']:.3f}" if r["macro_auroc_sd"] is not None else ""
        d = r.get("vs_plain")
        diff = f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else "—"
        lines.append(f"| {r['label_fraction']:.0%} | {r['variant']} | {r['n_seeds']} | "
                     f"{r['macro_auroc_mean']:.3f}{sd} | {diff} | "
                     f"{r['rare_macro_auroc_mean']:.3f} | {r['violation_raw_mean']:.3f} | "
                     f"{r['violation_raw_continuous_mean']:.3f} | {r['violation_output_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.2, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=384, help="synthetic training + validation phantoms")
    p.add_argument("--n-test", type=int, default=150, help="held-out phantoms (another data seed)")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 128])
    p.add_argument("--hidden", type=int, default=64, help="embedding / head width")
    p.add_argument("--hu-window", type=float, nargs=2, default=[-1000.0, 3000.0],
                   help="HU window (the demo's: calcium, bone and metal stay apart)")
    p.add_argument("--kr-weight", type=float, default=1.0)
    p.add_argument("--pos-weight", choices=["auto"], default=None, help="BCE/MCLoss positive weight (default none)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--test-seed", type=int, default=1000)
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/medmm/synthetic").expanduser())
    p.add_argument("--out", type=Path, default=Path("bench_out/knowledge"))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--summarise-only", action="store_true",
                   help="train nothing: tabulate the runs already finished under --out (partial tables say so)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 2 variants, 1 fraction, 2 seeds, tiny data")
    args = p.parse_args(argv)
    if args.tiny:
        args.variants, args.fractions, args.seeds = ["plain", "all"], [0.2], [0, 1]
        args.n_train, args.n_test, args.size, args.epochs, args.widths = 40, 30, 24, 2, [4, 8, 8, 8]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from medmm.io.writers import atomic_write_text

    t0 = time.perf_counter()
    print(f"knowledge ablation: variants {args.variants}, label fractions {args.fractions}, seeds {args.seeds}, "
          f"{args.n_train} training phantoms, {args.n_test} held-out, {args.size}^3, {args.epochs} epochs", flush=True)
    rows, y, labels, constraints = run_all(args)
    table, rare = summarise(rows, y, labels, args)
    wall = time.perf_counter() - t0
    md = markdown(table, rare, args, wall)
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "wall_s": round(wall, 1), "labels": labels,
               "constraints": constraints, "rare_findings": rare, "table": table,
               "runs": [{k: v for k, v in r.items() if k not in ("probs", "raw_probs")} for r in rows]}
    atomic_write_text(args.out / "knowledge.json", json.dumps(summary, indent=2))
    atomic_write_text(args.out / "knowledge.md", md)
    print(md)
    print(f"wrote {args.out / 'knowledge.json'} and knowledge.md; wall time {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
