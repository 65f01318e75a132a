"""Apply the schema migrations and exit: `python -m shortener.migrate`.

Run as a Kubernetes Job (or the free-tier host's first container) before the app starts, with the master user's
DATABASE_URL (the app's pods then run as the app role with MIGRATE_ON_STARTUP=false). With
APP_DB_USER/APP_DB_PASSWORD and JOB_DB_USER/JOB_DB_PASSWORD it also creates (or resets the password
of) the app's and the housekeeping job's login roles and grants each exactly what it needs
(db.APP_GRANTS, db.JOB_GRANTS). Idempotent and safe to run concurrently. Exit 0 on success, 1 if
the database cannot be reached within STARTUP_DB_TIMEOUT_SECONDS, 2 on a configuration error (a
bad setting, or a user or role that cannot work: the message says which).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from . import config, logs
from .db import SCHEMA_VERSION, DatabaseUnavailable, MigrationRefused, migrate_url

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
    except MigrationRefused as exc:
        log.error("migration refused: %s", exc)
        return 2
    log.info(
        "schema migrated",
        extra={
            "database": settings.redacted_database_url(),
            "applied": applied,
            "schema_version": SCHEMA_VERSION,
            "roles": [r for r in (settings.app_db_user, settings.job_db_user) if r],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
