"""Optimiser and learning-rate schedule built from the workflow.

AdamW (Loshchilov & Hutter, ICLR 2019) over the trainable parameters; the schedule is stepped once
per optimiser step: linear warmup, then cosine decay to ``min_lr_ratio × lr`` (or constant). A
``LambdaLR`` is used so its state (``last_epoch``) is plain JSON for resume.
"""

from __future__ import annotations

import math

import torch

from medmm.config import OptimizerConfig, SchedulerConfig


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay over ``params`` (already filtered to trainable ones)."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))


def lr_factor(step: int, total_steps: int, warmup_steps: int, name: str, min_ratio: float) -> float:
    """Multiplier of the base LR at optimiser ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup + cosine/constant ``LambdaLR`` over ``steps_per_epoch × epochs`` optimiser steps."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg.name, cfg.min_lr_ratio))
