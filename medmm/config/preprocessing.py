"""Schemas of how a CT volume becomes a network input: preprocessing and training augmentation.

Stored in every run's ``medmm.json`` (`medmm.models.checkpoint.RunMeta`), so inference prepares a
scan exactly as training did. The MONAI pipelines built from them live in `medmm.data.transforms`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from medmm.config.base import Strict

Spacing = Annotated[float, Field(ge=0.1, le=20.0)]  # mm: below 0.1 or above 20 is not a CT grid
RoiEdge = Annotated[int, Field(ge=8, le=2048)]  # voxels: the encoder downsamples by up to 32
HU = Annotated[float, Field(ge=-32768, le=65535)]


class AugmentationConfig(Strict):
    """Random augmentation applied to training images only (each probability 0 disables it).

    Rotations are in degrees, scale as a fraction (0.1 = ±10 %), noise standard deviation in HU
    (converted to normalised intensity units with the window), so values read the same whatever
    intensity range is used.
    """

    flip_prob: float = Field(0.0, ge=0, le=1, description="per-axis left/right etc. flip probability")
    flip_axes: list[Annotated[int, Field(ge=0, le=2)]] = Field(default_factory=lambda: [0],
                                                               description="spatial axes that may flip")
    affine_prob: float = Field(0.0, ge=0, le=1)
    rotate_deg: float = Field(10.0, ge=0, le=180)
    scale: float = Field(0.1, ge=0, lt=1)
    translate_vox: float = Field(0.0, ge=0, le=512)
    noise_prob: float = Field(0.0, ge=0, le=1)
    noise_std_hu: float = Field(10.0, ge=0, le=1000)

    @property
    def enabled(self) -> bool:
        """True when at least one augmentation has non-zero probability."""
        return (self.flip_prob > 0 and bool(self.flip_axes)) or self.affine_prob > 0 or self.noise_prob > 0


class PreprocessingConfig(Strict):
    """How a CT volume becomes a network input.

    Args:
        orientation: target axis code (MONAI ``Orientationd``); RAS matches ``Volume.affine``.
        spacing: target voxel size in mm (each in [0.1, 20]), or None to keep the native spacing.
        interpolation: resampling mode for ``Spacingd``.
        hu_window: HU range ``(a_min, a_max)`` kept (finite, increasing); clipped when ``clip``.
        intensity_range: output range ``(b_min, b_max)`` of the window, e.g. (0, 1) or (-1, 1).
        crop_foreground: crop to the bounding box of voxels above ``foreground_hu`` (the body).
        roi_size: spatial size of training inputs (and of sliding-window tiles); each edge >= 8.
        fit: how an image is brought to ``roi_size``: ``pad_crop`` (centre pad/crop, keeps the
            spacing) or ``resize`` (interpolate, changes the effective spacing).
        fit_at_inference: also fit to ``roi_size`` at inference; otherwise inference sees the
            whole resampled volume and slides a window over it.
        augmentation: training-time random augmentation.
    """

    orientation: str = "RAS"
    spacing: tuple[Spacing, Spacing, Spacing] | None = (1.5, 1.5, 1.5)
    interpolation: Literal["bilinear", "nearest"] = "bilinear"
    hu_window: tuple[HU, HU] = (-1000.0, 1000.0)
    intensity_range: tuple[Annotated[float, Field(ge=-1e3, le=1e3)], Annotated[float, Field(ge=-1e3, le=1e3)]] = (0.0, 1.0)
    clip: bool = True
    crop_foreground: bool = False
    foreground_hu: HU = -500.0
    foreground_margin: int = Field(0, ge=0, le=512)
    roi_size: tuple[RoiEdge, RoiEdge, RoiEdge] | None = None
    fit: Literal["pad_crop", "resize"] = "pad_crop"
    fit_at_inference: bool = False
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)

    @model_validator(mode="after")
    def _ordered(self) -> PreprocessingConfig:
        if sorted(self.orientation.upper().translate(str.maketrans("RAS", "LPI"))) != ["I", "L", "P"]:
            raise ValueError(f"orientation must be a 3-letter axis code such as 'RAS', got {self.orientation!r}")
        if self.hu_window[1] <= self.hu_window[0]:
            raise ValueError(f"hu_window must be increasing, got {list(self.hu_window)}")
        if self.intensity_range[1] <= self.intensity_range[0]:
            raise ValueError(f"intensity_range must be increasing, got {list(self.intensity_range)}")
        return self


def hu_to_intensity(hu: float, cfg: PreprocessingConfig) -> float:
    """Map an HU value to the normalised intensity the network sees (before clipping)."""
    (a_min, a_max), (b_min, b_max) = cfg.hu_window, cfg.intensity_range
    return b_min + (hu - a_min) * (b_max - b_min) / (a_max - a_min)


def hu_to_intensity_eps(eps_hu: float, cfg: PreprocessingConfig) -> float:
    """Convert a perturbation size in HU into normalised intensity units.

    The window is linear, so an ε of ``eps_hu`` HU is ``eps_hu * (b_max - b_min) / (a_max - a_min)``
    in network units (clipping at the window edges can only make a perturbation smaller).

    >>> hu_to_intensity_eps(4.0, PreprocessingConfig(hu_window=(-1000, 1000)))
    0.002
    """
    if eps_hu < 0:
        raise ValueError(f"eps_hu must be >= 0, got {eps_hu}")
    (a_min, a_max), (b_min, b_max) = cfg.hu_window, cfg.intensity_range
    return float(eps_hu) * (b_max - b_min) / (a_max - a_min)
