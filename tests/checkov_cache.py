"""checkov, run once per distinct scan in a test run.

`python tests/checkov_cache.py CACHE OWNER REAL_CHECKOV ARGS...` behaves as `REAL_CHECKOV
ARGS...`: the same standard output, standard error and exit status. The first call with given
arguments, given bytes in the files and folders they name and the environment variables checkov
reads runs the real checkov and keeps its answer in CACHE (a folder shared by the run's xdist
workers, under a file lock); a later identical call replays it, with the scanned folder's path put
back in place of the first call's (a rendered manifests folder is a new temporary folder each
time). Anything else in the call (another flag, one byte changed in the Dockerfile) is a different
scan, run for real.

A scan that is run for real is not a new checkov process either, when checkov is a Python script
(its `checkov` console script): the first one starts tests/checkov_server.py with checkov's
interpreter, which imports checkov once (two seconds of CPU, nearly all of a scan's cost) and
forks a child per scan that runs checkov's own entry point with the call's arguments,
environment and working directory; the answer is that child's standard output, standard error
and exit status. One server per environment checkov could have read while importing (the call's
environment less pytest's own variables and two read only when printing), shared by the run's
xdist workers (started under a file lock, found by its socket), gone when the run's main process
is (OWNER, the wrapper's second argument). A checkov that is no Python script is run as a
process per scan.

tests/conftest.py's `checkov` fixture makes the executable that the tests, and the kit's own
`backbone check` through backbone.check.find_checkov, call instead of checkov.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

try:
    from tests import procs
except ImportError:  # run as a script: this file's folder is first on sys.path
    import procs  # type: ignore[no-redef]

SERVER = Path(__file__).resolve().parent / "checkov_server.py"
# what backbone.check sets for its scans; the tests' own scans set the same, so that one server
# (one checkov import) answers them all
ENV = {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
SERVER_ENV_IGNORED = ("PYTEST_", "COLUMNS", "NO_COLOR")


def _tree(digest: hashlib._Hash, root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(b"F" + path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")


def key(args: list[str], env: dict[str, str]) -> tuple[str, list[str]]:
    """(the scan's digest, the folders it names, in order)."""
    digest = hashlib.sha256()
    folders: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            digest.update(b"D")
            _tree(digest, path)
            folders.append(arg)
        elif path.is_file():
            digest.update(b"f" + arg.encode() + b"\0" + path.read_bytes())
        else:
            digest.update(b"a" + arg.encode())
        digest.update(b"\0")
    for name in sorted(env):
        if name.startswith(("CHECKOV_", "BC_", "CKV_")):
            digest.update(f"{name}={env[name]}\0".encode())
    return digest.hexdigest(), folders


def _interpreter(script: str) -> str | None:
    """The Python interpreter a console script names on its #! line, if it is one."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if len(words) == 1 and Path(words[0]).name.startswith("python") and Path(words[0]).exists():
        return words[0]
    return None


def _server(cache: Path, owner: int, real: str, python: str, env: dict[str, str]) -> str:
    """The socket of the run's checkov server for this environment, started if need be."""
    # pytest's bookkeeping, and what checkov's libraries read only when they print (termcolor's
    # NO_COLOR; COLUMNS, which the CLI tests set): each scan's child has the call's whole env
    kept = {k: v for k, v in env.items() if not k.startswith(SERVER_ENV_IGNORED)}
    digest = hashlib.sha256(json.dumps([str(cache), real, sorted(kept.items())]).encode())
    # a short path: a Unix socket's is at most 107 bytes
    path = f"/tmp/backbone-checkov-{digest.hexdigest()[:16]}.sock"
    with open(cache / f"server-{digest.hexdigest()[:16]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if procs.accepts(path):
            return path
        log = open(cache / f"server-{digest.hexdigest()[:16]}.log", "ab")  # noqa: SIM115
        started = subprocess.Popen(
            [python, str(SERVER), path, str(owner), real],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        while not procs.accepts(path):
            if started.poll() is not None:
                raise OSError(f"the checkov server exited {started.returncode}: see {log.name}")
            time.sleep(0.05)
        return path


def _run(cache: Path, owner: int, real: str, args: list[str]) -> tuple[str, str, int]:
    """checkov's (stdout, stderr, exit status) for args: by the run's server where checkov is a
    Python script, else by a process of its own."""
    python = _interpreter(real)
    if python is None or owner <= 0:
        done = subprocess.run([real, *args], capture_output=True, text=True, check=False)
        return done.stdout, done.stderr, done.returncode
    env = dict(os.environ)
    path = _server(cache, owner, real, python, env)
    request = {"args": args, "env": env, "cwd": os.getcwd()}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall(json.dumps(request).encode())
        conn.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        while chunk := conn.recv(1 << 16):
            chunks.append(chunk)
    if not chunks:
        raise OSError(f"the checkov server at {path} gave no answer")
    answer = json.loads(b"".join(chunks))
    return answer["stdout"], answer["stderr"], int(answer["returncode"])


def main(argv: list[str]) -> int:
    cache, owner, real, args = Path(argv[0]), int(argv[1]), argv[2], argv[3:]
    cache.mkdir(parents=True, exist_ok=True)
    digest, folders = key(args, dict(os.environ))
    answer = cache / f"{digest}.json"
    with open(cache / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if answer.exists():
            kept = json.loads(answer.read_text())
            stdout, stderr = kept["stdout"], kept["stderr"]
            for old, new in zip(kept["folders"], folders, strict=True):
                stdout, stderr = stdout.replace(old, new), stderr.replace(old, new)
            returncode = int(kept["returncode"])
        else:
            stdout, stderr, returncode = _run(cache, owner, real, args)
            if returncode not in (0, 1):  # checkov itself failed: not an answer to keep
                _write(1, stdout)
                _write(2, stderr)
                return returncode
            answer.write_text(
                json.dumps(
                    {
                        "stdout": stdout,
                        "stderr": stderr,
                        "returncode": returncode,
                        "folders": folders,
                    }
                )
            )
    _write(1, stdout)
    _write(2, stderr)
    return returncode


def _write(fd: int, text: str) -> None:
    """All of text to fd. Not sys.stdout.write: with PYTHONUNBUFFERED (set on these machines) it
    writes straight to the pipe and drops what a write cut short by a signal left over (seen
    under py-spy: the tests read the first 128 KiB of a 187 KB report)."""
    data = memoryview(text.encode())
    while data:
        data = data[os.write(fd, data) :]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
