"""The app as a process (`python -m shortener`) while the database goes away and comes back, and
while it is told to stop (SIGTERM) with a request in flight."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import psycopg
import pytest

from .conftest import TOKEN, PgCluster, app_env

pytestmark = pytest.mark.realpart

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _wait_status(url: str, want: int, within: float) -> float:
    """Seconds until GET url answers `want`; fails after `within`."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < within:
        try:
            last = httpx.get(url, timeout=within).status_code
        except httpx.HTTPError as exc:
            last = exc
        if last == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {want} within {within}s (last: {last!r})")


def test_database_outage_and_recovery(pg_own: PgCluster, live_server_factory) -> None:
    db = pg_own.new_database()
    server = live_server_factory(app_env(db, DB_POOL_TIMEOUT_SECONDS="1"))
    server.wait_up()
    base = server.base
    assert httpx.get(f"{base}/readyz").status_code == 200

    acknowledged: dict[str, str] = {}

    def write(i: int) -> int:
        url = f"https://example.org/{i}"
        try:
            r = httpx.post(f"{base}/api/links", json={"url": url}, headers=AUTH, timeout=10)
        except httpx.HTTPError:
            return -1
        if r.status_code == 201:
            acknowledged[r.json()["code"]] = url
        return r.status_code

    for i in range(20):
        assert write(i) == 201
    cached = next(iter(acknowledged))

    pg_own.stop("fast")
    stopped_at = time.monotonic()
    took = _wait_status(f"{base}/readyz", 503, within=5)
    print(f"readiness went 503 {took:.2f}s after the database stopped")
    assert httpx.get(f"{base}/healthz").status_code == 200
    # writes fail cleanly (503, not acknowledged), cached redirects keep working
    statuses = {write(100 + i) for i in range(2)}
    assert statuses == {503}, statuses
    assert httpx.get(f"{base}/{cached}").status_code == 307
    assert httpx.get(f"{base}/api/links/{cached}").status_code == 503
    m = httpx.get(f"{base}/metrics").text
    assert "app_ready 0.0" in m
    # long enough for the pool's reconnection backoff (1, 2, 4, 8 s) to overshoot the database's
    # return: readiness must still recover within 5 s (the app renews the pool)
    time.sleep(max(0.0, 9 - (time.monotonic() - stopped_at)))
    assert server.proc.poll() is None, "the process must stay up"
    assert httpx.get(f"{base}/healthz").status_code == 200

    pg_own.start()
    took = _wait_status(f"{base}/readyz", 200, within=5)
    print(f"readiness recovered {took:.2f}s after the database started")
    for i in range(200, 210):
        assert write(i) == 201

    with psycopg.connect(db) as conn:
        stored = dict(conn.execute("SELECT code, url FROM links").fetchall())
    lost = {c: u for c, u in acknowledged.items() if stored.get(c) != u}
    assert not lost, f"acknowledged writes lost: {lost}"
    assert len(stored) == len(acknowledged) == 30
    assert "app_ready 1.0" in httpx.get(f"{base}/metrics").text


def test_sigterm_drains_in_flight_requests(pg: PgCluster, live_server_factory) -> None:
    db = pg.new_database()
    server = live_server_factory(app_env(db, LOG_LEVEL="INFO"))
    server.wait_up()
    result: dict[str, object] = {}

    # hold a lock so that a write stays in flight
    locker = psycopg.connect(db)
    locker.execute("LOCK TABLE links IN EXCLUSIVE MODE")

    def slow_write() -> None:
        try:
            r = httpx.post(
                f"{server.base}/api/links",
                json={"url": "https://example.org/inflight"},
                headers=AUTH,
                timeout=20,
            )
            result["status"] = r.status_code
            result["code"] = r.json().get("code")
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=slow_write)
    t.start()
    time.sleep(0.5)  # the request is now waiting on the lock
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.proc.poll() is None, "the server must wait for the in-flight request"
    # no new connections are accepted while draining
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.base}/healthz", timeout=1)
    locker.rollback()  # release the lock: the write completes
    locker.close()
    t.join(10)
    assert result.get("status") == 201, result
    # uvicorn exits by re-raising the SIGTERM it caught, after the graceful shutdown
    assert server.proc.wait(10) in (0, -signal.SIGTERM)
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT url FROM links WHERE code = %s", (result["code"],)).fetchone()
    assert row == ("https://example.org/inflight",)
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    assert TOKEN not in json.dumps(lines)
    messages = [line["msg"] for line in lines]
    assert "stopped" in messages[-3:], messages
    access = [ln for ln in lines if ln["msg"] == "request" and ln.get("route") == "/api/links"]
    assert access and access[0]["status"] == 201 and access[0]["request_id"]


def test_sigterm_writes_buffered_clicks(pg: PgCluster, live_server_factory) -> None:
    """Clicks are counted in memory and written in batches; SIGTERM must write what is pending."""
    db = pg.new_database()
    # a flush interval far longer than the test: only the shutdown can write these clicks
    server = live_server_factory(app_env(db, CLICK_FLUSH_SECONDS="300"))
    server.wait_up()
    created = httpx.post(
        f"{server.base}/api/links", json={"url": "https://example.org/c"}, headers=AUTH, timeout=5
    )
    code = created.json()["code"]
    for _ in range(5):
        r = httpx.get(f"{server.base}/{code}", follow_redirects=False, timeout=5)
        assert r.status_code == 307
    with psycopg.connect(db) as conn:
        before = conn.execute("SELECT clicks FROM links WHERE code = %s", (code,)).fetchone()
    assert before == (0,)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) in (0, -signal.SIGTERM)
    with psycopg.connect(db) as conn:
        after = conn.execute("SELECT clicks FROM links WHERE code = %s", (code,)).fetchone()
    assert after == (5,)
