"""Checkpoints: ``<name>.safetensors`` weights + ``medmm.json`` metadata. Never pickle.

safetensors cannot execute code on load, so a checkpoint from anywhere is safe to open; a file
that turns out to be a pickle (``torch.save``) payload is refused, never unpickled. Frozen
pretrained text-encoder weights are not copied into every checkpoint: the checkpoint records the
encoder's name/path and the sha256 of its weights file, and loading re-reads the pretrained files
after checking that hash. Everything trained (including fine-tuned text-encoder layers) is saved.
The model config and labels are stored both in the safetensors header (so each file is
self-describing, e.g. ``best`` and ``last`` of one run) and in ``medmm.json``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medmm.errors import MedmmInputError
from medmm.models.config import ModelConfig
from medmm.models.lora import base_record, check_base
from medmm.models.medmm import MedMM
from medmm.models.pretrained import weights_sha256

META_FILE = "medmm.json"
_HEADER_KEY = "medmm_model"
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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"checkpoint meta value of type {type(obj).__name__} is not JSON-serialisable")


def _atomic_write_bytes(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MedmmInputError(path, f"cannot read checkpoint metadata ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise MedmmInputError(path, "checkpoint metadata must be a JSON object")
    return data


def save_checkpoint(
    model: MedMM, directory: str | Path, name: str = "last", meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``<directory>/<name>.safetensors`` and merge ``meta`` into ``<directory>/medmm.json``.

    Both writes are atomic (temporary file in the same folder, then ``os.replace``), so an
    interrupted save leaves the previous checkpoint intact.

    Args:
        model: the model to save (a ``DistributedDataParallel`` wrapper is unwrapped).
        directory: run directory (created if missing).
        name: checkpoint name, e.g. ``"best"`` or ``"last"``.
        meta: JSON-serialisable run metadata (thresholds, preprocessing, workflow, ...); merged
            over the existing ``medmm.json`` together with the model config, labels and versions.

    Returns:
        Path of the written ``.safetensors`` file.
    """
    from safetensors.torch import save_file

    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
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
    info = {
        "model": model.config.model_dump(mode="json"),
        "labels": list(model.labels),
        "text_encoder": _text_encoder_record(model),
        "report_lm": base_record(model),
    }
    header = {"format": "pt", _HEADER_KEY: json.dumps(info)}
    weights_path = directory / f"{name}.safetensors"
    _atomic_write_bytes(weights_path, lambda tmp: save_file(tensors, tmp, metadata=header))

    meta_path = directory / META_FILE
    merged = _read_meta(meta_path) if meta_path.exists() else {}
    checkpoints = dict(merged.get("checkpoints") or {})
    checkpoints[name] = {"file": weights_path.name, "n_tensors": len(tensors)}
    merged.update(dict(meta or {}))
    merged.update(info)
    merged["versions"] = _versions()
    merged["checkpoints"] = checkpoints
    text = json.dumps(merged, indent=2, default=_json_default)
    _atomic_write_bytes(meta_path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    return weights_path


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


def load_checkpoint(
    directory: str | Path, name: str = "best", map_location: str | torch.device = "cpu"
) -> tuple[MedMM, dict[str, Any]]:
    """Rebuild a :class:`MedMM` from ``<directory>/<name>.safetensors`` (+ ``medmm.json``).

    Args:
        directory: run directory written by :func:`save_checkpoint`.
        name: checkpoint name (``"best"``, ``"last"``, ...).
        map_location: device for the weights.

    Returns:
        ``(model, meta)``: the model in eval mode and the ``medmm.json`` dictionary.

    Raises:
        MedmmInputError: missing folder/file, a corrupt or non-safetensors file (pickle is refused),
            unreadable metadata, weights that do not fit the stored config, or pretrained
            text-encoder files that differ from those the checkpoint was trained with.
    """
    from pydantic import ValidationError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise MedmmInputError(directory, "checkpoint folder not found")
    path = directory / f"{name}.safetensors"
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.safetensors"))
        raise MedmmInputError(path, f"no checkpoint named {name!r}; available: {available or 'none'}")
    header, _ = _open_safetensors(path)
    meta_path = directory / META_FILE
    meta = _read_meta(meta_path) if meta_path.exists() else {}
    try:
        info = json.loads(header[_HEADER_KEY]) if _HEADER_KEY in header else meta
        config = ModelConfig.model_validate(info["model"])
        labels = list(info["labels"])
    except (KeyError, TypeError, json.JSONDecodeError, ValidationError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MedmmInputError(path, f"checkpoint has no usable model config/labels ({first})") from None

    record = info.get("text_encoder") or {}
    if record.get("saved") in ("none", "trainable") and record.get("weights_sha256"):
        current = weights_sha256(record["name_or_path"])
        if current != record["weights_sha256"]:
            raise MedmmInputError(
                path,
                f"text encoder {record['name_or_path']!r} has different weights (sha256 {str(current)[:12]}...) "
                f"from those this checkpoint was trained with ({record['weights_sha256'][:12]}...)",
            )

    check_base(info.get("report_lm"), path)
    model = MedMM(config, labels)
    tensors = load_file(str(path), device="cpu")
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
    return model.to(map_location).eval(), (meta or dict(info))
