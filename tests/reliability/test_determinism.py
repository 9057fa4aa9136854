"""Determinism on CPU: same seed -> identical synthetic data, predictions and metrics; plus
property-based cross-checks of the ontology consistency operator (hypothesis)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from .realrun import shared_phi_scan, shared_run


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_same_seed_same_synthetic_bytes(tmp_path, fmt):
    from medmm.data import synthesize

    a = synthesize(tmp_path / "a", n=3, seed=7, size=16, fmt=fmt).parent
    b = synthesize(tmp_path / "b", n=3, seed=7, size=16, fmt=fmt).parent
    c = synthesize(tmp_path / "c", n=3, seed=8, size=16, fmt=fmt).parent
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db and len(da) >= 4
    assert da != dc


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return shared_phi_scan(tmp_path_factory)[0]


def test_same_model_same_predictions(real_run, scan):
    from medmm.inference import load_model

    results = [load_model(real_run, device="cpu").predict(scan, indication="cough") for _ in range(2)]
    a, b = (r.to_dict() for r in results)
    for r in (a, b):
        r.get("inference", {}).pop("seconds", None)
    assert a["findings"] == b["findings"] and a["report"] == b["report"]
    assert a == b


def test_same_seed_same_metrics(real_run, scan, tmp_path):
    import medmm
    from medmm.labels import CT_RATE_FINDINGS

    header = "case_id,patient_id,image,report,indication,split," + ",".join(f'"{n}"' for n in CT_RATE_FINDINGS)
    rows = [f"c{i},p{i},{scan},Emphysema.,,test," + ",".join(str((i + j) % 2) for j in range(18)) for i in range(3)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([header, *rows]) + "\n")
    for name in ("a", "b"):
        medmm.evaluate(real_run, manifest, out=tmp_path / name, n_bootstrap=200, seed=3, attack="pgd",
                       eps_hu=(10,), pgd_steps=2)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert (tmp_path / "a" / "per_finding.csv").read_bytes() == (tmp_path / "b" / "per_finding.csv").read_bytes()


# ------------------------------------------------------------------- consistency operator
@pytest.fixture(scope="module")
def constraints():
    from medmm.knowledge import load_ontology
    from medmm.labels import CT_RATE_FINDINGS

    return load_ontology().constraints(list(CT_RATE_FINDINGS))


probs_strategy = arrays(np.float32, st.tuples(st.integers(1, 6), st.just(18)),
                        elements=st.floats(0, 1, width=32, allow_subnormal=False))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=probs_strategy)
def test_consistent_output_has_no_violations(constraints, p):
    """Evaluation reports violation_rate before/after make_consistent; after must be exactly zero,
    both on the probabilities and at any common threshold, and the operator must be idempotent."""
    from medmm.knowledge import make_consistent, violation_rate

    probs = torch.from_numpy(p)
    out = make_consistent(probs, constraints).probs
    assert violation_rate(out, constraints, threshold=None) == 0.0
    for t in (0.1, 0.5, 0.9):
        assert violation_rate(out, constraints, threshold=t) == 0.0
    assert torch.all((out >= 0) & (out <= 1))
    again = make_consistent(out, constraints).probs
    assert torch.allclose(again, out, atol=1e-6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=probs_strategy)
def test_operator_is_identity_on_consistent_input(constraints, p):
    from medmm.knowledge import make_consistent, violation_rate

    probs = torch.from_numpy(p)
    if violation_rate(probs, constraints, threshold=None) == 0.0:
        assert torch.equal(make_consistent(probs, constraints).probs, probs)
