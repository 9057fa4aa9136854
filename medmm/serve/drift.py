"""Drift: compare what the server sees with what the model saw at training time.

Reference profile — the shape of ``RunMeta.reference`` (written by training): the quantiles of the
input HU values (clipped to the run's HU window) and each finding's positive rate on the
validation split. The server keeps a sliding window of recent scans (a strided sample of each
scan's clipped HU values, and its decisions) and reports the population stability index (PSI,
Siddiqi 2006, *Credit Risk Scorecards*)

    PSI = sum_i (actual_i - expected_i) * ln(actual_i / expected_i)

for ``input_hu`` over the reference's quantile bins (each holds a known share of the reference
voxels) and for every finding over positive/negative. Rule of thumb: < 0.1 stable, 0.1–0.25
moderate, > 0.25 a major shift (the default alert).

Where the profile comes from: ``medmm.json``'s ``reference`` (training writes it), else
``<run>/drift_reference.json`` (``medmm serve reference``), else ``<state_dir>/drift_reference.json``;
if there is none, the server computes one from the run's validation split (:func:`compute_reference`:
HU quantiles of the scans and the model's positive rate on them) and stores it in the state folder.
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
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SAMPLE_VALUES = 8192
_EPS = 1e-4
_EDGE_TOL = 0.01  # HU; see bin_shares
log = logging.getLogger("medmm.serve")


def hu_sample(hu: np.ndarray, hu_window: tuple[float, float] | None) -> np.ndarray:
    """About ``SAMPLE_VALUES`` evenly strided HU values of a scan, rounded to whole HU and clipped
    to the run's window.

    Rounded because CT stores whole HU (int16) and so does the training data: a float scan of the
    same population (a resampled NIfTI) would otherwise spread the voxels piled on one integer —
    air at -999, say, which can hold a fifth of a chest CT — across neighbouring quantile bins
    and read as drift.
    """
    flat = np.asarray(hu, dtype=np.float32).ravel()
    values = np.rint(flat[:: max(1, flat.size // SAMPLE_VALUES)])
    return np.clip(values, *hu_window) if hu_window is not None else values


def quantile_bins(quantiles: dict[str, float], upper: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(edges, expected share per bin) from reference quantiles ``{"0.01": v, ...}``.

    Equal quantile values (voxels piled up at a window edge) merge into one bin holding their
    combined share, so no bin of zero width expects mass. When the top quantile sits at the
    window's ``upper`` edge nothing can lie above it after clipping, so the open top bin merges
    into the one below.
    """
    edges: list[float] = []
    cumulative: list[float] = []
    for prob, value in sorted((float(p), float(v)) for p, v in quantiles.items()):
        if edges and value <= edges[-1]:
            cumulative[-1] = prob
            continue
        edges.append(value)
        cumulative.append(prob)
    expected = np.diff([0.0, *cumulative, 1.0])
    if upper is not None and len(edges) > 1 and edges[-1] >= upper:
        edges, expected = edges[:-1], np.append(expected[:-2], expected[-2] + expected[-1])
    return np.asarray(edges), expected


def bin_shares(values: np.ndarray, edges: np.ndarray, expected: np.ndarray | None = None) -> np.ndarray:
    """Share of ``values`` in each bin ``(edges[i-1], edges[i]]`` (plus the two open ends).

    Values within ``_EDGE_TOL`` HU of an edge count as *on* it: training-time quantiles come from
    intensities mapped back to HU through float32, so a whole-HU value ``v`` reads ``v ± 1e-4``
    there. With the reference's ``expected`` shares, the cumulative share at an edge that values
    pile on (air clipped at the window's edge, a whole HU) is the reference's own level when that
    lies between the shares below and up to the pile: quantiles fix the level but not the size of
    a pile, so a pile is a shift only when the level cannot be reached inside it.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    edges = np.asarray(edges, dtype=np.float64)
    n = max(1, ordered.size)
    upper = np.searchsorted(ordered, edges + _EDGE_TOL, side="right") / n
    cumulative = upper
    if expected is not None:
        lower = np.searchsorted(ordered, edges - _EDGE_TOL, side="left") / n
        cumulative = np.clip(np.cumsum(expected)[: len(edges)], lower, upper)
    return np.diff(np.concatenate([[0.0], cumulative, [1.0]]))


def psi(expected: Any, actual: Any) -> float:
    """Population stability index of two distributions over the same bins (ε-smoothed)."""
    e = np.clip(np.asarray(expected, dtype=np.float64), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), _EPS, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def reference_profile(samples: list[np.ndarray], positives: list[dict[str, bool]], labels: list[str]
                      ) -> dict[str, Any]:
    """A profile in ``RunMeta.reference``'s shape from scans' HU samples and decisions."""
    if not samples:
        raise ValueError("a drift reference needs at least one scan")
    hu = np.concatenate(samples).astype(np.float64)
    return {
        "format": FORMAT,
        "n_scans": len(samples),
        "input_hu": {"mean": float(hu.mean()), "std": float(hu.std()),
                     "quantiles": {f"{q:g}": float(np.quantile(hu, q)) for q in QUANTILES}},
        "val_positive_rate": {label: float(np.mean([bool(p[label]) for p in positives])) for label in labels},
    }


def compute_reference(predictor: Any, images: list[str | Path]) -> dict[str, Any]:
    """Profile of ``images`` as diagnosed by ``predictor`` (call it on the validation split)."""
    from medmm.io import load_volume

    window = hu_window_of(predictor)
    samples, positives = [], []
    for image in images:
        volume = load_volume(image)
        samples.append(hu_sample(volume.array, window))
        result = predictor.predict(volume)
        positives.append({row["finding"]: bool(row["positive"]) for row in result.findings})
    return reference_profile(samples, positives, list(predictor.labels))


def hu_window_of(predictor: Any) -> tuple[float, float] | None:
    window = getattr(getattr(predictor, "preprocessing", None), "hu_window", None)
    return (float(window[0]), float(window[1])) if window is not None else None


def validation_images(run_dir: Path) -> list[str]:
    """Image paths of the run's validation split, rebuilt from its stored ``workflow.yaml``."""
    from medmm.config import load_workflow
    from medmm.data.dataset import load_cases, split_cases

    cfg = load_workflow(run_dir / "workflow.yaml")
    splits = split_cases(load_cases(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    return [case.image for case in splits["val"]]


def _usable(profile: Any) -> dict[str, Any] | None:
    if hasattr(profile, "model_dump"):  # a typed RunMeta.reference
        profile = profile.model_dump()
    if not isinstance(profile, dict):
        return None
    quantiles = (profile.get("input_hu") or {}).get("quantiles")
    return profile if quantiles or profile.get("val_positive_rate") else None


def find_reference(run_dir: Path, state_dir: Path, meta: Any) -> dict[str, Any] | None:
    """A stored profile (see module docstring for the order), or None.

    ``meta`` is the run's metadata: a ``medmm.json`` dict or a typed RunMeta with ``reference``.
    """
    stored = meta.get("reference") if isinstance(meta, dict) else getattr(meta, "reference", None)
    if (found := _usable(stored)) is not None:
        return found
    for path in (run_dir / REFERENCE_FILE, state_dir / REFERENCE_FILE):
        if path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") == FORMAT and (found := _usable(doc)) is not None:
                return found
    return None


def ensure_reference(predictor: Any, state_dir: Path) -> dict[str, Any] | None:
    """The stored profile, or one computed now from the validation split (None if impossible)."""
    from medmm.io.writers import atomic_write_bytes

    run_dir = Path(predictor.run_dir)
    found = find_reference(run_dir, state_dir, predictor.meta)
    if found is not None:
        return found
    try:
        profile = compute_reference(predictor, validation_images(run_dir))
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
                 per_feature: dict[str, float] | None = None, min_samples: int = 20, window: int = 500,
                 hu_window: tuple[float, float] | None = None):
        self.metrics = metrics
        self.hu_window = hu_window
        self.psi_alert = psi_alert
        self.per_feature = dict(per_feature or {})
        self.min_samples = min_samples
        self._samples: deque[np.ndarray] = deque(maxlen=window)
        self._positives: deque[dict[str, bool]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.reference = reference
        self.alerting = False

    def set_reference(self, reference: dict[str, Any] | None) -> None:
        """Use ``reference`` from now on (scans seen before it arrived count too)."""
        with self._lock:
            self.reference = reference
            values = self._psi_locked()
        self._export(values)

    def observe(self, hu_values: np.ndarray, positives: dict[str, bool]) -> dict[str, float]:
        """Add one scan (its :func:`hu_sample` and decisions); returns the PSI per feature
        (empty until ``min_samples`` scans were seen)."""
        with self._lock:
            self._samples.append(np.asarray(hu_values, dtype=np.float32))
            self._positives.append(dict(positives))
            self.metrics.drift_samples.set(len(self._samples))
            values = self._psi_locked()
        self._export(values)
        return values

    def _psi_locked(self) -> dict[str, float]:
        if self.reference is None or len(self._samples) < self.min_samples:
            return {}
        values: dict[str, float] = {}
        quantiles = (self.reference.get("input_hu") or {}).get("quantiles")
        if quantiles:
            edges, expected = quantile_bins(quantiles, self.hu_window[1] if self.hu_window else None)
            values["input_hu"] = psi(expected, bin_shares(np.concatenate(self._samples), edges, expected))
        for label, rate in (self.reference.get("val_positive_rate") or {}).items():
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
