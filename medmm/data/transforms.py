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

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # pragma: no cover
    from monai.transforms import Compose

    from medmm.io import Volume

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


class AugmentationConfig(BaseModel):
    """Random augmentation applied to training images only (each probability 0 disables it).

    Rotations are in degrees, scale as a fraction (0.1 = ±10 %), noise standard deviation in HU
    (converted to normalised intensity units with the window), so values read the same whatever
    intensity range is used.
    """

    model_config = ConfigDict(extra="forbid")

    flip_prob: float = Field(0.0, ge=0, le=1, description="per-axis left/right etc. flip probability")
    flip_axes: list[int] = Field(default_factory=lambda: [0], description="spatial axes that may flip")
    affine_prob: float = Field(0.0, ge=0, le=1)
    rotate_deg: float = Field(10.0, ge=0)
    scale: float = Field(0.1, ge=0, lt=1)
    translate_vox: float = Field(0.0, ge=0)
    noise_prob: float = Field(0.0, ge=0, le=1)
    noise_std_hu: float = Field(10.0, ge=0)

    @property
    def enabled(self) -> bool:
        """True when at least one augmentation has non-zero probability."""
        return (self.flip_prob > 0 and bool(self.flip_axes)) or self.affine_prob > 0 or self.noise_prob > 0


class PreprocessingConfig(BaseModel):
    """How a CT volume becomes a network input (stored in every run's ``medmm.json``).

    Args:
        orientation: target axis code (MONAI ``Orientationd``); RAS matches ``Volume.affine``.
        spacing: target voxel size in mm, or None to keep the native spacing.
        interpolation: resampling mode for ``Spacingd``.
        hu_window: HU range ``(a_min, a_max)`` kept; values outside are clipped when ``clip``.
        intensity_range: output range ``(b_min, b_max)`` of the window, e.g. (0, 1) or (-1, 1).
        crop_foreground: crop to the bounding box of voxels above ``foreground_hu`` (the body).
        roi_size: spatial size of training inputs (and of sliding-window tiles at inference).
        fit: how an image is brought to ``roi_size``: ``pad_crop`` (centre pad/crop, keeps the
            spacing) or ``resize`` (interpolate, changes the effective spacing).
        fit_at_inference: also fit to ``roi_size`` in `preprocess_volume`; otherwise inference
            sees the whole resampled volume and slides a window over it.
        augmentation: training-time random augmentation.
    """

    model_config = ConfigDict(extra="forbid")

    orientation: str = "RAS"
    spacing: Triple | None = (1.5, 1.5, 1.5)
    interpolation: Literal["bilinear", "nearest"] = "bilinear"
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    intensity_range: tuple[float, float] = (0.0, 1.0)
    clip: bool = True
    crop_foreground: bool = False
    foreground_hu: float = -500.0
    foreground_margin: int = Field(0, ge=0)
    roi_size: IntTriple | None = None
    fit: Literal["pad_crop", "resize"] = "pad_crop"
    fit_at_inference: bool = False
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)

    @model_validator(mode="after")
    def _check(self) -> PreprocessingConfig:
        if self.hu_window[1] <= self.hu_window[0]:
            raise ValueError(f"hu_window must be increasing, got {list(self.hu_window)}")
        if self.intensity_range[1] <= self.intensity_range[0]:
            raise ValueError(f"intensity_range must be increasing, got {list(self.intensity_range)}")
        if self.spacing is not None and min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {list(self.spacing)}")
        if self.roi_size is not None and min(self.roi_size) <= 0:
            raise ValueError(f"roi_size must be positive, got {list(self.roi_size)}")
        if len(self.orientation) != 3:
            raise ValueError(f"orientation must be a 3-letter axis code such as 'RAS', got {self.orientation!r}")
        return self


def hu_to_intensity(hu: float, cfg: PreprocessingConfig) -> float:
    """Map an HU value to the normalised intensity the network sees (before clipping)."""
    (a_min, a_max), (b_min, b_max) = cfg.hu_window, cfg.intensity_range
    return b_min + (hu - a_min) * (b_max - b_min) / (a_max - a_min)


def hu_to_intensity_eps(eps_hu: float, cfg: PreprocessingConfig) -> float:
    """Convert a perturbation size in HU into normalised intensity units.

    The window is linear, so an ε of ``eps_hu`` HU is ``eps_hu * (b_max - b_min) / (a_max - a_min)``
    in network units (clipping at the window edges can only make a perturbation smaller).

    Args:
        eps_hu: perturbation bound in Hounsfield units (>= 0).
        cfg: the preprocessing whose window defines the scale.

    Returns:
        The same bound in normalised units.
    """
    if eps_hu < 0:
        raise ValueError(f"eps_hu must be >= 0, got {eps_hu}")
    (a_min, a_max), (b_min, b_max) = cfg.hu_window, cfg.intensity_range
    return float(eps_hu) * (b_max - b_min) / (a_max - a_min)


def _foreground_selector(threshold: float):
    """A picklable ``select_fn`` for ``CropForegroundd`` (MONAI expects a callable)."""
    return _Above(threshold)


class _Above:
    """``x > threshold`` as a picklable callable (lambdas break multi-process data loading)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, x: Any) -> Any:
        return x > self.threshold


class _ToMetaTensord:
    """Turn a `Volume` under ``key`` into a MetaTensor (MetaTensors pass through)."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        value = data[self.key]
        if hasattr(value, "array") and hasattr(value, "affine"):
            data = {**data, self.key: volume_to_metatensor(value)}
        return data


def volume_to_metatensor(volume: Volume) -> torch.Tensor:
    """A channel-first ``MetaTensor [1, X, Y, Z]`` carrying the volume's RAS affine."""
    from monai.data import MetaTensor

    array = np.ascontiguousarray(volume.array, dtype=np.float32)[None]
    return MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(volume.affine, dtype=torch.float64),
                      meta={"space": "RAS"})


def deterministic_transforms(cfg: PreprocessingConfig, fit_roi: bool, keys: str = "image") -> list:
    """The deterministic part of the pipeline (cacheable): orient, resample, window, crop, fit.

    Items must already hold a MetaTensor with its affine (`volume_to_metatensor`, or
    `medmm.data.dataset.LoadVolumed` for paths).

    Args:
        cfg: preprocessing settings.
        fit_roi: bring images to ``cfg.roi_size`` (training batches need one size).
        keys: the image key.
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
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False))
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


def build_transforms(cfg: PreprocessingConfig, train: bool, seed: int = 0, keys: str = "image") -> Compose:
    """Full pipeline for dataset items ``{"image": Volume | MetaTensor, ...}`` (no file loading).

    Args:
        cfg: preprocessing settings.
        train: add the random augmentations (only when the config enables any).
        seed: seeds the random transforms (``Compose.set_random_state``).
        keys: the image key.

    Returns:
        A MONAI ``Compose``; ``CacheDataset`` caches everything before the first random transform.
    """
    from monai.transforms import Compose

    steps = [_ToMetaTensord(keys)] + deterministic_transforms(cfg, fit_roi=True, keys=keys)
    if train and cfg.augmentation.enabled:
        steps += augmentation_transforms(cfg, keys=keys)
    compose = Compose(steps)
    compose.set_random_state(seed=seed)
    return compose


def preprocess_volume(volume: Volume, cfg: PreprocessingConfig) -> torch.Tensor:
    """The exact inference-time preprocessing of one volume.

    Orientation, spacing, HU window and (if configured) foreground crop, as in training; the image
    is fitted to ``roi_size`` only when ``cfg.fit_at_inference`` is set (otherwise a sliding window
    covers the whole volume). Never random.

    Args:
        volume: a `medmm.io.Volume` (HU, RAS affine).
        cfg: the run's preprocessing (``PreprocessingConfig`` or its dict from ``medmm.json``).

    Returns:
        float32 tensor ``[1, X, Y, Z]`` in normalised intensity units.
    """
    from monai.transforms import Compose

    cfg = cfg if isinstance(cfg, PreprocessingConfig) else PreprocessingConfig.model_validate(cfg)
    pipeline = Compose(deterministic_transforms(cfg, fit_roi=cfg.fit_at_inference))
    out = pipeline({"image": volume_to_metatensor(volume)})["image"]
    return torch.as_tensor(out, dtype=torch.float32).contiguous()
