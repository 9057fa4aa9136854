"""The run directory: resolved workflow, metrics, resume state, model card — all written atomically.

Layout (``medmm train`` / `medmm.training.train`)::

    <run_dir>/
      workflow.yaml        fully resolved workflow the run used (re-loadable with load_workflow)
      medmm.json           the run's RunMeta (medmm.models.run_meta, schema medmm.run/2): resolved
                           workflow, thresholds, derived network values, ontology hash, split
                           patient-id hashes, versions, metrics, reference statistics
      best.safetensors     weights with the best validation macro AUROC
      last.safetensors     weights after the latest epoch (or at Ctrl-C)
      metrics.jsonl        one JSON object per epoch (deterministic: no wall-clock values)
      timing.jsonl         per-epoch data-loading vs compute seconds (machine dependent)
      state.json           resume state: epoch, step, early stopping, scheduler, RNG, report cache
      state.safetensors    resume tensors: optimizer moments, RNG byte states, AMP scaler
      model_card.md        human summary with validation metrics
      tb/                  TensorBoard events

Resume state is safetensors + JSON (never pickle): optimizer ``state_dict`` tensors are flattened
to ``optimizer.<param index>.<name>`` keys and everything else goes to JSON.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmm.io.writers import atomic_write_bytes, atomic_write_text
from medmm.models.run_meta import hash_patient_id

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
_WEIGHTS_PREFIX = "weights."  # raw model weights inside STATE_TENSORS (with a weight average)
METRICS_FILE = "metrics.jsonl"
TIMING_FILE = "timing.jsonl"
WORKFLOW_FILE = "workflow.yaml"
CARD_FILE = "model_card.md"


# ------------------------------------------------------------------------------- atomic writes
def write_jsonl(path: str | Path, records: list[Mapping[str, Any]]) -> Path:
    """Rewrite a JSON-lines file with ``records`` (atomic; sorted keys so output is reproducible)."""
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file ([] if absent)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def default_run_dir(run_root: str | Path, name: str) -> Path:
    """``<run_root>/<name>-<UTC timestamp>`` (a numeric suffix avoids collisions)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = Path(run_root).expanduser() / f"{name}-{stamp}"
    candidate, i = base, 1
    while candidate.exists():
        candidate, i = Path(f"{base}-{i}"), i + 1
    return candidate


# ------------------------------------------------------------------------------- resume state
def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entries in info.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": info["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch (CPU + CUDA) RNG states as tensors; Python and NumPy states as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    info = {"python": [py_version, list(py_state), py_gauss],
            "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)]}
    return tensors, info


def set_rng_state(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if "python" in info:
        version, state, gauss = info["python"]
        random.setstate((version, tuple(state), gauss))
    if "numpy" in info:
        name, keys, pos, has_gauss, gauss = info["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def save_state(run_dir: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
               progress: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write ``state.safetensors`` + ``state.json`` (JSON last: its presence marks a complete state).

    ``weights`` are the optimiser's raw weights when the checkpoints hold a weight average
    (``training.ema_decay``); `load_weights` reads them back.
    """
    from safetensors.torch import save

    run_dir = Path(run_dir)
    opt_tensors, opt_info = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_info = rng_state()
    raw = {f"{_WEIGHTS_PREFIX}{name}": t.detach().contiguous().cpu() for name, t in (weights or {}).items()}
    tensors = {**opt_tensors, **rng_tensors, **raw}
    scaler_state = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    atomic_write_bytes(run_dir / STATE_TENSORS, save(tensors))
    info = {"optimizer": opt_info, "scheduler": _jsonable(scheduler.state_dict()), "scaler": scaler_state,
            "rng": rng_info, **progress}
    atomic_write_text(run_dir / STATE_JSON, json.dumps(_jsonable(info), indent=1, sort_keys=True))


def load_state(run_dir: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> dict[str, Any]:
    """Restore optimizer/scheduler/scaler/RNG from a run directory; returns the progress dict."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    info = json.loads((run_dir / STATE_JSON).read_text(encoding="utf-8"))
    tensors = load_file(str(run_dir / STATE_TENSORS))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, info.pop("optimizer")))
    scheduler.load_state_dict(info.pop("scheduler"))
    scaler_state = info.pop("scaler", None)
    if scaler is not None and scaler_state:
        scaler.load_state_dict(scaler_state)
    set_rng_state(tensors, info.pop("rng", {}))
    return info


def load_weights(run_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The raw weights `save_state` stored (empty when the run keeps no weight average)."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(run_dir) / STATE_TENSORS), device=str(device))
    return {name[len(_WEIGHTS_PREFIX):]: t for name, t in tensors.items() if name.startswith(_WEIGHTS_PREFIX)}


def _jsonable(value: Any) -> Any:
    """Recursively turn tensors/numpy/paths/tuples into JSON values; drop callables (lr lambdas)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value if not callable(v)]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------- metadata, table
def run_meta(cfg: Any, run_dir: Path, derived: Any, ontology: Any, splits: Mapping[str, list[Any]],
             progress: Mapping[str, Any], reference: Any = None,
             encoder_weights: Mapping[str, Any] | None = None) -> Any:
    """The run's `medmm.models.RunMeta` (``save_checkpoint`` adds text-encoder record and versions).

    ``encoder_weights``: the pretrained image-encoder load record (`medmm.models.encoder_weights`),
    kept in the ``trained`` history entry as ``pretrained_image_encoder``."""
    from medmm.models.run_meta import RunMeta

    best = progress.get("best") or {}
    labels = list(cfg.data.labels)
    thresholds = best.get("thresholds") or {label: 0.5 for label in labels}
    return RunMeta(
        name=cfg.name,
        run_id=Path(run_dir).name,
        workflow=cfg,
        network_derived=derived,
        thresholds={label: thresholds[label] for label in labels},
        threshold_rule=cfg.training.threshold_rule if best.get("thresholds") else "fixed",
        calibration=best.get("calibration"),  # issue 16: medmm.models.calibration record
        ontology={"path": None if cfg.ontology.path is None else str(cfg.ontology.path), "sha256": ontology.sha256},
        data={
            "source": cfg.data.source,
            "n_cases": {name: len(cases) for name, cases in splits.items()},
            "patient_id_sha256": {name: sorted({hash_patient_id(c.patient_id) for c in cases})
                                  for name, cases in splits.items()},
        },
        best_epoch=best.get("epoch"),
        last_epoch=progress.get("epoch"),
        metrics=best.get("metrics", {}),
        model_history=[{"action": "trained", "details": {"epochs": progress.get("epoch"), **(
            {"pretrained_image_encoder": dict(encoder_weights)} if encoder_weights else {})}}],
        reference=reference,
    )


EPOCH_HEADER = (f"{'epoch':>5} {'loss':>8} {'bce':>7} {'kr':>7} {'lm':>7} {'val_auc':>8} "
                f"{'auc_all':>8} {'lr':>9} {'data%':>6} {'time_s':>7}  best")


def epoch_row(record: Mapping[str, Any], timing: Mapping[str, float]) -> str:
    """One line of the per-epoch table printed during training (columns of `EPOCH_HEADER`)."""
    def f(v: Any, w: int) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, float) else f"{'–':>{w}}"

    return (f"{record['epoch']:>5} {f(record['train_loss'], 8)} {f(record['train_bce'], 7)} "
            f"{f(record['train_kr'], 7)} {f(record['train_lm'], 7)} {f(record['val_macro_auroc'], 8)} "
            f"{f(record['val_macro_auroc_all'], 8)} {record['lr']:>9.2e} "
            f"{100 * timing['data_fraction']:>6.1f} {timing['epoch_s']:>7.1f}  {'*' if record['best'] else ''}")


# -------------------------------------------------------------------------------- model card
def model_card(name: str, run: Any, history: list[Mapping[str, Any]]) -> str:
    """Markdown summary of a run (its `RunMeta`): data, protocol and validation metrics of the best epoch."""
    meta = {**run.model_dump(mode="json"), "labels": run.labels, "eval_labels": run.eval_labels}
    best = meta.get("metrics", {})
    thresholds = meta.get("thresholds", {})
    per_label = best.get("val_auroc", {})
    counts = meta.get("data", {}).get("n_cases", {})
    lines = [
        f"# Model card: {name}",
        "",
        "Research prototype for chest-CT finding classification and report generation. "
        "**Not a medical device; not for clinical use.**",
        "",
        "## Data",
        f"- source: {meta.get('data', {}).get('source')}; cases: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "- split: by patient (no patient in more than one split)",
        f"- labels ({len(meta.get('labels', []))}): " + ", ".join(meta.get("labels", [])),
        "",
        "## Protocol",
        f"- best epoch {best.get('epoch')} of {len(history)} by validation macro AUROC over "
        f"{len(meta.get('eval_labels', []))} evaluated findings (those with both classes in validation)",
        f"- thresholds per finding chosen on validation by {meta.get('threshold_rule')}",
        "- fusion text: generated report + optional indication (never the reference report)",
        f"- ontology sha256 {str(meta.get('ontology', {}).get('sha256'))[:16]}…",
        "",
        "## Validation metrics (best epoch)",
        f"- macro AUROC (evaluated findings): {_fmt(best.get('val_macro_auroc'))}",
        f"- macro AUROC (all findings with both classes): {_fmt(best.get('val_macro_auroc_all'))}",
        f"- constraint violation rate: {_fmt(best.get('val_violation_rate'))}",
        "",
        "| finding | AUROC | threshold |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {_fmt(per_label.get(label))} | {_fmt(thresholds.get(label))} |"
              for label in meta.get("labels", [])]
    lines += ["", "Findings without both classes in validation show no AUROC.", ""]
    unreliable = (meta.get("calibration") or {}).get("unreliable") or {}
    if meta.get("calibration"):
        lines += ["## Calibration", "- probabilities: one temperature per finding fitted on validation; thresholds "
                  f"chosen on calibrated probabilities within {meta['calibration'].get('threshold_range')}", ""]
        lines += ["Unreliable findings (decisions may flip on noise):", ""] if unreliable else []
        lines += [f"- {label}: {why}" for label, why in unreliable.items()] + ([""] if unreliable else [])
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
