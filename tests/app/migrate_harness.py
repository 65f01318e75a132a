"""`python -m shortener.migrate` run in the test's own process, as the process would run it.

Each run of the migration as a process is an interpreter start and the imports of psycopg and the
app's modules (about half a second of CPU); most tests of the migration check what it does to the
database and what it says (its exit status, stdout, stderr), not the process. Here the module's
own `main()` runs with what the process would have had: the given environment (os.environ
replaced for the call, libpq's PG* variables included), the app's directory as working directory,
stdout and stderr captured, the logging configuration `logs.setup` makes (on the captured stdout)
and the secrets it learns at run time starting empty, as in a fresh process. The exit status is
main()'s return value, SystemExit's code, or 1 with the traceback on stderr for an exception that
escapes, as Python prints it, so "no traceback" checks keep their meaning. Everything is put back
afterwards.

Tests of the process itself (exit statuses of the entry point, concurrent runs, the image) still
start `python -m shortener.migrate`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def _as_a_process(env: Mapping[str, str], cwd: Path) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    from shortener import logs

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_secrets = list(logs._LATE_SECRETS)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    logs._LATE_SECRETS.clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        logs._LATE_SECRETS[:] = saved_secrets


def run_migrate(env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """What `python -m shortener.migrate` in `cwd` with exactly `env` exits with and writes."""
    from shortener import migrate

    with _as_a_process(env, cwd) as (out, err):
        try:
            code = migrate.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            code = 1
        for handler in logging.getLogger().handlers:
            handler.flush()
    args = [sys.executable, "-m", "shortener.migrate"]
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
