"""What a training run writes each epoch: checkpoints + RunMeta, metrics, resume state, card, logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medmm.io.writers import atomic_write_text
from medmm.training import rundir


class RunOutputs:
    """`Trainer` part that writes the run directory (main rank only) and prints the epoch table."""

    def _meta(self, progress: Mapping[str, Any]) -> Any:
        return rundir.run_meta(self.cfg, self.run_dir, self.derived, self.ontology, self.splits, progress,
                               self.reference, encoder_weights=getattr(self, "encoder_weights", None))

    def _save_checkpoints(self, progress: Mapping[str, Any], improved: bool) -> None:
        from medmm.models import save_checkpoint

        meta = self._meta(progress)
        if improved:
            save_checkpoint(self.model, self.run_dir, "best", meta)
        save_checkpoint(self.model, self.run_dir, "last", meta)

    def _save_epoch(self, record: dict[str, Any], history: list[dict[str, Any]], progress: dict[str, Any],
                    improved: bool, timing: dict[str, float], tb: Any,
                    raw_weights: Mapping[str, Any] | None = None) -> None:
        """Checkpoints of the model as it now is, metrics, timing, the resume state (with the optimiser's
        ``raw_weights`` when the model holds a weight average), the card and TensorBoard scalars."""
        if not self.writes:
            return
        self._save_checkpoints(progress, improved)
        rundir.write_jsonl(self.run_dir / rundir.METRICS_FILE, history)
        timings = rundir.read_jsonl(self.run_dir / rundir.TIMING_FILE)[: record["epoch"] - 1] + [timing]
        rundir.write_jsonl(self.run_dir / rundir.TIMING_FILE, timings)
        rundir.save_state(self.run_dir, self.optimizer, self.scheduler, self.scaler, progress, raw_weights)
        atomic_write_text(self.run_dir / rundir.CARD_FILE, rundir.model_card(self.cfg.name, self._meta(progress), history))
        if tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tb.add_scalar(key, value, record["epoch"])
            for label, value in record.get("val_auroc", {}).items():
                tb.add_scalar(f"val_auroc/{label}", value, record["epoch"])
            tb.add_scalar("time/data_fraction", timing["data_fraction"], record["epoch"])
            tb.flush()
        self._print_row(record, timing)

    def _tensorboard(self):
        if not self.writes:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def _echo(self, text: str) -> None:
        if self.verbose and self.writes:
            from tqdm.auto import tqdm

            tqdm.write(text)

    def _print_row(self, record: Mapping[str, Any], timing: Mapping[str, float]) -> None:
        if not self._header_printed:
            self._header_printed = True
            self._echo(rundir.EPOCH_HEADER)
        self._echo(rundir.epoch_row(record, timing))
