"""``medmm data``: generate the synthetic data set and check manifests (thin layer over medmm.data)."""

from __future__ import annotations

from pathlib import Path

import click


def _prevalence_table(cases, labels) -> list[str]:
    from medmm.data.case import SPLITS

    width = max(len(k) for k in labels)
    header = f"{'finding':<{width}}  {'all':>6}" + "".join(f"  {s:>6}" for s in SPLITS)
    lines = [header, "-" * len(header)]
    groups = {s: [c for c in cases if c.split == s] for s in SPLITS}
    for name in labels:
        def frac(cs):
            known = [c for c in cs if c.labels.get(name, -1) != -1]
            return f"{sum(c.labels[name] == 1 for c in known) / len(known):6.1%}" if known else f"{'-':>6}"
        lines.append(f"{name:<{width}}  {frac(cases)}" + "".join(f"  {frac(groups[s])}" for s in SPLITS))
    return lines


@click.group("data")
def data() -> None:
    """Synthetic data and manifest tools."""


@data.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.option("--n", "n", default=200, show_default=True, type=click.IntRange(min=1), help="Number of scans.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed -> identical files).")
@click.option("--size", default=64, show_default=True, type=click.IntRange(min=8), help="Volume edge in voxels.")
@click.option("--format", "fmt", default="nifti", show_default=True, type=click.Choice(["nifti", "dicom", "both"]))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@click.option("--counterfactuals", default=0, show_default=True, type=click.IntRange(min=0),
              help="Extra renderings of each training scan with one finding switched on or off.")
def synth(out_dir: str, n: int, seed: int, size: int, fmt: str, workers: int, counterfactuals: int) -> None:
    """Generate synthetic chest CTs with findings, reports and a patient-level split."""
    import time

    from tqdm import tqdm

    from medmm.data import read_manifest, synthesize
    from medmm.data.synth import SCALE_CAVEATS, UNRENDERED_FINDINGS
    from medmm.labels import CT_RATE_FINDINGS

    start = time.perf_counter()
    with tqdm(total=None if counterfactuals else n, desc="synthesizing", unit="scan") as bar:
        manifest = synthesize(out_dir, n, seed, size, fmt, counterfactuals=counterfactuals, workers=workers,
                              progress=bar.update)
    elapsed = time.perf_counter() - start
    everything = read_manifest(manifest)
    cases = [c for c in everything if "counterfactual" not in c.meta]
    patients = {c.patient_id for c in cases}
    click.echo(f"manifest: {manifest}")
    click.echo(f"{len(cases)} scans of {len(patients)} patients, {size}^3, {fmt}, {elapsed:.1f} s")
    if counterfactuals:
        click.echo(f"+ {len(everything) - len(cases)} counterfactual training scans (one finding switched)")
    click.echo("\n".join(_prevalence_table(cases, CT_RATE_FINDINGS)))
    if UNRENDERED_FINDINGS:
        click.echo("not rendered in the images (labels and reports only):")
        for name, why in UNRENDERED_FINDINGS.items():
            click.echo(f"  - {name}: {why}")
    else:
        click.echo("all 18 findings are rendered; exaggerated to survive ~5 mm voxels:")
        for name, why in SCALE_CAVEATS.items():
            click.echo(f"  - {name}: {why}")


@data.group("manifest")
def manifest() -> None:
    """Manifest tools."""


@manifest.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--no-files", is_flag=True, help="Do not check that image files exist.")
def check(path: str, no_files: bool) -> None:
    """Validate a manifest: columns, labels, files, counts, prevalences, patient overlap between splits."""
    from collections import Counter

    from medmm.data import read_manifest
    from medmm.data.splits import split_overlap
    from medmm.errors import MedmmInputError
    from medmm.labels import CT_RATE_FINDINGS

    cases = read_manifest(path, check_files=not no_files)
    patients = {c.patient_id for c in cases}
    splits = Counter(c.split or "unassigned" for c in cases)
    click.echo(f"{path}: {len(cases)} cases, {len(patients)} patients")
    click.echo("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    click.echo(f"reports: {sum(c.report is not None for c in cases)}, indications: {sum(c.indication is not None for c in cases)}")
    click.echo("\n".join(_prevalence_table(cases, CT_RATE_FINDINGS)))
    overlap = split_overlap(cases)
    if overlap:
        raise MedmmInputError(path, f"{len(overlap)} patient(s) have scans in more than one split (patient-level leakage)")
    click.echo("ok: no patient appears in more than one split")


@data.command("label")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="CSV with one report per row.")
@click.option("--text-column", default="report", show_default=True, help="Column holding the report text.")
@click.option("--labeler", "labeler_spec", default="rules", show_default=True,
              help="'rules' (the ontology rule labeler) or a folder written by 'medmm labeler train'.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="CSV to write (input columns + one 0/1 column per finding).")
def label(data_path: Path, text_column: str, labeler_spec: str, out: Path) -> None:
    """Label reports: add one 0/1 column per finding (uncertain mentions count as 1, as in CT-RATE)."""
    from medmm.data.report_table import read_report_table, write_labelled_table
    from medmm.models.report_labeler import load_labeler

    table = read_report_table(data_path, text_column)
    labeler = load_labeler(labeler_spec)
    many = getattr(labeler, "label_many", None)
    rows = many(table.texts) if many is not None else [labeler(text) for text in table.texts]
    write_labelled_table(table, rows, labeler.labels, out)
    counts = ", ".join(f"{lab} {sum(r[lab] == 1 for r in rows)}" for lab in labeler.labels)
    click.echo(f"labelled {len(rows)} reports with {labeler_spec}: {counts}")
    click.echo(f"wrote {out}")


@data.command("prepare")
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=str))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a workflow value, e.g. --set training.cache_dir=/data/cache (repeatable; values are YAML).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1, max=256),
              help="Worker processes (one core each).")
@click.option("--shard", "shard_text", default="1/1", show_default=True, metavar="I/N",
              help="Prepare only shard I of N (1-based; every N-th case by case id), e.g. one per machine.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(workflow: str, overrides: tuple[str, ...], workers: int, shard_text: str, quiet: bool) -> None:
    """Preprocess every case of WORKFLOW once into training.cache_dir, which training then reads.

    Resumable (valid entries are skipped; rerun after a kill), shardable across machines, and an
    unreadable case is listed with its reason instead of stopping the run.
    """
    from tqdm import tqdm

    from medmm.config import load_workflow
    from medmm.data.dataset import load_cases
    from medmm.data.prepare import parse_shard, prepare_cases
    from medmm.errors import MedmmConfigError

    shard = parse_shard(shard_text)
    cfg = load_workflow(workflow, list(overrides))
    if cfg.training.cache_dir is None:
        raise MedmmConfigError(f"{workflow}: training.cache_dir",
                               "not set; give the folder training will read, e.g. --set training.cache_dir=/data/cache")
    cases = load_cases(cfg.data, check_files=False)
    failed = 0
    with tqdm(total=-(-(len(cases) - shard[0] + 1) // shard[1]), desc="preparing", unit="case",
              disable=quiet) as bar:
        def tick(outcome) -> None:
            nonlocal failed
            failed += outcome.status == "failed"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update()

        summary = prepare_cases(cases, cfg.preprocessing, cfg.training.cache_dir, workers=workers, shard=shard,
                                progress=tick)
    click.echo("\n".join(summary.lines()))
