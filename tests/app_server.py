"""The sample app's third-party libraries, imported once and forked per process: a test run's
`python -m shortener` and `python -m shortener.migrate` processes share one start.

Run by tests/app_process.py with the tests' interpreter (the project venv's):

    PYTHON tests/app_server.py SOCKET OWNER_PID

It imports what the app's processes import from outside the app (PRELOAD: fastapi, starlette,
pydantic, psycopg, uvicorn and what uvicorn loads when it runs, prometheus_client, asyncio...:
about 1.5 s of CPU, nearly all of a process's start), never the app's own `shortener` modules, so
each process imports those fresh and reads its configuration as a new process does. It then
listens on the Unix socket SOCKET. Each connection is one process: a request (a 4-byte length,
then JSON {"argv", "env", "cwd"}) whose first bytes carry the process's stdin, stdout and stderr as
file descriptors (SCM_RIGHTS). The server forks a child that becomes what
`argv` (`[sys.executable, "-m", MODULE, *args]`) would start in `cwd` with exactly `env`:

- file descriptors 0, 1 and 2 are the ones sent, and no other is open (the server's are closed);
- os.environ is `env` (and the C environment; TZ re-read), the working directory is `cwd`;
- sys.path is what `python -m` makes: the working directory first (not with PYTHONSAFEPATH),
  then PYTHONPATH's entries made absolute, then the interpreter's own; sys.argv is
  ["-m", *args] until runpy puts the module's file first, sys.orig_argv is `argv`;
- sys.stdin/stdout/stderr are made as the interpreter makes them on those descriptors (line
  buffering on a terminal and for stderr, write-through when unbuffered, the same encodings);
- every signal handler is back at its default (SIGINT raising KeyboardInterrupt, SIGPIPE and
  SIGXFSZ ignored, as Python starts), the signal mask empty;
- a fresh, empty `__main__` module, in which runpy._run_module_as_main runs MODULE (what `-m`
  itself calls);
- and it leaves as the interpreter does: SystemExit's code (None 0, an int itself, anything else
  printed to stderr and 1), an uncaught exception's traceback on stderr and 1 (KeyboardInterrupt:
  death by SIGINT), then non-daemon threads joined, atexit handlers run, stdout and stderr
  flushed (120 if stdout cannot be), os._exit. A signal that kills the process (uvicorn re-raises
  the SIGTERM it caught) kills this child the same way.

The server answers on the request's connection at once with {"pid": N} (the real pid: the caller
signals it directly), and when the child ends with {"returncode": R} (as Popen's: -N for death by
signal N). It sees the end with waitid(WNOWAIT) and reaps the child only once the caller has
closed the connection, so the pid names the dead child (a zombie), never another process, as long
as the caller may still signal it. The server is single-threaded (fork is safe) and leaves when
OWNER_PID (the test run's main process) is gone, or after IDLE seconds without a request or a
child; it then prints the CPU its children used, which no test process counts.

Where the caller's environment could change what the preloaded libraries did while importing
(PYTHON* variables, the locale's, psycopg's and prometheus_client's switches), it keeps a server
per such environment (tests/app_process.py keys it); this file uses the standard library only,
before PRELOAD.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import types
from typing import Any

try:
    from tests import procs
except ImportError:  # run as a script: this file's folder is first on sys.path
    import procs  # type: ignore[no-redef]

IDLE = 900.0  # seconds without a request or a running child before the server leaves

# What `python -m shortener` imports from outside the app, measured on a running server (the
# migration's set is a subset); tests/test_app_server.py checks that nothing here is anything a
# fresh `python -m shortener` would not have imported by the time it serves.
PRELOAD = (
    "asyncio",
    "fastapi",
    "fastapi.exceptions",
    "fastapi.responses",
    "hmac",
    "ipaddress",
    "json",
    "logging",
    "prometheus_client",
    "prometheus_client.core",
    "prometheus_client.registry",
    "psycopg",
    "psycopg.conninfo",
    "psycopg.rows",
    "psycopg.sql",
    "psycopg_pool",
    "psycopg_pool.base",
    "pydantic",
    "secrets",
    "starlette.exceptions",
    "starlette.responses",
    "starlette.types",
    "urllib.request",
    "uuid",
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.loops.asyncio",
    "uvicorn.loops.auto",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto",
)


def _recv_request(conn: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """The request and its three descriptors; None for a caller only seeing if the server is up."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        chunk = conn.recv(1 << 16)
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None
        data += chunk
    (size,) = struct.unpack("!I", data[:4])
    if len(fds) != 3:
        raise OSError(f"a request came with {len(fds)} file descriptors, not 3")
    return json.loads(data[4 : 4 + size]), fds


def _send(conn: socket.socket | None, message: dict[str, object]) -> None:
    if conn is None:
        return
    with contextlib.suppress(OSError):  # the caller gone: nobody to tell
        conn.sendall(json.dumps(message).encode() + b"\n")


def _stdio(fd: int, mode: str, like: Any, buffered: bool) -> Any:
    """sys.stdin/stdout/stderr on fd as CPython's create_stdio makes them (with like's encoding
    and errors; buffered unless the interpreter runs unbuffered, -u or PYTHONUNBUFFERED)."""
    writing = mode == "w"
    buf: Any
    if not buffered and writing:
        buf = raw = io.FileIO(fd, "wb", closefd=False)
    else:
        buf = open(fd, mode + "b", -1, closefd=False)  # noqa: SIM115 (the process's stdio)
        raw = buf.raw
    raw.name = {0: "<stdin>", 1: "<stdout>", 2: "<stderr>"}[fd]
    tty = os.isatty(fd)
    stream = io.TextIOWrapper(
        buf,
        encoding=like.encoding,
        errors=like.errors,
        newline="\n",
        line_buffering=buffered and (tty or fd == 2),
        write_through=not buffered,
    )
    stream.mode = mode  # type: ignore[misc]
    return stream


def _sys_path(env: dict[str, str], base: list[str]) -> list[str]:
    """sys.path as `python -m` in the working directory with env makes it: site.py makes
    PYTHONPATH's entries (an empty one too) and the interpreter's absolute and drops repeats,
    then the working directory goes first (not with PYTHONSAFEPATH), repeated or not."""
    head = [] if env.get("PYTHONSAFEPATH") else [os.getcwd()]
    extra = env["PYTHONPATH"].split(os.pathsep) if env.get("PYTHONPATH") else []
    seen: set[str] = set()
    path: list[str] = []
    for entry in [*extra, *base]:
        full = os.path.abspath(entry)
        if os.path.normcase(full) not in seen:
            seen.add(os.path.normcase(full))
            path.append(full)
    return [*head, *path]


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF  # what the OS keeps of exit(code)
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def _run(request: dict[str, object], fds: list[int], base_path: list[str]) -> None:
    """In the forked child: become the process the request describes; never returns."""
    code = 70
    interrupted = False
    try:
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in request["env"].items()}  # type: ignore[attr-defined]
        cwd = str(request["cwd"])
        module = argv[2]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds):
            os.close(fd)
        for name in os.listdir("/proc/self/fd"):  # the server's: the listener, the selector...
            if int(name) > 2:
                with contextlib.suppress(OSError):
                    os.close(int(name))
        os.environ.clear()
        os.environ.update(env)
        time.tzset()
        os.chdir(cwd)
        sys.path[:] = _sys_path(env, base_path)
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
        sys.argv = ["-m", *argv[3:]]
        sys.orig_argv = list(argv)
        like: Any = (sys.__stdin__, sys.__stdout__, sys.__stderr__)
        buffered = not like[1].write_through
        sys.stdin = sys.__stdin__ = _stdio(0, "r", like[0], buffered)  # type: ignore[misc]
        sys.stdout = sys.__stdout__ = _stdio(1, "w", like[1], buffered)  # type: ignore[misc]
        sys.stderr = sys.__stderr__ = _stdio(2, "w", like[2], buffered)  # type: ignore[misc]
        import builtins
        import runpy

        main = types.ModuleType("__main__")
        main.__builtins__ = builtins  # type: ignore[attr-defined]
        main.__loader__ = importlib.machinery.BuiltinImporter
        main.__annotations__ = {}
        sys.modules["__main__"] = main
        if "__mp_main__" in sys.modules:  # multiprocessing's alias, made when it was imported
            sys.modules["__mp_main__"] = main
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        try:
            runpy._run_module_as_main(module, alter_argv=True)  # type: ignore[attr-defined]
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException as exc:  # as the interpreter: the traceback from runpy down, 1
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            exc.__traceback__ = tb  # printed from runpy's frame down, not this function's
            sys.excepthook(type(exc), exc, tb)
            interrupted = isinstance(exc, KeyboardInterrupt)
            code = 1
        import threading

        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        import atexit

        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
        except BaseException:
            code = 120
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # this file's own failure, before or after the module ran: to stderr
        with contextlib.suppress(BaseException):
            import traceback

            os.write(2, f"app server child: {traceback.format_exc()}".encode())
    finally:
        os._exit(code)


def _reset_signals(ignored: frozenset[int] = frozenset()) -> None:
    """As a new interpreter starts: a signal the caller ignores stays ignored (exec keeps
    SIG_IGN; `nohup` makes SIGHUP so), every other at its default, SIGINT raising
    KeyboardInterrupt unless ignored, SIGPIPE and SIGXFSZ ignored."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
    if signal.SIGINT not in ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _returncode(pid: int) -> int | None:
    """The child's status if it has ended, leaving it unreaped (WNOWAIT)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None or info.si_pid == 0:
        return None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def main(argv: list[str]) -> int:
    path, owner = argv[0], int(argv[1])
    del sys.path[0]  # this file's folder: the children get the interpreter's own path
    base_path = list(sys.path)
    for name in PRELOAD:
        importlib.import_module(name)

    stop = False

    def leave(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, leave)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through wake_w

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = f"{path}.{os.getpid()}"
    listener.bind(partial)
    listener.listen(64)
    os.replace(partial, path)  # a caller sees the socket only once it accepts
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "listener")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    running: dict[int, socket.socket | None] = {}  # pid: the caller's connection, None once gone
    ended: dict[int, socket.socket | None] = {}  # reported, not reaped: the caller may signal it
    by_conn: dict[socket.socket, int] = {}
    started = 0
    last = time.monotonic()

    def reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # its CPU now counts in os.times()' children's

    def forget(conn: socket.socket) -> None:
        pid = by_conn.pop(conn)
        selector.unregister(conn)
        conn.close()
        if pid in ended:
            del ended[pid]
            reap(pid)
        elif pid in running:
            running[pid] = None

    def check_children() -> None:
        for pid in list(running):
            code = _returncode(pid)
            if code is None:
                continue
            conn = running.pop(pid)
            if conn is None:
                reap(pid)
            else:
                _send(conn, {"returncode": code})
                ended[pid] = conn

    try:
        while not stop and procs.alive(owner) and (running or time.monotonic() - last < IDLE):
            for key, _ in selector.select(timeout=1.0):
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                elif key.data == "listener":
                    conn, _ = listener.accept()
                    last = time.monotonic()
                    try:
                        got = _recv_request(conn)
                    except (OSError, ValueError) as exc:  # one bad request: that caller is told
                        _send(conn, {"error": f"{type(exc).__name__}: {exc}"})
                        conn.close()
                        continue
                    if got is None:
                        conn.close()
                        continue
                    request, fds = got
                    sys.stdout.flush()
                    sys.stderr.flush()
                    try:
                        pid = os.fork()
                    except OSError as exc:
                        _send(conn, {"error": f"fork: {exc}"})
                        conn.close()
                        for fd in fds:
                            os.close(fd)
                        continue
                    if pid == 0:
                        _reset_signals(frozenset(request.get("ignored") or ()))  # type: ignore[call-overload]
                        for held in [listener, conn, *by_conn]:
                            held.detach()  # closed below with the rest, by number
                        _run(request, fds, base_path)
                    started += 1
                    for fd in fds:
                        os.close(fd)
                    running[pid] = conn
                    by_conn[conn] = pid
                    selector.register(conn, selectors.EVENT_READ, "conn")
                    _send(conn, {"pid": pid})
                else:  # a caller closed its connection: done with its child
                    conn = key.fileobj  # type: ignore[assignment]
                    try:
                        data = conn.recv(1)
                    except OSError:
                        data = b""
                    if not data:
                        forget(conn)
            check_children()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if path.endswith(
            ".sock"
        ):  # its lock (tests/app_process.py's): no caller is left to take it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path[: -len(".sock")] + ".lock")
        # the run is over: what it left running goes as a supervisor would stop it
        left = list(running) + list(ended)
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while running and time.monotonic() < deadline:
            check_children()
            time.sleep(0.05)
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:
            reap(pid)
        what = f"app server {os.getpid()}: {started} processes"
        print(procs.cpu_line(what, "processes'"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
