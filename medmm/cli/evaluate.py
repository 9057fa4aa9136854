"""``medmm evaluate``: score a trained run on a manifest (thin layer over :func:`medmm.evaluate`)."""

from __future__ import annotations

from pathlib import Path

import click

from medmm.cli import path_value


def _eps_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        eps = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. 5,10,25") from None
    if not eps or any(e < 0 for e in eps):
        raise click.BadParameter(f"{value!r}: give one or more budgets >= 0 in HU, e.g. 5,10,25")
    return eps


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(), callback=path_value)
@click.option("--data", "manifest", required=True, type=click.Path(), callback=path_value,
              help="Manifest (CSV/JSONL) with image paths, labels or reports, and a split column.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val", "train", "all"]),
              help="Rows to evaluate; 'all' for external sets without a split column.")
@click.option("--out", type=click.Path(), callback=path_value, default=None,
              help="Output folder [default: ./medmm_eval/<run name>].")
@click.option("--attack", "attacks", type=click.Choice(["fgsm", "pgd"]), multiple=True,
              help="Add an adversarial robustness sweep (repeat for both: --attack fgsm --attack pgd).")
@click.option("--eps-hu", default="5,10,25,50", show_default=True, callback=_eps_list,
              help="Attack budgets in HU (L-inf), comma-separated; 0 (clean) is always included.")
@click.option("--pgd-steps", default=10, show_default=True, type=click.IntRange(min=1), help="PGD iterations.")
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Bootstrap resamples for AUROC confidence intervals.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap/attack seed.")
@click.option("--device", default=None, help="Torch device, e.g. cpu or cuda:0.")
@click.option("--protocol", default="medmm", show_default=True, type=click.Choice(["medmm", "ctrate"]),
              help="ctrate: also report the CT-RATE papers' metrics (CT-CLIP's thresholds; docs/evaluation.md).")
@click.option("--explain", "explain", default=None, is_flag=False, flag_value="default",
              help="Also measure explanation faithfulness on a synthetic manifest: pointing game, energy in "
                   "lesion, counterfactual probability drop per finding. Optionally a comma-separated list of "
                   "evidence methods (gradcam, gradcam-layer2, gradcam-layer3, saliency, occlusion).")
@click.option("--explain-limit", default=None, type=click.IntRange(min=1),
              help="Score explanations on at most this many scans (they re-render twins; slow on CPU).")
def evaluate(run_dir: Path, manifest: Path, split: str, out: Path | None, attacks: tuple[str, ...],
             eps_hu: tuple[float, ...], pgd_steps: int, n_bootstrap: int, seed: int, device: str | None,
             protocol: str, explain: str | None = None, explain_limit: int | None = None) -> None:
    """Evaluate RUN_DIR on a manifest: AUROC with 95% CIs, calibration, report metrics, robustness."""
    from medmm.evaluation import evaluate as run_evaluation
    from medmm.evaluation.outputs import terminal_table

    out = out if out is not None else Path.cwd() / "medmm_eval" / (run_dir.resolve().name or "run")
    if explain is not None:  # i20 hook: refuse a non-synthetic manifest before the long evaluation
        from medmm.evaluation.faithfulness import check_methods, synthetic_params

        synthetic_params(manifest)
        check_methods(explain)
    metrics = run_evaluation(run_dir, manifest, split=split, out=out, attack=list(attacks), eps_hu=eps_hu,
                             n_bootstrap=n_bootstrap, seed=seed, pgd_steps=pgd_steps, device=device,
                             protocol=protocol)
    click.echo(terminal_table(metrics))
    if "ctrate" in metrics:  # hook: --protocol ctrate (medmm.evaluation.ctrate)
        from medmm.evaluation.ctrate import ctrate_table

        click.echo(ctrate_table(metrics["ctrate"]))
    from medmm.deploy.provenance import describe_run  # hook: what was done to the model (medmm.deploy)

    for line in describe_run(run_dir):
        click.echo(f"model history: {line}")
    if explain is not None:  # i20 hook: explanation faithfulness (medmm.evaluation.faithfulness)
        from medmm.evaluation.faithfulness import run_faithfulness

        metrics["files"] = sorted(set(metrics["files"]) | set(
            run_faithfulness(run_dir, manifest, split, out, explain, explain_limit, device, click.echo)))
    click.echo(f"wrote {', '.join(metrics['files'])} to {out}")
