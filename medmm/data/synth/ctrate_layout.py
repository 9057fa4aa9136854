"""Synthetic phantoms at CT-RATE's size (512 x 512 x 200-300) written in CT-RATE's release layout.

Used by the full-size smoke tests and ``benchmarks/data_throughput.py`` so the production
preprocessing path (0.7 mm in-plane -> 1.5 mm, crop, 224 x 224 x 160) runs on realistic shapes.
The anatomy is rendered at ``base``³ (`render_case`) and interpolated to the full grid: rendering
512³ directly costs minutes and memory without changing what the pipeline does with it.

Layout (as `medmm.data.ctrate.read_ctrate` reads it)::

    <folder>/dataset/train_1/train_1_a/train_1_a_1.nii.gz
    <folder>/labels.csv    VolumeName + the 18 findings (0/1)
    <folder>/reports.csv   VolumeName, ClinicalInformation_EN, Technique_EN, Findings_EN, Impressions_EN
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medmm.labels import CT_RATE_FINDINGS


def render_full_size(seed: int, shape: tuple[int, int, int] = (512, 512, 300), base: int = 128):
    """One phantom at ``shape``: ``(hu int16 (X, Y, Z), affine, labels, report, indication)``.

    Same seed -> identical volume. The field of view is that of the ``base``³ rendering, so the
    voxel size shrinks with ``shape`` (512 in-plane ≈ 0.7 mm, like CT-RATE).
    """
    from scipy.ndimage import zoom

    from medmm.data.synth.generator import render_case

    hu, affine, labels, report, indication = render_case(seed, size=base)
    factors = [n / m for n, m in zip(shape, hu.shape)]
    big = zoom(hu, factors, order=1, output=np.float32, grid_mode=True, mode="nearest")
    scaled = np.array(affine, dtype=np.float64)
    scaled[:3, :3] = affine[:3, :3] / np.asarray(factors)[None, :]
    # voxel 0 of the fine grid sits half a coarse voxel minus half a fine voxel before coarse voxel 0
    offset = (1.0 / np.asarray(factors) - 1.0) / 2.0
    scaled[:3, 3] = affine[:3, 3] + affine[:3, :3] @ offset
    return np.clip(np.rint(big), -1024, 3071).astype(np.int16), scaled, labels, report, indication


def ctrate_names(n_train: int, n_valid: int = 0) -> list[str]:
    """CT-RATE volume names: one scan and reconstruction per patient (``train_1_a_1.nii.gz`` ...)."""
    return [f"train_{k + 1}_a_1.nii.gz" for k in range(n_train)] + [f"valid_{k + 1}_a_1.nii.gz" for k in range(n_valid)]


def write_ctrate_layout(folder: str | Path, names: Sequence[str],
                        shape: tuple[int, int, int] | Sequence[tuple[int, int, int]] = (512, 512, 300),
                        seed: int = 0, base: int = 128) -> dict[str, Path]:
    """Write phantoms named ``names`` plus labels and reports CSVs in CT-RATE's layout.

    ``shape`` is one shape for every volume or one per name; volume k uses seed ``seed + k``.

    Returns:
        ``{"volumes_dir", "labels_csv", "reports_csv"}`` (the ``data.ctrate`` section of a workflow).
    """
    from medmm.data.ctrate import REPORT_COLUMNS, parse_volume_name
    from medmm.io.writers import atomic_write_text, write_nifti

    folder = Path(folder)
    volumes = folder / "dataset"
    shapes = [tuple(shape)] * len(names) if isinstance(shape[0], int) else [tuple(s) for s in shape]
    if len(shapes) != len(names):
        raise ValueError(f"{len(shapes)} shapes for {len(names)} volumes")
    label_rows, report_rows = [], []
    for k, (name, volume_shape) in enumerate(zip(names, shapes)):
        parts = parse_volume_name(name)
        hu, affine, labels, report, indication = render_full_size(seed + k, volume_shape, base)
        write_nifti(hu, affine, volumes / parts["patient_id"] / parts["scan_id"] / name)
        label_rows.append([name, *[labels[f] for f in CT_RATE_FINDINGS]])
        findings, _, impression = report.partition("IMPRESSION:")
        report_rows.append([name, indication or "", "Non-contrast chest CT.",
                            findings.replace("FINDINGS:", "").strip(), impression.strip()])
    paths = {"volumes_dir": volumes, "labels_csv": folder / "labels.csv", "reports_csv": folder / "reports.csv"}
    atomic_write_text(paths["labels_csv"], _csv([["VolumeName", *CT_RATE_FINDINGS], *label_rows]))
    atomic_write_text(paths["reports_csv"], _csv([list(REPORT_COLUMNS), *report_rows]))
    return paths


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()
