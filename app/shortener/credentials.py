"""Database credentials that can change while the app runs.

Three sources, one at a time (config.py refuses two):

* ``DATABASE_URL`` alone: the credentials in it, fixed for the life of the process (as before).
* ``DB_SECRET_ARN``: an AWS Secrets Manager secret (ARN or name), read with the pod's AWS identity
  (EKS Pod Identity or IRSA; the standard boto3 credential chain). Its value is JSON with
  ``username`` and ``password`` and, when it has them, ``host``, ``port`` and ``dbname`` (RDS's own
  managed master-user secret holds only username and password; then DATABASE_URL gives the rest).
* ``DB_SECRET_FILE``: a file with the same JSON (the Secrets Store CSI driver's mount), or a
  directory with one file per key (a Kubernetes Secret volume: ``username``, ``password``...).
  The kubelet or the driver refreshes it in place.

The secret's fields override DATABASE_URL's; DATABASE_URL keeps the options (sslmode,
sslrootcert...). The secret is read at start, and again when a connection fails authentication
(the password was rotated): at most once per backoff step, 0.5 s doubling up to
``DB_SECRET_MAX_BACKOFF_SECONDS``, reset by a successful login. A file is cheap to read and is read
for every new connection. Nothing here logs a password or puts one in an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import logs
from .config import Settings

log = logging.getLogger("shortener.credentials")

INITIAL_BACKOFF_SECONDS = 0.5
SECRET_KEYS = ("username", "password", "host", "port", "dbname")
# SQLSTATE 28P01 invalid_password, 28000 invalid_authorization_specification; libpq reports a
# failed login before a session exists, so the message is the reliable part
_AUTH_STATES = {"28P01", "28000"}
_AUTH_WORDS = ("password authentication failed", "authentication failed", "no password supplied")


class CredentialsError(Exception):
    """The secret cannot be read or parsed. The message names the secret, never a value."""


@dataclass(frozen=True)
class DbSecret:
    username: str
    password: str
    host: str | None = None
    port: int | None = None
    dbname: str | None = None

    def __repr__(self) -> str:  # never a password through repr()
        return f"DbSecret(username={self.username!r}, host={self.host!r})"

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.username, "password": self.password}
        if self.host:
            out["host"] = self.host
        if self.port:
            out["port"] = self.port
        if self.dbname:
            out["dbname"] = self.dbname
        return out


def is_auth_failure(exc: BaseException) -> bool:
    """Did this connection attempt fail because the server refused the login?"""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if getattr(exc, "sqlstate", None) in _AUTH_STATES:
        return True
    text = str(exc).lower()
    return any(word in text for word in _AUTH_WORDS)


def parse_secret(data: Any, where: str) -> DbSecret:
    if not isinstance(data, dict):
        raise CredentialsError(f"database secret {where} is not a JSON object")
    username = data.get("username") or data.get("user")
    password = data.get("password")
    absent = [k for k, v in (("username", username), ("password", password)) if not v]
    if absent:
        raise CredentialsError(f"database secret {where} lacks {', '.join(absent)}")
    port: int | None = None
    if data.get("port") not in (None, ""):
        try:
            port = int(data["port"])
        except (TypeError, ValueError):
            raise CredentialsError(f"database secret {where} has a non-numeric port") from None
    return DbSecret(
        username=str(username),
        password=str(password),
        host=str(data["host"]) if data.get("host") else None,
        port=port,
        dbname=str(data["dbname"]) if data.get("dbname") else None,
    )


def read_file(path: str) -> DbSecret:
    p = Path(path)
    try:
        if p.is_dir():
            data: Any = {
                key: (p / key).read_text().strip() for key in SECRET_KEYS if (p / key).is_file()
            }
        else:
            data = json.loads(p.read_text())
    except OSError as exc:
        raise CredentialsError(
            f"cannot read database secret file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except ValueError:
        raise CredentialsError(f"database secret file {path} is not JSON") from None
    return parse_secret(data, f"file {path}")


def read_secrets_manager(secret_id: str, client: Any = None) -> DbSecret:
    """GetSecretValue (AWSCURRENT). boto3 reads the region and the endpoint from the environment
    (AWS_REGION, AWS_ENDPOINT_URL)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        client = secrets_client()
    try:
        # the stage said, as every reader of a rotating secret should (the API's default too)
        value = client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise CredentialsError(f"cannot read database secret {secret_id}: {code}") from None
    except BotoCoreError as exc:
        raise CredentialsError(
            f"cannot read database secret {secret_id}: {type(exc).__name__}"
        ) from None
    raw = value.get("SecretString")
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    return parse_secret(data, secret_id)


def secrets_client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}
    )
    return boto3.client("secretsmanager", config=config)


class Credentials:
    """The current login for new connections, re-read after an authentication failure."""

    def __init__(self, settings: Settings, base: dict[str, Any]) -> None:
        self.settings = settings
        self.base = base  # connect_timeout, application_name...
        self.source = settings.secret_source
        self._secret: DbSecret | None = None
        self._stale = False
        self._next_read = 0.0
        self._backoff = INITIAL_BACKOFF_SECONDS
        self._lock = asyncio.Lock()
        self._client: Any = None
        # counters for the metrics (app_db_auth_failures_total, app_db_credential_reads_total)
        self.auth_failures = 0
        self.reads_ok = 0
        self.reads_failed = 0

    @property
    def rotating(self) -> bool:
        return bool(self.source)

    def passwords(self) -> list[str]:
        return [self._secret.password] if self._secret else []

    def auth_failed(self) -> None:
        """A login was refused: the next connection re-reads the secret (when the backoff lets)."""
        self.auth_failures += 1
        if self.rotating:
            self._stale = True

    def auth_ok(self) -> None:
        self._backoff = INITIAL_BACKOFF_SECONDS

    def _read(self) -> DbSecret:
        if self.settings.db_secret_file:
            return read_file(self.settings.db_secret_file)
        if self._client is None:
            self._client = secrets_client()
        return read_secrets_manager(self.settings.db_secret_arn, self._client)

    async def refresh(self, *, force: bool = False) -> None:
        """Read the secret now if it is stale and the backoff allows (or force)."""
        if not self.rotating:
            return
        async with self._lock:
            file_source = bool(self.settings.db_secret_file)
            due = self._stale and time.monotonic() >= self._next_read
            if not (force or file_source or self._secret is None or due):
                return
            try:
                secret = await asyncio.to_thread(self._read)
            except CredentialsError as exc:
                self.reads_failed += 1
                self._next_read = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.settings.db_secret_max_backoff_seconds)
                if self._secret is None:
                    raise
                log.warning("database secret not re-read: %s", exc)
                return
            self.reads_ok += 1
            logs.add_secret(secret.password)
            changed = self._secret is not None and secret != self._secret
            if self._stale and not file_source:
                # an auth failure made us read: the next read waits longer, unless a login works
                self._next_read = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.settings.db_secret_max_backoff_seconds)
            self._secret, self._stale = secret, False
            if changed:
                log.warning(
                    "database credentials changed: new connections use them",
                    extra={"source": self.source, "user": secret.username},
                )

    async def kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments for a new connection (the pool calls this each time)."""
        await self.refresh()
        out = dict(self.base)
        if self._secret is not None:
            out.update(self._secret.overrides())
        return out
