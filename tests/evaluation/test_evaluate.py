"""`medmm.evaluate` / `medmm evaluate` end to end on a toy run (fast: 16^3 phantoms, tiny model)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from toy import SENTINEL

import medmm
from medmm.cli import cli
from medmm.errors import MedmmInputError

FILES = {"metrics.json", "per_finding.csv", "roc_curves.png", "reliability.png", "robustness.png", "summary.html"}


def test_evaluate_writes_all_outputs(toy_run, toy_world, tmp_path):
    out = tmp_path / "eval"
    m = medmm.evaluate(toy_run, toy_world["manifest"], out=out, attack="fgsm", eps_hu=(25, 50), n_bootstrap=1000)
    assert set(m["files"]) == FILES and {p.name for p in out.iterdir()} == FILES
    for png in ("roc_curves.png", "reliability.png", "robustness.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "metrics.json").read_text())
    macro = data["classification"]["macro"]
    assert data["n_scans"] == 16 and macro["n_resamples_used"] + macro["n_skipped"] == 1000
    assert macro["auroc"] > 0.8 and macro["ci_low"] <= macro["auroc"] <= macro["ci_high"]
    assert data["consistency"]["consistent"]["continuous"] == 0.0
    assert {"split", "threshold_rule", "label_source", "auroc_ci", "robustness"} <= set(data["protocol"])
    rob = {r["eps_hu"]: r for r in data["robustness"]}
    assert sorted(rob) == [0.0, 25.0, 50.0]
    assert rob[50.0]["label_accuracy"] < rob[0.0]["label_accuracy"]
    rep = data["report_generation"]
    # the verifier rewrites the toy's one-line reports into FINDINGS/IMPRESSION stating all 18 decisions
    assert rep["n_reports"] == 16 and rep["bleu4"] > 0.0 and "clinical_efficacy" in rep
    # issue 16: agreement of the labelled generated reports with the decisions, truncation, diversity, length
    assert {"agreement", "truncated", "distinct_4", "mean_tokens"} <= set(rep) and rep["n_generated"] == 16
    assert 0 <= rep["agreement"] <= 1 and rep["agreement_detail"]["n_pairs"] == 16 * len(data["labels"])
    assert 0 <= rep["truncated"] <= 1 and 0 < rep["distinct_4"] <= 1 and rep["mean_tokens"] > 0


def test_evaluate_is_deterministic(toy_run, toy_world, tmp_path):
    a = medmm.evaluate(toy_run, toy_world["manifest"], out=tmp_path / "a", n_bootstrap=300, attack="pgd", eps_hu=(10,), pgd_steps=2)
    b = medmm.evaluate(toy_run, toy_world["manifest"], out=tmp_path / "b", n_bootstrap=300, attack="pgd", eps_hu=(10,), pgd_steps=2)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert a["classification"] == b["classification"]


def test_split_all_with_training_rows_is_refused(toy_run, toy_world, tmp_path):
    with pytest.raises(MedmmInputError, match="training split") as info:
        medmm.evaluate(toy_run, toy_world["manifest"], split="all", out=tmp_path / "x", n_bootstrap=10)
    assert SENTINEL not in str(info.value)
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_cli_table_and_exit_codes(toy_run, toy_world, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["evaluate", str(toy_run), "--data", str(toy_world["manifest"]), "--out",
                             str(tmp_path / "e"), "--n-bootstrap", "50"])
    assert ok.exit_code == 0, ok.output
    assert "macro (" in ok.output and "ECE" in ok.output and SENTINEL not in ok.output
    assert "agreement with decisions" in ok.output


def test_cli_both_attacks_in_one_evaluation(toy_run, toy_world, tmp_path):
    out = tmp_path / "both"
    result = CliRunner().invoke(cli, ["evaluate", str(toy_run), "--data", str(toy_world["manifest"]), "--out", str(out),
                                      "--n-bootstrap", "20", "--attack", "fgsm", "--attack", "pgd", "--eps-hu", "25",
                                      "--pgd-steps", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "metrics.json").read_text())
    assert sorted((r["method"], r["eps_hu"]) for r in data["robustness"]) == [
        ("fgsm", 0.0), ("fgsm", 25.0), ("pgd", 0.0), ("pgd", 25.0)]
    clean = {r["method"]: r["macro_auroc"] for r in data["robustness"] if r["eps_hu"] == 0}
    assert clean["fgsm"] == clean["pgd"]  # the same clean predictions under both sweeps
    assert "FGSM" in data["protocol"]["robustness"] and "PGD" in data["protocol"]["robustness"]
    assert "fgsm" in result.output and "pgd" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "all"], "training split"),
        (["--eps-hu", "5,abc", "--attack", "fgsm"], "comma-separated"),
        (["--attack", "cw"], "cw"),
    ],
)
def test_cli_errors_are_one_line_exit_2(toy_run, toy_world, tmp_path, capsys, extra, message):
    args = ["evaluate", str(toy_run), "--data", str(toy_world["manifest"]), "--out", str(tmp_path / "e"), "--n-bootstrap", "10"]
    code, err = run_main(args + extra, capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_cli_unwritable_out(toy_run, toy_world, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_main(["evaluate", str(toy_run), "--data", str(toy_world["manifest"]), "--out", str(blocker)], capsys)
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1


def run_main(argv, capsys):
    """The console entry point (which turns MedmmError into one line + exit 2): (exit code, stderr)."""
    from medmm.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_protocol_ctrate_adds_the_ct_rate_metrics(toy_run, toy_world, tmp_path):
    """Issue 19: `--protocol ctrate` reports the CT-RATE papers' metrics next to medmm's own."""
    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", str(toy_run), "--data", str(toy_world["manifest"]), "--out",
                              str(tmp_path / "e"), "--n-bootstrap", "20", "--protocol", "ctrate"])
    assert res.exit_code == 0, res.output
    assert "CT-RATE protocol" in res.output and "macro (" in res.output
    data = json.loads((tmp_path / "e" / "metrics.json").read_text())
    ct = data["ctrate"]
    assert "linspace(0, 1, 100)" in data["protocol"]["ctrate"]
    by_name = {r["finding"]: r for r in data["classification"]["per_finding"]}
    for row in ct["per_finding"]:  # one AUROC helper: the same per-finding AUROC as the main table
        assert row["auroc"] == pytest.approx(by_name[row["finding"]]["auroc"], nan_ok=True)
        assert row["threshold"] is None or 0.0 <= row["threshold"] <= 1.0
    assert {"auroc", "f1_weighted", "accuracy", "precision", "recall"} <= set(ct["macro"])
    plain = medmm.evaluate(toy_run, toy_world["manifest"], n_bootstrap=20)
    assert "ctrate" not in plain and "ctrate" not in plain["protocol"]
