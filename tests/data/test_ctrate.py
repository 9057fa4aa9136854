"""CT-RATE adapter on tiny fixture files in CT-RATE's real layout."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medmm.data import read_ctrate
from medmm.data.ctrate import parse_volume_name
from medmm.errors import MedmmInputError
from medmm.io.writers import write_nifti
from medmm.labels import CT_RATE_FINDINGS

NAMES = ["train_1_a_1.nii.gz", "train_1_a_2.nii.gz", "train_1_b_1.nii.gz", "train_2_a_1.nii.gz", "valid_1_a_1.nii.gz"]


@pytest.fixture
def ctrate(tmp_path):
    vols = tmp_path / "dataset"
    for name in NAMES:
        p = parse_volume_name(name)
        write_nifti(np.full((4, 4, 4), -1000, np.int16), np.eye(4), vols / p["patient_id"] / p["scan_id"] / name)
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["VolumeName", *CT_RATE_FINDINGS])
        for k, name in enumerate(NAMES):
            w.writerow([name, *[(k + j) % 2 for j in range(len(CT_RATE_FINDINGS))]])
    with open(tmp_path / "reports.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"])
        for name in NAMES:
            w.writerow([name, "Cough.", "Non-contrast chest CT.", f"Pleural effusion {name}.", "Effusion."])
    return tmp_path


def test_reads_layout_labels_reports_and_patients(ctrate):
    cases = read_ctrate(ctrate / "dataset", ctrate / "labels.csv", ctrate / "reports.csv")
    assert [c.case_id for c in cases] == sorted(n.removesuffix(".nii.gz") for n in NAMES)
    by_id = {c.case_id: c for c in cases}
    assert by_id["train_1_a_2"].patient_id == by_id["train_1_b_1"].patient_id == "train_1"
    assert by_id["valid_1_a_1"].patient_id == "valid_1" != "train_1"
    assert by_id["valid_1_a_1"].split == "test" and by_id["train_2_a_1"].split == "train"
    c = by_id["train_1_b_1"]
    assert c.labels == {n: (2 + j) % 2 for j, n in enumerate(CT_RATE_FINDINGS)}
    assert c.report == "FINDINGS: Pleural effusion train_1_b_1.nii.gz.\n\nIMPRESSION: Effusion."
    assert c.indication == "Cough." and c.meta["technique"] == "Non-contrast chest CT."
    assert c.image.endswith("train_1/train_1_b/train_1_b_1.nii.gz")


def test_labels_from_reports_with_labeler(ctrate):
    cases = read_ctrate(ctrate / "dataset", None, ctrate / "reports.csv",
                        labeler=lambda text: {"Pleural effusion": int("effusion" in text.lower())})
    assert all(c.labels["Pleural effusion"] == 1 and c.labels["Emphysema"] == 0 for c in cases)


def test_missing_volume_error_or_skip(ctrate):
    (ctrate / "dataset" / "train_2" / "train_2_a" / "train_2_a_1.nii.gz").unlink()
    with pytest.raises(MedmmInputError, match="train_2_a_1.nii.gz listed in the CSV is missing"):
        read_ctrate(ctrate / "dataset", ctrate / "labels.csv", ctrate / "reports.csv")
    assert len(read_ctrate(ctrate / "dataset", ctrate / "labels.csv", ctrate / "reports.csv", missing="skip")) == 4


@pytest.mark.parametrize("column,value,message", [
    ("Emphysema", None, "missing column(s): Emphysema"),
    ("Emphysema", "maybe", "label 'Emphysema' has value 'maybe'"),
    ("VolumeName", "scan1.nii.gz", "is not like train_1_a_1.nii.gz"),
])
def test_bad_labels_csv(ctrate, column, value, message):
    rows = list(csv.DictReader(open(ctrate / "labels.csv")))
    fields = [f for f in rows[0] if not (value is None and f == column)]
    with open(ctrate / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for k, r in enumerate(rows):
            if value is not None and k == 0:
                r[column] = value
            w.writerow(r)
    with pytest.raises(MedmmInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_ctrate(ctrate / "dataset", ctrate / "labels.csv", ctrate / "reports.csv")


def test_workflow_source_carves_a_patient_level_val_split_from_train(ctrate):
    from medmm.config import load_workflow
    from medmm.data.dataset import load_cases, split_cases

    cfg = load_workflow({"data": {"source": "ctrate", "val_fraction": 0.5, "ctrate": {
        "volumes_dir": str(ctrate / "dataset"), "labels_csv": str(ctrate / "labels.csv"),
        "reports_csv": str(ctrate / "reports.csv")}}, "preprocessing": {"roi_size": [8, 8, 8]}})
    splits = split_cases(load_cases(cfg.data), cfg.data.val_fraction, 0.0, cfg.seed)
    assert [c.case_id for c in splits["test"]] == ["valid_1_a_1"]  # CT-RATE's valid set is the test set
    assert splits["train"] and splits["val"]
    owners = {c.patient_id: name for name, cs in splits.items() for c in cs}
    assert all(owners[c.patient_id] == name for name, cs in splits.items() for c in cs)


def test_synthetic_ctrate_layout_reads_back_with_consistent_geometry(tmp_path):
    from medmm.data.synth.ctrate_layout import ctrate_names, render_full_size, write_ctrate_layout
    from medmm.data.synth.generator import render_case

    paths = write_ctrate_layout(tmp_path, ctrate_names(2, 1), shape=[(32, 32, 20), (32, 32, 24), (32, 32, 20)], base=16)
    cases = read_ctrate(paths["volumes_dir"], paths["labels_csv"], paths["reports_csv"])
    assert [c.case_id for c in cases] == ["train_1_a_1", "train_2_a_1", "valid_1_a_1"]
    assert cases[0].report.startswith("FINDINGS:") and "IMPRESSION:" in cases[0].report
    hu, affine, labels, _, _ = render_full_size(0, (32, 32, 20), base=16)
    assert hu.dtype == np.int16 and labels == cases[0].labels
    coarse_hu, coarse_affine, *_ = render_case(0, size=16)

    def edge(a, index):  # world position of a voxel corner (index - 0.5)
        return (a @ np.array([*(np.asarray(index, dtype=float) - 0.5), 1.0]))[:3]

    assert np.allclose(edge(affine, (0, 0, 0)), edge(coarse_affine, (0, 0, 0)))  # same field of view
    assert np.allclose(edge(affine, (32, 32, 20)), edge(coarse_affine, (16, 16, 16)))
