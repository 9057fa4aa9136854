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
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from medmm.config import WorkflowConfig, load_workflow
from medmm.errors import MedmmConfigError
from medmm.io.writers import atomic_write_text
from medmm.training import distributed, rundir
from medmm.training.epoch import TrainEpoch
from medmm.training.losses import label_fraction_mask, resolve_pos_weight
from medmm.training.optim import build_optimizer, build_scheduler
from medmm.models.calibration import calibrate_and_choose
from medmm.training.outputs import RunOutputs
from medmm.training.reference import reference_profile
from medmm.training.texts import TrainTexts
from medmm.training.validation import choose_thresholds, predict, validation_metrics
from medmm.training.weight_average import WeightAverage


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
    def meta(self) -> Any:
        """The run's `medmm.models.RunMeta` (its ``medmm.json``)."""
        from medmm.models import read_run_meta

        return read_run_meta(self.run_dir)


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


def _label_embeddings(cfg: WorkflowConfig, derived: Any) -> torch.Tensor | None:
    """Initial knowledge queries of a fresh model (issue 20; None unless ``knowledge_queries``)."""
    if derived.label_query_texts is None:
        return None
    from medmm.models.query_head import label_query_embeddings

    return label_query_embeddings(derived.label_query_texts, cfg.network.text_encoder)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer(TrainTexts, TrainEpoch, RunOutputs):
    """Holds the pieces of one run; `fit` runs it. Use `train` rather than this class directly.

    Set-up, the epoch loop and resuming live here; fusion texts (`TrainTexts`), the optimisation
    of an epoch (`TrainEpoch`) and the run's files (`RunOutputs`) in their own modules.
    """

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
        from medmm.models import MedMM, derive_network

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
        self._resolve_report_length(splits["train"])
        self.derived = derive_network(cfg.network, cfg.preprocessing, [c.report or "" for c in splits["train"]],
                                      ontology=self.ontology, labels=self.labels)
        self.model = MedMM(cfg.network, self.labels, self.derived, _label_embeddings(cfg, self.derived)).to(self.device)
        self._init_image_encoder()  # issue 19: pretrained encoder weights + load report
        distributed.broadcast_parameters(self.model, self.dist)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.weight_average = WeightAverage(self.model, t.ema_decay) if t.ema_decay else None
        self.reference = reference_profile(self.train_base, label_matrix(splits["val"], self.labels), self.labels,
                                           cfg.preprocessing) if self.writes else None

        self.label_mask = label_fraction_mask(len(splits["train"]), len(self.labels), t.label_fraction, cfg.seed)
        train_labels = label_matrix(splits["train"], self.labels)
        pos_weight = resolve_pos_weight(cfg.loss.pos_weight, train_labels, self.label_mask)
        self.pos_weight = None if pos_weight is None else pos_weight.to(self.device)

        n_batches = len(self._train_loader(0))
        self.steps_per_epoch = math.ceil(n_batches / t.grad_accum)
        self.optimizer = build_optimizer(self.params, cfg.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, self.steps_per_epoch, t.epochs)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.model.cache_fixed_inputs(True)  # the same un-augmented images recur every epoch

    #: False for trainers started from given weights (`medmm.deploy.finetuning`): the pretrained
    #: file named in a run's workflow is then neither read nor needed.
    loads_pretrained_encoder = True

    def _init_image_encoder(self) -> None:
        """Load ``network.image_encoder.pretrained`` (a fresh run only: a resumed one has its own
        weights) and write the load report to the run dir (`medmm.models.encoder_weights`)."""
        from medmm.models import encoder_weights

        enc = self.cfg.network.image_encoder
        self.encoder_weights = encoder_weights.read_record(self.run_dir) if self.resume else None
        if enc.pretrained is None or self.resume or not self.loads_pretrained_encoder:
            return
        report = encoder_weights.load_encoder_weights(self.model.image_encoder.backbone, enc.pretrained, enc.name)
        self.encoder_weights = report.record()
        if self.writes:
            encoder_weights.write_report(report, self.run_dir)
        self._echo(report.summary())

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
        batch_size = self.cfg.training.batch_size
        # A last batch of one scan crashes BatchNorm when the deepest feature map is 1x1x1; drop that
        # lone scan (the sampler reshuffles, so it is trained on in other epochs). Other sizes are kept.
        lone_last = batch_size > 1 and len(sampler) % batch_size == 1
        return DataLoader(self.train_set, batch_size=batch_size, sampler=sampler, drop_last=lone_last,
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
                    "interrupted": False, "ema_updates": 0}
        history: list[dict[str, Any]] = []
        if self.resume:
            progress, history = self._restore()
        elif self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / rundir.WORKFLOW_FILE,
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
                raw_weights = self._raw_weights()
                with self._evaluated_weights(raw_weights):  # validation, thresholds and checkpoints read the average
                    pred = predict(self.model, self._eval_loader(self.val_set), self.device,
                                   t.text.use_generated_report, t.text.use_indication, self.amp)
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
                    progress.update(epoch=epoch + 1, global_step=self.global_step, report_cache=self.report_cache,
                                    ema_updates=self._ema_updates())
                    timing.update(epoch=epoch + 1, refresh_s=t1 - t0, val_s=time.perf_counter() - t2,
                                  epoch_s=time.perf_counter() - t0)
                    self._save_epoch(record, history, progress, improved, timing, tb, raw_weights)
                patience = t.early_stopping.patience
                if patience is not None and progress["bad_epochs"] >= patience:
                    stopped = True
                    break
        except KeyboardInterrupt:
            if self.writes:
                progress.update(epoch=epoch, global_step=self.global_step, report_cache=self.report_cache,
                                interrupted=True, ema_updates=self._ema_updates())
                raw_weights = self._raw_weights()
                with self._evaluated_weights(raw_weights):
                    self._save_checkpoints(progress, improved=False)
                rundir.save_state(self.run_dir, self.optimizer, self.scheduler, self.scaler, progress, raw_weights)
                self._echo(f"interrupted: saved {self.run_dir / 'last.safetensors'}; continue with --resume")
            raise
        finally:
            if tb is not None:
                tb.close()
        if self.weight_average is not None:
            self.weight_average.copy_to(self.model)  # Run.model = the weights of the last checkpoint
        best = dict(progress["best"] or {})
        best.pop("score", None)
        return Run(self.run_dir, cfg, history, best, stopped, self.model)

    # ------------------------------------------------------------------------------ weight average
    def _raw_weights(self) -> dict[str, torch.Tensor] | None:
        """The optimiser's own weights for the resume state (None without a weight average: they are
        then the checkpoint's)."""
        return None if self.weight_average is None else self.weight_average.raw_state(self.model)

    def _evaluated_weights(self, raw_weights: dict[str, torch.Tensor] | None):
        """Context in which the model holds the weights that are validated and saved (``raw_weights``
        from `_raw_weights` come back after)."""
        return nullcontext() if self.weight_average is None else self.weight_average.applied(self.model, raw_weights)

    def _ema_updates(self) -> int:
        return 0 if self.weight_average is None else self.weight_average.updates

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
        if self.weight_average is not None:  # last.safetensors holds the average, the state the raw weights
            self.weight_average.load_from(self.model)
            self.weight_average.updates = int(progress.get("ema_updates", 0))
            self.model.load_state_dict(rundir.load_weights(self.run_dir, self.device), strict=False)
        history = rundir.read_jsonl(self.run_dir / rundir.METRICS_FILE)[: progress["epoch"]]
        if self.writes:
            atomic_write_text(self.run_dir / rundir.WORKFLOW_FILE,
                                yaml.safe_dump(self.cfg.to_yaml_dict(), sort_keys=False))
        return progress, history
