"""12-factor configuration: every setting comes from the environment, with defaults that run locally.

The only module that reads the environment. A bad value stops the process with a message naming the
variable, the value (never for secrets) and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# The login roles the migration manages (APP_DB_USER, JOB_DB_USER): plain lower-case identifiers,
# none of the names PostgreSQL or RDS reserve (pg_*, rds*: rdsadmin, rds_superuser...).
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
RESERVED_ROLES = frozenset({"public", "none", "current_user", "session_user", "current_role"})
ROLE_RULE = (
    "allowed: 1 to 63 of a-z, 0-9 and _, starting with a letter or _; "
    "not pg_*, rds*, public, none, current_user, session_user, current_role"
)
# Their passwords: printable ASCII without spaces, so they need no SASLprep and no quoting.
PASSWORD_RULE = "allowed: 16 to 128 printable ASCII characters, no spaces"
SSL_VERIFYING = ("verify-ca", "verify-full")
# the keep-alive timeout must outlast the load balancer's idle timeout by this much by default, so
# the load balancer (not the app) is always the side that closes an idle connection
KEEPALIVE_MARGIN_SECONDS = 5


class ConfigError(ValueError):
    """A setting from the environment is invalid."""


@dataclass(frozen=True)
class Settings:
    # where the database is; libpq URL or key=value string. The password is never logged.
    database_url: str = field(default="postgresql://localhost/shortener", repr=False)
    # bearer token for writes; empty means writes are refused (503) until it is set
    api_token: str = field(default="", repr=False)
    host: str = "0.0.0.0"  # a container listens on all interfaces
    port: int = 8000
    log_level: str = "INFO"
    # the redirect cache: entries live this long and at most this many are kept (LRU beyond)
    cache_ttl_seconds: float = 60.0
    cache_max_entries: int = 10_000
    # the connection pool
    db_pool_min: int = 1
    db_pool_max: int = 10
    db_pool_timeout_seconds: float = 5.0  # how long a request waits for a connection
    db_connect_timeout_seconds: int = 5
    # after a failed connection attempt the pool waits this long before the next one, doubling
    # after each failure (psycopg_pool's own backoff, whose first delay is 1 s)
    db_reconnect_backoff_seconds: float = 1.0
    db_statement_timeout_ms: int = 5_000
    # the database check (a background task, every DB_CHECK_INTERVAL_SECONDS) waits this long
    ready_timeout_seconds: float = 2.0
    db_check_interval_seconds: float = 1.0
    # a request waits at most this long for the database (a connection and its query), then 503:
    # under the 1 s a client should wait for a write's verdict when the database is gone
    db_request_timeout_seconds: float = 0.8
    # database credentials that rotate: a Secrets Manager secret (ARN or name) or a mounted file,
    # JSON {username, password[, host, port, dbname]}; they override DATABASE_URL's. Re-read on an
    # authentication failure, at most once per backoff step (0.5 s doubling up to this cap).
    db_secret_arn: str = ""
    db_secret_file: str = ""
    db_secret_max_backoff_seconds: float = 30.0
    # request bodies larger than this are refused with 413
    max_body_bytes: int = 8_192
    # click counts are buffered in memory and written in one statement this often
    click_flush_seconds: float = 1.0
    # run the schema migrations at startup (the Kubernetes Job runs `python -m shortener.migrate`)
    migrate_on_startup: bool = True
    # at startup, wait at most this long for the database before giving up (exit 1)
    startup_db_timeout_seconds: float = 30.0
    # SIGTERM: first keep serving this long with readiness 503 and `Connection: close` on every
    # response (0 when a preStop pause does that job), then stop accepting and let in-flight
    # requests finish within SHUTDOWN_TIMEOUT_SECONDS
    shutdown_drain_seconds: float = 0.0
    shutdown_timeout_seconds: int = 20
    # the load balancer's idle timeout (ALB: 60 s by default) and the app's keep-alive timeout,
    # which must be longer (default: the idle timeout + 5 s)
    lb_idle_timeout_seconds: int = 60
    keepalive_timeout_seconds: int = 65
    # X-Forwarded-Proto/-For are believed only from these addresses or networks (the VPC's CIDR);
    # empty: from nobody
    forwarded_allow_ips: tuple[str, ...] = ()
    # Prometheus metrics on their own port (never the load balancer's): 0 turns the listener off
    metrics_port: int = 9464
    # /docs, /openapi.json: off unless asked for
    docs_enabled: bool = False
    # the canary's link, created (or reset) by the migration when both are set
    canary_link_code: str = ""
    canary_link_url: str = ""
    # a link's expires_at may be at most this far ahead
    max_link_lifetime_days: int = 3650
    # the base of the short links returned by POST; empty means "from the request's Host"
    public_base_url: str = ""
    # the login roles `python -m shortener.migrate` creates (or resets) with exactly their grants;
    # empty: not managed. The app's pods then connect as the app role (DATABASE_URL).
    app_db_user: str = ""
    app_db_password: str = field(default="", repr=False)
    job_db_user: str = ""
    job_db_password: str = field(default="", repr=False)
    # or the password's source: a Secrets Manager secret ({"username", "password"}) whose
    # AWSCURRENT the migration reads under its lock (a rotation function owns the password)
    app_db_secret_arn: str = ""
    job_db_secret_arn: str = ""

    def redacted_database_url(self) -> str:
        """The database location without credentials: host, port and database name only."""
        return describe_database(self.database_url)

    @property
    def secret_source(self) -> str:
        """Where rotating credentials come from: "" (DATABASE_URL only), or a description."""
        if self.db_secret_arn:
            return f"secretsmanager:{self.db_secret_arn}"
        if self.db_secret_file:
            return f"file:{self.db_secret_file}"
        return ""

    def secrets(self) -> list[str]:
        """Values that must never reach a log line."""
        found = [s for s in (self.api_token, self.app_db_password, self.job_db_password) if s]
        try:
            password = conninfo_to_dict(self.database_url).get("password")
        except Exception:
            password = None
        if password:
            found.append(str(password))
        return found


def describe_database(url: str) -> str:
    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "<unparseable DATABASE_URL>"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or ""
    return f"postgresql://{host}:{port}/{dbname}"


def _role(env: Mapping[str, str], kind: str) -> tuple[str, str, str]:
    """(name, password, secret ARN) of a login role the migration manages, or ("", "", "").
    The password comes from <KIND>_DB_PASSWORD, or from the secret <KIND>_DB_SECRET_ARN at
    migration time (then a rotation function changes it, and the migration follows)."""
    user_key, password_key = f"{kind}_DB_USER", f"{kind}_DB_PASSWORD"
    secret_key = f"{kind}_DB_SECRET_ARN"
    name = env.get(user_key, "").strip()
    password = env.get(password_key, "")
    secret_arn = env.get(secret_key, "").strip()
    if password and secret_arn:
        raise ConfigError(f"{password_key} and {secret_key} are both set: set one, not both")
    if not name and not password and not secret_arn:
        return "", "", ""
    source = password_key if password or not secret_arn else secret_key
    if not name or not (password or secret_arn):
        missing = user_key if not name else password_key
        given = source if not name else user_key
        raise ConfigError(
            f"{given} is set but {missing} is not: set both, or neither "
            f"(the password may come from {secret_key} instead)"
        )
    if not ROLE_NAME.fullmatch(name) or name in RESERVED_ROLES or name.startswith(("pg_", "rds")):
        raise ConfigError(
            f"{user_key}={name!r} is not a role name the migration manages ({ROLE_RULE})"
        )
    if secret_arn:
        return name, "", secret_arn
    if not 16 <= len(password) <= 128 or any(not ("!" <= c <= "~") for c in password):
        # never echo the value
        raise ConfigError(f"{password_key} is too weak or malformed ({PASSWORD_RULE})")
    return name, password, ""


def _check_tls(database_url: str, env: Mapping[str, str]) -> None:
    """sslmode=verify-ca/verify-full needs the CA file: say so now instead of retrying a
    connection that cannot succeed."""
    params = conninfo_to_dict(database_url)
    mode = str(params.get("sslmode") or env.get("PGSSLMODE") or "")
    if mode not in SSL_VERIFYING:
        return
    root = str(params.get("sslrootcert") or env.get("PGSSLROOTCERT") or "")
    if not root:
        raise ConfigError(
            f"DATABASE_URL has sslmode={mode} but no sslrootcert "
            "(allowed: sslrootcert=<path of a CA bundle>, e.g. /opt/app/certs/rds-global-bundle.pem)"
        )
    if root != "system" and not os.path.isfile(root):
        raise ConfigError(
            f"DATABASE_URL has sslrootcert={root!r}, which is not a file "
            "(the image carries the RDS bundle at /opt/app/certs/rds-global-bundle.pem)"
        )


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer (allowed: {lo}..{hi})") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range (allowed: {lo}..{hi})")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number (allowed: {lo}..{hi})") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range (allowed: {lo}..{hi})")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (allowed: true/false, 1/0, yes/no)")


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses or CIDR networks, each checked (uvicorn itself would
    silently take a typo for a literal host name that never matches)."""
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    if raw == "*":
        raise ConfigError(
            f"{name}='*' would believe forwarded headers from anyone "
            "(allowed: IP addresses or CIDR networks, e.g. 10.0.0.0/16)"
        )
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(
                f"{name}: {item!r} is not an IP address or CIDR network "
                "(allowed: e.g. 10.0.0.0/16,127.0.0.1)"
            ) from None
        out.append(str(network))
    return tuple(out)


def _canary(env: Mapping[str, str]) -> tuple[str, str]:
    from .validation import code_problem, url_problem

    code = env.get("CANARY_LINK_CODE", "").strip()
    url = env.get("CANARY_LINK_URL", "").strip()
    if not code and not url:
        return "", ""
    if not code or not url:
        missing = "CANARY_LINK_CODE" if not code else "CANARY_LINK_URL"
        given = "CANARY_LINK_URL" if not code else "CANARY_LINK_CODE"
        raise ConfigError(f"{given} is set but {missing} is not: set both, or neither")
    problem = code_problem(code)
    if problem:
        raise ConfigError(f"CANARY_LINK_CODE={code!r}: {problem}")
    problem = url_problem(url)
    if problem:
        raise ConfigError(f"CANARY_LINK_URL={url!r}: {problem}")
    return code, url


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (or the given mapping, for tests)."""
    env = os.environ if env is None else env
    d = Settings()

    database_url = env.get("DATABASE_URL", "").strip() or d.database_url
    try:
        conninfo_to_dict(database_url)
    except Exception:
        # the message of the parser may echo the URL, password included: do not chain it
        raise ConfigError(
            "DATABASE_URL is not a valid libpq connection string "
            "(expected e.g. postgresql://user:password@host:5432/dbname)"
        ) from None
    _check_tls(database_url, env)

    app_user, app_password, app_secret = _role(env, "APP")
    job_user, job_password, job_secret = _role(env, "JOB")
    if app_user and app_user == job_user:
        raise ConfigError(
            f"APP_DB_USER and JOB_DB_USER are both {app_user!r}: the app and the job need "
            "their own roles"
        )

    token = env.get("API_TOKEN", "")
    if token and (len(token) < 16 or any(c.isspace() for c in token)):
        raise ConfigError(
            "API_TOKEN is too weak or malformed (allowed: 16 or more characters, no spaces)"
        )

    log_level = env.get("LOG_LEVEL", d.log_level).strip().upper() or d.log_level
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={log_level!r} is not one of {', '.join(LOG_LEVELS)}")

    public_base_url = env.get("PUBLIC_BASE_URL", "").strip().rstrip("/")
    if public_base_url:
        parts = urlsplit(public_base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"PUBLIC_BASE_URL={public_base_url!r} is not an http(s) URL with a host"
            )

    secret_arn = env.get("DB_SECRET_ARN", "").strip()
    secret_file = env.get("DB_SECRET_FILE", "").strip()
    if secret_arn and secret_file:
        raise ConfigError(
            "DB_SECRET_ARN and DB_SECRET_FILE are both set: choose one source of credentials"
        )
    if secret_arn and any(c.isspace() for c in secret_arn):
        raise ConfigError(f"DB_SECRET_ARN={secret_arn!r} is not a secret ARN or name")

    lb_idle = _int(env, "LB_IDLE_TIMEOUT_SECONDS", d.lb_idle_timeout_seconds, 1, 4000)
    keepalive = _int(env, "KEEPALIVE_TIMEOUT_SECONDS", lb_idle + KEEPALIVE_MARGIN_SECONDS, 1, 4100)
    if keepalive <= lb_idle:
        raise ConfigError(
            f"KEEPALIVE_TIMEOUT_SECONDS={keepalive} must be longer than "
            f"LB_IDLE_TIMEOUT_SECONDS={lb_idle} (the load balancer's idle timeout), or the app "
            "closes connections the load balancer still uses (502s)"
        )
    port = _int(env, "PORT", d.port, 1, 65535)
    metrics_port = _int(env, "METRICS_PORT", d.metrics_port, 0, 65535)
    if metrics_port == port:
        raise ConfigError(
            f"METRICS_PORT={metrics_port} is the app's PORT: metrics need their own port, "
            "which the load balancer does not reach (0 turns the metrics listener off)"
        )
    canary_code, canary_url = _canary(env)

    pool_min = _int(env, "DB_POOL_MIN", d.db_pool_min, 0, 100)
    pool_max = _int(env, "DB_POOL_MAX", d.db_pool_max, 1, 100)
    if pool_max < max(pool_min, 1):
        raise ConfigError(f"DB_POOL_MAX={pool_max} is below DB_POOL_MIN={pool_min}")

    return Settings(
        database_url=database_url,
        api_token=token,
        host=env.get("HOST", d.host).strip() or d.host,
        port=port,
        log_level=log_level,
        cache_ttl_seconds=_float(env, "CACHE_TTL_SECONDS", d.cache_ttl_seconds, 0.0, 86_400.0),
        cache_max_entries=_int(env, "CACHE_MAX_ENTRIES", d.cache_max_entries, 0, 10_000_000),
        db_pool_min=pool_min,
        db_pool_max=pool_max,
        db_pool_timeout_seconds=_float(
            env, "DB_POOL_TIMEOUT_SECONDS", d.db_pool_timeout_seconds, 0.1, 120.0
        ),
        db_connect_timeout_seconds=_int(
            env, "DB_CONNECT_TIMEOUT_SECONDS", d.db_connect_timeout_seconds, 1, 120
        ),
        db_reconnect_backoff_seconds=_float(
            env, "DB_RECONNECT_BACKOFF_SECONDS", d.db_reconnect_backoff_seconds, 0.01, 60.0
        ),
        db_statement_timeout_ms=_int(
            env, "DB_STATEMENT_TIMEOUT_MS", d.db_statement_timeout_ms, 100, 600_000
        ),
        ready_timeout_seconds=_float(
            env, "READY_TIMEOUT_SECONDS", d.ready_timeout_seconds, 0.1, 60.0
        ),
        db_check_interval_seconds=_float(
            env, "DB_CHECK_INTERVAL_SECONDS", d.db_check_interval_seconds, 0.05, 300.0
        ),
        db_request_timeout_seconds=_float(
            env, "DB_REQUEST_TIMEOUT_SECONDS", d.db_request_timeout_seconds, 0.05, 120.0
        ),
        db_secret_arn=secret_arn,
        db_secret_file=secret_file,
        db_secret_max_backoff_seconds=_float(
            env, "DB_SECRET_MAX_BACKOFF_SECONDS", d.db_secret_max_backoff_seconds, 0.5, 3600.0
        ),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", d.max_body_bytes, 256, 1_048_576),
        click_flush_seconds=_float(env, "CLICK_FLUSH_SECONDS", d.click_flush_seconds, 0.05, 300.0),
        migrate_on_startup=_bool(env, "MIGRATE_ON_STARTUP", d.migrate_on_startup),
        startup_db_timeout_seconds=_float(
            env, "STARTUP_DB_TIMEOUT_SECONDS", d.startup_db_timeout_seconds, 0.0, 600.0
        ),
        shutdown_drain_seconds=_float(
            env, "SHUTDOWN_DRAIN_SECONDS", d.shutdown_drain_seconds, 0.0, 600.0
        ),
        shutdown_timeout_seconds=_int(
            env, "SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_timeout_seconds, 1, 3_600
        ),
        lb_idle_timeout_seconds=lb_idle,
        keepalive_timeout_seconds=keepalive,
        forwarded_allow_ips=_networks(env, "FORWARDED_ALLOW_IPS"),
        metrics_port=metrics_port,
        docs_enabled=_bool(env, "DOCS_ENABLED", d.docs_enabled),
        canary_link_code=canary_code,
        canary_link_url=canary_url,
        max_link_lifetime_days=_int(
            env, "MAX_LINK_LIFETIME_DAYS", d.max_link_lifetime_days, 1, 36_500
        ),
        public_base_url=public_base_url,
        app_db_user=app_user,
        app_db_password=app_password,
        job_db_user=job_user,
        job_db_password=job_password,
        app_db_secret_arn=app_secret,
        job_db_secret_arn=job_secret,
    )
