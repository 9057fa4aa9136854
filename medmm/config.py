"""The workflow schema: one YAML file describes data, preprocessing, network and training.

Sections follow MONAI bundle vocabulary where it fits (``network``, ``preprocessing``,
``optimizer``, ``inferer``). The YAML is data: it is read with ``yaml.safe_load`` (a
``!!python/...`` tag is an error, never executed) and validated by pydantic models that forbid
unknown keys, so a typo is reported with the file, the dotted key path and a "did you mean".

>>> cfg = load_workflow("workflows/ct_chest_demo.yaml", ["training.epochs=2"])  # doctest: +SKIP
>>> cfg.training.epochs                                                          # doctest: +SKIP
2
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medmm.data.transforms import PreprocessingConfig, hu_to_intensity
from medmm.errors import MedmmConfigError
from medmm.labels import CT_RATE_FINDINGS
from medmm.models.config import ModelConfig

__all__ = ["WorkflowConfig", "load_workflow", "parse_overrides", "apply_overrides", "format_validation_error"]


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------- data
class SyntheticSource(_Strict):
    """Built-in synthetic chest phantoms (`medmm.data.ensure_synthetic`), generated once and cached."""

    n: int = Field(96, ge=4, description="number of cases")
    size: int = Field(64, ge=8, description="cube edge in voxels")
    seed: int = 0
    cache_dir: Path = Path("~/.cache/medmm/synthetic")
    format: Literal["nifti", "dicom", "both"] = "nifti"
    workers: int = Field(1, ge=1, description="processes generating the phantoms (output does not depend on it)")
    counterfactuals: int = Field(0, ge=0, description="re-renderings per training scan with one finding switched")


class ManifestSource(_Strict):
    """A CSV/JSONL manifest (`medmm.data.read_manifest`); relative paths in it are relative to it."""

    path: Path


class CTRateSource(_Strict):
    """The CT-RATE release layout (`medmm.data.read_ctrate`)."""

    volumes_dir: Path
    labels_csv: Path
    reports_csv: Path


class DataConfig(_Strict):
    """Where cases come from and which findings are learned.

    ``source`` picks one of the sub-sections; cases without a manifest ``split`` are split by
    patient (``val_fraction`` / ``test_fraction``, seeded by the workflow seed).
    """

    source: Literal["synthetic", "manifest", "ctrate"] = "synthetic"
    synthetic: SyntheticSource | None = None
    manifest: ManifestSource | None = None
    ctrate: CTRateSource | None = None
    labels: list[str] = Field(default_factory=lambda: list(CT_RATE_FINDINGS))
    eval_labels: list[str] | None = Field(None, description="labels in the headline metric (None = all)")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _source_section(self) -> DataConfig:
        if self.source == "synthetic" and self.synthetic is None:
            self.synthetic = SyntheticSource()
        if getattr(self, self.source) is None:
            raise ValueError(f"data.source is {self.source!r} but the data.{self.source} section is missing")
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError("labels must be a non-empty list without duplicates")
        unknown = sorted(set(self.eval_labels or []) - set(self.labels))
        if unknown:
            raise ValueError(f"eval_labels not among labels: {unknown}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


# ------------------------------------------------------------------------------- optimisation
class OntologyConfig(_Strict):
    """Ontology used for the knowledge-regularisation (KR) loss and stored consistency."""

    path: Path | None = Field(None, description="Turtle file; None = medmm's chest_ct.ttl")
    kr_weight: float = Field(0.1, ge=0)
    kr_form: Literal["hinge", "product"] = "hinge"


class LossConfig(_Strict):
    """BCE settings and the weight of the report language-model loss."""

    pos_weight: float | list[float] | Literal["auto"] | None = Field(
        None, description="BCE positive weight: one number, one per label, 'auto' = neg/pos on train, or None")
    lm_weight: float = Field(0.1, ge=0)


class OptimizerConfig(_Strict):
    """AdamW (decoupled weight decay)."""

    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(1.0, gt=0)


class SchedulerConfig(_Strict):
    """Per-optimiser-step learning-rate schedule: linear warmup then cosine (or constant)."""

    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class EarlyStoppingConfig(_Strict):
    """Stop when validation macro AUROC has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int | None = Field(None, ge=1, description="None = never stop early")
    min_delta: float = Field(0.0, ge=0)


class AdversarialConfig(_Strict):
    """Adversarial training: perturb a fraction of batches within ``eps_hu`` HU (FGSM or PGD)."""

    method: Literal["none", "fgsm", "pgd"] = "none"
    eps_hu: float = Field(4.0, ge=0)
    steps: int = Field(3, ge=1)
    step_size_hu: float | None = Field(None, gt=0, description="PGD step; None = 2.5 * eps / steps")
    fraction: float = Field(0.5, ge=0, le=1, description="share of training batches made adversarial")


class TextConfig(_Strict):
    """Text given to the fusion head: only what exists at inference (never the true report)."""

    use_generated_report: bool = True
    use_indication: bool = True
    refresh_every: int = Field(1, ge=1, description="regenerate training-case reports every N epochs")


class TrainingConfig(_Strict):
    """The loop: epochs, batching, AMP, caching, label hiding, thresholds, adversarial, text."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    amp: bool = Field(True, description="mixed precision; only ever used on CUDA")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    num_workers: int = Field(0, ge=0)
    cache: Literal["memory", "disk", "none"] = "memory"
    cache_dir: Path | None = Field(None, description="for cache: disk; None = <run_dir>/cache")
    histogram_cache_mb: int = Field(2048, ge=0, description="CPU memory for the encoder's histogram channels of "
                                    "un-augmented images, computed once per case (0 = recompute every step)")
    label_fraction: float = Field(1.0, gt=0, le=1, description="share of train (case, label) entries BCE sees")
    threshold_rule: Literal["f1", "youden"] = "f1"
    deterministic: bool = True
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    text: TextConfig = Field(default_factory=TextConfig)


# ------------------------------------------------------------------------------ inference/out
class InfererConfig(_Strict):
    """Sliding-window inference (MONAI ``SlidingWindowInferer`` vocabulary), stored with the run."""

    roi_size: tuple[int, int, int] | None = Field(None, description="None = preprocessing.roi_size")
    sw_batch_size: int = Field(1, ge=1)
    overlap: float = Field(0.25, ge=0, lt=1)
    mode: Literal["gaussian", "constant"] = "gaussian"
    sw_device: str | None = None
    device: str | None = None


class OutputConfig(_Strict):
    """Where runs go: ``<run_root>/<name>-<UTC timestamp>/`` unless ``--run-dir`` is given."""

    run_root: Path = Path("runs")


class WorkflowConfig(_Strict):
    """A complete, validated training workflow (stored resolved as ``workflow.yaml`` in each run)."""

    name: str = Field("medmm", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
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
        if self.inferer.roi_size is None:
            self.inferer.roi_size = self.preprocessing.roi_size
        encoder = self.network.image_encoder
        if encoder.histogram_hu is not None:  # HU -> the intensities the network sees
            encoder.histogram_centres = self._centres("histogram_hu", encoder.histogram_hu)
        context = encoder.context_histogram
        if context is not None:
            context.centres = self._centres("context_histogram.hu", context.hu)
            context.context_centres = self._centres("context_histogram.context_hu", context.context_hu)
        return self

    def _centres(self, key: str, hu: list[float]) -> list[float]:
        """Histogram centres in HU → network input units; an error if the window clips them."""
        lo, hi = self.preprocessing.hu_window
        if self.preprocessing.clip and (hu[0] < lo or hu[-1] > hi):
            raise ValueError(f"network.image_encoder.{key} spans [{hu[0]:g}, {hu[-1]:g}] HU but "
                             f"preprocessing.hu_window [{lo:g}, {hi:g}] clips the image to a smaller range")
        return [hu_to_intensity(h, self.preprocessing) for h in hu]

    def to_yaml_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (paths as strings, tuples as lists)."""
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------------------ loading
def parse_overrides(overrides: list[str] | None, where: str = "--set") -> dict[str, Any]:
    """Parse ``["a.b=c", ...]`` into ``{"a.b": value}``; values are YAML scalars/lists (safe_load)."""
    parsed: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise MedmmConfigError(where, f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise MedmmConfigError(where, f"{key}: value {raw!r} is not a YAML scalar/list ({_first_line(err)})") from None
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        parsed[key] = value
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], where: str = "--set") -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides applied (sections created as needed)."""
    import copy

    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise MedmmConfigError(where, f"{'.'.join(parts[:i + 1])} is a value, not a section, in override {dotted}")
            node = child
        node[parts[-1]] = value
    return out


def load_workflow(path: str | Path | dict[str, Any] | WorkflowConfig | None,
                  overrides: list[str] | dict[str, Any] | None = None) -> WorkflowConfig:
    """Read, override and validate a workflow.

    Args:
        path: a YAML file, an already-parsed dict, a `WorkflowConfig`, or None (all defaults).
        overrides: ``["training.epochs=2", ...]`` (values parsed as YAML) or ``{"training.epochs": 2}``.

    Returns:
        The validated `WorkflowConfig`.

    Raises:
        MedmmConfigError: unreadable file, invalid YAML (incl. ``!!python`` tags), an unknown key
            or a value of the wrong type — naming the file and the dotted key path.
    """
    where = "<workflow>"
    if isinstance(path, WorkflowConfig):
        raw: Any = path.model_dump(mode="json")
    elif isinstance(path, dict):
        raw = path
    elif path is None:
        raw = {}
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise MedmmConfigError(where, f"cannot read workflow ({err.strerror or err})") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise MedmmConfigError(where, f"not a valid data-only YAML workflow: {_first_line(err)}") from None
        raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise MedmmConfigError(where, f"a workflow must be a mapping of sections, got {type(raw).__name__}")
    if overrides:
        parsed = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        raw = apply_overrides(raw, parsed)
    try:
        return WorkflowConfig.model_validate(raw)
    except ValidationError as err:
        raise MedmmConfigError(where, format_validation_error(err)) from None


def format_validation_error(err: ValidationError, model: type[BaseModel] = WorkflowConfig) -> str:
    """One line: the first error's dotted key path and message (+ "did you mean"), and a count."""
    errors = err.errors()
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    dotted = ".".join(loc) or "<top>"
    if first["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"; did you mean {'.'.join(loc[:-1] + [close[0]])!r}?" if close else f"; allowed: {', '.join(allowed)}"
        message = f"{dotted}: unknown key{hint}"
    else:
        got = first.get("input")
        got_text = "" if isinstance(got, dict) or first["type"] == "missing" else f" (got {got!r:.60})"
        message = f"{dotted}: {first['msg']}{got_text}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (nested) pydantic model found by walking ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        cls = _model_class(current)
        if cls is None or part not in cls.model_fields:
            return []
        current = cls.model_fields[part].annotation
    cls = _model_class(current)
    return sorted(cls.model_fields) if cls is not None else []


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside ``annotation`` (unwrapping ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found is not None:
                return found
    return None


def _first_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text[:200]
