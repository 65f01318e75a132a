"""Shared fixtures: plans of the project's stacks, made once per test run by the offline engine.

Under pytest-xdist (`-n`) every worker is a process of its own: the first worker that needs a
stack's plan makes it, under a file lock, and leaves it (pickled) in the run's shared temporary
folder; the others read it. It is made through the kit's own Plan cache (backbone.cache, keyed by
the content of the program, the stack file, app/ and the SDK versions), the one `backbone plan`
and the other commands read: the CLI tests of a shipped stack take the Plan this fixture made
instead of running the program again. One synthesis per stack per run (none when nothing that
decides a Plan changed since the last run).
"""

from __future__ import annotations

import fcntl
import functools
import gc
import os
import pickle
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backbone import cache
from backbone.plan import Plan
from backbone.synth import resolve
from tests import boto_share, cli_harness, procs, realparts
from tests.realparts import require_tool

REPO = Path(__file__).resolve().parent.parent
_ZYGOTE = pytest.StashKey["object"]()

boto_share.install()  # one botocore model cache per test process (tests/boto_share.py)


def _shared_plan(folder: Path, stack: str) -> Plan:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stack}.pickle"
    with open(folder / f"{stack}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            plan: Plan = pickle.loads(path.read_bytes())
            return plan
        plan = cache.plan(resolve(stack, cwd=REPO))[0]
        path.write_bytes(pickle.dumps(plan))
        return plan


@pytest.fixture(scope="session")
def plan_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Plan]:
    """plan_of("dev") -> the Plan of stacks/Pulumi.dev.yaml (made once per run, shared)."""
    base = tmp_path_factory.getbasetemp()
    # xdist: basetemp is per worker (.../popen-gw0); its parent is the run's, shared by all.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return functools.cache(functools.partial(_shared_plan, root / "backbone-plans"))


CHECKOV_HOW = "python3 -m venv .tools/venv && .tools/venv/bin/pip install 'checkov>=3.2,<4'"


@pytest.fixture(scope="session")
def checkov(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An executable that is checkov run once per distinct scan in this test run
    (tests/checkov_cache.py): the Dockerfile that `backbone check` and the policy tests both scan
    with the same arguments is scanned once, whichever worker asks first; and the scans share one
    start of checkov (tests/checkov_server.py), which lives as long as the run's main process."""
    real = require_tool("checkov", CHECKOV_HOW)
    base = tmp_path_factory.getbasetemp()
    xdist = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    root = base.parent if xdist else base
    owner = procs.run_owner()
    wrapper = base / "checkov"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(REPO / 'tests' / 'checkov_cache.py'))} "
        f'{shlex.quote(str(root / "backbone-checkov"))} {owner} {shlex.quote(real)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


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


# pytest-xdist (`make test`: --dist loadgroup): tests spread over the workers one by one, so the
# long real-part files (verify, the app's faults and rotations, bootstrap...) run side by side;
# the files below stay whole on one worker, because their module- or session-scoped fixtures are
# costly to make twice (a synthesis of harness stacks, a build, a server or cluster per module).
TOGETHER = frozenset(
    {
        "test_workload.py",  # the harness project's stacks, synthesised once per session
        "test_manifests.py",  # the harness plan and the rendered manifests, per module
        "test_observability_scrape.py",  # the app and Prometheus, started once per module
        "test_host_boot.py",  # PostgreSQL on Docker's bridge, per module
        "functions/test_housekeeping.py",  # a TLS PostgreSQL cluster per module
        "test_verify.py",  # moto warmed up and each stack deployed once per module
        "test_bootstrap.py",  # moto warmed up once per module
        "test_worker_zygote.py",  # a zygote, started once per module
        "test_config_drift.py",  # every module of the program and the tool parsed, per module
        "app/test_bad_input.py",  # the app and its migrated database, started once per module
    }
)


def pytest_configure(config: pytest.Config) -> None:
    # A test process keeps a few hundred thousand long-lived objects (modules, Plans, emulator
    # state) that every full collection walks again: about 80 ms each, some 15 per worker.
    # Full collections ten times rarer; the young generations as usual.
    gc.set_threshold(700, 10, 100)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    # The run's main process: the run's servers (checkov's, the zygote) leave when it is gone.
    os.environ[procs.RUN_PID] = str(os.getpid())
    if not getattr(config.option, "numprocesses", None) or config.getvalue("collectonly"):
        return
    # The xdist controller, before it starts the workers: the workers forked from one warmed-up
    # process (tests/worker_zygote.py), and each test module's asserts rewritten once for all
    # of them (tests/rewrite_cache.py), both at once.
    from tests import rewrite_cache, worker_zygote

    zygote = worker_zygote.Zygote.start(REPO)
    rewrite_cache.prepare(config, REPO / "tests")
    if zygote is not None and zygote.ready():
        config.option.tx = [zygote.spec(tx) for tx in config.option.tx]
        config.stash[_ZYGOTE] = zygote
        os.environ[worker_zygote.RUN_ZYGOTE] = zygote.path  # the workers' env: tests of it


def pytest_unconfigure(config: pytest.Config) -> None:
    zygote = config.stash.get(_ZYGOTE, None)
    if zygote is not None:
        zygote.stop()
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        realparts.forget_run_paths(os.getpid())  # the variant locks, the initdb templates


def _together(nodeid: str) -> str | None:
    """The file a test is kept on one worker with (TOGETHER), if it is."""
    path = nodeid.split("::", 1)[0]
    rel = path.removeprefix("tests/")
    return rel if rel in TOGETHER else None


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: `-p no:xdist` has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup`: the files of TOGETHER each on one worker, every other test on its
    own. xdist's own loadgroup reads `xdist_group` marks by renaming a test's node id, which
    pytest 9.2 no longer reads back (the marks were silently ignored and each of those files'
    costly module fixtures was made on up to four workers); the group is taken from the node id
    here instead."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class Together(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _together(nodeid) or nodeid

    return Together(config, log)


_RAN_ON: dict[str, set[str]] = {}  # the controller's record: a TOGETHER file -> its workers


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    node = getattr(report, "node", None)  # set by xdist on the controller's copy of a report
    group = _together(report.nodeid)
    if node is not None and group is not None:
        _RAN_ON.setdefault(group, set()).add(str(node.gateway.id))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    split = {group: sorted(on) for group, on in _RAN_ON.items() if len(on) > 1}
    # the grouping broke (as a pytest upgrade once did, silently): say so, and fail
    if split and session.config.getvalue("dist") == "loadgroup":
        print(f"\nTOGETHER files ran on several workers: {split}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The workers take tests in this order: the files kept whole and the real-part tests first,
    # which mostly wait on a server, a container or a timeout and make the longest chains; the
    # offline tests, short and busy, then fill the cores until the last worker is done.
    together: list[pytest.Item] = []
    waits: list[pytest.Item] = []
    busy: list[pytest.Item] = []
    for item in items:
        if _together(item.nodeid):
            together.append(item)
        else:
            (waits if item.get_closest_marker("realpart") else busy).append(item)
    # after the files kept whole, each real-part test followed by a few offline ones: while
    # some workers wait, the others compute (all four waiting at once left the cores idle)
    per = max(1, len(busy) // (3 * max(1, len(waits))))
    mixed: list[pytest.Item] = []
    for n, item in enumerate(waits):
        mixed.append(item)
        mixed.extend(busy[n * per : (n + 1) * per])
    mixed.extend(busy[len(waits) * per :])
    items[:] = together + mixed
