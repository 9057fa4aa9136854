"""Inference: run directory → :class:`Predictor` → :class:`Result` → JSON / HTML / DICOM SR / FHIR.

>>> import medmm
>>> model = medmm.load_model("runs/ct_chest_demo")      # doctest: +SKIP
>>> res = model.predict("scan_dir/", indication="cough")  # doctest: +SKIP
>>> res.to_dataframe(); res.explain("Pleural effusion")   # doctest: +SKIP
"""

from __future__ import annotations

from medmm.inference.predictor import Predictor, TensorPrediction, load_model
from medmm.inference.result import FINDING_COLUMNS, RESULT_SCHEMA, Explanation, Result
from medmm.inference.sliding import compute_feature_map, make_inferer
from medmm.inference.writers import write_outputs

__all__ = [
    "Predictor",
    "TensorPrediction",
    "load_model",
    "Result",
    "Explanation",
    "FINDING_COLUMNS",
    "RESULT_SCHEMA",
    "compute_feature_map",
    "make_inferer",
    "write_outputs",
]
