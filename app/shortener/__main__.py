"""Serve the API: `python -m shortener` (the container's default command).

uvicorn with one worker (scale with replicas, not processes). On SIGTERM:

1. drain, SHUTDOWN_DRAIN_SECONDS (0 by default: in Kubernetes the preStop pause does this job
   before SIGTERM is sent): keep serving, new connections included, /readyz answers 503, and
   every response carries `Connection: close`, so clients (the load balancer) move their
   connections away instead of leaving them idle here;
2. stop accepting connections; idle keep-alive connections are closed, a request in flight is
   answered (with `Connection: close`) within SHUTDOWN_TIMEOUT_SECONDS;
3. write the buffered click counts, close the pool, exit.

Idle keep-alive connections are kept KEEPALIVE_TIMEOUT_SECONDS (longer than the load balancer's
idle timeout, LB_IDLE_TIMEOUT_SECONDS), so it is the load balancer that closes them, never the app
under a request it is sending. X-Forwarded-For/-Proto are believed from FORWARDED_ALLOW_IPS only.
Prometheus metrics are served on METRICS_PORT, a port of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from typing import Any

import uvicorn

from . import config, logs
from .app import create_app
from .middleware import RequestContext

log = logging.getLogger("shortener")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a drain phase before its graceful shutdown."""

    def __init__(self, cfg: uvicorn.Config, asgi: RequestContext, drain_seconds: float) -> None:
        super().__init__(cfg)
        self.asgi = asgi
        self.drain_seconds = drain_seconds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.asgi.begin_drain()
        if self.drain_seconds > 0:
            log.info("draining", extra={"seconds": self.drain_seconds})
            loop = asyncio.get_running_loop()
            until = loop.time() + self.drain_seconds
            while loop.time() < until and not self.force_exit:
                await asyncio.sleep(0.05)
        log.info(
            "stopping: no new connections; in-flight requests get up to %ss",
            self.config.timeout_graceful_shutdown,
            extra={"connections": len(self.server_state.connections)},
        )
        await super().shutdown(sockets)


def start_metrics(settings: config.Settings, asgi: RequestContext) -> Any:
    """The Prometheus endpoint on METRICS_PORT (a thread of prometheus_client's own server)."""
    if not settings.metrics_port:
        return None
    from prometheus_client import start_http_server

    metrics = asgi.state.metrics if asgi.state is not None else None
    if metrics is None:
        return None
    server, _thread = start_http_server(
        settings.metrics_port, addr=settings.host, registry=metrics.registry
    )
    log.info("metrics listening", extra={"port": settings.metrics_port})
    return server


def main() -> int:
    try:
        settings = config.load()
    except config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.secrets())
    asgi = create_app(settings)
    try:
        metrics_server = start_metrics(settings, asgi)
    except OSError as exc:
        print(
            f"configuration error: METRICS_PORT={settings.metrics_port} cannot be bound "
            f"({exc.strerror or exc})",
            file=sys.stderr,
        )
        return 2
    trusted = list(settings.forwarded_allow_ips)
    server = DrainingServer(
        uvicorn.Config(
            asgi,
            host=settings.host,
            port=settings.port,
            log_config=None,  # keep our JSON logging
            access_log=False,  # the middleware writes one access line per request
            server_header=False,
            timeout_keep_alive=settings.keepalive_timeout_seconds,
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
            # uvicorn takes addresses and CIDR networks here (0.30+); config.py checked each
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
            lifespan="on",
        ),
        asgi,
        settings.shutdown_drain_seconds,
    )
    # uvicorn exits (status 3) when the lifespan fails, e.g. no database within
    # STARTUP_DB_TIMEOUT_SECONDS; the app's own contract is status 1 for that, and 2 when the
    # startup migration was refused (a configuration error: the role cannot migrate).
    try:
        with contextlib.suppress(SystemExit):
            server.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    if not server.started:
        logging.getLogger("shortener").error("the server did not start")
        return 2 if asgi.state.startup_refused else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
