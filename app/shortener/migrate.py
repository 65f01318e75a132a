"""Apply the schema migrations and exit: `python -m shortener.migrate`.

Run as a Kubernetes init container or Job before the app starts (the app also migrates at startup
unless MIGRATE_ON_STARTUP=false). Idempotent and safe to run concurrently. Exit 0 on success, 1 if
the database cannot be reached within STARTUP_DB_TIMEOUT_SECONDS, 2 on a configuration error.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from . import config, logs
from .db import SCHEMA_VERSION, DatabaseUnavailable, migrate_url

log = logging.getLogger("shortener.migrate")


def main() -> int:
    try:
        settings = config.load()
    except config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.secrets())
    try:
        applied = asyncio.run(migrate_url(settings, settings.startup_db_timeout_seconds))
    except DatabaseUnavailable as exc:
        log.error("migration failed: %s", exc)
        return 1
    log.info(
        "schema migrated",
        extra={
            "database": settings.redacted_database_url(),
            "applied": applied,
            "schema_version": SCHEMA_VERSION,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
