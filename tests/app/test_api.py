"""The API against a real PostgreSQL: create, redirect, stats, duplicates, 404s, cache, metrics."""

from __future__ import annotations

import json
import re
import time

import psycopg
import pytest

from .conftest import TOKEN

pytestmark = pytest.mark.realpart


def test_create_redirect_and_stats(client) -> None:
    r = client.post("/api/links", json={"url": "https://example.org/a?b=c#d"})
    assert r.status_code == 201, r.text
    body = r.json()
    code = body["code"]
    assert len(code) == 7
    assert body["url"] == "https://example.org/a?b=c#d"
    assert body["short_url"] == f"http://sho.rt/{code}"
    assert r.headers["location"] == body["short_url"]
    assert body["clicks"] == 0

    for _ in range(3):
        r = client.get(f"/{code}", follow_redirects=False)
        assert r.status_code == 307
        assert r.headers["location"] == "https://example.org/a?b=c#d"

    stats = client.get(f"/api/links/{code}").json()
    assert stats["clicks"] == 3  # counted even before the buffered counts are written
    # and written to the database within a flush interval
    deadline = time.monotonic() + 5
    settings = client.app_state.settings
    while time.monotonic() < deadline:
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute("SELECT clicks FROM links WHERE code = %s", (code,)).fetchone()
        if row and row[0] == 3:
            break
        time.sleep(0.1)
    assert row == (3,)
    assert client.get(f"/api/links/{code}").json()["clicks"] == 3


def test_custom_code_and_duplicate(client) -> None:
    r = client.post("/api/links", json={"url": "http://example.com", "code": "my-Link_1"})
    assert r.status_code == 201, r.text
    assert r.json()["code"] == "my-Link_1"
    r = client.post("/api/links", json={"url": "http://other.example", "code": "my-Link_1"})
    assert r.status_code == 409
    assert r.json()["error"]["type"] == "code_taken"
    # the first link is unchanged
    r = client.get("/my-Link_1", follow_redirects=False)
    assert r.headers["location"] == "http://example.com"
    # the same URL twice gives two codes
    a = client.post("/api/links", json={"url": "http://example.com"}).json()["code"]
    b = client.post("/api/links", json={"url": "http://example.com"}).json()["code"]
    assert a != b


def test_unknown_codes_are_404(client) -> None:
    r = client.get("/nosuchcode", follow_redirects=False)
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found"
    assert client.get("/api/links/nosuchcode").status_code == 404
    assert client.get("/a/b/c").status_code == 404


def test_request_id_in_and_out(client) -> None:
    r = client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    # a hostile id is replaced by a fresh one, not echoed
    r = client.get("/healthz", headers={"x-request-id": "x" * 500})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    r = client.get("/nosuchcode", headers={"x-request-id": "req-9"})
    assert r.json()["request_id"] == "req-9"


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


def test_cache_hits_on_the_redirect_path(client) -> None:
    code = client.post("/api/links", json={"url": "https://example.org/x"}).json()["code"]
    cache = client.app_state.cache
    cache.invalidate(code)
    hits, misses = cache.hits, cache.misses
    for _ in range(5):
        assert client.get(f"/{code}", follow_redirects=False).status_code == 307
    assert cache.misses == misses + 1
    assert cache.hits == hits + 4


def test_cache_serves_without_the_database_and_expires(make_settings) -> None:
    """A cached code redirects without a query; after the TTL the database is asked again."""
    from fastapi.testclient import TestClient
    from shortener.app import create_app

    app = create_app(make_settings(CACHE_TTL_SECONDS="0.5"))
    with TestClient(app) as c:
        c.headers["authorization"] = f"Bearer {TOKEN}"
        code = c.post("/api/links", json={"url": "https://example.org/ttl"}).json()["code"]
        with psycopg.connect(app.state.settings.database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE links SET url = %s WHERE code = %s", ("https://changed.example", code)
            )
        # still the cached target
        assert (
            c.get(f"/{code}", follow_redirects=False).headers["location"]
            == "https://example.org/ttl"
        )
        time.sleep(0.6)
        assert (
            c.get(f"/{code}", follow_redirects=False).headers["location"]
            == "https://changed.example"
        )


def test_metrics_exposed(client) -> None:
    code = client.post("/api/links", json={"url": "https://example.org/m"}).json()["code"]
    client.get(f"/{code}", follow_redirects=False)
    client.get(f"/{code}", follow_redirects=False)
    client.get("/readyz")
    # the app's port does not serve them (the load balancer reaches it): METRICS_PORT does, with
    # these bytes (tests/app/test_traffic.py reads them over that port)
    assert client.get("/metrics").status_code == 404
    text = client.app_state.metrics.render().decode()
    assert 'http_requests_total{method="GET",route="/{code}",status="307"} 2.0' in text
    assert 'http_requests_total{method="POST",route="/api/links",status="201"} 1.0' in text
    assert (
        'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/{code}",status="307"}'
        in text
    )
    assert "app_ready 1.0" in text
    assert "app_cache_hits_total 2.0" in text
    for name in (
        "app_cache_misses_total",
        "app_cache_entries",
        "app_db_pool_size",
        "app_db_pool_available",
        "app_db_pool_in_use",
        "app_db_pool_max_size",
        "app_db_pool_requests_waiting",
        "app_links_created_total 1.0",
        "app_redirects_total 2.0",
        "app_db_up 1.0",
        "app_db_check_failures_total 0.0",
        "app_db_schema_version 3.0",
        "app_clicks_pending",
        "app_redirects_stale_total 0.0",
        "app_links_expired_total 0.0",
        "http_requests_in_progress",
        'app_info{version="0.1.0"} 1.0',
    ):
        assert name in text, name
    # unknown paths do not create a label per path
    client.get("/x/y/z")
    assert 'route="<unmatched>"' in client.app_state.metrics.render().decode()


def test_migration_is_idempotent(db_url) -> None:
    import asyncio

    from shortener import config
    from shortener.db import SCHEMA_VERSION, migrate_url

    from .conftest import app_env

    settings = config.load(app_env(db_url))
    assert asyncio.run(migrate_url(settings, 5)) == list(range(1, SCHEMA_VERSION + 1))
    assert asyncio.run(migrate_url(settings, 5)) == []


def test_concurrent_migrations_apply_each_step_once(pg) -> None:
    """Several pods start at once: their init containers migrate concurrently (advisory lock)."""
    import os
    import subprocess
    import sys

    from shortener.db import SCHEMA_VERSION

    from .conftest import APP_DIR, app_env

    db = pg.new_database()
    env = {**os.environ, **app_env(db, LOG_LEVEL="INFO"), "PYTHONPATH": str(APP_DIR)}
    from tests.app_process import Popen

    procs = [
        Popen(
            [sys.executable, "-m", "shortener.migrate"],
            env=env,
            cwd=APP_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], results
    with psycopg.connect(db) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'links'"
        ).fetchone()
    assert tables == (1,)
    applied = [
        json.loads(line).get("applied")
        for out, _ in results
        for line in out.splitlines() + _.splitlines()
        if '"schema migrated"' in line
    ]
    # every step applied by exactly one of the four processes
    steps = sorted(s for a in applied if a for s in a)
    assert steps == list(range(1, SCHEMA_VERSION + 1)), results


def test_links_may_expire_and_then_answer_410(client) -> None:
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat().replace("+00:00", "Z")
    r = client.post("/api/links", json={"url": "https://example.org/brief", "expires_at": soon})
    assert r.status_code == 201, r.text
    link = r.json()
    assert datetime.fromisoformat(link["expires_at"]) == datetime.fromisoformat(soon)
    assert client.get(f"/{link['code']}", follow_redirects=False).status_code == 307
    time.sleep(1.6)
    # from the cache too: the expiry travels with the cached entry
    gone = client.get(f"/{link['code']}", follow_redirects=False)
    assert gone.status_code == 410 and gone.json()["error"]["type"] == "expired"
    client.app_state.cache.invalidate(link["code"])
    assert client.get(f"/{link['code']}", follow_redirects=False).status_code == 410
    # its stats stay readable, with the expiry
    assert client.get(f"/api/links/{link['code']}").json()["expires_at"] == link["expires_at"]
    # a link without expiry never expires
    forever = client.post("/api/links", json={"url": "https://example.org/f"}).json()
    assert forever["expires_at"] is None
    assert "app_links_expired_total 2.0" in client.app_state.metrics.render().decode()


@pytest.mark.parametrize(
    ("expires_at", "words"),
    [
        ("2020-01-01T00:00:00Z", "in the future"),
        ("2999-01-01T00:00:00Z", "at most 3650 days"),
        ("2030-01-01", "time zone"),
        ("next week", "RFC 3339"),
        (1893456000, None),  # a number: strict JSON types
    ],
)
def test_bad_expiry_is_422_naming_the_field(client, expires_at, words) -> None:
    r = client.post("/api/links", json={"url": "https://example.org/x", "expires_at": expires_at})
    assert r.status_code == 422
    detail = r.json()["error"]["details"][0]
    assert detail["field"] == "expires_at"
    if words:
        assert words in detail["problem"]


def test_the_migration_creates_the_canary_link(db_url) -> None:
    import asyncio

    from shortener import config
    from shortener.db import migrate_url

    from .conftest import app_env

    env = app_env(db_url, CANARY_LINK_CODE="canary", CANARY_LINK_URL="https://example.org/c1")
    asyncio.run(migrate_url(config.load(env), 5))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE links SET expires_at = now() - interval '1 day' WHERE code = 'canary'")
    # a rerun (every deploy) resets it: the URL it names, no expiry
    env["CANARY_LINK_URL"] = "https://example.org/c2"
    asyncio.run(migrate_url(config.load(env), 5))
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT url, expires_at FROM links WHERE code = 'canary'").fetchone()
    assert row == ("https://example.org/c2", None)
