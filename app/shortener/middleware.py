"""The outermost ASGI layer: request id, body size limit, metrics and one JSON access log line;
while the server drains (SIGTERM), `Connection: close` on every response.

uvicorn's proxy-headers layer runs before this one, with FORWARDED_ALLOW_IPS: scope["client"] and
scope["scheme"] are then the client's (X-Forwarded-For/-Proto) when the peer is a trusted proxy,
so the access log names the client and links are built as https behind the load balancer.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware): it sees every request, including the
ones the framework answers itself (404, 405, 500), and adds little latency.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import request_id_var
from .metrics import UNMATCHED_ROUTE, Metrics

access_log = logging.getLogger("shortener.access")

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_PROBE_ROUTES = {"/healthz", "/readyz", "/metrics"}


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, **extra},
        "request_id": request_id_var.get(),
    }


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        # the wrapped FastAPI app's state (settings, store, cache...), for tests and tooling
        self.state = getattr(app, "state", None)
        # set by the server on SIGTERM: readiness answers 503, and every response asks the client
        # (the load balancer) to close its connection, so none is left idle to be cut
        self.draining = False

    def begin_drain(self) -> None:
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = dict(scope["headers"])
        incoming = headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")
        rid = incoming if _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        method: str = scope["method"]
        start = time.perf_counter()
        status = 500
        self.metrics.in_progress.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(REQUEST_ID_HEADER, rid.encode("latin-1"))]
                if self.draining:
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            refusal = self._check_length(headers)
            if refusal is None and method in _BODY_METHODS:
                body, refusal = await self._read_body(receive)
                receive = _replay(body, receive)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or UNMATCHED_ROUTE
            self.metrics.in_progress.dec()
            self.metrics.observe(route, method, status, elapsed)
            # probes and scrapes every few seconds would drown the log: DEBUG unless they fail
            quiet = route in _PROBE_ROUTES and status < 400
            access_log.log(
                logging.DEBUG if quiet else logging.INFO,
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            request_id_var.reset(token)

    def _check_length(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        raw = headers.get(b"content-length")
        if raw is None:
            return None
        if not raw.isdigit():
            return JSONResponse(
                error_body("bad_request", "Content-Length is not a number"), status_code=400
            )
        if int(raw) > self.max_body:
            return self._too_large()
        return None

    def _too_large(self) -> JSONResponse:
        return JSONResponse(
            error_body("body_too_large", f"request body is larger than {self.max_body} bytes"),
            status_code=413,
            headers={"connection": "close"},
        )

    async def _read_body(self, receive: Receive) -> tuple[bytes, JSONResponse | None]:
        """Read the whole body (it is small), stopping as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
