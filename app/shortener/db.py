"""PostgreSQL access: the pool, the schema migrations and every query. All queries are
parameterised (psycopg sends values separately from the SQL text); the hot ones are prepared."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from .config import Settings
from .credentials import Credentials, CredentialsError, is_auth_failure

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
    (
        2,
        "create link_stats_daily",
        [
            # the housekeeping job's daily row (app/functions/housekeeping): created here, by the
            # migration user, since the job's own role may not create tables
            """
            CREATE TABLE IF NOT EXISTS link_stats_daily (
                day               date        PRIMARY KEY,
                links_total       bigint      NOT NULL,
                links_live        bigint      NOT NULL,
                links_expired     bigint      NOT NULL,
                links_created_24h bigint      NOT NULL,
                links_clicked_24h bigint      NOT NULL,
                clicks_total      bigint      NOT NULL,
                purged            bigint      NOT NULL,
                runs              integer     NOT NULL DEFAULT 1,
                computed_at       timestamptz NOT NULL
            )
            """,
        ],
    ),
    (
        3,
        "links expire",
        [
            # NULL: never expires. The redirect answers 410 past it; the housekeeping job purges it
            "ALTER TABLE links ADD COLUMN IF NOT EXISTS expires_at timestamptz",
            # the job's purge looks expired links up by this
            "CREATE INDEX IF NOT EXISTS links_expires_at ON links (expires_at) "
            "WHERE expires_at IS NOT NULL",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


@dataclass(frozen=True)
class Grant:
    """One privilege on one table; columns narrow it to those columns (UPDATE (a, b))."""

    privilege: str  # SELECT, INSERT, UPDATE or DELETE
    columns: tuple[str, ...] = ()


# Exactly what each login role may do, table by table. Every migration run revokes everything the
# role holds in the schema and grants this again, so a table a later migration adds is covered by
# adding it here, and a privilege removed here is revoked on the next run.
APP_GRANTS: dict[str, tuple[Grant, ...]] = {
    # the queries of Store below: create (INSERT ... RETURNING), resolve/get (SELECT), add_clicks
    "links": (Grant("SELECT"), Grant("INSERT"), Grant("UPDATE", ("clicks", "last_clicked_at"))),
    "schema_migrations": (Grant("SELECT"),),  # the readiness check reads the schema version
}
# The columns the housekeeping job reads: everything it filters, orders or counts by; not `url`
# (the job never needs to see where a link points).
JOB_LINK_COLUMNS = ("code", "created_at", "clicks", "last_clicked_at", "expires_at")
JOB_GRANTS: dict[str, tuple[Grant, ...]] = {
    # app/functions/housekeeping: the purge (SELECT of the columns it filters by, DELETE) and the
    # daily upsert (INSERT ... ON CONFLICT DO UPDATE ... RETURNING: SELECT, INSERT, UPDATE)
    "links": (Grant("SELECT", JOB_LINK_COLUMNS), Grant("DELETE")),
    "link_stats_daily": (Grant("SELECT"), Grant("INSERT"), Grant("UPDATE")),
}


@dataclass(frozen=True)
class LoginRole:
    """A login role the migration creates (or resets) with a password and exactly its grants."""

    kind: str  # "app" or "job": names the setting in messages (APP_DB_USER, JOB_DB_USER)
    name: str
    password: str = field(repr=False)
    grants: dict[str, tuple[Grant, ...]] = field(repr=False, default_factory=dict)
    # the password's source instead of `password`: a Secrets Manager secret, read (AWSCURRENT)
    # under the migration's lock, which the rotation function's setSecret takes too
    secret_arn: str = ""


def managed_roles(settings: Settings) -> list[LoginRole]:
    """The login roles the settings ask the migration to manage (none, one or both)."""
    roles = []
    if settings.app_db_user:
        roles.append(
            LoginRole(
                "app",
                settings.app_db_user,
                settings.app_db_password,
                APP_GRANTS,
                settings.app_db_secret_arn,
            )
        )
    if settings.job_db_user:
        roles.append(
            LoginRole(
                "job",
                settings.job_db_user,
                settings.job_db_password,
                JOB_GRANTS,
                settings.job_db_secret_arn,
            )
        )
    return roles


async def _current_password(role: LoginRole) -> LoginRole:
    """The role with its password: its own, or its secret's AWSCURRENT read now. Called under
    the migration lock: a rotation's setSecret waits for it (or it for the rotation), so the
    password set here is never one the rotation has just replaced."""
    if not role.secret_arn:
        return role
    from .credentials import CredentialsError, read_secrets_manager

    try:
        secret = await asyncio.to_thread(read_secrets_manager, role.secret_arn)
    except CredentialsError as exc:
        raise DatabaseUnavailable(str(exc)) from None
    if secret.username != role.name:
        raise MigrationRefused(
            f"{role.kind.upper()}_DB_SECRET_ARN={role.secret_arn} holds the username "
            f"{secret.username!r}, not {role.name!r} ({role.kind.upper()}_DB_USER)"
        )
    return replace(role, password=secret.password)


class DatabaseUnavailable(Exception):
    """The database did not answer (down, unreachable, pool exhausted, timed out)."""


class MigrationRefused(Exception):
    """The migration cannot work with this configuration (a user that may not create tables, a
    role name that is the migrating user...): a configuration error, exit status 2. The message
    names the user, role or schema, never a password."""


class CodeTaken(Exception):
    """A link with this code exists already."""


@dataclass(frozen=True)
class Link:
    code: str
    url: str
    created_at: datetime
    clicks: int
    last_clicked_at: datetime | None
    expires_at: datetime | None = None


LINK_COLUMNS = "code, url, created_at, clicks, last_clicked_at, expires_at"


def connection_kwargs(settings: Settings) -> dict[str, object]:
    return {
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "shortener",
    }


async def migrate(
    conn: AsyncConnection,
    roles: list[LoginRole] | None = None,
    canary: tuple[str, str] | None = None,
) -> list[int]:
    """Apply the migrations not applied yet, then (re)create the login roles with their grants,
    in one transaction, under an advisory lock.

    Idempotent: a second run (or a concurrent one) applies nothing and grants the same again.
    Returns the versions applied. Raises MigrationRefused when this user cannot migrate.
    """
    applied: list[int] = []
    async with conn.transaction():
        cur = await conn.execute("SELECT current_user, current_schema(), current_database()")
        user, schema, dbname = (await cur.fetchone()) or (None, None, None)
        if schema is None:
            raise MigrationRefused(
                f"the database user {user!r} has no schema to create tables in "
                "(no schema of its search_path exists)"
            )
        cur = await conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (schema,))
        row = await cur.fetchone()
        if not (row and row[0]):
            raise MigrationRefused(_cannot_migrate(str(user), str(schema)))
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
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
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(version)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MigrationRefused(
                f"{_cannot_migrate(str(user), str(schema))} ({exc.diag.message_primary})"
            ) from None
        await _lock_down(conn, str(schema), str(dbname))
        for role in roles or []:
            role = await _current_password(role)
            await _ensure_role(conn, role, user=str(user), schema=str(schema), dbname=str(dbname))
        if canary:
            # the canary's known link (CANARY_LINK_CODE/URL): there at deploy, never expiring
            code, url = canary
            await conn.execute(
                """
                INSERT INTO links (code, url) VALUES (%s, %s)
                ON CONFLICT (code) DO UPDATE SET url = EXCLUDED.url, expires_at = NULL
                """,
                (code, url),
            )
            log.info("canary link ready", extra={"code": code})
    return applied


def _cannot_migrate(user: str, schema: str) -> str:
    return (
        f"the database user {user!r} cannot create tables in schema {schema!r}, so it cannot "
        "migrate: it is not the migration user. Start the app with MIGRATE_ON_STARTUP=false and "
        "run `python -m shortener.migrate` with the master user's DATABASE_URL"
    )


async def _lock_down(conn: AsyncConnection, schema: str, dbname: str) -> None:
    """Nobody but the owners creates objects: PostgreSQL 15+ already keeps PUBLIC from creating
    in the public schema; say it for 14 too, and for temporary tables."""
    cur = await conn.execute("SELECT to_regnamespace('public') IS NOT NULL")
    row = await cur.fetchone()
    if row and row[0]:
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    if schema != "public":
        await conn.execute(
            sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema))
        )
    await conn.execute(
        sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname))
    )


async def _ensure_role(
    conn: AsyncConnection, role: LoginRole, *, user: str, schema: str, dbname: str
) -> None:
    """Create the login role, or reset its password; then exactly its grants. The password goes
    to the server only as a SCRAM-SHA-256 verifier, made here by libpq."""
    setting = f"{role.kind.upper()}_DB_USER"
    if role.name == user:
        raise MigrationRefused(
            f"{setting}={role.name!r} is the migrating user itself; give the {role.kind} "
            "its own role name"
        )
    name = sql.Identifier(role.name)
    cur = await conn.execute(
        """
        SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
               (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid)
             + (SELECT count(*) FROM pg_namespace n WHERE n.nspowner = r.oid)
             + (SELECT count(*) FROM pg_proc p WHERE p.proowner = r.oid),
               (SELECT coalesce(string_agg(g.rolname, ', ' ORDER BY g.rolname), '')
                  FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = r.oid)
          FROM pg_roles r WHERE r.rolname = %s
        """,
        (role.name,),
    )
    existing = await cur.fetchone()
    if existing is not None:
        attributes = ("SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS")
        held = [a for a, on in zip(attributes, existing[:5], strict=True) if on]
        problems = []
        if held:
            problems.append(f"has {', '.join(held)}")
        if existing[5]:
            problems.append(f"owns {existing[5]} object(s) in this database")
        if existing[6]:
            problems.append(f"is a member of {existing[6]}")
        if problems:
            raise MigrationRefused(
                f"{setting}={role.name!r}: that role exists and {'; '.join(problems)}: it cannot "
                "be a least-privilege role. Choose another name, or strip it first"
            )
    verifier = conn.pgconn.encrypt_password(
        role.password.encode(), role.name.encode(), b"scram-sha-256"
    ).decode()
    verb = "ALTER" if existing is not None else "CREATE"
    try:
        await conn.execute(
            sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(name, sql.Literal(verifier))
        )
        await conn.execute(
            sql.SQL(
                "REVOKE ALL ON DATABASE {db} FROM {r}; GRANT CONNECT ON DATABASE {db} TO {r}"
            ).format(db=sql.Identifier(dbname), r=name)
        )
        await conn.execute(
            sql.SQL(
                "REVOKE ALL ON SCHEMA {s} FROM {r}; GRANT USAGE ON SCHEMA {s} TO {r}; "
                "REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}; "
                "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}"
            ).format(s=sql.Identifier(schema), r=name)
        )
        for table, grants in role.grants.items():
            await _grant(conn, name, schema, table, grants)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise MigrationRefused(
            f"the database user {user!r} may not manage the role {role.name!r} ({setting}): "
            f"{exc.diag.message_primary}"
        ) from None
    log.info("login role ready", extra={"role": role.name, "kind": role.kind, "action": verb})


async def _grant(
    conn: AsyncConnection,
    role: sql.Identifier,
    schema: str,
    table: str,
    grants: tuple[Grant, ...],
) -> None:
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    cur = await conn.execute("SELECT to_regclass(%s)::oid", (f"{schema}.{table}",))
    row = await cur.fetchone()
    if not row or row[0] is None:
        raise RuntimeError(f"the grants name table {schema}.{table}, which no migration created")
    privileges = [
        sql.SQL(g.privilege)
        if not g.columns
        else sql.SQL("{} ({})").format(
            sql.SQL(g.privilege), sql.SQL(", ").join(map(sql.Identifier, g.columns))
        )
        for g in grants
    ]
    await conn.execute(
        sql.SQL("GRANT {} ON TABLE {} TO {}").format(sql.SQL(", ").join(privileges), target, role)
    )
    if any(g.privilege == "INSERT" for g in grants):
        # a serial or identity column's sequence: nextval() needs USAGE on it
        cur = await conn.execute(
            """
            SELECT s.oid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.refobjid = %s AND s.relkind = 'S' AND d.deptype IN ('a', 'i')
            """,
            (row[0],),
        )
        for (sequence,) in await cur.fetchall():
            await conn.execute(
                sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.SQL(sequence), role)
            )


def _reason(exc: BaseException, secrets: list[str]) -> str:
    """The first line of a connection error (libpq names host, user and the cause, never the
    password; redacted anyway), else the exception's type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text or type(exc).__name__


def _canary(settings: Settings) -> tuple[str, str] | None:
    if settings.canary_link_code:
        return settings.canary_link_code, settings.canary_link_url
    return None


async def migrate_url(settings: Settings, wait_seconds: float) -> list[int]:
    """Connect (retrying for up to wait_seconds while the database comes up, re-reading rotating
    credentials after a refused login) and migrate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = 0.25
    roles = managed_roles(settings)
    creds = Credentials(settings, connection_kwargs(settings))
    while True:
        try:
            kwargs = await creds.kwargs()
        except CredentialsError as exc:
            raise DatabaseUnavailable(str(exc)) from None
        try:
            async with await AsyncConnection.connect(settings.database_url, **kwargs) as conn:
                creds.auth_ok()
                return await migrate(conn, roles, _canary(settings))
        except psycopg.OperationalError as exc:
            if is_auth_failure(exc):
                creds.auth_failed()
            reason = _reason(exc, [*settings.secrets(), *creds.passwords()])
            if loop.time() + delay > deadline:
                raise DatabaseUnavailable(
                    f"database {settings.redacted_database_url()} did not answer: {reason}"
                ) from None
            log.warning(
                "database not reachable yet, retrying",
                extra={
                    "database": settings.redacted_database_url(),
                    "retry_in_s": delay,
                    "reason": reason,
                },
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class DatabaseState:
    """What the app knows of the database: up or down, from the background check and from the
    requests' own failures. While down, requests that need the database fail at once (503 with
    Retry-After) instead of queueing for a connection; the check turns it up again."""

    def __init__(self) -> None:
        self.up = False
        self.checked = False  # a check has succeeded at least once
        self.schema_version = 0
        self.check_failures = 0  # app_db_check_failures_total
        self.request_failures = 0
        self.changed_at = time.monotonic()
        self.last_error = ""

    def mark_up(self, version: int) -> None:
        if not self.up:
            if self.checked:
                log.warning(
                    "database answers again",
                    extra={"down_for_s": round(time.monotonic() - self.changed_at, 3)},
                )
            self.changed_at = time.monotonic()
        self.up, self.checked, self.schema_version = True, True, version
        self.last_error = ""

    def mark_down(self, reason: str) -> None:
        if self.up:
            log.warning("database unavailable", extra={"reason": reason})
            self.changed_at = time.monotonic()
        self.up = False
        self.last_error = reason


class Store:
    """The queries of the app, over an async connection pool, with a deadline on each."""

    # at most one pool renewal this often (see recover())
    RENEW_INTERVAL_SECONDS = 2.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.credentials = Credentials(settings, connection_kwargs(settings))
        self.state = DatabaseState()
        self.pool = self._new_pool()
        self._renewed_at = -1e9
        self._retired: set[asyncio.Task[None]] = set()
        self._monitor: AsyncConnection | None = None
        # the pool's failed connection attempts at the last successful check
        self._errors_when_ok = 0

    def _connection_class(self) -> type[AsyncConnection]:
        credentials = self.credentials

        class Connection(AsyncConnection):  # type: ignore[type-arg]
            """Tells the credentials when a login is refused (a rotated password)."""

            @classmethod
            async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:  # type: ignore[override]
                try:
                    conn = await super().connect(conninfo, **kwargs)
                except psycopg.OperationalError as exc:
                    if is_auth_failure(exc):
                        credentials.auth_failed()
                    raise
                credentials.auth_ok()
                return conn

        return Connection

    def _new_pool(self) -> AsyncConnectionPool:
        timeout_ms = self.settings.db_statement_timeout_ms
        # psycopg_pool reads its reconnection backoff from this class attribute (no pool
        # argument); the app's pools are the only ones in its process
        AttemptWithBackoff.INITIAL_DELAY = self.settings.db_reconnect_backoff_seconds

        async def configure(conn: AsyncConnection) -> None:
            # a statement that hangs must not hold a connection forever
            await conn.execute(
                sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_ms))
            )
            await conn.commit()

        return AsyncConnectionPool(
            self.settings.database_url,
            connection_class=self._connection_class(),
            min_size=self.settings.db_pool_min,
            max_size=self.settings.db_pool_max,
            timeout=self.settings.db_pool_timeout_seconds,
            kwargs=self.credentials.kwargs,
            configure=configure,
            check=AsyncConnectionPool.check_connection,
            # the pool keeps retrying in the background; it never gives up while we run
            reconnect_timeout=24 * 3600.0,
            name="shortener",
            open=False,
        )

    async def open(self) -> None:
        with contextlib.suppress(CredentialsError):
            await self.credentials.refresh()  # the first read; a failure is retried by the pool
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await asyncio.gather(*self._retired, return_exceptions=True)
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                await self._monitor.close()
        await self.pool.close(timeout=5.0)

    def stats(self) -> dict[str, int]:
        return self.pool.get_stats()

    async def _direct(self) -> AsyncConnection:
        """A connection outside the pool, with the current credentials."""
        kwargs = await self.credentials.kwargs()
        kwargs["connect_timeout"] = max(1, round(self.settings.ready_timeout_seconds))
        conn: AsyncConnection = await self._connection_class().connect(
            self.settings.database_url, autocommit=True, **kwargs
        )
        return conn

    async def check(self) -> bool:
        """The background database check, on a connection of its own (so a busy pool is not taken
        for a dead database): up or down, the schema version, and the pool renewed when the
        database answers but the pool cannot connect (it backs off 1, 2, 4, 8 s... after a long
        outage, or still holds a rotated-away password)."""
        timeout = self.settings.ready_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                if self._monitor is None or self._monitor.closed or self._monitor.broken:
                    self._monitor = None
                    self._monitor = await self._direct()
                try:
                    cur = await self._monitor.execute(
                        "SELECT coalesce(max(version), 0) FROM schema_migrations"
                    )
                    row = await cur.fetchone()
                except psycopg.errors.UndefinedTable:
                    row = (0,)  # it answers; nothing is migrated yet
        except (psycopg.Error, CredentialsError, TimeoutError, OSError) as exc:
            if self._monitor is not None:
                with contextlib.suppress(Exception):
                    await self._monitor.close()
                self._monitor = None
            self.state.check_failures += 1
            self.state.mark_down(_reason(exc, self.credentials.passwords()))
            return False
        self.state.mark_up(int(row[0]) if row else 0)
        await self._renew_if_failing()
        return True

    async def _renew_if_failing(self) -> None:
        loop = asyncio.get_running_loop()
        stats = self.stats()
        errors = stats.get("connections_errors", 0)
        if errors <= self._errors_when_ok:
            return
        if loop.time() - self._renewed_at < self.RENEW_INTERVAL_SECONDS:
            return
        if stats.get("pool_available", 0) > 0 and stats.get("requests_waiting", 0) == 0:
            self._errors_when_ok = errors  # it recovered by itself
            return
        old, self.pool = self.pool, self._new_pool()
        await self.pool.open(wait=False)
        self._renewed_at = loop.time()
        self._errors_when_ok = 0  # the new pool counts from zero
        task = asyncio.create_task(old.close(timeout=30.0))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)
        log.warning("database answers: connection pool renewed")

    @contextlib.asynccontextmanager
    async def _request(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a request's query, within DB_REQUEST_TIMEOUT_SECONDS; fails at once
        while the database is known to be down."""
        if self.state.checked and not self.state.up:
            raise DatabaseUnavailable(self.state.last_error or "database down")
        timeout = self.settings.db_request_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                async with self.pool.connection(
                    timeout=min(timeout, self.settings.db_pool_timeout_seconds)
                ) as conn:
                    yield conn
        except Exception as exc:
            if _is_unavailable(exc):
                self.state.request_failures += 1
                if isinstance(exc, psycopg.OperationalError):
                    # the server went away under us (shutdown, failover): stop queueing now
                    self.state.mark_down(type(exc).__name__)
                raise DatabaseUnavailable(type(exc).__name__) from None
            raise

    async def create(self, code: str, url: str, expires_at: datetime | None = None) -> Link:
        async with self._request() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""
                INSERT INTO links (code, url, expires_at) VALUES (%s, %s, %s)
                ON CONFLICT (code) DO NOTHING
                RETURNING {LINK_COLUMNS}
                """,
                (code, url, expires_at),
                prepare=True,
            )
            row = await cur.fetchone()
        if row is None:
            raise CodeTaken(code)
        return Link(**row)

    async def resolve(self, code: str) -> tuple[str, datetime | None] | None:
        """(url, expires_at) of a link, or None."""
        async with self._request() as conn:
            cur = await conn.execute(
                "SELECT url, expires_at FROM links WHERE code = %s", (code,), prepare=True
            )
            row = await cur.fetchone()
        return (str(row[0]), row[1]) if row else None

    async def get(self, code: str) -> Link | None:
        async with self._request() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {LINK_COLUMNS} FROM links WHERE code = %s", (code,), prepare=True
            )
            row = await cur.fetchone()
        return Link(**row) if row else None

    async def add_clicks(self, counts: dict[str, tuple[int, datetime]]) -> None:
        """Add buffered click counts in one statement (two arrays, never string-built SQL).
        Not a request: it may take the statement timeout, but not while the database is down."""
        if not counts:
            return
        if self.state.checked and not self.state.up:
            raise DatabaseUnavailable(self.state.last_error or "database down")
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
