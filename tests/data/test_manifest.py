"""Manifest I/O: CSV/JSONL round trips, path resolution, labels from a labeler, clear errors."""

from __future__ import annotations

import json

import pytest

from medmm.data import Case, read_manifest, write_manifest
from medmm.errors import MedmmInputError
from medmm.labels import CT_RATE_FINDINGS


def _cases(tmp_path, n=3):
    (tmp_path / "images").mkdir(exist_ok=True)
    cases = []
    for k in range(n):
        image = tmp_path / "images" / f"c{k}.nii.gz"
        image.write_bytes(b"x")
        labels = {name: (k + j) % 2 for j, name in enumerate(CT_RATE_FINDINGS)}
        labels[CT_RATE_FINDINGS[-1]] = -1
        cases.append(Case(f"c{k}", f"p{k // 2}", str(image), f"Report, with comma\nand \"quotes\" {k}.",
                          None if k == 0 else "Cough.", labels, ["train", "val", "test"][k % 3]))
    return cases


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    cases = _cases(tmp_path)
    path = write_manifest(cases, tmp_path / f"manifest{suffix}")
    back = read_manifest(path)
    assert [c.case_id for c in back] == [c.case_id for c in cases]
    for a, b in zip(cases, back):
        assert (a.patient_id, a.report, a.indication, a.labels, a.split) == (b.patient_id, b.report, b.indication, b.labels, b.split)
        assert b.image == a.image
    text = path.read_text()
    assert str(tmp_path) not in text  # image paths are stored relative to the manifest


def test_relative_paths_follow_the_folder(tmp_path):
    cases = _cases(tmp_path)
    write_manifest(cases, tmp_path / "manifest.csv")
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)
    back = read_manifest(moved / "manifest.csv")
    assert all(c.image.startswith(str(moved)) for c in back)


def test_labels_from_labeler_when_no_label_columns(tmp_path):
    (tmp_path / "a.nii").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("case_id,patient_id,image,report\nc1,p1,a.nii,Small left pleural effusion.\n")
    seen = []

    def labeler(text):
        seen.append(text)
        return {"Pleural effusion": 1}

    (case,) = read_manifest(tmp_path / "m.csv", labeler=labeler)
    assert seen == ["Small left pleural effusion."]
    assert case.labels["Pleural effusion"] == 1 and case.labels["Emphysema"] == 0
    assert len(case.labels) == len(CT_RATE_FINDINGS)


def _write(tmp_path, header, row):
    (tmp_path / "a.nii").write_bytes(b"x")
    path = tmp_path / "m.csv"
    path.write_text(header + "\n" + row + "\n")
    return path


LABELS = ",".join(f'"{n}"' for n in CT_RATE_FINDINGS)
ZEROS = ",".join("0" for _ in CT_RATE_FINDINGS)
ERRORS = [
    ("patient_id,image," + LABELS, "p1,a.nii," + ZEROS, "missing required column(s): case_id"),
    ("case_id,patient_id,image", "c1,p1,a.nii", "no label columns and no labeler"),
    ("case_id,patient_id,image," + LABELS, "c1,p1,missing.nii," + ZEROS, "line 2 (c1): image not found"),
    ("case_id,patient_id,image," + LABELS, "c1,p1,a.nii,yes" + ZEROS[1:], "line 2 (c1): label 'Medical material' has value 'yes'"),
    ("case_id,patient_id,image,split," + LABELS, "c1,p1,a.nii,training," + ZEROS, "split 'training'"),
    ('case_id,patient_id,image,"Emphysema"', "c1,p1,a.nii,1", "missing label column(s): Medical material"),
]


@pytest.mark.parametrize("header,row,message", ERRORS)
def test_errors_name_file_and_line(tmp_path, header, row, message):
    path = _write(tmp_path, header, row)
    with pytest.raises(MedmmInputError) as err:
        read_manifest(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_duplicate_case_ids_and_missing_file(tmp_path):
    path = _write(tmp_path, "case_id,patient_id,image," + LABELS, "c1,p1,a.nii," + ZEROS + "\nc1,p1,a.nii," + ZEROS)
    with pytest.raises(MedmmInputError, match="line 3: duplicate case_id 'c1'"):
        read_manifest(path)
    with pytest.raises(MedmmInputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_jsonl_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"case_id": "c1"}) + "\n{not json\n")
    with pytest.raises(MedmmInputError, match="line 2: invalid JSON"):
        read_manifest(path)


def test_no_labels_requested(tmp_path):
    (tmp_path / "a.nii").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("case_id,image\nc1,a.nii\n")
    (case,) = read_manifest(tmp_path / "m.csv", labels=())
    assert case.labels == {} and case.patient_id == "c1"
