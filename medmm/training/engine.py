"""The training loop: `train(workflow) -> Run`.

One epoch = (optionally) regenerate the training cases' reports, a pass over the augmented
training set (masked BCE + KR + report-LM loss, adversarial batches, gradient accumulation, AMP on
CUDA, gradients averaged over DDP ranks), validation with inference-time text only, per-finding
thresholds, checkpoints and metrics. Every epoch starts from RNG seeds derived from
``(seed, epoch)``, so a resumed run repeats exactly what the uninterrupted run would have done.

>>> run = train("workflows/ct_chest_demo.yaml", training__epochs=1)   # doctest: +SKIP
>>> run.best["val_macro_auroc"]                                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from medmm.config import WorkflowConfig, load_workflow
from medmm.errors import MedmmConfigError
from medmm.training import distributed, rundir
from medmm.training.adversarial import perturb
from medmm.training.histogram_cache import HistogramCache
from medmm.training.losses import label_fraction_mask, masked_bce, resolve_pos_weight
from medmm.training.optim import build_optimizer, build_scheduler
from medmm.models.calibration import calibrate_and_choose
from medmm.training.validation import choose_thresholds, fusion_texts, predict, validation_metrics

RUN_FORMAT = "medmm-run/1"


@dataclass
class Run:
    """Result of `train`: where the run lives and what it achieved.

    Attributes:
        run_dir: the run directory (see `medmm.training.rundir`).
        config: the resolved workflow.
        metrics: one record per completed epoch (as in ``metrics.jsonl``).
        best: ``{"epoch", "val_macro_auroc", "thresholds", "metrics"}`` of the best epoch.
        stopped_early: True when early stopping ended training.
        model: the trained model as it is after the last epoch (not the best checkpoint; load
            that with ``medmm.models.load_checkpoint(run.run_dir, "best")``).
    """

    run_dir: Path
    config: WorkflowConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    model: Any = field(default=None, repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        """The run's ``medmm.json``."""
        import json

        return json.loads((self.run_dir / "medmm.json").read_text(encoding="utf-8"))


def train(config_or_path: str | Path | Mapping[str, Any] | WorkflowConfig | None = None,
          run_dir: str | Path | None = None, resume: bool = False, device: str | torch.device | None = None,
          overrides: list[str] | Mapping[str, Any] | None = None, verbose: bool = True,
          **kw_overrides: Any) -> Run:
    """Train a model from a workflow and return the `Run`.

    Args:
        config_or_path: workflow YAML path, dict or `WorkflowConfig`; None with ``resume`` reuses
            ``<run_dir>/workflow.yaml``.
        run_dir: output folder; default ``<output.run_root>/<name>-<UTC timestamp>``.
        resume: continue the interrupted/finished run in ``run_dir`` from its last state
            (raise ``training.epochs`` with an override to train further).
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        overrides: ``["training.epochs=2", ...]`` or ``{"training.epochs": 2}``.
        verbose: print the per-epoch table and progress bars (rank 0 only).
        **kw_overrides: dotted keys written with ``__``, e.g. ``training__epochs=1``.

    Returns:
        The `Run` (run directory, per-epoch metrics, best epoch).

    Raises:
        MedmmConfigError: invalid workflow, unusable split, ``resume`` without a run directory.
        MedmmInputError: unreadable data.
        KeyboardInterrupt: after saving a usable ``last`` checkpoint and resume state.
    """
    merged: dict[str, Any] = {}
    if isinstance(overrides, Mapping):
        merged.update(overrides)
    elif overrides:
        from medmm.config import parse_overrides

        merged.update(parse_overrides(list(overrides)))
    merged.update({key.replace("__", "."): value for key, value in kw_overrides.items()})
    if resume:
        if run_dir is None:
            raise MedmmConfigError("--resume", "needs --run-dir naming the run to continue")
        if not (Path(run_dir) / rundir.STATE_JSON).exists():
            raise MedmmConfigError(run_dir, "nothing to resume: no state.json in this run directory")
        if config_or_path is None:
            config_or_path = Path(run_dir) / rundir.WORKFLOW_FILE
    cfg = load_workflow(config_or_path, merged or None)
    return Trainer(cfg, run_dir=run_dir, resume=resume, device=device, verbose=verbose).fit()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedmmConfigError("--device", "cuda requested but no CUDA device is available")
    return device


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer:
    """Holds the pieces of one run; `fit` runs it. Use `train` rather than this class directly."""

    def __init__(self, cfg: WorkflowConfig, run_dir: str | Path | None, resume: bool,
                 device: str | torch.device | None, verbose: bool):
        self.cfg = cfg
        self.resume = resume
        self.verbose = verbose
        self.device = _resolve_device(device)
        self.dist = distributed.setup(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        chosen = str(run_dir) if run_dir is not None else (
            str(rundir.default_run_dir(cfg.output.run_root, cfg.name)) if self.dist.is_main else "")
        self.run_dir = Path(distributed.broadcast_text(chosen, self.dist))
        self.writes = self.dist.is_main
        self.amp = cfg.training.amp and self.device.type == "cuda"
        self.labels = list(cfg.data.labels)
        self.eval_labels = list(cfg.data.eval_labels or self.labels)
        self._header_printed = False

    # ------------------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        from medmm.data.dataset import augmented, build_dataset, label_matrix, load_cases, split_cases
        from medmm.knowledge import load_ontology
        from medmm.models import MedMM

        cfg, t = self.cfg, self.cfg.training
        _seed_all(cfg.seed)
        splits = split_cases(load_cases(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
        for name in ("train", "val"):
            if not splits[name]:
                raise MedmmConfigError("data", f"the {name} split is empty ({sum(map(len, splits.values()))} cases); "
                                       "add cases or change val_fraction")
        self.splits = splits
        cache_dir = t.cache_dir or (self.run_dir / "cache")
        common = dict(labels=self.labels, cfg=cfg.preprocessing, cache=t.cache, cache_dir=cache_dir,
                      num_workers=t.num_workers)
        self.train_base = build_dataset(splits["train"], train=False, **common)
        self.train_set = augmented(self.train_base, cfg.preprocessing, seed=cfg.seed)
        self.val_set = build_dataset(splits["val"], train=False, **common)

        self.ontology = load_ontology(cfg.ontology.path, labels=self.labels)
        self.constraints = self.ontology.constraints(self.labels).to(self.device)
        self._resolve_report_vocabulary(splits["train"])
        self._resolve_report_length(splits["train"])
        self.model = MedMM(cfg.network, self.labels).to(self.device)
        distributed.broadcast_parameters(self.model, self.dist)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

        self.label_mask = label_fraction_mask(len(splits["train"]), len(self.labels), t.label_fraction, cfg.seed)
        train_labels = label_matrix(splits["train"], self.labels)
        pos_weight = resolve_pos_weight(cfg.loss.pos_weight, train_labels, self.label_mask)
        self.pos_weight = None if pos_weight is None else pos_weight.to(self.device)

        n_batches = len(self._train_loader(0))
        self.steps_per_epoch = math.ceil(n_batches / t.grad_accum)
        self.optimizer = build_optimizer(self.params, cfg.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, self.steps_per_epoch, t.epochs)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        # histogram channels of images that are the same every epoch (medmm.training.histogram_cache)
        budget = t.histogram_cache_mb * 2**20
        fixed_train = budget > 0 and not cfg.preprocessing.augmentation.enabled
        self.train_histograms = HistogramCache(self.model.image_encoder, budget // 2) if fixed_train else None
        self.val_histograms = HistogramCache(self.model.image_encoder, budget // 2) if budget > 0 else None

    def _resolve_report_vocabulary(self, train_cases: list[Any]) -> None:
        """Fill ``network.report_generator.vocab_ids`` with the tokens of the training reports
        (``vocabulary: training_reports``); the resolved list is saved with the run's config, so a
        resumed run and every checkpoint rebuild the same decoder."""
        from medmm.models.pretrained import load_tokenizer
        from medmm.models.report_generator import report_vocabulary

        generator = self.cfg.network.report_generator
        if generator.name_or_path is not None or generator.vocabulary != "training_reports" or generator.vocab_ids:
            return
        tokenizer = load_tokenizer(self.cfg.network.text_encoder.name_or_path)
        generator.vocab_ids = report_vocabulary([c.report or "" for c in train_cases], tokenizer)

    def _resolve_report_length(self, train_cases: list[Any]) -> None:
        """Report length limits from the training reports (``medmm.models.report_length``)."""
        from medmm.models.pretrained import load_tokenizer
        from medmm.models.report_length import check_grounding, resolve_report_length

        check_grounding(self.cfg)
        generator, network = self.cfg.network.report_generator, self.cfg.network
        if generator.length_percentile is None:
            return
        tokenizer = load_tokenizer(generator.name_or_path or network.text_encoder.name_or_path,
                                   where="network.report_generator.name_or_path")
        reserved = 2 + (network.image_encoder.n_tokens if generator.conditioning == "prefix" else 0)
        reserved += len(self.labels) if generator.grounding == "findings" else 0
        resolve_report_length(generator, [c.report or "" for c in train_cases], tokenizer, reserved)

    def _train_loader(self, epoch: int):
        from monai.data import DataLoader
        from torch.utils.data import DistributedSampler, RandomSampler

        seed = self.cfg.seed + 7919 * epoch
        if self.dist.enabled:
            sampler = DistributedSampler(self.train_set, self.dist.world_size, self.dist.rank, shuffle=True,
                                         seed=self.cfg.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(self.train_set, generator=torch.Generator().manual_seed(seed))
        return DataLoader(self.train_set, batch_size=self.cfg.training.batch_size, sampler=sampler,
                          num_workers=self.cfg.training.num_workers,
                          generator=torch.Generator().manual_seed(seed))

    def _eval_loader(self, dataset):
        from monai.data import DataLoader

        return DataLoader(dataset, batch_size=self.cfg.training.batch_size, shuffle=False,
                          num_workers=self.cfg.training.num_workers)

    # ------------------------------------------------------------------------------ the run
    def fit(self) -> Run:
        """Run all remaining epochs; returns the `Run`."""
        previous = torch.are_deterministic_algorithms_enabled()
        if self.cfg.training.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            self._setup()
            return self._loop()
        finally:
            torch.use_deterministic_algorithms(previous)
            distributed.teardown(self.dist)

    def _loop(self) -> Run:
        from medmm.data.dataset import reseed

        cfg, t = self.cfg, self.cfg.training
        progress = {"epoch": 0, "global_step": 0, "best": None, "bad_epochs": 0, "report_cache": {},
                    "interrupted": False}
        history: list[dict[str, Any]] = []
        if self.resume:
            progress, history = self._restore()
        elif self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            rundir.atomic_write(self.run_dir / rundir.WORKFLOW_FILE,
                                yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
        self.report_cache: dict[str, str] = dict(progress["report_cache"])
        self.text_embeddings: dict[str, torch.Tensor] = {}
        self.global_step = progress["global_step"]
        tb = self._tensorboard()
        stopped = False
        epoch = progress["epoch"]
        try:
            for epoch in range(progress["epoch"], t.epochs):
                _seed_all(cfg.seed + 1_000_003 * (epoch + 1) + self.dist.rank)
                reseed(self.train_set, cfg.seed + 7919 * epoch + self.dist.rank)
                t0 = time.perf_counter()
                # epoch 0 trains with empty reports: an untrained generator writes noise, and
                # generating it would cost more than the epoch itself on a CPU
                refresh_due = epoch > 0 and (epoch % t.text.refresh_every == 0 or not self.report_cache)
                if t.text.use_generated_report and refresh_due:
                    self.report_cache = self._generate_train_reports()
                    self.text_embeddings = {}
                if self._text_frozen and not self.text_embeddings:
                    self.text_embeddings = self._encode_train_texts()
                t1 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                train_stats, timing = self._train_epoch(epoch)
                t2 = time.perf_counter()
                self._clear_text_cache()
                pred = predict(self.model, self._eval_loader(self.val_set), self.device,
                               t.text.use_generated_report, t.text.use_indication, self.amp, self.val_histograms)
                val = validation_metrics(pred, self.labels, self.eval_labels, self.constraints)
                thresholds, calibration = calibrate_and_choose(  # issue 16: calibrated, sane thresholds
                    pred["logits"], pred["labels"], self.labels,
                    lambda y, p, names: choose_thresholds(y, p, names, t.threshold_rule))
                score = val["val_macro_auroc"] if val["val_macro_auroc"] is not None else -val["val_bce"]
                best = progress["best"]
                improved = best is None or score > best["score"] + t.early_stopping.min_delta
                record = {"epoch": epoch + 1, "step": self.global_step,
                          "lr": lr, **train_stats, **val, "best": improved}
                history.append(record)
                if improved:
                    progress["best"] = {"epoch": epoch + 1, "score": score, "val_macro_auroc": val["val_macro_auroc"],
                                        "thresholds": thresholds, "calibration": calibration, "metrics": record}
                progress["bad_epochs"] = 0 if improved else progress["bad_epochs"] + 1
                progress.update(epoch=epoch + 1, global_step=self.global_step, report_cache=self.report_cache)
                timing.update(epoch=epoch + 1, refresh_s=t1 - t0, val_s=time.perf_counter() - t2,
                              epoch_s=time.perf_counter() - t0)
                self._save_epoch(record, history, progress, improved, timing, tb)
                patience = t.early_stopping.patience
                if patience is not None and progress["bad_epochs"] >= patience:
                    stopped = True
                    break
        except KeyboardInterrupt:
            if self.writes:
                progress.update(epoch=epoch, global_step=self.global_step, report_cache=self.report_cache,
                                interrupted=True)
                self._save_checkpoints(progress, improved=False)
                rundir.save_state(self.run_dir, self.optimizer, self.scheduler, self.scaler, progress)
                self._echo(f"interrupted: saved {self.run_dir / 'last.safetensors'}; continue with --resume")
            raise
        finally:
            if tb is not None:
                tb.close()
        best = dict(progress["best"] or {})
        best.pop("score", None)
        return Run(self.run_dir, cfg, history, best, stopped, self.model)

    def _restore(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from safetensors.torch import load_file

        # The model was just rebuilt from the same workflow, so only the saved tensors are needed;
        # keys absent from the file are the frozen pretrained text encoder (re-read from its
        # package) and tied weights (stored once by save_checkpoint).
        weights = load_file(str(self.run_dir / "last.safetensors"), device=str(self.device))
        result = self.model.load_state_dict(weights, strict=False)
        if result.unexpected_keys:
            raise MedmmConfigError(self.run_dir, f"last.safetensors does not fit this workflow's network "
                                                 f"(unexpected {result.unexpected_keys[:3]})")
        progress = rundir.load_state(self.run_dir, self.optimizer, self.scheduler, self.scaler)
        history = rundir.read_jsonl(self.run_dir / rundir.METRICS_FILE)[: progress["epoch"]]
        if self.writes:
            rundir.atomic_write(self.run_dir / rundir.WORKFLOW_FILE,
                                yaml.safe_dump(self.cfg.to_yaml_dict(), sort_keys=False))
        return progress, history

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

    # ------------------------------------------------------------------------------ one epoch
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
            cached = None if adversarial or self.train_histograms is None else \
                self.train_histograms.lookup(x, batch["case_id"])
            pooled, tokens = model.embed(model.feature_map(x, cached))
            logits = model.classify(pooled, text_emb, tokens).float()
            bce = masked_bce(logits, y, mask, self.pos_weight)
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
        self.global_step += 1

    # ------------------------------------------------------------------------------ outputs
    def _meta(self, progress: Mapping[str, Any]) -> dict[str, Any]:
        return rundir.run_meta(self.cfg, self.run_dir, self.labels, self.eval_labels, self.ontology, self.splits,
                               progress, RUN_FORMAT)

    def _save_checkpoints(self, progress: Mapping[str, Any], improved: bool) -> None:
        from medmm.models import save_checkpoint

        meta = self._meta(progress)
        if improved:
            save_checkpoint(self.model, self.run_dir, "best", meta)
        save_checkpoint(self.model, self.run_dir, "last", meta)

    def _save_epoch(self, record: dict[str, Any], history: list[dict[str, Any]], progress: dict[str, Any],
                    improved: bool, timing: dict[str, float], tb: Any) -> None:
        if not self.writes:
            return
        self._save_checkpoints(progress, improved)
        rundir.write_jsonl(self.run_dir / rundir.METRICS_FILE, history)
        timings = rundir.read_jsonl(self.run_dir / rundir.TIMING_FILE)[: record["epoch"] - 1] + [timing]
        rundir.write_jsonl(self.run_dir / rundir.TIMING_FILE, timings)
        rundir.save_state(self.run_dir, self.optimizer, self.scheduler, self.scaler, progress)
        rundir.atomic_write(self.run_dir / rundir.CARD_FILE, rundir.model_card(self.cfg.name, self._meta(progress), history))
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
