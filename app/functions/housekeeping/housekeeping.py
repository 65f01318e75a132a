"""Nightly housekeeping for the link shortener: purge expired links, write a daily stats row.

Lambda handler: ``housekeeping.handler``. Runs on a schedule (EventBridge) inside the VPC, next to
the database. It shows a learner three serverless patterns:

* credentials read at run time from AWS Secrets Manager (``DB_SECRET_ARN``), never in the package
  or in an environment variable;
* bounded work: the purge deletes in small batches, each its own short transaction, and stops
  early when the Lambda is about to time out (the next run carries on);
* at-least-once delivery made safe: a PostgreSQL advisory lock lets one run work at a time, and
  the stats row is an upsert keyed by day, so a second run on the same day changes nothing but
  ``runs`` and ``computed_at``;
* least privilege: its database role (made by the app's migration, ``JOB_DB_USER``) may only
  read and delete links and write the stats table, which the migration creates; the server's
  certificate is verified against the RDS CA bundle shipped in the archive.

What it did lands in CloudWatch, namespace ``Backbone/Jobs``, dimensions ``Stack`` and
``Job=housekeeping``: ``Success`` (None, 1 or 0), ``PurgedLinks`` (Count, both kinds),
``PurgedExpired`` and ``PurgedUnused`` (Count), ``PurgeBatches`` (Count), ``PurgeComplete``
(None, 0 when the run stopped at PURGE_MAX_BATCHES or its deadline: the next run carries on),
``LiveLinks`` and ``ExpiredLinks`` (Count: expired links still kept, within the grace days).
A failure (unreadable secret, database down, wrong password, SQL error) publishes ``Success`` 0,
logs one line without the password, and raises, so Lambda counts an error and the async
on-failure destination receives the event.

Environment (app/functions/README.md has the table):
    DB_SECRET_ARN        required; JSON with username and password, and host, port, dbname when
                         the secret has them (RDS's own master-user secret holds only username and
                         password: then DB_HOST, DB_PORT, DB_NAME supply the rest)
    DB_HOST, DB_PORT, DB_NAME  used when the secret lacks them
    DB_SSLMODE           default ``verify-full`` (the server's certificate and name are checked)
    DB_SSLROOTCERT       default ``certs/rds-global-bundle.pem`` beside this module (in the archive)
    DB_CONNECT_TIMEOUT_SECONDS  default 5
    DB_STATEMENT_TIMEOUT_MS     default 60000
    STACK_NAME           required, the value of the ``Stack`` dimension
    METRICS_NAMESPACE    default ``Backbone/Jobs``
    PURGE_GRACE_DAYS     expired links are kept this many days past expiry; default 0
    PURGE_UNUSED_AFTER_DAYS  links not clicked (never clicked: not created) for this many days are
                         purged; default 0 = never (deleting by age is a policy the owner chooses)
    PURGE_BATCH_SIZE     rows per delete transaction; default 1000
    PURGE_MAX_BATCHES    at most this many batches per run; default 100 (the next run carries on)

A refused login (the password rotated between the read and the connection: RDS rotates its managed
secret every 7 days) re-reads the secret and connects again, at most AUTH_RETRIES times, waiting
1 s, then 2 s.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

LOG = logging.getLogger("housekeeping")
LOG.setLevel(logging.INFO)

JOB = "housekeeping"
DEFAULT_NAMESPACE = "Backbone/Jobs"
LOCK_KEY = "backbone-housekeeping"
# Stop starting new purge batches when less than this much Lambda time is left.
RESERVE_SECONDS = 10.0
# a refused login: re-read the secret and connect again, after these pauses
AUTH_RETRY_DELAYS = (1.0, 2.0)

# The app's table and the job's stats table: both created by the app's migration
# (app/shortener/db.py, migrations 1 and 2); the job's role may not create tables.
LINKS_TABLE = "links"
STATS_TABLE = "link_stats_daily"

# The Amazon RDS CA bundle, packaged with this module (app/certs/README.md says where it is from).
DEFAULT_SSLROOTCERT = str(Path(__file__).resolve().parent / "certs" / "rds-global-bundle.pem")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

LINK_COLUMNS = """
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = %s
"""


def purge_conditions(
    columns: set[str], *, grace_days: int, unused_days: int
) -> list[tuple[str, str]]:
    """(kind, WHERE clause) of each purge pass, expired links first (pure)."""
    out = []
    if "expires_at" in columns:
        out.append(("expired", purge_condition(columns, grace_days=grace_days, unused_days=0)))
    if unused_days > 0 and {"created_at", "last_clicked_at"} <= columns:
        only_unused = columns - {"expires_at"}
        out.append(
            ("unused", purge_condition(only_unused, grace_days=grace_days, unused_days=unused_days))
        )
    return [(kind, cond) for kind, cond in out if cond]


def purge_condition(columns: set[str], *, grace_days: int, unused_days: int) -> str | None:
    """The WHERE clause of the purge for the links table as it is (pure; None = nothing to do).

    * ``expires_at`` (when the app's schema has it): past expiry by more than ``grace_days``.
    * ``unused_days`` > 0: not clicked (or, never clicked, not created) for that many days.
    The day counts are query parameters (``%(grace)s``, ``%(unused)s``), never SQL text.
    """
    parts = []
    if "expires_at" in columns:
        parts.append(
            "(expires_at IS NOT NULL AND expires_at < now() - make_interval(days => %(grace)s))"
        )
    if unused_days > 0 and {"created_at", "last_clicked_at"} <= columns:
        parts.append(
            "(coalesce(last_clicked_at, created_at) < now() - make_interval(days => %(unused)s))"
        )
    return " OR ".join(parts) if parts else None


def purge_batch_sql(condition: str) -> str:
    """One batch: the oldest matching rows. Only SELECT and DELETE privileges are needed (a
    SELECT ... FOR UPDATE would need UPDATE). The condition is checked again on the row being
    deleted: if a request changed it meanwhile (a click), PostgreSQL re-evaluates it on the new
    version after waiting for that request, so a link clicked just now is not purged as unused."""
    return f"""
DELETE FROM {LINKS_TABLE}
WHERE code IN (
    SELECT code FROM {LINKS_TABLE}
    WHERE {condition}
    ORDER BY created_at
    LIMIT %(batch)s
)
AND ({condition})
"""


def stats_sql(columns: set[str]) -> str:
    """Upsert today's (UTC) row; a second run the same day adds its purge count and bumps runs."""
    if "expires_at" in columns:
        live = "count(*) FILTER (WHERE expires_at IS NULL OR expires_at > now())"
        expired = "count(*) FILTER (WHERE expires_at IS NOT NULL AND expires_at <= now())"
    else:
        live, expired = "count(*)", "0"
    return f"""
INSERT INTO {STATS_TABLE} AS s
    (day, links_total, links_live, links_expired, links_created_24h, links_clicked_24h,
     clicks_total, purged, runs, computed_at)
SELECT (now() AT TIME ZONE 'UTC')::date,
       count(*),
       {live},
       {expired},
       count(*) FILTER (WHERE created_at > now() - interval '24 hours'),
       count(*) FILTER (WHERE last_clicked_at > now() - interval '24 hours'),
       coalesce(sum(clicks), 0),
       %(purged)s,
       1,
       now()
FROM {LINKS_TABLE}
ON CONFLICT (day) DO UPDATE SET
    links_total = EXCLUDED.links_total,
    links_live = EXCLUDED.links_live,
    links_expired = EXCLUDED.links_expired,
    links_created_24h = EXCLUDED.links_created_24h,
    links_clicked_24h = EXCLUDED.links_clicked_24h,
    clicks_total = EXCLUDED.clicks_total,
    purged = s.purged + EXCLUDED.purged,
    runs = s.runs + 1,
    computed_at = EXCLUDED.computed_at
RETURNING day, links_total, links_live, links_expired, links_created_24h, links_clicked_24h,
          clicks_total, purged, runs
"""


class JobError(RuntimeError):
    """A failure with a message that is safe to log: it never holds the password."""


@dataclass(frozen=True)
class Settings:
    secret_arn: str
    stack: str
    namespace: str
    host: str | None
    port: int | None
    dbname: str | None
    sslmode: str
    sslrootcert: str
    connect_timeout: int
    statement_timeout_ms: int
    grace_days: int
    unused_days: int
    batch_size: int
    max_batches: int = 100

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [k for k in ("DB_SECRET_ARN", "STACK_NAME") if not env.get(k)]
        if missing:
            raise JobError(f"{JOB}: missing environment variable(s): {', '.join(missing)}")
        sslmode = env.get("DB_SSLMODE") or "verify-full"
        if sslmode not in SSLMODES:
            raise JobError(f"{JOB}: DB_SSLMODE={sslmode!r} is not one of {', '.join(SSLMODES)}")
        sslrootcert = env.get("DB_SSLROOTCERT") or DEFAULT_SSLROOTCERT
        if sslmode in ("verify-ca", "verify-full") and not os.path.isfile(sslrootcert):
            raise JobError(
                f"{JOB}: DB_SSLROOTCERT={sslrootcert!r} is not a file (DB_SSLMODE={sslmode} "
                "verifies the server against it)"
            )
        return cls(
            secret_arn=env["DB_SECRET_ARN"],
            stack=env["STACK_NAME"],
            namespace=env.get("METRICS_NAMESPACE") or DEFAULT_NAMESPACE,
            host=env.get("DB_HOST") or None,
            port=_int(env, "DB_PORT", 0, 0, 65535) or None,
            dbname=env.get("DB_NAME") or None,
            sslmode=sslmode,
            sslrootcert=sslrootcert,
            connect_timeout=_int(env, "DB_CONNECT_TIMEOUT_SECONDS", 5, 1, 60),
            statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 60_000, 100, 900_000),
            grace_days=_int(env, "PURGE_GRACE_DAYS", 0, 0, 3650),
            unused_days=_int(env, "PURGE_UNUSED_AFTER_DAYS", 0, 0, 36500),
            batch_size=_int(env, "PURGE_BATCH_SIZE", 1000, 1, 100_000),
            max_batches=_int(env, "PURGE_MAX_BATCHES", 100, 1, 100_000),
        )


def _int(env: Any, name: str, default: int, low: int, high: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise JobError(f"{JOB}: {name}={raw!r} is not an integer ({low}..{high})") from None
    if not low <= value <= high:
        raise JobError(f"{JOB}: {name}={value} is out of range ({low}..{high})")
    return value


@dataclass(frozen=True)
class Credentials:
    host: str
    port: int
    dbname: str
    username: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log through repr()
        return f"Credentials({self.where()})"

    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}/{self.dbname}"


@dataclass(frozen=True)
class Report:
    stack: str
    purged: int
    complete: bool  # False when the purge stopped early (time, max batches); the next run goes on
    skipped: bool  # True when another run held the lock
    stats: dict[str, Any] | None
    purged_expired: int = 0
    purged_unused: int = 0
    batches: int = 0


def read_credentials(
    settings: Settings, secrets: Any, *, stage: str = "AWSCURRENT", version_id: str | None = None
) -> Credentials:
    """Fetch and parse the database secret (its current version, or the version of that stage
    and id: the rotation function reads AWSPENDING). Errors name the secret and the keys, never
    values."""
    version = {"VersionStage": stage} | ({"VersionId": version_id} if version_id else {})
    try:
        value = secrets.get_secret_value(SecretId=settings.secret_arn, **version)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise JobError(f"cannot read database secret {settings.secret_arn}: {code}") from None
    except BotoCoreError as exc:
        raise JobError(
            f"cannot read database secret {settings.secret_arn}: {type(exc).__name__}"
        ) from None
    raw = value.get("SecretString")
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise JobError(f"database secret {settings.secret_arn} is not a JSON object")
    merged: dict[str, Any] = {
        "host": data.get("host") or settings.host,
        "port": data.get("port") or settings.port or 5432,
        "dbname": data.get("dbname") or settings.dbname,
        "username": data.get("username") or data.get("user"),
        "password": data.get("password"),
    }
    absent = sorted(k for k, v in merged.items() if v in (None, ""))
    if absent:
        raise JobError(
            f"database secret {settings.secret_arn} lacks {', '.join(absent)} "
            "(and no DB_HOST/DB_PORT/DB_NAME fallback was set for them)"
        )
    try:
        port = int(merged["port"])
    except (TypeError, ValueError):
        raise JobError(f"database secret {settings.secret_arn} has a non-numeric port") from None
    return Credentials(
        host=str(merged["host"]),
        port=port,
        dbname=str(merged["dbname"]),
        username=str(merged["username"]),
        password=str(merged["password"]),
    )


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "[secret]") if secret else text


def connect(creds: Credentials, settings: Settings) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            host=creds.host,
            port=creds.port,
            dbname=creds.dbname,
            user=creds.username,
            password=creds.password,
            sslmode=settings.sslmode,
            sslrootcert=settings.sslrootcert,
            connect_timeout=settings.connect_timeout,
            application_name=f"backbone-{JOB}",
            options=f"-c statement_timeout={settings.statement_timeout_ms}",
            autocommit=True,
        )
    except psycopg.Error as exc:
        # libpq's messages name host and user, not the password; redact anyway, and do not chain
        # the original exception (its traceback would print the same message unredacted).
        detail = _redact(
            str(exc).strip().splitlines()[0] if str(exc).strip() else "", creds.password
        )
        kind = AuthRefused if "authentication failed" in detail else JobError
        raise kind(f"cannot connect to {creds.where()}: {detail or type(exc).__name__}") from None


class AuthRefused(JobError):
    """The server refused the login (wrong or rotated password)."""


def connect_with_rotation(
    settings: Settings, secrets: Any
) -> tuple[Credentials, psycopg.Connection[Any]]:
    """Read the secret and connect; a refused login re-reads it (a rotation may have finished
    since) and tries again, a bounded number of times."""
    for pause in (*AUTH_RETRY_DELAYS, None):
        creds = read_credentials(settings, secrets)
        try:
            return creds, connect(creds, settings)
        except AuthRefused as exc:
            if pause is None:
                raise
            LOG.warning(
                json.dumps({"event": "login refused, re-reading the secret", "error": str(exc)})
            )
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def housekeep(
    conn: psycopg.Connection[Any], settings: Settings, *, deadline: float | None = None
) -> Report:
    """Purge in batches, then upsert today's stats row. Safe to run twice, or twice at once."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (LOCK_KEY,))
        row = cur.fetchone()
        if not (row and row[0]):
            LOG.info(json.dumps({"event": "skipped", "reason": "another run holds the lock"}))
            return Report(settings.stack, purged=0, complete=True, skipped=True, stats=None)
        counts = {"expired": 0, "unused": 0}
        batches = 0
        try:
            cur.execute(LINK_COLUMNS, (LINKS_TABLE,))
            columns = {str(r[0]) for r in cur.fetchall()}
            if not columns:
                raise JobError(f"table {LINKS_TABLE!r} does not exist: has the app migrated?")
            cur.execute("SELECT to_regclass(%s)", (STATS_TABLE,))
            found = cur.fetchone()
            if not found or found[0] is None:
                raise JobError(
                    f"table {STATS_TABLE!r} does not exist: has the app migrated? "
                    "(python -m shortener.migrate creates it)"
                )
            passes = purge_conditions(
                columns, grace_days=settings.grace_days, unused_days=settings.unused_days
            )
            params = {
                "grace": settings.grace_days,
                "unused": settings.unused_days,
                "batch": settings.batch_size,
            }
            complete = True
            for kind, condition in passes:
                while True:
                    if batches >= settings.max_batches or (
                        deadline is not None and time.monotonic() > deadline
                    ):
                        complete = False
                        break
                    with conn.transaction():
                        cur.execute(purge_batch_sql(condition), params)
                        deleted = cur.rowcount
                    batches += 1
                    counts[kind] += deleted
                    if deleted < settings.batch_size:
                        break
                if not complete:
                    break
            purged = counts["expired"] + counts["unused"]
            with conn.transaction():
                cur.execute(stats_sql(columns), {"purged": purged})
                names = [d.name for d in cur.description or []]
                stats_row = cur.fetchone()
            stats = dict(zip(names, stats_row, strict=True)) if stats_row else None
            if stats and isinstance(stats.get("day"), date):
                stats["day"] = stats["day"].isoformat()
        finally:
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOCK_KEY,))
    return Report(
        settings.stack,
        purged=purged,
        complete=complete,
        skipped=False,
        stats=stats,
        purged_expired=counts["expired"],
        purged_unused=counts["unused"],
        batches=batches,
    )


def metric_data(stack: str, *, success: bool, report: Report | None) -> list[dict[str, Any]]:
    """The PutMetricData entries (pure; app/functions/README.md documents this shape)."""
    dims = [{"Name": "Stack", "Value": stack}, {"Name": "Job", "Value": JOB}]
    when = datetime.now(UTC)

    def one(name: str, value: float, unit: str) -> dict[str, Any]:
        return {
            "MetricName": name,
            "Dimensions": dims,
            "Timestamp": when,
            "Value": float(value),
            "Unit": unit,
        }

    data = [one("Success", 1 if success else 0, "None")]
    if report is not None:
        data.append(one("PurgedLinks", report.purged, "Count"))
        if not report.skipped:
            data.append(one("PurgedExpired", report.purged_expired, "Count"))
            data.append(one("PurgedUnused", report.purged_unused, "Count"))
            data.append(one("PurgeBatches", report.batches, "Count"))
            data.append(one("PurgeComplete", 1 if report.complete else 0, "None"))
        if report.stats is not None:
            data.append(one("LiveLinks", report.stats["links_live"], "Count"))
            data.append(one("ExpiredLinks", report.stats["links_expired"], "Count"))
    return data


def _clients() -> tuple[Any, Any]:
    config = Config(
        connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("secretsmanager", config=config), boto3.client("cloudwatch", config=config)


def run(
    settings: Settings,
    *,
    secrets: Any = None,
    cloudwatch: Any = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    if secrets is None or cloudwatch is None:
        default_secrets, default_cloudwatch = _clients()
        secrets = secrets or default_secrets
        cloudwatch = cloudwatch or default_cloudwatch
    started = time.monotonic()
    try:
        creds = connect_with_rotation(settings, secrets)
        try:
            with creds[1] as conn:
                report = housekeep(conn, settings, deadline=deadline)
        except psycopg.Error as exc:
            detail = _redact(
                str(exc).strip().splitlines()[0] if str(exc).strip() else "", creds[0].password
            )
            raise JobError(
                f"database work failed on {creds[0].where()}: {type(exc).__name__}: {detail}"
            ) from None
    except JobError as exc:
        LOG.error(json.dumps({"event": "failed", "stack": settings.stack, "error": str(exc)}))
        cloudwatch.put_metric_data(
            Namespace=settings.namespace,
            MetricData=metric_data(settings.stack, success=False, report=None),
        )
        raise
    cloudwatch.put_metric_data(
        Namespace=settings.namespace,
        MetricData=metric_data(settings.stack, success=True, report=report),
    )
    result = asdict(report)
    result["seconds"] = round(time.monotonic() - started, 3)
    LOG.info(json.dumps({"event": "done", **result}, default=str))
    return result


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    settings = Settings.from_env()
    deadline = None
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        deadline = time.monotonic() + remaining() / 1000.0 - RESERVE_SECONDS
    return run(settings, deadline=deadline)
