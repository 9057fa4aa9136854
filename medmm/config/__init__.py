"""Every schema medmm reads, in one package (pydantic; unknown keys, NaN/inf and absurd sizes refused).

- `workflow`: `WorkflowConfig` (data, optimisation, training, output) — one YAML file per run.
- `network`: `ModelConfig` (image/text encoders, report generator, fusion) and `NetworkDerived`.
- `radiomics`: `RadiomicsConfig` (``network.radiomics``: the optional HU-histogram branch).
- `preprocessing`: `PreprocessingConfig`, `AugmentationConfig` and the HU ↔ intensity maps.
- `inferer`: `InfererConfig` (sliding window).
- `loading`: `load_workflow` (YAML + overrides → validated config; one-line `MedmmConfigError`).

A serving schema (``medmm serve``) belongs here too, next to these. The run-dir schema that
combines them with training results is `medmm.models.checkpoint.RunMeta`.

>>> cfg = load_workflow("workflows/ct_chest_demo.yaml", ["training.epochs=2"])  # doctest: +SKIP
>>> cfg.training.epochs                                                          # doctest: +SKIP
2
"""

from __future__ import annotations

from medmm.config.base import SafePath, Strict
from medmm.config.inferer import InfererConfig
from medmm.config.loading import apply_overrides, format_validation_error, load_workflow, parse_overrides
from medmm.config.network import (
    FusionConfig,
    ImageEncoderConfig,
    ModelConfig,
    NetworkDerived,
    ReportGeneratorConfig,
    TextEncoderConfig,
)
from medmm.config.radiomics import ContextHistogramConfig, RadiomicsConfig
from medmm.config.preprocessing import AugmentationConfig, PreprocessingConfig, hu_to_intensity, hu_to_intensity_eps
from medmm.config.workflow import (
    AdversarialConfig,
    CTRateSource,
    DataConfig,
    EarlyStoppingConfig,
    LossConfig,
    ManifestSource,
    OntologyConfig,
    OptimizerConfig,
    OutputConfig,
    SchedulerConfig,
    SyntheticSource,
    TextConfig,
    TrainingConfig,
    WorkflowConfig,
)

__all__ = [
    "AdversarialConfig", "AugmentationConfig", "CTRateSource", "ContextHistogramConfig", "DataConfig",
    "EarlyStoppingConfig", "FusionConfig", "LossConfig", "ManifestSource", "OntologyConfig", "OptimizerConfig",
    "SchedulerConfig", "SyntheticSource",
    "ImageEncoderConfig", "InfererConfig", "ModelConfig", "NetworkDerived", "OutputConfig", "PreprocessingConfig", "RadiomicsConfig",
    "ReportGeneratorConfig", "SafePath", "Strict", "TextConfig", "TextEncoderConfig", "TrainingConfig",
    "WorkflowConfig", "apply_overrides", "format_validation_error", "hu_to_intensity", "hu_to_intensity_eps",
    "load_workflow", "parse_overrides",
]
