"""LoRA fine-tuning of a pretrained report LM with ``peft``, and the identity of its frozen base.

A run with ``network.report_generator.lora`` stores only what it trained (the LoRA adapter, the
image projector, the findings prompt) plus the base model's name and the sha256 of its weights
file; loading re-reads the base from ``name_or_path`` and refuses one whose hash differs.
"""

from __future__ import annotations

from typing import Any

from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.config.network import LoraConfig
from medmm.models.pretrained import weights_sha256


def apply_lora(lm: Any, cfg: LoraConfig) -> Any:
    """``lm`` wrapped by ``peft.get_peft_model`` (base weights frozen, LoRA matrices trainable)."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError:
        raise MedmmConfigError("network.report_generator.lora", "needs the peft package: pip install 'medmm[llm]'") from None

    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=cfg.target_modules, task_type="CAUSAL_LM",
                              # GPT-2 keeps its projections in Conv1D (weights stored transposed)
                              fan_in_fan_out=getattr(lm.config, "model_type", None) == "gpt2")
    return get_peft_model(lm, peft_cfg)


def base_record(model: Any) -> dict[str, Any] | None:
    """``{name_or_path, model_type, weights_sha256, saved}`` of a pretrained report LM (None when from scratch)."""
    generator = model.report_generator
    cfg = generator.cfg
    if cfg.name_or_path is None:
        return None
    lm = generator.lm.get_base_model() if hasattr(generator.lm, "get_base_model") else generator.lm
    return {
        "name_or_path": cfg.name_or_path,
        "model_type": getattr(lm.config, "model_type", None),
        "weights_sha256": weights_sha256(cfg.name_or_path),
        "saved": "adapter" if cfg.lora is not None else "all",
    }


def check_base(record: dict[str, Any] | None, where: Any) -> None:
    """Refuse a LoRA run whose base model's weights differ from those it was trained on.

    Raises:
        MedmmInputError: one line naming the base and both hashes.
    """
    if not record or record.get("saved") != "adapter" or not record.get("weights_sha256"):
        return
    current = weights_sha256(record["name_or_path"])
    if current != record["weights_sha256"]:
        raise MedmmInputError(
            where,
            f"report LM base {record['name_or_path']!r} has different weights (sha256 {str(current)[:12]}...) from "
            f"the base this adapter was trained on ({record['weights_sha256'][:12]}...)")
