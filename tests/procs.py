"""Small process helpers shared by the suite's servers (tests/checkov_server.py, app_server.py,
worker_zygote.py) and their clients. Standard library only: the checkov server runs with
checkov's own interpreter, and the servers import this file as `procs` (their folder is first on
sys.path when run as scripts), the tests as `tests.procs`."""

from __future__ import annotations

import os
import socket
import subprocess

RUN_PID = "BACKBONE_TEST_RUN_PID"  # set by tests/conftest.py: the pid of the run's main process


def run_owner() -> int:
    """The test run's main process (the xdist controller), which the run's servers do not
    outlive: tests/conftest.py names it in RUN_PID; without it, this process (or, in a worker of
    plain xdist, its parent)."""
    named = os.environ.get(RUN_PID)
    if named:
        return int(named)
    return os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()


def alive(pid: int) -> bool:
    """pid is running: not gone, and not a zombie its parent has yet to reap (a profiler that
    started the test run keeps it so until the profiler itself ends)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc here: alive as far as signals tell
    return state != b"Z"


def accepts(path: str) -> bool:
    """A Unix socket at path takes connections."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(path)
    except OSError:
        return False
    return True


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """Terminate proc and wait for it; killed if it outlasts `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_line(what: str, children: str) -> str:
    """`what: cpu U s, children cpu C s`: this process's CPU and its reaped children's, which a
    server that is nobody's waited-for child reports for the run's CPU figures."""
    t = os.times()
    return (
        f"{what}: cpu {t.user + t.system:.2f} s, "
        f"{children} cpu {t.children_user + t.children_system:.2f} s"
    )
