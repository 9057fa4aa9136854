"""The generated data set: byte-identical per seed, cached once, DICOM = NIfTI, reports match labels."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from medmm.data import ensure_synthetic, read_manifest, synthesize
from medmm.data.splits import split_overlap
from medmm.data.synth.findings import sample_specs
from medmm.data.synth.generator import MARKER, _patient_state, _scan_labels
from medmm.data.synth.labels import IMPLICATIONS
from medmm.data.synth.reports import NEGATION_CUE, POSITIVE_PATTERNS, write_report
from medmm.labels import CT_RATE_FINDINGS


def _hashes(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_both")
    return out, synthesize(out, 6, seed=7, size=32, fmt="both")


def test_same_seed_gives_byte_identical_files(both, tmp_path):
    out, _ = both
    again = synthesize(tmp_path / "again", 6, seed=7, size=32, fmt="both", workers=2)
    first, second = _hashes(out), _hashes(again.parent)
    assert first == second and len(first) == 6 * 32 + 6 + 2  # dicom slices + nifti + manifest + synth.json
    other = synthesize(tmp_path / "other", 6, seed=8, size=32, fmt="nifti")
    assert _hashes(other.parent)["manifest.csv"] != first["manifest.csv"]


def test_manifest_content(both):
    out, manifest = both
    cases = read_manifest(manifest)
    assert len(cases) == 6 and split_overlap(cases) == {}
    assert all(re.fullmatch(r"P\d{4}-s7_[12]", c.case_id) and c.case_id.startswith(c.patient_id) for c in cases)
    assert all(c.split in ("train", "val", "test") and c.meta["image_dicom"].startswith("dicom/") for c in cases)
    for c in cases:
        for child, parent in IMPLICATIONS:
            assert not (c.labels[child] == 1 and c.labels[parent] != 1)


def test_dicom_loads_back_like_the_nifti_with_fake_phi(both):
    import pydicom

    import medmm

    out, manifest = both
    case = read_manifest(manifest)[0]
    nifti = medmm.load_volume(case.image)
    dicom = medmm.load_volume(out / case.meta["image_dicom"])
    assert dicom.shape == nifti.shape == (32, 32, 32)
    assert np.abs(dicom.array - nifti.array).max() <= 0.5  # both int16 HU
    assert np.allclose(dicom.affine, nifti.affine, atol=1e-3)
    from medmm.data.synth.generator import _entropy, render_scan

    n_scans = sum(c.patient_id == case.patient_id for c in read_manifest(manifest))
    ph, *_ = render_scan(_entropy(7, 1), 32, None, 0, n_scans)
    assert np.abs(dicom.array - ph.hu).max() <= 0.5 + 1e-3  # the rendered HU, rounded to int16
    assert np.allclose(dicom.affine, ph.affine, atol=1e-3)
    ds = pydicom.dcmread(sorted((out / case.meta["image_dicom"]).glob("*.dcm"))[0])
    assert "^" in str(ds.PatientName) and str(ds.PatientID).startswith("MRN") and len(ds.PatientBirthDate) == 8
    assert str(ds.PatientID) != case.patient_id  # the manifest holds the pseudonym only
    assert str(ds.PatientName) not in manifest.read_text()


def test_ensure_synthetic_generates_once(tmp_path):
    m1 = ensure_synthetic(tmp_path, 3, seed=1, size=24, fmt="nifti")
    marker = m1.parent / MARKER
    stamp = marker.stat().st_mtime_ns
    m2 = ensure_synthetic(tmp_path, 3, seed=1, size=24, fmt="nifti")
    assert m1 == m2 and marker.stat().st_mtime_ns == stamp
    marker.unlink()  # an incomplete generation is redone
    m3 = ensure_synthetic(tmp_path, 3, seed=1, size=24, fmt="nifti")
    assert m3 == m1 and marker.exists()
    assert ensure_synthetic(tmp_path, 3, seed=2, size=24, fmt="nifti") != m1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def _sentences(report):
    return [s for s in re.split(r"(?<=\.)\s+|\n+", report) if s.strip()]


def _reports(n=150):
    for entropy in range(n):
        age, _, patient = _patient_state(entropy)
        for scan, labels in enumerate(_scan_labels(entropy, age, 2)):
            specs = sample_specs(labels, patient, entropy)
            yield labels, write_report(labels, specs, np.random.default_rng([entropy, 4, scan]))


def test_reports_mention_positives_and_never_assert_absent_findings():
    negated = 0
    for labels, report in _reports():
        asserted = [s for s in _sentences(report) if not NEGATION_CUE.search(s)]
        negated += len(_sentences(report)) - len(asserted)
        for name in CT_RATE_FINDINGS:
            hit = any(POSITIVE_PATTERNS[name].search(s) for s in asserted)
            if labels[name] == 1:
                assert hit, (name, report)
            elif hit:  # only an implied parent may be mentioned by its child's sentence
                children = [c for c, p in IMPLICATIONS if p == name and labels[c] == 1]
                assert children, (name, report)
    assert negated > 100  # absent findings are negated regularly


@pytest.fixture(scope="module")
def ontology():
    knowledge = pytest.importorskip("medmm.knowledge")
    return knowledge.load_ontology()


@pytest.mark.slow
def test_implications_match_the_ontology(ontology):
    c = ontology.constraints(list(CT_RATE_FINDINGS))
    onto = {(CT_RATE_FINDINGS[a], CT_RATE_FINDINGS[b]) for a, b in c.implications.tolist()}
    assert onto == set(IMPLICATIONS)
    assert c.exclusions.numel() == 0  # nothing for the sampler to respect beyond implications


@pytest.mark.slow
def test_report_labeler_agrees_with_labels(ontology):
    """The knowledge engineer's ReportLabeler recovers our labels from our reports."""
    from sklearn.metrics import f1_score

    from medmm.knowledge import ReportLabeler

    labeler = ReportLabeler(ontology, list(CT_RATE_FINDINGS))
    y, p = [], []
    for labels, report in _reports(40):
        got = labeler(report)
        y.append([labels[k] for k in CT_RATE_FINDINGS])
        p.append([int(got.get(k, 0) == 1) for k in CT_RATE_FINDINGS])
    macro = f1_score(np.array(y), np.array(p), average="macro", zero_division=1.0)
    assert macro > 0.9, macro


def test_write_case_dicom_matches_full_generation(tmp_path):
    """The demo's one held-out DICOM series is byte-identical to the 'both' generation's."""
    import filecmp

    from medmm.data import synthesize, write_case_dicom

    synthesize(tmp_path / "full", 6, 0, 16, "both")
    folder = write_case_dicom(tmp_path / "one", "P0002-s0_1", n=6, seed=0, size=16)
    full = sorted((tmp_path / "full" / "dicom" / "P0002-s0_1").iterdir())
    one = sorted(folder.iterdir())
    assert [p.name for p in full] == [p.name for p in one] and len(one) == 16
    assert all(filecmp.cmp(a, b, shallow=False) for a, b in zip(full, one))
    with pytest.raises(ValueError, match="not in the synthetic set"):
        write_case_dicom(tmp_path / "one", "P0999-s0_1", n=6, seed=0, size=16)


def test_ids_are_unique_per_generation_seed(tmp_path):
    """Two sets made with different seeds share no patient: evaluating one against a model trained
    on the other is not a leak."""
    from medmm.data import read_manifest, synthesize

    a = {c.patient_id for c in read_manifest(synthesize(tmp_path / "a", 4, 0, 16, "nifti"))}
    b = {c.patient_id for c in read_manifest(synthesize(tmp_path / "b", 4, 1, 16, "nifti"))}
    assert a and b and not a & b


def test_counterfactual_twins_switch_one_finding_of_training_scans_only(tmp_path):
    import nibabel as nib

    from medmm.data.synth.generator import counterfactual_labels

    plain = read_manifest(synthesize(tmp_path / "plain", 12, seed=3, size=24, fmt="nifti"))
    cases = read_manifest(synthesize(tmp_path / "cf", 12, seed=3, size=24, fmt="nifti", counterfactuals=2))
    natural = {c.case_id: c for c in cases if "counterfactual" not in c.meta}
    twins = [c for c in cases if "counterfactual" in c.meta]
    assert sorted(natural) == sorted(c.case_id for c in plain)  # natural scans, split and labels unchanged
    assert all(natural[c.case_id].labels == c.labels and natural[c.case_id].split == c.split for c in plain)
    n_train = sum(c.split == "train" for c in plain)
    assert n_train > 0 and len(twins) == 2 * n_train
    parents = {child: parent for child, parent in IMPLICATIONS}
    for twin in twins:
        origin = natural[twin.case_id.rsplit("_cf", 1)[0]]
        assert twin.split == "train" and twin.patient_id == origin.patient_id
        switched = twin.meta["counterfactual"]
        changed = {k for k in CT_RATE_FINDINGS if twin.labels[k] != origin.labels[k]}
        assert switched in changed and changed <= {switched, *parents, *parents.values()}
        assert all(twin.labels[p] >= twin.labels[c] for c, p in parents.items())  # implications hold
        a, b = (np.asarray(nib.load(c.image).dataobj) for c in (origin, twin))
        assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="counterfactuals"):
        synthesize(tmp_path / "bad", 4, counterfactuals=-1)
    rng = np.random.default_rng(0)
    assert counterfactual_labels(dict.fromkeys(CT_RATE_FINDINGS, 0), rng)[0] != dict.fromkeys(CT_RATE_FINDINGS, 0)


def test_ensure_synthetic_keeps_counterfactual_sets_apart(tmp_path):
    plain = ensure_synthetic(tmp_path, 4, seed=1, size=16, fmt="nifti")
    twins = ensure_synthetic(tmp_path, 4, seed=1, size=16, fmt="nifti", counterfactuals=1)
    assert plain != twins and plain.parent.name + "_cf1" == twins.parent.name
