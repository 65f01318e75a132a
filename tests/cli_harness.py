"""The `backbone` command run in the test's own process, as `python -m backbone.cli ARGS` would run.

Every CLI test used to start a Python process (about a second of Python, Pulumi and boto3
imports each); here the same typer app runs in-process with what the process would have had: the
given environment (os.environ replaced for the call), working directory, an empty stdin, fresh
rich consoles built as the module builds them for that environment, the program name click shows
in usage lines, and stdout/stderr captured. The exit status is what the process would return: the
code of typer.Exit/SystemExit, and for an exception that escapes the app, status 1 with the
traceback on stderr, as Python prints it, so "no traceback" checks keep their meaning.

Logging (the offline engine's warnings go to the root logger) reaches stderr as Python's
last-resort handler would print it in the process: level WARNING and up, the bare message.
Every subprocess the commands start (git, checkov, the worker of `diff --base`, `pulumi`)
captures its output, so Python-level capture is all the command writes. A few tests still run
the real process (`backbone_process` in tests/conftest.py) for the entry point itself.
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
from typing import Any

import typer.main
from rich.console import Console

from backbone import cli

PROG = "python -m backbone.cli"


@contextlib.contextmanager
def _last_resort_logging() -> Iterator[None]:
    """What logging does in a process that configured none: WARNING+ messages to stderr."""
    handler = logging.StreamHandler(sys.stderr)  # the redirected stderr of the run
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


@contextlib.contextmanager
def _environment(env: Mapping[str, str], cwd: Path) -> Iterator[None]:
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def _consoles(env: Mapping[str, str]) -> tuple[Console, Console]:
    """cli.out and cli.err as `import backbone.cli` makes them in a process with `env` whose
    output is a pipe (not a terminal): stdout 240 columns unless COLUMNS says, stderr 80."""
    columns = env.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() else None
    out = Console(highlight=False, soft_wrap=True, width=width or 240, _environ=env)
    err = Console(stderr=True, highlight=False, soft_wrap=True, width=width or 80, _environ=env)
    return out, err


def _boto3_reset() -> None:
    """boto3's default session reads the environment once: drop it before and after a run."""
    boto3 = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None  # type: ignore[attr-defined]


_COMMANDS: dict[tuple[int, int, int], Any] = {}


def _command() -> Any:
    """The click command `cli.app(...)` builds from the typer app on every call (about 7 ms of
    signature inspection each time, some hundreds of times a run): built once per process and
    reused, as click itself reuses a command between invocations. A command registered later
    builds it anew."""
    app = cli.app
    key = (id(app), len(app.registered_commands), len(app.registered_groups))
    if key not in _COMMANDS:
        _COMMANDS[key] = typer.main.get_command(app)
    return _COMMANDS[key]


def run(args: list[str], *, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `backbone ARGS` in-process; the result reads as subprocess.run's would."""
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = cli.out, cli.err, dict(cli._CACHE)
    code = 0
    with _environment(env, cwd):
        _boto3_reset()
        saved_stdin = sys.stdin
        sys.stdin = io.StringIO("")
        try:
            with (
                contextlib.redirect_stdout(stdout),
                contextlib.redirect_stderr(stderr),
                _last_resort_logging(),
            ):
                cli.out, cli.err = _consoles(env)
                try:
                    _command()(args=list(args), prog_name=PROG, standalone_mode=True)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                    if isinstance(exc.code, str):
                        print(exc.code, file=sys.stderr)
                except BaseException:  # what would escape `python -m backbone.cli`
                    traceback.print_exc(file=sys.stderr)
                    code = 1
        finally:
            sys.stdin = saved_stdin
            cli.out, cli.err = saved[0], saved[1]
            cli._CACHE.clear()
            cli._CACHE.update(saved[2])
            _boto3_reset()
    return subprocess.CompletedProcess(
        [sys.executable, "-m", "backbone.cli", *args], code, stdout.getvalue(), stderr.getvalue()
    )
