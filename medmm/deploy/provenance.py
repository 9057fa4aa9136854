"""What was done to a model after training, as recorded in its run dir (``medmm.json``).

Each step is one ``model_history`` entry ``{"action": ..., "details": {...}}`` (the list the typed
run metadata keeps): ``pruned`` (kind, ratio, widths before/after, sparsity), ``quantised``
(scheme per layer type, calibration scans), ``distilled`` (teacher id, soft-label weight),
``finetuned`` (epochs), each with the id of the run it was made from. `describe` turns the list
into the lines ``medmm evaluate`` prints; `runtime_flags` tells the loader what to rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HISTORY_KEY = "model_history"
ACTIONS = ("pruned", "quantised", "distilled", "finetuned")


def entry(action: str, **details: Any) -> dict[str, Any]:
    """One history entry (``action`` is one of `ACTIONS`)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown model-history action {action!r}")
    return {"action": action, "details": details}


def history(meta: Any) -> list[dict[str, Any]]:
    """The run's model history (a `RunMeta` or its JSON dict; empty for a model as trained)."""
    items = meta.get(HISTORY_KEY) if isinstance(meta, Mapping) else getattr(meta, HISTORY_KEY, None)
    out = []
    for item in items or []:
        item = item.model_dump(mode="json") if hasattr(item, "model_dump") else item
        if isinstance(item, Mapping):
            out.append(dict(item))
    return out


def runtime_flags(meta: Any) -> dict[str, bool]:
    """``{"linear_int8": ...}``: whether the loader must run Linear layers dynamic int8."""
    linear = any(h.get("action") == "quantised" and (h.get("details") or {}).get("linear") == "dynamic_int8"
                 for h in history(meta))
    return {"linear_int8": linear}


def _format(item: Mapping[str, Any]) -> str:
    details = item.get("details") or {}
    action = item.get("action")
    if action == "pruned":
        text = f"pruned ({details.get('kind')}, ratio {details.get('ratio')})"
        if details.get("widths_after"):
            text += f": widths {details.get('widths_before')} -> {details.get('widths_after')}"
        if details.get("sparsity") is not None:
            text += f": sparsity {details['sparsity']}"
        return text
    if action == "quantised":
        return (f"quantised int8: conv {details.get('conv')}, linear {details.get('linear')}, "
                f"calibration {details.get('calibration_scans')} training scans")
    if action == "distilled":
        return (f"distilled from teacher {details.get('teacher')} ({details.get('epochs')} epochs, "
                f"soft-label weight {details.get('teacher_weight')})")
    if action == "finetuned":
        return f"fine-tuned {details.get('epochs')} epochs with the run's workflow"
    return str(action)


def describe(meta: Any) -> list[str]:
    """One line per history step, e.g. ``pruned (structured, ratio 0.5): widths [..] -> [..]``."""
    return [_format(item) for item in history(meta) if item.get("action") in ACTIONS]


def describe_run(run_dir: str | Path) -> list[str]:
    """`describe` for a run dir (no lines when its ``medmm.json`` is missing or unreadable)."""
    try:
        meta = json.loads((Path(run_dir) / "medmm.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return describe(meta) if isinstance(meta, dict) else []


def extend(meta: Any, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The history of ``meta`` followed by ``entries``."""
    return history(meta) + [dict(e) for e in entries]
