"""Output files: atomic, strict JSON, clear one-line errors on unwritable folders."""

from __future__ import annotations

import errno
import json
import math
import os

import pytest

from medmm.errors import MedmmInputError
from medmm.evaluation import outputs


def _metrics():
    row = {"finding": "Emphysema", "n_known": 4, "n_positive": 2, "prevalence": 0.5, "auroc": 0.75,
           "ci_low": 0.5, "ci_high": 1.0, "n_resamples_used": 10, "n_skipped": 0, "auprc": 0.8,
           "threshold": 0.5, "sensitivity": 0.5, "specificity": 1.0, "precision": 1.0, "f1": 0.67,
           "accuracy": 0.75, "ece": float("nan")}
    macro = dict(row, n_findings=1, label_accuracy=0.75)
    return {
        "model": {"id": "demo@abc"}, "split": "test", "n_scans": 4, "n_patients": 4,
        "classification": {"per_finding": [row], "macro": macro}, "per_finding": [row],
        "calibration": {"pooled": {"ece": 0.1, "n": 4}},
        "consistency": {"violation_rate_raw": 0.1, "violation_rate_consistent": 0.0},
        "report_generation": {"n_reports": 0}, "robustness": None, "protocol": {"split": "test rows"},
    }


def test_writes_all_files_with_nan_as_null(tmp_path):
    files = outputs.write_evaluation(tmp_path / "out", _metrics(), {"roc_curves.png": b"\x89PNG"})
    assert sorted(files) == ["metrics.json", "per_finding.csv", "roc_curves.png", "summary.html"]
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["per_finding"][0]["ece"] is None
    csv_text = (tmp_path / "out" / "per_finding.csv").read_text().splitlines()
    assert csv_text[0].startswith("finding,") and csv_text[1].startswith("Emphysema,")
    assert "demo@abc" in (tmp_path / "out" / "summary.html").read_text()
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".tmp")]


def _file(tmp_path):
    p = tmp_path / "afile"
    p.write_text("x")
    return p


def _readonly(tmp_path):
    p = tmp_path / "ro"
    p.mkdir()
    p.chmod(0o500)
    return p


def _under_file(tmp_path):
    return _file(tmp_path) / "sub"


@pytest.mark.parametrize("make", [_file, _under_file, _readonly], ids=["out-is-a-file", "parent-is-a-file", "read-only-dir"])
def test_unwritable_out_is_one_line_error(tmp_path, make):
    out = make(tmp_path)
    if make is _readonly and os.access(out, os.W_OK):
        pytest.skip("running as a user who can write read-only folders (root)")
    with pytest.raises(MedmmInputError) as info:
        outputs.write_evaluation(out, _metrics(), {})
    assert "\n" not in str(info.value) and "--out" in str(info.value)


def test_disk_full_leaves_no_partial_metrics(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_fdopen = os.fdopen
    calls = {"n": 0}

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])  # half of it reaches the disk, then ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def fdopen(fd, *args, **kwargs):
        calls["n"] += 1
        return Full(real_fdopen(fd, *args, **kwargs))

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(MedmmInputError, match="No space left"):
        outputs.write_evaluation(out, _metrics(), {"roc_curves.png": b"\x89PNG" * 100})
    assert calls["n"] >= 1
    assert os.listdir(out) == []  # no half-written file, no temp file


def test_to_json_strict():
    text = outputs.to_json({"a": float("inf"), "b": [1.0, math.nan]})
    assert json.loads(text) == {"a": None, "b": [1.0, None]}
