"""Reference statistics a run records for later drift and plausibility checks (`RunMeta.reference`).

Cheap by design: the HU profile of a few evenly spaced training inputs as the network sees them
(after the HU window, so values outside it are clipped to its edges) and each finding's positive
rate on the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def reference_profile(dataset: Any, val_labels: np.ndarray, labels: Sequence[str], preprocessing: Any,
                      max_cases: int = 16) -> dict[str, Any]:
    """``{"input_hu": {mean, std, quantiles}, "val_positive_rate": {label: rate}}``.

    Args:
        dataset: un-augmented training dataset (items with a preprocessed ``image``).
        val_labels: ``[N, L]`` validation labels (1/0, -1 unknown).
        labels: the label names of the columns.
        preprocessing: the run's `PreprocessingConfig` (maps intensities back to HU).
        max_cases: how many evenly spaced training cases feed the HU profile.
    """
    (a_min, a_max), (b_min, b_max) = preprocessing.hu_window, preprocessing.intensity_range
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(max_cases, len(dataset))).astype(int))
    values = [np.asarray(dataset[int(i)]["image"], dtype=np.float32).ravel()[::7] for i in picks]
    hu = a_min + (np.concatenate(values).astype(np.float64) - b_min) * (a_max - a_min) / (b_max - b_min)
    rates = {}
    for j, name in enumerate(labels):
        known = val_labels[:, j] >= 0
        if known.any():
            rates[name] = float(val_labels[known, j].mean())
    return {
        "input_hu": {"mean": float(hu.mean()), "std": float(hu.std()),
                     "quantiles": {f"{q:g}": float(np.quantile(hu, q)) for q in QUANTILES}},
        "val_positive_rate": rates,
    }
