"""Credentials that rotate without a restart: the app's role gets a new password in PostgreSQL and
in its secret (Secrets Manager in moto over HTTP, or a mounted file) while traffic runs; the app
re-reads the secret after a refused login and recovers by itself. The failures are counted and
timed: the window is stated in the test's output (and in notes/app17-interface.md)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.realparts import wait_until

from .conftest import TOKEN, RdsDatabase, app_env, aws_env
from .test_faults import Load

pytestmark = pytest.mark.realpart

AUTH = {"authorization": f"Bearer {TOKEN}"}
OLD = "Rotation-old-pass-0123456789"
NEW = "Rotation-new-pass-9876543210"
WINDOW = 3.0  # once the secret holds the new password, writes fail for at most this long


def _migrate_with_app_role(rds: RdsDatabase, user: str) -> None:
    from shortener import config, db

    env = app_env(rds.master_url(), APP_DB_USER=user, APP_DB_PASSWORD=OLD)
    asyncio.run(db.migrate_url(config.load(env), 10))


def _location(rds: RdsDatabase) -> str:
    """DATABASE_URL without user or password: the secret supplies them."""
    return (
        f"postgresql://localhost:{rds.cluster.port}/{rds.name}"
        f"?sslmode=verify-full&sslrootcert={rds.cluster.ca_file}"
    )


class FileSecret:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, value: dict[str, Any]) -> None:
        # as the kubelet and the CSI driver do: a new file swapped in
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, self.path)


@pytest.mark.parametrize("source", ["secretsmanager", "file"])
def test_the_app_recovers_from_a_rotation_by_itself(
    rds: RdsDatabase, live_server_factory, source: str, tmp_path: Path, request
) -> None:
    user = f"rot_{source[:4]}_{os.getpid()}"
    _migrate_with_app_role(rds, user)
    secret = {"username": user, "password": OLD}
    env = app_env(_location(rds), MIGRATE_ON_STARTUP="false", DB_POOL_MIN="2", LOG_LEVEL="INFO")
    if source == "secretsmanager":
        endpoint = request.getfixturevalue("moto_endpoint")
        env.update(aws_env(endpoint))
        sm = boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        arn = sm.create_secret(Name=f"app/{user}", SecretString=json.dumps(secret))["ARN"]
        env["DB_SECRET_ARN"] = arn

        def put(value: dict[str, Any]) -> None:
            sm.put_secret_value(SecretId=arn, SecretString=json.dumps(value))
    else:
        mounted = FileSecret(tmp_path / "db.json")
        mounted.write(secret)
        env["DB_SECRET_FILE"] = str(mounted.path)
        put = mounted.write
    server = live_server_factory(env)
    server.wait_up()
    pid = server.proc.pid
    codes = []
    for i in range(5):
        r = httpx.post(f"{server.base}/api/links", json={"url": f"https://e.org/{i}"}, headers=AUTH)
        assert r.status_code == 201, r.text
        codes.append(r.json()["code"])
        httpx.get(f"{server.base}/{codes[-1]}")

    with Load(server.base, codes, readers=2) as load:
        load.wait_for_traffic("traffic before the rotation", writes=3, redirects=10)
        rotated_at = time.monotonic()
        with rds.admin() as admin:
            admin.execute(f"ALTER ROLE {user} PASSWORD '{NEW}'")
            # live sessions survive a password change; a failover or a recycled connection does
            # not: end them, so every connection must log in again with the new password
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (user,),
            )
        # the rotation's gap (the database has the new password, the secret the old) lasts
        # until the app has felt it: a write refused, and a login refused with the old password
        # (the first refused writes may be the ended sessions', before any new login)
        wait_until(
            "a write refused and a login refused with the old password",
            lambda: (
                any(s != 201 for s in load.writes_since(rotated_at))
                and _auth_failures(server.metrics) >= 1
            ),
            within=30,
        )
        secret_at = time.monotonic()
        put({"username": user, "password": NEW})
        # watched until past the 3 s the failures must end within, and writes work again
        wait_until(
            "writes sent past the window, answered",
            lambda: load.writes_since(secret_at + WINDOW).count(201) >= 3,
            within=30,
        )
    assert server.proc.poll() is None and server.proc.pid == pid, "no restart"

    failed = [(t, s) for t, s, _, _ in load.writes if s != 201 and t >= rotated_at]
    recovered = next(t for t, s, _, _ in load.writes if s == 201 and t >= secret_at)
    window = (failed[-1][0] - failed[0][0]) if failed else 0.0
    writes_after = [s for t, s, _, _ in load.writes if t >= rotated_at]
    redirects = [s for t, s in load.redirects if t >= rotated_at]
    print(
        f"\nrotation ({source}): {len(failed)} of {len(writes_after)} writes failed "
        f"({sorted({s for _, s in failed}, key=str)}), over {window:.2f}s from the password "
        f"change; writes work {recovered - secret_at:.2f}s after the secret changed "
        f"({recovered - rotated_at:.2f}s after the password); cached redirects "
        f"{redirects.count(307)}/{len(redirects)}"
    )
    assert failed, "the rotation was not felt: the test did not make the app log in again"
    assert {s for _, s in failed} == {503}, "refused logins are 503, never 500"
    assert failed[-1][0] < secret_at + WINDOW
    assert recovered - secret_at < WINDOW
    assert all(s == 201 for t, s, _, _ in load.writes if t > failed[-1][0])
    assert redirects.count(307) == len(redirects)
    m = httpx.get(server.metrics, timeout=5).text
    assert _auth_failures(server.metrics) >= 1
    assert 'app_db_credential_reads_total{result="ok"}' in m
    assert "app_db_up 1.0" in m
    out = server.output()
    assert OLD not in out and NEW not in out
    assert "database credentials changed" in out or source == "file"


def test_the_migration_reads_the_master_secret_and_re_reads_it_after_a_refusal(
    rds: RdsDatabase, moto_endpoint: str
) -> None:
    """`python -m shortener.migrate` with DB_SECRET_ARN (RDS's managed master secret holds only
    username and password): a stale password is refused, the secret re-read, the run succeeds."""
    import subprocess
    import sys
    import threading

    from .conftest import APP_DIR

    sm = boto3.client(
        "secretsmanager",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    stale = {"username": rds.MASTER, "password": "Not-the-password-anymore-0"}
    arn = sm.create_secret(Name=f"rds/master-{rds.name}", SecretString=json.dumps(stale))["ARN"]
    env = {
        **os.environ,
        **aws_env(moto_endpoint),
        "PYTHONPATH": str(APP_DIR),
        "DATABASE_URL": _location(rds),
        "DB_SECRET_ARN": arn,
        "STARTUP_DB_TIMEOUT_SECONDS": "15",
    }
    # The right value lands once the migration has been refused (a rotation finishing): no
    # timing guess, so a slow start cannot make the refusal vanish.
    from tests.app_process import Popen

    proc = Popen(
        [sys.executable, "-m", "shortener.migrate"],
        cwd=APP_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    rotated = False
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not rotated and "password authentication failed" in line:
                right = {"username": rds.MASTER, "password": rds.MASTER_PASSWORD}
                sm.put_secret_value(SecretId=arn, SecretString=json.dumps(right))
                rotated = True
        returncode = proc.wait(timeout=60)
    finally:
        watchdog.cancel()
    out = "".join(lines)
    assert rotated and returncode == 0, out
    assert "password authentication failed" in out and '"msg": "schema migrated"' in out
    assert rds.MASTER_PASSWORD not in out and "Not-the-password-anymore-0" not in out


def _auth_failures(metrics_url: str) -> float:
    """The app's app_db_auth_failures_total: logins PostgreSQL refused."""
    text = httpx.get(metrics_url, timeout=5).text
    return next(
        float(ln.split()[-1])
        for ln in text.splitlines()
        if ln.startswith("app_db_auth_failures_total")
    )
