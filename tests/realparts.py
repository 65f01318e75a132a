"""Real parts in tests: skip on a developer machine that lacks one, FAIL under CI=true.

DESIGN.md: in CI a missing real part is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import procs

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(what: str, how: str) -> None:
    """Skip (developer machine) or fail (CI) because a real part is missing."""
    msg = f"{what} is not available: {how}"
    if in_ci():
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def require_tool(name: str, how: str) -> str:
    """The path of an executable on PATH (or in the project's .tools/), else skip/fail."""
    for candidate in (REPO / ".tools" / "bin" / name, REPO / ".tools" / "venv" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        missing(name, how)
    assert found is not None
    return found


def shared_fixture(*parts: str) -> Path:
    """A file from ../shared/fixtures (present in CI), else skip/fail."""
    path = SHARED.joinpath("fixtures", *parts)
    if not path.exists():
        missing(str(path), "the shared fixtures folder sits beside the repository in CI")
    return path


def remove_later(path: Path) -> None:
    """Delete a throwaway tree without waiting for it (a test PostgreSQL cluster holds a database
    per test, thousands of files): `rm -rf` in a process of its own, which may outlive the run."""
    subprocess.Popen(
        ["rm", "-rf", "--", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def run_path(kind: str, run: int, name: str) -> Path:
    """A path in the temporary folder that belongs to one test run (`run`: its main process's
    pid, procs.run_owner()): `backbone-<kind>-<run>-<name>`. forget_run_paths removes them all
    when the run ends."""
    return Path(tempfile.gettempdir()) / f"backbone-{kind}-{run}-{name}"


def forget_run_paths(run: int) -> None:
    """Remove the run's run_path files and folders (tests/conftest.py, when the run ends): a
    file at once, a folder without waiting for it."""
    for path in Path(tempfile.gettempdir()).glob(run_path("*", run, "*").name):
        if path.is_dir():
            remove_later(path)
        else:
            path.unlink(missing_ok=True)


def initdb_once(command: str, datadir: Path, make: Callable[[Path], None]) -> None:
    """A new PostgreSQL cluster's files at datadir, as `make(folder)` (the caller's initdb into
    folder) makes them. `make` runs once per run for each `command` (a description of the initdb
    command line and user: the template's key); every other cluster is a copy of that template,
    made with `cp -a`, which keeps the files' owner and modes (0.15-0.3 s of system time for its
    992 files, where initdb takes 0.45 s of CPU). The copies are separate clusters: each is started on its own port."""
    digest = hashlib.sha256(command.encode()).hexdigest()[:16]
    folder = run_path("initdb", procs.run_owner(), digest)
    template, done = folder / "data", folder / "complete"
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be making it at the same moment
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed initdb left
            folder.mkdir()
            owner = datadir.parent.stat()  # initdb runs as the user that owns the cluster's folder
            if os.geteuid() == 0:
                os.chown(folder, owner.st_uid, owner.st_gid)
            make(template)
            done.touch()
    subprocess.run(["cp", "-a", str(template), str(datadir)], check=True, capture_output=True)


_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on loopback nobody listens on now, and not one this process was given before:
    the kernel may hand a port it just freed out again, so two servers a test starts (the app's
    PORT and METRICS_PORT, two replicas side by side) could otherwise be given the same one."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's AWS emulation in server mode (real HTTP on loopback); yields its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        missing("moto[server]", "pip install 'moto[server]'")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def wait_until(
    what: str,
    probe: Callable[[], Any],
    within: float = 30.0,
    *,
    every: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Polls `probe` until it returns something true, and returns it; an exception in
    `tolerate` counts as not yet. Fails naming `what` (and the last answer) after `within` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except tolerate as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s (last: {last!r})")
        time.sleep(every)
