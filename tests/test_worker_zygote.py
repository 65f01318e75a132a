"""tests/worker_zygote.py: a worker forked by the zygote is the interpreter execnet asked for.

Each test launches `python -u -c CODE` as execnet does, through the zygote this run's workers came
from (`make test`; run alone, through one of this module's own, warmed up on imports only), and
checks what a plain interpreter would give: the exit status, death by a signal,
the bytes on standard output and error, standard input, the environment, the working directory,
`sys.argv`, `sys.path[0]`, a fresh `__main__`, and no descriptor of the zygote left open.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker_zygote import Zygote


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    """The zygote this run's workers were forked from (`make test`), else one of this module's
    own, warmed up on imports only."""
    attached = Zygote.attach()
    if attached is not None:
        yield attached
        return
    started = Zygote.start(None)
    assert started is not None and started.ready(), "the zygote did not come up"
    yield started
    started.stop()


def _launcher(zygote: Zygote) -> list[str]:
    spec = zygote.spec("popen")
    assert spec.startswith("popen//python=")
    return shlex.split(spec.removeprefix("popen//python="))


def run(zygote: Zygote, code: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [*_launcher(zygote), "-u", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,
    )


def test_exit_status_and_output_are_the_interpreters(zygote):
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(2)"
    plain = subprocess.run([sys.executable, "-u", "-c", code], capture_output=True, text=True)
    forked = run(zygote, code)
    assert (forked.returncode, forked.stdout, forked.stderr) == (2, "out\n", "err\n")
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )


def test_an_uncaught_exception_prints_its_traceback_and_exits_1(zygote):
    forked = run(zygote, "raise ValueError('no such setting')")
    assert forked.returncode == 1
    assert forked.stderr.startswith("Traceback (most recent call last):")
    assert forked.stderr.rstrip().endswith("ValueError: no such setting")


def test_sys_exit_with_a_message_prints_it_and_exits_1(zygote):
    forked = run(zygote, "import sys; sys.exit('bad input')")
    assert (forked.returncode, forked.stderr) == (1, "bad input\n")


def test_death_by_a_signal_is_the_launchers_death(zygote):
    forked = run(zygote, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert forked.returncode == -signal.SIGTERM


def test_a_signal_to_the_launcher_reaches_the_worker(zygote, tmp_path):
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time, pathlib\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
        f"pathlib.Path({str(ready)!r}).write_text('x')\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([*_launcher(zygote), "-u", "-c", code])
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 7


def test_the_worker_sees_the_launchers_stdin_env_cwd_argv_path_and_a_fresh_main(zygote, tmp_path):
    code = (
        "import json, os, sys\n"
        "print(json.dumps({'stdin': sys.stdin.readline(), 'env': os.environ.get('ZYGOTE_PROBE'),"
        " 'cwd': os.getcwd(), 'argv': sys.argv, 'path0': sys.path[0],"
        " 'main': sorted(k for k in globals() if not k.startswith('__')),"
        " 'fds': sorted(int(f) for f in os.listdir('/proc/self/fd'))}))\n"
    )
    forked = run(
        zygote,
        code,
        input="first line\nsecond\n",
        cwd=tmp_path,
        env={**os.environ, "ZYGOTE_PROBE": "seen"},
    )
    assert forked.returncode == 0, forked.stderr
    seen = json.loads(forked.stdout)
    assert seen["stdin"] == "first line\n"
    assert seen["env"] == "seen"
    assert Path(seen["cwd"]) == tmp_path
    assert (seen["argv"], seen["path0"]) == (["-c"], "")
    assert seen["main"] == ["json", "os", "sys"]  # only what the code itself made
    # 0, 1, 2 and the one listdir opened: nothing of the zygote's (its socket, log, pipe)
    assert len(seen["fds"]) == 4 and seen["fds"][:3] == [0, 1, 2]
