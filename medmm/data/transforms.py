"""MONAI preprocessing and augmentation pipelines built from one `PreprocessingConfig`.

Training, inference and evaluation all preprocess through this module, so a model never sees
images prepared differently from the ones it was trained on. The pipeline is composed of MONAI
dictionary transforms (key ``"image"``): orientation to RAS, resampling to a target spacing, an HU
window scaled to a fixed intensity range, optional foreground crop, optional fit to a region of
interest, then (training only) seeded random augmentation.

>>> cfg = PreprocessingConfig(spacing=(1.5, 1.5, 1.5), hu_window=(-1000, 1000))
>>> hu_to_intensity_eps(4.0, cfg)
0.002
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medmm.config.preprocessing import (  # noqa: F401  (re-exported: the pipelines' settings)
    AugmentationConfig,
    PreprocessingConfig,
    hu_to_intensity,
    hu_to_intensity_eps,
)

if TYPE_CHECKING:  # pragma: no cover
    from medmm.io import Volume


def _foreground_selector(threshold: float):
    """A picklable ``select_fn`` for ``CropForegroundd`` (MONAI expects a callable)."""
    return _Above(threshold)


class _Above:
    """``x > threshold`` as a picklable callable (lambdas break multi-process data loading)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, x: Any) -> Any:
        return x > self.threshold


def volume_to_metatensor(volume: Volume) -> torch.Tensor:
    """A channel-first ``MetaTensor [1, X, Y, Z]`` carrying the volume's RAS affine."""
    from monai.data import MetaTensor

    array = np.ascontiguousarray(volume.array, dtype=np.float32)[None]
    return MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(volume.affine, dtype=torch.float64),
                      meta={"space": "RAS"})


def deterministic_transforms(cfg: PreprocessingConfig, fit_roi: bool, keys: str = "image",
                             track_meta: bool = False) -> list:
    """The deterministic part of the pipeline (cacheable): orient, resample, window, crop, fit.

    Items must already hold a MetaTensor with its affine (`volume_to_metatensor`, or
    `medmm.data.dataset.LoadVolumed` for paths).

    Args:
        cfg: preprocessing settings.
        fit_roi: bring images to ``cfg.roi_size`` (training batches need one size).
        keys: the image key.
        track_meta: keep the output a MetaTensor whose affine follows every step (inference);
            training batches drop it (plain tensors collate and cache faster).
    """
    from monai.transforms import (
        CropForegroundd,
        EnsureTyped,
        Orientationd,
        Resized,
        ResizeWithPadOrCropd,
        ScaleIntensityRanged,
        Spacingd,
    )

    steps: list = [Orientationd(keys=keys, axcodes=cfg.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if cfg.spacing is not None:
        steps.append(Spacingd(keys=keys, pixdim=cfg.spacing, mode=cfg.interpolation, dtype=np.float32))
    (a_min, a_max), (b_min, b_max) = cfg.hu_window, cfg.intensity_range
    steps.append(ScaleIntensityRanged(keys=keys, a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=cfg.clip))
    if cfg.crop_foreground:
        steps.append(CropForegroundd(keys=keys, source_key=keys, margin=cfg.foreground_margin, allow_smaller=True,
                                     select_fn=_foreground_selector(hu_to_intensity(cfg.foreground_hu, cfg))))
    if fit_roi and cfg.roi_size is not None:
        if cfg.fit == "resize":
            steps.append(Resized(keys=keys, spatial_size=cfg.roi_size, mode="trilinear"))
        else:
            steps.append(ResizeWithPadOrCropd(keys=keys, spatial_size=cfg.roi_size, constant_values=b_min))
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=track_meta))
    return steps


def augmentation_transforms(cfg: PreprocessingConfig, keys: str = "image") -> list:
    """Random training augmentations (MONAI ``Rand*d``; seeded through ``set_random_state``)."""
    from monai.transforms import RandAffined, RandFlipd, RandGaussianNoised

    aug = cfg.augmentation
    steps: list = []
    if aug.flip_prob > 0:
        steps += [RandFlipd(keys=keys, prob=aug.flip_prob, spatial_axis=axis) for axis in aug.flip_axes]
    if aug.affine_prob > 0:
        rot = float(np.deg2rad(aug.rotate_deg))
        steps.append(RandAffined(keys=keys, prob=aug.affine_prob, rotate_range=(rot, rot, rot),
                                 scale_range=(aug.scale,) * 3, translate_range=(aug.translate_vox,) * 3,
                                 padding_mode="border", spatial_size=cfg.roi_size))
    if aug.noise_prob > 0:
        std = hu_to_intensity_eps(aug.noise_std_hu, cfg)
        steps.append(RandGaussianNoised(keys=keys, prob=aug.noise_prob, std=std))
    return steps


def preprocess_volume(volume: Volume, cfg: PreprocessingConfig) -> torch.Tensor:
    """The exact inference-time preprocessing of one volume.

    Orientation, spacing, HU window and (if configured) foreground crop, as in training; the image
    is fitted to ``roi_size`` only when ``cfg.fit_at_inference`` is set (otherwise a sliding window
    covers the whole volume). Never random.

    Args:
        volume: a `medmm.io.Volume` (HU, RAS affine).
        cfg: the run's preprocessing (``PreprocessingConfig`` or its dict).

    Returns:
        float32 ``MetaTensor [1, X, Y, Z]`` in normalised intensity units whose ``affine`` maps
        its voxels to the input's RAS world coordinates (MONAI updates it through reorientation,
        resampling, cropping and padding), so outputs on this grid can be placed in the input.
    """
    from monai.transforms import Compose

    cfg = cfg if isinstance(cfg, PreprocessingConfig) else PreprocessingConfig.model_validate(cfg)
    pipeline = Compose(deterministic_transforms(cfg, fit_roi=cfg.fit_at_inference, track_meta=True))
    return pipeline({"image": volume_to_metatensor(volume)})["image"].contiguous()


def grid_affine(image: torch.Tensor) -> np.ndarray:
    """The voxel → RAS world affine of a preprocessed `MetaTensor` (float64 4 x 4)."""
    affine = getattr(image, "affine", None)
    if affine is None:
        raise ValueError("the image carries no affine: preprocess it with preprocess_volume (a MetaTensor)")
    return np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
