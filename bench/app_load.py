"""Load benchmark of the sample app (run on demand, not part of the test suite).

    python bench/app_load.py [--duration 5] [--connections 16]

One uvicorn worker pinned to one core (taskset), the load generator (wrk, Debian package `wrk`)
pinned to another, everything on loopback. Measures requests/s and p50/p99 latency of:
  - GET /healthz           the floor: the framework, middleware and metrics, no database
  - GET /{code}            the hot read path, served from the in-process cache
  - GET /{code} (no cache) the same with CACHE_MAX_ENTRIES=0: a PostgreSQL query per request
and prints the ratio of each to the floor. Bounded: each run lasts --duration seconds. Uses
DATABASE_URL if set, else starts a throwaway PostgreSQL cluster (PostgreSQL 15 binaries on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.app.conftest import APP_DIR, PgCluster, free_port  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot read a wrk latency: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def start_server(
    database_url: str, server_cpu: int, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_TOKEN": TOKEN,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        # the metrics listener has a port of its own (METRICS_PORT); keep it off the default
        "METRICS_PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(APP_DIR),
        **env,
    }
    cmd = [sys.executable, "-m", "shortener"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(server_cpu), *cmd]
    proc = subprocess.Popen(cmd, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"the server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not become ready in 30 s")


def wrk(url: str, duration: float, connections: int, load_cpu: int | None) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url]
    if load_cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(load_cpu), *cmd]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    if errors or sock:
        raise SystemExit(f"wrk saw errors on {url}:\n{out}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run (max 60)")
    ap.add_argument("--connections", type=int, default=16, help="concurrent connections (max 256)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    duration = min(max(args.duration, 1.0), 60.0)
    connections = min(max(args.connections, 1), 256)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    available = cpus()
    server_cpu = available[0]
    load_cpu = available[1] if len(available) > 1 else None

    cluster = None
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        cluster = PgCluster()
        database_url = cluster.new_database()
    results: dict[str, dict[str, float]] = {}
    try:
        for label, env in (("cached", {}), ("uncached", {"CACHE_MAX_ENTRIES": "0"})):
            proc, base = start_server(database_url, server_cpu, **env)
            try:
                r = httpx.post(
                    f"{base}/api/links",
                    json={"url": "https://example.org/bench"},
                    headers={"authorization": f"Bearer {TOKEN}"},
                )
                r.raise_for_status()
                code = r.json()["code"]
                targets = {"redirect": f"{base}/{code}"}
                if label == "cached":
                    targets = {"healthz": f"{base}/healthz", **targets}
                for name, url in targets.items():
                    wrk(url, 1.0, connections, load_cpu)  # warm up
                    key = name if label == "cached" else "redirect_uncached"
                    results[key] = wrk(url, duration, connections, load_cpu)
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        if cluster:
            cluster.destroy()

    floor = results["healthz"]["rps"]
    if args.json:
        print(json.dumps({"duration_s": duration, "connections": connections, **results}, indent=2))
        return 0
    print(
        f"one uvicorn worker on CPU {server_cpu}, wrk on CPU {load_cpu}, {connections} connections, "
        f"{duration:g} s per run, loopback"
    )
    print(f"{'endpoint':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs floor':>10}")
    names = {
        "healthz": "GET /healthz (floor)",
        "redirect": "GET /{code} (cached)",
        "redirect_uncached": "GET /{code} (no cache, DB)",
    }
    for key, label in names.items():
        r = results[key]
        print(
            f"{label:<28}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['rps'] / floor:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
