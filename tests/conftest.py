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


@pytest.fixture
def backbone_cli():
    """Run the `backbone` command in a subprocess, as a user would."""

    def run(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        return subprocess.run(
            [sys.executable, "-m", "backbone.cli", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
