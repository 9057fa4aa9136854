"""Load test of ``medmm serve`` on loopback: C concurrent clients for D seconds each.

Every client loops: POST /v1/jobs (a 32^3 NIfTI scan) → poll GET /v1/jobs/{id} every 50 ms until
done → next. A 429 (queue full) is deliberate back-pressure: the client waits Retry-After (capped
at 2 s) and tries again. Reported per C: jobs finished per second, job latency (submit → done)
p50/p95/p99, 429 count, other errors (must be 0), and whether every accepted job finished.
Server memory: RSS (psutil) after a warm-up and after ``--rss-requests`` further HTTP requests;
the growth must stay below 5 %.

Usage::

    python benchmarks/serve_load.py                       # demo model if demo_out/run exists, else a tiny one
    python benchmarks/serve_load.py --model runs/x --clients 1 4 16 --duration 60

The server runs with its defaults except: a high rate limit (the clients are one trusted user),
``max_concurrent`` = 1 and ``max_queue`` = 8, so C = 16 meets the queue limit on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_model(scratch: Path) -> Path:
    for candidate in (REPO / "demo_out" / "run", Path("/work/main/demo_out/run")):
        if (candidate / "medmm.json").is_file():
            return candidate
    sys.path.insert(0, str(Path(__file__).parent))
    from infer_scaling import train_tiny  # the benchmarks' shared tiny model

    return train_tiny(scratch)


def scan_bytes(folder: Path) -> bytes:
    import numpy as np

    from medmm.io import write_nifti

    rng = np.random.default_rng(0)
    hu = np.full((32, 32, 32), -1000.0, np.float32)
    hu[4:28, 4:28, :] = 40.0
    hu[6:15, 8:24, :] = -850.0
    hu[17:26, 8:24, :] = -850.0
    path = folder / "scan.nii.gz"
    write_nifti(hu + rng.normal(0, 5, hu.shape).astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]), path)
    return path.read_bytes()


class Load:
    """Shared counters of one load phase."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted: list[str] = []
        self.rejected_429 = 0
        self.errors: list[str] = []
        self.requests = 0

    def count(self, n: int = 1) -> None:
        with self.lock:
            self.requests += n


def client_loop(url: str, headers: dict, body: bytes, stop_at: float, load: Load) -> None:
    import httpx

    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            r = client.post("/v1/jobs", content=body)
            load.count()
            if r.status_code == 429:
                with load.lock:
                    load.rejected_429 += 1
                time.sleep(min(2.0, float(r.headers.get("Retry-After", "1"))))
                continue
            if r.status_code != 202:
                load.errors.append(f"POST {r.status_code}")
                continue
            job = r.json()["job_id"]
            with load.lock:
                load.accepted.append(job)
            while True:  # an accepted job is always followed to the end, even past stop_at
                s = client.get(f"/v1/jobs/{job}")
                load.count()
                status = s.json().get("status") if s.status_code == 200 else None
                if status == "done":
                    with load.lock:
                        load.latencies.append(time.monotonic() - start)
                    break
                if status not in ("queued", "running"):
                    load.errors.append(f"job {status or s.status_code}")
                    break
                time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def run_phase(url: str, headers: dict, body: bytes, clients: int, duration: float) -> dict:
    load = Load()
    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(url, headers, body, start + duration, load))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {"clients": clients, "seconds": round(elapsed, 1), "jobs_done": len(load.latencies),
            "throughput_jobs_per_s": round(len(load.latencies) / elapsed, 3),
            "p50_s": round(percentile(load.latencies, 50), 3), "p95_s": round(percentile(load.latencies, 95), 3),
            "p99_s": round(percentile(load.latencies, 99), 3), "rejected_429": load.rejected_429,
            "other_errors": len(load.errors), "accepted": len(load.accepted),
            "all_accepted_done": len(load.accepted) == len(load.latencies), "http_requests": load.requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rss-requests", type=int, default=500)
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "medmm_serve_load")
    args = parser.parse_args()

    import httpx
    import psutil
    import yaml

    from medmm.serve.tokens import TokenStore

    args.scratch.mkdir(parents=True, exist_ok=True)
    model = args.model or pick_model(args.scratch)
    state = Path(tempfile.mkdtemp(prefix="state_", dir=args.scratch))
    token = TokenStore(state / "tokens.json").add("bench")
    (state / "serve.yaml").write_text(yaml.safe_dump(
        {"limits": {"rate_per_minute": 600000, "rate_burst": 10000, "max_concurrent": 1, "max_queue": 8}}))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-m", "medmm", "serve", "--model", str(model), "--port", str(port), "--state-dir",
         str(state / "state"), "--tokens-file", str(state / "tokens.json"), "--config", str(state / "serve.yaml"),
         "--log-level", "warning"], env=env)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    body = scan_bytes(state)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("server not ready after 300 s")
        proc = psutil.Process(server.pid)
        run_phase(url, headers, body, 2, 10)  # warm-up: allocator, caches, first-call costs
        rss_start = proc.memory_info().rss
        print(f"model: {model}\nCPU cores visible: {os.cpu_count()} (shared with other work: numbers are "
              f"a lower bound)\n")
        print(f"{'C':>3} {'jobs/s':>7} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'done':>5} {'429':>5} {'errors':>6} "
              f"{'all done':>8} {'requests':>8}")
        results, requests = [], 0
        rss_at_n = None
        for clients in args.clients:
            res = run_phase(url, headers, body, clients, args.duration)
            requests += res["http_requests"]
            if rss_at_n is None and requests >= args.rss_requests:
                rss_at_n = (requests, proc.memory_info().rss)
            results.append(res)
            print(f"{clients:>3} {res['throughput_jobs_per_s']:>7.3f} {res['p50_s']:>7.2f} {res['p95_s']:>7.2f} "
                  f"{res['p99_s']:>7.2f} {res['jobs_done']:>5} {res['rejected_429']:>5} {res['other_errors']:>6} "
                  f"{str(res['all_accepted_done']):>8} {res['http_requests']:>8}")
        while rss_at_n is None:  # top up with cheap requests until --rss-requests were made
            httpx.get(f"{url}/readyz", headers=headers, timeout=10)
            requests += 1
            if requests >= args.rss_requests:
                rss_at_n = (requests, proc.memory_info().rss)
        growth = (rss_at_n[1] - rss_start) / rss_start * 100
        rss_end = proc.memory_info().rss
        print(f"\nserver RSS after warm-up {rss_start / 2**20:.1f} MiB; after {rss_at_n[0]} requests "
              f"{rss_at_n[1] / 2**20:.1f} MiB ({growth:+.2f} %); at the end ({requests} requests) "
              f"{rss_end / 2**20:.1f} MiB ({(rss_end - rss_start) / rss_start * 100:+.2f} %)")
        ok = all(r["other_errors"] == 0 and r["all_accepted_done"] for r in results) and growth < 5
        print(json.dumps({"results": results, "rss_growth_percent": round(growth, 2), "ok": ok}))
        if not ok:
            raise SystemExit(1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


if __name__ == "__main__":
    main()
