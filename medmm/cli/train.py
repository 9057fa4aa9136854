"""``medmm train WORKFLOW``: train a model from a workflow YAML (thin layer over `medmm.training.train`)."""

from __future__ import annotations

import click


@click.command("train")
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=str), required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a workflow value, e.g. --set training.epochs=2 (repeatable; values are YAML).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Output folder (default: <output.run_root>/<name>-<UTC timestamp>).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last saved state.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda when available.")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch table.")
@click.option("--default", "make_default", is_flag=True, help="Make this run the model `medmm infer` uses without --model.")
def train(workflow: str | None, overrides: tuple[str, ...], run_dir: str | None, resume: bool,
          device: str | None, quiet: bool, make_default: bool) -> None:
    """Train on the data named in WORKFLOW and write a run directory.

    WORKFLOW may be omitted with --resume (the run's own workflow.yaml is used).
    """
    from medmm.errors import MedmmConfigError
    from medmm.training import train as run_training

    if workflow is None and not resume:
        raise MedmmConfigError("WORKFLOW", "give a workflow YAML (e.g. workflows/ct_chest_demo.yaml)")
    run = run_training(workflow, run_dir=run_dir, resume=resume, device=device, overrides=list(overrides),
                       verbose=not quiet)
    best = run.best.get("val_macro_auroc")
    best_text = "n/a" if best is None else f"{best:.3f}"
    click.echo(f"run: {run.run_dir}  best epoch {run.best.get('epoch')}  val macro AUROC {best_text}"
               + ("  (stopped early)" if run.stopped_early else ""))
    if make_default:
        from medmm.inference.default_model import register_default

        register_default(run.run_dir)
        click.echo(f"`medmm infer SCAN` now uses this model by default ({run.run_dir})")
