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
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (2, 1)


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
    ],
)
def test_config_errors_name_the_variable(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(env)
    for word in words:
        assert word in str(err.value)


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
