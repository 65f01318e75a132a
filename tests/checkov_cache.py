"""checkov, run once per distinct scan in a test run.

`python tests/checkov_cache.py CACHE REAL_CHECKOV ARGS...` behaves as `REAL_CHECKOV ARGS...`: the
same standard output, standard error and exit status. The first call with given arguments, given
bytes in the files and folders they name and the environment variables checkov reads runs the real
checkov and keeps its answer in CACHE (a folder shared by the run's xdist workers, under a file
lock); a later identical call replays it, with the scanned folder's path put back in place of the
first call's (a rendered manifests folder is a new temporary folder each time). Anything else in
the call (another flag, one byte changed in the Dockerfile) is a different scan, run for real.

tests/conftest.py's `checkov` fixture makes the executable that the tests, and the kit's own
`backbone check` through backbone.check.find_checkov, call instead of checkov.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


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


def main(argv: list[str]) -> int:
    cache, real, args = Path(argv[0]), argv[1], argv[2:]
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
            done = subprocess.run([real, *args], capture_output=True, text=True, check=False)
            stdout, stderr, returncode = done.stdout, done.stderr, done.returncode
            if returncode not in (0, 1):  # checkov itself failed: not an answer to keep
                sys.stdout.write(stdout)
                sys.stderr.write(stderr)
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
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
