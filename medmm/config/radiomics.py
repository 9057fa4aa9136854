"""Schema of the optional radiomics branch (``network.radiomics``): soft HU histograms.

CT intensities are calibrated, so how much tissue lies in each HU band is itself a feature. The
branch (`medmm.models.radiomics`) adds global and per-token histogram features to the image
embedding; it is off unless this section is given (``workflows/ct_chest.yaml`` leaves it off,
the phantom demo uses it). Bin centres are given in HU and mapped into input units when the model
is built (`medmm.config.network.NetworkDerived`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from medmm.config.base import Strict

HUCentres = Annotated[list[Annotated[float, Field(ge=-32768, le=65535)]], Field(max_length=512)]


def increasing_centres(v: list[float] | None) -> list[float] | None:
    """Histogram bin centres must be >= 2 strictly increasing values."""
    if v is not None and (len(v) < 2 or any(b <= a for a, b in zip(v, v[1:]))):
        raise ValueError(f"histogram bin centres must be >= 2 strictly increasing values, got {v}")
    return v


class ContextHistogramConfig(Strict):
    """Joint histogram of voxel intensity and neighbourhood means (`medmm.models.radiomics.context`).

    ``hu`` bins each voxel's own intensity, ``context_hu`` the mean of each ``context_voxels``
    cube around it (one joint axis per size): 12 x 11 x 11 = 1452 bins for the demo. A workflow
    maps the HU centres through its preprocessing window (`NetworkDerived`) when the model is built.

    The pooled embedding gets the bins of the whole volume and, with ``central_region``, those of a
    centred box (e.g. ``[0.5, 0.5, 1.0]``: the middle half left-right and front-back, where
    mediastinum, hila and heart lie). The box is resolved on the histogram's cells, so it needs
    cells finer than the CNN's: ``cell_split`` cells per feature-map cell along each axis (the
    demo's 64³ scans have a 2³ feature map; ``cell_split: 2`` gives 4³ cells, of which the middle
    2 x 2 x 4 form the box).
    """

    hu: HUCentres
    context_hu: HUCentres
    context_voxels: list[Annotated[int, Field(le=65)]] = Field(default_factory=lambda: [3, 9], min_length=1, max_length=8)
    subdivisions: int = Field(4, ge=1, le=16)
    cell_split: int = Field(1, ge=1, le=4, description="histogram cells per CNN feature-map cell along each axis")
    central_region: list[float] | None = Field(
        None, min_length=3, max_length=3,
        description="(x, y, z) extent, as fractions of the volume, of a centred box whose bins are pooled too")

    @field_validator("hu", "context_hu")
    @classmethod
    def _increasing(cls, v: list[float] | None) -> list[float] | None:
        return increasing_centres(v)

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



class RadiomicsConfig(Strict):
    """The radiomics branch: an intensity histogram (``intensity_hu`` bin centres in HU) and/or a
    joint intensity-context histogram (``context``), with a cache of their values per input.

    ``cache_mb``: CPU memory for the histogram maps of inputs seen before (keyed by content, so
    only un-augmented images ever hit), filled during training and validation; 0 disables it.
    """

    intensity_hu: HUCentres | None = None
    context: ContextHistogramConfig | None = None
    cache_mb: int = Field(2048, ge=0, le=1_000_000)

    @field_validator("intensity_hu")
    @classmethod
    def _increasing(cls, v: list[float] | None) -> list[float] | None:
        return increasing_centres(v)

    @model_validator(mode="after")
    def _something(self) -> RadiomicsConfig:
        if self.intensity_hu is None and self.context is None:
            raise ValueError("radiomics needs intensity_hu and/or context (or leave the section out)")
        return self
