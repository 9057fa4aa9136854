"""Fine-tuning a compressed model, optionally distilling a teacher, with the run's own workflow.

No training loop of its own: `medmm.training`'s trainer runs the epochs (same data, losses,
validation, thresholds and run-dir writing); this module only starts it from the compressed
weights and, for distillation, replaces each known label ``y`` by ``w * p_teacher + (1 - w) * y``
(soft targets for the same masked BCE; where a label is unknown the teacher's probability alone).
That is Hinton et al.'s knowledge distillation at temperature 1 for sigmoid outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medmm.training.engine import Trainer


class _CompressedTrainer(Trainer):
    """The run's trainer, started from given weights, with optional teacher soft targets."""

    loads_pretrained_encoder = False  # hook (issue 19): the given weights replace any pretrained file

    def __init__(self, cfg: Any, run_dir: Path, init_state: Mapping[str, torch.Tensor],
                 soft_targets: Mapping[str, torch.Tensor] | None, teacher_weight: float, verbose: bool):
        super().__init__(cfg, run_dir=run_dir, resume=False, device="cpu", verbose=verbose)
        self.init_state = dict(init_state)
        self.soft_targets = soft_targets
        self.teacher_weight = teacher_weight

    def _setup(self) -> None:
        super()._setup()
        result = self.model.load_state_dict(self.init_state, strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"compressed weights do not fit the workflow's network: {result.unexpected_keys[:3]}")
        if self.weight_average is not None:  # average from the given weights, not the fresh initialisation
            self.weight_average.load_from(self.model)

    def _batch_loss(self, batch: Mapping[str, Any], adversarial: bool):
        if self.soft_targets is not None:
            batch = dict(batch)
            y = batch["label"].float()
            p = torch.stack([self.soft_targets[cid] for cid in batch["case_id"]]).to(y)
            w = self.teacher_weight
            batch["label"] = torch.where(y >= 0, w * p + (1 - w) * y, p)
        return super()._batch_loss(batch, adversarial)


def finetune(model: torch.nn.Module, workflow: Any, out: Path, epochs: int, lr_scale: float = 0.1,
             soft_targets: Mapping[str, torch.Tensor] | None = None, teacher_weight: float = 0.5,
             verbose: bool = True) -> Path:
    """Train ``model`` (its config may be narrower than the workflow's) for ``epochs`` into ``out``.

    The workflow's network becomes ``model.config``, its learning rate is scaled by ``lr_scale``
    (fine-tuning, not training from scratch); model selection and thresholds use the validation
    split as in training. Returns ``out`` (a complete run dir).
    """
    cfg = workflow.model_copy(deep=True)
    cfg.network = model.config.model_copy(deep=True)
    cfg.training.epochs = epochs
    cfg.optimizer.lr = cfg.optimizer.lr * lr_scale
    state = model.state_dict()
    trainer = _CompressedTrainer(cfg, out, state, soft_targets, teacher_weight, verbose)
    trainer.fit()
    return out


def run_probabilities(predictor: Any, cases: list[Any], workflow: Any, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """A loaded run's raw probabilities ``{case_id: [L]}`` on ``cases`` (teacher targets, threshold
    choice), with the fusion texts the run uses at inference: the report is generated only when
    the run's fusion head reads it (the same texts as `Predictor.predict_tensor`, faster)."""
    from medmm.deploy.run_data import preprocessed

    out: dict[str, torch.Tensor] = {}
    for start in range(0, len(cases), batch_size):
        chunk = cases[start:start + batch_size]
        x = torch.cat([preprocessed(workflow, c) for c in chunk])
        with torch.inference_mode():
            step = predictor.model.predict_step(
                feature_map=predictor.feature_map(x), indications=[c.indication for c in chunk],
                use_generated_report=predictor.use_generated_report, use_indication=predictor.use_indication,
                generate=predictor.use_generated_report)
            probs = torch.sigmoid(step.logits).cpu()
        out.update({c.case_id: p.float() for c, p in zip(chunk, probs)})
    return out
