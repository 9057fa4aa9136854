"""Evidence maps with spatial resolution, and the test that says when a map localises nothing.

Today's Grad-CAM (``explain.gradcam_map``) reads the encoder's *last* feature map, which is 2×2×2
for a 64³ scan: it can only paint smooth gradients across the body, and for many findings it is
all zero. The methods here look at the image itself:

- ``gradcam-layer2`` / ``gradcam-layer3``: Grad-CAM (MONAI :class:`~monai.visualize.GradCAM`) on an
  earlier ResNet stage (8³ / 4³ for a 64³ scan), back-propagated from the finding's logit through
  the whole model (the radiomics branch included).
- ``saliency``: the magnitude of the finding logit's gradient with respect to each voxel of the
  input (Simonyan et al., ICLR 2014 workshop), smoothed with a Gaussian of ``SALIENCY_SIGMA``
  voxels so it describes regions rather than single voxels; one forward + backward pass.
- ``occlusion``: MONAI :class:`~monai.visualize.OcclusionSensitivity`, one forward pass per occluded
  block for all findings at once; the evidence is the drop of each finding's probability when a
  block is replaced by its own mean (texture and small lesions vanish, average density stays).

Which one is the default is decided by measurement (pointing game / energy in lesion on held-out
phantoms, ``docs/explanations.md``). :func:`localisation` is the honesty check: an empty or
flat map is reported as "no localised evidence", never drawn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Evidence methods: name -> ResNet stage hooked by Grad-CAM (None: not a layer Grad-CAM).
LAYER_METHODS: dict[str, str] = {"gradcam-layer2": "layer2", "gradcam-layer3": "layer3"}
METHODS: tuple[str, ...] = ("gradcam", *LAYER_METHODS, "saliency", "occlusion")
#: The method ``Predictor.predict`` explains with (chosen by the comparison in docs/explanations.md).
DEFAULT_METHOD = "saliency"

#: A map localises when at most this fraction of the volume reaches half its peak (a flat map: 1.0).
MAX_HALF_MAX_FRACTION = 0.25
#: ... and its peak is at least this many times its mean (a flat map: 1.0; an all-zero map: 0).
MIN_PEAK_TO_MEAN = 2.0

#: Saliency: Gaussian smoothing of the gradient magnitude, in voxels.
SALIENCY_SIGMA = 2.0

#: Occlusion: at most this many blocks per axis (64³ → 16³ blocks, 64 forward passes per scan).
OCCLUSION_BLOCKS = 4
OCCLUSION_BATCH = 8


class ImageHead(nn.Module):
    """image → logits through ``MedMM.predict_step`` with the prediction's fixed text embedding,
    so an explanation never re-generates or re-encodes the report."""

    def __init__(self, model: nn.Module, text_emb: torch.Tensor | None,
                 feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.model = model
        self.text_emb = None if text_emb is None else text_emb.detach().clone()
        self.feature_fn = feature_fn or self._direct

    def _direct(self, image: torch.Tensor) -> torch.Tensor:
        """One pass of the model's own feature map on the model's device."""
        param = next(self.model.parameters(), None)
        return self.model.feature_map(image if param is None else image.to(param.device))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        fmap = self.feature_fn(image)
        if self.text_emb is None:  # image-only model
            return self.model.predict_step(feature_map=fmap, generate=False, use_generated_report=False,
                                           use_indication=False).logits
        emb = self.text_emb.to(fmap.device).expand(fmap.shape[0], -1)
        return self.model.predict_step(feature_map=fmap, text_emb=emb).logits


def padded_to(image: torch.Tensor, min_shape: Sequence[int] | None) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``image`` ``[B, C, X, Y, Z]`` padded (centred, with its minimum: air after windowing) to at
    least ``min_shape`` voxels per axis, and the slices that crop a map back to ``image``.

    Backpropagating to the voxels of a volume smaller than the training ROI runs the encoder's
    pooling backward on degenerate sizes (1-2 voxels), which crashed the CPU kernels (a segfault,
    not an error) for a 5x6x8 input; training and a forward pass never see such sizes, because the
    inferer pads to the ROI the same way.
    """
    spatial = tuple(int(s) for s in image.shape[2:])
    want = tuple(max(s, int(m)) for s, m in zip(spatial, min_shape or spatial))
    if want == spatial:
        return image, tuple(slice(0, s) for s in spatial)
    before = [(w - s) // 2 for s, w in zip(spatial, want)]
    pads: list[int] = []
    for s, w, b in reversed(list(zip(spatial, want, before))):  # F.pad takes the last axis first
        pads += [b, w - s - b]
    padded = F.pad(image, pads, value=float(image.min()))
    return padded, tuple(slice(b, b + s) for b, s in zip(before, spatial))


def has_layer(model: nn.Module, layer: str) -> bool:
    """Whether the image encoder's backbone has a stage called ``layer`` (ResNet family)."""
    return isinstance(getattr(model.image_encoder.backbone, layer, None), nn.Module)


def layer_gradcam(model: nn.Module, image: torch.Tensor, text_emb: torch.Tensor | None, class_idx: int,
                  layer: str, min_shape: Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM of logit ``class_idx`` on backbone stage ``layer``, resized to the image; in [0, 1].

    Args:
        image: ``[1, 1, X, Y, Z]`` preprocessed image that fits the model in one pass.
        min_shape: pad smaller images to this size first (the ROI; see :func:`padded_to`).
    """
    from monai.visualize import GradCAM

    image, crop = padded_to(image, min_shape)
    was_training = model.training
    head = ImageHead(model, text_emb).eval()
    cam = GradCAM(nn_module=head, target_layers=f"model.image_encoder.backbone.{layer}")
    with torch.enable_grad():  # tensors made under inference_mode cannot enter autograd: clone
        x = image.detach().clone().float()
        heat = cam(x=x, class_idx=int(class_idx))  # [1, 1, X, Y, Z], upsampled and min-max normalised
    # break MONAI's hook-wrapper reference cycle (see explain.gradcam_map): no leak per call
    cam.nn_module.score = None
    cam.nn_module.activations.clear()
    cam.nn_module.gradients.clear()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    heat = heat.detach().float()
    if tuple(heat.shape[2:]) != tuple(image.shape[2:]):
        heat = F.interpolate(heat, size=tuple(image.shape[2:]), mode="trilinear", align_corners=False)
    return heat[0, 0][crop].clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)


def saliency_map(model: nn.Module, image: torch.Tensor, text_emb: torch.Tensor | None, class_idx: int,
                 feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 sigma: float = SALIENCY_SIGMA, min_shape: Sequence[int] | None = None) -> np.ndarray:
    """Smoothed ``|d logit / d voxel|`` of finding ``class_idx``, scaled to a maximum of 1 (a zero
    gradient stays all zero). ``feature_fn`` may be the sliding-window feature map: it is
    differentiable, so this works for volumes of any size; ``min_shape`` pads smaller ones to the
    ROI first (:func:`padded_to`)."""
    from scipy.ndimage import gaussian_filter

    image, crop = padded_to(image, min_shape)
    was_training = model.training
    head = ImageHead(model, text_emb, feature_fn).eval()
    with torch.enable_grad():
        x = image.detach().clone().float().requires_grad_(True)
        head(x)[0, int(class_idx)].backward()
    grad = x.grad.detach().abs()[0, 0][crop].cpu().numpy().astype(np.float32)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    smooth = gaussian_filter(grad, sigma=float(sigma), mode="constant")
    top = float(smooth.max())
    return (smooth / top if top > 0 else smooth).astype(np.float32)


def occlusion_drops(model: nn.Module, image: torch.Tensor, text_emb: torch.Tensor | None,
                    calibrate: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    blocks: int = OCCLUSION_BLOCKS) -> np.ndarray:
    """Probability drop of every finding when each block of the image is occluded.

    Returns:
        ``[L, X, Y, Z]`` float32: ``p(image) - p(image with the block around the voxel replaced by
        its mean)``, clipped at 0 (blocks whose removal *raises* the probability are no evidence).
        Costs ``blocks³`` forward passes, batched.
    """
    from monai.visualize import OcclusionSensitivity

    calibrate = calibrate or (lambda logits: logits)
    head = ImageHead(model, text_emb, feature_fn).eval()
    shape = tuple(int(s) for s in image.shape[2:])
    mask = tuple(max(1, -(-s // blocks)) for s in shape)  # ceil: blocks per axis, no overlap
    occ = OcclusionSensitivity(nn_module=head, mask_size=mask, n_batch=OCCLUSION_BATCH, verbose=False,
                               mode="mean_patch", overlap=0.0,
                               activate=lambda logits: torch.sigmoid(calibrate(logits)))
    x = image.detach().clone().float()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI's own indexing deprecation notices
        base = torch.sigmoid(calibrate(head(x)))[0]  # [L]
        occ_map, _ = occ(x)  # [1, L, X, Y, Z]
    drops = (base.view(-1, 1, 1, 1) - torch.as_tensor(occ_map)[0]).clamp_(min=0.0)
    return drops.cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class Localisation:
    """Whether a map points somewhere, and where (see :func:`localisation`)."""

    localised: bool
    reason: str
    peak: tuple[int, int, int] | None  # voxel index of the maximum; None when not localised
    peak_to_mean: float
    half_max_fraction: float

    def to_dict(self) -> dict:
        out = asdict(self)
        out["peak"] = None if self.peak is None else [int(v) for v in self.peak]
        out["peak_to_mean"] = round(float(self.peak_to_mean), 3)
        out["half_max_fraction"] = round(float(self.half_max_fraction), 4)
        return out


def localisation(heat: np.ndarray, within: np.ndarray | None = None) -> Localisation:
    """Decide whether ``heat`` is localised evidence (documented in ``docs/explanations.md``).

    A map is *not* evidence when it is non-finite, all (near) zero, or flat: more than
    :data:`MAX_HALF_MAX_FRACTION` of the voxels (of ``within``, e.g. the body, when given) reach half
    the peak, or the peak is less than :data:`MIN_PEAK_TO_MEAN` times the mean. Such maps are
    reported as "no localised evidence" and never drawn.
    """
    arr = np.asarray(heat, dtype=np.float32)
    region = arr if within is None or not np.any(within) else arr[np.asarray(within, bool)]
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return Localisation(False, "map is empty or not finite", None, 0.0, 1.0)
    peak_val = float(region.max()) if region.size else 0.0
    if peak_val <= 1e-6:
        return Localisation(False, "map is zero everywhere", None, 0.0, 1.0)
    mean = float(region.mean())
    ratio = peak_val / max(mean, 1e-12)
    half = float(np.mean(region >= 0.5 * peak_val))
    masked = arr if within is None or not np.any(within) else np.where(within, arr, -np.inf)
    peak = tuple(int(v) for v in np.unravel_index(int(np.argmax(masked)), arr.shape))
    if half > MAX_HALF_MAX_FRACTION or ratio < MIN_PEAK_TO_MEAN:
        why = (f"map is flat ({half:.0%} of the volume within half of its peak, "
               f"peak/mean {ratio:.1f})")
        return Localisation(False, why, None, ratio, half)
    return Localisation(True, "localised", peak, ratio, half)
