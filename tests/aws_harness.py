"""Real parts for `backbone verify` and `backbone bootstrap`: moto's AWS emulation in server mode
(real HTTP on loopback), a small stand-in for the app, and a loopback "AWS" that answers every
call with one chosen error (access denied, throttling), counting the calls.

The commands run as a user runs them, `python -m backbone.cli ...`, in this process through
tests/cli_harness.py (the environment, working directory, output and exit status of that process,
without its start-up), with an environment that points boto3 at the emulator (AWS_ENDPOINT_URL)
with throwaway credentials.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import cli_harness
from tests.realparts import REPO
from tests.realparts import moto_server as running_moto

REGION = "us-east-1"


# --------------------------------------------------------------------------- moto, server mode


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    with running_moto() as endpoint:
        yield endpoint


def _post(url: str, body: dict[str, Any] | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def aws_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3 (in this process or a child) at an endpoint."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def reset_account(endpoint: str) -> None:
    """Empty the emulated account."""
    _post(f"{endpoint}/moto-api/reset")
    # Lambda without Docker: an invocation is answered by moto itself.
    _post(f"{endpoint}/moto-api/config", {"lambda": {"use_docker": False}})


@contextlib.contextmanager
def emulated_account(endpoint: str) -> Iterator[str]:
    """An empty emulated account; boto3 in this process talks to it while inside."""
    import boto3

    reset_account(endpoint)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in aws_env(endpoint).items():
            patch.setenv(key, value)
        patch.delenv("AWS_PROFILE", raising=False)
        boto3.DEFAULT_SESSION = None
        try:
            yield endpoint
        finally:
            boto3.DEFAULT_SESSION = None


@pytest.fixture
def aws(moto_server: str) -> Iterator[str]:
    """An empty emulated account for the test; boto3 in this process talks to it too."""
    with emulated_account(moto_server) as endpoint:
        yield endpoint


def client(service: str, region: str = REGION) -> Any:
    """A boto3 client of the emulated account the environment points at (made once per
    service, region and endpoint: every test's account has the same throwaway credentials)."""
    return _client(service, region, os.environ.get("AWS_ENDPOINT_URL"))


@functools.cache
def _client(service: str, region: str, endpoint: str | None) -> Any:
    import boto3

    return boto3.Session().client(service, region_name=region, endpoint_url=endpoint)


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def backbone(
    *args: str,
    endpoint: str | None,
    env: dict[str, str] | None = None,
    path: str | None = None,
    cwd: Path = REPO,
    timeout: float = 120,
) -> Run:
    """Run `backbone ARGS` pointed at `endpoint` (None: no AWS settings at all), with the
    environment the process would have (tests/cli_harness.py)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("PULUMI_BACKEND_URL",)
    }
    base |= {"COLUMNS": "250", "NO_COLOR": "1", "PATH": path or os.environ.get("PATH", "")}
    if endpoint is not None:
        base |= aws_env(endpoint)
    base |= env or {}
    done = cli_harness.run(list(args), env=base, cwd=cwd)
    return Run(done.returncode, done.stdout, done.stderr)


# --------------------------------------------------------------------------- the app stand-in

# How often a loopback server's loop looks for shutdown(): socketserver's default, 0.5 s, was
# half a second of every test's teardown.
POLL = 0.02


@dataclass
class AppState:
    """How the stand-in answers: `mode` is ok, error (500 everywhere), unready (503 on /readyz),
    or hang (no answer for `hang_seconds`). `ok_after` > 0: error until that many requests."""

    mode: str = "ok"
    hang_seconds: float = 5.0
    ok_after: int = 0
    hits: list[str] = field(default_factory=list)
    on_hit: Callable[[int], None] | None = None  # called with the number of requests so far


class _AppHandler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        state: AppState = self.server.state
        state.hits.append(self.path)
        if state.on_hit is not None:
            state.on_hit(len(state.hits))
        mode = state.mode
        if state.ok_after and len(state.hits) > state.ok_after:
            mode = "ok"
        if mode == "hang":
            time.sleep(state.hang_seconds)
            return self._send(200, {"status": "late"})
        if mode == "error":
            return self._send(500, {"error": {"code": "internal", "message": "boom"}})
        if self.path == "/healthz":
            return self._send(200, {"status": "ok"})
        if self.path == "/readyz":
            if mode == "unready":
                return self._send(
                    503, {"status": "unavailable", "detail": "database: connection refused"}
                )
            return self._send(200, {"status": "ready", "detail": "ok"})
        if self.path.startswith("/api/links/"):
            code = self.path.rsplit("/", 1)[-1]
            return self._send(
                404, {"error": {"code": "not_found", "message": f"no link with code {code!r}"}}
            )
        return self._send(404, {"error": {"code": "not_found", "message": "no route"}})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_server() -> Iterator[tuple[str, AppState]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AppHandler)
    server.daemon_threads = True
    server.state = AppState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- an AWS that refuses


@dataclass
class Refusal:
    """What the refusing endpoint answers: S3 HEAD requests get `s3_head_status` (no body);
    every other request gets `status` with an error of `code` in the service's protocol."""

    code: str = "AccessDeniedException"
    status: int = 400
    message: str = "User: arn:aws:iam::123456789012:user/ci is not authorized"
    s3_head_status: int = 404
    calls: list[str] = field(default_factory=list)


class _RefusingHandler(BaseHTTPRequestHandler):
    server: Any

    def _answer(self) -> None:
        r: Refusal = self.server.refusal
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        target = self.headers.get("X-Amz-Target", "")
        r.calls.append(f"{self.command} {self.path} {target}".strip())
        if self.command == "HEAD":
            self.send_response(r.s3_head_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/service/"):  # Smithy RPC v2 CBOR (CloudWatch)
            body = _cbor_map({"__type": r.code, "message": r.message})
            content_type = "application/cbor"
        elif target:  # JSON protocol (KMS, ...)
            body = json.dumps({"__type": r.code, "message": r.message}).encode()
            content_type = "application/x-amz-json-1.1"
        elif self.path.startswith("/2015-03-31/"):  # Lambda: REST-JSON
            body = json.dumps({"Type": "User", "message": r.message}).encode()
            content_type = "application/json"
        else:  # query and REST-XML protocols
            body = (
                f"<ErrorResponse><Error><Type>Sender</Type><Code>{r.code}</Code>"
                f"<Message>{r.message}</Message></Error><RequestId>1</RequestId></ErrorResponse>"
            ).encode()
            content_type = "text/xml"
        self.send_response(r.status)
        self.send_header("Content-Type", content_type)
        if content_type == "application/cbor":
            self.send_header("smithy-protocol", "rpc-v2-cbor")
        self.send_header("x-amzn-ErrorType", r.code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    if len(data) < 24:
        return bytes([0x60 + len(data)]) + data
    if len(data) < 256:
        return bytes([0x78, len(data)]) + data
    return bytes([0x79]) + len(data).to_bytes(2, "big") + data


def _cbor_map(values: dict[str, str]) -> bytes:
    """A CBOR map of text to text (RFC 8949, major types 3 and 5): enough for an error body."""
    assert len(values) < 24
    out = bytes([0xA0 + len(values)])
    for key, value in values.items():
        out += _cbor_text(key) + _cbor_text(value)
    return out


@pytest.fixture
def refusing_aws() -> Iterator[tuple[str, Refusal]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHandler)
    server.daemon_threads = True
    server.refusal = Refusal()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.refusal  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return {'ok': True}\n")
    return buffer.getvalue()
