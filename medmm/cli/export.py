"""``medmm export``: ONNX / TorchScript / MONAI bundle of a run's image path (thin layer over `medmm.deploy.export_run`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript", "monai-bundle"]))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output file (onnx, torchscript) or new folder (monai-bundle).")
def export(run_dir: Path, fmt: str, out: Path) -> None:
    """Export RUN_DIR's image path (encoder + classifier) and check it against PyTorch."""
    from medmm.deploy import export_run

    record = export_run(run_dir, fmt, out)
    shape = "dynamic" if record.get("dynamic_spatial") else "fixed (ROI)"
    click.echo(f"wrote {record['path']} ({fmt}, spatial shape {shape}); max |p - p_pytorch| = "
               f"{record['max_abs_prob_diff']:.2e}")
