"""ONNX and TorchScript exports of the image path (`medmm.deploy.image_path`), each checked
against the PyTorch function it exports on the same inputs.

ONNX: the TorchScript-based exporter (opset 17) with batch and all three spatial axes dynamic,
checked with ONNX Runtime on the ROI-sized example and on a second, different spatial shape.
TorchScript: ``torch.jit.trace``, checked the same way. The reported number is the max absolute
difference of probabilities; fp32 parity is required to be within ``PARITY_TOL``.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmm.deploy.image_path import ImagePath, example_input
from medmm.errors import MedmmInputError

PARITY_TOL = 1e-4
OPSET = 17


def parity_inputs(example: torch.Tensor) -> list[torch.Tensor]:
    """The example and a second input with another spatial shape (each axis + max(8, 1/4), a multiple of 8)."""
    other = [s + max(8, (s // 4) // 8 * 8) for s in example.shape[2:]]
    gen = torch.Generator().manual_seed(1)
    return [example, torch.rand(example.shape[0], example.shape[1], *other, generator=gen)]


def _atomic_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp")


def _box_mean_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """`medmm.models.radiomics.context.box_mean` as one ``avg_pool3d`` (its documented semantics):
    the original's in-place shifted sums on tensor views do not survive ONNX tracing."""
    return torch.nn.functional.avg_pool3d(x, size, stride=1, padding=size // 2, count_include_pad=False)


@contextlib.contextmanager
def _exportable_ops():
    """While exporting to ONNX: ``torch.bincount`` (no ONNX operator) as the equivalent
    ``scatter_add`` of ones (the same counts) and the context histogram's ``box_mean`` as
    `_box_mean_pool`; the parity check afterwards compares against the unpatched model."""
    from medmm.models.radiomics import context as context_histogram

    original, original_box = torch.bincount, context_histogram.box_mean

    def bincount(index: torch.Tensor, weights: torch.Tensor | None = None, minlength: int = 0) -> torch.Tensor:
        values = torch.ones_like(index, dtype=torch.float32) if weights is None else weights.float()
        size = max(int(minlength), int(index.max()) + 1 if index.numel() else 0)
        counts = torch.zeros(size, dtype=torch.float32).scatter_add(0, index.long(), values)
        return counts if weights is not None else counts.long()

    torch.bincount = bincount
    context_histogram.box_mean = _box_mean_pool
    try:
        yield
    finally:
        torch.bincount = original
        context_histogram.box_mean = original_box


def dynamic_spatial(module: ImagePath) -> bool:
    """Whether the exported graph may take any spatial shape. Not with the radiomics (histogram)
    branch: its per-cell voxel indices are computed (and cached) per shape in Python, so a trace
    bakes in the example's shape; such runs always feed the ROI shape (``fit_at_inference``) anyway."""
    return getattr(module.model, "radiomics", None) is None


def export_onnx(module: ImagePath, example: torch.Tensor, path: Path) -> Path:
    """Write the image path as ONNX (input ``image``, output ``probabilities``) to ``path``."""
    tmp = _atomic_path(path)
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"} if dynamic_spatial(module) else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad(), _exportable_ops():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp), input_names=["image"], output_names=["probabilities"],
                          dynamic_axes={"image": axes, "probabilities": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    tmp.replace(path)
    return path


def onnx_session(path: Path, threads: int = 2) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_parity(module: ImagePath, path: Path, inputs: list[torch.Tensor]) -> float:
    """Max |p_onnxruntime - p_pytorch| over ``inputs``."""
    session = onnx_session(path)
    worst = 0.0
    for x in inputs:
        with torch.inference_mode():
            expected = module(x).numpy()
        got = session.run(["probabilities"], {"image": x.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_torchscript(module: ImagePath, example: torch.Tensor, path: Path) -> Path:
    """Write the traced image path (``torch.jit.save``: TorchScript, no pickled Python code) to ``path``."""
    tmp = _atomic_path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
    torch.jit.save(traced, str(tmp))
    tmp.replace(path)
    return path


def torchscript_parity(module: ImagePath, path: Path, inputs: list[torch.Tensor]) -> float:
    """Max |p_torchscript - p_pytorch| over ``inputs``."""
    loaded = torch.jit.load(str(path), map_location="cpu").eval()
    worst = 0.0
    for x in inputs:
        with torch.inference_mode():
            worst = max(worst, float((loaded(x) - module(x)).abs().max()))
    return worst


def check_parity(kind: str, difference: float, path: Path) -> None:
    """Raise when an fp32 export disagrees with PyTorch by more than `PARITY_TOL`."""
    if not difference <= PARITY_TOL:
        path.unlink(missing_ok=True)
        raise MedmmInputError(path, f"{kind} export differs from PyTorch by {difference:.2e} (> {PARITY_TOL:g}) in "
                              "probability; not written")


def export_file(module: ImagePath, meta: Any, fmt: str, path: Path) -> dict[str, Any]:
    """Export ``module`` as ``fmt`` (``onnx`` / ``torchscript``) to ``path`` and check parity.

    Returns:
        ``{"format", "path", "max_abs_prob_diff", "shapes_checked"}``.
    """
    example = example_input(meta)
    inputs = parity_inputs(example) if dynamic_spatial(module) else [example, torch.rand_like(example)]
    if fmt == "onnx":
        export_onnx(module, example, path)
        diff = onnx_parity(module, path, inputs)
    else:
        export_torchscript(module, example, path)
        diff = torchscript_parity(module, path, inputs)
    check_parity(fmt, diff, path)
    record = {"format": fmt, "path": str(path), "max_abs_prob_diff": diff, "dynamic_spatial": dynamic_spatial(module),
              "shapes_checked": [list(x.shape) for x in inputs], "labels": list(module.labels)}
    path.with_name(path.name + ".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
