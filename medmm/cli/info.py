"""``medmm info PATH [--series UID]``: show what would be loaded, without PHI.

Prints the series found (UID suffix, modality, slice count, description), then loads the chosen
one and prints its shape, spacing, orientation, HU range and source format. Errors are
`MedmmInputError`s that the ``medmm`` group prints on one line with exit code 2.
"""

from __future__ import annotations

import click

from medmm.cli import path_value


@click.command("info")
@click.argument("path", type=click.Path(), callback=path_value)
@click.option("--series", "series", default=None, metavar="UID",
              help="SeriesInstanceUID or a unique suffix of it, when the input holds several series.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(path: str, series: str | None, as_json: bool) -> None:
    """Show what would be loaded from a DICOM file/folder/zip or NIfTI PATH (no PHI)."""
    import json
    from pathlib import Path

    from medmm.io.loader import inspect_input

    p = Path(path)
    listing, vol = inspect_input(p, series=series)  # one pass: a zip is extracted once
    lo, hi = vol.hu_range()
    summary = {
        "path": str(p),
        "source_format": vol.meta.get("source_format"),
        "modality": vol.meta.get("modality"),
        "series_description": vol.meta.get("series_description"),
        "shape": list(vol.shape),
        "spacing_mm": list(vol.spacing),
        "orientation": vol.orientation,
        "value_range": [lo, hi],
        "n_files": vol.meta.get("n_files", 0),
        "series": [str(s) for s in listing],
        "warnings": vol.meta.get("warnings", []),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if listing:
        click.echo(f"series found ({len(listing)}):")
        for s in listing:
            click.echo(f"  {s}")
    unit = "HU range" if summary["modality"] == "CT" else "value range"
    rows = [
        ("source", f"{summary['source_format']} ({summary['n_files']} file(s))"),
        ("modality", f"{summary['modality']}  {summary['series_description'] or ''}".rstrip()),
        ("shape (XYZ)", " x ".join(str(s) for s in vol.shape)),
        ("spacing (mm)", " x ".join(f"{s:.4g}" for s in vol.spacing)),
        ("orientation", vol.orientation),
        (unit, f"{lo:.1f} .. {hi:.1f}"),
        *(("warning", w) for w in summary["warnings"]),
    ]
    for label, value in rows:
        click.echo(f"{label:<13}: {value}")
