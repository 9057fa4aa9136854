"""Counterfactual twins and lesion masks: the same phantom without one finding.

A twin is rendered from the same patient, scan and noise streams with one finding switched off
(and the findings that imply it, so the labels stay consistent): anatomy, noise and every other
finding are bit-identical (``phantom.py`` keys each random stream by purpose). The voxels where a
phantom and its twin differ are that finding's lesion mask — for every finding alike, including
those drawn as changes of the anatomy (an enlarged heart, pericardial fluid, dilated bronchi),
which the renderer's ``effects`` record does not cover.
"""

from __future__ import annotations

import numpy as np

from medmm.data.synth.generator import _entropy, _patient_state, _scan_labels, locate, render_scan
from medmm.data.synth.labels import IMPLICATIONS, close_implications
from medmm.data.synth.phantom import Phantom

#: A voxel belongs to a lesion when the phantom and its twin differ by more than this (HU); above
#: the rounding of stored HU and far below any drawn finding's contrast.
LESION_HU = 30.0


def without(labels: dict[str, int], finding: str) -> tuple[dict[str, int], list[str]]:
    """``labels`` with ``finding`` and every finding that implies it switched off.

    Returns:
        ``(labels, removed)``: the new labels and the findings switched off (``finding`` first).
    """
    out = dict(labels)
    removed = [finding]
    out[finding] = 0
    changed = True
    while changed:
        changed = False
        for child, parent in IMPLICATIONS:
            if out.get(parent, 0) == 0 and out.get(child, 0) == 1 and parent in removed:
                out[child] = 0
                removed.append(child)
                changed = True
    return close_implications(out), removed


def case_scan(case_id: str, n: int, seed: int) -> tuple[int, int, int, dict[str, int]]:
    """``(entropy, scan index, scans of the patient, labels)`` of a case of the ``(n, seed)`` set."""
    patient_no, scan_index, n_scans = locate(case_id, n, seed)
    entropy = _entropy(int(seed), patient_no)
    age, _, _ = _patient_state(entropy)
    labels = _scan_labels(entropy, age, max(n_scans, scan_index + 1))[scan_index]
    return entropy, scan_index, n_scans, labels


def render_twin(entropy: int, size: int, labels: dict[str, int], finding: str, scan_index: int = 0,
                n_scans: int = 1) -> tuple[Phantom, list[str]]:
    """The scan rendered with ``finding`` (and what implies it) removed; ``(phantom, removed)``."""
    twin_labels, removed = without(labels, finding)
    phantom, _, _, _ = render_scan(int(entropy), int(size), twin_labels, scan_index, n_scans)
    return phantom, removed


def lesion_mask(phantom: Phantom, twin: Phantom, hu: float = LESION_HU) -> np.ndarray:
    """Voxels where ``phantom`` and its ``twin`` differ by more than ``hu`` HU (bool ``(X, Y, Z)``)."""
    return np.abs(np.asarray(phantom.hu, np.float32) - np.asarray(twin.hu, np.float32)) > float(hu)


__all__ = ["LESION_HU", "case_scan", "lesion_mask", "render_twin", "without"]
