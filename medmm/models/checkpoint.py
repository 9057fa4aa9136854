"""Checkpoints: ``<name>.safetensors`` weights + ``medmm.json`` (a `RunMeta`). Never pickle.

safetensors cannot execute code on load, so a checkpoint from anywhere is safe to open; a file
that turns out to be a pickle (``torch.save``) payload is refused, never unpickled. Frozen
pretrained text-encoder weights are not copied into every checkpoint: the `RunMeta` records the
encoder's name/path and the sha256 of its weights file, and loading re-reads the pretrained files
after checking that hash. Everything trained (including fine-tuned text-encoder layers) is saved.

Every fact lives in the `RunMeta`; a safetensors header carries only the label list, which
loading compares with the `RunMeta` (weights of another run are refused).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from medmm.errors import MedmmInputError
from medmm.io.writers import atomic_write_bytes
from medmm.models.lora import base_record, check_base
from medmm.models.medmm import MedMM
from medmm.models.pretrained import weights_sha256
from medmm.models.run_meta import META_FILE, RUN_SCHEMA, RunMeta, read_run_meta  # noqa: F401  (re-exported)

_HEADER_LABELS = "medmm_labels"
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save zip archive / raw pickle (protocol >= 2)


def _versions() -> dict[str, str]:
    import monai
    import safetensors
    import transformers

    import medmm

    return {
        "medmm": medmm.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _skipped_keys(model: MedMM) -> set[str]:
    """State-dict keys taken from the pretrained text encoder's files instead of the checkpoint."""
    encoder = model.text_encoder
    if encoder is None or encoder.cfg.tuning == "full":
        return _frozen_lm_keys(model)
    trainable = {name for name, p in encoder.model.named_parameters() if p.requires_grad}
    skipped = {f"text_encoder.model.{key}" for key in encoder.model.state_dict() if key not in trainable}
    return skipped | _frozen_lm_keys(model)


def _frozen_lm_keys(model: MedMM) -> set[str]:
    """Frozen base weights of a LoRA report LM (re-read from its folder; issue 16, medmm.models.lora)."""
    return {f"report_generator.{key}" for key in model.report_generator.frozen_keys()}


def _text_encoder_record(model: MedMM) -> dict[str, Any] | None:
    encoder = model.text_encoder
    if encoder is None:
        return None
    saved = {"full": "all", "partial": "trainable", "frozen": "none"}[encoder.cfg.tuning]
    return {
        "name_or_path": encoder.cfg.name_or_path,
        "weights_sha256": weights_sha256(encoder.cfg.name_or_path),
        "saved": saved,
    }


def save_checkpoint(model: MedMM, directory: str | Path, name: str, meta: RunMeta) -> Path:
    """Write ``<directory>/<name>.safetensors`` and ``<directory>/medmm.json`` (``meta`` completed
    with the text-encoder record, versions and the checkpoint list).

    Both writes are atomic (temporary file in the same folder, then ``os.replace``), so an
    interrupted save leaves the previous checkpoint intact.

    Args:
        model: the model to save (a ``DistributedDataParallel`` wrapper is unwrapped).
        directory: run directory (created if missing).
        name: checkpoint name, e.g. ``"best"`` or ``"last"``.
        meta: the run's metadata; its labels must be the model's.

    Returns:
        Path of the written ``.safetensors`` file.
    """
    from safetensors.torch import save

    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if list(meta.labels) != list(model.labels):
        raise ValueError(f"meta labels {meta.labels[:3]}... differ from the model's {model.labels[:3]}...")
    directory = Path(directory)
    skipped = _skipped_keys(model)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in model.state_dict().items():
        if key in skipped:
            continue
        ident = (value.untyped_storage().data_ptr(), value.storage_offset())
        if ident in seen:  # tied weights (e.g. GPT-2 lm_head = wte): stored once, re-tied by the model
            continue
        seen.add(ident)
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    header = {"format": "pt", _HEADER_LABELS: json.dumps(list(model.labels))}
    weights_path = atomic_write_bytes(directory / f"{name}.safetensors", save(tensors, metadata=header))
    previous = _existing_checkpoints(directory)
    previous[name] = {"file": weights_path.name, "n_tensors": len(tensors)}
    record = {**meta.model_dump(mode="json", by_alias=True), "text_encoder": _text_encoder_record(model),
              "report_lm": base_record(model), "versions": _versions(), "checkpoints": previous}
    meta = RunMeta.model_validate(record)  # so the file re-reads exactly as written
    atomic_write_bytes(directory / META_FILE, meta.to_json().encode("utf-8"))
    return weights_path


def _existing_checkpoints(directory: Path) -> dict[str, Any]:
    """Checkpoint records of a run dir's current medmm.json (none when absent or unreadable)."""
    try:
        raw = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        return {k: v for k, v in dict(raw.get("checkpoints") or {}).items() if (directory / v["file"]).is_file()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _open_safetensors(path: Path) -> tuple[dict[str, str], list[str]]:
    """Header metadata and tensor names of a safetensors file; refuses pickle payloads."""
    from safetensors import safe_open

    with open(path, "rb") as fh:
        head = fh.read(9)
    # A safetensors file starts with an 8-byte little-endian header length followed by a JSON
    # object, so its first byte may legitimately be 0x80; only call it a pickle when it is not
    # laid out like safetensors.
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    looks_like_safetensors = head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8
    if not looks_like_safetensors and head.startswith(_PICKLE_MAGIC):
        raise MedmmInputError(
            path,
            "is a pickle/torch.save file; medmm never unpickles checkpoints (unpickling can run code). "
            "Re-save the weights with safetensors (medmm.models.save_checkpoint)",
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {}), list(handle.keys())
    except Exception as err:  # noqa: BLE001 - safetensors raises several error types for a bad file
        raise MedmmInputError(path, f"not a valid safetensors file ({type(err).__name__}: {err})") from None


def load_checkpoint(directory: str | Path, name: str = "best",
                    map_location: str | torch.device = "cpu") -> tuple[MedMM, RunMeta]:
    """Rebuild a :class:`MedMM` from ``<directory>/<name>.safetensors`` and its `RunMeta`.

    The whole ``medmm.json`` is validated before anything is allocated.

    Returns:
        ``(model, meta)``: the model in eval mode and the run's `RunMeta`.

    Raises:
        MedmmInputError: missing folder/file, invalid metadata (one line naming the field), a
            corrupt or non-safetensors file (pickle is refused), labels in the weights that differ
            from the metadata, weights that do not fit the config, or pretrained text-encoder
            files that differ from those the run was trained with.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise MedmmInputError(directory, "checkpoint folder not found")
    meta = read_run_meta(directory)
    path = directory / f"{name}.safetensors"
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.safetensors"))
        raise MedmmInputError(path, f"no checkpoint named {name!r}; available: {available or 'none'}")
    header, _ = _open_safetensors(path)
    _check_header_labels(header, meta, path)
    record = meta.text_encoder
    if record is not None and record.saved in ("none", "trainable") and record.weights_sha256:
        current = weights_sha256(record.name_or_path)
        if current != record.weights_sha256:
            raise MedmmInputError(
                path,
                f"text encoder {record.name_or_path!r} has different weights (sha256 {str(current)[:12]}...) "
                f"from those this checkpoint was trained with ({record.weights_sha256[:12]}...)",
            )
    check_base(meta.report_lm.model_dump() if meta.report_lm is not None else None, path)
    try:
        model = MedMM(meta.network, meta.labels, meta.network_derived)
    except ValueError as err:
        raise MedmmInputError(directory / META_FILE, f"network cannot be built ({str(err).splitlines()[0]})") from None
    tensors = load_file(str(path), device="cpu")
    from medmm.deploy.loading import runtime_model, split_checkpoint  # hook: compressed run dirs (medmm.deploy)

    tensors, ptq_state = split_checkpoint(tensors)
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise MedmmInputError(path, f"weights do not fit the stored model config ({first})") from None
    if result.unexpected_keys:
        raise MedmmInputError(path, f"unexpected weights {result.unexpected_keys[:3]} for the stored model config")
    state = model.state_dict()
    loaded_ptrs = {state[k].untyped_storage().data_ptr() for k in tensors if k in state}
    missing = [
        k
        for k in result.missing_keys
        if k not in _skipped_keys(model) and state[k].untyped_storage().data_ptr() not in loaded_ptrs
    ]
    if missing:
        raise MedmmInputError(path, f"missing weights {missing[:3]} (of {len(missing)}) for the stored model config")
    model = runtime_model(model, ptq_state, meta)  # hook: int8 kernels of a quantised run (medmm.deploy)
    return model.to(map_location).eval(), meta


def _check_header_labels(header: dict[str, str], meta: RunMeta, path: Path) -> None:
    """The weights' label list (safetensors header) must be the run's, in the same order."""
    raw = header.get(_HEADER_LABELS)
    if raw is None:
        raise MedmmInputError(path, "weights carry no label list (not written by medmm's save_checkpoint)")
    try:
        labels = json.loads(raw)
    except json.JSONDecodeError:
        raise MedmmInputError(path, "weights header has an unreadable label list") from None
    if labels != meta.labels:
        if sorted(map(str, labels)) == sorted(meta.labels):
            raise MedmmInputError(path, "labels in the weights are in another order than in medmm.json "
                                        "(the logits would be assigned to the wrong findings)")
        raise MedmmInputError(path, f"weights were trained for {len(labels)} other labels than medmm.json's "
                                    f"{len(meta.labels)}; this file belongs to another run")
