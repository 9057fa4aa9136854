"""`medmm serve --ray`: the service's FastAPI app on Ray Serve replicas (local 2-CPU Ray)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="medmm[ray] extra not installed")
pytest.importorskip("fastapi", reason="medmm[serve] extra not installed")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deployment(ray_local, tiny_run, tmp_path_factory):
    """The deployment (1-2 replicas) serving the tiny run; yields (url, token)."""
    import httpx
    from ray import serve

    from medmm.serve.config import load_serve_config
    from medmm.serve.ray_serve import APP_NAME, ReplicaSettings, deploy
    from medmm.serve.tokens import TokenStore

    root = tmp_path_factory.mktemp("ray_serve")
    token = TokenStore(root / "tokens.json").add("alice", scopes=["jobs", "predict", "metrics"])
    cfg = load_serve_config(None, {"model": tiny_run, "port": _free_port(), "state_dir": root / "state",
                                   "tokens_file": root / "tokens.json", "device": "cpu"})
    url = deploy(cfg, ReplicaSettings(min_replicas=1, max_replicas=2))
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 240
    with httpx.Client(timeout=10) as client:
        while client.get(f"{url}/readyz", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "replica never became ready"
            time.sleep(0.5)
    yield url, headers
    serve.delete(APP_NAME)
    serve.shutdown()


def _nifti_bytes(folder: Path) -> bytes:
    from medmm.data import synthesize

    manifest = synthesize(folder, 1, seed=11, size=32, fmt="nifti")
    return next((manifest.parent / "images").glob("*.nii.gz")).read_bytes()


def test_predict_and_jobs_answer(deployment, tmp_path):
    import httpx

    url, headers = deployment
    body = _nifti_bytes(tmp_path)
    with httpx.Client(timeout=120) as client:
        answer = client.post(f"{url}/v1/predict", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["findings"] and all(0.0 <= f["probability"] <= 1.0 for f in doc["findings"])

        accepted = client.post(f"{url}/v1/jobs", content=body, headers=headers)
        assert accepted.status_code == 202, accepted.text
        status_url = url + accepted.json()["status_url"]
        deadline = time.monotonic() + 120
        while (status := client.get(status_url, headers=headers).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert status["status"] == "done", status
        again = client.get(url + status["artefacts"]["result.json"], headers=headers).json()
        assert again["findings"] == doc["findings"]  # same scan, same model: same answer

        refused = client.post(f"{url}/v1/predict", content=b"garbage", headers=headers)
        assert refused.status_code == 400 and set(refused.json()) == {"error"}
        assert client.post(f"{url}/v1/predict", content=body).status_code == 401


def test_scales_up_under_ongoing_requests(deployment, tmp_path):
    """Concurrent synchronous predictions (ongoing > target 1 per replica) bring up the second replica."""
    import threading

    import httpx
    from ray import serve

    from medmm.serve.ray_serve import APP_NAME

    url, headers = deployment
    body = _nifti_bytes(tmp_path)
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(timeout=300) as client:
            while not stop.is_set():
                client.post(f"{url}/v1/predict", content=body, headers=headers)

    def running_replicas() -> int:
        deployment_status = serve.status().applications[APP_NAME].deployments["medmm"]
        return int(deployment_status.replica_states.get("RUNNING", 0))

    assert running_replicas() == 1
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 240
    try:
        while running_replicas() < 2:
            assert time.monotonic() < deadline, "no second replica under load"
            time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(300)
