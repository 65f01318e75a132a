"""The image from app/Dockerfile on a real Docker engine, against the test PostgreSQL.

Docker Hub is unreachable here: the image is built FROM the local Debian base that .ci/docker.sh
makes (backbone/python-base:3.11). The container uses the host's network, so it reaches the test
cluster on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.realparts import REPO, in_ci, missing, require_tool

from .conftest import TOKEN, PgCluster, RdsDatabase, free_port

pytestmark = [pytest.mark.realpart, pytest.mark.slow]

BASE_IMAGE = "backbone/python-base:3.11"
IMAGE = "backbone/shortener:test"  # and the digest of its inputs
HOW = "install and start a Docker engine: bash .ci/docker.sh"
# where DATABASE_URL's sslrootcert points (/work/notes/app-interface.md, app/Dockerfile)
BUNDLE_IN_IMAGE = "/opt/app/certs/rds-global-bundle.pem"


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def _inputs_digest(base_image_id: str) -> str:
    """What the build reads: every file under app/ (more than the context .dockerignore lets
    through, so never less) and the base image."""
    digest = hashlib.sha256(base_image_id.encode() + b"\0")
    app = REPO / "app"
    for path in sorted(app.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(app).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def image() -> str:
    """The image, tagged with the digest of what it is built from: built once for those inputs
    (the test modules of xdist workers and concurrent runs wait on one build, under a file
    lock), and never an image another checkout's app/ tagged."""
    require_tool("docker", HOW)
    if docker("info", check=False).returncode != 0:
        missing("a running Docker engine", HOW)
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        if not in_ci():
            missing(f"the base image {BASE_IMAGE}", HOW)
        subprocess.run(["bash", str(REPO / ".ci" / "docker.sh")], check=True, timeout=900)
    base_id = docker("image", "inspect", "-f", "{{.Id}}", BASE_IMAGE).stdout.strip()
    tag = f"{IMAGE}-{_inputs_digest(base_id)}"
    lock_path = Path(tempfile.gettempdir()) / f"backbone-image-{tag.rsplit('-', 1)[1]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.utime(lock_path)  # this tag's last use: what _remove_stale_images reads
        if docker("image", "inspect", tag, check=False).returncode != 0:
            built = docker(
                "build", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", tag, str(REPO / "app"),
                timeout=900, check=False,
            )  # fmt: skip
            assert built.returncode == 0, f"docker build failed:\n{built.stdout}\n{built.stderr}"
    _remove_stale_images(tag)
    return tag


STALE_AFTER_SECONDS = 3600


def _remove_stale_images(current: str) -> None:
    """Every edit of app/ makes a new `backbone/shortener:test-<digest>` image: remove the tags no
    test run has used for an hour (the lock file of a tag is touched at each use; a tag without
    one is judged by its image's age), never the current one. An image a container still uses
    (another run's) is refused by `docker rmi` without --force, and kept."""
    listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", IMAGE.split(":")[0])
    now = time.time()
    for ref in listed.stdout.split():
        tag = ref.split(":", 1)[1]
        if ref == current or not (tag == "test" or tag.startswith("test-")):
            continue
        lock = Path(tempfile.gettempdir()) / f"backbone-image-{tag.removeprefix('test-')}.lock"
        if lock.exists():
            last_used = lock.stat().st_mtime
        else:
            created = docker("image", "inspect", "-f", "{{.Created}}", ref, check=False)
            seconds = created.stdout.strip().removesuffix("Z").split(".")[0]  # RFC 3339, UTC
            try:
                last_used = datetime.fromisoformat(seconds).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
        if now - last_used > STALE_AFTER_SECONDS:
            docker("rmi", ref, check=False)
            lock.unlink(missing_ok=True)


@pytest.fixture
def container(image: str, pg: PgCluster) -> Iterator[tuple[str, str, str]]:
    db = pg.new_database()
    port, metrics_port = free_port(), free_port()
    name = f"shortener-test-{uuid.uuid4().hex[:8]}"
    docker(
        # as Kubernetes runs it (infra/components/workload.py): read-only root, no capabilities
        "run", "-d", "--name", name, "--network", "host", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "-e", f"DATABASE_URL={db}", "-e", f"API_TOKEN={TOKEN}", "-e", f"PORT={port}",
        "-e", "SHUTDOWN_TIMEOUT_SECONDS=5", "-e", f"METRICS_PORT={metrics_port}", image,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                logs = docker("logs", name, check=False)
                raise AssertionError(f"the container did not come up:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.2)
        yield name, base, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        docker("rm", "-f", name, check=False)


def test_container_serves_against_postgres(container: tuple[str, str, str]) -> None:
    name, base, metrics = container
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").status_code == 200
    r = httpx.post(
        f"{base}/api/links",
        json={"url": "https://example.org/from-a-container", "code": "in-docker"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 201, r.text
    r = httpx.get(f"{base}/in-docker")
    assert r.status_code == 307
    assert r.headers["location"] == "https://example.org/from-a-container"
    assert httpx.get(f"{base}/api/links/in-docker").json()["url"].endswith("from-a-container")
    # metrics on their own port only
    assert httpx.get(f"{base}/metrics").status_code == 404
    assert "http_requests_total" in httpx.get(metrics).text

    # not root, by the user the image declares
    uid = docker("exec", name, "id", "-u").stdout.strip()
    assert uid == "10001"
    assert docker("inspect", "-f", "{{.Config.User}}", name).stdout.strip() == "10001:10001"
    # the HEALTHCHECK command works (no curl in the image)
    assert (
        docker("exec", name, "python", "-m", "shortener.healthcheck", check=False).returncode == 0
    )
    # nothing of the build stage: no /build, no compiler
    probe = "test ! -e /build && ! command -v gcc && ! command -v curl"
    assert docker("exec", name, "sh", "-c", probe, check=False).returncode == 0
    # JSON logs, no token
    logs = docker("logs", name).stdout
    assert '"msg": "request"' in logs and TOKEN not in logs

    # SIGTERM (docker stop) ends it cleanly, as PID 1: had it not, Docker would have killed it
    # (SIGKILL, exit status 137) once the 10 s were up
    docker("stop", "-t", "10", name)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"


def test_migrate_entry_point_in_the_image(image: str, pg: PgCluster) -> None:
    db = pg.new_database()
    for _ in range(2):  # idempotent
        done = docker(
            "run", "--rm", "--network", "host", "-e", f"DATABASE_URL={db}", image,
            "python", "-m", "shortener.migrate",
        )  # fmt: skip
        assert done.returncode == 0
        assert '"msg": "schema migrated"' in done.stdout


def test_the_rds_bundle_is_in_the_image_at_its_path(image: str) -> None:
    import hashlib

    probe = (
        "import hashlib, os, sys; p = sys.argv[1]; "
        "print(hashlib.sha256(open(p, 'rb').read()).hexdigest(), oct(os.stat(p).st_mode & 0o777))"
    )
    done = docker("run", "--rm", image, "python", "-c", probe, BUNDLE_IN_IMAGE)
    digest, mode = done.stdout.split()
    assert (
        digest
        == hashlib.sha256((REPO / "app/certs/rds-global-bundle.pem").read_bytes()).hexdigest()
    )
    assert mode == "0o644"  # readable by the app's user, not writable by it


def test_the_image_verifies_the_server_with_verify_full(image: str, pg_tls: PgCluster) -> None:
    """libpq in the image reads the bundle at its path: an RDS CA did not sign the test server,
    so verify-full refuses it (the file exists: the error is the verification, not a missing file);
    with the test's CA mounted, the same URL shape connects and migrates."""
    rds = RdsDatabase(pg_tls)
    url = rds.master_url().replace(str(pg_tls.ca_file), BUNDLE_IN_IMAGE)
    refused = docker(
        "run", "--rm", "--network", "host", "-e", f"DATABASE_URL={url}",
        "-e", "STARTUP_DB_TIMEOUT_SECONDS=0.5", image, "python", "-m", "shortener.migrate",
        check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "certificate verify failed" in refused.stdout
    ok = docker(
        "run", "--rm", "--network", "host", "-v", f"{pg_tls.ca_file}:/tmp/test-ca.pem:ro",
        "-e", f"DATABASE_URL={url.replace(BUNDLE_IN_IMAGE, '/tmp/test-ca.pem')}",
        image, "python", "-m", "shortener.migrate",
        check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"msg": "schema migrated"' in ok.stdout
