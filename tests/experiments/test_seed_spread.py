"""The seed-spread benchmark: statistics, and an end-to-end run of two arms on a tiny workflow."""

from __future__ import annotations

import json

import pytest
import yaml

from training_helpers import tiny_workflow


@pytest.fixture
def bench(load_experiment):
    return load_experiment("seed_spread")


def test_spread_and_paired_statistics(bench):
    s = bench.spread([0.80, 0.82, 0.84])
    assert s["mean"] == pytest.approx(0.82) and s["sd"] == pytest.approx(0.02)
    assert (s["min"], s["max"]) == (0.80, 0.84)
    assert bench.spread([0.8])["sd"] is None  # one seed says nothing about spread
    p = bench.paired([0.80, 0.82], [0.83, 0.82])
    assert p["diffs"] == pytest.approx([0.03, 0.0])
    assert p["diff_mean"] == pytest.approx(0.015)
    assert p["ratio_of_means"] == pytest.approx(0.825 / 0.81)
    text = bench.report(bench.summarise([
        {"arm": "baseline", "val_macro_auroc": 0.80}, {"arm": "baseline", "val_macro_auroc": 0.82},
        {"arm": "variant", "val_macro_auroc": 0.83}, {"arm": "variant", "val_macro_auroc": 0.82}]))
    assert "baseline  mean 0.810" in text and "+0.030 +0.000" in text and "1.019x" in text


def test_two_seeds_two_arms_end_to_end(bench, tiny_manifest, tmp_path, capsys):
    workflow = tmp_path / "tiny.yaml"
    workflow.write_text(yaml.safe_dump(tiny_workflow(tiny_manifest)))
    out = tmp_path / "out"
    assert bench.main([str(workflow), "--seeds", "0,1", "--variant", "optimizer.lr=0.01", "--out", str(out),
                       "--threads", "1"]) == 0
    result = json.loads((out / "seed_spread.json").read_text())
    runs = result["runs"]
    assert [(r["arm"], r["seed"]) for r in runs] == [("baseline", 0), ("baseline", 1), ("variant", 0), ("variant", 1)]
    for r in runs:
        run_dir = out / f"{r['arm']}-seed{r['seed']}"
        epoch = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
        assert r["best_epoch"] == 1 and r["val_macro_auroc"] == epoch["val_macro_auroc"]  # the run's own record
        resolved = yaml.safe_load((run_dir / "workflow.yaml").read_text())
        assert resolved["seed"] == r["seed"]  # each run really trained with its seed ...
        assert resolved["optimizer"]["lr"] == (0.01 if r["arm"] == "variant" else 0.003)  # ... and its arm
    summary = result["summary"]
    assert summary["baseline"]["mean"] == pytest.approx((runs[0]["val_macro_auroc"] + runs[1]["val_macro_auroc"]) / 2)
    assert len(summary["variant_vs_baseline"]["diffs"]) == 2
    assert "variant − baseline per seed" in capsys.readouterr().out


def test_bad_arguments_are_clear_errors(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        bench.parse_args([str(tmp_path / "missing.yaml")])
    assert err.value.code == 2 and "workflow file not found" in capsys.readouterr().err
    workflow = tmp_path / "w.yaml"
    workflow.write_text("name: x\n")
    with pytest.raises(SystemExit):
        bench.parse_args([str(workflow), "--seeds", "a,b"])
    assert "comma-separated integers" in capsys.readouterr().err
