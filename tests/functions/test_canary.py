"""The canary, run for real: a local HTTP server stands in for the app behind its load balancer, and
moto's CloudWatch (server mode, over HTTP on loopback) receives the metrics."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest

from tests.app.conftest import live_server_factory, pg  # noqa: F401 - fixtures: the real app
from tests.functions.conftest import datapoints, load_function, metrics_in
from tests.realparts import free_port

canary = load_function("canary")

NS = "Backbone/Canary"
STACK = "test-stack"


class FakeContext:
    def __init__(self, remaining_ms: int) -> None:
        self.end = time.monotonic() + remaining_ms / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        return int((self.end - time.monotonic()) * 1000)


class Attempts:
    """Records each attempt the canary makes (the real `_attempt` still runs): the URL, the
    timeout it was given and how much of the handler's deadline was left at the latest moment
    before the canary chose that timeout (the probe's start, or the previous attempt's end), on
    the canary's own clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[tuple[str, float, float | None]] = []
        self.deadlines: list[float | None] = []
        self.mark = 0.0
        real_attempt, real_probe = canary._attempt, canary.probe

        def probe(*args: Any, **kwargs: Any) -> Any:
            self.deadlines.append(kwargs.get("deadline"))
            self.mark = time.monotonic()
            return real_probe(*args, **kwargs)

        def attempt(url: str, timeout: float, *args: Any) -> Any:
            deadline = self.deadlines[-1]
            left = None if deadline is None else deadline - self.mark
            self.made.append((url, timeout, left))
            try:
                return real_attempt(url, timeout, *args)
            finally:
                self.mark = time.monotonic()

        monkeypatch.setattr(canary, "probe", probe)
        monkeypatch.setattr(canary, "_attempt", attempt)

    def to(self, path: str) -> list[tuple[float, float | None]]:
        return [(timeout, left) for url, timeout, left in self.made if url.endswith(path)]


def configure(monkeypatch: pytest.MonkeyPatch, base: str, read: str, **extra: str) -> None:
    monkeypatch.setenv("CANARY_BASE_URL", base)
    monkeypatch.setenv("CANARY_READ_PATH", read)
    monkeypatch.setenv("STACK_NAME", STACK)
    monkeypatch.setenv("CANARY_TIMEOUT_SECONDS", extra.pop("timeout", "1"))
    monkeypatch.setenv("CANARY_ATTEMPTS", extra.pop("attempts", "2"))
    monkeypatch.setenv("CANARY_RETRY_DELAY_SECONDS", extra.pop("delay", "0.05"))
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def availability(probe: str) -> list[dict[str, Any]]:
    return datapoints(NS, "Availability", {"Stack": STACK, "Probe": probe})


def latency(probe: str) -> list[dict[str, Any]]:
    return datapoints(NS, "Latency", {"Stack": STACK, "Probe": probe})


def test_healthy_app_publishes_availability_1_and_latency(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, hits = app_server
    configure(monkeypatch, base, "/api/links/canary")

    result = canary.handler({}, FakeContext(30_000))

    assert result["ok"] is True
    assert hits == ["/readyz", "/api/links/canary"]
    # exactly these metrics, with exactly these dimensions
    assert metrics_in(NS) == {
        (name, (("Probe", probe), ("Stack", STACK)))
        for name in ("Availability", "Latency")
        for probe in ("health", "read")
    }
    measured = {p["probe"]: p["latency_ms"] for p in result["probes"]}
    for probe in ("health", "read"):
        [a] = availability(probe)
        assert (a["SampleCount"], a["Sum"], a["Unit"]) == (1.0, 1.0, "None")
        [lat] = latency(probe)
        assert lat["Unit"] == "Milliseconds"
        assert lat["SampleCount"] == 1.0
        # the value that landed is the one the handler measured, in milliseconds
        assert lat["Sum"] == round(measured[probe], 3)


def test_http_500_is_availability_0_with_latency_after_bounded_retries(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, hits = app_server
    configure(monkeypatch, base, "/boom", attempts="3")

    result = canary.handler({}, FakeContext(30_000))

    assert result["ok"] is False
    read = next(p for p in result["probes"] if p["probe"] == "read")
    assert (read["status"], read["attempts"], read["error"]) == (500, 3, "http 500")
    assert hits.count("/boom") == 3  # a 5xx is retried, and only up to CANARY_ATTEMPTS
    assert [a["Sum"] for a in availability("read")] == [0.0]
    assert [a["Sum"] for a in availability("health")] == [1.0]
    # an HTTP answer arrived, so its latency is published too
    [lat] = latency("read")
    assert lat["Unit"] == "Milliseconds" and lat["Sum"] > 0


def test_404_is_a_failure_and_not_retried(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, hits = app_server
    configure(monkeypatch, base, "/api/links/does-not-exist", attempts="3")
    canary.handler({}, FakeContext(30_000))
    assert hits.count("/api/links/does-not-exist") == 1
    assert [a["Sum"] for a in availability("read")] == [0.0]


def test_read_probe_can_accept_404_when_no_canary_link_exists(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = app_server
    configure(monkeypatch, base, "/api/links/nope", CANARY_READ_ACCEPT_STATUS="404")
    result = canary.handler({}, FakeContext(30_000))
    assert result["ok"] is True
    assert [a["Sum"] for a in availability("read")] == [1.0]
    monkeypatch.setenv("CANARY_READ_ACCEPT_STATUS", "nope")
    with pytest.raises(RuntimeError, match="CANARY_READ_ACCEPT_STATUS"):
        canary.handler({}, None)


def test_redirect_counts_as_success_and_is_not_followed(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the read path of a link shortener answers 302 to a third party: never probe the third party
    base, _ = app_server
    configure(monkeypatch, base, "/redirect")
    result = canary.handler({}, FakeContext(30_000))
    read = next(p for p in result["probes"] if p["probe"] == "read")
    assert (read["ok"], read["status"]) == (True, 302)
    assert [a["Sum"] for a in availability("read")] == [1.0]


def test_slow_app_times_out_within_bounds(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, hits = app_server  # /slow sleeps 3 s before answering
    configure(monkeypatch, base, "/slow", timeout="0.4", attempts="2", delay="0.05")
    attempts = Attempts(monkeypatch)

    result = canary.handler({}, FakeContext(30_000))

    read = next(p for p in result["probes"] if p["probe"] == "read")
    assert (read["ok"], read["status"], read["error"], read["attempts"]) == (
        False,
        None,
        "timeout",
        2,
    )
    assert hits.count("/slow") == 2
    # two attempts, each given the configured 0.4 s, not the server's 3 s
    assert [timeout for timeout, _ in attempts.to("/slow")] == [0.4, 0.4]
    assert [a["Sum"] for a in availability("read")] == [0.0]
    assert latency("read") == []  # no answer, no latency: availability says it
    assert [a["Sum"] for a in availability("health")] == [1.0]


def test_lambda_deadline_cuts_retries_short(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = app_server
    configure(monkeypatch, base, "/slow", timeout="5", attempts="3")
    attempts = Attempts(monkeypatch)
    # 3.6 s left, 3 s reserved for publishing: the probes get at most 0.6 s in all
    context = FakeContext(3_600)
    result = canary.handler({}, context)
    # the deadline handed to the probes is the Lambda's end less the reserve
    assert attempts.deadlines and all(
        d is not None and d <= context.end - canary.PUBLISH_RESERVE_SECONDS
        for d in attempts.deadlines
    )
    # every attempt's timeout fits in what was left of it, never the configured 5 s
    assert attempts.made
    assert all(left is not None and timeout <= left for _, timeout, left in attempts.made)
    [(read_timeout, _)] = attempts.to("/slow")
    assert read_timeout <= 3.6 - canary.PUBLISH_RESERVE_SECONDS < 5
    read = next(p for p in result["probes"] if p["probe"] == "read")
    assert read["ok"] is False
    assert (
        read["attempts"] < 3 and read["error"] == "timeout"
    )  # the deadline, not the count, ended it
    assert [a["Sum"] for a in availability("read")] == [0.0]


def test_connection_refused_is_a_metric_not_a_crash(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens here
    configure(monkeypatch, f"http://127.0.0.1:{port}", "/api/links/canary")
    result = canary.handler({}, FakeContext(30_000))
    assert {p["error"] for p in result["probes"]} == {"connection refused"}
    assert {p["attempts"] for p in result["probes"]} == {2}
    for probe in ("health", "read"):
        assert [a["Sum"] for a in availability(probe)] == [0.0]
        assert latency(probe) == []


def test_dns_failure_is_a_metric_not_a_crash(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host = "no-such-load-balancer.invalid"  # RFC 2606: never resolves
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(host, 80)
    configure(monkeypatch, f"http://{host}", "/api/links/canary")
    result = canary.handler({}, FakeContext(30_000))
    assert {p["error"] for p in result["probes"]} == {"dns failure"}
    for probe in ("health", "read"):
        assert [a["Sum"] for a in availability(probe)] == [0.0]
        assert latency(probe) == []


def test_namespace_and_health_path_from_env(
    aws: str, app_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, hits = app_server
    configure(
        monkeypatch,
        base,
        "api/links/canary",
        METRICS_NAMESPACE="Backbone/Other",
        CANARY_HEALTH_PATH="/ok",
    )
    canary.handler({}, FakeContext(30_000))
    assert hits == ["/ok", "/api/links/canary"]
    assert datapoints("Backbone/Other", "Availability", {"Stack": STACK, "Probe": "health"})
    assert metrics_in(NS) == set()


def test_missing_settings_raise_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CANARY_BASE_URL", "CANARY_READ_PATH", "STACK_NAME"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="CANARY_BASE_URL, CANARY_READ_PATH, STACK_NAME"):
        canary.handler({}, None)
    monkeypatch.setenv("CANARY_BASE_URL", "ftp://x")
    monkeypatch.setenv("CANARY_READ_PATH", "/r")
    monkeypatch.setenv("STACK_NAME", "s")
    with pytest.raises(RuntimeError, match="http"):
        canary.handler({}, None)
    monkeypatch.setenv("CANARY_BASE_URL", "http://x")
    monkeypatch.setenv("CANARY_TIMEOUT_SECONDS", "soon")
    with pytest.raises(RuntimeError, match=r"CANARY_TIMEOUT_SECONDS='soon' is not a number"):
        canary.handler({}, None)
    # out-of-range values are clamped to the bounds, not refused
    monkeypatch.setenv("CANARY_TIMEOUT_SECONDS", "600")
    monkeypatch.setenv("CANARY_ATTEMPTS", "99")
    settings = canary.Settings.from_env()
    assert (settings.timeout, settings.attempts) == (30.0, 5)


def test_metric_data_shape_is_what_the_readme_documents() -> None:
    from datetime import UTC, datetime

    ok = canary.ProbeResult("health", "u", True, 200, 12.3456, 1, None)
    down = canary.ProbeResult("read", "u", False, None, None, 2, "timeout")
    data = canary.metric_data([ok, down], "prod", datetime(2026, 11, 24, tzinfo=UTC))
    assert [(d["MetricName"], d["Unit"], d["Value"]) for d in data] == [
        ("Availability", "None", 1.0),
        ("Latency", "Milliseconds", 12.346),
        ("Availability", "None", 0.0),
    ]
    assert data[2]["Dimensions"] == [
        {"Name": "Stack", "Value": "prod"},
        {"Name": "Probe", "Value": "read"},
    ]


# ------------------------------------------------------------ the cached redirect, the certificate


def test_the_redirect_probe_follows_the_canary_link_of_the_real_app(
    aws: str,
    pg,  # noqa: F811 - the fixture imported above
    live_server_factory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app's migration creates the known link (CANARY_LINK_CODE/URL); the canary follows it
    as a user would and checks where it points, through the app's cache."""
    import httpx

    from tests.app.conftest import app_env

    target = "https://example.org/canary-landing"
    server = live_server_factory(
        app_env(pg.new_database(), CANARY_LINK_CODE="canary-link", CANARY_LINK_URL=target)
    )
    server.wait_up()
    configure(
        monkeypatch,
        server.base,
        "/api/links/canary-link",
        CANARY_REDIRECT_CODE="canary-link",
        CANARY_REDIRECT_URL=target,
    )
    for _ in range(2):
        result = canary.handler({}, FakeContext(30_000))
    assert result["ok"] is True
    by_name = {p["probe"]: p for p in result["probes"]}
    assert by_name["redirect"]["status"] == 307
    [a] = availability("redirect")
    assert (a["SampleCount"], a["Sum"]) == (2.0, 2.0)
    # the second run was answered from the app's cache
    m = httpx.get(server.metrics, timeout=5).text
    assert "app_cache_hits_total 1.0" in m and "app_redirects_total 2.0" in m

    # pointing elsewhere is a failure that says where it pointed
    monkeypatch.setenv("CANARY_REDIRECT_URL", "https://example.org/elsewhere")
    result = canary.handler({}, FakeContext(30_000))
    redirect = next(p for p in result["probes"] if p["probe"] == "redirect")
    assert result["ok"] is False and redirect["ok"] is False
    assert target in redirect["error"] and redirect["attempts"] == 1


@pytest.fixture
def tls_app(tmp_path, request) -> Any:
    """The stand-in app over HTTPS with a throwaway certificate for localhost, valid `days`."""
    import ssl
    import threading
    from http.server import ThreadingHTTPServer

    from tests.app.tls import make_ca, make_server_cert
    from tests.functions.conftest import _AppHandler

    def start(days: float) -> tuple[str, str]:
        ca, ca_key = make_ca("canary test CA")
        cert, key = make_server_cert(ca, ca_key, "localhost", days=days)
        (tmp_path / "ca.pem").write_bytes(ca)
        (tmp_path / "cert.pem").write_bytes(cert)
        (tmp_path / "key.pem").write_bytes(key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _AppHandler)
        server.daemon_threads = True
        server.hits = []  # type: ignore[attr-defined]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        request.addfinalizer(server.shutdown)
        return f"https://localhost:{server.server_address[1]}", str(tmp_path / "ca.pem")

    return start


def certificate_metric(name: str) -> list[dict[str, Any]]:
    return datapoints(NS, name, {"Stack": STACK, "Probe": "certificate"})


@pytest.mark.parametrize(("days", "expiring"), [(5, True), (60, False)])
def test_the_certificate_expiry_warning(
    aws: str,
    tls_app,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    days: int,
    expiring: bool,
) -> None:
    base, ca = tls_app(days)
    configure(monkeypatch, base, "/ok", CANARY_CA_FILE=ca, CANARY_CERT_WARN_DAYS="21")
    with caplog.at_level(logging.INFO, logger="canary"):
        result = canary.handler({}, FakeContext(30_000))
    assert result["ok"] is True  # the probes went over the verified TLS connection
    cert = result["certificate"]
    assert cert["expiring"] is expiring and days - 1 < cert["days_left"] <= days
    [flag] = certificate_metric("CertificateExpiring")
    assert (flag["Sum"], flag["Unit"]) == (1.0 if expiring else 0.0, "None")
    [left] = certificate_metric("CertificateDaysLeft")
    assert left["Sum"] == cert["days_left"]
    warned = [r for r in caplog.records if "certificate_expiring" in r.getMessage()]
    assert bool(warned) is expiring
    if warned:
        assert warned[0].levelno == logging.WARNING
        assert json.loads(warned[0].getMessage())["days_left"] == cert["days_left"]


def test_a_certificate_that_cannot_be_verified_is_a_warning_too(
    aws: str, tls_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = tls_app(60)
    configure(monkeypatch, base, "/ok")  # the system's trust store: it never heard of this CA
    result = canary.handler({}, FakeContext(30_000))
    assert result["ok"] is False
    assert result["certificate"]["expiring"] is True
    assert "not verified" in result["certificate"]["error"]
    [flag] = certificate_metric("CertificateExpiring")
    assert flag["Sum"] == 1.0
    assert certificate_metric("CertificateDaysLeft") == []
