"""`compress_run`: a trained run dir → a new, smaller/faster run dir that loads like any other.

Steps, each optional and recorded in the new run's ``model_history`` (`medmm.deploy.provenance`):
prune (structured or unstructured) → fine-tune and/or distil from a teacher with the run's own
workflow (`medmm.deploy.finetuning`) → int8 (`medmm.deploy.quantization`, calibrated on training
scans) → write ``best.safetensors`` + ``medmm.json``. When no fine-tuning re-chose them, the
per-finding thresholds are re-chosen for the compressed model on the validation split (the rule
training used), never on test data.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from medmm.deploy import provenance
from medmm.errors import MedmmConfigError, MedmmInputError


def _load_source(run_dir: Path) -> tuple[Any, Any, str]:
    from medmm.models import load_checkpoint

    if not (run_dir / "medmm.json").is_file():
        raise MedmmInputError(run_dir, "not a medmm run directory (no medmm.json)")
    name = "best" if (run_dir / "best.safetensors").is_file() else "last"
    model, meta = load_checkpoint(run_dir, name)
    if any(h.get("action") == "quantised" for h in provenance.history(meta)):
        raise MedmmInputError(run_dir, "is already int8-quantised; compress its fp32 source run instead")
    return model, meta, name


def _run_id(run_dir: Path, meta: Any, checkpoint: str) -> str:
    from medmm.inference.result_rows import weights_id

    return f"{meta.name or run_dir.name}@{weights_id(run_dir, checkpoint)}"


def _update_meta(out: Path, **changes: Any) -> None:
    """Re-validate and atomically rewrite ``out/medmm.json`` with ``changes`` applied."""
    from medmm.io.writers import atomic_write_bytes
    from medmm.models.run_meta import RunMeta, read_run_meta

    raw = read_run_meta(out).model_dump(mode="json", by_alias=True)
    raw.update(changes)
    atomic_write_bytes(out / "medmm.json", RunMeta.model_validate(raw).to_json().encode("utf-8"))


def _rewrite_int8(weights: Path, ptq_state: dict[str, torch.Tensor]) -> int:
    """Re-store a saved checkpoint's weights as int8 + scales, with the PTQ state; returns #tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from medmm.deploy.quantization import PTQ_PREFIX, encode_int8

    with safe_open(str(weights), framework="pt") as handle:
        header = dict(handle.metadata() or {})
    tensors = encode_int8(load_file(str(weights)))
    tensors.update({PTQ_PREFIX + k: v.contiguous() for k, v in ptq_state.items()})
    fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=f".{weights.name}.", suffix=".tmp")
    os.close(fd)
    save_file(tensors, tmp, metadata=header)
    os.replace(tmp, weights)
    return len(tensors)


def _rechoose_thresholds(out: Path, workflow: Any) -> dict[str, float]:
    """Thresholds of the compressed model on the validation split (the run's threshold rule)."""
    import numpy as np

    from medmm.deploy.finetuning import run_probabilities
    from medmm.deploy.run_data import split_of
    from medmm.inference import load_model
    from medmm.training.validation import choose_thresholds

    predictor = load_model(out, device="cpu")
    cases = split_of(workflow, "val")
    probs = run_probabilities(predictor, cases, workflow)
    labels = np.array([[int((c.labels or {}).get(name, -1)) for name in predictor.labels] for c in cases])
    return choose_thresholds(labels, np.stack([probs[c.case_id].numpy() for c in cases]), predictor.labels,
                             workflow.training.threshold_rule)


def compress_run(run_dir: str | Path, out: str | Path, prune: float | None = None, prune_kind: str = "structured",
                 quantize: str | None = None, finetune_epochs: int = 0, distill_from: str | Path | None = None,
                 calibration_scans: int = 32, lr_scale: float = 0.1, teacher_weight: float = 0.5,
                 verbose: bool = True) -> Path:
    """Write a compressed copy of ``run_dir`` into ``out`` (see module docstring); returns ``out``.

    Raises:
        MedmmInputError: ``run_dir``/``distill_from`` is not a run, ``out`` is not empty.
        MedmmConfigError: nothing to do, an unsupported backbone or combination.
    """
    from medmm.deploy.finetuning import finetune, run_probabilities
    from medmm.deploy.pruning import backbone_widths, structured_prune, unstructured_prune
    from medmm.deploy.run_data import run_workflow, split_of
    from medmm.models import save_checkpoint

    run_dir, out = Path(run_dir), Path(out)
    if prune is None and quantize is None and not finetune_epochs and distill_from is None:
        raise MedmmConfigError("medmm compress", "nothing to do: give --prune, --quantize, --finetune-epochs or --distill-from")
    if distill_from is not None and not finetune_epochs:
        raise MedmmConfigError("--distill-from", "distillation trains the student: give --finetune-epochs N (N >= 1)")
    if quantize not in (None, "int8"):
        raise MedmmConfigError("--quantize", f"only int8 is supported, got {quantize!r}")
    if prune_kind not in ("structured", "unstructured"):
        raise MedmmConfigError("--prune-kind", f"must be structured or unstructured, got {prune_kind!r}")
    if finetune_epochs and prune is not None and prune_kind == "unstructured":
        raise MedmmConfigError("--finetune-epochs", "fine-tuning would refill the zeroed weights of "
                               "unstructured pruning; fine-tune structured-pruned models only")
    if out.exists() and any(out.iterdir()):
        raise MedmmInputError(out, "output folder exists and is not empty; choose a new folder")
    model, meta, checkpoint = _load_source(run_dir)
    workflow = run_workflow(meta, str(run_dir / "medmm.json"))
    source_id = _run_id(run_dir, meta, checkpoint)
    entries: list[dict[str, Any]] = []

    if prune is not None:
        if prune_kind == "structured":
            before = backbone_widths(model.image_encoder)
            model = structured_prune(model, prune)
            entries.append(provenance.entry("pruned", kind="structured", ratio=prune, widths_before=before,
                                            widths_after=backbone_widths(model.image_encoder), source=source_id))
        else:
            model, stats = unstructured_prune(model, prune)
            entries.append(provenance.entry("pruned", kind="unstructured", ratio=prune, source=source_id, **stats))

    trained = False
    if finetune_epochs:
        soft = None
        if distill_from is not None:
            from medmm.inference import load_model

            teacher = load_model(distill_from, device="cpu")
            soft = run_probabilities(teacher, split_of(workflow, "train"), workflow)
        finetune(model, workflow, out, finetune_epochs, lr_scale, soft, teacher_weight, verbose)
        from medmm.models import load_checkpoint

        model, trained_meta = load_checkpoint(out, "best")
        meta = meta.model_copy(update={k: getattr(trained_meta, k) for k in
                                       ("thresholds", "metrics", "best_epoch", "last_epoch", "reference", "data")})
        if distill_from is not None:
            entries.append(provenance.entry("distilled", teacher=teacher.model_id, epochs=finetune_epochs,
                                            teacher_weight=teacher_weight, lr_scale=lr_scale))
        else:
            entries.append(provenance.entry("finetuned", epochs=finetune_epochs, lr_scale=lr_scale))
        trained = True

    ptq_state: dict[str, torch.Tensor] = {}
    if quantize == "int8":
        from medmm.deploy.quantization import calibrate_backbone

        ptq_state, n_cal = calibrate_backbone(model.image_encoder, _calibration(workflow, calibration_scans))
        entries.append(provenance.entry("quantised", conv="static_int8_fx_x86", linear="dynamic_int8",
                                        weights_stored="int8_per_row_symmetric", calibration_scans=n_cal,
                                        calibration_split="train"))

    raw = meta.model_dump(mode="json", by_alias=True)
    raw["workflow"]["network"] = model.config.model_dump(mode="json")
    raw.update(name=f"{meta.name or run_dir.name}-compressed", model_history=provenance.extend(meta, entries))
    new_meta = type(meta).model_validate(raw)
    workflow = new_meta.workflow
    out.mkdir(parents=True, exist_ok=True)
    weights = save_checkpoint(model, out, "best", new_meta)
    checkpoints = {"best": {"file": weights.name, "n_tensors": len(_tensor_names(weights))}}
    if quantize == "int8":
        checkpoints["best"]["n_tensors"] = _rewrite_int8(weights, ptq_state)
    for name in ("last.safetensors", "state.safetensors", "state.json"):  # a deployment artefact: `best` only
        (out / name).unlink(missing_ok=True)
    _update_meta(out, checkpoints=checkpoints)
    if not trained:
        history = provenance.history(new_meta)
        history[-1]["details"]["thresholds"] = "re-chosen on the validation split"
        _update_meta(out, thresholds=_rechoose_thresholds(out, workflow), model_history=history)
    return out


def _tensor_names(weights: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        return list(handle.keys())


def _calibration(workflow: Any, n: int):
    from medmm.deploy.run_data import calibration_images

    return calibration_images(workflow, n)
