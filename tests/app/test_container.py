"""The image from app/Dockerfile on a real Docker engine, against the test PostgreSQL.

Docker Hub is unreachable here: the image is built FROM the local Debian base that .ci/docker.sh
makes (backbone/python-base:3.11). The container uses the host's network, so it reaches the test
cluster on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.app.image import BASE_IMAGE, HOW, build, docker
from tests.realparts import REPO, in_ci, missing, require_tool

from .conftest import TOKEN, PgCluster, RdsDatabase, free_port

pytestmark = [pytest.mark.realpart, pytest.mark.slow]

# where DATABASE_URL's sslrootcert points (/work/notes/app-interface.md, app/Dockerfile)
BUNDLE_IN_IMAGE = "/opt/app/certs/rds-global-bundle.pem"


@pytest.fixture(scope="module")
def image() -> str:
    """The app's image (tests/app/image.py): built once for its inputs, and never an image
    another checkout's app/ tagged."""
    require_tool("docker", HOW)
    if docker("info", check=False).returncode != 0:
        missing("a running Docker engine", HOW)
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        if not in_ci():
            missing(f"the base image {BASE_IMAGE}", HOW)
        subprocess.run(["bash", str(REPO / ".ci" / "docker.sh")], check=True, timeout=900)
    return build()


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
