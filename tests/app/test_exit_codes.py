"""The app's and the migration's exit statuses, as app/README.md documents them (a process
supervisor or Kubernetes reads them): 2 for bad configuration, 1 for no database at start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import app_process

APP = Path(__file__).resolve().parents[2] / "app"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL"))}
    return app_process.run(
        [sys.executable, "-m", module],
        cwd=APP,
        env={**base, "PYTHONPATH": str(APP), "API_TOKEN": "t" * 32, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", ["shortener", "shortener.migrate"])
def test_bad_configuration_exits_2(module):
    result = run(module, PORT="abc")
    assert result.returncode == 2
    assert "PORT" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["shortener", "shortener.migrate"])
def test_no_database_at_start_exits_1(module):
    url = f"postgresql://app:secret-pw@127.0.0.1:{closed_port()}/app"
    result = run(module, DATABASE_URL=url, STARTUP_DB_TIMEOUT_SECONDS="1", PORT=str(closed_port()))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "secret-pw" not in result.stdout + result.stderr
