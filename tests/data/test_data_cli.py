"""``medmm data`` commands, in-process via click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner

from medmm.cli import cli, main
from medmm.data import read_manifest, write_manifest


def test_synth_then_check(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "synth", "--out", str(tmp_path / "d"), "--n", "4", "--seed", "3", "--size", "24"])
    assert result.exit_code == 0, result.output
    assert f"manifest: {tmp_path / 'd' / 'manifest.csv'}" in result.output
    assert "Pleural effusion" in result.output and "all 18 findings are rendered" in result.output
    check = runner.invoke(cli, ["data", "manifest", "check", str(tmp_path / "d" / "manifest.csv")])
    assert check.exit_code == 0, check.output
    assert "4 cases" in check.output and "ok: no patient appears in more than one split" in check.output


def test_check_reports_leakage_and_bad_input_on_one_line(tmp_path, capsys):
    runner = CliRunner()
    runner.invoke(cli, ["data", "synth", "--out", str(tmp_path), "--n", "3", "--seed", "0", "--size", "24"])
    cases = read_manifest(tmp_path / "manifest.csv")
    cases[1].patient_id = cases[0].patient_id
    cases[0].split, cases[1].split = "train", "test"
    write_manifest(cases, tmp_path / "leaky.csv")
    for path, message in [(tmp_path / "leaky.csv", "more than one split"), (tmp_path / "nope.csv", "manifest not found")]:
        try:
            main(["data", "manifest", "check", str(path)])
        except SystemExit as exit_:
            assert exit_.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_synth_counterfactuals_reports_natural_and_twin_counts(tmp_path):
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path), "--n", "8", "--seed", "3",
                                      "--size", "16", "--counterfactuals", "1"])
    assert result.exit_code == 0, result.output
    cases = read_manifest(tmp_path / "manifest.csv")
    twins = [c for c in cases if c.meta.get("counterfactual")]
    n_train = sum(c.split == "train" for c in cases if not c.meta.get("counterfactual"))
    assert len(twins) == n_train > 0 and len(cases) == 8 + n_train
    assert "8 scans of" in result.output and f"+ {n_train} counterfactual training scans" in result.output
