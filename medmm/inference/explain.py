"""Grad-CAM on the image encoder's feature map for one finding's logit, and the explainer.

MONAI's :class:`~monai.visualize.GradCAM` hooks a named layer of a module that maps an input to
class scores. Here that module is the model's *head* (pooling → fusion classifier) fed with the
already computed (possibly sliding-window stitched) feature map through an ``Identity`` layer, so
explaining a finding never re-runs the encoder over a large volume. The map is then resized to
the preprocessed image grid and returned as a :class:`medmm.io.Volume` with that grid's affine
(the preprocessed MetaTensor's, so it is placed in the input's world coordinates whatever crop,
resampling or reorientation preprocessing did); `to_input_grid` resamples it onto the input's own
voxel grid through the two affines.

Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from torch import nn

from medmm.inference.result import Explanation


class FeatureHead(nn.Module):
    """feature map (+ fixed text embedding) → logits through `MedMM.predict_step`, with a
    hookable ``features`` layer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.features = nn.Identity()
        self.model = model

    def forward(self, feature_map: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
        fmap = self.features(feature_map)
        if text_emb is None:  # image-only model: no text to generate or read
            return self.model.predict_step(feature_map=fmap, generate=False, use_generated_report=False,
                                           use_indication=False).logits
        return self.model.predict_step(feature_map=fmap, text_emb=text_emb).logits


def gradcam_map(
    model: nn.Module,
    feature_map: torch.Tensor,
    text_emb: torch.Tensor | None,
    class_idx: int,
    out_shape: tuple[int, int, int],
) -> np.ndarray:
    """Grad-CAM of logit ``class_idx`` resized to ``out_shape``; values in [0, 1].

    Args:
        model: the composed model (needs ``embed`` and ``classify``).
        feature_map: ``[1, C, x, y, z]`` encoder output (any device).
        text_emb: ``[1, T]`` text embedding used for the prediction being explained.
        class_idx: index of the finding's logit.
        out_shape: spatial shape of the preprocessed image.
    """
    # GradCAM restores the wrapper's train/eval mode afterwards, and a fresh module starts in train
    # mode: set eval explicitly so the model never leaves eval (BatchNorm would then fail/drift).
    was_training = model.training
    head = FeatureHead(model).eval()
    cam = GradCAM(nn_module=head, target_layers="features")
    # Tensors made under inference_mode cannot enter autograd: clone them as ordinary tensors.
    with torch.enable_grad():
        fm = feature_map.detach().clone().requires_grad_(True)
        emb = None if text_emb is None else text_emb.detach().clone()
        heat = cam(x=fm, class_idx=class_idx, text_emb=emb)  # [1, 1, x, y, z], normalised
    # MONAI's hook wrapper keeps the logits (whose autograd graph holds its own hooks) and the
    # cached maps: a reference cycle through C++ autograd nodes that the garbage collector cannot
    # see, so each call leaked its feature maps (~6 MB per report in `medmm serve`). Break it.
    cam.nn_module.score = None
    cam.nn_module.activations.clear()
    cam.nn_module.gradients.clear()
    heat = heat.detach().float()
    heat = F.interpolate(heat, size=tuple(int(s) for s in out_shape), mode="trilinear", align_corners=False)
    heat = heat[0, 0].clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return heat


def to_input_grid(heat: np.ndarray, heat_affine: np.ndarray, input_shape: tuple[int, ...],
                  input_affine: np.ndarray) -> np.ndarray:
    """Resample a map on the preprocessed grid onto the input volume's voxel grid (0 outside).

    Both affines map voxel indices to the same RAS world space, so input voxel ``i`` lies at
    preprocessed index ``inv(heat_affine) @ input_affine @ i``; trilinear interpolation there
    undoes reorientation, resampling and cropping at once.
    """
    from scipy.ndimage import affine_transform

    mapping = np.linalg.inv(np.asarray(heat_affine, dtype=np.float64)) @ np.asarray(input_affine, dtype=np.float64)
    out = affine_transform(np.asarray(heat, dtype=np.float32), mapping[:3, :3], offset=mapping[:3, 3],
                           output_shape=tuple(int(s) for s in input_shape), order=1, mode="constant", cval=0.0)
    return out.astype(np.float32)


class GradCamExplainer:
    """Callable ``finding -> Explanation`` attached to a :class:`~medmm.inference.result.Result`.

    Holds the prediction's feature map, text embedding and (for the image-level methods of
    ``medmm.inference.evidence``) the preprocessed image. ``method`` picks the evidence map
    (:data:`~medmm.inference.evidence.METHODS`); a layer Grad-CAM falls back to the feature-map
    Grad-CAM when the image needs a sliding window or the backbone has no such stage (the map's
    ``meta["method"]`` says which ran). Occlusion maps of all findings come from one set of passes
    and are cached.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_map: torch.Tensor,
        text_emb: torch.Tensor | None,
        labels: list[str],
        image_shape: tuple[int, int, int],
        image_affine: np.ndarray,
        findings: dict[str, dict[str, Any]],
        details_fn: Any = None,
        input_grid: tuple[tuple[int, ...], np.ndarray] | None = None,
        *,
        image: torch.Tensor | None = None,
        method: str = "gradcam",
        sliding: bool = False,
        calibrate: Any = None,
        feature_fn: Any = None,
        site_check_fn: Any = None,
        min_shape: tuple[int, ...] | None = None,
    ):
        from medmm.inference.evidence import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown evidence method {method!r}; choose one of {', '.join(METHODS)}")
        self.model = model
        self.feature_map = feature_map.detach()
        self.text_emb = None if text_emb is None else text_emb.detach()
        self.labels = list(labels)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.image_affine = np.asarray(image_affine, dtype=np.float64)
        self.findings = findings
        self.details_fn = details_fn
        self.input_grid = input_grid
        self.image = None if image is None else image.detach()
        self.method = method
        self.sliding = bool(sliding)
        self.calibrate = calibrate
        self.feature_fn = feature_fn
        self.site_check_fn = site_check_fn
        self.min_shape = min_shape  # the ROI: input-gradient methods pad smaller images to it
        self._occlusion: np.ndarray | None = None

    def resolved_method(self, method: str | None = None) -> str:
        """The method that actually runs for ``method`` (default: this explainer's)."""
        from medmm.inference.evidence import LAYER_METHODS, has_layer

        method = method or self.method
        if method in LAYER_METHODS and (self.image is None or self.sliding
                                        or not has_layer(self.model, LAYER_METHODS[method])):
            return "gradcam"
        if method in ("occlusion", "saliency") and self.image is None:
            return "gradcam"
        return method

    def _map(self, finding: str, method: str) -> np.ndarray:
        from medmm.inference.evidence import LAYER_METHODS, layer_gradcam, occlusion_drops, saliency_map

        idx = self.labels.index(finding)
        if method in LAYER_METHODS:  # direct pass only (resolved_method): the image goes to the model's device
            device = next(self.model.parameters()).device
            return layer_gradcam(self.model, self.image.to(device), self.text_emb, idx, LAYER_METHODS[method],
                                 self.min_shape)
        if method == "saliency":
            return saliency_map(self.model, self.image, self.text_emb, idx, self.feature_fn,
                                min_shape=self.min_shape)
        if method == "occlusion":
            if self._occlusion is None:
                self._occlusion = occlusion_drops(self.model, self.image, self.text_emb, self.calibrate,
                                                  self.feature_fn)
            drop = self._occlusion[idx]
            top = float(drop.max())
            return (drop / top if top > 0 else drop).astype(np.float32)
        return gradcam_map(self.model, self.feature_map, self.text_emb, idx, self.image_shape)

    def heatmap(self, finding: str, grid: str = "model", method: str | None = None):
        """Evidence map of ``finding`` as a :class:`medmm.io.Volume` in RAS world coordinates.

        ``grid="model"``: on the preprocessed grid (with its affine); ``grid="input"``: resampled
        onto the input scan's voxel grid (same shape and affine as the loaded `Volume`).
        ``method``: override this explainer's evidence method.
        """
        from medmm.io import Volume

        used = self.resolved_method(method)
        heat = self._map(finding, used)
        meta = {"kind": "gradcam" if used.startswith("gradcam") else used, "method": used, "finding": finding}
        if grid == "model":
            return Volume(array=heat, affine=self.image_affine.copy(), meta=meta)
        if grid != "input" or self.input_grid is None:
            raise ValueError(f"grid must be 'model' or 'input' (with the input's geometry known), got {grid!r}")
        shape, affine = self.input_grid
        return Volume(array=to_input_grid(heat, self.image_affine, shape, affine), affine=affine.copy(), meta=meta)

    def __call__(self, finding: str, method: str | None = None) -> Explanation:
        from medmm.inference.evidence import localisation

        row = self.findings[finding]
        heatmap = self.heatmap(finding, method=method)
        details = self.details_fn(finding) if self.details_fn is not None else {}
        loc = localisation(np.asarray(heatmap.array))
        site = self.site_check_fn(finding, np.asarray(heatmap.array), loc) if self.site_check_fn else None
        return Explanation(
            finding=finding,
            heatmap=heatmap,
            probability=float(row["probability"]),
            ontology_path=list(row.get("ontology_path") or []),
            details=details,
            method=str(heatmap.meta.get("method", "gradcam")),
            localisation=loc,
            site_check=site,
        )


def intensity_to_hu(image: np.ndarray, preprocessing: Any) -> np.ndarray:
    """Undo the preprocessing's intensity scaling (HU window → intensity range) of a model image."""
    (a_min, a_max), (b_min, b_max) = preprocessing.hu_window, preprocessing.intensity_range
    scale = (float(a_max) - float(a_min)) / max(float(b_max) - float(b_min), 1e-12)
    return (np.asarray(image, dtype=np.float32) - float(b_min)) * scale + float(a_min)


def site_checker(image: np.ndarray, affine: np.ndarray, preprocessing: Any, ontology: Any):
    """``(finding, heat, localisation) -> site check`` on the coarse anatomy map of ``image``
    (a preprocessed model image), computed once on first use (``medmm.inference.anatomy``)."""
    from medmm.inference.anatomy import anatomy_map, site_check

    spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0))
    state: dict[str, Any] = {}

    def check(finding: str, heat: np.ndarray, loc: Any) -> dict:
        if "map" not in state:
            state["map"] = anatomy_map(intensity_to_hu(image, preprocessing), spacing)
        site = ontology.anatomical_site(finding) if ontology is not None else None
        return site_check(finding, site, heat, state["map"], bool(loc.localised), ontology)

    return check
