"""The rotation function (app/functions/rotation) driven step by step as Secrets Manager drives it,
against moto's Secrets Manager over HTTP and a real PostgreSQL set up like RDS (TLS verify-full,
SCRAM, a master role that is no superuser); then the app under traffic while that function
rotates its role's password, and the migration after a rotation (it must follow the secret, not
put back the password it was deployed with)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import httpx
import psycopg
import pytest

from .conftest import APP_DIR, TOKEN, RdsDatabase, app_env, aws_env
from .test_faults import Load, wait_until
from .test_rotation import OLD, _location, _migrate_with_app_role

pytestmark = pytest.mark.realpart

ROTATION_DIR = APP_DIR / "functions" / "rotation"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def rotation() -> Iterator[ModuleType]:
    """The handler as Lambda loads it: its directory first on sys.path (housekeeping.py, the
    job's credentials code, is in the same archive)."""
    sys.path.insert(0, str(ROTATION_DIR))
    try:
        yield importlib.import_module("rotation")
    finally:
        sys.path.remove(str(ROTATION_DIR))


@pytest.fixture
def sm(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in aws_env(moto_endpoint).items():
        monkeypatch.setenv(key, value)
    return boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name="us-east-1")


def _env(rds: RdsDatabase) -> dict[str, str]:
    """The function's environment: the app role's secret holds only username and password."""
    return {
        "DB_HOST": "localhost",
        "DB_PORT": str(rds.cluster.port),
        "DB_NAME": rds.name,
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": str(rds.cluster.ca_file),
        "STACK_NAME": "test",
    }


def _secret(sm: Any, user: str, password: str) -> str:
    arn = sm.create_secret(
        Name=f"app/{user}/{uuid.uuid4().hex[:6]}",
        SecretString=json.dumps({"username": user, "password": password}),
    )["ARN"]
    # rotation on (moto without a function: the schedule only, no rotation run now)
    sm.rotate_secret(
        SecretId=arn, RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False
    )
    return str(arn)


def _value(sm: Any, arn: str, **version: str) -> dict[str, Any]:
    """A version's value: AWSCURRENT unless told (said explicitly: moto's default version does
    not follow UpdateSecretVersionStage, AWS's does)."""
    version.setdefault("VersionStage", "AWSCURRENT")
    return dict(json.loads(sm.get_secret_value(SecretId=arn, **version)["SecretString"]))


def _logs_in(rds: RdsDatabase, user: str, password: str) -> bool:
    try:
        psycopg.connect(rds.url(user, password), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
        return False
    return True


def _rotate(rotation: ModuleType, sm: Any, arn: str, env: dict[str, str]) -> list[str]:
    token = str(uuid.uuid4())
    return [rotation.rotate_step(sm, arn, token, step, env) for step in rotation.STEPS]


def test_the_four_steps_rotate_the_roles_password_and_each_is_idempotent(
    rotation: ModuleType, rds: RdsDatabase, sm: Any
) -> None:
    user = f"rotfn_{os.getpid()}"
    _migrate_with_app_role(rds, user)
    arn = _secret(sm, user, OLD)
    env, token = _env(rds), str(uuid.uuid4())
    step = rotation.rotate_step

    assert step(sm, arn, token, "createSecret", env) == "pending version created"
    pending = _value(sm, arn, VersionId=token, VersionStage="AWSPENDING")["password"]
    assert step(sm, arn, token, "createSecret", env) == "pending version already there"
    assert _value(sm, arn, VersionId=token, VersionStage="AWSPENDING")["password"] == pending
    assert len(pending) == 32 and pending.isalnum() and pending != OLD
    # nothing changed for the clients yet
    assert _value(sm, arn)["password"] == OLD and _logs_in(rds, user, OLD)

    assert step(sm, arn, token, "setSecret", env) == "password changed, logged in with AWSCURRENT"
    assert step(sm, arn, token, "setSecret", env) == "the pending password already logs in"
    assert not _logs_in(rds, user, OLD) and _logs_in(rds, user, pending)

    assert step(sm, arn, token, "testSecret", env) == "the pending password logs in"
    assert step(sm, arn, token, "testSecret", env) == "the pending password logs in"

    assert step(sm, arn, token, "finishSecret", env) == "AWSCURRENT moved to the new version"
    assert step(sm, arn, token, "finishSecret", env) == "already current"
    # every step of a finished rotation, re-run, does nothing
    assert {step(sm, arn, token, s, env) for s in rotation.STEPS} == {"already current"}

    assert _value(sm, arn) == {"username": user, "password": pending}
    assert _value(sm, arn, VersionStage="AWSPREVIOUS")["password"] == OLD
    stages = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    # the end state Secrets Manager accepts: AWSPENDING gone, or on the AWSCURRENT version
    assert "AWSCURRENT" in stages[token]
    assert all("AWSPENDING" not in v for k, v in stages.items() if k != token)
    assert not _logs_in(rds, user, OLD) and _logs_in(rds, user, pending)
    # the role changed its own password: its grants and attributes are what the migration made
    with rds.admin() as admin:
        row = admin.execute(
            "SELECT rolsuper, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = %s", (user,)
        ).fetchone()
    assert row == (False, False, True)

    # a second rotation logs in with the first one's password
    outcomes = _rotate(rotation, sm, arn, env)
    assert outcomes[1] == "password changed, logged in with AWSCURRENT"
    second = _value(sm, arn)["password"]
    assert second not in (OLD, pending) and _logs_in(rds, user, second)
    assert not _logs_in(rds, user, pending)


def test_set_falls_back_to_the_previous_password_and_says_what_to_do_when_none_works(
    rotation: ModuleType, rds: RdsDatabase, sm: Any
) -> None:
    user = f"rotfb_{os.getpid()}"
    _migrate_with_app_role(rds, user)
    arn = _secret(sm, user, OLD)
    env = _env(rds)
    _rotate(rotation, sm, arn, env)
    # the role's password went back to the previous one (a migration from a stale source)
    with rds.admin() as admin:
        admin.execute(f"ALTER ROLE {user} PASSWORD '{OLD}'")
    outcomes = _rotate(rotation, sm, arn, env)
    assert outcomes[1] == "password changed, logged in with AWSPREVIOUS"
    assert _logs_in(rds, user, _value(sm, arn)["password"])

    lost = "Nobody-knows-this-one-0123"
    with rds.admin() as admin:
        admin.execute(f"ALTER ROLE {user} PASSWORD '{lost}'")
    token = str(uuid.uuid4())
    rotation.rotate_step(sm, arn, token, "createSecret", env)
    with pytest.raises(rotation.RotationError) as err:
        rotation.rotate_step(sm, arn, token, "setSecret", env)
    message = str(err.value)
    assert (
        "neither AWSCURRENT nor AWSPREVIOUS logs in" in message and "shortener.migrate" in message
    )
    for value in (lost, OLD, _value(sm, arn)["password"]):
        assert value not in message
    # refused: a token that is not this secret's, a step that does not exist, rotation off
    with pytest.raises(rotation.RotationError, match="not a version of this secret"):
        rotation.rotate_step(sm, arn, str(uuid.uuid4()), "setSecret", env)
    with pytest.raises(rotation.RotationError, match="unknown step 'dropSecret'"):
        rotation.rotate_step(sm, arn, token, "dropSecret", env)
    plain = sm.create_secret(Name=f"plain/{user}", SecretString="{}")["ARN"]
    with pytest.raises(rotation.RotationError, match="rotation is not enabled"):
        rotation.rotate_step(sm, plain, token, "createSecret", env)


def test_the_rotation_takes_the_migrations_lock(rotation: ModuleType) -> None:
    from shortener import db

    assert rotation.MIGRATION_LOCK_ID == db.MIGRATION_LOCK_ID


def test_the_migration_follows_the_secret_after_a_rotation(
    rotation: ModuleType, rds: RdsDatabase, sm: Any
) -> None:
    """APP_DB_SECRET_ARN: the migration sets the role's password from the secret's AWSCURRENT
    (under its lock), so a deploy after a rotation keeps the rotated password working."""
    from shortener import config, db

    user = f"rotmig_{os.getpid()}"
    first = "First-secret-pass-0123456789"
    arn = sm.create_secret(
        Name=f"mig/{user}", SecretString=json.dumps({"username": user, "password": first})
    )["ARN"]
    sm.rotate_secret(
        SecretId=arn, RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False
    )
    settings = config.load(app_env(rds.master_url(), APP_DB_USER=user, APP_DB_SECRET_ARN=arn))
    assert settings.app_db_password == "" and settings.app_db_secret_arn == arn
    asyncio.run(db.migrate_url(settings, 10))
    assert _logs_in(rds, user, first)
    _rotate(rotation, sm, arn, _env(rds))
    rotated = _value(sm, arn)["password"]
    asyncio.run(db.migrate_url(settings, 10))
    assert _logs_in(rds, user, rotated) and not _logs_in(rds, user, first)
    # a secret for another role is refused, naming both and no password
    other = sm.create_secret(
        Name=f"mig/other-{user}",
        SecretString=json.dumps({"username": "someone", "password": first}),
    )["ARN"]
    wrong = config.load(app_env(rds.master_url(), APP_DB_USER=user, APP_DB_SECRET_ARN=other))
    with pytest.raises(db.MigrationRefused, match="holds the username 'someone'") as err:
        asyncio.run(db.migrate_url(wrong, 10))
    assert first not in str(err.value)


def test_the_app_under_traffic_survives_a_rotation_by_the_function(
    rotation: ModuleType, rds: RdsDatabase, sm: Any, moto_endpoint: str, live_server_factory
) -> None:
    """The worst case for single-user rotation: between setSecret (the database has the new
    password) and finishSecret (the secret still says the old one) every session of the role
    ends (a failover), so each connection must log in again. The app recovers by itself."""
    user = f"rotapp_{os.getpid()}"
    _migrate_with_app_role(rds, user)
    arn = _secret(sm, user, OLD)
    env = app_env(_location(rds), MIGRATE_ON_STARTUP="false", DB_POOL_MIN="2", LOG_LEVEL="INFO")
    env.update(aws_env(moto_endpoint))
    env["DB_SECRET_ARN"] = arn
    server = live_server_factory(env)
    server.wait_up()
    pid = server.proc.pid
    codes = []
    for i in range(5):
        r = httpx.post(f"{server.base}/api/links", json={"url": f"https://e.org/{i}"}, headers=AUTH)
        assert r.status_code == 201, r.text
        codes.append(r.json()["code"])
        httpx.get(f"{server.base}/{codes[-1]}")

    fn_env, token = _env(rds), str(uuid.uuid4())
    with Load(server.base, codes, readers=2) as load:
        load.wait_for_traffic("traffic before the rotation", writes=3, redirects=10)
        started = time.monotonic()
        rotation.rotate_step(sm, arn, token, "createSecret", fn_env)
        rotation.rotate_step(sm, arn, token, "setSecret", fn_env)
        set_at = time.monotonic()
        with rds.admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (user,),
            )
        rotation.rotate_step(sm, arn, token, "testSecret", fn_env)
        rotation.rotate_step(sm, arn, token, "finishSecret", fn_env)
        finished_at = time.monotonic()
        # watched until past the 3 s the failures must end within, and writes work again
        wait_until(
            "writes sent past the window, answered",
            lambda: load.writes_since(finished_at + 3.0).count(201) >= 3,
            within=30,
        )
    assert server.proc.poll() is None and server.proc.pid == pid, "no restart"
    new = _value(sm, arn)["password"]
    assert new != OLD and not _logs_in(rds, user, OLD)

    writes_after = [(t, s) for t, s, _, _ in load.writes if t >= started]
    failed = [(t, s) for t, s in writes_after if s != 201]
    recovered = next(t for t, s in writes_after if s == 201 and t >= finished_at)
    window = (failed[-1][0] - failed[0][0]) if failed else 0.0
    redirects = [s for t, s in load.redirects if t >= started]
    print(
        f"\nrotation by the function: steps took {finished_at - started:.2f}s "
        f"(set -> finish {finished_at - set_at:.2f}s); {len(failed)} of {len(writes_after)} "
        f"writes failed ({sorted({s for _, s in failed}, key=str)}) over {window:.2f}s; writes "
        f"work {recovered - finished_at:.2f}s after finishSecret; cached redirects "
        f"{redirects.count(307)}/{len(redirects)}"
    )
    assert {s for _, s in failed} <= {503}, "refused logins are 503, never 500"
    if failed:
        assert failed[-1][0] < finished_at + 3.0
    assert recovered - finished_at < 3.0
    assert all(s == 201 for t, s in writes_after if t > finished_at + 3.0)
    assert redirects.count(307) == len(redirects)
    out = server.output()
    assert OLD not in out and new not in out
