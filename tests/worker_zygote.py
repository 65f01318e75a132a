"""pytest-xdist workers forked from one warmed-up process, instead of four cold interpreters.

Every xdist worker is a new interpreter that imports pytest and its plugins, then the SDKs (the
first synthesis in a worker loads pulumi-aws's and pulumi-kubernetes's resource classes: 1.5 s of
CPU), boto3, moto, fastapi, psycopg... the same few seconds of CPU four times over, on two cores.
Here the controller starts one process (the zygote) that does that once: it imports those modules,
parses botocore's models, loads moto's backends and plans the prod stack with the offline engine
(so the resource classes are loaded; the Plan goes to the kit's Plan cache, where the tests that
read prod find it), then forks a child per worker. The child is the interpreter execnet asked
for (`python -u -c BOOTSTRAP`): it takes the launching process's standard input, output and error
(passed over a Unix socket), environment, working directory and arguments, and runs the bootstrap
as `python -c` would, in a fresh `__main__`.

    launcher:  PYTHON -S -E tests/worker_zygote.py launch SOCKET -u -c BOOTSTRAP
    zygote:    PYTHON tests/worker_zygote.py serve SOCKET OWNER_PID

The launcher is what execnet starts (`popen//python=...`, tests/conftest.py): a bare interpreter
(no site, about 15 ms) that hands its descriptors to the zygote, forwards the signals it gets to
the worker, and leaves with the worker's status (or dies by the worker's signal). The zygote
reaps its children and reports each status on its request's connection; it leaves when OWNER_PID
(the test run's main process) is gone, and the controller waits for it at the end, so the
workers' CPU counts as the run's (`time make test`).

Whatever goes wrong before a worker starts (no fork, the warm-up fails, the zygote does not come
up within its deadline) leaves the controller with plain `popen` workers, as without this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    from tests import procs
except ImportError:  # run as a script: this file's folder is first on sys.path
    import procs  # type: ignore[no-redef]

HEADER = 16  # bytes: the length of the JSON request that follows the descriptors' message
WARM_STACKS = ("prod",)
# what the tests call through boto3 and moto (grep `client("`): warmed once for all workers
BOTO_SERVICES = (
    *("ec2", "cloudwatch", "s3", "secretsmanager", "kms", "rds", "sns", "lambda", "sqs"),
    *("iam", "events", "elbv2", "eks", "sts", "logs", "ecr"),
)
MOTO_SERVICES = (
    *("core", "ec2", "s3", "awslambda", "iam", "rds", "dynamodb", "ecr", "sqs"),
    *("secretsmanager", "events", "eks", "sns", "elbv2", "cloudwatch", "kms", "logs", "sts"),
)


# --------------------------------------------------------------------------------------------
# the controller's side (tests/conftest.py)


# the run's zygote's socket, named by tests/conftest.py for the workers (tests/test_worker_zygote.py
# checks that zygote, the one the workers came from)
RUN_ZYGOTE = "BACKBONE_TEST_ZYGOTE"


class Zygote:
    """The run's zygote, as the xdist controller sees it (or, attached, a test)."""

    DEADLINE = 60.0  # seconds for the warm-up; past it, plain workers

    def __init__(self, proc: subprocess.Popen[bytes] | None, path: str, log: str) -> None:
        self.proc, self.path, self.log = proc, path, log

    @classmethod
    def attach(cls) -> Zygote | None:
        """The run's zygote, which this process did not start (RUN_ZYGOTE), if it is up."""
        path = os.environ.get(RUN_ZYGOTE, "")
        return cls(None, path, "") if path and os.path.exists(path) else None

    @classmethod
    def start(cls, project: Path | None) -> Zygote | None:
        """A zygote warmed up on project's stacks (None: imports only)."""
        path = f"/tmp/backbone-zygote-{os.getpid()}.sock"  # short: a socket's path is <108 bytes
        log = f"/tmp/backbone-zygote-{os.getpid()}.log"
        where = str(project) if project is not None else "-"
        try:
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "serve", path, str(os.getpid()), where],
                    cwd=project or Path(__file__).parent,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a ^C reaches the workers through their launchers
                )
        except OSError:
            return None
        return cls(proc, path, log)

    def ready(self) -> bool:
        """Up and accepting (waits for the warm-up); False: use plain workers."""
        if self.proc is None:  # attached: up when it was attached
            return os.path.exists(self.path)
        deadline = time.monotonic() + self.DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if os.path.exists(self.path):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def spec(self, tx: str) -> str:
        """An execnet spec for a worker forked by the zygote, in place of a plain `popen`."""
        if tx != "popen":
            return tx
        launcher = " ".join([sys.executable, "-S", "-E", __file__, "launch", self.path])
        return f"popen//python={launcher}"

    def stop(self) -> None:
        """End the zygote and wait for it: its workers' CPU then counts in this process's. Its
        log is kept only if it failed. An attached zygote is its starter's to stop."""
        if self.proc is None:
            return
        procs.stop(self.proc)
        if self.proc.returncode == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.log)


# --------------------------------------------------------------------------------------------
# the launcher (started by execnet)


def _ignores(sig: int) -> bool:
    try:
        return signal.getsignal(sig) == signal.SIG_IGN
    except (OSError, ValueError):
        return False


def launch(path: str, args: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    # what execnet's process would have ignored from the start (exec keeps SIG_IGN): the worker too
    ignored = [int(s) for s in signal.valid_signals() if _ignores(s)]
    fields = {"args": args, "env": dict(os.environ), "cwd": os.getcwd(), "ignored": ignored}
    request = json.dumps(fields).encode()
    socket.send_fds(conn, [str(len(request)).encode().ljust(HEADER)], [0, 1, 2])
    conn.sendall(request)
    pid = 0
    status: int | None = None
    early: list[int] = []  # signals that came before the worker's pid did

    def forward(signum: int, _frame: object) -> None:
        if pid:
            os.kill(pid, signum)
        else:
            early.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    buffered = b""
    while status is None:
        try:
            chunk = conn.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            return 70  # the zygote went away without a status
        buffered += chunk
        while b"\n" in buffered:
            line, _, buffered = buffered.partition(b"\n")
            word, _, value = line.decode().partition(" ")
            if word == "pid":
                pid = int(value)
                for signum in early:
                    os.kill(pid, signum)
            elif word == "exit":
                status = int(value)
    if os.WIFSIGNALED(status):  # die as the worker died
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)


# --------------------------------------------------------------------------------------------
# the zygote


def _warm(project: str) -> None:
    """Import what every worker imports, and load the SDKs' resource classes (by planning the
    stacks of `project`; "-": imports only)."""
    import importlib

    for name in (
        "pytest",
        "_pytest.python",
        "_pytest.fixtures",
        "_pytest.assertion.rewrite",
        "execnet",
        "boto3",
        "botocore.session",
        "moto",
        "moto.server",
        "fastapi",
        "fastapi.testclient",
        "httpx",
        "psycopg",
        "psycopg_pool",
        "pydantic",
        "typer",
        "rich.console",
        "cryptography.x509",
        "uvicorn",
        "prometheus_client",
    ):
        try:
            importlib.import_module(name)
        except Exception:  # a module this machine lacks: the worker imports it (or not) itself
            continue
    for service in MOTO_SERVICES:  # moto's backends, as its server loads them on first call
        try:
            importlib.import_module(f"moto.{service}.models")
        except Exception:
            continue
    if project == "-":
        return
    sys.path.insert(0, project)
    # botocore's models, parsed into the one Loader per process the tests share
    # (tests/boto_share.py): a client per service the tests call, made offline
    try:
        import boto3

        from tests import boto_share

        boto_share.install()
        session = boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="warm", aws_secret_access_key="warm"
        )
        for name in BOTO_SERVICES:
            session.client(name, endpoint_url="http://127.0.0.1:9")  # type: ignore[call-overload]
    except Exception:  # a worker parses what it needs itself
        pass

    from backbone import cache
    from backbone.synth import available_stacks, resolve, synth

    # prod loads nearly every resource class the stacks use (free-tier adds its host's, local
    # the Docker provider's: a worker loads those few itself). Planned through the kit's Plan
    # cache, as the tests' shared plans are (tests/conftest.py), so they find it made; a Plan an
    # earlier run left there is planned again, for the classes.
    for stack in [s for s in WARM_STACKS if s in available_stacks(Path(project))]:
        try:
            ref = resolve(stack, cwd=Path(project))
            if cache.plan(ref)[1]:
                synth(ref)
        except Exception:  # a stack the tests find broken: the warm-up needs none in particular
            continue
    sys.path.remove(project)


def _child(
    conn: socket.socket, fds: list[int], request: dict[str, object], leave: Callable[[], None]
) -> None:
    """In the forked child: become `python ARGS` with the launcher's stdio, env and cwd."""
    code = 1
    try:
        leave()  # the zygote's own sockets, selector and wake-up pipe
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        ignored = set(request.get("ignored") or ())  # type: ignore[call-overload]
        for signum in signal.valid_signals():  # as a new interpreter has them
            if signum in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
            except (OSError, ValueError):
                continue
        if signal.SIGINT not in ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        os.chdir(str(request["cwd"]))
        args = list(request["args"])  # type: ignore[call-overload]
        code = _run(args)
    finally:
        os._exit(code)


def _run(args: list[str]) -> int:
    import atexit
    import io
    import threading
    import traceback
    import types

    unbuffered = "-u" in args[: args.index("-c")]
    source = args[args.index("-c") + 1]
    raw_out, raw_err = io.FileIO(1, "w", closefd=False), io.FileIO(2, "w", closefd=False)
    if unbuffered:
        sys.stdout = io.TextIOWrapper(raw_out, write_through=True)
        sys.stderr = io.TextIOWrapper(raw_err, write_through=True, errors="backslashreplace")
    else:
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw_out), line_buffering=False)
        sys.stderr = io.TextIOWrapper(
            io.BufferedWriter(raw_err), line_buffering=True, errors="backslashreplace"
        )
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
    sys.argv = ["-c", *args[args.index("-c") + 2 :]]
    sys.path[0] = ""  # `python -c`: the working directory first
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    code = 0
    try:
        exec(compile(source, "<string>", "exec"), main.__dict__)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  (as the interpreter ends: joins threads)
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    return code


def serve(path: str, owner: int, project: str) -> int:
    import selectors
    import threading

    _warm(project)
    if threading.active_count() != 1:  # forking a process with threads is not safe: no zygote
        print(f"zygote: {threading.active_count()} threads after warm-up, not serving", flush=True)
        return 3
    import gc

    gc.collect()
    gc.freeze()  # what the warm-up made stays shared with the children, untouched
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = f"{path}.{os.getpid()}"
    listener.bind(partial)
    listener.listen(16)
    os.replace(partial, path)  # the controller sees the socket once it accepts
    waiting: dict[int, socket.socket] = {}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    select = selectors.DefaultSelector()
    select.register(listener, selectors.EVENT_READ)
    select.register(wake_r, selectors.EVENT_READ)

    def leave() -> None:  # in a child: nothing of the zygote's stays open
        signal.set_wakeup_fd(-1)
        select.close()
        listener.close()
        for sock in waiting.values():
            sock.close()
        os.close(wake_r)
        os.close(wake_w)

    try:
        while procs.alive(owner) or waiting:
            for key, _ in select.select(timeout=1.0):
                if key.fileobj is listener:
                    _accept(listener, waiting, leave)
                else:
                    os.read(wake_r, 512)
            _reap(waiting)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        print(procs.cpu_line(f"zygote {os.getpid()}", "workers'"), flush=True)
    return 0


def _accept(
    listener: socket.socket, waiting: dict[int, socket.socket], leave: Callable[[], None]
) -> None:
    conn, _ = listener.accept()
    header, fds, _flags, _addr = socket.recv_fds(conn, HEADER, 3)
    size = int(header.decode().strip() or 0)
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    if len(fds) != 3 or len(data) != size:
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    request = json.loads(data)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(conn, fds, request, leave)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {pid}\n".encode())
    waiting[pid] = conn


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {status}\n".encode())
            conn.close()


if __name__ == "__main__":
    verb = sys.argv[1]
    if verb == "launch":
        sys.exit(launch(sys.argv[2], sys.argv[3:]))
    if verb == "serve":
        sys.exit(serve(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    sys.exit(f"usage: {sys.argv[0]} launch SOCKET ARGS... | serve SOCKET OWNER PROJECT")
