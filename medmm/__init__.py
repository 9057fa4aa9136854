"""medmm: ontology-consistent multimodal chest-CT diagnosis and report generation.

The public API is flat and imported lazily, so ``import medmm`` and ``medmm --help`` stay instant::

    import medmm
    vol = medmm.load_volume("scan_dir/")
    run = medmm.train("workflows/ct_chest_demo.yaml", epochs=1)
    model = medmm.load_model(run.run_dir)
    result = model.predict(vol)
"""

from __future__ import annotations

import importlib
from typing import Any

from medmm.errors import MedmmConfigError, MedmmError, MedmmInputError
from medmm.labels import CT_RATE_FINDINGS

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Volume": "medmm.io",
    "load_volume": "medmm.io",
    "Case": "medmm.data",
    "read_manifest": "medmm.data",
    "synthesize": "medmm.data",
    "Ontology": "medmm.knowledge",
    "load_ontology": "medmm.knowledge",
    "ReportLabeler": "medmm.knowledge",
    "WorkflowConfig": "medmm.config",
    "load_workflow": "medmm.config",
    "train": "medmm.training",
    "load_model": "medmm.inference",
    "evaluate": "medmm.evaluation",
}

__all__ = ["MedmmError", "MedmmInputError", "MedmmConfigError", "CT_RATE_FINDINGS", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medmm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
