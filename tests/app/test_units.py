"""Pure parts, no database: the cache, the configuration, the logs."""

from __future__ import annotations

import io
import json
import logging

import pytest
from shortener import config, logs
from shortener.cache import TTLCache

from .conftest import APP_DIR  # noqa: F401 - puts app/ on sys.path


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_ttl_expiry() -> None:
    clock = FakeClock()
    cache: TTLCache[str] = TTLCache(10, 5.0, clock)
    cache.put("a", "x")
    assert cache.get("a") == "x"
    clock.now += 4.9
    assert cache.get("a") == "x"
    clock.now += 0.2
    assert cache.get("a") is None
    assert (cache.hits, cache.misses) == (2, 1)
    # past its TTL the entry is a miss, but kept for a database outage (bounded by the LRU)
    assert cache.get_stale("a") == "x" and len(cache) == 1
    assert cache.get_stale("never") is None
    assert (cache.hits, cache.misses) == (2, 1)


def test_stale_entries_are_still_evicted_by_the_bound() -> None:
    clock = FakeClock()
    cache: TTLCache[int] = TTLCache(2, 1.0, clock)
    cache.put("old", 1)
    clock.now += 5
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get_stale("old") is None and len(cache) == 2


def test_cache_is_bounded_and_lru() -> None:
    cache: TTLCache[int] = TTLCache(3, 60.0, FakeClock())
    for i in range(3):
        cache.put(str(i), i)
    cache.get("0")  # 0 is now the most recently used
    cache.put("3", 3)
    assert len(cache) == 3
    assert cache.get("1") is None  # the least recently used went
    assert [cache.get(k) for k in ("0", "2", "3")] == [0, 2, 3]
    assert cache.evictions == 1
    for i in range(100):
        cache.put(f"k{i}", i)
    assert len(cache) == 3 and cache.evictions == 101


def test_cache_disabled() -> None:
    cache: TTLCache[int] = TTLCache(0, 60.0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0


def test_config_defaults_run_locally() -> None:
    s = config.load({})
    assert s.database_url == "postgresql://localhost/shortener"
    assert s.port == 8000 and s.api_token == "" and s.log_level == "INFO"
    assert s.cache_ttl_seconds == 60 and s.cache_max_entries == 10_000


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PORT": "eighty"}, ["PORT", "integer"]),
        ({"PORT": "70000"}, ["PORT", "1..65535"]),
        ({"LOG_LEVEL": "loud"}, ["LOG_LEVEL", "DEBUG"]),
        ({"CACHE_TTL_SECONDS": "-1"}, ["CACHE_TTL_SECONDS"]),
        ({"MIGRATE_ON_STARTUP": "maybe"}, ["MIGRATE_ON_STARTUP", "boolean"]),
        ({"API_TOKEN": "short"}, ["API_TOKEN", "16"]),
        ({"DB_POOL_MIN": "5", "DB_POOL_MAX": "2"}, ["DB_POOL_MAX"]),
        ({"PUBLIC_BASE_URL": "sho.rt"}, ["PUBLIC_BASE_URL"]),
        (
            {"LB_IDLE_TIMEOUT_SECONDS": "60", "KEEPALIVE_TIMEOUT_SECONDS": "60"},
            ["KEEPALIVE_TIMEOUT_SECONDS", "LB_IDLE_TIMEOUT_SECONDS", "longer"],
        ),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.0/16,10.0.0.300"}, ["FORWARDED_ALLOW_IPS", "10.0.0.300"]),
        ({"FORWARDED_ALLOW_IPS": "*"}, ["FORWARDED_ALLOW_IPS", "anyone"]),
        ({"METRICS_PORT": "8000"}, ["METRICS_PORT", "own port"]),
        ({"DB_SECRET_ARN": "arn:x", "DB_SECRET_FILE": "/s"}, ["DB_SECRET_ARN", "DB_SECRET_FILE"]),
        ({"CANARY_LINK_CODE": "canary"}, ["CANARY_LINK_URL", "both"]),
        ({"CANARY_LINK_CODE": "api", "CANARY_LINK_URL": "https://a.example/"}, ["reserved"]),
        ({"CANARY_LINK_CODE": "canary", "CANARY_LINK_URL": "ftp://x"}, ["CANARY_LINK_URL"]),
        ({"DOCS_ENABLED": "perhaps"}, ["DOCS_ENABLED", "boolean"]),
        ({"DB_RECONNECT_BACKOFF_SECONDS": "0"}, ["DB_RECONNECT_BACKOFF_SECONDS", "0.01..60"]),
    ],
)
def test_config_errors_name_the_variable(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(env)
    for word in words:
        assert word in str(err.value)


def test_the_pools_reconnection_backoff_is_a_setting_defaulting_to_psycopg_pools() -> None:
    from psycopg_pool.base import AttemptWithBackoff
    from shortener.db import Store

    default = AttemptWithBackoff.INITIAL_DELAY
    assert config.load({}).db_reconnect_backoff_seconds == 1.0 == default
    try:
        Store(config.load({"DB_RECONNECT_BACKOFF_SECONDS": "0.1"}))
        assert AttemptWithBackoff.INITIAL_DELAY == 0.1  # the pool's first wait after a failure
        Store(config.load({}))
        assert default == AttemptWithBackoff.INITIAL_DELAY
    finally:
        AttemptWithBackoff.INITIAL_DELAY = default


def test_keepalive_follows_the_load_balancer_idle_timeout() -> None:
    assert config.load({}).keepalive_timeout_seconds == 65  # the ALB's 60 s default + 5
    s = config.load({"LB_IDLE_TIMEOUT_SECONDS": "350"})
    assert (s.lb_idle_timeout_seconds, s.keepalive_timeout_seconds) == (350, 355)
    assert config.load({"KEEPALIVE_TIMEOUT_SECONDS": "120"}).keepalive_timeout_seconds == 120


def test_forwarded_networks_are_normalised_and_off_by_default() -> None:
    assert config.load({}).forwarded_allow_ips == ()
    s = config.load({"FORWARDED_ALLOW_IPS": " 10.0.0.0/16 , 127.0.0.1,fd00::/8"})
    assert s.forwarded_allow_ips == ("10.0.0.0/16", "127.0.0.1/32", "fd00::/8")


def test_back_door_defaults_are_closed() -> None:
    s = config.load({})
    assert s.metrics_port == 9464 and s.metrics_port != s.port
    assert s.docs_enabled is False


def test_link_expiry_parsing() -> None:
    from datetime import UTC, datetime

    from shortener.validation import parse_expiry

    now = datetime(2030, 1, 1, tzinfo=UTC)
    when, problem = parse_expiry("2030-01-02T00:00:00+02:00", max_days=10, now=now)
    assert problem is None and when == datetime(2030, 1, 1, 22, tzinfo=UTC)
    for text, words in [
        ("2030-01-02", "time zone"),
        ("2030-01-02T00:00:00", "time zone"),
        ("tomorrow", "RFC 3339"),
        ("2030-02-30T00:00:00Z", "not a valid"),
        ("2029-12-31T23:59:59Z", "future"),
        ("2030-01-12T00:00:01Z", "at most 10 days"),
    ]:
        when, problem = parse_expiry(text, max_days=10, now=now)
        assert when is None and problem and words in problem, (text, problem)


def test_bad_database_url_does_not_echo_the_password() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load({"DATABASE_URL": "postgresql://u:s3cret-pw@h:5432/db?sslmode=bogus&x=="})
    assert "s3cret-pw" not in str(err.value)


def test_settings_never_show_secrets() -> None:
    s = config.load(
        {
            "DATABASE_URL": "postgresql://app:hunter2-pw@db.internal:6543/links",
            "API_TOKEN": "t" * 20,
        }
    )
    assert s.redacted_database_url() == "postgresql://db.internal:6543/links"
    assert "hunter2" not in repr(s)
    assert "t" * 20 not in repr(s)
    assert set(s.secrets()) == {"t" * 20, "hunter2-pw"}


def test_json_logs_carry_the_request_id_and_redact_secrets() -> None:
    stream = io.StringIO()
    logs.setup("INFO", ["hunter2-pw", "tok-0123456789abcdef"], stream)
    token = logs.request_id_var.set("rid-1")
    try:
        log = logging.getLogger("shortener.test")
        log.info("connecting with %s", "hunter2-pw", extra={"dsn": "postgresql://a:hunter2-pw@h/d"})
        try:
            raise RuntimeError("bad token tok-0123456789abcdef")
        except RuntimeError:
            log.exception("failed")
    finally:
        logs.request_id_var.reset(token)
        logging.getLogger().handlers[:] = []
    out = stream.getvalue()
    assert "hunter2-pw" not in out and "tok-0123456789abcdef" not in out
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["request_id"] == "rid-1" and first["msg"] == "connecting with ***"
    assert first["dsn"] == "postgresql://a:***@h/d"
    assert first["level"] == "info" and "ts" in first
    assert "RuntimeError" in second["exc"] and "***" in second["exc"]
