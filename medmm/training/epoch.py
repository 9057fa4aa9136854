"""One training epoch: batches, losses (masked BCE + KR + report LM), adversarial batches, steps.

Gradient accumulation, AMP on CUDA, gradients averaged over DDP ranks, clipping, one scheduler
step per optimiser step. Adversarial batches (FGSM/PGD within ``eps_hu``) are drawn from a
generator seeded by ``(seed, epoch)``, identical on every rank.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import torch

from medmm.models.adversarial import perturb
from medmm.models.fusion import fusion_texts
from medmm.training import distributed
from medmm.training.losses import hierarchy_bce, masked_bce


class TrainEpoch:
    """`Trainer` part that runs the optimisation of one epoch."""

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, float]]:
        from tqdm.auto import tqdm

        t = self.cfg.training
        loader = self._train_loader(epoch)
        adv_rng = torch.Generator().manual_seed(self.cfg.seed * 31 + epoch)  # same on every rank
        sums = {"loss": 0.0, "bce": 0.0, "kr": 0.0, "lm": 0.0, "adv": 0.0}
        data_s = compute_s = 0.0
        n = 0
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{t.epochs}", leave=False, dynamic_ncols=True,
                   disable=None if (self.verbose and self.writes) else True, file=sys.stderr)
        tick = time.perf_counter()
        for i, batch in enumerate(loader):
            got = time.perf_counter()
            data_s += got - tick
            adversarial = t.adversarial.method != "none" and float(torch.rand((), generator=adv_rng)) < t.adversarial.fraction
            loss, parts = self._batch_loss(batch, adversarial)
            self.scaler.scale(loss / t.grad_accum).backward()
            if (i + 1) % t.grad_accum == 0 or i + 1 == len(loader):
                self._optimizer_step()
            for key, value in parts.items():
                sums[key] += value
            sums["adv"] += float(adversarial)
            n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
            tick = time.perf_counter()
            compute_s += tick - got
        bar.close()
        stats = {f"train_{k}": v / max(1, n) for k, v in sums.items()}
        stats = distributed.mean_scalars(stats, self.dist, self.device)
        stats["train_adv_fraction"] = stats.pop("train_adv")
        timing = {"data_s": data_s, "compute_s": compute_s, "steps": n,
                  "data_fraction": data_s / max(1e-9, data_s + compute_s)}
        return stats, timing

    def _batch_loss(self, batch: Mapping[str, Any], adversarial: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (BCE + KR + LM), optionally on adversarial images."""
        from medmm.knowledge import knowledge_loss

        cfg, text_cfg, model = self.cfg, self.cfg.training.text, self.model
        x, y = batch["image"].to(self.device), batch["label"].to(self.device)
        mask = self.label_mask[batch["index"]].to(self.device)
        reports = [self.report_cache.get(cid, "") for cid in batch["case_id"]] if text_cfg.use_generated_report else None
        texts = fusion_texts(reports, batch["indication"], text_cfg.use_generated_report, text_cfg.use_indication)
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            if not model.uses_text:
                text_emb = None
            elif self._text_frozen:
                text_emb = torch.stack([self.text_embeddings[cid] for cid in batch["case_id"]]).to(self.device)
            else:
                text_emb = model.encode_text(texts)
            if adversarial:
                x = self._adversarial(x, y, mask, text_emb)
            pooled, tokens = model.embed(model.feature_map(x))
            if getattr(model, "hierarchy", None) is None:
                logits = model.classify(pooled, text_emb, tokens).float()
                bce = masked_bce(logits, y, mask, self.pos_weight)
            else:  # issue 20: C-HMCNN MCLoss over findings + ontology groups (raw outputs, then MCM)
                raw = model.fusion(pooled, text_emb, tokens).float()
                logits = model.constrain(raw)[:, : len(model.labels)]
                bce = hierarchy_bce(raw, y, mask, self.pos_weight, model.hierarchy, model.hierarchy_matrix,
                                    cfg.network.hierarchy.group_weight)
            kr = knowledge_loss(torch.sigmoid(logits), self.constraints, cfg.ontology.kr_form)
            loss = bce + cfg.ontology.kr_weight * kr
            lm = torch.zeros((), device=self.device)
            targets = [i for i, r in enumerate(batch["report"]) if r][: cfg.network.report_generator.reports_per_batch]
            if cfg.loss.lm_weight > 0 and targets:
                lm = model.report_loss(tokens[targets], [batch["report"][i] for i in targets],
                                       y.masked_fill(mask == 0, -1)[targets])  # grounding: visible labels only
                loss = loss + cfg.loss.lm_weight * lm
        parts = {"loss": float(loss.detach()), "bce": float(bce.detach()), "kr": float(kr.detach()),
                 "lm": float(lm.detach())}
        return loss, parts

    def _adversarial(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                     text_emb: torch.Tensor | None) -> torch.Tensor:
        """FGSM/PGD images within ``eps_hu`` for fixed text (model in eval mode so BN statistics
        stay clean)."""
        from medmm.data.transforms import hu_to_intensity_eps

        adv, pre, model = self.cfg.training.adversarial, self.cfg.preprocessing, self.model
        text_emb = None if text_emb is None else text_emb.detach()

        def attack_loss(z: torch.Tensor) -> torch.Tensor:
            pooled, tokens = model.embed(model.feature_map(z))
            return masked_bce(model.classify(pooled, text_emb, tokens).float(), y, mask, self.pos_weight)

        step = None if adv.step_size_hu is None else hu_to_intensity_eps(adv.step_size_hu, pre)
        model.eval()
        try:
            return perturb(attack_loss, x, adv.method, hu_to_intensity_eps(adv.eps_hu, pre), adv.steps, step,
                           bounds=tuple(pre.intensity_range) if pre.clip else None)
        finally:
            model.train()

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        distributed.average_gradients(self.params, self.dist)
        if self.cfg.optimizer.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optimizer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        distributed.broadcast_buffers(self.model, self.dist)
        if self.weight_average is not None:
            self.weight_average.update(self.model)
        self.global_step += 1
