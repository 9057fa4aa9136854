"""Schema of sliding-window inference (MONAI ``SlidingWindowInferer`` vocabulary).

The workflow's ``inferer`` section; a run stores it resolved (``roi_size`` filled from the
preprocessing ROI) in its `medmm.models.checkpoint.RunMeta`, and `medmm.inference.sliding` uses it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from medmm.config.base import Strict
from medmm.config.preprocessing import RoiEdge

Device = Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?|mps)$")]


class InfererConfig(Strict):
    """Sliding-window settings: window size, overlap, blending, where windows run and stitch."""

    roi_size: tuple[RoiEdge, RoiEdge, RoiEdge] | None = Field(None, description="None = preprocessing.roi_size")
    sw_batch_size: int = Field(1, ge=1, le=256)
    overlap: float = Field(0.25, ge=0, lt=0.95)
    mode: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = Field(0.125, gt=0, le=1)
    padding_mode: Literal["constant", "reflect", "replicate", "circular"] = "constant"
    sw_device: Device | None = None
    device: Device | None = None

    @field_validator("roi_size", mode="before")
    @classmethod
    def _roi_3d(cls, v: object) -> object:
        return (v, v, v) if isinstance(v, int) else v

    def resolved(self, preprocessing_roi: tuple[int, int, int] | None) -> InfererConfig:
        """A copy with ``roi_size`` set (the preprocessing ROI when unset); the original is unchanged."""
        roi = self.roi_size or preprocessing_roi
        if roi is None:
            raise ValueError("inferer.roi_size and preprocessing.roi_size are both unset")
        return self.model_copy(update={"roi_size": tuple(roi)})
