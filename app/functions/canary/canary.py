"""Synthetic canary: probe the app from outside, publish what we saw to CloudWatch.

The base URL is the app's public one: its load balancer's, or on the free-tier stack the host's
own address (its Elastic IP); the function runs outside any VPC either way.

Lambda handler: ``canary.handler``. Runs on a schedule (EventBridge). Stdlib HTTP only (urllib), so
the package needs nothing beyond the boto3 that the Lambda Python runtime already ships.

Every run makes two probes, ``health`` (the app's readiness endpoint) and ``read`` (one real read
path), and a third, ``redirect``, when ``CANARY_REDIRECT_CODE`` is set: it follows the known link
the app's migration creates at deploy (``CANARY_LINK_CODE``/``CANARY_LINK_URL`` on the app side),
so the cached redirect path the users take is the one measured; it is up only on a 3xx whose
``Location`` is ``CANARY_REDIRECT_URL`` (the target itself, a third party, is not fetched). Each
probe has a bounded timeout and a bounded number of attempts; all publish in one PutMetricData
call, namespace ``Backbone/Canary``, dimensions ``Stack`` and ``Probe``:

* ``Availability`` (unit None): 1 if an attempt answered 2xx/3xx, else 0. Always published.
* ``Latency`` (unit Milliseconds): the time to the HTTP answer of the last attempt. Published only
  when an HTTP answer arrived (any status); a timeout, refused connection or DNS failure has no
  latency and shows as ``Availability`` 0 instead.

Where ``CANARY_BASE_URL`` is https, the certificate the server presents is read once per run
(dimensions ``Stack`` and ``Probe=certificate``): ``CertificateDaysLeft`` (unit None, days until
its notAfter) and ``CertificateExpiring`` (None: 1 when fewer than ``CANARY_CERT_WARN_DAYS`` days
are left, or when the certificate cannot be verified, else 0), with a warning log line
``certificate_expiring``. An alarm on either is the infra side's.

A failed probe (5xx, 4xx, timeout, connection refused, DNS failure) is a metric and a log line,
never an exception. Only a failure to publish the metrics, or a missing setting, raises: Lambda
then counts an error, which the function's Errors alarm catches.

Environment (names in app/functions/README.md):
    CANARY_BASE_URL       required, e.g. ``http://my-alb-123.eu-west-1.elb.amazonaws.com``
    CANARY_READ_PATH      required, e.g. ``/api/links/canary``
    CANARY_HEALTH_PATH    default ``/readyz``
    STACK_NAME            required, the value of the ``Stack`` dimension
    METRICS_NAMESPACE     default ``Backbone/Canary``
    CANARY_TIMEOUT_SECONDS  per attempt, default 5
    CANARY_ATTEMPTS         per probe, default 2 (1 = no retry)
    CANARY_RETRY_DELAY_SECONDS  default 0.5
    CANARY_READ_ACCEPT_STATUS   extra statuses that count as up for the read probe, e.g. ``404``
                                (a lookup of an unknown code still went through the database)
    CANARY_REDIRECT_CODE  the known link's code (the app's CANARY_LINK_CODE); empty: no probe
    CANARY_REDIRECT_URL   where it must redirect (the app's CANARY_LINK_URL); required with it
    CANARY_CERT_WARN_DAYS default 21: warn when the certificate expires sooner (https only)
    CANARY_CA_FILE        a PEM bundle to verify the server with instead of the system's
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config

LOG = logging.getLogger("canary")
LOG.setLevel(logging.INFO)

DEFAULT_NAMESPACE = "Backbone/Canary"
DEFAULT_HEALTH_PATH = "/readyz"
USER_AGENT = "backbone-canary/1"
MAX_BODY_BYTES = 64 * 1024
# Leave this much of the Lambda's remaining time for publishing the metrics.
PUBLISH_RESERVE_SECONDS = 3.0


@dataclass(frozen=True)
class Settings:
    base_url: str
    health_path: str
    read_path: str
    stack: str
    namespace: str
    timeout: float
    attempts: int
    retry_delay: float
    read_accept: frozenset[int] = frozenset()
    redirect_code: str = ""
    redirect_url: str = ""
    cert_warn_days: float = 21.0
    ca_file: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [
            k for k in ("CANARY_BASE_URL", "CANARY_READ_PATH", "STACK_NAME") if not env.get(k)
        ]
        if missing:
            raise RuntimeError(f"canary: missing environment variable(s): {', '.join(missing)}")
        base = env["CANARY_BASE_URL"].rstrip("/")
        if urllib.parse.urlsplit(base).scheme not in {"http", "https"}:
            raise RuntimeError(f"canary: CANARY_BASE_URL must be http(s)://..., got {base!r}")
        code = (env.get("CANARY_REDIRECT_CODE") or "").strip().strip("/")
        target = (env.get("CANARY_REDIRECT_URL") or "").strip()
        if code and not target:
            raise RuntimeError(
                "canary: CANARY_REDIRECT_CODE is set but CANARY_REDIRECT_URL is not: "
                "the redirect probe needs the URL the link must point to"
            )
        if code and not all(c.isalnum() or c in "-_" for c in code):
            raise RuntimeError(f"canary: CANARY_REDIRECT_CODE={code!r} is not a link code")
        ca_file = (env.get("CANARY_CA_FILE") or "").strip()
        if ca_file and not os.path.isfile(ca_file):
            raise RuntimeError(f"canary: CANARY_CA_FILE={ca_file!r} is not a file")
        return cls(
            base_url=base,
            health_path=_path(env.get("CANARY_HEALTH_PATH") or DEFAULT_HEALTH_PATH),
            read_path=_path(env["CANARY_READ_PATH"]),
            stack=env["STACK_NAME"],
            namespace=env.get("METRICS_NAMESPACE") or DEFAULT_NAMESPACE,
            timeout=_number(env, "CANARY_TIMEOUT_SECONDS", 5.0, 0.1, 30.0),
            attempts=int(_number(env, "CANARY_ATTEMPTS", 2, 1, 5)),
            retry_delay=_number(env, "CANARY_RETRY_DELAY_SECONDS", 0.5, 0.0, 10.0),
            read_accept=_statuses(env.get("CANARY_READ_ACCEPT_STATUS") or ""),
            redirect_code=code,
            redirect_url=target,
            cert_warn_days=_number(env, "CANARY_CERT_WARN_DAYS", 21.0, 0.0, 365.0),
            ca_file=ca_file,
        )


def _statuses(raw: str) -> frozenset[int]:
    try:
        codes = frozenset(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError:
        raise RuntimeError(
            f"canary: CANARY_READ_ACCEPT_STATUS={raw!r} is not a list of codes"
        ) from None
    if any(not 100 <= c <= 599 for c in codes):
        raise RuntimeError(f"canary: CANARY_READ_ACCEPT_STATUS={raw!r} holds a non-HTTP status")
    return codes


def _path(p: str) -> str:
    return p if p.startswith("/") else "/" + p


def _number(env: Any, name: str, default: float, low: float, high: float) -> float:
    """A number from the environment, clamped to [low, high]: a bound, never a crash loop."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"canary: {name}={raw!r} is not a number ({low:g}..{high:g})") from None
    return max(low, min(high, value))


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    url: str
    ok: bool
    status: int | None  # HTTP status of the last attempt; None when no HTTP answer arrived
    latency_ms: float | None  # time to the last attempt's HTTP answer; None without one
    attempts: int
    error: str | None  # short reason when not ok: "http 500", "timeout", "connection refused", ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report a 3xx as the answer: the read path of a link shortener redirects to a third party."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENERS: dict[str, urllib.request.OpenerDirector] = {}


def _context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file or None)


def _opener(ca_file: str = "") -> urllib.request.OpenerDirector:
    if ca_file not in _OPENERS:
        https = urllib.request.HTTPSHandler(context=_context(ca_file))
        _OPENERS[ca_file] = urllib.request.build_opener(_NoRedirect(), https)
    return _OPENERS[ca_file]


def _classify(exc: BaseException) -> str:
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "dns failure"
    if isinstance(reason, ConnectionError):
        return "connection error"
    return f"{type(reason).__name__}: {reason}"[:200]


def _attempt(
    url: str,
    timeout: float,
    accept: frozenset[int] = frozenset(),
    location: str | None = None,
    ca_file: str = "",
) -> tuple[int | None, float | None, str | None]:
    """One GET. Returns (status, latency_ms, error). Never raises for network or HTTP failures.
    With ``location``, only a 3xx to exactly that URL is a success."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT}, method="GET")
    start = time.perf_counter()
    got_location: str | None = None
    try:
        with _opener(ca_file).open(request, timeout=timeout) as response:
            response.read(MAX_BODY_BYTES)
            status = int(response.status)
    except urllib.error.HTTPError as exc:  # 4xx/5xx, and 3xx since redirects are not followed
        status = int(exc.code)
        got_location = exc.headers.get("Location") if exc.headers else None
        exc.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        # OSError covers TimeoutError and connection errors raised while reading the body;
        # http.client.HTTPException (bad status line, remote closed) is not an OSError.
        return None, None, _classify(exc)
    except Exception as exc:  # http.client.HTTPException and friends: still a failed probe
        return None, None, f"{type(exc).__name__}: {exc}"[:200]
    latency_ms = (time.perf_counter() - start) * 1000.0
    if location is not None:
        if not 300 <= status < 400:
            return status, latency_ms, f"http {status}, not a redirect"
        if got_location != location:
            return status, latency_ms, f"redirects to {got_location!r}, not {location!r}"[:200]
        return status, latency_ms, None
    if 200 <= status < 400 or status in accept:
        return status, latency_ms, None
    return status, latency_ms, f"http {status}"


def probe(
    name: str,
    url: str,
    *,
    timeout: float,
    attempts: int,
    retry_delay: float,
    deadline: float | None = None,
    accept: frozenset[int] = frozenset(),
    location: str | None = None,
    ca_file: str = "",
) -> ProbeResult:
    """GET ``url`` up to ``attempts`` times; retry timeouts, connection failures and 5xx only.

    ``deadline`` (a ``time.monotonic()`` value) stops retries that could not finish in time and
    shortens the last attempt's timeout, so the canary never outlives its Lambda timeout.
    """
    status: int | None = None
    latency: float | None = None
    error: str | None = "not attempted"
    made = 0
    for n in range(1, attempts + 1):
        attempt_timeout = timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < 0.1:
                if made == 0:
                    error = "no time left"
                break
            attempt_timeout = min(timeout, left)
        made = n
        status, latency, error = _attempt(url, attempt_timeout, accept, location, ca_file)
        if error is None:
            break
        retryable = status is None or status >= 500
        if not retryable or n == attempts:
            break
        time.sleep(retry_delay)
    return ProbeResult(
        probe=name,
        url=url,
        ok=error is None,
        status=status,
        latency_ms=latency,
        attempts=made,
        error=error,
    )


@dataclass(frozen=True)
class CertificateResult:
    host: str
    days_left: float | None  # None when the certificate could not be read and verified
    not_after: str | None
    expiring: bool
    error: str | None


def check_certificate(
    base_url: str, *, warn_days: float, timeout: float, ca_file: str = ""
) -> CertificateResult:
    """The certificate the server presents for the base URL's host (verified as the probes do)."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or 443
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            _context(ca_file).wrap_socket(raw, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        return CertificateResult(host, None, None, True, f"not verified: {reason}"[:200])
    except (OSError, ValueError) as exc:
        return CertificateResult(host, None, None, True, _classify(exc))
    not_after = str(cert.get("notAfter") or "")
    if not not_after:
        return CertificateResult(host, None, None, True, "no notAfter in the certificate")
    days = (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400.0
    return CertificateResult(host, round(days, 3), not_after, days < warn_days, None)


def certificate_metric_data(
    cert: CertificateResult, stack: str, when: datetime
) -> list[dict[str, Any]]:
    dims = [{"Name": "Stack", "Value": stack}, {"Name": "Probe", "Value": "certificate"}]
    data = [
        {
            "MetricName": "CertificateExpiring",
            "Dimensions": dims,
            "Timestamp": when,
            "Value": 1.0 if cert.expiring else 0.0,
            "Unit": "None",
        }
    ]
    if cert.days_left is not None:
        data.append(
            {
                "MetricName": "CertificateDaysLeft",
                "Dimensions": dims,
                "Timestamp": when,
                "Value": cert.days_left,
                "Unit": "None",
            }
        )
    return data


def metric_data(results: list[ProbeResult], stack: str, when: datetime) -> list[dict[str, Any]]:
    """The PutMetricData entries for ``results`` (pure; the README documents this shape)."""
    data: list[dict[str, Any]] = []
    for r in results:
        dims = [{"Name": "Stack", "Value": stack}, {"Name": "Probe", "Value": r.probe}]
        data.append(
            {
                "MetricName": "Availability",
                "Dimensions": dims,
                "Timestamp": when,
                "Value": 1.0 if r.ok else 0.0,
                "Unit": "None",
            }
        )
        if r.latency_ms is not None:
            data.append(
                {
                    "MetricName": "Latency",
                    "Dimensions": dims,
                    "Timestamp": when,
                    "Value": round(r.latency_ms, 3),
                    "Unit": "Milliseconds",
                }
            )
    return data


def _cloudwatch() -> Any:
    # Bounded AWS calls too. AWS_ENDPOINT_URL (boto3 >= 1.28) points this at an emulator in tests.
    config = Config(
        connect_timeout=3, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("cloudwatch", config=config)


def run(
    settings: Settings, *, deadline: float | None = None, cloudwatch: Any = None
) -> dict[str, Any]:
    when = datetime.now(UTC)
    probes: list[tuple[str, str, frozenset[int], str | None]] = [
        ("health", settings.health_path, frozenset[int](), None),
        ("read", settings.read_path, settings.read_accept, None),
    ]
    if settings.redirect_code:
        probes.append(
            ("redirect", "/" + settings.redirect_code, frozenset[int](), settings.redirect_url)
        )
    results = [
        probe(
            name,
            settings.base_url + path,
            timeout=settings.timeout,
            attempts=settings.attempts,
            retry_delay=settings.retry_delay,
            deadline=deadline,
            accept=accept,
            location=location,
            ca_file=settings.ca_file,
        )
        for name, path, accept, location in probes
    ]
    for r in results:
        LOG.log(
            logging.INFO if r.ok else logging.WARNING,
            json.dumps({"event": "probe", "stack": settings.stack, **r.__dict__}),
        )
    data = metric_data(results, settings.stack, when)
    cert = None
    if urllib.parse.urlsplit(settings.base_url).scheme == "https":
        cert = check_certificate(
            settings.base_url,
            warn_days=settings.cert_warn_days,
            timeout=settings.timeout,
            ca_file=settings.ca_file,
        )
        LOG.log(
            logging.WARNING if cert.expiring else logging.INFO,
            json.dumps(
                {
                    "event": "certificate_expiring" if cert.expiring else "certificate",
                    "stack": settings.stack,
                    "warn_days": settings.cert_warn_days,
                    **cert.__dict__,
                }
            ),
        )
        data += certificate_metric_data(cert, settings.stack, when)
    client = cloudwatch if cloudwatch is not None else _cloudwatch()
    client.put_metric_data(Namespace=settings.namespace, MetricData=data)
    out: dict[str, Any] = {
        "stack": settings.stack,
        "ok": all(r.ok for r in results),
        "probes": [r.__dict__ for r in results],
    }
    if cert is not None:
        out["certificate"] = cert.__dict__
    return out


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    settings = Settings.from_env()
    deadline = None
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        deadline = time.monotonic() + remaining() / 1000.0 - PUBLISH_RESERVE_SECONDS
    return run(settings, deadline=deadline)
