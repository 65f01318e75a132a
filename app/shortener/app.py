"""The web API: routes, error handling, and the lifespan (migrate, open the pool, flush clicks).

POST /api/links          create a short link (Authorization: Bearer $API_TOKEN)
GET  /{code}             307 redirect to the link's URL (the hot path, cached)
GET  /api/links/{code}   the link and its click count
GET  /healthz            liveness: the process answers (nothing else is asked)
GET  /readyz             readiness: started, the schema current once seen, not shutting down.
                         Not the database: an outage must not take every pod out of service
                         (cached redirects still work); app_db_up says what the database does.
Prometheus metrics are on their own port (METRICS_PORT), /docs and /openapi.json only with
DOCS_ENABLED=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, config
from .cache import TTLCache
from .db import (
    SCHEMA_VERSION,
    CodeTaken,
    DatabaseUnavailable,
    Link,
    MigrationRefused,
    Store,
    migrate_url,
)
from .metrics import Metrics
from .middleware import RequestContext, error_body
from .validation import RESERVED_CODES, CreateLink, code_problem, parse_expiry

log = logging.getLogger("shortener")

CODE_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/l/I
CODE_LENGTH = 7
MAX_PENDING_CODES = 100_000


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.extra = extra


class ClickBuffer:
    """Redirects count clicks in memory; a background task writes them in one UPDATE.

    The redirect path then never waits on a write. On a database outage the counts stay buffered
    (bounded) and are written when it returns; at shutdown they are flushed once more.
    """

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, datetime]] = {}
        self.dropped = 0

    def add(self, code: str) -> None:
        n, _ = self.pending.get(code, (0, None))
        if n == 0 and len(self.pending) >= MAX_PENDING_CODES:
            self.dropped += 1
            return
        self.pending[code] = (n + 1, datetime.now(UTC))

    def count(self, code: str) -> int:
        return self.pending.get(code, (0, None))[0]

    async def flush(self, store: Store) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, {}
        try:
            await store.add_clicks(batch)
        except Exception:
            # put them back, merged with what arrived meanwhile
            for code, (n, at) in batch.items():
                m, later = self.pending.get(code, (0, at))
                self.pending[code] = (n + m, max(at, later))
            raise


def create_app(settings: config.Settings | None = None) -> RequestContext:
    """The ASGI app. With no settings, they are read from the environment."""
    settings = settings or config.load()
    store = Store(settings)
    # code -> (url, expires_at)
    cache: TTLCache[tuple[str, datetime | None]] = TTLCache(
        settings.cache_max_entries, settings.cache_ttl_seconds
    )
    clicks = ClickBuffer()
    metrics = Metrics(cache, lambda: store.stats(), store, clicks)
    retry_after = str(max(1, math.ceil(settings.db_check_interval_seconds)))
    # readiness: set once a database check has seen the current schema; it then stays (an outage
    # later does not take the pod out of service); cleared by SIGTERM's drain
    ready = {"schema_seen": False}

    async def flush_clicks_forever() -> None:
        while True:
            await asyncio.sleep(settings.click_flush_seconds)
            if clicks.pending and store.state.up:
                try:
                    await clicks.flush(store)
                except Exception as exc:
                    log.warning("click counts not written yet: %s", type(exc).__name__)

    def readiness() -> tuple[bool, str]:
        if asgi.draining:
            ok, why = False, "shutting down"
        elif ready["schema_seen"]:
            ok, why = True, "ok"
        elif not store.state.checked:
            ok, why = False, "the database has not answered yet since start"
        else:
            version = store.state.schema_version
            ok, why = False, f"schema version {version}, need {SCHEMA_VERSION}: run the migration"
        metrics.ready.set(1 if ok else 0)
        return ok, why

    async def check_database() -> None:
        await store.check()
        if store.state.up and store.state.schema_version >= SCHEMA_VERSION:
            ready["schema_seen"] = True
        readiness()

    async def check_database_forever() -> None:
        while True:
            await asyncio.sleep(settings.db_check_interval_seconds)
            try:
                await check_database()
            except Exception as exc:  # never let the check die
                log.error("database check failed unexpectedly", exc_info=exc)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info(
            "starting",
            extra={
                "version": __version__,
                "database": settings.redacted_database_url(),
                "writes_enabled": bool(settings.api_token),
                "cache_ttl_seconds": settings.cache_ttl_seconds,
                "cache_max_entries": settings.cache_max_entries,
                "credentials": settings.secret_source or "DATABASE_URL",
                "keepalive_timeout_s": settings.keepalive_timeout_seconds,
            },
        )
        if not settings.api_token:
            log.warning("API_TOKEN is not set: POST /api/links answers 503")
        if settings.migrate_on_startup:
            try:
                applied = await migrate_url(settings, settings.startup_db_timeout_seconds)
            except MigrationRefused as exc:
                # e.g. MIGRATE_ON_STARTUP=true with the app's own role: say what to do, then stop
                app.state.startup_refused = str(exc)
                log.error("cannot start: MIGRATE_ON_STARTUP=true but %s", exc)
                raise
            log.info("schema migrated", extra={"applied": applied})
        await store.open()
        await check_database()
        tasks = [
            asyncio.create_task(flush_clicks_forever(), name="flush-clicks"),
            asyncio.create_task(check_database_forever(), name="check-database"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await clicks.flush(store)
            except Exception as exc:
                log.warning(
                    "click counts lost at shutdown",
                    extra={"codes": len(clicks.pending), "error": type(exc).__name__},
                )
            await store.close()
            log.info("stopped")

    app = FastAPI(
        title="shortener",
        version=__version__,
        lifespan=lifespan,
        # the API's description is not for the internet: on only when asked for
        docs_url="/docs" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.startup_refused = ""  # why the startup migration was refused, if it was
    app.state.store = store
    app.state.cache = cache
    app.state.metrics = metrics
    app.state.clicks = clicks

    # ---- errors: every one is JSON with a type, a message and the request id --------------------
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = exc.extra.pop("headers", None)
        return JSONResponse(
            error_body(exc.kind, exc.message, **exc.extra), status_code=exc.status, headers=headers
        )

    @app.exception_handler(DatabaseUnavailable)
    async def on_db_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        metrics.db_errors.labels(operation=request.method).inc()
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            error_body("database_unavailable", "the database is not answering; retry later"),
            status_code=503,
            headers={"retry-after": retry_after},
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(kind, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("invalid_request", "the request is not valid", details=_details(exc)),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def on_bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)

    # ---- auth -----------------------------------------------------------------------------------
    async def require_token(request: Request) -> None:
        if not settings.api_token:
            raise ApiError(503, "writes_disabled", "writes are disabled: API_TOKEN is not set")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(
                401,
                "unauthorized",
                "missing bearer token (Authorization: Bearer <token>)",
                headers={"www-authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.strip().encode(), settings.api_token.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "invalid bearer token",
                headers={"www-authenticate": 'Bearer error="invalid_token"'},
            )

    # ---- operational ------------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        ok, why = readiness()
        return JSONResponse(
            {
                "status": "ready" if ok else "unavailable",
                "detail": why,
                "database": "up" if store.state.up else "down",
            },
            status_code=200 if ok else 503,
        )

    # ---- the API --------------------------------------------------------------------------------
    def link_json(link: Link, request: Request) -> dict[str, Any]:
        base = settings.public_base_url or str(request.base_url).rstrip("/")
        return {
            "code": link.code,
            "url": link.url,
            "short_url": f"{base}/{link.code}",
            "created_at": link.created_at.isoformat(),
            "expires_at": link.expires_at.isoformat() if link.expires_at else None,
            "clicks": link.clicks + clicks.count(link.code),
            "last_clicked_at": link.last_clicked_at.isoformat() if link.last_clicked_at else None,
        }

    @app.post(
        "/api/links",
        status_code=201,
        tags=["links"],
        dependencies=[Depends(require_token)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": CreateLink.model_json_schema()}},
            }
        },
    )
    async def create_link(request: Request) -> JSONResponse:
        body = await _json_body(request)
        try:
            wanted = CreateLink.model_validate(body)
        except ValidationError as exc:
            raise ApiError(
                422, "invalid_request", "the link is not valid", details=_details(exc)
            ) from None
        expires_at = None
        if wanted.expires_at is not None:
            expires_at, problem = parse_expiry(
                wanted.expires_at, max_days=settings.max_link_lifetime_days
            )
            if problem:
                raise ApiError(
                    422,
                    "invalid_request",
                    "the link is not valid",
                    details=[{"field": "expires_at", "problem": problem}],
                )
        if wanted.code is not None:
            try:
                link = await store.create(wanted.code, wanted.url, expires_at)
            except CodeTaken:
                raise ApiError(
                    409, "code_taken", f"the code {wanted.code!r} is already in use"
                ) from None
        else:
            for _ in range(8):
                code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
                try:
                    link = await store.create(code, wanted.url, expires_at)
                    break
                except CodeTaken:
                    continue
            else:  # pragma: no cover - 57**7 codes
                raise ApiError(503, "no_code", "could not allocate a free code; retry")
        metrics.links_created.inc()
        cache.put(link.code, (link.url, link.expires_at))
        out = link_json(link, request)
        log.info("link created", extra={"code": link.code})
        return JSONResponse(out, status_code=201, headers={"location": out["short_url"]})

    @app.get("/api/links/{code}", tags=["links"])
    async def link_stats(code: str, request: Request) -> dict[str, Any]:
        _check_code(code)
        link = await store.get(code)
        if link is None:
            raise ApiError(404, "not_found", f"no link with code {code!r}")
        return link_json(link, request)

    @app.get("/{code}", tags=["links"], response_class=RedirectResponse, status_code=307)
    async def follow(code: str) -> RedirectResponse:
        if code.lower() in RESERVED_CODES or code == "openapi.json":
            # the app's own paths (/metrics, /docs...) when they are not served here: no such page
            raise ApiError(404, "not_found", f"no link with code {code!r}")
        _check_code(code)
        entry = cache.get(code)
        if entry is None:
            try:
                entry = await store.resolve(code)
            except DatabaseUnavailable:
                # the database is down: a link seen before still redirects
                entry = cache.get_stale(code)
                if entry is None:
                    raise
                metrics.stale_redirects.inc()
            else:
                if entry is None:
                    raise ApiError(404, "not_found", f"no link with code {code!r}")
                cache.put(code, entry)
        url, expires_at = entry
        if expires_at is not None and expires_at <= datetime.now(UTC):
            metrics.expired.inc()
            raise ApiError(410, "expired", f"the link {code!r} has expired")
        clicks.add(code)
        metrics.redirects.inc()
        return RedirectResponse(url, status_code=307, headers={"cache-control": "no-store"})

    asgi = RequestContext(app, metrics, settings.max_body_bytes)
    return asgi


def _check_code(code: str) -> None:
    problem = code_problem(code)
    if problem:
        raise ApiError(400, "invalid_code", problem)


async def _json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (application/json)")
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None


def _details(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        msg = str(err.get("msg", ""))
        out.append(
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "problem": msg.removeprefix("Value error, "),
            }
        )
    return out
