"""Fixtures for the app tests: a real, throwaway PostgreSQL 15 cluster and the app in front of it.

The cluster lives in a temporary directory on a free loopback port and is stopped at the end. When
the tests run as root (CI containers), the server runs as the `postgres` (or `nobody`) user, since
PostgreSQL refuses to run as root.

`PgCluster(tls=True)` is set up like RDS: TLS only, with a certificate for `localhost` from a
throwaway CA made here (and a second CA that signed nothing, to be refused), SCRAM passwords for
every role but the superuser, and `RdsDatabase` gives a database owned by a non-superuser master
role with CREATEROLE, as RDS's master user is.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import os
import pickle
import pwd
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import app_process, procs
from tests.app.tls import make_ca, make_server_cert
from tests.realparts import REPO, free_port, initdb_once, remove_later, require_tool

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


class PgCluster:
    """A PostgreSQL cluster of our own: initdb, start, stop, and fresh databases."""

    _ids = itertools.count(1)

    def __init__(self, *, tls: bool = False) -> None:
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
        options = ("-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C")
        initdb_once(
            repr((self.initdb, self.user, options)),
            self.data,
            lambda folder: self._run(self.initdb, "-D", str(folder), *options),
        )
        self.tls = tls
        if tls:
            self._setup_tls()
        # a safety net: stop the server even if pytest ends without running fixture teardowns
        atexit.register(self.destroy)
        self.start()

    def _setup_tls(self) -> None:
        ca_cert, ca_key = make_ca("backbone test CA")
        wrong_cert, _ = make_ca("a CA that signed nothing here")
        self.ca_file = self.root / "ca.pem"
        self.wrong_ca_file = self.root / "wrong-ca.pem"
        self.ca_file.write_bytes(ca_cert)
        self.wrong_ca_file.write_bytes(wrong_cert)
        cert, key = make_server_cert(ca_cert, ca_key, "localhost")
        (self.data / "server.crt").write_bytes(cert)
        (self.data / "server.key").write_bytes(key)
        (self.data / "server.key").chmod(0o600)
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all postgres 127.0.0.1/32 trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "host all all 0.0.0.0/0 reject\n"
        )
        if self.user:
            pw = pwd.getpwnam(self.user)
            for path in self.data.iterdir():
                if path.name in {"server.crt", "server.key", "pg_hba.conf"}:
                    os.chown(path, pw.pw_uid, pw.pw_gid)

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
        if self.tls:
            opts += " -c ssl=on -c password_encryption=scram-sha-256"
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, *, migrated: bool = False) -> str:
        """A fresh database: empty, or (`migrated`) a copy of one the app's migrations made (the
        schema at SCHEMA_VERSION, no rows), for tests that are not about the migration."""
        name = f"t{os.getpid()}_{next(self._ids)}"
        template = f' TEMPLATE "{self._migrated_template()}"' if migrated else ""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            # FILE_COPY: the template's files copied, not written through the WAL (3x quicker)
            conn.execute(f'CREATE DATABASE "{name}"{template} STRATEGY FILE_COPY')
        return self.url(name)

    def _migrated_template(self) -> str:
        """A database migrated once per cluster by the app's own migration, then only copied."""
        if getattr(self, "_template", None) is None:
            import asyncio

            from shortener import config, db

            url = self.new_database()
            asyncio.run(db.migrate_url(config.load(app_env(url)), 10))
            self._template = url.rsplit("/", 1)[1]
        return str(self._template)

    def destroy(self) -> None:
        if not self.root.exists():
            return
        with contextlib.suppress(Exception):
            self.stop("immediate")
        remove_later(self.root)  # a database per test: thousands of files, not waited for
        atexit.unregister(self.destroy)


class RdsDatabase:
    """A fresh database in a TLS cluster, owned by a master role that is no superuser but may
    create roles (RDS's master user), and URLs that verify the server (verify-full)."""

    MASTER = "master_user"
    MASTER_PASSWORD = "Master-pass-0123456789"

    def __init__(self, cluster: PgCluster) -> None:
        assert cluster.tls
        self.cluster = cluster
        self.name = f"rds{os.getpid()}_{next(PgCluster._ids)}"
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.MASTER,))
            if exists.fetchone() is None:
                # another worker of the run may be making it at the same moment
                with contextlib.suppress(
                    psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation
                ):
                    conn.execute(
                        f"CREATE ROLE {self.MASTER} LOGIN CREATEROLE "
                        f"PASSWORD '{self.MASTER_PASSWORD}'"
                    )
            conn.execute(f'CREATE DATABASE "{self.name}" OWNER {self.MASTER} STRATEGY FILE_COPY')

    def url(
        self, user: str, password: str, *, host: str = "localhost", ca: Path | None = None
    ) -> str:
        from urllib.parse import quote

        root = ca or self.cluster.ca_file
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:"
            f"{self.cluster.port}/{self.name}?sslmode=verify-full&sslrootcert={root}"
        )

    def master_url(self, **kw: Any) -> str:
        return self.url(self.MASTER, self.MASTER_PASSWORD, **kw)

    def admin(self) -> psycopg.Connection[Any]:
        """The superuser, for checks behind the roles' backs."""
        return psycopg.connect(self.cluster.url(self.name), autocommit=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def shared_cluster(factory: pytest.TempPathFactory, kind: str, *, tls: bool) -> Iterator[PgCluster]:
    """One cluster of a kind for the whole test run. Under pytest-xdist every worker is a
    process of its own: the first that needs it makes it and leaves its description (pickled) in
    the run's shared temporary folder with a count of the workers using it; the last to finish
    stops it. (Databases and roles are named by the worker's pid: no worker sees another's.)"""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        cluster = PgCluster(tls=tls)
        yield cluster
        cluster.destroy()
        return
    folder = factory.getbasetemp().parent / f"backbone-pg-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    record, users = folder / "cluster.pickle", folder / "users"

    def leave() -> None:
        with _locked(folder / "lock"):
            left = int(users.read_text() or 0) - 1 if users.exists() else 0
            users.write_text(str(max(left, 0)))
            if left <= 0 and record.exists():
                pickle.loads(record.read_bytes()).destroy()
                record.unlink()

    with _locked(folder / "lock"):
        if record.exists():
            cluster: PgCluster = pickle.loads(record.read_bytes())
        else:
            cluster = PgCluster(tls=tls)
            atexit.unregister(cluster.destroy)  # the last worker's leave() stops it
            record.write_bytes(pickle.dumps(cluster))
        users.write_text(str(int(users.read_text() or 0) + 1 if users.exists() else 1))
    atexit.register(leave)  # a worker that ends without teardowns still leaves
    try:
        yield cluster
    finally:
        atexit.unregister(leave)
        leave()


@pytest.fixture(scope="session")
def pg_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    yield from shared_cluster(tmp_path_factory, "tls", tls=True)


@pytest.fixture
def rds(pg_tls: PgCluster) -> RdsDatabase:
    return RdsDatabase(pg_tls)


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """One cluster for the whole test run (tests that stop the database make their own)."""
    yield from shared_cluster(tmp_path_factory, "plain", tls=False)


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
        "DB_CHECK_INTERVAL_SECONDS": "0.25",
    }
    env.update(extra)
    return env


@pytest.fixture
def migrated_url(pg: PgCluster) -> str:
    """A fresh database for one test, already at the schema the app's migrations make (the app's
    startup migration then finds nothing to do: it still runs)."""
    return pg.new_database(migrated=True)


@pytest.fixture
def make_settings(migrated_url: str):  # type: ignore[no-untyped-def]
    from shortener import config

    def make(**extra: str) -> config.Settings:
        return config.load(app_env(migrated_url, **extra))

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
    """`python -m shortener` as a process of its own on a free loopback port (forked by the run's
    app server, tests/app_process.py: a real process, signals and exit status, started without
    a new interpreter's imports)."""

    def __init__(self, env: dict[str, str], cwd: Path = APP_DIR) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # the Prometheus listener: a port of its own (METRICS_PORT), free for each server
        self.metrics_port = int(env.get("METRICS_PORT") or free_port())
        self.metrics = f"http://127.0.0.1:{self.metrics_port}/metrics"
        full = {
            **os.environ,
            **env,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "METRICS_PORT": str(self.metrics_port),
        }
        full["PYTHONPATH"] = str(APP_DIR)
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen[bytes] = app_process.Popen(
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
        procs.stop(self.proc)

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


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's AWS emulation in server mode (HTTP on loopback), for Secrets Manager."""
    from tests.realparts import moto_server

    with moto_server() as endpoint:
        yield endpoint


def aws_env(endpoint: str) -> dict[str, str]:
    """What a process needs to talk to moto: its endpoint and fake credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
