"""Training-time fusion texts: reports the model writes for its training scans, and their embeddings.

The fusion head must train on the text it will read at inference (the generated report and the
indication), so the training scans' reports are regenerated every ``text.refresh_every`` epochs;
with a frozen text encoder their embeddings are computed once per refresh in fixed chunks, so the
values never depend on batch history (a resumed run repeats an uninterrupted one exactly).
"""

from __future__ import annotations

from typing import Any

import torch

from medmm.models.fusion import fusion_texts


class TrainTexts:
    """`Trainer` part that owns ``report_cache`` (case id → generated report) and ``text_embeddings``."""

    @property
    def _text_frozen(self) -> bool:
        encoder = self.model.text_encoder
        return encoder is not None and not any(p.requires_grad for p in encoder.parameters())

    def _clear_text_cache(self) -> None:
        """Drop the model's cached text embeddings before validation, so validation encodes its
        texts in its own batches whatever happened before (batch padding changes the last bits):
        resumed and uninterrupted runs then agree exactly."""
        if self.model.text_encoder is not None:
            self.model.text_encoder.clear_cache()

    def _train_texts(self, cases: list[Any]) -> list[str]:
        text = self.cfg.training.text
        reports = [self.report_cache.get(c.case_id, "") for c in cases] if text.use_generated_report else None
        return fusion_texts(reports, [c.indication or "" for c in cases], text.use_generated_report,
                            text.use_indication)

    @torch.no_grad()
    def _encode_train_texts(self) -> dict[str, torch.Tensor]:
        """Fusion-text embeddings of all training cases (frozen text encoder), encoded once per
        report refresh in fixed chunks so the values never depend on batch history."""
        cases = self.splits["train"]
        texts = self._train_texts(cases)
        self._clear_text_cache()
        size = self.cfg.training.batch_size
        out: dict[str, torch.Tensor] = {}
        for start in range(0, len(cases), size):
            emb = self.model.encode_text(texts[start:start + size])
            out.update({c.case_id: e for c, e in zip(cases[start:start + size], emb.detach())})
        return out

    def _generate_train_reports(self) -> dict[str, str]:
        """Reports the current model writes for the (un-augmented) training images."""
        cache: dict[str, str] = {}
        self.model.eval()
        with torch.no_grad():
            for batch in self._eval_loader(self.train_base):
                with torch.autocast(device_type=self.device.type, enabled=self.amp):
                    _, tokens = self.model.embed(self.model.feature_map(batch["image"].to(self.device)))
                    reports = self.model.generate_reports(tokens)
                cache.update(zip(batch["case_id"], reports))
        self.model.train()
        return cache
