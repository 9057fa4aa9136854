"""The workflow schema: one YAML file describes data, preprocessing, network and training.

Sections follow MONAI bundle vocabulary where it fits (``network``, ``preprocessing``,
``optimizer``, ``inferer``). Every number has a sane range and must be finite, paths a run writes
to may not escape with ``..`` or point into system folders. Validation never writes derived
values back into the config (see `medmm.config.network.NetworkDerived`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from medmm.config.base import SafePath, Strict
from medmm.config.inferer import InfererConfig
from medmm.config.network import ModelConfig
from medmm.config.preprocessing import PreprocessingConfig
from medmm.labels import CT_RATE_FINDINGS

MAX_LABELS = 1024


# ---------------------------------------------------------------------------------------- data
class SyntheticSource(Strict):
    """Built-in synthetic chest phantoms (`medmm.data.ensure_synthetic`), generated once and cached."""

    n: int = Field(96, ge=4, le=100_000, description="number of cases")
    size: int = Field(64, ge=8, le=512, description="cube edge in voxels")
    seed: int = Field(0, ge=0, lt=2**32)
    cache_dir: SafePath = Path("~/.cache/medmm/synthetic")
    format: Literal["nifti", "dicom", "both"] = "nifti"
    workers: int = Field(1, ge=1, le=256, description="processes generating the phantoms (output does not depend on it)")
    counterfactuals: int = Field(0, ge=0, le=64, description="re-renderings per training scan with one finding switched")


class ManifestSource(Strict):
    """A CSV/JSONL manifest (`medmm.data.read_manifest`); relative paths in it are relative to it."""

    path: Path


class CTRateSource(Strict):
    """The CT-RATE release layout (`medmm.data.read_ctrate`)."""

    volumes_dir: Path
    labels_csv: Path
    reports_csv: Path


class DataConfig(Strict):
    """Where cases come from and which findings are learned.

    ``source`` picks one of the sub-sections; cases without a manifest ``split`` are split by
    patient (``val_fraction`` / ``test_fraction``, seeded by the workflow seed).
    """

    source: Literal["synthetic", "manifest", "ctrate"] = "synthetic"
    synthetic: SyntheticSource | None = None
    manifest: ManifestSource | None = None
    ctrate: CTRateSource | None = None
    labels: list[str] = Field(default_factory=lambda: list(CT_RATE_FINDINGS), min_length=1, max_length=MAX_LABELS)
    eval_labels: list[str] | None = Field(None, description="labels in the headline metric (None = all)")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _default_synthetic(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source", "synthetic") == "synthetic" and data.get("synthetic") is None:
            data = {**data, "synthetic": {}}
        return data

    @model_validator(mode="after")
    def _source_section(self) -> DataConfig:
        if getattr(self, self.source) is None:
            raise ValueError(f"data.source is {self.source!r} but the data.{self.source} section is missing")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be a non-empty list without duplicates")
        unknown = sorted(set(self.eval_labels or []) - set(self.labels))
        if unknown:
            raise ValueError(f"eval_labels not among labels: {unknown}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


# ------------------------------------------------------------------------------- optimisation
class OntologyConfig(Strict):
    """Ontology used for the knowledge-regularisation (KR) loss and stored consistency."""

    path: Path | None = Field(None, description="Turtle file; None = medmm's chest_ct.ttl")
    kr_weight: float = Field(0.1, ge=0, le=100)
    kr_form: Literal["hinge", "product"] = "hinge"


PosWeight = Annotated[float, Field(ge=0, le=1e4)]


class LossConfig(Strict):
    """BCE settings and the weight of the report language-model loss."""

    pos_weight: PosWeight | list[PosWeight] | Literal["auto"] | None = Field(
        None, description="BCE positive weight: one number, one per label, 'auto' = neg/pos on train, or None")
    lm_weight: float = Field(0.1, ge=0, le=100)


class OptimizerConfig(Strict):
    """AdamW (decoupled weight decay)."""

    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-2, ge=0, le=10)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    grad_clip: float | None = Field(1.0, gt=0, le=1e6)


class SchedulerConfig(Strict):
    """Per-optimiser-step learning-rate schedule: linear warmup then cosine (or constant)."""

    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, le=100_000)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class EarlyStoppingConfig(Strict):
    """Stop when validation macro AUROC has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int | None = Field(None, ge=1, le=100_000, description="None = never stop early")
    min_delta: float = Field(0.0, ge=0, le=1)


class AdversarialConfig(Strict):
    """Adversarial training: perturb a fraction of batches within ``eps_hu`` HU (FGSM or PGD)."""

    method: Literal["none", "fgsm", "pgd"] = "none"
    eps_hu: float = Field(4.0, ge=0, le=1000)
    steps: int = Field(3, ge=1, le=1000)
    step_size_hu: float | None = Field(None, gt=0, le=1000, description="PGD step; None = 2.5 * eps / steps")
    fraction: float = Field(0.5, ge=0, le=1, description="share of training batches made adversarial")


class TextConfig(Strict):
    """Text given to the fusion head: only what exists at inference (never the true report)."""

    use_generated_report: bool = True
    use_indication: bool = True
    refresh_every: int = Field(1, ge=1, le=100_000, description="regenerate training-case reports every N epochs")


class TrainingConfig(Strict):
    """The loop: epochs, batching, AMP, caching, label hiding, thresholds, adversarial, text."""

    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(8, ge=1, le=4096)
    grad_accum: int = Field(1, ge=1, le=4096)
    amp: bool = Field(True, description="mixed precision; only ever used on CUDA")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    num_workers: int = Field(0, ge=0, le=256)
    cache: Literal["memory", "disk", "none"] = "memory"
    cache_dir: SafePath | None = Field(None, description="for cache: disk; None = <run_dir>/cache")
    label_fraction: float = Field(1.0, gt=0, le=1, description="share of train (case, label) entries BCE sees")
    threshold_rule: Literal["f1", "youden", "fixed"] = Field(
        "f1", description="per-finding thresholds on validation: F1-optimal, Youden, or fixed 0.5 on the calibrated "
        "probability (small validation splits; medmm.training.validation)")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="validate and save an exponential moving average of the weights with this "
        "per-step decay (0.998: about the last 500 steps; medmm.training.weight_average); None = the raw weights")
    deterministic: bool = True
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    text: TextConfig = Field(default_factory=TextConfig)


# ------------------------------------------------------------------------------ inference/out
class OutputConfig(Strict):
    """Where runs go: ``<run_root>/<name>-<UTC timestamp>/`` unless ``--run-dir`` is given."""

    run_root: SafePath = Path("runs")


class WorkflowConfig(Strict):
    """A complete, validated training workflow (stored resolved as ``workflow.yaml`` in each run)."""

    name: str = Field("medmm", pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)
    seed: int = Field(0, ge=0, lt=2**32)
    data: DataConfig = Field(default_factory=DataConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    network: ModelConfig = Field(default_factory=ModelConfig)
    ontology: OntologyConfig = Field(default_factory=OntologyConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    inferer: InfererConfig = Field(default_factory=InfererConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> WorkflowConfig:
        pw = self.loss.pos_weight
        if isinstance(pw, list) and len(pw) != len(self.data.labels):
            raise ValueError(f"loss.pos_weight has {len(pw)} values but data.labels has {len(self.data.labels)}")
        if self.preprocessing.roi_size is None:
            raise ValueError("preprocessing.roi_size is required for training (batches need one size)")
        radiomics = self.network.radiomics
        if radiomics is not None and radiomics.intensity_hu is not None:
            self._within_window("intensity_hu", radiomics.intensity_hu)
        if radiomics is not None and radiomics.context is not None:
            self._within_window("context.hu", radiomics.context.hu)
            self._within_window("context.context_hu", radiomics.context.context_hu)
        return self

    def _within_window(self, key: str, hu: list[float]) -> None:
        """Histogram bins must lie inside the HU window when the window clips the image."""
        lo, hi = self.preprocessing.hu_window
        if self.preprocessing.clip and (hu[0] < lo or hu[-1] > hi):
            raise ValueError(f"network.radiomics.{key} spans [{hu[0]:g}, {hu[-1]:g}] HU but "
                             f"preprocessing.hu_window [{lo:g}, {hi:g}] clips the image to a smaller range")

    @property
    def resolved_inferer(self) -> InfererConfig:
        """The inferer with its ROI resolved (``preprocessing.roi_size`` when unset)."""
        return self.inferer.resolved(self.preprocessing.roi_size)

    def to_yaml_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (paths as strings, tuples as lists)."""
        return self.model_dump(mode="json")
