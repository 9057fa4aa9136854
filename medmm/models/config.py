"""Import path kept for the network schemas, which live in `medmm.config.network`."""

from medmm.config.network import (  # noqa: F401
    DEFAULT_TEXT_ENCODER,
    FusionConfig,
    ImageEncoderConfig,
    ModelConfig,
    NetworkDerived,
    ReportGeneratorConfig,
    TextEncoderConfig,
)
from medmm.config.radiomics import ContextHistogramConfig, RadiomicsConfig  # noqa: F401
