"""Findings prompt: the decided findings as prefix tokens of the report LM (diagnosis-driven prompting).

PromptMRG (Jin et al., AAAI 2024, "PromptMRG: Diagnosis-Driven Prompts for Medical Report
Generation") conditions the report decoder on the classifier's diagnosis. Here every finding ``f``
has two learned embeddings, ``present_f`` and ``absent_f``; for a finding state ``s_f`` in [0, 1]
the prompt token is ``s_f * present_f + (1 - s_f) * absent_f`` (0.5 = unknown). The ``L`` tokens
are prepended to the projected image tokens.

Training feeds the ground-truth labels, perturbed (:func:`noisy_findings`) so the decoder keeps
reading the image; inference feeds the ontology-consistent decisions of the findings head. The
ground truth never reaches inference: the predictor only has its own decisions to give.
"""

from __future__ import annotations

import torch
from torch import nn


class FindingsPrompt(nn.Module):
    """``[B, L]`` finding states -> ``[B, L, width]`` prompt tokens (see module docstring)."""

    def __init__(self, n_findings: int, width: int):
        super().__init__()
        self.n_findings = n_findings
        self.present = nn.Parameter(torch.randn(n_findings, width) * 0.02)
        self.absent = nn.Parameter(torch.randn(n_findings, width) * 0.02)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if states.ndim != 2 or states.shape[1] != self.n_findings:
            raise ValueError(f"finding states must be [B, {self.n_findings}], got {tuple(states.shape)}")
        s = states.to(self.present.dtype).clamp(0, 1)[..., None]
        return s * self.present + (1 - s) * self.absent


def finding_states(labels: torch.Tensor) -> torch.Tensor:
    """Labels in {1, 0, -1 (unknown)} -> states in {1, 0, 0.5}."""
    labels = labels.float()
    return torch.where(labels < 0, torch.full_like(labels, 0.5), labels)


def noisy_findings(labels: torch.Tensor, hide: float, flip: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time finding states: a ``hide`` share set to unknown (0.5), a ``flip`` share flipped.

    Without the noise the decoder would copy the prompt and ignore the image; hidden findings
    must be read from the image tokens, flipped ones teach it that the prompt can be wrong.
    """
    states = finding_states(labels)
    if hide <= 0 and flip <= 0:
        return states
    u = torch.rand(states.shape, generator=generator).to(states.device)
    known = states != 0.5
    flipped = torch.where(known & (u < flip), 1 - states, states)
    return torch.where(known & (u >= flip) & (u < flip + hide), torch.full_like(states, 0.5), flipped)
