"""Load test of ``medmm serve`` on loopback: C concurrent clients for D seconds each.

Every client loops: POST /v1/jobs (a synthetic chest CT NIfTI at the model's size) → poll
GET /v1/jobs/{id} every ``--poll`` seconds until done → next. A 429 (queue full) is deliberate
back-pressure: it is counted apart, the client waits Retry-After (capped at 2 s) and tries again.
Reported per C: jobs finished per second, job latency (submit → done) p50/p95/p99, 429s, other
errors (must be 0), whether every accepted job finished, and the machine's load average during
the phase (the numbers are only meaningful next to it on a shared machine).
Server memory (psutil RSS) of the idle server — after the warm-up, then after each phase, when every
accepted job has finished — with the running count of HTTP requests: the growth from the warm-up to
the first such point at least ``--rss-requests`` (500) requests later must stay below 5 % (also
reported: at the end, and the peak sampled every 0.25 s while jobs ran). Idle to idle, because a
job in flight holds a few hundred MB of transient tensors that say nothing about a leak.

Usage::

    python benchmarks/serve_load.py                       # demo model if demo_out/run exists, else a tiny one
    python benchmarks/serve_load.py --model demo_out/run --clients 1 4 16 --duration 60 --json load.json
    MALLOC_ARENA_MAX=2 python benchmarks/serve_load.py ...   # the server inherits the environment

The server runs with its defaults except: a high rate limit (the clients are one trusted user),
``max_concurrent`` = 1 and ``max_queue`` = 8 (options), so C = 16 meets the queue limit on purpose.
Exit status 1 when an acceptance check fails (errors, lost jobs, RSS growth >= 5 %).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCAN_SEED = 910_000  # synthetic patients far from any seed a demo or test uses


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


def model_scan_size(run: Path) -> int:
    """The edge of the synthetic scans the run was trained on (64 when it says nothing)."""
    import yaml

    try:
        workflow = yaml.safe_load((run / "workflow.yaml").read_text(encoding="utf-8")) or {}
        return int(((workflow.get("data") or {}).get("synthetic") or {}).get("size") or 64)
    except (OSError, ValueError, TypeError, yaml.YAMLError):
        return 64


def scan_bodies(folder: Path, size: int, n: int) -> list[bytes]:
    """``n`` different synthetic chest CTs (NIfTI .nii.gz bytes) of edge ``size``."""
    from medmm.data.synth.generator import render_case
    from medmm.io import write_nifti

    bodies = []
    for i in range(n):
        hu, affine, *_ = render_case(SCAN_SEED + i, size=size)
        path = folder / f"scan{i}.nii.gz"
        write_nifti(hu, affine, path)
        bodies.append(path.read_bytes())
    return bodies


class Load:
    """Shared counters of the whole run (requests) and of one phase (the rest)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.new_phase()

    def new_phase(self) -> None:
        with self.lock:
            self.latencies: list[float] = []
            self.accepted: list[str] = []
            self.rejected_429 = 0
            self.retried_reads = 0
            self.errors: list[str] = []

    def count(self, n: int = 1) -> None:
        with self.lock:
            self.requests += n

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def client_loop(url: str, headers: dict, bodies: list[bytes], first: int, stop_at: float, poll: float,
                load: Load) -> None:
    import httpx

    n = first
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            try:
                r = client.post("/v1/jobs", content=bodies[n % len(bodies)])
            except httpx.HTTPError as err:
                load.error(f"POST {type(err).__name__}")
                continue
            finally:
                load.count()
            n += 1
            if r.status_code == 429:
                with load.lock:
                    load.rejected_429 += 1
                time.sleep(min(2.0, float(r.headers.get("Retry-After", "1"))))
                continue
            if r.status_code != 202:
                load.error(f"POST {r.status_code} {r.text[:80]}")
                continue
            job = r.json()["job_id"]
            with load.lock:
                load.accepted.append(job)
            failures = 0
            while failures < 20:  # an accepted job is always followed to the end, even past stop_at
                time.sleep(poll)
                try:
                    s = client.get(f"/v1/jobs/{job}")
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # the server closed a keep-alive connection as this poll reused it (a race of
                    # uvicorn's keep-alive timer on a starved machine): a status GET is idempotent,
                    # so retry it on a new connection as any HTTP client would; counted apart
                    with load.lock:
                        load.retried_reads += 1
                    failures += 1
                    continue
                except httpx.HTTPError as err:
                    load.error(f"GET {type(err).__name__}")
                    failures += 1
                    continue
                finally:
                    load.count()
                status = s.json().get("status") if s.status_code == 200 else None
                if status == "done":
                    with load.lock:
                        load.latencies.append(time.monotonic() - start)
                    break
                if status not in ("queued", "running"):
                    load.error(f"job {status or s.status_code}: {s.text[:80]}")
                    break


class Sampler(threading.Thread):
    """Every 0.25 s: (HTTP requests so far, server RSS bytes, 1-minute load average)."""

    def __init__(self, pid: int, load: Load):
        import psutil

        super().__init__(daemon=True)
        self.proc, self.load = psutil.Process(pid), load
        self.samples: list[tuple[int, int, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.samples.append((self.load.requests, self.proc.memory_info().rss, os.getloadavg()[0]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def run_phase(url: str, headers: dict, bodies: list[bytes], clients: int, duration: float, poll: float,
              load: Load, sampler: Sampler | None = None) -> dict:
    load.new_phase()
    first_sample = len(sampler.samples) if sampler else 0
    requests_before = load.requests
    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(url, headers, bodies, i, start + duration, poll, load))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    loads = [s[2] for s in sampler.samples[first_sample:]] if sampler else [os.getloadavg()[0]]
    return {"clients": clients, "seconds": round(elapsed, 1), "jobs_done": len(load.latencies),
            "throughput_jobs_per_s": round(len(load.latencies) / elapsed, 3),
            "p50_s": round(percentile(load.latencies, 50), 3), "p95_s": round(percentile(load.latencies, 95), 3),
            "p99_s": round(percentile(load.latencies, 99), 3), "rejected_429": load.rejected_429,
            "retried_status_reads": load.retried_reads,
            "other_errors": len(load.errors), "error_examples": sorted(set(load.errors))[:5],
            "accepted": len(load.accepted), "all_accepted_done": len(load.accepted) == len(load.latencies),
            "http_requests": load.requests - requests_before,
            "load_avg_1m_mean": round(sum(loads) / max(1, len(loads)), 2), "load_avg_1m_max": round(max(loads), 2)}


def rss_report(idle: list[tuple[int, int]], samples: list[tuple[int, int, float]], rss_start: int,
               start_requests: int, window: int) -> dict:
    """RSS growth of the idle server (no job in flight: between phases) from the end of the warm-up
    to the first idle point ``window`` requests later, and to the end; the peak while jobs ran."""
    after = next(((req, rss) for req, rss in idle if req - start_requests >= window), None)
    end_req, end_rss = idle[-1]
    return {"rss_start_mib": round(rss_start / 2**20, 1),
            "requests_at_check": after[0] - start_requests if after else None,
            "rss_at_check_mib": round(after[1] / 2**20, 1) if after else None,
            "rss_growth_percent": round((after[1] - rss_start) / rss_start * 100, 2) if after else None,
            "requests_total": end_req - start_requests, "rss_end_mib": round(end_rss / 2**20, 1),
            "rss_growth_end_percent": round((end_rss - rss_start) / rss_start * 100, 2),
            "rss_peak_mib": round(max([rss for _, rss, _ in samples] + [end_rss]) / 2**20, 1),
            "rss_idle_points": [[req - start_requests, round(rss / 2**20, 1)] for req, rss in idle]}


def server_view(url: str, headers: dict) -> dict:
    """From the server's own /metrics: mean seconds per job stage, and the drift PSI/alert it exports."""
    import re

    import httpx

    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    sums = dict(re.findall(r'^medmm_job_stage_seconds_sum\{stage="(\w+)"\} (\S+)$', text, re.M))
    counts = dict(re.findall(r'^medmm_job_stage_seconds_count\{stage="(\w+)"\} (\S+)$', text, re.M))
    stages = {k: round(float(sums[k]) / float(counts[k]), 3) for k in sums if float(counts.get(k, 0)) > 0}
    psi = {k: round(float(v), 4) for k, v in re.findall(r'^medmm_drift_psi\{feature="([^"]+)"\} (\S+)$', text, re.M)}
    alert = re.search(r"^medmm_drift_alert (\S+)$", text, re.M)
    return {"mean_stage_s": stages, "drift_psi": psi, "drift_alert": float(alert.group(1)) if alert else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between status polls of one client")
    parser.add_argument("--scans", type=int, default=8, help="distinct synthetic scans the clients cycle through")
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--rss-requests", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
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
    (state / "serve.yaml").write_text(yaml.safe_dump({"limits": {
        "rate_per_minute": 600000, "rate_burst": 10000, "max_concurrent": args.max_concurrent,
        "max_queue": args.max_queue}}))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen(
        [sys.executable, "-m", "medmm", "serve", "--model", str(model), "--port", str(port), "--state-dir",
         str(state / "state"), "--tokens-file", str(state / "tokens.json"), "--config", str(state / "serve.yaml"),
         "--log-level", "warning"], env=env)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    size = model_scan_size(Path(model))
    bodies = scan_bodies(state, size, args.scans)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}")
            time.sleep(0.5)
        else:
            raise SystemExit("server not ready after 300 s")
        load = Load()
        run_phase(url, headers, bodies, 2, 10, args.poll, load)  # warm-up: allocator, caches, first-call costs
        time.sleep(1.0)  # as at every idle point below
        rss_start, start_requests = psutil.Process(server.pid).memory_info().rss, load.requests
        sampler = Sampler(server.pid, load)
        sampler.start()
        print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}\nmodel: {model} (scans {size}^3)\n"
              f"CPU cores visible: {os.cpu_count()}; load average before: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (shared machine: numbers are contended)\n")
        print(f"{'C':>3} {'jobs/s':>7} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'done':>5} {'429':>5} {'errors':>6} "
              f"{'all done':>8} {'requests':>8} {'load1':>11}")
        results, idle = [], []
        server_proc = psutil.Process(server.pid)

        def idle_point() -> None:  # every accepted job has finished when a phase returns
            time.sleep(1.0)
            idle.append((load.requests, server_proc.memory_info().rss))

        for clients in args.clients:
            res = run_phase(url, headers, bodies, clients, args.duration, args.poll, load, sampler)
            results.append(res)
            idle_point()
            print(f"{clients:>3} {res['throughput_jobs_per_s']:>7.3f} {res['p50_s']:>7.2f} {res['p95_s']:>7.2f} "
                  f"{res['p99_s']:>7.2f} {res['jobs_done']:>5} {res['rejected_429']:>5} {res['other_errors']:>6} "
                  f"{str(res['all_accepted_done']):>8} {res['http_requests']:>8} "
                  f"{res['load_avg_1m_mean']:>5.2f}/{res['load_avg_1m_max']:<5.2f}", flush=True)
            if res["retried_status_reads"]:
                print(f"    status polls retried after the server closed a keep-alive connection: "
                      f"{res['retried_status_reads']}")
            for example in res["error_examples"]:
                print(f"    error: {example}")
        if load.requests - start_requests < args.rss_requests:  # top up with cheap requests if needed
            while load.requests - start_requests < args.rss_requests:
                httpx.get(f"{url}/readyz", headers=headers, timeout=10)
                load.count()
            idle_point()
        sampler.stopped.set()
        sampler.join()
        rss = rss_report(idle, sampler.samples, rss_start, start_requests, args.rss_requests)
        print(f"\nserver RSS (idle) after warm-up {rss['rss_start_mib']} MiB; after {rss['requests_at_check']} "
              f"requests {rss['rss_at_check_mib']} MiB ({rss['rss_growth_percent']:+.2f} %); at the end "
              f"({rss['requests_total']} requests) {rss['rss_end_mib']} MiB ({rss['rss_growth_end_percent']:+.2f} %); "
              f"peak while diagnosing {rss['rss_peak_mib']} MiB")
        view = server_view(url, headers)
        print(f"mean seconds per job stage (server metrics, warm-up included): {view['mean_stage_s']}")
        if view["drift_psi"]:
            print(f"drift: input_hu PSI {view['drift_psi'].get('input_hu')}, max finding PSI "
                  f"{max(v for k, v in view['drift_psi'].items() if k != 'input_hu'):.4f}, "
                  f"medmm_drift_alert {view['drift_alert']}")
        ok = (all(r["other_errors"] == 0 and r["all_accepted_done"] for r in results)
              and rss["rss_growth_percent"] is not None and rss["rss_growth_percent"] < 5)
        report = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "model": str(model),
                  "scan_size": size, "cpu_count": os.cpu_count(), "max_concurrent": args.max_concurrent,
                  "max_queue": args.max_queue, "poll_s": args.poll, "results": results, **rss, **view, "ok": ok}
        print(json.dumps(report))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        if not ok:
            raise SystemExit(1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


if __name__ == "__main__":
    main()
