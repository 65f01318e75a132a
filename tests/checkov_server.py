"""checkov, imported once and forked per scan: a test run's checkov processes share one start.

Run by tests/checkov_cache.py with checkov's own interpreter (the one its `checkov` script names),
so this file uses the standard library only:

    CHECKOV_PYTHON tests/checkov_server.py SOCKET OWNER_PID CHECKOV_SCRIPT

It imports checkov.main (two seconds of CPU, nearly all of a scan's cost), then listens on the
Unix socket SOCKET. Each connection is one checkov command: a JSON request {"args", "env",
"cwd"}; a child forked from the imported process takes the request's environment, working
directory and arguments and runs what CHECKOV_SCRIPT runs (`Checkov().run()`, SyntaxWarnings
ignored), its file descriptors 1 and 2 written to files of its own; the answer is {"stdout",
"stderr", "returncode"}. Nothing of one scan survives into the next (each child starts from the
state right after the import; checkov starts no thread on import). The process exits when
OWNER_PID (the test run's main process) is gone, or after IDLE seconds without a request.

The environment checkov read while importing is the one this process started with: the caller
keeps one server per environment (tests/checkov_cache.py keys it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings

try:
    from tests import procs
except ImportError:  # run as a script: this file's folder is first on sys.path
    import procs  # type: ignore[no-redef]

IDLE = 900.0  # seconds without a request before the server leaves by itself


def _reap(block: bool = False) -> None:
    """Wait for finished children (their CPU time then counts in this process's os.times())."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _read_all(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _scan(conn: socket.socket, data: bytes, script: str) -> None:
    """In the forked child: one checkov command, answered on conn; never returns."""
    code = 70
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        request = json.loads(data)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (fds 1, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.argv = [script, *request["args"]]
        from checkov.main import Checkov

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=SyntaxWarning)
                returned = Checkov(argv=list(request["args"])).run()
            code = int(returned or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # as the console script would die: its traceback, status 1
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        out.seek(0)
        err.seek(0)
        answer = {
            "stdout": out.read().decode("utf-8", "replace"),
            "stderr": err.read().decode("utf-8", "replace"),
            "returncode": code,
        }
        conn.sendall(json.dumps(answer).encode())
        conn.close()
    finally:
        os._exit(code)


def main(argv: list[str]) -> int:
    path, owner, script = argv[0], int(argv[1]), argv[2]
    import checkov.main  # noqa: F401  (the cost every scan shares)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave through `finally`

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = f"{path}.{os.getpid()}"
    listener.bind(partial)
    listener.listen(16)
    os.replace(partial, path)  # a caller sees the socket only once it accepts
    listener.settimeout(1.0)
    last = time.monotonic()
    scans = 0
    try:
        while procs.alive(owner) and time.monotonic() - last < IDLE:
            _reap()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            conn.settimeout(None)
            data = _read_all(conn)  # the request, whole (its sender shuts its side after it)
            if not data:  # a caller seeing whether the server is up
                conn.close()
                continue
            scans += 1
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                _scan(conn, data, script)
            conn.close()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        _reap(block=True)
        # the CPU the run's checkov cost, for bench figures (this process is nobody's child)
        print(procs.cpu_line(f"checkov server {os.getpid()}: {scans} scans", "scans'"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
