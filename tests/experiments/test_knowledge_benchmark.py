"""benchmarks/knowledge.py (issue 20 ablation) runs end to end in its --tiny form."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "knowledge.py"


def _bench():
    spec = importlib.util.spec_from_file_location("knowledge_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_differ_only_in_their_knowledge_settings():
    bench = _bench()
    args = bench.parse_args([])
    assert args.variants == ["plain", "kr", "hierarchy", "queries", "all"] and len(args.seeds) >= 3
    assert args.fractions == [0.05, 0.2, 1.0] and args.test_seed != args.data_seed
    plain, every = bench.workflow(args, "plain", 0.2, 1), bench.workflow(args, "all", 0.2, 1)
    assert plain["ontology"]["kr_weight"] == 0 and plain["network"]["hierarchy"] is None
    assert plain["network"]["fusion"]["head"] == "fusion"
    assert every["ontology"]["kr_weight"] > 0 and every["network"]["hierarchy"] == {}
    assert every["network"]["fusion"]["head"] == "knowledge_queries"
    for wf in (plain, every):  # everything else is shared
        wf.pop("name"), wf["ontology"].pop("kr_weight"), wf["network"].pop("hierarchy"), wf["network"]["fusion"].pop("head")
    assert plain == every


@pytest.mark.slow
def test_tiny_benchmark_writes_the_table(tmp_path):
    out = tmp_path / "out"
    code = _bench().main(["--tiny", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--threads", "1",
                          "--n-bootstrap", "50"])
    assert code == 0
    summary = json.loads((out / "knowledge.json").read_text())
    rows = {(r["label_fraction"], r["variant"]): r for r in summary["table"]}
    assert set(rows) == {(0.2, "plain"), (0.2, "all")} and rows[(0.2, "all")]["n_seeds"] == 2
    diff = rows[(0.2, "all")]["vs_plain"]
    assert diff["ci_low"] <= diff["difference"] <= diff["ci_high"]
    assert rows[(0.2, "all")]["violation_output_mean"] == 0.0  # MCM: implications hold by construction
    assert "| 20% | all |" in (out / "knowledge.md").read_text()
