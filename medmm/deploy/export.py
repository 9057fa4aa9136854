"""`export_run`: one run dir → ONNX, TorchScript or a MONAI bundle, with the parity measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medmm.errors import MedmmConfigError

FORMATS = ("onnx", "torchscript", "monai-bundle")


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> dict[str, Any]:
    """Export the run's image path (`medmm.deploy.image_path`) as ``fmt`` to ``out``.

    Returns:
        ``{"format", "path", "max_abs_prob_diff", ...}`` (the file/folder is only kept when the
        export matches PyTorch within `medmm.deploy.export_formats.PARITY_TOL`).

    Raises:
        MedmmConfigError: unknown format.
        MedmmInputError: not a run dir, an int8 run, or an export that disagrees with PyTorch.
    """
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise MedmmConfigError("--format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "monai-bundle":
        from medmm.deploy.monai_bundle import write_bundle

        return write_bundle(run_dir, out)
    from medmm.deploy.export_formats import export_file
    from medmm.deploy.image_path import load_image_path

    module, meta = load_image_path(run_dir)
    return export_file(module, meta, fmt, out)
