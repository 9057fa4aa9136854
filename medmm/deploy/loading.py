"""The two hooks model loading calls so compressed run dirs load like any other.

`medmm.models.checkpoint.load_checkpoint` calls `split_checkpoint` on the tensors it read (int8
weights → fp32, PTQ calibration state set aside) and `runtime_model` on the built model (int8
kernels where the run's history says so). For an uncompressed run both are no-ops. Pruned and
distilled models need no hook at all: their narrower widths are in their model config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def split_checkpoint(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(model tensors, PTQ state)`` of a checkpoint (see `medmm.deploy.quantization`)."""
    from medmm.deploy.quantization import split_compressed

    return split_compressed(tensors)


def runtime_model(model: torch.nn.Module, ptq_state: Mapping[str, torch.Tensor], meta: Any) -> torch.nn.Module:
    """``model`` with int8 kernels attached when the run was quantised (CPU only), else unchanged."""
    from medmm.deploy.provenance import runtime_flags

    flags = runtime_flags(meta)
    if not ptq_state and not flags["linear_int8"]:
        return model
    from medmm.deploy.quantization import attach_runtime

    return attach_runtime(model.eval(), ptq_state, flags["linear_int8"])
