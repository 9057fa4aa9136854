"""Deployment: smaller/faster models and exports, each checked against the model it came from.

- `compress_run` (``medmm compress``): structured / unstructured pruning, fine-tuning and
  distillation with the run's own workflow, int8 (static Conv3d PTQ + dynamic Linear) → a new run dir.
- `export_run` (``medmm export``): ONNX / TorchScript of the image path, or a MONAI bundle.
- `describe_run`: what was done to a model, as ``medmm evaluate`` prints it.

>>> compress_run("runs/demo", "runs/demo-int8", prune=0.5, quantize="int8")   # doctest: +SKIP
>>> export_run("runs/demo", "onnx", "demo.onnx")["max_abs_prob_diff"]          # doctest: +SKIP
"""

from __future__ import annotations

from medmm.deploy.compress import compress_run
from medmm.deploy.export import export_run
from medmm.deploy.provenance import describe_run

__all__ = ["compress_run", "describe_run", "export_run"]
