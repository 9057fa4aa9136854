"""The image path: the function ONNX, TorchScript and the MONAI bundle export.

``image [B, C, X, Y, Z] (preprocessed) → raw probabilities [B, L]``: the encoder's feature map
(CNN + histogram channels) → pooled embedding → fusion head → sigmoid. The fusion head also reads
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

import torch
from torch import nn

from medmm.errors import MedmmInputError


class ImagePath(nn.Module):
    """``image → raw probabilities`` of a loaded fp32 ``MedMM`` (see module docstring)."""

    def __init__(self, model: nn.Module, text_embedding: torch.Tensor | None):
        super().__init__()
        # only the parts on the path (MedMM.feature_map/embed/classify delegate to them): the report
        # LM's tied embeddings would otherwise stop torch.jit.trace
        self.image_encoder = _untied(model.image_encoder).eval()
        self.fusion = _untied(model.fusion).eval()
        self.labels = list(model.labels)
        self.register_buffer("text_embedding", None if text_embedding is None else text_embedding.detach().clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pooled, tokens = self.image_encoder.embed(self.image_encoder.feature_map(image))
        text = None if self.text_embedding is None else self.text_embedding.expand(image.shape[0], -1)
        return torch.sigmoid(self.fusion(pooled, text, tokens))


def _untied(module: nn.Module) -> nn.Module:
    """``module`` (in place) with no two buffers/parameters being one tensor (torch.jit.trace refuses
    sharing; e.g. the context histogram registers the same centres for each neighbourhood size).
    Not a deep copy: the encoder's feature function is a closure over its own backbone."""
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


def load_image_path(run_dir) -> tuple[ImagePath, dict]:
    """The run's image path and its ``medmm.json`` (refuses int8 runs: export their fp32 source).

    Raises:
        MedmmInputError: not a run dir, or an int8-quantised run.
    """
    from medmm.deploy.provenance import history
    from medmm.inference import load_model

    predictor = load_model(run_dir, device="cpu")
    if any(h.get("action") == "quantised" for h in history(predictor.meta)):
        raise MedmmInputError(run_dir, "is int8-quantised; export its fp32 source run (a pruned or distilled run "
                              "exports fine) - ONNX Runtime's int8 Conv3d measured slower than fp32 here")
    text = None
    if getattr(predictor.model, "uses_text", False):
        with torch.inference_mode():
            text = predictor.model.encode_text(predictor.texts_for([""], [None])).clone()
    return ImagePath(predictor.model, text).eval(), predictor.meta


def example_input(meta: dict) -> torch.Tensor:
    """A deterministic ROI-sized example image for tracing and parity checks."""
    prep = meta.get("preprocessing") or (meta.get("workflow") or {}).get("preprocessing") or {}
    roi = [int(s) for s in prep.get("roi_size") or (32, 32, 32)]
    channels = int(((meta.get("model") or {}).get("image_encoder") or {}).get("in_channels", 1))
    return torch.rand(1, channels, *roi, generator=torch.Generator().manual_seed(0))
