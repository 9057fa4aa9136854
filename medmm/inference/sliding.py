"""Image feature map of a whole volume: one direct pass, or MONAI sliding-window stitching.

The image encoder is fully convolutional, so the feature map of a volume larger than the
training ROI is the stitched feature maps of ROI-sized windows. MONAI's
:class:`~monai.inferers.SlidingWindowInferer` does the windowing, blending and the rescaling of
window positions to the (down-sampled) feature grid; with ``sw_device="cuda"`` and
``device="cpu"`` the windows run on the GPU while the stitched map lives in host memory, so a
volume that does not fit on the device still runs. Settings: the run's resolved
`medmm.config.InfererConfig` (``RunMeta.inferer``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import SlidingWindowInferer

from medmm.config.inferer import InfererConfig


def needs_sliding_window(spatial_shape: Sequence[int], roi_size: Sequence[int]) -> bool:
    """True when any spatial dimension exceeds the ROI (a direct pass would differ from training)."""
    return any(int(s) > int(r) for s, r in zip(spatial_shape, roi_size))


def make_inferer(
    settings: InfererConfig,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
) -> SlidingWindowInferer:
    """Build the MONAI inferer; ``sw_device`` runs the windows, ``device`` holds the stitched map."""
    return SlidingWindowInferer(
        roi_size=settings.roi_size,
        sw_batch_size=settings.sw_batch_size,
        overlap=settings.overlap,
        mode=settings.mode,
        sigma_scale=settings.sigma_scale,
        padding_mode=settings.padding_mode,
        sw_device=sw_device,
        device=device,
    )


def compute_feature_map(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    settings: InfererConfig,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    force_sliding: bool = False,
) -> torch.Tensor:
    """Feature map ``[B, C, x, y, z]`` of ``image`` ``[B, 1, X, Y, Z]``.

    A volume that fits in the ROI gets one direct pass (exactly what training saw); a larger one
    is stitched by :func:`make_inferer`'s inferer.

    Args:
        feature_fn: the encoder's ``feature_map`` (fully convolutional).
        image: preprocessed image batch; may live on the CPU even when ``sw_device`` is a GPU.
        settings: ROI, overlap, blend mode, window batch size.
        sw_device: where windows run (default: the image's device).
        device: where the stitched map is kept (default: the image's device).
        force_sliding: use the inferer even when the volume fits (tests compare both paths).

    Returns:
        The stitched (or direct) feature map on ``device``.
    """
    sw_device = torch.device(sw_device) if sw_device is not None else image.device
    device = torch.device(device) if device is not None else image.device
    if not force_sliding and not needs_sliding_window(image.shape[2:], settings.roi_size):
        return feature_fn(image.to(sw_device)).to(device)
    inferer = make_inferer(settings, sw_device=sw_device, device=device)
    if torch.is_grad_enabled():
        # MONAI blends each window's output in place; a clone keeps the encoder's own output
        # (needed by its backward, e.g. after an in-place ReLU) intact, so stitching stays
        # differentiable for adversarial attacks.
        return inferer(image, lambda window: feature_fn(window).clone())
    return inferer(image, feature_fn)
