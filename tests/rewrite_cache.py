"""Assertion rewriting done once per run, not once per xdist worker.

pytest rewrites each test module's `assert`s before importing it (so a failure shows its values)
and keeps the rewritten code in `__pycache__` (a hash-checked pyc, `*-pytest-<version>.pyc`)
when it may write bytecode. Under `-n 4` the four workers start together, each finds no pyc on a
clean clone and rewrites all 60-odd modules itself: about 2.4 s of CPU per worker, a quarter of
its start. So before the workers start, the controller writes those pycs with pytest's own
rewriting (two forked children, half the modules each); every worker then reads them. A module
whose pyc is current is skipped. Whatever fails here (a pytest without these internals, a
read-only folder) only leaves the workers to rewrite for themselves, as they always could.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from pathlib import Path

import pytest


def _modules(root: Path, patterns: list[str]) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        if path.name == "conftest.py" or any(fnmatch.fnmatch(path.name, p) for p in patterns):
            found.append(path)
    return found


def _write(config: pytest.Config, paths: list[Path]) -> None:
    from _pytest.assertion import rewrite

    state = config.stash[rewrite.assertstate_key]
    for path in paths:
        folder = rewrite.get_cache_dir(path)
        pyc = folder / (path.name[:-3] + rewrite.PYC_TAIL)
        if rewrite._read_pyc(path, pyc) is not None:
            continue
        if not rewrite.try_makedirs(folder):
            return
        source_hash, code = rewrite._rewrite_test(path, config)
        rewrite._write_pyc(state, code, source_hash, pyc)


def prepare(config: pytest.Config, root: Path, workers: int = 2) -> None:
    """Write the rewritten pycs of root's test modules and conftest files, in `workers` forked
    children, and wait for them."""
    if config.getoption("assertmode", "rewrite") != "rewrite":
        return
    try:
        from _pytest.assertion import rewrite

        rewrite.assertstate_key, rewrite.get_cache_dir, rewrite._read_pyc  # noqa: B018
        rewrite._rewrite_test, rewrite._write_pyc, rewrite.try_makedirs, rewrite.PYC_TAIL  # noqa: B018
        patterns = list(config.getini("python_files"))
    except (ImportError, AttributeError, ValueError, KeyError):
        return
    paths = _modules(root, patterns)
    children = []
    for share in range(workers):
        pid = os.fork()
        if pid == 0:  # the child: its share, then out without pytest's exit handling
            code = 0
            try:
                _write(config, paths[share::workers])
            except Exception:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
