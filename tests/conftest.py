"""Shared fixtures: plans of the project's stacks, made once per session by the offline engine."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backbone.plan import Plan
from backbone.synth import synth

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def _plan(stack: str) -> Plan:
    return synth(stack, cwd=REPO)


@pytest.fixture(scope="session")
def plan_of():
    """plan_of("dev") -> the Plan of stacks/Pulumi.dev.yaml (cached for the session)."""
    return _plan


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
