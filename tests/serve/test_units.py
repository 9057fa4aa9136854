"""Fast unit tests of the serve building blocks: tokens, rate limit, drift PSI, config, intake, job store."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile

import numpy as np
import pytest

from medmm.errors import MedmmConfigError, MedmmInputError


# ------------------------------------------------------------------------------------ tokens
def test_token_add_prints_token_last_and_stores_only_hash(tmp_path):
    from click.testing import CliRunner

    from medmm.cli import cli
    from medmm.serve.tokens import TokenStore, token_hash

    path = tmp_path / "tokens.json"
    out = CliRunner().invoke(cli, ["serve", "token", "add", "pacs", "--tokens-file", str(path)])
    assert out.exit_code == 0, out.output
    token = out.output.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token
    text = path.read_text()
    assert token not in text and token_hash(token) in text
    assert (path.stat().st_mode & 0o077) == 0  # owner-only
    store = TokenStore(path)
    assert store.verify(token).name == "pacs"
    assert store.verify(token + "x") is None and store.verify("") is None and store.verify(None) is None
    out = CliRunner().invoke(cli, ["serve", "token", "revoke", "pacs", "--tokens-file", str(path)])
    assert out.exit_code == 0 and store.verify(token) is None


def test_token_names_and_scopes_validated(tmp_path):
    from medmm.serve.tokens import TokenStore

    store = TokenStore(tmp_path / "t.json")
    store.add("a", scopes=["jobs"])
    with pytest.raises(MedmmInputError, match="exists"):
        store.add("a")
    with pytest.raises(MedmmInputError, match="scope"):
        store.add("b", scopes=["admin"])
    with pytest.raises(MedmmInputError, match="no token"):
        store.revoke("zzz")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(MedmmConfigError, match="tokens file"):
        TokenStore(tmp_path / "bad.json").load()


def test_token_file_mode_widened_by_an_admin_is_kept(tmp_path):
    """A deployment may make the hash file readable for a container's user; add/revoke must not undo it."""
    import os

    from medmm.serve.tokens import TokenStore

    store = TokenStore(tmp_path / "t.json")
    store.add("a")
    assert (store.path.stat().st_mode & 0o777) == 0o600
    os.chmod(store.path, 0o644)
    store.add("b")
    store.revoke("a")
    assert (store.path.stat().st_mode & 0o777) == 0o644 and [t.name for t in store.load()] == ["b"]


def test_verify_checks_every_hash(tmp_path, monkeypatch):
    """Constant time in the number of matches: compare_digest runs against all stored hashes."""
    import hmac

    from medmm.serve import tokens as tokens_mod

    store = tokens_mod.TokenStore(tmp_path / "t.json")
    first = store.add("first")
    for i in range(4):
        store.add(f"t{i}")
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(tokens_mod.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert store.verify(first).name == "first"
    assert len(calls) == 5


# -------------------------------------------------------------------------------- rate limit
def test_rate_limiter_bucket():
    from medmm.serve.ratelimit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(rate_per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.check("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.check("a") == 1  # 1 request/s: wait a second
    assert limiter.check("b") == 0  # per key
    now[0] += 1.0
    assert limiter.check("a") == 0


# ------------------------------------------------------------------------------------- drift
def test_psi_zero_for_same_and_large_for_shift():
    from medmm.serve.drift import bin_shares, psi, quantile_bins

    rng = np.random.default_rng(0)
    ref = rng.normal(-500, 200, 100_000)
    edges, expected = quantile_bins({f"{q:g}": float(np.quantile(ref, q)) for q in (0.01, 0.25, 0.5, 0.75, 0.99)})
    assert expected.sum() == pytest.approx(1.0) and len(expected) == len(edges) + 1
    assert psi(expected, bin_shares(rng.normal(-500, 200, 100_000), edges)) < 0.01
    assert psi(expected, bin_shares(rng.normal(100, 200, 100_000), edges)) > 1.0
    assert psi([0.1, 0.9], [0.5, 0.5]) == pytest.approx(0.4 * np.log(5) + (-0.4) * np.log(0.5 / 0.9), rel=1e-3)


def test_quantile_bins_merge_values_piled_at_the_window_edge():
    from medmm.serve.drift import bin_shares, hu_sample, psi, quantile_bins

    edges, expected = quantile_bins({"0.01": -1000, "0.05": -1000, "0.25": -1000, "0.5": -200, "0.99": 400}, 400)
    assert edges.tolist() == [-1000, -200] and expected.tolist() == pytest.approx([0.25, 0.25, 0.5])
    scan = np.concatenate([np.full(2500, -1024.0), np.linspace(-990, -210, 2500), np.linspace(-190, 390, 4900),
                           np.full(100, 1500.0)])
    assert psi(expected, bin_shares(hu_sample(scan, (-1000, 400)), edges)) < 0.01


def test_float_scans_of_the_training_population_do_not_read_as_drift():
    """Training data is whole HU (int16) and its reference quantiles went through the float32
    intensity round trip; float scans of the same population (a resampled NIfTI) must not alert."""
    from medmm.data.synth.generator import render_case
    from medmm.serve.drift import bin_shares, hu_sample, psi, quantile_bins

    window = (-1000.0, 3000.0)
    scans = [render_case(910_000 + i, size=32)[0] for i in range(4)]
    stored = [np.rint(hu).astype(np.int16) for hu in scans]
    # as training does: intensity = (clip(HU) - lo) / (hi - lo) in float32, mapped back to HU in float64
    intensity = [((np.clip(s, *window) - window[0]) / (window[1] - window[0])).astype(np.float32) for s in stored]
    ref_hu = np.concatenate([window[0] + i.ravel()[::7].astype(np.float64) * (window[1] - window[0])
                             for i in intensity])
    edges, expected = quantile_bins({f"{q:g}": float(np.quantile(ref_hu, q))
                                     for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)}, window[1])
    for served in (stored, scans):  # int16 as stored, and the float volumes
        sample = np.concatenate([hu_sample(s, window) for s in served])
        assert psi(expected, bin_shares(sample, edges, expected)) < 0.05
    # a real shift still shows: the same scans 150 HU denser, and with a thinner layer of air
    denser = np.concatenate([hu_sample(s + 150.0, window) for s in scans])
    assert psi(expected, bin_shares(denser, edges, expected)) > 0.25
    less_air = np.concatenate([hu_sample(np.where(s < -990, -900.0, s), window) for s in scans])
    assert psi(expected, bin_shares(less_air, edges, expected)) > 0.25


def test_drift_monitor_sets_alert_gauge():
    from medmm.serve.drift import DriftMonitor, hu_sample, reference_profile
    from medmm.serve.metrics import ServeMetrics

    rng = np.random.default_rng(0)
    ref = reference_profile([hu_sample(rng.normal(-600, 150, 5000), (-1000, 400)) for _ in range(5)],
                            [{"A": i < 1} for i in range(5)], ["A"])
    assert ref["val_positive_rate"] == {"A": 0.2}
    metrics = ServeMetrics()
    monitor = DriftMonitor(ref, metrics, psi_alert=0.25, min_samples=3, window=10, hu_window=(-1000, 400))
    for _ in range(3):
        values = monitor.observe(hu_sample(rng.normal(-600, 150, 5000), (-1000, 400)), {"A": False})
    assert values["input_hu"] < 0.05
    text = metrics.render().decode()
    assert 'medmm_drift_psi{feature="input_hu"}' in text
    for _ in range(10):  # scans now much denser, every one positive
        monitor.observe(hu_sample(rng.normal(200, 150, 5000), (-1000, 400)), {"A": True})
    assert monitor.alerting and "medmm_drift_alert 1.0" in metrics.render().decode()


def test_find_reference_order(tmp_path):
    from medmm.serve.drift import FORMAT, REFERENCE_FILE, find_reference

    run, state = tmp_path / "run", tmp_path / "state"
    run.mkdir()
    state.mkdir()
    assert find_reference(run, state, {}) is None
    (state / REFERENCE_FILE).write_text(json.dumps({"format": FORMAT, "n_scans": 1,
                                                     "val_positive_rate": {"A": 0.5}}))
    assert find_reference(run, state, {})["n_scans"] == 1
    stored = {"input_hu": {"quantiles": {"0.5": -300.0}}, "val_positive_rate": {}}  # RunMeta.reference shape
    assert find_reference(run, state, {"reference": stored}) == stored


# ------------------------------------------------------------------------------------ config
def test_serve_config_errors(tmp_path):
    from medmm.serve.config import load_serve_config, parse_peer

    path = tmp_path / "serve.yaml"
    path.write_text("limits:\n  max_queue: 0\n")
    with pytest.raises(MedmmConfigError, match="limits.max_queue"):
        load_serve_config(path)
    path.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(MedmmConfigError, match="cannot read"):
        load_serve_config(path)
    with pytest.raises(MedmmConfigError, match="allow_ae"):
        load_serve_config(None, {"dicom.port": 11112})
    with pytest.raises(MedmmConfigError, match="AE@host:port"):
        parse_peer("ORTHANC:4242")
    assert parse_peer("ORTHANC@127.0.0.1:4242") == ("ORTHANC", "127.0.0.1", 4242)
    assert load_serve_config(None, {"host": "0.0.0.0"}).loopback() is False
    assert load_serve_config(None, {"host": "::1"}).loopback() is True


# ------------------------------------------------------------------------------------ intake
def _chunks(data: bytes, size: int = 1000):
    async def gen():
        for i in range(0, len(data), size):
            yield data[i:i + size]
    return gen()


def test_stream_to_file_limit_and_hash(tmp_path):
    import hashlib

    from medmm.serve.intake import LimitExceeded, stream_to_file

    data = b"abc" * 1000
    size, sha = asyncio.run(stream_to_file(_chunks(data), tmp_path / "x", 10_000))
    assert size == 3000 and sha == hashlib.sha256(data).hexdigest()
    with pytest.raises(LimitExceeded):
        asyncio.run(stream_to_file(_chunks(data), tmp_path / "y", 2000))
    assert not (tmp_path / "y").exists()


def test_sniff_and_check_zip(tmp_path):
    from medmm.serve.intake import LimitExceeded, check_input, sniff_kind

    bad = tmp_path / "bad"
    bad.write_bytes(b"hello")
    with pytest.raises(MedmmInputError, match="neither"):
        sniff_kind(bad)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.dcm", b"x")
    (tmp_path / "evil.zip").write_bytes(buf.getvalue())
    assert sniff_kind(tmp_path / "evil.zip") == "zip"
    with pytest.raises(MedmmInputError, match="escapes"):
        check_input(tmp_path / "evil.zip", "zip", 100, 10_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.dcm", b"\0" * 200_000)
    (tmp_path / "big.zip").write_bytes(buf.getvalue())
    with pytest.raises(LimitExceeded, match="uncompressed"):
        check_input(tmp_path / "big.zip", "zip", 100, 100_000)


# ------------------------------------------------------------------------------------- store
def test_store_recover_and_purge(tmp_path):
    from medmm.serve.store import JobStore

    store = JobStore(tmp_path)
    ids = [store.new_id() for _ in range(3)]
    for job_id in ids:
        store.job_dir(job_id).mkdir(parents=True)
        store.add(job_id, "http", "nifti", "input.nii.gz", token="a")
    store.set_status(ids[0], "running")
    store.set_status(ids[1], "done")
    store.close()
    store = JobStore(tmp_path)  # "restart"
    assert store.recover() == [ids[0], ids[2]]
    assert store.get(ids[0]).attempts == 1
    time.sleep(0.05)
    assert store.purge_finished(0.01) == [ids[1]]
    assert store.get(ids[1]) is None and not store.job_dir(ids[1]).exists()


def test_uncommitted_uploads_purged_and_orphaned_dicom_series_requeued(tmp_path):
    """After a crash: an upload without a row (never got its 202) is deleted; a DICOM series moved
    into a job folder whose row was never committed goes back to incoming (it was acknowledged)."""
    from medmm.serve.config import load_serve_config
    from medmm.serve.dicom_node import DicomNode
    from medmm.serve.service import Service

    cfg = load_serve_config(None, {"state_dir": tmp_path / "state", "dicom.port": 11112, "dicom.allow_ae": ["PACS"]})
    service = Service(cfg)
    store = service.store
    committed, upload, series = store.new_id(), store.new_id(), store.new_id()
    (store.job_dir(committed)).mkdir(parents=True)
    (store.job_dir(committed) / "input.nii").write_bytes(b"x")
    store.add(committed, "http", "nifti", "input.nii")
    store.job_dir(upload).mkdir()
    (store.job_dir(upload) / "upload.part").write_bytes(b"half")
    (store.job_dir(series) / "input").mkdir(parents=True)
    (store.job_dir(series) / "input" / "a.dcm").write_bytes(b"dicom")
    assert store.purge_uncommitted() == [upload]
    assert store.job_dir(committed).is_dir() and store.job_dir(series).is_dir()
    node = DicomNode(service)  # adopts the orphan: no network until start()
    assert (node.incoming / series / "a.dcm").read_bytes() == b"dicom" and not store.job_dir(series).exists()
    assert series in node._last_seen
    store.close()


# ---------------------------------------------------------------- app without a model loaded
def _app(tmp_path, **overrides):
    from fastapi.testclient import TestClient

    from medmm.serve.app import create_app
    from medmm.serve.config import load_serve_config
    from medmm.serve.service import Service
    from medmm.serve.tokens import TokenStore

    store = TokenStore(tmp_path / "tokens.json")
    tokens = {"ops": store.add("ops", ["metrics"]), "user": store.add("user", ["jobs"])}
    cfg = load_serve_config(None, {"state_dir": tmp_path / "state", "tokens_file": tmp_path / "tokens.json",
                                   "model": tmp_path / "no_run", **overrides})
    return TestClient(create_app(Service(cfg))), tokens  # no `with`: lifespan (model loading) not run


def test_metrics_need_a_token_off_loopback(tmp_path):
    client, tokens = _app(tmp_path, host="0.0.0.0")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {tokens['user']}"}).status_code == 403
    r = client.get("/metrics", headers={"Authorization": f"Bearer {tokens['ops']}"})
    assert r.status_code == 200 and "medmm_requests_total" in r.text
    public, _ = _app(tmp_path / "p", host="0.0.0.0", metrics_public=True)
    assert public.get("/metrics").status_code == 200
    loopback, _ = _app(tmp_path / "l", host="127.0.0.1")
    assert loopback.get("/metrics").status_code == 200


def test_readyz_503_before_model(tmp_path):
    client, tokens = _app(tmp_path)
    r = client.get("/readyz", headers={"Authorization": f"Bearer {tokens['user']}"})
    assert r.status_code == 503 and r.json()["ready"] is False


def test_serve_cli_errors_are_one_line(tmp_path, capsys):
    from medmm.cli import main

    for argv, needle in ((["serve"], "--model"), (["serve", "--model", str(tmp_path)], "not a medmm run"),
                         (["serve", "--model", str(tmp_path), "--dicom-port", "11112"], "allow_ae")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1



def test_broken_tokens_file_is_a_500_not_a_crash(tmp_path):
    client, tokens = _app(tmp_path)
    (tmp_path / "tokens.json").write_text("{broken")
    r = client.get("/readyz", headers={"Authorization": f"Bearer {tokens['user']}"})
    assert r.status_code == 500 and r.json() == {"error": "server configuration error (see the server log)"}


def test_find_reference_reads_a_typed_run_meta(tmp_path):
    from types import SimpleNamespace

    from medmm.serve.drift import find_reference

    meta = SimpleNamespace(reference={"input_hu": None, "val_positive_rate": {"A": 0.3}})
    assert find_reference(tmp_path, tmp_path, meta)["val_positive_rate"] == {"A": 0.3}
    assert find_reference(tmp_path, tmp_path, SimpleNamespace(reference=None)) is None


def test_jobs_refused_with_503_when_the_model_failed_to_load(tmp_path):
    from fastapi.testclient import TestClient

    client, tokens = _app(tmp_path, **{"limits.rate_burst": 10_000})
    with TestClient(client.app) as running:  # lifespan runs: loading tmp_path/no_run fails
        auth = {"Authorization": f"Bearer {tokens['user']}"}
        wait = time.monotonic() + 30
        while running.get("/readyz", headers=auth).json().get("error", "").startswith("model is loading"):
            assert time.monotonic() < wait
            time.sleep(0.05)
        r = running.post("/v1/jobs", content=b"x", headers=auth)
        assert r.status_code == 503 and r.json()["error"].startswith("model not loaded: ")


def test_queue_full_is_429_with_retry_after(tmp_path):
    """No worker runs (lifespan not started), so accepted jobs stay queued until the queue is full."""
    import nibabel as nib

    from medmm.serve.tokens import TokenStore

    client, _ = _app(tmp_path, **{"limits.max_queue": 2, "limits.rate_burst": 10_000})
    auth = {"Authorization": f"Bearer {TokenStore(tmp_path / 'tokens.json').add('both', ['jobs', 'predict'])}"}
    body = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_bytes()
    assert [client.post("/v1/jobs", content=body, headers=auth).status_code for _ in range(2)] == [202, 202]
    for path in ("/v1/jobs", "/v1/predict"):
        r = client.post(path, content=body, headers=auth)
        assert r.status_code == 429 and "queue" in r.json()["error"], r.text
        assert int(r.headers["Retry-After"]) >= 1
    assert len(list((tmp_path / "state" / "spool").iterdir())) == 2  # refused uploads left nothing behind
