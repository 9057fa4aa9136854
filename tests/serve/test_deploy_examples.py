"""examples/deploy stays in step with the code: every metric its alerts and dashboard use exists,
and its serve.yaml is valid for the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"


def _metric_names() -> set[str]:
    from medmm.serve.metrics import ServeMetrics

    names = set()
    for family in ServeMetrics().registry.collect():
        names |= {sample.name for sample in family.samples} | {family.name}
    # histograms and counters expose suffixed series even before their first observation
    return names | {n + s for n in names for s in ("_bucket", "_count", "_sum", "_total")}


def _used(expr: str) -> set[str]:
    return set(re.findall(r"\bmedmm_[a-z_]+", expr))


def test_alert_rules_use_existing_metrics():
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    known = _metric_names()
    assert len(rules) >= 5
    for rule in rules:
        assert _used(rule["expr"]) <= known, rule["alert"]
    assert any("medmm_drift_alert" in r["expr"] for r in rules)


def test_dashboard_uses_existing_metrics():
    dash = json.loads((DEPLOY / "grafana_dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs and set().union(*map(_used, exprs)) <= _metric_names()


def test_example_serve_yaml_is_valid():
    from medmm.serve.config import load_serve_config

    cfg = load_serve_config(DEPLOY / "serve.yaml")
    assert cfg.dicom.port == 11112 and cfg.dicom.allow_ae == ["ORTHANC"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"orthanc", "medmm", "prometheus"} <= set(compose["services"])
