"""Seed spread: is a change to a workflow bigger than its run-to-run noise?

Trains WORKFLOW once per seed in ``--seeds`` as it is (the baseline) and, with ``--variant``, once
more per seed with the variant's overrides; everything else (data, split, epochs) is identical.
Prints per seed the best validation macro AUROC of each arm, then per arm the mean ± standard
deviation, and the paired difference variant − baseline per seed with its mean and the ratio of
the means. Validation split only (what model selection sees); the test split is not touched.

On the demo, seeds 0 and 1 of the same workflow differ by 0.02 validation macro AUROC (92
validation scans), so a single-seed comparison cannot show a smaller effect.

Usage::

    python experiments/seed_spread.py workflows/ct_chest_demo.yaml --seeds 0,1     # ~11 min on 2 CPU cores
    python experiments/seed_spread.py workflows/ct_chest_demo.yaml --seeds 0,1,2 \\
        --variant optimizer.lr=3e-3

Results are printed as a table and written to ``<out>/seed_spread.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def spread(scores: list[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (None for one value), minimum and maximum."""
    return {"mean": statistics.fmean(scores), "sd": statistics.stdev(scores) if len(scores) > 1 else None,
            "min": min(scores), "max": max(scores)}


def paired(baseline: list[float], variant: list[float]) -> dict[str, Any]:
    """Per-seed differences variant − baseline, their mean and sd, and the ratio of the means."""
    diffs = [v - b for b, v in zip(baseline, variant)]
    return {"diffs": diffs, **{f"diff_{k}": v for k, v in spread(diffs).items()},
            "ratio_of_means": statistics.fmean(variant) / statistics.fmean(baseline)}


def run_arm(args: argparse.Namespace, arm: str, overrides: list[str]) -> list[dict[str, Any]]:
    """Train the workflow once per seed with ``overrides``; one row per seed."""
    import medmm

    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        run = medmm.train(args.workflow, run_dir=args.out / f"{arm}-seed{seed}", device=args.device,
                          overrides=[*args.set, *overrides, f"seed={seed}"], verbose=args.verbose)
        best = run.best or {}
        if best.get("val_macro_auroc") is None:
            raise SystemExit(f"{arm} seed {seed}: validation macro AUROC is undefined "
                             "(no label has both classes in the validation split)")
        row = {"arm": arm, "seed": seed, "val_macro_auroc": best["val_macro_auroc"], "best_epoch": best.get("epoch"),
               "train_s": round(time.perf_counter() - t0, 1), "run_dir": str(run.run_dir)}
        rows.append(row)
        print(f"{arm:<9} seed {seed:<3} val macro AUROC {row['val_macro_auroc']:.3f} "
              f"(best epoch {row['best_epoch']}, {row['train_s']:.0f} s)", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-arm spread and, when there is a variant, the paired comparison with the baseline."""
    arms = dict.fromkeys(r["arm"] for r in rows)
    scores = {arm: [r["val_macro_auroc"] for r in rows if r["arm"] == arm] for arm in arms}
    out: dict[str, Any] = {arm: spread(s) for arm, s in scores.items()}
    if "variant" in scores:
        out["variant_vs_baseline"] = paired(scores["baseline"], scores["variant"])
    return out


def _fmt(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def report(summary: dict[str, Any]) -> str:
    """The summary as printable lines."""
    lines = [f"{arm:<9} mean {_fmt(s['mean'])} ± {_fmt(s['sd'])} (min {_fmt(s['min'])}, max {_fmt(s['max'])})"
             for arm, s in summary.items() if arm in ("baseline", "variant")]
    if "variant_vs_baseline" in summary:
        p = summary["variant_vs_baseline"]
        lines.append(f"variant − baseline per seed: {' '.join(f'{d:+.3f}' for d in p['diffs'])}; "
                     f"mean {p['diff_mean']:+.3f} ± {_fmt(p['diff_sd'])}; ratio of means {p['ratio_of_means']:.3f}x")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", type=Path, help="workflow YAML (e.g. workflows/ct_chest_demo.yaml)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to both arms (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                        help="override that defines the variant arm (repeatable); none = baseline only")
    parser.add_argument("--out", type=Path, default=Path("bench_out/seed_spread"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--verbose", action="store_true", help="print each run's epoch table")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        parser.error("--seeds is empty")
    if not args.workflow.is_file():
        parser.error(f"{args.workflow}: workflow file not found")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from medmm.io.writers import atomic_write_text as atomic_write

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run_arm(args, "baseline", [])
    if args.variant:
        rows += run_arm(args, "variant", args.variant)
    summary = summarise(rows)
    print(report(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"workflow": str(args.workflow), "set": args.set, "variant": args.variant, "runs": rows, "summary": summary}
    atomic_write(args.out / "seed_spread.json", json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
