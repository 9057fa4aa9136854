"""Helpers for the serve tests: a tiny trained run, PHI-planted series, and `medmm serve` in a subprocess.

The server runs exactly as a user starts it (``python -m medmm serve ...``) on a free loopback
port; every wait is bounded by a deadline so a broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PHI = {"patient_name": "SENTINELNAME^PHIGIVEN", "patient_id": "SENTINELPID9731", "birth_date": "19030405",
       "study_date": "19040506"}
SENTINELS = ("SENTINELNAME", "PHIGIVEN", "SENTINELPID9731", "19030405", "19040506")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_workflow(cache_dir: Path) -> dict:
    """Trains in seconds on one CPU core (32^3 synthetic cases, NIfTI + DICOM, tiny network)."""
    return {
        "name": "serve-tiny", "seed": 0,
        "data": {"source": "synthetic",
                 "synthetic": {"n": 8, "size": 32, "seed": 0, "cache_dir": str(cache_dir), "format": "both"},
                 "val_fraction": 0.25, "test_fraction": 0.25},
        "preprocessing": {"spacing": [4.0, 4.0, 4.0], "roi_size": [32, 32, 32], "hu_window": [-1000, 400]},
        "network": {"image_encoder": {"widths": [8, 8, 8, 16], "depth": [1, 1, 1, 1], "embed_dim": 32},
                    "report_generator": {"n_layer": 1, "n_embd": 32, "max_new_tokens": 16, "max_report_tokens": 32},
                    "fusion": {"hidden": 16}},
        "training": {"epochs": 1, "batch_size": 4},
    }


def phantom_hu(shape=(32, 32, 32), seed: int = 0) -> np.ndarray:
    """The reliability corpus's body-with-lungs phantom (HU), at the serve tests' 32^3."""
    from reliability.realrun import phantom

    return phantom(shape, seed)


def phi_series(folder: Path, uid_seed: str = "serve-phi") -> list[Path]:
    """A 32^3 CT series with PHI sentinels in its patient and study modules."""
    from medmm.io import write_dicom_series

    return write_dicom_series(phantom_hu(), np.diag([3.0, 3.0, 3.0, 1.0]), folder, series_description="chest",
                              uid_seed=uid_seed, **PHI)


def zip_bytes(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
    return buf.getvalue()


def nifti_bytes(folder: Path) -> bytes:
    from medmm.io import write_nifti

    path = folder / "scan.nii.gz"
    write_nifti(phantom_hu(seed=1), np.diag([3.0, 3.0, 3.0, 1.0]), path)
    return path.read_bytes()


@dataclass
class Server:
    """A running ``medmm serve`` subprocess."""

    proc: subprocess.Popen
    url: str
    state_dir: Path
    log_path: Path
    tokens_file: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, name: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(run_dir: Path, state_dir: Path, tokens_file: Path, tokens: dict[str, str], *extra: str,
                 config: dict | None = None,
                 wait_ready: bool = True, scheme: str = "http", verify=None, timeout: float = 180) -> Server:
    """Start ``medmm serve`` and wait for /healthz (and /readyz unless ``wait_ready`` is False)."""
    import httpx
    import yaml

    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "medmm", "serve", "--model", str(run_dir), "--port", str(port),
            "--state-dir", str(state_dir), "--tokens-file", str(tokens_file), *extra]
    if config:
        cfg_path = state_dir.parent / f"{state_dir.name}_serve.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        args += ["--config", str(cfg_path)]
    log_path = state_dir.parent / f"{state_dir.name}_server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    logfile = log_path.open("ab")
    proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, env=env, cwd=str(state_dir.parent))
    server = Server(proc, f"{scheme}://127.0.0.1:{port}", state_dir, log_path, tokens_file, dict(tokens))
    token = {"Authorization": f"Bearer {next(iter(tokens.values()))}"}
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=verify if verify is not None else True, timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"medmm serve exited with {proc.returncode}:\n{server.log()[-3000:]}")
            try:
                if client.get(f"{server.url}/healthz").status_code == 200:
                    if not wait_ready:
                        return server
                    if client.get(f"{server.url}/readyz", headers=token).status_code == 200:
                        return server
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    server.stop()
    raise TimeoutError(f"medmm serve not ready after {timeout} s:\n{server.log()[-3000:]}")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
