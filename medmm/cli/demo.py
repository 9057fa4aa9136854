"""``medmm demo``: synthetic data → train the demo workflow → diagnose a held-out DICOM series.

Everything lands in ``--out`` (default ``demo_out/``): ``data/`` (synthetic set, NIfTI),
``run/`` (the trained model; reused when a finished run is already there), ``heldout/dicom/<case>/``
(the held-out test case written as a DICOM series, as a scanner would) and ``infer/<case>/``
(result.json, report.html, DICOM SR, FHIR).
"""

from __future__ import annotations

from pathlib import Path

import click

DEMO_WORKFLOW = "ct_chest_demo.yaml"


def find_workflow(name: str = DEMO_WORKFLOW) -> Path:
    """The demo workflow: ``workflows/`` next to the package (source checkout) or in the CWD.

    Raises:
        MedmmConfigError: not found.
    """
    from medmm.errors import MedmmConfigError

    here = Path(__file__).resolve().parents[2] / "workflows" / name
    for candidate in (here, Path.cwd() / "workflows" / name):
        if candidate.is_file():
            return candidate
    raise MedmmConfigError(name, "demo workflow not found (expected workflows/ in the medmm checkout)")


def run_is_finished(run_dir: Path, epochs: int) -> bool:
    """True when ``run_dir`` holds a best checkpoint and trained all ``epochs``."""
    import json

    meta_path = run_dir / "medmm.json"
    if not (run_dir / "best.safetensors").is_file() or not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return False
    early_stopped = bool((meta.get("metrics") or {}).get("early_stopped"))
    return int(meta.get("last_epoch") or 0) >= epochs or early_stopped


def held_out_case(manifest: Path):
    """First test-split case of the synthetic manifest (never seen in training or model selection).

    Raises:
        MedmmInputError: the manifest has no test case.
    """
    from medmm.data import read_manifest
    from medmm.errors import MedmmInputError

    for case in read_manifest(manifest):
        if case.split == "test":
            return case
    raise MedmmInputError(manifest, "no test-split case to diagnose")


@click.command("demo")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True,
              help="Folder for the synthetic data, the trained run and the inference outputs.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda when available.")
@click.option("--retrain", is_flag=True, help="Train again even if a finished run exists in OUT/run.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Workflow override, e.g. training.epochs=2.")
def demo(out: Path, device: str | None, retrain: bool, overrides: tuple[str, ...]) -> None:
    """Synthetic chest CTs → train workflows/ct_chest_demo.yaml → diagnose a held-out DICOM series."""
    import time

    from medmm.config import load_workflow
    from medmm.data import ensure_synthetic, write_case_dicom
    from medmm.inference import load_model
    from medmm.inference.writers import write_outputs
    from medmm.training import train

    start = time.perf_counter()
    out = out.resolve()
    data_dir, run_dir = out / "data", out / "run"
    cfg = load_workflow(
        find_workflow(),
        [*overrides, f"data.synthetic.cache_dir={data_dir}", "data.synthetic.format=nifti"],
    )
    syn = cfg.data.synthetic
    click.echo(f"[1/3] synthetic data: {syn.n} cases of {syn.size}^3 voxels in {data_dir}")
    manifest = Path(ensure_synthetic(data_dir, n=syn.n, seed=syn.seed, size=syn.size, fmt=syn.format,
                                     counterfactuals=syn.counterfactuals, workers=syn.workers))

    if not retrain and run_is_finished(run_dir, cfg.training.epochs):
        click.echo(f"[2/3] reusing the finished run in {run_dir}")
    else:
        resume = not retrain and (run_dir / "state.json").is_file()
        click.echo(f"[2/3] training {cfg.name} for {cfg.training.epochs} epochs into {run_dir}")
        if resume:
            train(None, run_dir=run_dir, resume=True, device=device)
        else:
            train(cfg, run_dir=run_dir, device=device)

    case = held_out_case(manifest)
    # the scanner-style input: the case's DICOM series (with a fake patient name that must not leak)
    dicom_dir = write_case_dicom(out / "heldout", case.case_id, n=syn.n, seed=syn.seed, size=syn.size)
    click.echo(f"[3/3] medmm infer on held-out test case {case.case_id} (DICOM series, never seen in training)")
    from medmm.inference.default_model import register_default

    register_default(run_dir)
    predictor = load_model(run_dir, device=device)
    result = predictor.predict(dicom_dir, indication=case.indication)
    target = out / "infer" / case.case_id
    written = write_outputs(result, target, input_path=dicom_dir, dicom_sr=True, fhir=True)

    truth = case.labels or {}
    click.echo("")
    click.echo(f"{'finding':<36} {'prob':>6} {'thr':>5}  model  truth")
    for row in result.findings:
        label = truth.get(row["finding"], -1)
        shown = {1: "yes", 0: "-"}.get(label, "?")
        mark = "yes" if row["positive"] else "-"
        click.echo(f"{row['finding']:<36} {row['probability']:6.3f} {row['threshold']:5.2f}  {mark:<5}  {shown}")
    click.echo("\nGenerated report:\n" + result.report)
    if case.report:
        click.echo("\nReference report (synthetic ground truth):\n" + case.report)
    click.echo("")
    for kind, path in written.items():
        click.echo(f"{kind}: {path}")
    click.echo(f"\nOpen {written['html']} in a browser. Demo took {time.perf_counter() - start:.0f} s.")
    click.echo(f"`medmm infer SCAN` now uses this model by default ({run_dir}).")
