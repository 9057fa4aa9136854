"""`medmm evaluate --explain`: refused with one line, before the evaluation, when lesions are unknown."""

from __future__ import annotations

import pytest
from test_evaluate import run_main


@pytest.mark.parametrize("explain", [["--explain"], ["--explain", "gradcam,saliency"]])
def test_explain_needs_a_synthetic_manifest(toy_run, toy_world, tmp_path, capsys, explain):
    args = ["evaluate", str(toy_run), "--data", str(toy_world["manifest"]), "--out", str(tmp_path / "e"),
            "--split", "val", *explain]
    code, err = run_main(args, capsys)
    assert code == 2 and "synthetic manifest" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e" / "metrics.json").exists()  # refused before the evaluation ran
