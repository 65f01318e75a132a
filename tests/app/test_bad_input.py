"""Bad input: each a clear 4xx with a JSON error, and the database unharmed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from .conftest import TOKEN, PgCluster, app_env

pytestmark = pytest.mark.realpart

SQL_METACHARACTERS = [
    "'; DROP TABLE links; --",
    "x' OR '1'='1",
    '"; DELETE FROM links WHERE ""="',
    "$$; TRUNCATE links; $$",
    "\\'; SELECT pg_sleep(5); --",
    "%s %(x)s {0} ;",
    "/* */ UNION SELECT * FROM pg_shadow --",
    "\x00",
]


def _error(r, status: int, kind: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"]["message"]
    if kind:
        assert body["error"]["type"] == kind, body
    return body


def _links(client) -> list[tuple[str, str]]:
    with psycopg.connect(client.app_state.settings.database_url) as conn:
        return conn.execute("SELECT code, url FROM links ORDER BY code").fetchall()


@pytest.fixture(scope="module")
def app_client(pg: PgCluster) -> Iterator[Any]:
    """The app in-process on a database of its own, started once for the module: every test here
    checks answers and the stored rows, which `seeded` resets before each test."""
    from fastapi.testclient import TestClient
    from shortener import config
    from shortener.app import create_app

    app = create_app(config.load(app_env(pg.new_database(migrated=True))))
    with TestClient(app, base_url="http://sho.rt") as c:
        c.app_state = app.state  # type: ignore[attr-defined]
        c.first_headers = c.headers.copy()  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def seeded(app_client):
    """The module's app with one link stored, and nothing else: no other row, no cached entry,
    the token in the client's headers."""
    app_client.headers = app_client.first_headers.copy()
    app_client.headers["authorization"] = f"Bearer {TOKEN}"
    with psycopg.connect(app_client.app_state.settings.database_url, autocommit=True) as conn:
        codes = [c for (c,) in conn.execute("DELETE FROM links RETURNING code").fetchall()]
    for code in codes:
        app_client.app_state.cache.invalidate(code)
    r = app_client.post("/api/links", json={"url": "https://example.org/keep", "code": "keep-me"})
    assert r.status_code == 201
    return app_client


def test_malformed_json(seeded) -> None:
    for raw in (b"{", b"{'url': 'x'}", b"not json", b"", b"\xff\xfe", b"[" * 5000):
        r = seeded.post("/api/links", content=raw, headers={"content-type": "application/json"})
        _error(r, 400, "malformed_json")
    assert _links(seeded) == [("keep-me", "https://example.org/keep")]


def test_not_json(seeded) -> None:
    r = seeded.post(
        "/api/links", content=b"url=https://x.org", headers={"content-type": "text/plain"}
    )
    _error(r, 415, "unsupported_media_type")
    r = seeded.post("/api/links", data={"url": "https://x.org"})
    _error(r, 415)


@pytest.mark.parametrize(
    "body",
    [
        [],
        "https://example.org",
        42,
        None,
        {},
        {"url": 42},
        {"url": None},
        {"url": ["https://example.org"]},
        {"url": {"href": "https://example.org"}},
        {"url": True},
        {"url": "https://example.org", "code": 1234},
        {"url": "https://example.org", "code": ["abc"]},
        {"url": "https://example.org", "extra": "field"},
    ],
)
def test_wrong_types(seeded, body) -> None:
    r = seeded.post(
        "/api/links", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    out = _error(r, 422, "invalid_request")
    assert out["error"]["details"], out
    assert _links(seeded) == [("keep-me", "https://example.org/keep")]


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.org",
        "ftp://example.org/file",
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "http://",
        "https:///path-only",
        "http://exa mple.org",
        "http://example.org/\n",
        "http://user:pass@example.org/",
        "http://example.org:99999/",
        "http://example.org:0/",
        "http://[::1/",
        "https://example.org/" + "a" * 2100,
    ],
)
def test_invalid_urls(seeded, url) -> None:
    out = _error(seeded.post("/api/links", json={"url": url}), 422, "invalid_request")
    assert out["error"]["details"][0]["field"] == "url"


@pytest.mark.parametrize(
    "code",
    ["ab", "a" * 33, "has space", "sl/ash", "dot.ted", "ümlaut", "api", "Metrics", "healthz"],
)
def test_invalid_codes(seeded, code) -> None:
    out = _error(seeded.post("/api/links", json={"url": "https://example.org", "code": code}), 422)
    assert out["error"]["details"][0]["field"] == "code"


@pytest.mark.parametrize("code", ["ab", "a" * 33, "dot.ted", "%27%3B--", "x'or'1'='1"])
def test_invalid_codes_on_read(seeded, code) -> None:
    _error(seeded.get(f"/{code}", follow_redirects=False), 400, "invalid_code")
    _error(seeded.get(f"/api/links/{code}"), 400, "invalid_code")


@pytest.mark.parametrize("evil", SQL_METACHARACTERS)
def test_sql_metacharacters_in_every_string_field(seeded, evil) -> None:
    # in the code: rejected by the code rule
    r = seeded.post("/api/links", json={"url": "https://example.org", "code": evil})
    _error(r, 422)
    # in the URL, raw: spaces/control characters are refused; quoted into a valid URL they are
    # stored verbatim, as data
    r = seeded.post("/api/links", json={"url": f"https://example.org/?q={evil}"})
    refused = any(c.isspace() or ord(c) < 32 for c in evil)
    assert r.status_code == (422 if refused else 201), r.text
    if r.status_code == 201:
        code = r.json()["code"]
        got = seeded.get(f"/{code}", follow_redirects=False)
        assert got.headers["location"] == f"https://example.org/?q={evil}"
    from urllib.parse import quote

    quoted = f"https://example.org/{quote(evil, safe='')}"
    r = seeded.post("/api/links", json={"url": quoted})
    assert r.status_code == 201, r.text
    assert seeded.get(f"/api/links/{r.json()['code']}").json()["url"] == quoted
    # in the path of the read endpoints and in a header
    # an invalid code is a 400; a '/' (decoded from %2F) leaves the one-segment route: 404
    expected = 404 if "/" in evil else 400
    assert seeded.get(f"/{quote(evil, safe='')}", follow_redirects=False).status_code == expected
    r = seeded.get("/healthz", headers={"x-request-id": evil.replace("\x00", "")})
    assert r.status_code == 200
    # in the token
    r = seeded.post(
        "/api/links",
        json={"url": "https://example.org"},
        headers={"authorization": f"Bearer {evil.replace(chr(0), '')}"},
    )
    _error(r, 401, "unauthorized")
    # the table and the seeded row are intact
    assert ("keep-me", "https://example.org/keep") in _links(seeded)


def test_oversized_bodies(seeded) -> None:
    limit = seeded.app_state.settings.max_body_bytes
    big = json.dumps({"url": "https://example.org/" + "a" * limit})
    _error(
        seeded.post("/api/links", content=big, headers={"content-type": "application/json"}), 413
    )

    def chunks():  # no Content-Length: chunked transfer
        for _ in range(limit // 1000 + 2):
            yield b"x" * 1000

    r = seeded.post("/api/links", content=chunks(), headers={"content-type": "application/json"})
    _error(r, 413, "body_too_large")
    r = seeded.post(
        "/api/links",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": "abc"},
    )
    assert r.status_code == 400
    assert _links(seeded) == [("keep-me", "https://example.org/keep")]


def test_missing_or_wrong_token(seeded) -> None:
    body = {"url": "https://example.org/t"}
    del seeded.headers["authorization"]
    r = seeded.post("/api/links", json=body)
    _error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    for header in (
        "Bearer wrong-token-0123456789",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer  ",
        "token",
    ):
        _error(seeded.post("/api/links", json=body, headers={"authorization": header}), 401)
    # no feedback on the body without a token
    r = seeded.post("/api/links", content=b"{", headers={"content-type": "application/json"})
    _error(r, 401)
    assert _links(seeded) == [("keep-me", "https://example.org/keep")]


def test_wrong_methods(seeded) -> None:
    _error(seeded.delete("/api/links/keep-me"), 405)
    _error(seeded.put("/api/links", json={"url": "https://example.org"}), 405)


def test_writes_disabled_without_a_token(make_settings) -> None:
    from fastapi.testclient import TestClient
    from shortener.app import create_app

    with TestClient(create_app(make_settings(API_TOKEN=""))) as c:
        r = c.post(
            "/api/links", json={"url": "https://example.org"}, headers={"authorization": "Bearer x"}
        )
        _error(r, 503, "writes_disabled")
