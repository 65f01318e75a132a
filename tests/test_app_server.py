"""tests/app_server.py's children are what a new `python -m MODULE` would be.

Each check runs the same probe module twice, as a plain new interpreter (subprocess) and as a
child of the run's app server (tests/app_process.py), and compares what they saw and did: exit
statuses, the bytes they wrote, environment, working directory, sys.path and sys.argv, open file
descriptors, signal dispositions and mask, stdio, `__main__`, threads and atexit at exit. The one
allowed difference is sys.modules: the server's children start with the app's third-party
libraries imported (never the app's own modules), and the last check proves those are all
modules a fresh `python -m shortener` imports anyway.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests import app_process, app_server
from tests.realparts import REPO, free_port

PROBE = """
import atexit, io, json, os, signal, sys, threading, warnings, logging, asyncio

def observe():
    handlers = {}
    for sig in sorted(signal.valid_signals()):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        h = signal.getsignal(sig)
        handlers[int(sig)] = h if isinstance(h, int) else getattr(h, "__qualname__", repr(h))
    stdio = {
        name: [s.encoding, s.errors, s.line_buffering, s.write_through, s.name, s.mode,
               type(s.buffer).__name__, s.isatty(), s.fileno()]
        for name, s in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr))
    }
    main = sys.modules["__main__"]
    return {
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "cwd": os.getcwd(),
        "path": sys.path,
        "env": dict(os.environ),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "signals": handlers,
        "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "stdio": stdio,
        "dunder": sorted(stdio and [k for k in vars(main) if k.startswith("__")]),
        "main": [main.__name__, main.__file__, main.__package__, main.__spec__.name],
        "is_main": main is sys.modules[__name__],
        "threads": [t.name for t in threading.enumerate()],
        "main_thread": threading.current_thread() is threading.main_thread(),
        "running_loop": asyncio.events._get_running_loop() is not None,
        "root_logger": [logging.getLogger().level, len(logging.getLogger().handlers)],
        "warnings": [str(f) for f in warnings.filters],
        "flags": list(sys.flags),
        "umask": os.umask(0o22),
        "app_modules": sorted(m for m in sys.modules if m.split(".")[0] == "shortener"),
        "tz": os.environ.get("TZ") and __import__("time").tzname,
    }

what = sys.argv[1] if len(sys.argv) > 1 else "observe"
if what == "observe":
    print(json.dumps(observe()))
elif what == "exit2":
    print("before exit", end="")  # buffered: written when the interpreter flushes at exit
    sys.stderr.write("to stderr\\n")
    raise SystemExit(2)
elif what == "exit-message":
    sys.exit("a message, status 1")
elif what == "raise":
    print("out", flush=True)
    raise ValueError("an uncaught exception: \\u00e9")
elif what == "sigterm":
    print("dying", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
elif what == "interrupt":
    raise KeyboardInterrupt
elif what == "bytes":
    sys.stdout.buffer.write(bytes(range(256)))
    sys.stdout.write("\\u00e9t\\u00e9\\n")
    sys.stderr.buffer.write(b"\\xff\\xfe raw\\n")
elif what == "shutdown":
    def late():
        import time
        time.sleep(0.3)
        print("thread joined before exit", flush=True)
    threading.Thread(target=late).start()  # non-daemon: the interpreter waits for it
    atexit.register(lambda: print("atexit ran, after the thread"))
    print("main done")
elif what == "wait":
    print("waiting", flush=True)
    sys.stdin.read()  # until the test signals it
elif what == "app":
    before = sorted(m for m in sys.modules if m.split(".")[0] == "shortener")
    from shortener import config
    print(json.dumps({"before": before, "file": config.__file__,
                      "port": config.load().port}))
"""


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "sub").mkdir()
    return tmp_path


def both(
    probe_dir: Path, *args: str, env: dict[str, str] | None = None, **kw: Any
) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    """(the plain interpreter's run, the server child's run) of `python -m probe ARGS`."""
    full = {
        **os.environ,
        # a relative entry, a repeated one, an empty one: what site.py makes of them
        "PYTHONPATH": os.pathsep.join(["sub", str(probe_dir / "sub"), "", str(REPO)]),
        "PROBE_MARK": "seen-in-the-child",
        **(env or {}),
    }
    argv = [sys.executable, "-m", "probe", *args]
    call = {"cwd": probe_dir, "env": full, "capture_output": True, "timeout": 60, **kw}
    plain = subprocess.run(argv, **call, check=False)
    forked = app_process.run(argv, **call)
    return plain, forked


def test_a_child_sees_what_a_new_interpreter_sees(probe_dir: Path) -> None:
    plain, forked = both(probe_dir, env={"TZ": "Pacific/Auckland"})
    assert plain.returncode == forked.returncode == 0, (plain.stderr, forked.stderr)
    seen_plain, seen_forked = json.loads(plain.stdout), json.loads(forked.stdout)
    assert seen_forked == seen_plain
    # and what that is, for the points that matter most
    assert seen_forked["env"]["PROBE_MARK"] == "seen-in-the-child"
    assert seen_forked["cwd"] == str(probe_dir)
    # the working directory first, then PYTHONPATH's (made absolute, the empty entry too)
    here, sub = str(probe_dir), str(probe_dir / "sub")
    assert seen_forked["path"][:4] == [here, sub, here, str(REPO)]
    assert seen_forked["argv"] == [str(probe_dir / "probe.py")]
    assert seen_forked["fds"] == [0, 1, 2, 3]  # 3: the listing's own; nothing of the server's
    assert seen_forked["signals"][str(signal.SIGTERM.value)] == signal.SIG_DFL
    assert seen_forked["signals"][str(signal.SIGPIPE.value)] == signal.SIG_IGN
    assert seen_forked["mask"] == []
    assert seen_forked["threads"] == ["MainThread"] and seen_forked["app_modules"] == []


@pytest.mark.parametrize(
    ("what", "status"),
    [
        ("exit2", 2),
        ("exit-message", 1),
        ("raise", 1),
        ("sigterm", -signal.SIGTERM),
        ("interrupt", -signal.SIGINT),
        ("bytes", 0),
        ("shutdown", 0),
    ],
)
def test_a_child_exits_and_writes_as_a_new_interpreter(
    probe_dir: Path, what: str, status: int
) -> None:
    plain, forked = both(probe_dir, what)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )
    assert forked.returncode == status
    if what == "raise":
        assert forked.stderr.startswith(b"Traceback (most recent call last):\n")
        assert b"app_server" not in forked.stderr  # the server's frames are not the process's
    if what == "shutdown":
        assert forked.stdout.splitlines()[-2:] == [
            b"thread joined before exit",
            b"atexit ran, after the thread",
        ]


def test_a_child_is_a_process_the_test_signals_and_waits_for(probe_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "probe", "wait"]
    with app_process.Popen(
        argv, cwd=probe_dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"waiting\n"
        assert proc.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
        # a real process: its own pid, in /proc, running the interpreter
        assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(sys.executable).resolve()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM
    assert proc.returncode == -signal.SIGTERM
    proc.kill()  # once it is known dead, no signal goes to whatever has its pid now


def test_each_child_imports_the_app_afresh_and_reads_its_own_configuration(
    probe_dir: Path,
) -> None:
    app = REPO / "app"
    outs = []
    for port in ("8081", "8082"):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(app), str(REPO)]),
            "API_TOKEN": "t" * 32,
            "DATABASE_URL": "postgresql://a@127.0.0.1:1/x",
            "PORT": port,
        }
        done = app_process.run(
            [sys.executable, "-m", "probe", "app"], cwd=probe_dir, env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr
        outs.append(json.loads(done.stdout))
    assert [o["before"] for o in outs] == [[], []]
    assert [o["port"] for o in outs] == [8081, 8082]
    assert outs[0]["file"] == str(app / "shortener" / "config.py")


def test_the_preloaded_libraries_are_what_the_app_imports_anyway(tmp_path: Path) -> None:
    """A plain `python -m shortener` that gets as far as starting uvicorn (then finds no
    database and exits 1) has imported every module the server preloads."""
    dump = tmp_path / "modules.json"
    script = textwrap.dedent(
        f"""
        import atexit, json, runpy, sys
        atexit.register(lambda: open({str(dump)!r}, "w").write(json.dumps(sorted(sys.modules))))
        sys.argv = ["-m"]
        runpy.run_module("shortener", run_name="__main__", alter_sys=True)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "app"),
        "API_TOKEN": "t" * 32,
        "DATABASE_URL": "postgresql://a@127.0.0.1:1/x",
        "STARTUP_DB_TIMEOUT_SECONDS": "0.2",
        "PORT": str(free_port()),
        "METRICS_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO / "app", env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert b"the server did not start" in done.stdout + done.stderr
    imported = set(json.loads(dump.read_text()))
    assert set(app_server.PRELOAD) - imported == set()
