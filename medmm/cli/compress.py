"""``medmm compress``: a smaller/faster copy of a run dir (thin layer over `medmm.deploy.compress_run`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compress")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="New run dir to write.")
@click.option("--prune", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Fraction of channels (structured) or weights (unstructured) to remove, e.g. 0.5.")
@click.option("--prune-kind", type=click.Choice(["structured", "unstructured"]), default="structured", show_default=True)
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="int8: static PTQ of the 3D convolutions (calibrated on training scans) + dynamic Linear.")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fine-tune after pruning with the run's own workflow (lr scaled by --lr-scale).")
@click.option("--distill-from", type=click.Path(path_type=Path), default=None,
              help="Teacher run dir: train the (pruned) student on its probabilities plus the labels.")
@click.option("--calibration-scans", type=click.IntRange(min=1), default=32, show_default=True,
              help="Training scans used to calibrate int8 activations.")
@click.option("--lr-scale", type=click.FloatRange(min=0.0, min_open=True), default=0.1, show_default=True,
              help="Fine-tuning learning rate = the workflow's lr x this.")
@click.option("--teacher-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Distillation target = w * teacher probability + (1 - w) * label.")
def compress(run_dir: Path, out: Path, prune: float | None, prune_kind: str, quantize: str | None,
             finetune_epochs: int, distill_from: Path | None, calibration_scans: int, lr_scale: float,
             teacher_weight: float) -> None:
    """Prune, fine-tune/distil and/or int8-quantise RUN_DIR into a new run dir (recorded in its medmm.json)."""
    from medmm.deploy import compress_run, describe_run

    compress_run(run_dir, out, prune=prune, prune_kind=prune_kind, quantize=quantize,
                 finetune_epochs=finetune_epochs, distill_from=distill_from, calibration_scans=calibration_scans,
                 lr_scale=lr_scale, teacher_weight=teacher_weight)
    for line in describe_run(out):
        click.echo(f"  {line}")
    click.echo(f"wrote {out}")
