"""Adversarial robustness of several trained runs on the same scans: one table, one plot.

Each run is evaluated with ``medmm.evaluate`` (FGSM and PGD at the same budgets in HU, on the
same split of the same manifest); the sweeps are then joined into one long table (model, attack,
ε, macro AUROC, label accuracy, mean |Δp|) and one robustness curve per (model, attack).

Usage::

    medmm train workflows/ct_chest_demo.yaml --run-dir runs/std
    medmm train workflows/ct_chest_demo.yaml --run-dir runs/adv --set training.adversarial.method=pgd \\
        --set training.adversarial.eps_hu=25
    python benchmarks/robustness.py runs/std runs/adv --data ~/.cache/medmm/synthetic/<set>/manifest.csv

Writes ``<out>/<run>/`` (each run's full evaluation) and ``<out>/robustness.{csv,md,png}``.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained run directories (e.g. standard, adversarial)")
    parser.add_argument("--data", type=Path, required=True, help="manifest with a split column")
    parser.add_argument("--split", default="test")
    parser.add_argument("--eps-hu", default="5,10,25,50", help="budgets in HU, comma-separated")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("medmm_eval") / "robustness")
    args = parser.parse_args(argv)

    import medmm
    from medmm.evaluation.plots import robustness_png
    from medmm.evaluation.robustness import format_table, robustness_table
    from medmm.io.writers import atomic_write_bytes

    eps = tuple(float(e) for e in args.eps_hu.split(","))
    sweeps = {}
    for run in args.runs:
        name = run.resolve().name
        metrics = medmm.evaluate(run, args.data, split=args.split, out=args.out / name, attack=["fgsm", "pgd"],
                                 eps_hu=eps, pgd_steps=args.pgd_steps, n_bootstrap=args.n_bootstrap)
        sweeps[name] = [{k: v for k, v in row.items() if k != "model"} for row in metrics["robustness"]]
        macro = metrics["classification"]["macro"]
        print(f"{name}: clean macro AUROC {macro['auroc']:.3f} (95% CI {macro['ci_low']:.3f}-{macro['ci_high']:.3f}), "
              f"{metrics['n_scans']} scans")

    rows = robustness_table(sweeps)
    table = format_table(rows)
    print(table)
    columns = ["model", "method", "eps_hu", "steps", "n_scans", "macro_auroc", "label_accuracy", "mean_abs_prob_change"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(args.out / "robustness.csv", buf.getvalue().encode())
    atomic_write_bytes(args.out / "robustness.md", ("```\n" + table + "\n```\n").encode())
    atomic_write_bytes(args.out / "robustness.png", robustness_png(rows))
    print(f"wrote robustness.csv, robustness.md, robustness.png to {args.out}")


if __name__ == "__main__":
    main()
