"""Synthetic reports without images: the labels, finding specs and report text that
:func:`~medmm.data.synth.generator.render_scan` would produce for a patient, minus the drawing
(milliseconds instead of a fraction of a second per scan) — for training and testing text models
such as the learned report labeler."""

from __future__ import annotations

import numpy as np

from medmm.data.synth.findings import sample_specs
from medmm.data.synth.generator import _entropy, _patient_state, _scan_labels
from medmm.data.synth.reports import write_report


def synthetic_report(entropy: int) -> tuple[str, dict[str, int]]:
    """(report, labels) of the first scan of the patient seeded by ``entropy`` (as ``render_scan``)."""
    age, _, patient = _patient_state(entropy)
    labels = _scan_labels(entropy, age, 1)[0]
    specs = sample_specs(labels, patient, entropy)
    return write_report(labels, specs, np.random.default_rng([entropy, 4, 0])), labels


def synthetic_reports(n: int, seed: int = 0) -> list[tuple[str, dict[str, int]]]:
    """``n`` (report, labels) pairs of distinct synthetic patients; same seed → same reports."""
    return [synthetic_report(_entropy(seed, patient)) for patient in range(1, n + 1)]
