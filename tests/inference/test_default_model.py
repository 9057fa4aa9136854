"""`medmm infer SCAN` without --model: $MEDMM_MODEL, else the registered default, else how to get one."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmm.errors import MedmmConfigError
from medmm.inference.default_model import output_source, register_default, resolve_model


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDMM_MODEL", raising=False)
    return tmp_path


def test_explicit_model_wins_and_says_nothing(home):
    assert resolve_model(home / "run") == (home / "run", None)


def test_environment_then_registered_default(home, monkeypatch):
    with pytest.raises(MedmmConfigError, match="medmm demo") as info:
        resolve_model(None)
    assert "\n" not in str(info.value) and "$MEDMM_MODEL" in str(info.value)
    register_default(home / "registered")
    path, line = resolve_model(None)
    assert path == (home / "registered").resolve() and "default registered by `medmm demo`" in line
    monkeypatch.setenv("MEDMM_MODEL", str(home / "from_env"))
    path, line = resolve_model(None)
    assert path == home / "from_env" and "$MEDMM_MODEL" in line


def test_outputs_are_named_after_the_series_not_the_slice(tmp_path):
    series = tmp_path / "chest_series"
    series.mkdir()
    (series / "slice_0032.dcm").write_bytes(b"x")
    (tmp_path / "scan.nii.gz").write_bytes(b"x")
    assert output_source(series / "slice_0032.dcm") == series
    assert output_source(series) == series
    assert output_source(tmp_path / "scan.nii.gz") == tmp_path / "scan.nii.gz"


def test_cli_infer_without_model_uses_the_default_and_says_so(home, tmp_path, capsys, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
    from realrun import make_run, run_cli, write_phi_series

    series, _ = write_phi_series(tmp_path / "series_a")
    one_slice = sorted(series.iterdir())[0]
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["infer", str(one_slice)], capsys)
    assert code == 2 and "no model given" in err and err.count("\n") == 1
    run = make_run(tmp_path / "run")
    register_default(run)
    code, _, err = run_cli(["infer", str(one_slice), "-q", "--no-html"], capsys)
    assert code == 0, err
    assert f"model: {run.resolve()} (the default registered" in err
    assert (tmp_path / "medmm_out" / "series_a" / "result.json").is_file()  # named after the series
