"""The suite's own shortcuts behave as what they stand in for.

- tests/boto_share.py: a botocore Session whose built-in handlers were copied has, for every
  event, the handlers botocore's own registration gives, and an emitter of its own.
- tests/realparts.initdb_once: the caller's initdb runs once per command; every cluster after it
  is a separate copy of its files, modes included; a failed initdb leaves no template.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import botocore.handlers
import botocore.hooks
import botocore.session
import pytest

from tests import boto_share, procs, realparts

# events botocore's built-in handlers listen to, and some a request emits
EVENTS = sorted(
    {spec[0] for spec in botocore.handlers.BUILTIN_HANDLERS}
    | {
        "before-parameter-build.s3.PutObject",
        "before-call.ec2.DescribeVpcs",
        "needs-retry.rds.DescribeDBInstances",
        "choose-signer.secretsmanager.GetSecretValue",
        "after-call.sts.GetCallerIdentity",
    }
)


def _handlers(session: botocore.session.Session, event: str) -> list[object]:
    return list(session._original_handler._handlers.prefix_search(event))  # type: ignore[attr-defined]


def test_a_session_with_copied_handlers_has_botocores_own() -> None:
    boto_share.install()
    botocore.session.Session()  # the first one registers; the ones after it copy
    copied = botocore.session.Session()
    # botocore's own registration, one by one, into an emitter made here
    registered = botocore.session.Session(include_builtin_handlers=False)
    boto_share._register_builtin_handlers(registered, registered._events)  # type: ignore[attr-defined]
    assert len(EVENTS) > 100
    for event in EVENTS:
        assert _handlers(copied, event) == _handlers(registered, event), event
    assert copied._events._emitter is copied._original_handler  # type: ignore[attr-defined]


def test_a_session_given_an_emitter_keeps_it_and_gets_the_handlers_in_it() -> None:
    boto_share.install()
    botocore.session.Session()
    hooks = botocore.hooks.HierarchicalEmitter()
    given = botocore.session.Session(event_hooks=hooks)
    assert given._original_handler is hooks  # type: ignore[attr-defined]
    copied = botocore.session.Session()
    for event in EVENTS:
        assert _handlers(given, event) == _handlers(copied, event), event


def test_each_session_has_an_emitter_of_its_own() -> None:
    boto_share.install()
    first, second = botocore.session.Session(), botocore.session.Session()
    assert first._original_handler is not second._original_handler  # type: ignore[attr-defined]

    def mine(**_: object) -> None:
        return None

    first.register("before-call.ec2.DescribeVpcs", mine)
    assert mine in _handlers(first, "before-call.ec2.DescribeVpcs")
    assert mine not in _handlers(second, "before-call.ec2.DescribeVpcs")
    assert mine not in _handlers(botocore.session.Session(), "before-call.ec2.DescribeVpcs")


def test_a_built_in_handler_added_later_reaches_the_next_session() -> None:
    # moto adds its own to BUILTIN_HANDLERS when it is imported
    boto_share.install()
    botocore.session.Session()

    def late(**_: object) -> None:
        return None

    botocore.handlers.BUILTIN_HANDLERS.append(("before-send", late))
    try:
        # the first Session after the change registers them all; the next one copies those
        for _ in range(2):
            assert late in _handlers(botocore.session.Session(), "before-send.s3.GetObject")
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(("before-send", late))
    assert late not in _handlers(botocore.session.Session(), "before-send.s3.GetObject")


def _cluster_files(folder: Path) -> None:
    """A stand-in for initdb: a data folder with a private file."""
    folder.mkdir()
    (folder / "PG_VERSION").write_text("15\n")
    (folder / "postgresql.conf").write_text("# made once\n")
    (folder / "postgresql.conf").chmod(0o600)


@pytest.fixture
def own_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A run of its own, so the templates made here are this test's, and removed after it."""
    run = 900_000_000 + os.getpid()
    monkeypatch.setenv(procs.RUN_PID, str(run))
    yield run
    realparts.forget_run_paths(run)


def test_initdb_runs_once_per_command_and_each_cluster_is_a_copy(
    own_run: int, tmp_path: Path
) -> None:
    made: list[Path] = []

    def make(folder: Path) -> None:
        made.append(folder)
        _cluster_files(folder)

    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    realparts.initdb_once("initdb -E UTF8", first, make)
    realparts.initdb_once("initdb -E UTF8", second, make)
    assert len(made) == 1  # the second cluster is a copy
    realparts.initdb_once("initdb -E SQL_ASCII", other, make)
    assert len(made) == 2  # another command, another template
    assert str(own_run) in made[0].parent.name  # the run's own
    for data in (first, second, other):
        assert (data / "PG_VERSION").read_text() == "15\n"
        assert stat.S_IMODE((data / "postgresql.conf").stat().st_mode) == 0o600
    # separate clusters: what one changes, the other does not see
    (first / "postgresql.conf").write_text("port = 1\n")
    assert (second / "postgresql.conf").read_text() == "# made once\n"


def test_a_failed_initdb_leaves_no_template(own_run: int, tmp_path: Path) -> None:
    def fails(folder: Path) -> None:
        folder.mkdir()
        (folder / "PG_VERSION").write_text("half made")
        raise RuntimeError("initdb failed")

    with pytest.raises(RuntimeError, match="initdb failed"):
        realparts.initdb_once("initdb --broken", tmp_path / "a", fails)
    assert not (tmp_path / "a").exists()
    realparts.initdb_once("initdb --broken", tmp_path / "b", _cluster_files)  # made afresh
    assert (tmp_path / "b" / "PG_VERSION").read_text() == "15\n"
