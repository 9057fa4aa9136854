"""The drift reference profile of a trained run, computed on its validation split."""

from __future__ import annotations

import json
import shutil

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
    from medmm.inference import load_model

    profile = json.loads((run / "drift_reference.json").read_text())
    predictor = load_model(run, device="cpu")
    assert profile["format"] == FORMAT
    assert profile["n_scans"] == len(validation_images(run)) >= 1
    assert set(profile["val_positive_rate"]) == set(predictor.labels)
    assert all(0.0 <= v <= 1.0 for v in profile["val_positive_rate"].values())
    quantiles = profile["input_hu"]["quantiles"]
    low, high = predictor.preprocessing.hu_window
    values = [quantiles[k] for k in sorted(quantiles, key=float)]
    assert values == sorted(values) and low <= values[0] and values[-1] <= high
    assert values[0] == low  # chest CT: plenty of air, clipped at the window's lower edge
