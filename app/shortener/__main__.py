"""Serve the API: `python -m shortener` (the container's default command).

uvicorn with one worker (scale with replicas, not processes); SIGTERM stops accepting connections,
lets in-flight requests finish within SHUTDOWN_TIMEOUT_SECONDS, flushes click counts, closes the pool.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import uvicorn

from . import config, logs
from .app import create_app


def main() -> int:
    try:
        settings = config.load()
    except config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.secrets())
    asgi = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            asgi,
            host=settings.host,
            port=settings.port,
            log_config=None,  # keep our JSON logging
            access_log=False,  # the middleware writes one access line per request
            server_header=False,
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
            lifespan="on",
        )
    )
    # uvicorn exits (status 3) when the lifespan fails, e.g. no database within
    # STARTUP_DB_TIMEOUT_SECONDS; the app's own contract is status 1 for that, and 2 when the
    # startup migration was refused (a configuration error: the role cannot migrate).
    with contextlib.suppress(SystemExit):
        server.run()
    if not server.started:
        logging.getLogger("shortener").error("the server did not start")
        return 2 if asgi.state.startup_refused else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
