"""The app's image for the container tests: app/Dockerfile built on the local Docker engine,
tagged with the digest of what it is built from.

Docker Hub is unreachable here: the image is built FROM the local Debian base that .ci/docker.sh
makes (backbone/python-base:3.11). The tests build it when they first need it (the fixture in
tests/app/test_container.py); `.ci/run` builds it before the tests start, as it builds the base
image, so that a fresh machine's first build (pip inside the build, about 17 s) is set-up time,
not the suite's:

    .venv/bin/python -m tests.app.image     # prints the tag, building it if need be
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.realparts import REPO

BASE_IMAGE = "backbone/python-base:3.11"
IMAGE = "backbone/shortener:test"  # and the digest of its inputs
HOW = "install and start a Docker engine: bash .ci/docker.sh"


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


def build() -> str:
    """The image's tag, built first if no image has it (concurrent callers, xdist workers and
    other runs, wait on one build, under a file lock). Needs the engine and the base image."""
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
            if built.returncode != 0:
                raise RuntimeError(f"docker build failed:\n{built.stdout}\n{built.stderr}")
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


if __name__ == "__main__":
    print(build())
