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


def test_dockerfile_and_compose_agree_with_the_cli_and_serve_yaml():
    """The image's entrypoint parses with the real CLI; ports, paths and peers line up across the
    Dockerfile, docker-compose.yml, prometheus.yml and serve.yaml (no Docker needed)."""
    from medmm.cli.serve import serve
    from medmm.serve.config import load_serve_config, parse_peer

    repo = DEPLOY.parents[1]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    assert entry[:2] == ["medmm", "serve"]
    ctx = serve.make_context("serve", entry[2:])  # unknown options would raise here
    config_path = ctx.params["config"]
    copies = dict((dst, src) for src, dst in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M))
    assert copies[str(config_path)] == "examples/deploy/serve.yaml"
    for src in copies.values():
        assert (repo / src).exists(), f"Dockerfile copies missing {src}"
    cfg = load_serve_config(DEPLOY / "serve.yaml")
    exposed = {int(p) for p in re.search(r"^EXPOSE (.*)$", dockerfile, re.M).group(1).split()}
    assert {cfg.port, cfg.dicom.port} <= exposed
    assert f"127.0.0.1:{cfg.port}/healthz" in dockerfile

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["medmm"]["volumes"]}
    assert mounts[str(cfg.model)] == "./models/run"
    assert str(cfg.state_dir) in mounts
    assert str(cfg.tokens_file.parent) in mounts, "mount the tokens folder (a file mount misses revocations)"
    assert f"127.0.0.1:{cfg.port}:{cfg.port}" in compose["medmm"]["ports"]
    modalities = json.loads(compose["orthanc"]["environment"]["ORTHANC__DICOM_MODALITIES"])
    ae, host, port = modalities["medmm"]
    assert (ae, host, port) == (cfg.dicom.ae_title, "medmm", cfg.dicom.port)
    peer_ae, peer_host, peer_port = parse_peer(cfg.dicom.send_to)
    assert (peer_ae, peer_host, peer_port) == (compose["orthanc"]["environment"]["ORTHANC__DICOM_AET"], "orthanc",
                                               4242)
    assert peer_ae in cfg.dicom.allow_ae
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"medmm:{cfg.port}"]
    assert cfg.metrics_public or "authorization" in prom["scrape_configs"][0]
