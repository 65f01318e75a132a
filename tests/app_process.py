"""`python -m shortener` and `python -m shortener.migrate` for the tests, forked from a process
that has the app's libraries imported already (tests/app_server.py) instead of a new interpreter.

`Popen` is subprocess.Popen (the same arguments, pipes, communicate, wait(timeout) raising
TimeoutExpired, poll, send_signal, terminate, kill, returncode, context manager) and `run` is
subprocess.run over it. A command `[sys.executable, "-m", MODULE, *args]` with nothing Popen could
only do by exec'ing (preexec_fn, pass_fds, shell, another user, a new session...) is started by
the run's app server: the child is a real OS process (its own pid, real signals, a real exit
status) on the call's stdin, stdout and stderr (the file descriptors themselves are passed),
with the call's environment and working directory, and what the interpreter sets up (sys.path,
sys.argv, stdio, signal dispositions, a fresh `__main__`, the app's modules imported fresh)
as a new interpreter would: tests/app_server.py says how, tests/test_app_server.py checks it.
Anything else, or BACKBONE_APP_FORK=0 in the environment, is a plain new process.

One server per test run and per environment the preloaded libraries could have read while
importing (PYTHON* but PYTHONPATH/PYTHONSAFEPATH, the locale's LANG/LC_*, PSYCOPG*,
PROMETHEUS_*), shared by the run's xdist workers: started under a file lock, found by its Unix
socket, gone when the run's main process is (it then prints the CPU its children used to its log,
/tmp/backbone-app/<owner>-<key>.log: no test process waits for those children, so /usr/bin/time
does not count them).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from tests import procs
except ImportError:  # run as a script: this file's folder is first on sys.path
    import procs  # type: ignore[no-redef]

SERVER = Path(__file__).resolve().parent / "app_server.py"
FOLDER = Path("/tmp/backbone-app")
KEYED_PREFIXES = ("PYTHON", "LC_", "PSYCOPG", "PROMETHEUS_")
KEYED_NAMES = ("LANG", "LANGUAGE")
PER_REQUEST = ("PYTHONPATH", "PYTHONSAFEPATH")  # the child's sys.path, made for each request
_SERVERS: list[subprocess.Popen[bytes]] = []


def keyed(env: Mapping[str, str]) -> dict[str, str]:
    """What of env the server's interpreter and imports could have read while starting."""
    return {
        k: v
        for k, v in env.items()
        if (k.startswith(KEYED_PREFIXES) or k in KEYED_NAMES) and k not in PER_REQUEST
    }


def _ignored() -> list[int]:
    """The signals this process ignores: a process it execs would start with them ignored."""
    found = []
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            if signal.getsignal(sig) == signal.SIG_IGN:
                found.append(int(sig))
    return found


def server(env: Mapping[str, str]) -> tuple[str, Path]:
    """(the socket, the log) of the run's app server for env, started if need be."""
    key = keyed(env)
    digest = hashlib.sha256(
        json.dumps([sys.executable, str(SERVER), sorted(key.items())]).encode()
    ).hexdigest()[:12]
    FOLDER.mkdir(exist_ok=True)
    stem = FOLDER / f"{procs.run_owner()}-{digest}"
    path, log = f"{stem}.sock", Path(f"{stem}.log")
    with open(f"{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if procs.accepts(path):
            return path, log
        server_env = {k: v for k, v in os.environ.items() if k not in keyed(os.environ)}
        server_env.pop("PYTHONPATH", None)
        server_env.pop("PYTHONSAFEPATH", None)
        server_env.update(key)
        with open(log, "ab") as out:
            started = subprocess.Popen(
                [sys.executable, str(SERVER), path, str(procs.run_owner())],
                env=server_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        while not procs.accepts(path):
            if started.poll() is not None:
                raise OSError(f"the app server exited {started.returncode}: see {log}")
            time.sleep(0.02)
        _SERVERS.append(started)  # it outlives this process's use of it: kept, not collected
        return path, log


def _valid(fd: int, opened: list[int]) -> int:
    try:
        os.fstat(fd)
    except OSError:  # a closed stdio of ours: the child gets devnull
        opened.append(os.open(os.devnull, os.O_RDWR))
        return opened[-1]
    return fd


class Popen(subprocess.Popen[Any]):
    """subprocess.Popen, whose `python -m MODULE` children the run's app server forks."""

    _conn: socket.socket | None = None
    _forked = False
    _pending = b""

    def _execute_child(
        self,
        args: Any,
        executable: Any,
        preexec_fn: Any,
        close_fds: bool,
        pass_fds: Any,
        cwd: Any,
        env: Any,
        startupinfo: Any,
        creationflags: int,
        shell: bool,
        p2cread: int,
        p2cwrite: int,
        c2pread: int,
        c2pwrite: int,
        errread: int,
        errwrite: int,
        restore_signals: bool,
        gid: Any,
        gids: Any,
        uid: Any,
        umask: int,
        start_new_session: bool,
        process_group: int,
    ) -> None:
        argv = [os.fsdecode(a) for a in args] if isinstance(args, list | tuple) else []
        forkable = (
            len(argv) >= 3
            and argv[0] == sys.executable
            and argv[1] == "-m"
            and executable is None
            and preexec_fn is None
            and not pass_fds
            and not shell
            and close_fds
            and restore_signals
            and gid is None
            and gids is None
            and uid is None
            and umask < 0
            and not start_new_session
            and process_group == -1
            and os.environ.get("BACKBONE_APP_FORK", "1") != "0"
        )
        if not forkable:
            super()._execute_child(  # type: ignore[misc]
                args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                restore_signals, gid, gids, uid, umask, start_new_session, process_group,
            )  # fmt: skip
            return
        full_env = {
            os.fsdecode(k): os.fsdecode(v) for k, v in (os.environ if env is None else env).items()
        }
        where = os.path.abspath(os.fsdecode(cwd)) if cwd is not None else os.getcwd()
        stdio = [p2cread, c2pwrite, errwrite]
        opened: list[int] = []
        fds = [_valid(i if fd == -1 else fd, opened) for i, fd in enumerate(stdio)]
        path, _log = server(full_env)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            request = {"argv": argv, "env": full_env, "cwd": where, "ignored": _ignored()}
            payload = json.dumps(request).encode()
            data = struct.pack("!I", len(payload)) + payload
            sent = socket.send_fds(conn, [data], fds)
            conn.sendall(data[sent:])
            for fd in opened:
                os.close(fd)
            self._close_pipe_fds(  # type: ignore[attr-defined]
                p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite
            )
            self._conn = conn
            self._forked = True
            first = self._message(None)
        except BaseException:
            conn.close()
            self._conn = None
            raise
        if first is None or "pid" not in first:
            conn.close()
            raise OSError(f"the app server at {path} did not start {argv[1:]}: {first}")
        self.pid = int(first["pid"])
        self._child_created = True

    def _message(self, timeout: float | None) -> dict[str, Any] | None:
        """The server's next message; None if none came within timeout (or the server closed)."""
        assert self._conn is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._conn], [], [], left)
            if not ready:
                return None
            chunk = self._conn.recv(1 << 12)
            if not chunk:
                raise OSError("the app server closed the connection without the exit status")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return dict(json.loads(line))

    def _receive(self, timeout: float | None) -> bool:
        """Wait up to timeout for the exit status; True once returncode is set."""
        if self.returncode is not None:
            return True
        message = self._message(timeout)
        if message is None:
            return False
        self.returncode = int(message["returncode"])
        if self._conn is not None:
            self._conn.close()  # the server reaps the child now: its pid is no longer ours
            self._conn = None
        return True

    def _internal_poll(self, _deadstate: int | None = None, **_: Any) -> int | None:
        if not self._forked:
            return super()._internal_poll(_deadstate)  # type: ignore[misc]
        if self.returncode is None and self._waitpid_lock.acquire(False):  # type: ignore[attr-defined]
            try:
                self._receive(0)
            except OSError:
                if _deadstate is None:
                    raise
                self.returncode = _deadstate
            finally:
                self._waitpid_lock.release()  # type: ignore[attr-defined]
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        if not self._forked:
            return super()._wait(timeout)  # type: ignore[misc]
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        locked = self._waitpid_lock.acquire(timeout=-1 if timeout is None else timeout)  # type: ignore[attr-defined]
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not locked or not self._receive(left):
                raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
        finally:
            if locked:
                self._waitpid_lock.release()  # type: ignore[attr-defined]
        assert self.returncode is not None
        return self.returncode


def run(
    args: list[str],
    *,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run, with this module's Popen."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with Popen(args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException:
            process.kill()
            with contextlib.suppress(Exception):
                process.wait()
            raise
        code = process.poll()
    if check and code:
        raise subprocess.CalledProcessError(code, args, output=stdout, stderr=stderr)
    assert code is not None  # communicate() waited for it
    return subprocess.CompletedProcess(args, code, stdout, stderr)
