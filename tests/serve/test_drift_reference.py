"""The drift reference profile of a trained run, computed on its validation split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_reference_cli_profiles_the_validation_split(trained_run, tmp_path):
    from click.testing import CliRunner

    from medmm.cli import cli
    from medmm.serve.drift import FORMAT, validation_images

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    out = CliRunner().invoke(cli, ["serve", "reference", "--model", str(run), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    profile = json.loads((run / "drift_reference.json").read_text())
    meta = json.loads((run / "medmm.json").read_text())
    assert profile["format"] == FORMAT
    assert profile["n_scans"] == len(validation_images(run)) >= 1
    assert set(profile["positive_rate"]) == set(meta["labels"])
    assert all(0.0 <= v <= 1.0 for v in profile["positive_rate"].values())
    hist = np.asarray(profile["hu_hist"])
    assert hist.sum() == pytest.approx(1.0, abs=1e-5) and hist[0] > 0.05  # chest CT: plenty of air
