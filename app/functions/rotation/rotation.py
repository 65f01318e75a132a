"""Secrets Manager rotation of a database login role's password, single-user strategy.

Lambda handler: ``rotation.handler``. Secrets Manager invokes it four times per rotation, with
``{"SecretId", "ClientRequestToken", "Step"}``; the token is the id of the new secret version,
which carries the AWSPENDING label until the last step moves AWSCURRENT to it:

* ``createSecret``: the new version (AWSPENDING), the current value with a new password from
  GetRandomPassword (letters and digits, 32). Already there (a retried step): nothing.
* ``setSecret``: the role logs in with the current password (or the previous one, if an earlier
  rotation stopped after this step) and changes its own password: ``ALTER ROLE CURRENT_USER``,
  which PostgreSQL allows any role, with a SCRAM-SHA-256 verifier made here (the password never
  reaches the server's logs). It takes the app's migration lock (app/shortener/db.py
  ``MIGRATION_LOCK_ID``) in the same transaction, so a migration that sets the role's password
  from the secret's AWSCURRENT never interleaves with it. If the pending password already logs
  in (a retried step), nothing.
* ``testSecret``: the pending password logs in as the role.
* ``finishSecret``: AWSCURRENT moves to the new version (AWSPREVIOUS to the old one, by Secrets
  Manager). Already current: nothing.

Running pods keep their sessions (PostgreSQL checks a password at login only) and log in with
the new password on their next connection: the app re-reads its secret after a refused login
(app/shortener/credentials.py), the housekeeping job too.

The secret is JSON with ``username`` and ``password`` and, when it has them, ``host``, ``port``,
``dbname``; ``DB_HOST``, ``DB_PORT``, ``DB_NAME`` supply what it lacks (the app role's secret
holds only the two). How it reads the secret and logs in (TLS verify-full against the RDS CA
bundle in the archive, refused logins told apart, passwords redacted) is the housekeeping job's
code (``housekeeping.py``, the same file in this archive): environment ``DB_SSLMODE``,
``DB_SSLROOTCERT``, ``DB_CONNECT_TIMEOUT_SECONDS`` as there. ``STACK_NAME`` names the stack in
logs. Nothing here logs a password or puts one in an error.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import boto3
import psycopg
from botocore.config import Config
from botocore.exceptions import ClientError
from housekeeping import AuthRefused, Credentials, JobError, Settings, connect, read_credentials
from psycopg import sql

LOG = logging.getLogger("rotation")
LOG.setLevel(logging.INFO)

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
PASSWORD_LENGTH = 32
# app/shortener/db.py MIGRATION_LOCK_ID: the migration sets role passwords under it.
MIGRATION_LOCK_ID = 0x5B0E_0001


class RotationError(RuntimeError):
    """A rotation that cannot proceed; the message names the secret and the step, never a value."""


def settings(secret_id: str, env: Any = None) -> Settings:
    """The housekeeping job's settings for this secret (TLS, timeouts, DB_HOST fallbacks)."""
    env = dict(os.environ if env is None else env)
    env["DB_SECRET_ARN"] = secret_id
    env.setdefault("STACK_NAME", "rotation")
    return Settings.from_env(env)


def credentials(
    client: Any, cfg: Settings, stage: str, version_id: str | None = None
) -> Credentials:
    return read_credentials(cfg, client, stage=stage, version_id=version_id)


def logs_in(creds: Credentials, cfg: Settings) -> bool:
    """Whether these credentials log in (False only for a refused login; other failures raise)."""
    try:
        connect(creds, cfg).close()
    except AuthRefused:
        return False
    return True


def create_secret(client: Any, secret_id: str, token: str) -> str:
    current = client.get_secret_value(SecretId=secret_id, VersionStage=CURRENT)
    try:
        client.get_secret_value(SecretId=secret_id, VersionId=token, VersionStage=PENDING)
        return "pending version already there"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    value = json.loads(current["SecretString"])
    value["password"] = client.get_random_password(
        PasswordLength=PASSWORD_LENGTH, ExcludePunctuation=True
    )["RandomPassword"]
    client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=token,
        SecretString=json.dumps(value),
        VersionStages=[PENDING],
    )
    return "pending version created"


def set_secret(client: Any, secret_id: str, token: str, cfg: Settings) -> str:
    pending = credentials(client, cfg, PENDING, token)
    if logs_in(pending, cfg):
        return "the pending password already logs in"
    for stage in (CURRENT, PREVIOUS):
        try:
            old = credentials(client, cfg, stage)
        except JobError:
            continue  # no AWSPREVIOUS before the first rotation
        if old.username != pending.username:
            raise RotationError(
                f"{secret_id}: {stage} is for {old.username!r}, AWSPENDING for "
                f"{pending.username!r}: a single-user rotation changes one role's password"
            )
        try:
            conn = connect(old, cfg)
        except AuthRefused:
            continue
        with conn:
            verifier = conn.pgconn.encrypt_password(
                pending.password.encode(), pending.username.encode(), b"scram-sha-256"
            ).decode()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
                conn.execute(
                    sql.SQL("ALTER ROLE CURRENT_USER WITH PASSWORD {}").format(
                        sql.Literal(verifier)
                    )
                )
        return f"password changed, logged in with {stage}"
    raise RotationError(
        f"{secret_id}: neither AWSCURRENT nor AWSPREVIOUS logs in as {pending.username!r}; "
        "set the role's password to AWSCURRENT's (python -m shortener.migrate does) and rotate again"
    )


def test_secret(client: Any, secret_id: str, token: str, cfg: Settings) -> str:
    pending = credentials(client, cfg, PENDING, token)
    if not logs_in(pending, cfg):
        raise RotationError(
            f"{secret_id}: the pending password does not log in as {pending.username!r}"
        )
    return "the pending password logs in"


def finish_secret(client: Any, secret_id: str, token: str) -> str:
    versions = client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    current = next((v for v, stages in versions.items() if CURRENT in stages), None)
    if current == token:
        return "already current"
    client.update_secret_version_stage(
        SecretId=secret_id, VersionStage=CURRENT, MoveToVersionId=token, RemoveFromVersionId=current
    )
    return "AWSCURRENT moved to the new version"


def check_version(client: Any, secret_id: str, token: str, step: str) -> bool:
    """False when there is nothing to do (the version is current already); raises when the
    token is not this rotation's pending version."""
    meta = client.describe_secret(SecretId=secret_id)
    if not meta.get("RotationEnabled"):
        raise RotationError(f"{secret_id}: rotation is not enabled on this secret")
    stages = meta.get("VersionIdsToStages", {}).get(token)
    if stages is None:
        if step == "createSecret":
            return True  # Secrets Manager made no stub (a manual run): createSecret makes it
        raise RotationError(f"{secret_id}: version {token} is not a version of this secret")
    if CURRENT in stages:
        return False
    if PENDING not in stages:
        raise RotationError(f"{secret_id}: version {token} is not pending rotation")
    return True


def rotate_step(client: Any, secret_id: str, token: str, step: str, env: Any = None) -> str:
    if step not in STEPS:
        raise RotationError(f"{secret_id}: unknown step {step!r}; allowed: {', '.join(STEPS)}")
    if not check_version(client, secret_id, token, step):
        return "already current"
    if step == "createSecret":
        return create_secret(client, secret_id, token)
    if step == "finishSecret":
        return finish_secret(client, secret_id, token)
    cfg = settings(secret_id, env)
    if step == "setSecret":
        return set_secret(client, secret_id, token, cfg)
    return test_secret(client, secret_id, token, cfg)


def _client() -> Any:
    config = Config(
        connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("secretsmanager", config=config)


def handler(event: dict[str, Any], context: Any, client: Any = None) -> dict[str, str]:
    secret_id, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    client = client or _client()
    try:
        outcome = rotate_step(client, secret_id, token, step)
    except (RotationError, JobError, psycopg.Error) as exc:
        LOG.error(
            json.dumps(
                {"event": "rotation failed", "secret": secret_id, "step": step, "error": str(exc)}
            )
        )
        raise
    LOG.info(
        json.dumps(
            {"event": "rotation step", "secret": secret_id, "step": step, "outcome": outcome}
        )
    )
    return {"step": step, "outcome": outcome}
