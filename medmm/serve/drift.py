"""Drift: compare what the server sees with what the model saw on its validation split.

Reference profile (``medmm.drift_reference/1``): the pooled voxel-HU histogram of the validation
scans (fractions in fixed 100-HU bins from -1100 to +1100 HU, clipped) and each finding's positive
rate there. The server keeps the same statistics over a sliding window of recent scans and
reports the population stability index (PSI, Siddiqi 2006, *Credit Risk Scorecards*)

    PSI = sum_i (actual_i - expected_i) * ln(actual_i / expected_i)

for ``input_hu`` (over the histogram bins) and for every finding (over positive/negative).
Rule of thumb: < 0.1 stable, 0.1–0.25 moderate, > 0.25 a major shift (the default alert).

Where the profile lives: ``medmm.json`` key ``reference`` (the typed RunMeta field, once training
writes it), else ``<run>/drift_reference.json``, else ``<state_dir>/drift_reference.json``; if
none exists the server computes it once from the run's validation split
(:func:`compute_reference`) and stores it in the state folder.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "medmm.drift_reference/1"
REFERENCE_FILE = "drift_reference.json"
HU_EDGES = np.arange(-1100.0, 1101.0, 100.0)
_EPS = 1e-4
log = logging.getLogger("medmm.serve")


def hu_histogram(hu: np.ndarray) -> np.ndarray:
    """Fraction of voxels per 100-HU bin (values outside [-1100, 1100] fall in the end bins)."""
    counts, _ = np.histogram(np.clip(np.asarray(hu, dtype=np.float32), HU_EDGES[0], HU_EDGES[-1]), bins=HU_EDGES)
    return counts / max(1, counts.sum())


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (ε-smoothed)."""
    e = np.clip(np.asarray(expected, dtype=np.float64), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), _EPS, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def reference_profile(histograms: list[np.ndarray], positives: list[dict[str, bool]], labels: list[str]
                      ) -> dict[str, Any]:
    """The profile of a set of scans: mean HU histogram and per-finding positive rates."""
    if not histograms:
        raise ValueError("a drift reference needs at least one scan")
    return {
        "format": FORMAT,
        "n_scans": len(histograms),
        "hu_edges": HU_EDGES.tolist(),
        "hu_hist": np.mean(np.stack(histograms), axis=0).round(8).tolist(),
        "positive_rate": {label: float(np.mean([bool(p[label]) for p in positives])) for label in labels},
    }


def compute_reference(predictor: Any, images: list[str | Path]) -> dict[str, Any]:
    """Profile of ``images`` as diagnosed by ``predictor`` (call it on the validation split)."""
    from medmm.io import load_volume

    histograms, positives = [], []
    for image in images:
        volume = load_volume(image)
        histograms.append(hu_histogram(volume.array))
        result = predictor.predict(volume)
        positives.append({row["finding"]: bool(row["positive"]) for row in result.findings})
    return reference_profile(histograms, positives, list(predictor.labels))


def validation_images(run_dir: Path) -> list[str]:
    """Image paths of the run's validation split, rebuilt from its stored ``workflow.yaml``."""
    from medmm.config import load_workflow
    from medmm.data.dataset import load_cases, split_cases

    cfg = load_workflow(run_dir / "workflow.yaml")
    splits = split_cases(load_cases(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    return [case.image for case in splits["val"]]


def find_reference(run_dir: Path, state_dir: Path, meta: Any) -> dict[str, Any] | None:
    """A stored profile (see module docstring for the order), or None.

    ``meta`` is the run's metadata: a ``medmm.json`` dict or a typed RunMeta with ``reference``.
    """
    stored = meta.get("reference") if isinstance(meta, dict) else getattr(meta, "reference", None)
    if hasattr(stored, "model_dump"):
        stored = stored.model_dump()
    if isinstance(stored, dict) and stored.get("format") == FORMAT:
        return stored
    for path in (run_dir / REFERENCE_FILE, state_dir / REFERENCE_FILE):
        if path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") == FORMAT:
                return doc
    return None


def ensure_reference(predictor: Any, state_dir: Path) -> dict[str, Any] | None:
    """The stored profile, or one computed now from the validation split (None if impossible)."""
    from medmm.io.writers import atomic_write_bytes

    run_dir = Path(predictor.run_dir)
    found = find_reference(run_dir, state_dir, predictor.meta)
    if found is not None:
        return found
    try:
        images = validation_images(run_dir)
        profile = compute_reference(predictor, images)
    except Exception as err:  # noqa: BLE001 - drift is optional; the server serves without it
        log.warning("drift: no reference profile and none computable (%s); drift metrics disabled",
                    type(err).__name__)
        return None
    atomic_write_bytes(state_dir / REFERENCE_FILE, (json.dumps(profile) + "\n").encode("utf-8"))
    log.info("drift: reference profile computed from %d validation scans", profile["n_scans"])
    return profile


class DriftMonitor:
    """Running statistics over the last ``window`` scans and their PSI against the reference."""

    def __init__(self, reference: dict[str, Any] | None, metrics: Any, psi_alert: float,
                 per_feature: dict[str, float] | None = None, min_samples: int = 20, window: int = 500):
        self.reference = reference
        self.metrics = metrics
        self.psi_alert = psi_alert
        self.per_feature = dict(per_feature or {})
        self.min_samples = min_samples
        self._hist: deque[np.ndarray] = deque(maxlen=window)
        self._positives: deque[dict[str, bool]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.alerting = False

    def set_reference(self, reference: dict[str, Any] | None) -> None:
        """Use ``reference`` from now on (scans seen before it arrived count too)."""
        with self._lock:
            self.reference = reference
            values = self._psi_locked()
        self._export(values)

    def observe(self, histogram: np.ndarray, positives: dict[str, bool]) -> dict[str, float]:
        """Add one scan; returns the current PSI per feature (empty until ``min_samples``)."""
        with self._lock:
            self._hist.append(np.asarray(histogram, dtype=np.float64))
            self._positives.append(dict(positives))
            self.metrics.drift_samples.set(len(self._hist))
            values = self._psi_locked()
        self._export(values)
        return values

    def _psi_locked(self) -> dict[str, float]:
        if self.reference is None or len(self._hist) < self.min_samples:
            return {}
        values = {"input_hu": psi(self.reference["hu_hist"], np.mean(np.stack(self._hist), axis=0))}
        for label, rate in self.reference["positive_rate"].items():
            seen = [p[label] for p in self._positives if label in p]
            if seen:
                current = float(np.mean(seen))
                values[label] = psi([rate, 1 - rate], [current, 1 - current])
        return values

    def _export(self, values: dict[str, float]) -> None:
        if not values:
            return
        over = []
        for feature, value in values.items():
            self.metrics.drift_psi.labels(feature=feature).set(value if math.isfinite(value) else 0.0)
            if value > self.per_feature.get(feature, self.psi_alert):
                over.append(feature)
        alerting = bool(over)
        self.metrics.drift_alert.set(1 if alerting else 0)
        if alerting and not self.alerting:
            log.warning("drift alert: PSI above threshold for %s", ", ".join(sorted(over)))
        self.alerting = alerting
