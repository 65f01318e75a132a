"""Least privilege and verified TLS, against a real PostgreSQL set up like RDS (conftest.RdsDatabase):
TLS only with a throwaway CA, SCRAM passwords, a master user that is no superuser.

The migration (as the master user) creates the app's and the job's login roles; the app then
serves as its own role, which can do every API operation and nothing more."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests import app_process

from .conftest import APP_DIR, TOKEN, RdsDatabase, app_env
from .migrate_harness import run_migrate

pytestmark = pytest.mark.realpart

APP_PW = "App-pass-0123456789-abcdef"
JOB_PW = "Job-pass-0123456789-abcdef"
_n = iter(range(1, 10_000))


def names() -> tuple[str, str]:
    """Role names of our own: roles are cluster-wide, each test makes its own."""
    i = next(_n)
    return f"app_{os.getpid()}_{i}", f"job_{os.getpid()}_{i}"


def migrate(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m shortener.migrate` with this environment: its exit status, stdout and stderr
    (run in this process by tests/app/migrate_harness.py; the concurrent runs below, and
    tests/app/test_exit_codes.py, start the process itself)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL"))}
    return run_migrate(
        {
            **base,
            "PYTHONPATH": str(APP_DIR),
            "DATABASE_URL": url,
            "STARTUP_DB_TIMEOUT_SECONDS": "5",
            **env,
        },
        APP_DIR,
    )


def with_roles(
    rds: RdsDatabase, app: str, job: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "APP_DB_USER": app,
        "APP_DB_PASSWORD": APP_PW,
        "JOB_DB_USER": job,
        "JOB_DB_PASSWORD": JOB_PW,
    }
    env.update(extra)
    return migrate(rds.master_url(), **env)


def denied(conn: psycopg.Connection[Any], statement: str) -> str:
    """The statement fails for lack of privilege; returns the server's message."""
    with pytest.raises(errors.InsufficientPrivilege) as excinfo:
        conn.execute(statement)
    conn.rollback()
    return excinfo.value.diag.message_primary or ""


# ------------------------------------------------------------------ TLS: verify-full is verified


def test_verify_full_accepts_the_right_ca_and_name_and_refuses_the_others(
    rds: RdsDatabase,
) -> None:
    with psycopg.connect(rds.master_url()) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(rds.master_url(ca=rds.cluster.wrong_ca_file), connect_timeout=5)
    # the certificate names localhost, not 127.0.0.1: verify-full checks the name too
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(rds.master_url(host="127.0.0.1"), connect_timeout=5)


def test_the_migration_refuses_a_server_it_cannot_verify_and_says_why(rds: RdsDatabase) -> None:
    done = migrate(rds.master_url(ca=rds.cluster.wrong_ca_file), STARTUP_DB_TIMEOUT_SECONDS="0.5")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "certificate verify failed" in done.stdout
    assert RdsDatabase.MASTER_PASSWORD not in done.stdout + done.stderr


def test_verify_full_without_a_ca_file_is_a_configuration_error(rds: RdsDatabase) -> None:
    url = rds.master_url().split("&sslrootcert=")[0]
    done = migrate(url)
    assert done.returncode == 2
    assert "sslmode=verify-full but no sslrootcert" in done.stderr
    done = migrate(url + "&sslrootcert=/nonexistent/ca.pem")
    assert done.returncode == 2
    assert "'/nonexistent/ca.pem', which is not a file" in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ the roles


def test_the_app_role_serves_every_api_operation_and_can_do_nothing_else(
    rds: RdsDatabase,
) -> None:
    from fastapi.testclient import TestClient
    from shortener import config
    from shortener.app import create_app

    app_user, job_user = names()
    done = with_roles(rds, app_user, job_user)
    assert done.returncode == 0, done.stdout + done.stderr
    assert APP_PW not in done.stdout + done.stderr and JOB_PW not in done.stdout + done.stderr

    settings = config.load(
        app_env(rds.url(app_user, APP_PW), MIGRATE_ON_STARTUP="false", CACHE_MAX_ENTRIES="0")
    )
    with TestClient(create_app(settings), base_url="http://sho.rt") as c:
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert c.get("/readyz").status_code == 200
        r = c.post(
            "/api/links", json={"url": "https://example.org/a", "code": "as-app"}, headers=auth
        )
        assert r.status_code == 201, r.text
        assert (
            c.post("/api/links", json={"url": "https://example.org/b"}, headers=auth).status_code
            == 201
        )
        assert (
            c.post(
                "/api/links", json={"url": "https://x.org/", "code": "as-app"}, headers=auth
            ).status_code
            == 409
        )
        for _ in range(3):
            r = c.get("/as-app", follow_redirects=False)
            assert (r.status_code, r.headers["location"]) == (307, "https://example.org/a")
        deadline = time.monotonic() + 10
        while True:  # the click counts are written by the background flush, as the app role
            with rds.admin() as admin:
                row = admin.execute("SELECT clicks FROM links WHERE code = 'as-app'").fetchone()
            if row == (3,) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert row == (3,)
        assert c.get("/api/links/as-app").json()["clicks"] == 3
        assert c.get("/api/links/nope").status_code == 404

    with rds.admin() as admin:
        admin.execute("CREATE SCHEMA other AUTHORIZATION master_user")
        admin.execute("CREATE TABLE other.secrets (v text)")
        admin.execute("INSERT INTO other.secrets VALUES ('not for the app')")
        owned = admin.execute(
            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)"
            " + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)"
            " FROM pg_roles r WHERE rolname = %s",
            (app_user,),
        ).fetchone()
        assert owned == (0,)
        attrs = admin.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = %s",
            (app_user,),
        ).fetchone()
        assert attrs == (False, False, False, True)

    with psycopg.connect(rds.url(app_user, APP_PW)) as conn:
        assert "permission denied for schema public" in denied(conn, "CREATE TABLE t (x int)")
        assert "permission denied" in denied(conn, "CREATE TEMP TABLE t (x int)")
        assert "permission denied for schema other" in denied(conn, "SELECT * FROM other.secrets")
        assert "permission denied for table links" in denied(conn, "DELETE FROM links")
        assert "permission denied for table links" in denied(
            conn, "UPDATE links SET url = 'https://evil.example/'"
        )
        assert "permission denied for table link_stats_daily" in denied(
            conn, "SELECT * FROM link_stats_daily"
        )
        assert "permission denied for table schema_migrations" in denied(
            conn, "DELETE FROM schema_migrations"
        )
        with pytest.raises(errors.InsufficientPrivilege, match="must be owner"):
            conn.execute("DROP TABLE links")
        conn.rollback()
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA mine")
        conn.rollback()
        # what it may do, it can: the statements of shortener.db.Store
        conn.execute("UPDATE links SET clicks = clicks + 1 WHERE code = 'as-app'")
        assert conn.execute("SELECT count(*) FROM links").fetchone() == (2,)


def test_the_job_role_reads_and_deletes_links_and_nothing_more(rds: RdsDatabase) -> None:
    app_user, job_user = names()
    assert with_roles(rds, app_user, job_user).returncode == 0
    with rds.admin() as admin:
        admin.execute("INSERT INTO links (code, url) VALUES ('old', 'https://a.example/')")
    with psycopg.connect(rds.url(job_user, JOB_PW)) as conn:
        assert "permission denied for table links" in denied(
            conn, "INSERT INTO links (code, url) VALUES ('new', 'https://b.example/')"
        )
        assert "permission denied for table links" in denied(conn, "UPDATE links SET clicks = 9")
        # it reads what it filters and counts by, never where a link points
        assert "permission denied for table links" in denied(conn, "SELECT url FROM links")
        assert conn.execute(
            "SELECT count(*), sum(clicks) FROM links WHERE expires_at IS NULL"
        ).fetchone() == (1, 0)
        assert "permission denied for schema public" in denied(conn, "CREATE TABLE t (x int)")
        conn.execute(
            "INSERT INTO link_stats_daily (day, links_total, links_live, links_expired, "
            "links_created_24h, links_clicked_24h, clicks_total, purged, computed_at) "
            "VALUES (current_date, 1, 1, 0, 1, 0, 0, 0, now())"
        )
        conn.execute("UPDATE link_stats_daily SET runs = runs + 1")
        assert "permission denied for table link_stats_daily" in denied(
            conn, "DELETE FROM link_stats_daily"
        )
        assert conn.execute("DELETE FROM links WHERE code = 'old'").rowcount == 1
        conn.commit()


def test_a_rerun_with_a_new_password_changes_it(rds: RdsDatabase) -> None:
    app_user, job_user = names()
    assert with_roles(rds, app_user, job_user).returncode == 0
    psycopg.connect(rds.url(app_user, APP_PW)).close()
    new = "A-brand-new-password-42"
    done = with_roles(rds, app_user, job_user, APP_DB_PASSWORD=new)
    assert done.returncode == 0, done.stdout + done.stderr
    assert new not in done.stdout + done.stderr
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(rds.url(app_user, APP_PW), connect_timeout=5)
    psycopg.connect(rds.url(app_user, new)).close()
    psycopg.connect(rds.url(job_user, JOB_PW)).close()  # the other role kept its password


def test_grants_are_exact_and_follow_the_map_on_every_run(rds: RdsDatabase) -> None:
    """A privilege granted by hand is revoked on the next run; a later migration's table with a
    serial column is granted, sequence included, once the map names it."""
    from shortener import config, db

    app_user, job_user = names()
    assert with_roles(rds, app_user, job_user).returncode == 0
    with rds.admin() as admin:
        admin.execute(f"GRANT DELETE ON links TO {app_user}")
    assert with_roles(rds, app_user, job_user).returncode == 0
    with psycopg.connect(rds.url(app_user, APP_PW)) as conn:
        denied(conn, "DELETE FROM links")

    later = (
        99,
        "a later table",
        ["CREATE TABLE IF NOT EXISTS tags (id bigserial PRIMARY KEY, tag text)"],
    )
    grants = {**db.APP_GRANTS, "tags": (db.Grant("SELECT"), db.Grant("INSERT"))}
    env = app_env(rds.master_url(), APP_DB_USER=app_user, APP_DB_PASSWORD=APP_PW)
    settings = config.load(env)
    saved = (list(db.MIGRATIONS), dict(db.APP_GRANTS))
    try:
        db.MIGRATIONS.append(later)
        db.APP_GRANTS.clear()
        db.APP_GRANTS.update(grants)
        assert asyncio.run(db.migrate_url(settings, 5)) == [99]
    finally:
        db.MIGRATIONS[:] = saved[0]
        db.APP_GRANTS.clear()
        db.APP_GRANTS.update(saved[1])
    with psycopg.connect(rds.url(app_user, APP_PW)) as conn:
        conn.execute("INSERT INTO tags (tag) VALUES ('x')")  # nextval() on its sequence works
        assert conn.execute("SELECT count(*) FROM tags").fetchone() == (1,)
        denied(conn, "DELETE FROM tags")


def test_every_table_of_the_migrations_is_in_a_grant_map_or_the_master_s(rds: RdsDatabase) -> None:
    from shortener import db

    assert migrate(rds.master_url()).returncode == 0
    with rds.admin() as admin:
        tables = {
            r[0]
            for r in admin.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert tables == {"links", "schema_migrations", "link_stats_daily"}
    assert tables == set(db.APP_GRANTS) | set(db.JOB_GRANTS)


def test_concurrent_migrations_with_roles_apply_once_and_all_succeed(rds: RdsDatabase) -> None:
    app_user, job_user = names()
    env = {
        **os.environ,
        "PYTHONPATH": str(APP_DIR),
        "DATABASE_URL": rds.master_url(),
        "APP_DB_USER": app_user,
        "APP_DB_PASSWORD": APP_PW,
        "JOB_DB_USER": job_user,
        "JOB_DB_PASSWORD": JOB_PW,
    }
    procs = [
        app_process.Popen(
            [sys.executable, "-m", "shortener.migrate"],
            cwd=APP_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    from shortener.db import MIGRATIONS

    every = [v for v, _, _ in MIGRATIONS]
    applied = [o for o in outs if f'"applied": {every}' in o]
    assert len(applied) == 1, outs
    with rds.admin() as admin:
        assert admin.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(every),)
    psycopg.connect(rds.url(app_user, APP_PW)).close()
    psycopg.connect(rds.url(job_user, JOB_PW)).close()


# ------------------------------------------------------------------ refusals: exit 2, clear


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APP_DB_USER": "Bad-Name"}, "APP_DB_USER='Bad-Name' is not a role name"),
        ({"APP_DB_USER": "pg_app"}, "APP_DB_USER='pg_app' is not a role name"),
        ({"JOB_DB_USER": "rds_job"}, "JOB_DB_USER='rds_job' is not a role name"),
        (
            {"APP_DB_USER": "app_x", "APP_DB_PASSWORD": ""},
            "APP_DB_USER is set but APP_DB_PASSWORD is not",
        ),
        ({"APP_DB_PASSWORD": "short"}, "APP_DB_PASSWORD is too weak or malformed"),
        (
            {"APP_DB_PASSWORD": "has a space in it, 1234"},
            "APP_DB_PASSWORD is too weak or malformed",
        ),
        ({"JOB_DB_USER": "app_x"}, "APP_DB_USER and JOB_DB_USER are both 'app_x'"),
        # the password from a secret (the rotating one), or from the environment: not both
        (
            {"APP_DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:a"},
            "APP_DB_PASSWORD and APP_DB_SECRET_ARN are both set: set one, not both",
        ),
        (
            {
                "JOB_DB_USER": "",
                "JOB_DB_PASSWORD": "",
                "JOB_DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:j",
            },
            "JOB_DB_SECRET_ARN is set but JOB_DB_USER is not",
        ),
    ],
)
def test_bad_role_settings_exit_2_without_echoing_the_password(
    rds: RdsDatabase, env: dict[str, str], message: str
) -> None:
    full = {
        "APP_DB_USER": "app_x",
        "APP_DB_PASSWORD": APP_PW,
        "JOB_DB_USER": "job_x",
        "JOB_DB_PASSWORD": JOB_PW,
    }
    full.update(env)
    done = migrate(
        rds.master_url(), **{k: v for k, v in full.items() if v or k.endswith("PASSWORD")}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    for secret in (APP_PW, JOB_PW, full["APP_DB_PASSWORD"]):
        if secret:
            assert secret not in done.stdout + done.stderr


def test_a_role_that_is_the_master_or_is_privileged_is_refused(rds: RdsDatabase) -> None:
    done = migrate(rds.master_url(), APP_DB_USER=RdsDatabase.MASTER, APP_DB_PASSWORD=APP_PW)
    assert done.returncode == 2
    assert "APP_DB_USER='master_user' is the migrating user itself" in done.stdout
    app_user, _ = names()
    with rds.admin() as admin:
        admin.execute(f"CREATE ROLE {app_user} LOGIN CREATEDB")
    done = migrate(rds.master_url(), APP_DB_USER=app_user, APP_DB_PASSWORD=APP_PW)
    assert done.returncode == 2
    assert f"APP_DB_USER='{app_user}': that role exists and has CREATEDB" in done.stdout
    assert APP_PW not in done.stdout + done.stderr


def test_startup_migration_with_the_app_role_stops_with_a_clear_message(
    rds: RdsDatabase, live_server_factory: Any
) -> None:
    app_user, job_user = names()
    assert with_roles(rds, app_user, job_user).returncode == 0
    server = live_server_factory(app_env(rds.url(app_user, APP_PW), MIGRATE_ON_STARTUP="true"))
    # the same role, as documented (MIGRATE_ON_STARTUP=false), starts: started alongside
    ok = live_server_factory(app_env(rds.url(app_user, APP_PW), MIGRATE_ON_STARTUP="false"))
    server.proc.wait(timeout=60)
    out = server.output()
    assert server.proc.returncode == 2, out
    assert (
        f"cannot start: MIGRATE_ON_STARTUP=true but the database user '{app_user}' cannot create tables"
        in out
    )
    assert "MIGRATE_ON_STARTUP=false" in out and APP_PW not in out
    ok.wait_up()
