"""The HTTP API end to end against a real `medmm serve` process: jobs, artefacts, predict, every
error code, auth (missing / wrong / revoked / wrong scope), metrics and OpenAPI docs."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from serving import nifti_bytes, phi_series, start_server, wait_for, zip_bytes

pytestmark = pytest.mark.slow
LIMITS = {"limits": {"max_body_bytes": 1_000_000, "max_archive_members": 200, "rate_per_minute": 600,
                     "rate_burst": 20}, "drift": {"min_samples": 2}}


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    from medmm.serve.tokens import TokenStore

    root = tmp_path_factory.mktemp("api")
    store = TokenStore(root / "tokens.json")
    tokens = {"alice": store.add("alice"), "bob": store.add("bob"), "predictor": store.add("predictor", ["predict"]),
              "mallory": store.add("mallory"), "burst": store.add("burst"),
              "clinic": store.add("clinic", allow_phi=True)}
    srv = start_server(trained_run, root / "state", root / "tokens.json", tokens, config=LIMITS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_inputs")
    return {"zip": zip_bytes(phi_series(root / "dicom")), "nifti": nifti_bytes(root)}


def _finish(client, server, job_id, who="alice", timeout=180):
    return wait_for(lambda: (r := client.get(f"/v1/jobs/{job_id}", headers=server.headers(who)).json())
                    ["status"] in ("done", "failed") and r, timeout, f"job {job_id}")


@pytest.fixture(scope="module")
def finished_job(client, server, inputs):
    """One job run to the end, for tests that read what a job leaves behind (xdist may run them first)."""
    r = client.post("/v1/jobs", content=inputs["nifti"], headers=server.headers())
    assert r.status_code == 202, r.text
    return _finish(client, server, r.json()["job_id"])


@pytest.mark.parametrize("kind", ["zip", "nifti"])
def test_job_lifecycle_and_artefacts(client, server, inputs, kind):
    r = client.post("/v1/jobs", params={"indication": "cough"}, content=inputs[kind], headers=server.headers())
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status_url"] == f"/v1/jobs/{body['job_id']}"
    status = _finish(client, server, body["job_id"])
    assert status["status"] == "done" and status["error"] is None
    expected = {"result.json", "report.html", "fhir.json"} | ({"report_sr.dcm"} if kind == "zip" else set())
    assert set(status["artefacts"]) == expected
    result = client.get(f"/v1/jobs/{body['job_id']}/result.json", headers=server.headers()).json()
    assert result["schema"] == "medmm.result/1" and result["indication"] == "cough"
    assert len(result["findings"]) == len(result["model"]["labels"])
    for name in expected:
        r = client.get(status["artefacts"][name], headers=server.headers())
        assert r.status_code == 200 and r.content
    if kind == "nifti":  # an SR needs DICOM input
        assert client.get(f"/v1/jobs/{body['job_id']}/report_sr.dcm", headers=server.headers()).status_code == 404


def test_predict_is_synchronous(client, server, inputs):
    r = client.post("/v1/predict", content=inputs["nifti"], headers=server.headers("predictor"))
    assert r.status_code == 200, r.text
    assert r.json()["schema"] == "medmm.result/1"


def test_400_bad_input_is_one_json_line(client, server):
    for body in (b"not a scan at all", b"PK\x03\x04broken zip", b"\x1f\x8bnot gzip"):
        r = client.post("/v1/jobs", content=body, headers=server.headers())
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]


def test_400_unreadable_series_fails_the_job_with_one_line(client, server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("series/a.dcm", b"definitely not DICOM" * 10)
    r = client.post("/v1/predict", content=buf.getvalue(), headers=server.headers("predictor"))
    assert r.status_code == 400 and "\n" not in r.json()["error"]


def test_401_missing_wrong_and_revoked_token(client, server):
    from medmm.serve.tokens import TokenStore

    assert client.get("/readyz").status_code == 401
    r = client.get("/readyz", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer" and "error" in r.json()
    assert client.get("/readyz", headers=server.headers("mallory")).status_code == 200
    TokenStore(server.tokens_file).revoke("mallory")
    r = wait_for(lambda: (x := client.get("/readyz", headers=server.headers("mallory"))).status_code == 401 and x,
                 10, "revocation to take effect")
    assert r.json()["error"]
    assert client.get("/healthz").status_code == 200  # liveness needs no token


def test_403_token_without_scope(client, server, inputs):
    r = client.post("/v1/jobs", content=inputs["nifti"], headers=server.headers("predictor"))
    assert r.status_code == 403 and "predictor" in r.json()["error"]


def test_404s(client, server, inputs):
    r = client.post("/v1/jobs", content=inputs["nifti"], headers=server.headers("alice"))
    job = r.json()["job_id"]
    assert client.get(f"/v1/jobs/{job}", headers=server.headers("bob")).status_code == 404  # not bob's job
    assert client.get("/v1/jobs/0123abcd", headers=server.headers()).json() == {"error": "no such job"}
    assert client.get(f"/v1/jobs/{job}/secrets.txt", headers=server.headers()).status_code == 404
    assert client.get("/v2/nothing", headers=server.headers()).json() == {"error": "not found"}
    _finish(client, server, job)


def test_413_body_and_archive_limits(client, server):
    r = client.post("/v1/jobs", content=b"\0" * 1_500_000, headers=server.headers())
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(30):
            yield b"\0" * 65536
    r = client.post("/v1/jobs", content=chunks(), headers=server.headers())
    assert r.status_code == 413
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(300):
            zf.writestr(f"series/{i}.dcm", b"x")
    r = client.post("/v1/jobs", content=buf.getvalue(), headers=server.headers())
    assert r.status_code == 413 and "members" in r.json()["error"]
    assert not list((server.state_dir / "spool").glob("*/upload.part"))  # nothing left half-written


def test_429_rate_limit_with_retry_after(client, server):
    codes = [client.get("/readyz", headers=server.headers("burst")) for _ in range(60)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and int(limited[0].headers["Retry-After"]) >= 1 and "rate" in limited[0].json()["error"]
    assert client.get("/readyz", headers=server.headers("alice")).status_code == 200  # per token


def test_metrics_and_docs(client, server, finished_job):
    text = client.get("/metrics").text  # loopback: no token needed
    for name in ("medmm_requests_total", "medmm_job_stage_seconds_bucket", "medmm_queue_depth",
                 "medmm_inflight_jobs", "medmm_model_info", "medmm_jobs_total", "medmm_ready 1.0"):
        assert name in text, name
    assert 'stage="model"' in text and 'endpoint="/v1/jobs/{job_id}"' in text
    assert client.get("/docs").status_code == 401 and client.get("/openapi.json").status_code == 401
    assert client.get("/docs", headers=server.headers()).status_code == 200
    spec = client.get("/openapi.json", headers=server.headers()).json()
    assert {"/v1/jobs", "/v1/predict", "/v1/jobs/{job_id}", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_drift_psi_exported_per_finding_and_input(client, server, inputs):
    """After min_samples (2) diagnosed scans the PSI gauges against the run's training-time reference exist."""
    import re

    for _ in range(2):
        job = client.post("/v1/jobs", content=inputs["nifti"], headers=server.headers()).json()["job_id"]
        assert _finish(client, server, job)["status"] == "done"
    labels = client.get(f"/v1/jobs/{job}/result.json", headers=server.headers()).json()["model"]["labels"]
    text = client.get("/metrics").text
    psi = dict(re.findall(r'^medmm_drift_psi\{feature="([^"]+)"\} (\S+)$', text, re.M))
    assert set(psi) == {"input_hu", *labels}
    assert all(float(v) >= 0 for v in psi.values())
    assert re.search(r"^medmm_drift_alert [01]\.0$", text, re.M)
    assert float(re.search(r"^medmm_drift_samples (\S+)$", text, re.M).group(1)) >= 2


def test_audit_log_records_jobs(server, finished_job):
    rows = [json.loads(line) for line in (server.state_dir / "audit.jsonl").read_text().splitlines()]
    jobs = [r for r in rows if r["event"] == "job"]
    assert jobs and all(r["token"] and len(r["input_sha256"]) == 64 and r["outcome"] in ("done", "failed")
                        for r in jobs)
    assert all("model" in r["durations_s"] for r in jobs if r["outcome"] == "done")


def test_phi_sentinel_nowhere(client, server, inputs):
    """The zip uploaded above carries PHI sentinels: none reaches log, metrics, audit or outputs."""
    from serving import SENTINELS

    r = client.post("/v1/jobs", params={"indication": "FREETEXTMARKER cough"}, content=inputs["zip"],
                    headers=server.headers())
    _finish(client, server, r.json()["job_id"])
    assert "POST /v1/jobs HTTP" in server.log()  # access log kept, query string (free text) dropped
    assert "FREETEXTMARKER" not in server.log()
    texts = {"log": server.log(), "metrics": client.get("/metrics").text,
             "audit": (server.state_dir / "audit.jsonl").read_text()}
    for path in (server.state_dir / "spool").glob("*/out/*"):
        texts[str(path.relative_to(server.state_dir))] = path.read_bytes().decode("latin-1")
    assert sum(name.endswith("report_sr.dcm") for name in texts) >= 1
    for where, text in texts.items():
        for sentinel in SENTINELS:
            assert sentinel not in text, f"PHI sentinel {sentinel!r} in {where}"


def test_token_allowed_phi_gets_identified_sr(client, server, inputs):
    """Default outputs are de-identified; a token created with --allow-phi gets the source identity."""
    import pydicom

    from serving import PHI

    srs = {}
    for who in ("alice", "clinic"):
        job = client.post("/v1/jobs", content=inputs["zip"], headers=server.headers(who)).json()["job_id"]
        assert _finish(client, server, job, who)["status"] == "done"
        raw = client.get(f"/v1/jobs/{job}/report_sr.dcm", headers=server.headers(who)).content
        srs[who] = pydicom.dcmread(io.BytesIO(raw))
    assert srs["alice"].PatientID == "ANONYMOUS"
    assert srs["clinic"].PatientID == PHI["patient_id"]
