"""Optional radiomics branch of `MedMM` (``network.radiomics``): soft HU histograms as features.

- `branch`: `RadiomicsBranch` (maps appended to the feature map, their embedding added to it).
- `intensity`: `IntensityHistogram` (per-cell soft histogram of intensities).
- `context`: `ContextHistogram` (joint histogram of intensity and neighbourhood means).
- `cells`: finer histogram cells carried as feature-map channels.
- `cache`: content-keyed cache of the maps of fixed inputs.
"""

from __future__ import annotations

from medmm.models.radiomics.branch import RadiomicsBranch
from medmm.models.radiomics.context import ContextHistogram
from medmm.models.radiomics.intensity import IntensityHistogram

__all__ = ["ContextHistogram", "IntensityHistogram", "RadiomicsBranch"]
