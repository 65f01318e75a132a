"""The app as a process under uvicorn, as the load balancer sees it: a rollout's SIGTERM under a
steady keep-alive stream, idle keep-alive connections, forwarded headers, the metrics port and the
docs. Timeouts are scaled down by settings (LB_IDLE_TIMEOUT_SECONDS=1 stands for the ALB's 60 s)."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.realparts import wait_until

from .conftest import TOKEN, LiveServer, PgCluster, app_env

pytestmark = pytest.mark.realpart

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _create(base: str, url: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{base}/api/links", json={"url": url, **extra}, headers=AUTH, timeout=10)


class LoadBalancer:
    """What an ALB does with one target: a health check every `interval` (UnhealthyThreshold 2),
    and `clients` keep-alive connections, each a steady stream of requests, sent while the target
    is healthy. A response with `Connection: close` closes that connection; the next request opens
    a new one. Every request sent counts: a failure is an exception or an unexpected status."""

    def __init__(self, base: str, path: str, clients: int, interval: float = 0.1) -> None:
        self.base, self.path, self.clients, self.interval = base, path, clients, interval
        self.healthy = True
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.closes = 0  # responses that asked for the connection to be closed
        self.sent_after_sigterm = 0
        self.sigterm_at: float | None = None
        self.unhealthy_at: float | None = None
        self.lock = threading.Lock()

    def _health(self) -> None:
        bad = 0
        with httpx.Client(timeout=2) as c:
            while not self.stop.is_set() and self.healthy:
                try:
                    ok = c.get(f"{self.base}/readyz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                bad = 0 if ok else bad + 1
                if bad >= 2:
                    self.healthy = False
                    self.unhealthy_at = time.monotonic()
                time.sleep(self.interval)

    def _stream(self) -> None:
        client = httpx.Client(timeout=10)
        try:
            while not self.stop.is_set() and self.healthy:
                sent = time.monotonic()
                try:
                    r = client.get(f"{self.base}{self.path}", follow_redirects=False)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    self.statuses[r.status_code] += 1
                    if self.sigterm_at is not None and sent >= self.sigterm_at:
                        self.sent_after_sigterm += 1
                    if r.status_code != 307:
                        self.failures.append(f"status {r.status_code}")
                    if r.headers.get("connection", "").lower() == "close":
                        self.closes += 1
        finally:
            client.close()

    def __enter__(self) -> LoadBalancer:
        self.threads = [threading.Thread(target=self._health, daemon=True)] + [
            threading.Thread(target=self._stream, daemon=True) for _ in range(self.clients)
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def _module_server(pg: PgCluster, **settings: str) -> Iterator[LiveServer]:
    """A server for the tests of this module that only send it requests (the SIGTERM test has
    its own). Its log is written unbuffered, so a test reads its lines while it runs."""
    server = LiveServer(
        {**app_env(pg.new_database(migrated=True), LOG_LEVEL="INFO", **settings),
         "PYTHONUNBUFFERED": "1"}
    )  # fmt: skip
    try:
        server.wait_up()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def untrusting(pg: PgCluster) -> Iterator[LiveServer]:
    """Forwarded headers believed from 10.0.0.0/16 only (not from this test), docs off."""
    yield from _module_server(pg, FORWARDED_ALLOW_IPS="10.0.0.0/16")


@pytest.fixture(scope="module")
def trusting(pg: PgCluster) -> Iterator[LiveServer]:
    """Forwarded headers believed from loopback, docs on, and the load balancer's idle timeout
    scaled down: 1 s, with the app's keep-alive timeout 2 s."""
    yield from _module_server(
        pg,
        FORWARDED_ALLOW_IPS="127.0.0.1/32,10.0.0.0/16",
        DOCS_ENABLED="true",
        LB_IDLE_TIMEOUT_SECONDS="1",
        KEEPALIVE_TIMEOUT_SECONDS="2",
    )


def _log_lines(server: LiveServer) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in server.output().splitlines() if ln.strip()]


def _counter(text: str, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def test_sigterm_under_a_keepalive_stream_fails_no_request(pg: PgCluster, live_server_factory):
    db = pg.new_database()
    server = live_server_factory(
        app_env(
            db,
            LOG_LEVEL="INFO",
            SHUTDOWN_DRAIN_SECONDS="1",
            SHUTDOWN_TIMEOUT_SECONDS="10",
            LB_IDLE_TIMEOUT_SECONDS="1",
            CLICK_FLUSH_SECONDS="0.5",
        )
    )
    server.wait_up()
    code = _create(server.base, "https://example.org/drain").json()["code"]

    with LoadBalancer(server.base, f"/{code}", clients=4) as lb:
        # the stream is steady: every connection served several requests
        wait_until("a steady stream", lambda: sum(lb.statuses.values()) > 40, within=30)
        before = sum(lb.statuses.values())
        lb.sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        # during the drain: readiness says we are going, a new connection is still served
        ready = None

        def going() -> bool:
            nonlocal ready
            ready = httpx.get(f"{server.base}/readyz", timeout=5)
            return ready.status_code != 200

        wait_until("readiness after SIGTERM", going, within=10)
        assert ready is not None
        assert ready.status_code == 503 and ready.json()["detail"] == "shutting down"
        fresh = httpx.get(f"{server.base}/{code}", follow_redirects=False, timeout=5)
        assert fresh.status_code == 307 and fresh.headers["connection"] == "close"
        exit_status = server.proc.wait(20)
    total = sum(lb.statuses.values())
    print(
        f"\ndrain: {total} requests over {lb.clients} keep-alive connections, {before} before "
        f"SIGTERM, {lb.sent_after_sigterm} sent after it, {len(lb.failures)} failed; "
        f"unhealthy {lb.unhealthy_at - lb.sigterm_at:.2f}s after SIGTERM; "
        f"{lb.closes} responses with Connection: close"
    )
    assert not lb.failures, lb.failures[:5]
    assert lb.statuses == {307: total} and before > 20 and lb.sent_after_sigterm > 0
    assert lb.closes >= lb.clients  # every connection was told to go away
    assert exit_status in (0, -signal.SIGTERM)
    # once stopped it accepts nothing
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base}/healthz", timeout=1)
    # every redirect served was counted: the shutdown wrote the buffered clicks
    with psycopg.connect(db) as conn:
        clicks = conn.execute("SELECT clicks FROM links WHERE code = %s", (code,)).fetchone()
    assert clicks == (total + 1,)
    messages = [json.loads(ln)["msg"] for ln in server.output().splitlines() if ln.strip()]
    assert "draining" in messages and messages.index("draining") < messages.index("stopped")


def test_an_idle_keepalive_connection_outlives_the_load_balancer_idle_timeout(
    trusting: LiveServer,
) -> None:
    """The ALB reuses a connection idle for up to its idle timeout: the app must not have closed
    it by then (the ALB would answer 502). Scaled: idle timeout 1 s, keep-alive 2 s."""
    conn = http.client.HTTPConnection("127.0.0.1", trusting.port, timeout=5)
    conn.request("GET", "/healthz")
    first = conn.getresponse()
    first.read()
    assert first.status == 200 and first.getheader("connection") != "close"
    local = conn.sock.getsockname()
    time.sleep(1.5)  # idle longer than the load balancer's idle timeout
    conn.request("GET", "/healthz")
    second = conn.getresponse()
    second.read()
    assert second.status == 200
    assert conn.sock.getsockname() == local, "served on the same connection"
    # and the keep-alive timeout is the app's: past it, the app closes the idle connection (a
    # read returns at the close; it may wait as long as the test used to sleep: 2.6 s)
    conn.sock.settimeout(2.6)
    assert conn.sock.recv(1) == b""
    conn.close()


@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_headers_only_from_allowed_networks(
    request: pytest.FixtureRequest, trusted: bool
) -> None:
    server: LiveServer = request.getfixturevalue("trusting" if trusted else "untrusting")
    rid = f"fwd-{trusted}-{time.monotonic_ns()}"
    r = httpx.post(
        f"{server.base}/api/links",
        json={"url": "https://example.org/fwd"},
        headers={
            **AUTH,
            "x-forwarded-proto": "https",
            "x-forwarded-for": "203.0.113.9",
            "x-request-id": rid,
        },
        timeout=5,
    )
    assert r.status_code == 201
    short = r.json()["short_url"]
    port = server.port
    assert short.startswith(f"https://127.0.0.1:{port}/" if trusted else "http://")
    assert r.headers["location"] == short

    def access() -> list[dict[str, Any]]:
        return [
            ln
            for ln in _log_lines(server)
            if ln["msg"] == "request" and ln.get("request_id") == rid
        ]

    (line,) = wait_until("the request's access line", access, within=10)
    assert line["route"] == "/api/links"
    assert line["client"] == ("203.0.113.9" if trusted else "127.0.0.1")


def test_metrics_on_their_own_port_and_docs_off(untrusting: LiveServer) -> None:
    server = untrusting
    before = httpx.get(server.metrics, timeout=5).text
    code = _create(server.base, "https://example.org/m").json()["code"]
    assert httpx.get(f"{server.base}/{code}", follow_redirects=False).status_code == 307
    for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
        r = httpx.get(f"{server.base}{path}")
        assert r.status_code == 404, (path, r.status_code)
    m = httpx.get(server.metrics, timeout=5)
    assert m.status_code == 200
    assert "app_db_up 1.0" in m.text and "app_ready 1.0" in m.text
    # the one redirect sent since the exposition before
    assert _counter(m.text, "app_redirects_total") == _counter(before, "app_redirects_total") + 1


def test_docs_on_when_asked_for(trusting: LiveServer) -> None:
    assert httpx.get(f"{trusting.base}/docs").status_code == 200
    schema = httpx.get(f"{trusting.base}/openapi.json").json()
    assert "expires_at" in json.dumps(schema)
