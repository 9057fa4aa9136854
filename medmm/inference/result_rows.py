"""Rows of a :class:`medmm.inference.Result`: the findings table, the input's facts, repairs as text.

Pure helpers of :class:`medmm.inference.Predictor`, kept apart so the predictor holds only the
prediction pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def weights_id(run_dir: Path, checkpoint: str) -> str:
    """Short content hash of the checkpoint weights: the model's identity in outputs/resume."""
    from medmm.models.pretrained import file_sha256

    path = run_dir / f"{checkpoint}.safetensors"
    return file_sha256(path)[:12] if path.exists() else "unknown"


def finding_rows(labels: list[str], thresholds: dict[str, float], ontology: Any, unreliable: dict[str, str],
                 raw: list[float], probs: list[float], repairs: list[Any],
                 decisions: list[bool]) -> list[dict[str, Any]]:
    """One row per finding: raw and consistent probability, threshold, decision, codes, path, repairs."""
    rows = []
    for label, p_raw, p, positive in zip(labels, raw, probs, decisions):
        rows.append(
            {
                "finding": label,
                "probability_raw": round(float(p_raw), 6),
                "probability": round(float(p), 6),
                "threshold": float(thresholds[label]),
                "positive": bool(positive),
                "codes": _codes(ontology, label),
                "ontology_path": _path(ontology, label),
                "repaired": [repair_text(r) for r in repairs if getattr(r, "label", None) == label],
                "reliable": label not in unreliable,
                "unreliable_reason": unreliable.get(label),
            }
        )
    return rows


def input_info(volume: Any) -> dict[str, Any]:
    """Geometry and de-identified acquisition facts (the io module already strips PHI from meta)."""
    keep = ("modality", "manufacturer", "slice_thickness", "source_format", "n_files")
    info: dict[str, Any] = {
        "shape": list(volume.shape),
        "spacing": [round(float(s), 4) for s in volume.spacing],
        "orientation": volume.orientation,
    }
    info.update({k: volume.meta[k] for k in keep if k in volume.meta and volume.meta[k] is not None})
    return info


def _codes(ontology: Any, label: str) -> list[dict[str, str]]:
    """Terminology codes of a label as plain dicts (``system``, ``code``, ``match``)."""
    try:
        codes = ontology.codes(label)
    except (KeyError, ValueError):  # a label unknown to the ontology has no codes
        return []
    return [{"system": c.system, "code": c.code, "match": c.match} for c in codes]


def _path(ontology: Any, label: str) -> list[str]:
    try:
        return [str(p) for p in ontology.path_to_root(label)]
    except (KeyError, ValueError):
        return [label]


def repair_text(repair: Any) -> str:
    """A consistency repair as one line, e.g. ``Consolidation ⇒ Lung opacity: Lung opacity 0.20→0.90``."""
    return f"{repair.constraint}: {repair.label} {repair.before:.3f}→{repair.after:.3f}"
