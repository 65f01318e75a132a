"""Fixtures for the app tests: a real, throwaway PostgreSQL 15 cluster and the app in front of it.

The cluster lives in a temporary directory on a free loopback port and is stopped at the end. When
the tests run as root (CI containers), the server runs as the `postgres` (or `nobody`) user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realparts import REPO, require_tool

APP_DIR = REPO / "app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

import psycopg  # noqa: E402

with warnings.catch_warnings():
    # Starlette 1.x nudges towards `httpx2` for its TestClient; the httpx one works as documented
    warnings.simplefilter("ignore")
    import fastapi.testclient  # noqa: F401

TOKEN = "test-token-0123456789abcdef"
HOW_PG = "install the PostgreSQL 15 server (Debian: apt-get install postgresql-15) and put its bin on PATH"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A PostgreSQL cluster of our own: initdb, start, stop, and fresh databases."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.initdb = require_tool("initdb", HOW_PG)
        self.pg_ctl = require_tool("pg_ctl", HOW_PG)
        self.root = Path(tempfile.mkdtemp(prefix="shortener-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    pw = pwd.getpwnam(name)
                    os.chown(self.root, pw.pw_uid, pw.pw_gid)
                    self.user = name
                    break
        self._run(
            self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        # a safety net: stop the server even if pytest ends without running fixture teardowns
        atexit.register(self.destroy)
        self.start()

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr}{done.stdout}\n{log}")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=on -c full_page_writes=off -c max_connections=200"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._ids)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        if not self.root.exists():
            return
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.destroy)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One cluster for the whole session (tests that stop the database make their own)."""
    cluster = PgCluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_own() -> Iterator[PgCluster]:
    """A cluster for one test, which may stop and start it."""
    cluster = PgCluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def db_url(pg: PgCluster) -> str:
    """A fresh, empty database for one test."""
    return pg.new_database()


def app_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "API_TOKEN": TOKEN,
        "LOG_LEVEL": "WARNING",
        "READY_TIMEOUT_SECONDS": "1",
        "DB_POOL_TIMEOUT_SECONDS": "2",
        "DB_CONNECT_TIMEOUT_SECONDS": "2",
        "CLICK_FLUSH_SECONDS": "0.2",
        "STARTUP_DB_TIMEOUT_SECONDS": "10",
    }
    env.update(extra)
    return env


@pytest.fixture
def make_settings(db_url: str):  # type: ignore[no-untyped-def]
    from shortener import config

    def make(**extra: str) -> config.Settings:
        return config.load(app_env(db_url, **extra))

    return make


@pytest.fixture
def client(make_settings):  # type: ignore[no-untyped-def]
    """The app in-process (Starlette's TestClient runs the lifespan) on a fresh database."""
    from fastapi.testclient import TestClient
    from shortener.app import create_app

    app = create_app(make_settings())
    with TestClient(app, base_url="http://sho.rt") as c:
        c.headers["authorization"] = f"Bearer {TOKEN}"
        c.app_state = app.state  # type: ignore[attr-defined]
        yield c


class LiveServer:
    """`python -m shortener` in a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], cwd: Path = APP_DIR) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        full["PYTHONPATH"] = str(APP_DIR)
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shortener"],
            cwd=cwd,
            env=full,
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )

    def wait_up(self, timeout: float = 20.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the server did not come up in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        self.out.close()


@pytest.fixture
def live_server_factory() -> Iterator[type[LiveServer]]:
    started: list[LiveServer] = []

    class Tracked(LiveServer):
        def __init__(self, env: dict[str, str]) -> None:
            super().__init__(env)
            started.append(self)

    yield Tracked
    for server in started:
        server.close()
