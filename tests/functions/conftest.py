"""Real parts for the Lambda function tests: moto's AWS emulation in server mode, a throwaway
PostgreSQL cluster, and a stdlib HTTP server standing in for the app."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import psycopg
import pytest

from infra import packaging
from tests.realparts import (
    REPO,
    free_port,
    initdb_once,
    moto_server,
    remove_later,
    require_tool,
)

FUNCTIONS = REPO / "app" / "functions"
REGION = "us-east-1"


def load_function(name: str) -> ModuleType:
    """Import app/functions/<name>/<name>.py under a unique module name, as Lambda would load it."""
    path = FUNCTIONS / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fn_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- archives


class Archives:
    """Functions' archives built by the real infra.packaging.build (real pip) once per test run,
    in the run's shared temporary folder: under pytest-xdist the first worker that needs an
    archive builds it under a file lock, the others find it there (the build's own content cache).
    One build directory, so functions with the same pins share one pip install, as in a project's
    .backbone/build."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def build(self, source: Path, *, pip: list[str] | None = None, **how: str) -> Path:
        spec = packaging.describe(source, **how)
        # one lock per dependency tree: archives that share one wait for the first's pip install;
        # the others build side by side
        with self._locked(spec.dependencies_key[:20] if spec.requirements else spec.name):
            return packaging.build(source, build_dir=self.folder, pip=pip, **how)

    def unpacked(self, source: Path, **how: str) -> Path:
        """The archive unpacked as Lambda unpacks it into its task directory (native extensions
        cannot load from inside a zip); made once per run, read-only for the tests."""
        zip_path = self.build(source, **how)
        task = self.folder / f"task-{zip_path.stem}"
        with self._locked(zip_path.stem):
            if not task.is_dir():
                partial = self.folder / f".partial-{zip_path.stem}"
                shutil.rmtree(partial, ignore_errors=True)
                with zipfile.ZipFile(zip_path) as z:
                    z.extractall(partial)
                os.rename(partial, task)
        return task


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Archives:
    base = tmp_path_factory.getbasetemp()
    # xdist: basetemp is per worker (.../popen-gw0); its parent is the run's, shared by all.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return Archives(root / "backbone-archives")


# --------------------------------------------------------------------------- moto (server mode)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """boto3 anywhere in this process talks to moto: fake credentials, AWS_ENDPOINT_URL."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    boto3.DEFAULT_SESSION = None
    # each test starts from an empty emulated account
    import urllib.request

    urllib.request.urlopen(
        urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10
    ).close()
    yield moto_endpoint
    boto3.DEFAULT_SESSION = None


def run_isolated(code: str, task: Path) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter that sees nothing of this environment (-I, no bytecode
    written), with the unpacked archive `task` as sys.argv[1]: what Lambda's runtime imports."""
    return subprocess.run(
        [sys.executable, "-I", "-B", "-c", code, str(task)],
        capture_output=True,
        text=True,
        check=False,
    )


def datapoints(namespace: str, name: str, dimensions: dict[str, str]) -> list[dict[str, Any]]:
    """The datapoints of one metric (exact dimensions) in the emulated CloudWatch, one per minute:
    each has Sum, SampleCount, Minimum, Maximum and the Unit it was published with."""
    import datetime as dt

    import boto3

    cw = boto3.client("cloudwatch", region_name=REGION)
    now = dt.datetime.now(dt.UTC)
    out = cw.get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=10),
        Period=60,
        Statistics=["Sum", "SampleCount", "Minimum", "Maximum"],
    )
    return list(out["Datapoints"])


def metrics_in(namespace: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """(metric name, sorted dimensions) of every metric in a namespace of the emulated CloudWatch."""
    import boto3

    cw = boto3.client("cloudwatch", region_name=REGION)
    found = set()
    for page in cw.get_paginator("list_metrics").paginate(Namespace=namespace):
        for m in page["Metrics"]:
            dims = tuple(sorted((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
            found.add((m["MetricName"], dims))
    return found


class _AppHandler(BaseHTTPRequestHandler):
    """/readyz, /ok (200), /slow (sleeps), /boom (500), /redirect (302 to a third party)."""

    slow_seconds = 3.0
    hits: list[str]

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        if self.path in ("/readyz", "/ok", "/api/links/canary"):
            self._answer(200, b'{"status":"ok"}')
        elif self.path == "/slow":
            time.sleep(self.slow_seconds)
            self._answer(200, b"late")
        elif self.path == "/boom":
            self._answer(500, b"oops")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(404, b"not found")

    def _answer(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the canary gave up (timeout): expected in the slow case

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_server() -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AppHandler)
    server.daemon_threads = True
    server.hits = []  # type: ignore[attr-defined]
    # shutdown() waits for the loop to look: every 0.05 s, not serve_forever's default 0.5 s
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.hits  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    def __init__(
        self, datadir: Path, port: int, pg_ctl: str, log: Path, as_user: list[str]
    ) -> None:
        self.datadir, self.port, self.pg_ctl, self.log = datadir, port, pg_ctl, log
        self.as_user = as_user  # e.g. runuser -u nobody --: the server refuses to run as root
        self.host = "127.0.0.1"
        self.superuser = "postgres"
        self.dbname = "shortener"
        self.user = "janitor"
        self.password = "s3cr3t-Pa55word-never-logged"

    def ctl(self, *args: str) -> None:
        where = ["-D", str(self.datadir), "-l", str(self.log)]
        subprocess.run(
            [*self.as_user, self.pg_ctl, *where, "-w", "-t", "30", *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self.ctl("start", "-o", f"-p {self.port} -k '' -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        self.ctl("stop", "-m", "fast")

    def conninfo(self, *, admin: bool = False) -> str:
        if admin:
            return f"host={self.host} port={self.port} dbname={self.dbname} user={self.superuser}"
        return (
            f"host={self.host} port={self.port} dbname={self.dbname} user={self.user} "
            f"password={self.password}"
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    initdb = require_tool("initdb", "install the PostgreSQL 15 server binaries (initdb, pg_ctl)")
    pg_ctl = require_tool("pg_ctl", "install the PostgreSQL 15 server binaries (initdb, pg_ctl)")
    tmp = Path(tempfile.mkdtemp(prefix="backbone-fn-pg-"))
    datadir = tmp / "data"
    # initdb refuses to run as root; a CI container often is root, so run it as nobody there.
    as_user: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        shutil.chown(tmp, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    # a throwaway cluster: no fsync of its files (--no-sync)
    options = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    initdb_once(
        repr((initdb, as_user, options)),
        datadir,
        lambda folder: subprocess.run(
            [*as_user, initdb, "-D", str(folder), *options], check=True, capture_output=True
        ),
    )
    # password auth over TCP for the job's user; trust for the superuser the tests use to seed
    (datadir / "pg_hba.conf").write_text(
        "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    if as_user:
        shutil.chown(datadir / "pg_hba.conf", "nobody")
    pg = Postgres(datadir, free_port(), pg_ctl, tmp / "pg.log", as_user)
    pg.start()
    try:
        import psycopg

        dsn = f"host=127.0.0.1 port={pg.port} dbname=postgres user=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {pg.user} LOGIN PASSWORD '{pg.password}'")
            conn.execute(f"CREATE DATABASE {pg.dbname} OWNER {pg.user}")
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        remove_later(tmp)  # a database and its files: not waited for


# --------------------------------------------------------------------------- the app's schema


def app_migrations() -> list[str]:
    """The app's real schema, so the job is tested against the table the app actually creates."""
    from app.shortener.db import MIGRATIONS

    return [statement for _, _, statements in MIGRATIONS for statement in statements]


@pytest.fixture
def db(postgres: Postgres) -> Iterator[Postgres]:
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS links, link_stats_daily, schema_migrations CASCADE")
        for statement in app_migrations():
            conn.execute(statement)
    yield postgres


def make_secret(pg: Postgres, **override: Any) -> str:
    value: dict[str, Any] = {
        "engine": "postgres",
        "host": pg.host,
        "port": pg.port,
        "dbname": pg.dbname,
        "username": pg.user,
        "password": pg.password,
    }
    value.update(override)
    value = {k: v for k, v in value.items() if v is not None}
    sm = boto3.client("secretsmanager", region_name=REGION)
    return str(sm.create_secret(Name="backbone/db", SecretString=json.dumps(value))["ARN"])
