"""Exponential moving average of the trained weights (Polyak averaging), used for validation and checkpoints.

The average of the last few hundred optimiser steps is a flatter, less noisy point than the last
step's weights; validation, model selection, thresholds and both checkpoints use it, while the
optimiser keeps stepping the raw weights (``training.ema_decay``).

Why not ``torch.optim.swa_utils.AveragedModel``: it deep-copies the whole model, including the
frozen pretrained text encoder and the radiomics histogram cache, and averages every parameter of
the copy each step. Only the trained tensors change, so this keeps just those (trainable
parameters and normalisation statistics) and swaps them into the one model when it is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _tracked(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that training changes: parameters with gradients and the buffers (BatchNorm statistics)."""
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    tensors.update((name, b) for name, b in model.named_buffers() if b is not None)
    return tensors


def _assign(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into the model's tracked tensors of the same names."""
    current = _tracked(model)
    with torch.no_grad():
        for name, tensor in tensors.items():
            current[name].copy_(tensor)


class WeightAverage:
    """EMA of a model's trained tensors with the usual warm-up ``min(decay, (1 + t) / (10 + t))``.

    Args:
        model: the model being trained (its current tensors start the average).
        decay: per-step decay; 0.998 averages over roughly the last 500 steps.

    Example:
        >>> average = WeightAverage(model, 0.998)       # doctest: +SKIP
        >>> average.update(model)                       # after each optimiser step
        >>> with average.applied(model):                # evaluate / save the averaged weights
        ...     validate(model)
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.load_from(model)

    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current tensors (floating ones; others are copied)."""
        self.updates += 1
        weight = 1.0 - min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        current = _tracked(model)
        averaged, latest = [], []
        with torch.no_grad():
            for name, kept in self.shadow.items():
                if kept.is_floating_point():
                    averaged.append(kept)
                    latest.append(current[name].detach())
                else:
                    kept.copy_(current[name])
            if averaged:  # one fused call, as torch.optim.swa_utils.get_ema_multi_avg_fn does
                torch._foreach_lerp_(averaged, latest, weight)

    @contextmanager
    def applied(self, model: nn.Module, raw: dict[str, torch.Tensor] | None = None) -> Iterator[nn.Module]:
        """Within the block the model holds the averaged tensors; the raw ones come back after
        (``raw``: a `raw_state` the caller already took, so it is not copied twice)."""
        raw = self.raw_state(model) if raw is None else raw
        _assign(model, self.shadow)
        try:
            yield model
        finally:
            _assign(model, raw)

    def copy_to(self, model: nn.Module) -> None:
        """Leave the averaged tensors in the model (the end of training)."""
        _assign(model, self.shadow)

    def load_from(self, model: nn.Module) -> None:
        """Take the model's current tensors as the average (a fresh start, or resuming from an
        averaged checkpoint)."""
        self.shadow = self.raw_state(model)

    @staticmethod
    def raw_state(model: nn.Module) -> dict[str, torch.Tensor]:
        """A copy of the model's trained tensors as they are now."""
        return {name: t.detach().clone() for name, t in _tracked(model).items()}
