"""The nightly housekeeping job, run for real: a throwaway PostgreSQL cluster holds the app's own
schema (app/shortener/db.py's migrations), moto's Secrets Manager holds the credentials and moto's
CloudWatch receives the metrics (server mode, HTTP on loopback). The last tests run it as the
least-privilege role the app's migration makes, over TLS verified against a throwaway CA."""

from __future__ import annotations

import asyncio
import json
import os
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from tests.app.conftest import PgCluster, RdsDatabase
from tests.functions.conftest import (
    REGION,
    Postgres,
    datapoints,
    free_port,
    load_function,
    make_secret,
)
from tests.realparts import wait_until

hk = load_function("housekeeping")
FUNCTION_DIR = Path(hk.__file__).parent
JOB_PW = "Job-pass-0123456789-abcdef"

NS = "Backbone/Jobs"
STACK = "test-stack"
DIMS = {"Stack": STACK, "Job": "housekeeping"}
NOW = datetime.now(UTC)


def add_expiry(pg: Postgres) -> None:
    """The expiry column the job also supports (a later app migration may add it)."""
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER TABLE links ADD COLUMN IF NOT EXISTS expires_at timestamptz")


def seed(pg: Postgres, rows: list[dict[str, Any]]) -> None:
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        for row in rows:
            cols = list(row)
            conn.execute(
                f"INSERT INTO links ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                [row[c] for c in cols],
            )


def codes(pg: Postgres) -> set[str]:
    with psycopg.connect(pg.conninfo()) as conn:
        return {r[0] for r in conn.execute("SELECT code FROM links").fetchall()}


def stats_rows(pg: Postgres) -> list[dict[str, Any]]:
    with psycopg.connect(pg.conninfo()) as conn:
        exists = conn.execute("SELECT to_regclass('link_stats_daily')").fetchone()
        if not exists or exists[0] is None:
            return []
        cur = conn.execute("SELECT * FROM link_stats_daily")
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@pytest.fixture
def env(aws: str, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("STACK_NAME", STACK)
    monkeypatch.setenv("DB_SSLMODE", "disable")  # this cluster has no TLS (the TLS tests unset it)
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "3")
    # the pauses before re-reading the secret after a refused login: the same retries, shorter
    monkeypatch.setattr(hk, "AUTH_RETRY_DELAYS", (0.05, 0.1))
    for key in ("PURGE_GRACE_DAYS", "PURGE_UNUSED_AFTER_DAYS", "PURGE_BATCH_SIZE", "DB_HOST"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def metric(name: str) -> list[dict[str, Any]]:
    return datapoints(NS, name, DIMS)


def expiry_rows() -> list[dict[str, Any]]:
    return [
        {"code": "gone-old", "url": "https://a.example/", "expires_at": NOW - timedelta(days=3)},
        {"code": "gone-new", "url": "https://b.example/", "expires_at": NOW - timedelta(hours=1)},
        {"code": "later", "url": "https://c.example/", "expires_at": NOW + timedelta(days=1)},
        {
            "code": "forever",
            "url": "https://d.example/",
            "clicks": 5,
            "last_clicked_at": NOW - timedelta(hours=2),
        },
        {
            "code": "old-one",
            "url": "https://e.example/",
            "clicks": 7,
            "created_at": NOW - timedelta(days=90),
        },
    ]


@pytest.mark.realpart
def test_purges_expired_keeps_live_writes_stats_and_metrics(
    db: Postgres, env: pytest.MonkeyPatch
) -> None:
    add_expiry(db)
    seed(db, expiry_rows())
    env.setenv("DB_SECRET_ARN", make_secret(db))

    result = hk.handler({}, None)

    assert codes(db) == {"later", "forever", "old-one"}
    assert (result["purged"], result["complete"], result["skipped"]) == (2, True, False)
    [row] = stats_rows(db)
    assert row["day"] == datetime.now(UTC).date()
    assert (row["links_total"], row["links_live"], row["links_expired"]) == (3, 3, 0)
    assert (row["links_created_24h"], row["links_clicked_24h"]) == (2, 1)
    assert (row["clicks_total"], row["purged"], row["runs"]) == (12, 2, 1)
    [ok] = metric("Success")
    assert (ok["Sum"], ok["Unit"]) == (1.0, "None")
    [purged] = metric("PurgedLinks")
    assert (purged["Sum"], purged["Unit"]) == (2.0, "Count")
    [live] = metric("LiveLinks")
    assert (live["Sum"], live["Unit"]) == (3.0, "Count")


@pytest.mark.realpart
def test_second_run_is_idempotent(db: Postgres, env: pytest.MonkeyPatch) -> None:
    add_expiry(db)
    seed(db, expiry_rows())
    env.setenv("DB_SECRET_ARN", make_secret(db))
    hk.handler({}, None)
    [first] = stats_rows(db)

    again = hk.handler({}, None)

    assert again["purged"] == 0
    assert codes(db) == {"later", "forever", "old-one"}
    [second] = stats_rows(db)
    ignore = {"runs", "computed_at"}
    assert {k: v for k, v in second.items() if k not in ignore} == {
        k: v for k, v in first.items() if k not in ignore
    }
    assert second["runs"] == 2 and second["purged"] == 2  # the day's total, not doubled
    [ok] = metric("Success")
    assert (ok["SampleCount"], ok["Minimum"]) == (2.0, 1.0)
    [purged] = metric("PurgedLinks")
    assert (purged["SampleCount"], purged["Sum"]) == (2.0, 2.0)  # 2, then 0


@pytest.mark.realpart
def test_grace_days_keep_recently_expired_links(db: Postgres, env: pytest.MonkeyPatch) -> None:
    add_expiry(db)
    seed(db, expiry_rows())
    env.setenv("DB_SECRET_ARN", make_secret(db))
    env.setenv("PURGE_GRACE_DAYS", "1")

    result = hk.handler({}, None)

    assert codes(db) == {"gone-new", "later", "forever", "old-one"}
    assert result["stats"]["links_expired"] == 1
    assert result["stats"]["links_live"] == 3


@pytest.mark.realpart
def test_app_schema_without_expiry_purges_only_by_the_chosen_retention(
    db: Postgres, env: pytest.MonkeyPatch
) -> None:
    seed(
        db,
        [
            {"code": "fresh", "url": "https://a.example/"},
            {
                "code": "stale-clicked",
                "url": "https://b.example/",
                "created_at": NOW - timedelta(days=100),
                "clicks": 3,
                "last_clicked_at": NOW - timedelta(days=40),
            },
            {
                "code": "stale-never",
                "url": "https://c.example/",
                "created_at": NOW - timedelta(days=40),
            },
            {
                "code": "old-but-used",
                "url": "https://d.example/",
                "created_at": NOW - timedelta(days=400),
                "clicks": 9,
                "last_clicked_at": NOW - timedelta(days=1),
            },
        ],
    )
    env.setenv("DB_SECRET_ARN", make_secret(db))

    # the default deletes nothing by age: that policy is the owner's choice
    assert hk.handler({}, None)["purged"] == 0
    assert len(codes(db)) == 4

    env.setenv("PURGE_UNUSED_AFTER_DAYS", "30")
    result = hk.handler({}, None)
    assert result["purged"] == 2
    assert codes(db) == {"fresh", "old-but-used"}
    stats = result["stats"]
    assert (stats["links_total"], stats["links_live"], stats["links_expired"]) == (2, 2, 0)
    assert (stats["clicks_total"], stats["purged"], stats["runs"]) == (9, 2, 2)


@pytest.mark.realpart
def test_purges_in_small_batches(db: Postgres, env: pytest.MonkeyPatch) -> None:
    add_expiry(db)
    seed(
        db,
        [
            {"code": f"x{i:03d}", "url": "https://a.example/", "expires_at": NOW - timedelta(1)}
            for i in range(7)
        ]
        + [{"code": "keep", "url": "https://k.example/"}],
    )
    env.setenv("DB_SECRET_ARN", make_secret(db))
    env.setenv("PURGE_BATCH_SIZE", "2")
    assert hk.handler({}, None)["purged"] == 7
    assert codes(db) == {"keep"}


@pytest.mark.realpart
def test_the_purge_is_bounded_per_run_and_says_what_it_did(
    db: Postgres, env: pytest.MonkeyPatch
) -> None:
    """Expired and unused links go in batches of PURGE_BATCH_SIZE, at most PURGE_MAX_BATCHES per
    run; a run that stops there says so (PurgeComplete 0) and the next one carries on."""
    seed(
        db,
        [
            {"code": f"exp{i:02d}", "url": "https://a.example/", "expires_at": NOW - timedelta(1)}
            for i in range(7)
        ]
        + [
            {"code": f"old{i:02d}", "url": "https://o.example/", "created_at": NOW - timedelta(60)}
            for i in range(3)
        ]
        + [
            {"code": "live", "url": "https://l.example/", "expires_at": NOW + timedelta(1)},
            {"code": "forever", "url": "https://f.example/"},
        ],
    )
    env.setenv("DB_SECRET_ARN", make_secret(db))
    env.setenv("PURGE_BATCH_SIZE", "2")
    env.setenv("PURGE_MAX_BATCHES", "3")
    env.setenv("PURGE_UNUSED_AFTER_DAYS", "30")

    first = hk.handler({}, None)
    assert (first["purged_expired"], first["purged_unused"], first["batches"]) == (6, 0, 3)
    assert first["complete"] is False
    assert len([c for c in codes(db) if c.startswith("exp")]) == 1

    second = hk.handler({}, None)
    # the last expired one (a short batch ends that pass), then the unused in batches of 2
    assert (second["purged_expired"], second["purged_unused"], second["batches"]) == (1, 3, 3)
    assert second["complete"] is True
    assert codes(db) == {"live", "forever"}

    def sums(name: str) -> list[float]:
        return [d["Sum"] for d in metric(name)]

    assert sums("PurgedExpired") == [7.0] and sums("PurgedUnused") == [3.0]
    assert sums("PurgeBatches") == [6.0] and sums("PurgedLinks") == [10.0]
    [complete] = metric("PurgeComplete")
    assert (complete["Minimum"], complete["Maximum"], complete["Unit"]) == (0.0, 1.0, "None")
    assert [d["Unit"] for d in metric("ExpiredLinks")] == ["Count"]


@pytest.mark.realpart
def test_a_login_refused_mid_rotation_re_reads_the_secret(
    db: Postgres, env: pytest.MonkeyPatch
) -> None:
    import logging

    arn = make_secret(db, password="Stale-password-before-rotation-1")
    env.setenv("DB_SECRET_ARN", arn)
    sm = boto3.client("secretsmanager", region_name=REGION)
    right = json.dumps(
        {"host": db.host, "port": db.port, "dbname": db.dbname, "username": db.user,
         "password": db.password}
    )  # fmt: skip
    refused: list[str] = []

    class RotationFinishes(logging.Handler):
        """The rotation finishes right after the job's first login is refused."""

        def emit(self, record: logging.LogRecord) -> None:
            if "login refused" in record.getMessage():
                refused.append(record.getMessage())
                if len(refused) == 1:
                    sm.put_secret_value(SecretId=arn, SecretString=right)

    watcher = RotationFinishes()
    logging.getLogger("housekeeping").addHandler(watcher)
    try:
        result = hk.handler({}, None)
    finally:
        logging.getLogger("housekeeping").removeHandler(watcher)
    assert len(refused) == 1  # refused with the stale password, then in with the re-read one
    assert result["skipped"] is False
    [ok] = metric("Success")
    assert ok["Sum"] == 1.0


@pytest.mark.realpart
def test_rds_managed_secret_with_only_username_and_password(
    db: Postgres, env: pytest.MonkeyPatch
) -> None:
    # RDS's own master-user secret (manage_master_user_password) holds username and password only
    arn = make_secret(db, host=None, port=None, dbname=None, engine=None)
    env.setenv("DB_SECRET_ARN", arn)
    env.setenv("DB_HOST", db.host)
    env.setenv("DB_PORT", str(db.port))
    env.setenv("DB_NAME", db.dbname)
    assert hk.handler({}, None)["skipped"] is False
    env.delenv("DB_HOST")
    with pytest.raises(hk.JobError, match="lacks host"):
        hk.handler({}, None)


@pytest.mark.realpart
def test_a_concurrent_run_skips(db: Postgres, env: pytest.MonkeyPatch) -> None:
    env.setenv("DB_SECRET_ARN", make_secret(db))
    with psycopg.connect(db.conninfo(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", (hk.LOCK_KEY,))
        result = hk.handler({}, None)
    assert result["skipped"] is True
    assert stats_rows(db) == []
    assert [p["Sum"] for p in metric("Success")] == [1.0]


def assert_failed_cleanly(
    excinfo: pytest.ExceptionInfo[BaseException],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    secret: str,
) -> None:
    """A failure metric landed, and the password is nowhere: not in the message, the traceback
    Lambda would print, the log records or the captured output."""
    shown = "".join(traceback.format_exception(excinfo.value))
    out = capsys.readouterr()
    assert secret not in shown
    assert secret not in caplog.text
    assert secret not in out.out + out.err
    assert any('"event": "failed"' in r.getMessage() for r in caplog.records)
    ok = metric("Success")
    assert [(p["Sum"], p["SampleCount"]) for p in ok] == [(0.0, 1.0)]
    assert metric("PurgedLinks") == []


@pytest.mark.realpart
def test_wrong_password_fails_clearly_without_leaking_it(
    db: Postgres,
    env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "Wr0ng-but-still-a-secret-42"
    env.setenv("DB_SECRET_ARN", make_secret(db, password=wrong))
    with pytest.raises(hk.JobError, match=r"cannot connect to janitor@127\.0\.0\.1") as excinfo:
        hk.handler({}, None)
    assert "password authentication failed" in str(excinfo.value)
    assert_failed_cleanly(excinfo, caplog, capsys, wrong)


@pytest.mark.realpart
def test_database_down_fails_clearly(
    db: Postgres,
    env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env.setenv("DB_SECRET_ARN", make_secret(db, port=free_port()))  # nothing listens there
    with pytest.raises(hk.JobError, match="cannot connect to") as excinfo:
        hk.handler({}, None)
    assert_failed_cleanly(excinfo, caplog, capsys, db.password)


@pytest.mark.parametrize(
    ("secret_string", "expected"),
    [
        (None, "ResourceNotFoundException"),
        ("not json at all", "is not a JSON object"),
        (json.dumps({"username": "u", "host": "h", "dbname": "d"}), "lacks password"),
    ],
)
def test_bad_secret_fails_clearly(
    aws: str,
    env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    secret_string: str | None,
    expected: str,
) -> None:
    sm = boto3.client("secretsmanager", region_name=REGION)
    if secret_string is None:
        arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:backbone/none-AbCdEf"
    else:
        arn = sm.create_secret(Name="backbone/bad", SecretString=secret_string)["ARN"]
    env.setenv("DB_SECRET_ARN", arn)
    with pytest.raises(hk.JobError, match=expected) as excinfo:
        hk.handler({}, None)
    # whatever the secret held must not be echoed back (each case checks its own string)
    assert_failed_cleanly(excinfo, caplog, capsys, secret_string or "(no secret stored)")


@pytest.mark.realpart
def test_missing_links_table_is_a_clear_failure(db: Postgres, env: pytest.MonkeyPatch) -> None:
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE links")
    env.setenv("DB_SECRET_ARN", make_secret(db))
    with pytest.raises(hk.JobError, match="has the app migrated"):
        hk.handler({}, None)
    assert [p["Sum"] for p in metric("Success")] == [0.0]


def test_settings_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    monkeypatch.delenv("STACK_NAME", raising=False)
    with pytest.raises(hk.JobError, match="DB_SECRET_ARN, STACK_NAME"):
        hk.Settings.from_env()
    env = {"DB_SECRET_ARN": "arn", "STACK_NAME": "s", "PURGE_BATCH_SIZE": "0"}
    with pytest.raises(hk.JobError, match=r"PURGE_BATCH_SIZE=0 is out of range"):
        hk.Settings.from_env(env)


def test_purge_condition_follows_the_schema() -> None:
    cols = {"code", "url", "created_at", "clicks", "last_clicked_at"}
    assert hk.purge_condition(cols, grace_days=0, unused_days=0) is None
    assert "last_clicked_at" in (hk.purge_condition(cols, grace_days=0, unused_days=30) or "")
    both = hk.purge_condition(cols | {"expires_at"}, grace_days=1, unused_days=30) or ""
    assert "expires_at" in both and "%(grace)s" in both and "%(unused)s" in both


@pytest.mark.realpart
def test_deadline_stops_the_purge_and_still_writes_stats(
    db: Postgres, env: pytest.MonkeyPatch
) -> None:
    import time

    add_expiry(db)
    seed(db, expiry_rows())
    env.setenv("DB_SECRET_ARN", make_secret(db))
    result = hk.run(hk.Settings.from_env(), deadline=time.monotonic() - 1)
    assert (result["purged"], result["complete"]) == (0, False)
    assert len(codes(db)) == 5  # the next run carries on
    assert result["stats"]["links_expired"] == 2


def test_tls_defaults_verify_the_server_against_the_packaged_rds_bundle() -> None:
    settings = hk.Settings.from_env({"DB_SECRET_ARN": "arn", "STACK_NAME": "s"})
    assert settings.sslmode == "verify-full"
    bundle = FUNCTION_DIR / "certs" / "rds-global-bundle.pem"
    assert settings.sslrootcert == str(bundle) and bundle.is_file()
    base = {"DB_SECRET_ARN": "arn", "STACK_NAME": "s"}
    with pytest.raises(
        hk.JobError, match=r"DB_SSLMODE='strict' is not one of disable, .*verify-full"
    ):
        hk.Settings.from_env({**base, "DB_SSLMODE": "strict"})
    with pytest.raises(hk.JobError, match=r"DB_SSLROOTCERT='/nope.pem' is not a file"):
        hk.Settings.from_env({**base, "DB_SSLROOTCERT": "/nope.pem"})
    # not verifying, the file is not needed (the test cluster below without TLS)
    assert hk.Settings.from_env({**base, "DB_SSLMODE": "disable", "DB_SSLROOTCERT": "/nope.pem"})


@pytest.mark.realpart
def test_missing_stats_table_is_a_clear_failure(db: Postgres, env: pytest.MonkeyPatch) -> None:
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE link_stats_daily")
    env.setenv("DB_SECRET_ARN", make_secret(db))
    with pytest.raises(
        hk.JobError, match="'link_stats_daily' does not exist: has the app migrated"
    ):
        hk.handler({}, None)


# ------------------------------------------------------------------ as its own role, over TLS


@pytest.fixture(scope="module")
def pg_tls() -> Iterator[PgCluster]:
    cluster = PgCluster(tls=True)
    yield cluster
    cluster.destroy()


@pytest.fixture
def job_db(pg_tls: PgCluster) -> tuple[RdsDatabase, str]:
    """An RDS-like database migrated by the app's migration as the master user, which also made
    the job's role; returns it and the role's name."""
    rds = RdsDatabase(pg_tls)
    role = f"job_{os.getpid()}_{rds.name}"
    # the app's migration (what `python -m shortener.migrate` runs), in this process
    from shortener import config
    from shortener.db import SCHEMA_VERSION, migrate_url

    settings = config.load(
        {"DATABASE_URL": rds.master_url(), "JOB_DB_USER": role, "JOB_DB_PASSWORD": JOB_PW}
    )
    applied = asyncio.run(migrate_url(settings, settings.startup_db_timeout_seconds))
    assert applied and max(applied) == SCHEMA_VERSION
    with rds.admin() as admin:
        admin.execute("ALTER TABLE links ADD COLUMN IF NOT EXISTS expires_at timestamptz")
        for row in expiry_rows():
            cols = list(row)
            admin.execute(
                f"INSERT INTO links ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                [row[c] for c in cols],
            )
    return rds, role


def tls_secret(rds: RdsDatabase, role: str) -> str:
    value = {"host": "localhost", "port": rds.cluster.port, "dbname": rds.name}
    value |= {"username": role, "password": JOB_PW}
    sm = boto3.client("secretsmanager", region_name=REGION)
    return str(sm.create_secret(Name=f"backbone/{role}", SecretString=json.dumps(value))["ARN"])


@pytest.mark.realpart
def test_the_job_as_its_own_role_over_verified_tls_purges_and_writes_stats(
    job_db: tuple[RdsDatabase, str], env: pytest.MonkeyPatch
) -> None:
    rds, role = job_db
    env.delenv("DB_SSLMODE")  # the default: verify-full
    env.setenv("DB_SSLROOTCERT", str(rds.cluster.ca_file))
    env.setenv("DB_SECRET_ARN", tls_secret(rds, role))

    result = hk.handler({}, None)

    assert (result["purged"], result["skipped"]) == (2, False)
    with rds.admin() as admin:
        left = {r[0] for r in admin.execute("SELECT code FROM links").fetchall()}
        stats = admin.execute("SELECT purged, runs FROM link_stats_daily").fetchall()
    assert left == {"later", "forever", "old-one"}
    assert stats == [(2, 1)]
    # and that role could not have added links (the migration granted SELECT, DELETE only)
    with (
        psycopg.connect(rds.url(role, JOB_PW)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("INSERT INTO links (code, url) VALUES ('nope', 'https://x.example/')")


@pytest.mark.realpart
def test_the_job_refuses_a_server_the_rds_bundle_does_not_vouch_for(
    job_db: tuple[RdsDatabase, str],
    env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rds, role = job_db
    env.delenv("DB_SSLMODE")
    env.delenv("DB_SSLROOTCERT", raising=False)  # the packaged RDS bundle: it did not sign ours
    env.setenv("DB_SECRET_ARN", tls_secret(rds, role))
    with pytest.raises(hk.JobError, match="certificate verify failed") as excinfo:
        hk.handler({}, None)
    assert_failed_cleanly(excinfo, caplog, capsys, JOB_PW)


@pytest.mark.realpart
def test_a_link_clicked_while_the_purge_waits_for_it_is_kept(
    db: Postgres, env: pytest.MonkeyPatch
) -> None:
    """The purge takes no row locks ahead (its role has no UPDATE): a row a request is updating
    makes it wait, and the condition is checked again on the new row, so the click saves it."""
    import threading

    stale = NOW - timedelta(days=40)
    seed(
        db,
        [
            {"code": "busy", "url": "https://a.example/", "created_at": stale},
            {"code": "idle", "url": "https://b.example/", "created_at": stale},
        ],
    )
    env.setenv("DB_SECRET_ARN", make_secret(db))
    env.setenv("PURGE_UNUSED_AFTER_DAYS", "30")
    result: dict[str, Any] = {}
    with psycopg.connect(db.conninfo()) as click:  # the app's click flush, not committed yet
        click.execute(
            "UPDATE links SET clicks = clicks + 1, last_clicked_at = now() WHERE code = 'busy'"
        )
        job = threading.Thread(target=lambda: result.update(hk.handler({}, None)))
        job.start()

        def job_waits_for_the_row() -> bool:
            with psycopg.connect(db.conninfo(admin=True)) as admin:
                waiting = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                    " AND usename = %s AND wait_event_type = 'Lock'"
                    " AND position('DELETE FROM' in query) > 0",
                    (db.dbname, db.user),
                ).fetchone()
            return bool(waiting and waiting[0] == 1)

        wait_until("the purge waiting for the request's row lock", job_waits_for_the_row, 30)
        assert job.is_alive()  # waiting for the request's row
        click.commit()
    job.join(timeout=30)
    assert result["purged"] == 1
    assert codes(db) == {"busy"}
