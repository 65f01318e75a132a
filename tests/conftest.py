"""Shared fixtures: plans of the project's stacks, made once per test run by the offline engine.

Under pytest-xdist (`-n`) every worker is a process of its own: the first worker that needs a
stack's plan makes it, under a file lock, and leaves it (pickled) in the run's shared temporary
folder; the others read it. One synthesis per stack per run.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backbone.plan import Plan
from backbone.synth import synth
from tests import cli_harness

REPO = Path(__file__).resolve().parent.parent


def _shared_plan(folder: Path, stack: str) -> Plan:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stack}.pickle"
    with open(folder / f"{stack}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            plan: Plan = pickle.loads(path.read_bytes())
            return plan
        plan = synth(stack, cwd=REPO)
        path.write_bytes(pickle.dumps(plan))
        return plan


@pytest.fixture(scope="session")
def plan_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Plan]:
    """plan_of("dev") -> the Plan of stacks/Pulumi.dev.yaml (made once per run, shared)."""
    base = tmp_path_factory.getbasetemp()
    # xdist: basetemp is per worker (.../popen-gw0); its parent is the run's, shared by all.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return functools.cache(functools.partial(_shared_plan, root / "backbone-plans"))


def _cli_env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def backbone_cli():
    """Run the `backbone` command as a user would, in this process (tests/cli_harness.py: the
    same arguments, environment, working directory, output and exit status as
    `python -m backbone.cli`, without a second or so of interpreter start and imports)."""

    def run(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return cli_harness.run(list(args), env=_cli_env(), cwd=cwd)

    return run


@pytest.fixture
def backbone_process():
    """Run the `backbone` command in a subprocess: the entry point itself (exit status, nothing
    but the message on stderr) for the few tests that check the process."""

    def run(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backbone.cli", *args],
            cwd=cwd,
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
