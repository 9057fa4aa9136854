"""The image path: the function ONNX, TorchScript and the MONAI bundle export.

``image [B, C, X, Y, Z] (preprocessed) → raw probabilities [B, L]``: the encoder's feature map
(CNN + histogram channels) → pooled embedding → fusion head → per-finding calibration
temperature (the run's ``calibration``, as the predictor applies it) → sigmoid. The fusion head also reads
text (generated report + indication, per the run's ``text`` settings); an exported model has no
report generator or text encoder, so the image path fixes that text to what the run gives the head
for a scan *without* indication and *without* a report (``fusion_text("", "")``), embedded once at
export and stored in the graph as a constant. For a run whose head reads the indication only (the
demo) this is exactly its prediction for a scan without indication; for a run that reads
generated reports it is the image-only prediction, not the full pipeline's. Probabilities are raw
(before the ontology consistency operator) and one pass covers the whole input (no sliding
window): give it the ROI-sized image that the run's preprocessing produces.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medmm.errors import MedmmInputError


class ImagePath(nn.Module):
    """``image → raw probabilities`` of a loaded fp32 ``MedMM`` through `MedMM.predict_step` with
    the fixed text embedding (see module docstring)."""

    def __init__(self, model: nn.Module, text_embedding: torch.Tensor | None,
                 temperature: torch.Tensor | None = None):
        super().__init__()
        self.model = _untied(model).eval()
        self.labels = list(model.labels)
        self.register_buffer("text_embedding", None if text_embedding is None else text_embedding.detach().clone())
        temps = torch.ones(len(self.labels)) if temperature is None else temperature.detach().clone().float()
        self.register_buffer("temperature", temps)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.text_embedding is None:  # image-only head: no text at all
            step = self.model.predict_step(image, generate=False, use_generated_report=False, use_indication=False)
        else:
            step = self.model.predict_step(image, text_emb=self.text_embedding.expand(image.shape[0], -1))
        return torch.sigmoid(step.logits / self.temperature)


def _untied(module: nn.Module) -> nn.Module:
    """``module`` (in place) with no two buffers/parameters being one tensor: torch.jit.trace refuses
    sharing (the report LM's tied embeddings, the context histogram's shared centres). Not a deep
    copy: the encoder's feature function is a closure over its own backbone."""
    seen: set[int] = set()
    for owner in module.modules():
        for name, tensor in list(owner._buffers.items()) + list(owner._parameters.items()):
            if tensor is None:
                continue
            if id(tensor) in seen:
                if name in owner._buffers:
                    owner._buffers[name] = tensor.clone()
                else:
                    owner._parameters[name] = nn.Parameter(tensor.detach().clone(), tensor.requires_grad)
            seen.add(id(tensor))
    return module


def load_image_path(run_dir) -> tuple[ImagePath, Any]:
    """The run's image path and its `RunMeta` (refuses int8 runs: export their fp32 source).

    Raises:
        MedmmInputError: not a run dir, or an int8-quantised run.
    """
    from medmm.deploy.provenance import history
    from medmm.inference import load_model
    from medmm.models.fusion import fusion_texts

    predictor = load_model(run_dir, device="cpu")
    if any(h.get("action") == "quantised" for h in history(predictor.meta)):
        raise MedmmInputError(run_dir, "is int8-quantised; export its fp32 source run (a pruned or distilled run "
                              "exports fine) - ONNX Runtime's int8 Conv3d measured slower than fp32 here")
    text = None
    if getattr(predictor.model, "uses_text", False):
        texts = fusion_texts([""], [None], predictor.use_generated_report, predictor.use_indication)
        with torch.inference_mode():
            text = predictor.model.encode_text(texts).clone()
    return ImagePath(predictor.model, text, predictor.calibration.temperature).eval(), predictor.meta


def example_input(meta: Any) -> torch.Tensor:
    """A deterministic ROI-sized example image for tracing and parity checks."""
    roi = [int(s) for s in (meta.preprocessing.roi_size or (32, 32, 32))]
    channels = int(meta.network.image_encoder.in_channels)
    return torch.rand(1, channels, *roi, generator=torch.Generator().manual_seed(0))
