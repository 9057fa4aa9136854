"""Protocol guards of `evaluate`: split selection, training-patient leakage, label matrix."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.evaluation.pipeline import check_no_leakage, label_matrix, select_split, training_patient_keys


@dataclass
class FakeCase:
    patient_id: str
    split: str | None
    labels: dict = field(default_factory=dict)


CASES = [FakeCase("p1", "train"), FakeCase("p2", "val"), FakeCase("p3", "test"), FakeCase("p4", "test"), FakeCase("p5", None)]


@pytest.mark.parametrize("split, n", [("test", 2), ("val", 1), ("train", 1), ("all", 5)])
def test_select_split(split, n):
    assert len(select_split(CASES, split, "m.csv")) == n


@pytest.mark.parametrize("cases, split, match", [(CASES[:2], "test", "no rows with split 'test'"), (CASES, "dev", "unknown split")])
def test_select_split_errors(cases, split, match):
    with pytest.raises(MedmmInputError, match=match):
        select_split(cases, split, "m.csv")


def test_hashed_training_ids_guard_leakage():
    from toy import toy_meta

    keys = training_patient_keys(toy_meta(["p1"]), "run")
    with pytest.raises(MedmmInputError, match="training split"):
        check_no_leakage(CASES, keys, "m.csv")
    check_no_leakage(CASES[1:], keys, "m.csv")


def test_training_patient_keys_missing_is_config_error():
    from toy import toy_meta

    meta = toy_meta(["p1"]).model_copy(update={"data": None})
    with pytest.raises(MedmmConfigError, match="leakage"):
        training_patient_keys(meta, "run")


def test_leakage_refused_without_naming_patients():
    secret = "SENTINEL-PATIENT-42"
    cases = [FakeCase(secret, "test"), FakeCase("p9", "test")]
    from medmm.models.run_meta import hash_patient_id

    with pytest.raises(MedmmInputError) as info:
        check_no_leakage(cases, {hash_patient_id(secret)}, "m.csv")
    msg = str(info.value)
    assert "1 of 2 scans" in msg and secret not in msg and "\n" not in msg
    check_no_leakage(cases, {hash_patient_id("other")}, "m.csv")  # no overlap: passes


def test_label_matrix_unknown_is_minus_one():
    cases = [FakeCase("a", "test", {"A": 1, "B": 0}), FakeCase("b", "test", {"A": -1})]
    np.testing.assert_array_equal(label_matrix(cases, ["A", "B"]), [[1, 0], [-1, -1]])
