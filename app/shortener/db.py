"""PostgreSQL access: the pool, the schema migrations and every query. All queries are
parameterised (psycopg sends values separately from the SQL text); the hot ones are prepared."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from .config import Settings

log = logging.getLogger("shortener.db")

# any constant; serialises concurrent migrators (several pods, the init Job and a replica at once)
MIGRATION_LOCK_ID = 0x5B0E_0001

# (version, name, statements). Append only: never edit a shipped migration.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "create links",
        [
            """
            CREATE TABLE IF NOT EXISTS links (
                code            text        PRIMARY KEY
                                            CHECK (code ~ '^[A-Za-z0-9_-]{3,32}$'),
                url             text        NOT NULL CHECK (char_length(url) <= 2048),
                created_at      timestamptz NOT NULL DEFAULT now(),
                clicks          bigint      NOT NULL DEFAULT 0 CHECK (clicks >= 0),
                last_clicked_at timestamptz
            )
            """,
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class DatabaseUnavailable(Exception):
    """The database did not answer (down, unreachable, pool exhausted, timed out)."""


class CodeTaken(Exception):
    """A link with this code exists already."""


@dataclass(frozen=True)
class Link:
    code: str
    url: str
    created_at: datetime
    clicks: int
    last_clicked_at: datetime | None


def connection_kwargs(settings: Settings) -> dict[str, object]:
    return {
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "shortener",
    }


async def migrate(conn: AsyncConnection) -> list[int]:
    """Apply the migrations not applied yet, in one transaction, under an advisory lock.

    Idempotent: a second run (or a concurrent one) applies nothing. Returns the versions applied.
    """
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                await conn.execute(sql.SQL(statement))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(version)
    return applied


async def migrate_url(settings: Settings, wait_seconds: float) -> list[int]:
    """Connect (retrying for up to wait_seconds while the database comes up) and migrate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = 0.25
    while True:
        try:
            async with await AsyncConnection.connect(
                settings.database_url,
                **connection_kwargs(settings),  # type: ignore[arg-type]
            ) as conn:
                return await migrate(conn)
        except psycopg.OperationalError as exc:
            if loop.time() + delay > deadline:
                raise DatabaseUnavailable(
                    f"database {settings.redacted_database_url()} did not answer: "
                    f"{type(exc).__name__}"
                ) from None
            log.warning(
                "database not reachable yet, retrying",
                extra={"database": settings.redacted_database_url(), "retry_in_s": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class Store:
    """The queries of the app, over an async connection pool."""

    # at most one pool renewal this often (see recover())
    RENEW_INTERVAL_SECONDS = 2.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = self._new_pool()
        self._recovering = False
        self._renewed_at = -1e9
        self._retired: set[asyncio.Task[None]] = set()
        # the pool's failed connection attempts at the last successful ping
        self._errors_when_ok = 0

    def _new_pool(self) -> AsyncConnectionPool:
        timeout_ms = self.settings.db_statement_timeout_ms

        async def configure(conn: AsyncConnection) -> None:
            # a statement that hangs must not hold a connection forever
            await conn.execute(
                sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms))
            )
            await conn.commit()

        return AsyncConnectionPool(
            self.settings.database_url,
            min_size=self.settings.db_pool_min,
            max_size=self.settings.db_pool_max,
            timeout=self.settings.db_pool_timeout_seconds,
            kwargs=connection_kwargs(self.settings),
            configure=configure,
            check=AsyncConnectionPool.check_connection,
            # the pool keeps retrying in the background; it never gives up while we run
            reconnect_timeout=24 * 3600.0,
            name="shortener",
            open=False,
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await asyncio.gather(*self._retired, return_exceptions=True)
        await self.pool.close(timeout=5.0)

    def stats(self) -> dict[str, int]:
        return self.pool.get_stats()

    async def recover(self) -> bool:
        """After an outage, make the pool usable as soon as the database answers again.

        While the database is down the pool retries with an exponential backoff (1 s, 2 s, 4 s...),
        so after a long outage it could wait many seconds after the database is back. Called when a
        readiness check fails: if a direct connection succeeds while the pool could not give one,
        the pool is replaced by a fresh one (the old one is closed once its connections return).
        Returns True if the pool was renewed.
        """
        loop = asyncio.get_running_loop()
        if self._recovering or loop.time() - self._renewed_at < self.RENEW_INTERVAL_SECONDS:
            return False
        if self.stats().get("connections_errors", 0) <= self._errors_when_ok:
            return False  # the pool is busy, not failing to connect: renewing would not help
        self._recovering = True
        try:
            try:
                conn = await AsyncConnection.connect(
                    self.settings.database_url,
                    **connection_kwargs(self.settings),  # type: ignore[arg-type]
                )
            except psycopg.Error:
                return False  # still down: nothing to do
            await conn.close()
            old, self.pool = self.pool, self._new_pool()
            await self.pool.open(wait=False)
            self._renewed_at = loop.time()
            task = asyncio.create_task(old.close(timeout=30.0))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
            log.warning("database answers again: connection pool renewed")
            return True
        finally:
            self._recovering = False

    async def ping(self, timeout: float) -> int:
        """The schema version, from a live query; raises DatabaseUnavailable."""
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
                row = await cur.fetchone()
            self._errors_when_ok = self.stats().get("connections_errors", 0)
            return int(row[0]) if row else 0
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None
        except Exception as exc:  # PoolTimeout and friends
            if _is_unavailable(exc):
                raise DatabaseUnavailable(type(exc).__name__) from None
            raise

    async def create(self, code: str, url: str) -> Link:
        try:
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    """
                    INSERT INTO links (code, url) VALUES (%s, %s)
                    ON CONFLICT (code) DO NOTHING
                    RETURNING code, url, created_at, clicks, last_clicked_at
                    """,
                    (code, url),
                    prepare=True,
                )
                row = await cur.fetchone()
        except Exception as exc:
            _raise_unavailable(exc)
            raise
        if row is None:
            raise CodeTaken(code)
        return Link(**row)

    async def resolve(self, code: str) -> str | None:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT url FROM links WHERE code = %s", (code,), prepare=True
                )
                row = await cur.fetchone()
        except Exception as exc:
            _raise_unavailable(exc)
            raise
        return str(row[0]) if row else None

    async def get(self, code: str) -> Link | None:
        try:
            async with self.pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT code, url, created_at, clicks, last_clicked_at FROM links "
                    "WHERE code = %s",
                    (code,),
                    prepare=True,
                )
                row = await cur.fetchone()
        except Exception as exc:
            _raise_unavailable(exc)
            raise
        return Link(**row) if row else None

    async def add_clicks(self, counts: dict[str, tuple[int, datetime]]) -> None:
        """Add buffered click counts in one statement (two arrays, never string-built SQL)."""
        if not counts:
            return
        codes = list(counts)
        ns = [counts[c][0] for c in codes]
        whens = [counts[c][1] for c in codes]
        try:
            async with self.pool.connection() as conn:
                await conn.execute(
                    """
                    UPDATE links AS l
                       SET clicks = l.clicks + v.n,
                           last_clicked_at = greatest(l.last_clicked_at, v.at)
                      FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) AS v(code, n, at)
                     WHERE l.code = v.code
                    """,
                    (codes, ns, whens),
                )
        except Exception as exc:
            _raise_unavailable(exc)
            raise


def _is_unavailable(exc: BaseException) -> bool:
    from psycopg_pool import PoolTimeout, TooManyRequests

    return isinstance(
        exc,
        psycopg.OperationalError
        | PoolTimeout
        | TooManyRequests
        | psycopg.errors.QueryCanceled
        | psycopg.errors.AdminShutdown
        | TimeoutError
        | ConnectionError,
    )


def _raise_unavailable(exc: BaseException) -> None:
    if _is_unavailable(exc):
        raise DatabaseUnavailable(type(exc).__name__) from None
