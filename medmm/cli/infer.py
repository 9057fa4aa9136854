"""``medmm infer PATH [--model RUN_DIR]``: diagnose one scan, a folder of scans or a manifest.

Thin layer over :mod:`medmm.inference`: heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from medmm.cli import path_value


@click.command("infer")
@click.argument("path", type=click.Path(), callback=path_value)
@click.option("--model", "run_dir", default=None, type=click.Path(), callback=path_value,
              help="Run directory from `medmm train` (default: $MEDMM_MODEL, else the one `medmm demo` or "
                   "`medmm train --default` registered).")
@click.option("--out", "out", type=click.Path(), callback=path_value, default=None,
              help="Output folder (default ./medmm_out/<scan name>; in batch mode ./medmm_out/).")
@click.option("--series", default=None, help="DICOM series UID (or unique suffix) when a folder holds several.")
@click.option("--indication", default=None, help="Clinical indication given to the model with the generated report.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda when available.")
@click.option("--checkpoint", default="best", show_default=True, help="Checkpoint name inside the run.")
@click.option("--dicom-sr", is_flag=True, help="Also write a DICOM Comprehensive 3D SR (DICOM inputs only).")
@click.option("--fhir", is_flag=True, help="Also write a FHIR R4 DiagnosticReport + Observations bundle.")
@click.option("--keep-phi", is_flag=True, help="Copy patient/study identity into the DICOM SR (default: de-identified).")
@click.option("--no-html", is_flag=True, help="Skip report.html.")
@click.option("--allow-ontology-mismatch", is_flag=True, help="Run even if the ontology changed since training.")
@click.option("--force", is_flag=True,
              help="Diagnose even an input the plausibility gate refuses (not a chest CT); its reasons become warnings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar / findings table.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Batch on a Ray cluster (medmm[ray]): one model-holding worker per CPU/GPU share (docs/scale.md).")
@click.option("--address", default=None, help="With --ray: 'auto' joins a running cluster (default: a local one).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="With --ray: workers (default: all that fit).")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
              help="With --ray: GPUs per worker, fractions share one (default 1 when the cluster has GPUs, else 0).")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="With --ray: CPUs reserved per worker.")
def infer(
    path: Path,
    run_dir: Path | None,
    out: Path | None,
    series: str | None,
    indication: str | None,
    device: str | None,
    checkpoint: str,
    dicom_sr: bool,
    fhir: bool,
    keep_phi: bool,
    no_html: bool,
    allow_ontology_mismatch: bool,
    force: bool,
    quiet: bool,
    use_ray: bool,
    address: str | None,
    workers: int | None,
    gpus_per_worker: float | None,
    cpus_per_worker: float,
) -> None:
    """Diagnose PATH (DICOM file/folder/zip, NIfTI, a folder of scans, or a CSV/JSONL manifest)."""
    from medmm.errors import MedmmConfigError, MedmmInputError
    from medmm.inference import load_model
    from medmm.inference.batch import discover_jobs, is_batch_input, run_batch
    from medmm.inference.default_model import output_source, resolve_model
    from medmm.inference.writers import default_out_dir
    from medmm.inference.writers.files import write_into
    from medmm.inference.writers.outfolder import OutputFolder
    from medmm.io.text import one_line

    if not path.exists():
        raise MedmmInputError(path, "does not exist")
    batch = is_batch_input(path)
    if batch and series:
        raise MedmmInputError(path, "--series applies to a single scan, not to a batch")
    if use_ray and not batch:
        raise MedmmInputError(path, "--ray runs a batch: give a folder of scans or a CSV/JSONL manifest")
    ray_only = {"--address": address, "--workers": workers, "--gpus-per-worker": gpus_per_worker,
                "--cpus-per-worker": None if cpus_per_worker == 1.0 else cpus_per_worker}
    given = [flag for flag, value in ray_only.items() if value is not None]
    if given and not use_ray:
        raise MedmmConfigError(given[0], "applies only with --ray")
    echo_err = lambda m: click.echo(one_line(m), err=True)  # noqa: E731
    run_dir, origin = resolve_model(run_dir)
    if origin:
        echo_err(origin)
    # the output folder is checked, locked and cleaned before time is spent on the model
    out_dir = out if out is not None else (Path.cwd() / "medmm_out" if batch else default_out_dir(output_source(path)))
    options = {"html": not no_html, "dicom_sr": dicom_sr, "fhir": fhir, "keep_phi": keep_phi}
    with OutputFolder(out_dir, path, dicom_sr=dicom_sr and not batch, batch=batch, on_wait=echo_err) as folder:
        if use_ray:  # the same per-scan step and outputs as below, on Ray workers (medmm.scale)
            from medmm.scale import RaySettings, run_batch_ray

            summary = run_batch_ray(run_dir, discover_jobs(path), out_dir, options,
                                    RaySettings(address, workers, cpus_per_worker, gpus_per_worker),
                                    progress=not quiet, echo=echo_err, force=force, device=device,
                                    checkpoint=checkpoint, allow_ontology_mismatch=allow_ontology_mismatch)
        else:
            predictor = load_model(run_dir, device=device, checkpoint=checkpoint,
                                   allow_ontology_mismatch=allow_ontology_mismatch)
        if batch:
            if not use_ray:
                summary = run_batch(predictor, discover_jobs(path), out_dir, options, progress=not quiet,
                                    echo=echo_err, force=force)
            for line in summary.lines():
                click.echo(line)
            click.echo(f"outputs: {one_line(out_dir)}")
            return
        result = predictor.predict(path, indication=indication, series=series, force=force)
        for warning in getattr(result, "warnings", None) or []:
            echo_err(f"warning: {warning}")
        written = write_into(folder, result, **options)
    if not quiet:
        click.echo(result.summary())
        click.echo("")
    for kind, file in written.items():
        click.echo(f"{kind}: {one_line(file)}")
