"""Cases, manifests and data sets: generic manifests, CT-RATE, synthetic phantoms, splits.

Imports are lazy so ``import medmm.data`` stays light (numpy/scipy load when a function is used);
``medmm.data.transforms`` and ``medmm.data.dataset`` are imported on their own.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Case": "medmm.data.case",
    "SPLITS": "medmm.data.case",
    "read_manifest": "medmm.data.manifest",
    "write_manifest": "medmm.data.manifest",
    "read_ctrate": "medmm.data.ctrate",
    "split_patients": "medmm.data.splits",
    "assign_splits": "medmm.data.splits",
    "split_overlap": "medmm.data.splits",
    "synthesize": "medmm.data.synth",
    "ensure_synthetic": "medmm.data.synth",
    "render_case": "medmm.data.synth",
    "write_case_dicom": "medmm.data.synth",
    "RENDERED_FINDINGS": "medmm.data.synth",
    "UNRENDERED_FINDINGS": "medmm.data.synth",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medmm.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
