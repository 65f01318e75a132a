"""infra/packaging.py: archives built for the Lambda platform, deterministic, cached.

The tests marked slow fetch wheels from the package index (PyPI) with pip. Each distinct archive
is built once per test run and shared (tests/functions/conftest.py `archives`); the determinism
test builds the job's archive a second time, from a fresh pip install, and compares the bytes."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from infra import packaging
from tests.functions.conftest import (
    FUNCTIONS,
    Archives,
    Postgres,
    datapoints,
    make_secret,
    run_isolated,
)
from tests.realparts import missing

CANARY = FUNCTIONS / "canary"
HOUSEKEEPING = FUNCTIONS / "housekeeping"
# ELF e_machine values
ELF_MACHINE = {"x86_64": 0x3E, "aarch64": 0xB7}


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as z:
        return z.namelist()


def dist_infos(zip_path: Path) -> dict[str, dict[str, str | list[str]]]:
    """Per installed distribution: its RECORD paths and its WHEEL tags, read from the archive."""
    out: dict[str, dict[str, str | list[str]]] = {}
    with zipfile.ZipFile(zip_path) as z:
        for name in z.namelist():
            if name.endswith(".dist-info/RECORD"):
                top = name.split("/")[0]
                record = z.read(name).decode()
                wheel = z.read(f"{top}/WHEEL").decode()
                out[top] = {
                    "record": [row[0] for row in csv.reader(io.StringIO(record)) if row],
                    "tags": [
                        line.split(":", 1)[1].strip()
                        for line in wheel.splitlines()
                        if line.startswith("Tag:")
                    ],
                }
    return out


def tag_fits(tag: str, python_tag: str, machine: str) -> bool:
    interpreter, abi, plat = tag.split("-")
    if plat == "any":
        return abi == "none" and (interpreter.startswith("py3") or interpreter == "py2.py3")
    return (
        interpreter == python_tag
        and abi in {python_tag, "abi3"}
        and plat.startswith("manylinux")
        and plat.endswith(machine)
    )


# ------------------------------------------------------------------ pure parts, no network


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    # a fresh interpreter imports the module: nothing printed, nothing created in the build dir
    env = {"BACKBONE_BUILD_DIR": str(tmp_path / "b"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import infra.packaging"],
        cwd=packaging.default_build_dir().parent.parent,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert (result.stdout, result.stderr) == ("", "")
    assert not (tmp_path / "b").exists()


def test_describe_lists_only_handler_files_and_pins() -> None:
    spec = packaging.describe(HOUSEKEEPING, architecture="arm64", python_version="3.13")
    assert spec.handler_files == ("certs/rds-global-bundle.pem", "housekeeping.py")
    assert "psycopg[binary]==3.3.9" in spec.requirements
    assert spec.pip_args[:4] == (
        "--platform",
        "manylinux2014_aarch64",
        "--platform",
        "manylinux_2_28_aarch64",
    )
    assert spec.pip_args[6:8] == ("--python-version", "3.13")
    assert "--only-binary=:all:" in spec.pip_args
    assert spec.python_tag == "cp313" and spec.machine == "aarch64"
    assert spec.archive_name.startswith("housekeeping-arm64-py3.13-")
    assert packaging.describe(CANARY).requirements == ()


def test_cache_key_moves_with_every_input(tmp_path: Path) -> None:
    fn = tmp_path / "fn"
    shutil.copytree(HOUSEKEEPING, fn, ignore=shutil.ignore_patterns("__pycache__"))
    base = packaging.describe(fn).cache_key
    assert packaging.describe(fn).cache_key == base  # stable
    assert packaging.describe(fn, architecture="arm64").cache_key != base
    assert packaging.describe(fn, python_version="3.13").cache_key != base
    # noise the archive never holds does not move the key
    (fn / "__pycache__").mkdir()
    (fn / "__pycache__" / "housekeeping.cpython-311.pyc").write_bytes(b"x")
    (fn / "README.md").write_text("notes")
    (fn / "tests").mkdir()
    (fn / "tests" / "test_it.py").write_text("")
    assert packaging.describe(fn).cache_key == base
    assert packaging.describe(fn).handler_files == (
        "certs/rds-global-bundle.pem",
        "housekeeping.py",
    )
    # a comment in the requirements does not either; a pin does
    req = fn / "requirements.txt"
    req.write_text(req.read_text() + "\n# a comment\n")
    assert packaging.describe(fn).cache_key == base
    req.write_text(req.read_text().replace("3.3.9", "3.3.8"))
    assert packaging.describe(fn).cache_key != base
    req.write_text((HOUSEKEEPING / "requirements.txt").read_text())
    (fn / "housekeeping.py").write_text((fn / "housekeeping.py").read_text() + "\n# edit\n")
    assert packaging.describe(fn).cache_key != base
    # so does a refreshed CA bundle: the archive carries it
    edited = packaging.describe(fn).cache_key
    bundle = fn / "certs" / "rds-global-bundle.pem"
    bundle.write_bytes(bundle.read_bytes() + b"\n")
    assert packaging.describe(fn).cache_key != edited


def test_bad_arguments_are_clear(tmp_path: Path) -> None:
    with pytest.raises(packaging.PackagingError, match="not one of arm64, x86_64"):
        packaging.describe(CANARY, architecture="amd64")
    with pytest.raises(packaging.PackagingError, match="does not exist"):
        packaging.describe(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(packaging.PackagingError, match="no Python module"):
        packaging.describe(tmp_path / "empty")


def test_canary_archive_is_exactly_its_handler_deterministic_and_imports(tmp_path: Path) -> None:
    # no requirements: pip never runs, no network needed
    first = packaging.build(CANARY, build_dir=tmp_path / "a")
    second = packaging.build(CANARY, build_dir=tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert names(first) == ["canary.py"]
    with zipfile.ZipFile(first) as z:
        [info] = z.infolist()
        assert info.date_time == packaging.FIXED_DATE_TIME
        assert (info.external_attr >> 16) & 0o777 == 0o644
        assert z.read("canary.py") == (CANARY / "canary.py").read_bytes()
    # A fresh, isolated interpreter (-I: no PYTHONPATH, no user site, no cwd on sys.path) with
    # the archive first on sys.path imports the handler from the archive. boto3 comes from this
    # interpreter's site-packages, standing in for the boto3 the Lambda runtime ships.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import canary; "
        "assert canary.__file__.startswith(sys.argv[1]), canary.__file__; "
        "assert callable(canary.handler); print('ok')"
    )
    result = run_isolated(code, first)
    assert result.stdout.strip() == "ok", result.stderr


def test_cache_hit_does_not_run_pip(tmp_path: Path) -> None:
    fn = tmp_path / "fn"
    fn.mkdir()
    (fn / "job.py").write_text("def handler(event, context):\n    return 1\n")
    (fn / "requirements.txt").write_text("example-dist==1.0\n")
    spec = packaging.describe(fn)
    cached = tmp_path / "build" / spec.archive_name
    cached.parent.mkdir()
    cached.write_bytes(b"already built")
    # a pip that always fails proves pip is not run on a hit
    assert packaging.build(fn, build_dir=tmp_path / "build", pip=["false"]) == cached
    with pytest.raises(packaging.PackagingError, match="pip could not install"):
        packaging.build(fn, build_dir=tmp_path / "other", pip=["false"])


# ------------------------------------------------------------------ real pip, real wheels


@pytest.fixture
def job_x86(archives: Archives) -> Path:
    return archives.build(HOUSEKEEPING, architecture="x86_64")


@pytest.mark.slow
def test_job_archive_holds_handler_and_cp312_x86_64_dependency_tree(job_x86: Path) -> None:
    spec = packaging.describe(HOUSEKEEPING, architecture="x86_64")
    all_names = names(job_x86)
    assert all_names == sorted(all_names)
    dists = dist_infos(job_x86)
    assert {d.split("-")[0] for d in dists} == {"psycopg", "psycopg_binary", "typing_extensions"}

    # every entry is the handler or a file that a wheel's RECORD lists; every RECORD file is in
    recorded = {
        p
        for d in dists.values()
        for p in d["record"]
        if not p.startswith("..") and "__pycache__" not in p
    }
    assert set(all_names) == set(spec.handler_files) | recorded

    # the wheels are for CPython 3.12 on manylinux x86_64 (or pure Python), not this machine's 3.11
    for dist, info in dists.items():
        assert all(tag_fits(t, "cp312", "x86_64") for t in info["tags"]), (dist, info["tags"])
    native = [n for n in all_names if n.endswith(".so") or ".so." in n]
    assert any(n.endswith(".cpython-312-x86_64-linux-gnu.so") for n in native)
    assert not any("cpython-311" in n for n in native)
    with zipfile.ZipFile(job_x86) as z:
        for n in native:
            head = z.read(n)[:20]
            assert head[:4] == b"\x7fELF"
            assert int.from_bytes(head[18:20], "little") == ELF_MACHINE["x86_64"], n
        infos = z.infolist()
    assert {i.date_time for i in infos} == {packaging.FIXED_DATE_TIME}

    # the RDS CA bundle, where the handler's default DB_SSLROOTCERT looks for it
    with zipfile.ZipFile(job_x86) as z:
        assert (
            z.read("certs/rds-global-bundle.pem")
            == (HOUSEKEEPING / "certs" / "rds-global-bundle.pem").read_bytes()
        )

    # nothing of the build machine: no bytecode, no scripts, no tests, no requirements file
    for n in all_names:
        p = PurePosixPath(n)
        assert "__pycache__" not in p.parts and p.suffix != ".pyc", n
        assert p.parts[0] != "bin" and "tests" not in p.parts, n
        assert p.name != "requirements.txt", n


@pytest.mark.slow
def test_job_archive_is_deterministic_and_cached(job_x86: Path, tmp_path: Path) -> None:
    again = packaging.build(HOUSEKEEPING, architecture="x86_64", build_dir=tmp_path)
    assert again != job_x86
    assert again.read_bytes() == job_x86.read_bytes()  # byte-identical from a fresh pip install
    hit = packaging.build(HOUSEKEEPING, architecture="x86_64", build_dir=tmp_path, pip=["false"])
    assert hit == again


@pytest.mark.slow
def test_arm64_archive_holds_aarch64_native_code(archives: Archives) -> None:
    zip_path = archives.build(HOUSEKEEPING, architecture="arm64")
    with zipfile.ZipFile(zip_path) as z:
        native = [n for n in z.namelist() if n.endswith(".so") or ".so." in n]
        assert any(n.endswith(".cpython-312-aarch64-linux-gnu.so") for n in native)
        for n in native:
            assert int.from_bytes(z.read(n)[18:20], "little") == ELF_MACHINE["aarch64"], n
    for dist, info in dist_infos(zip_path).items():
        assert all(tag_fits(t, "cp312", "aarch64") for t in info["tags"]), dist


def this_interpreter() -> dict[str, str]:
    """The architecture and Python version of THIS interpreter (so an archive built for them can
    be imported here); missing on a machine with no manylinux wheels."""
    machine = platform.machine()
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(machine)
    if arch is None or not sys.platform.startswith("linux"):
        missing(
            f"manylinux wheels for this machine ({sys.platform}/{machine})",
            "run on Linux x86_64 or aarch64",
        )
    assert arch is not None
    return {"architecture": arch, "python_version": f"{sys.version_info[0]}.{sys.version_info[1]}"}


def local_variant(archives: Archives) -> Path:
    """The job's archive built for this interpreter, unpacked as Lambda unpacks it into its task
    directory (native extensions cannot load from inside a zip)."""
    return archives.unpacked(HOUSEKEEPING, **this_interpreter())


@pytest.mark.slow
def test_job_archive_for_this_interpreter_imports_in_a_fresh_process(archives: Archives) -> None:
    """A cp312 extension cannot load under this 3.11 interpreter, so this check builds the same
    function for THIS interpreter's version and machine (the same code path, another tag) and
    imports the handler in a fresh ``python -I`` with the task directory first on sys.path. It
    proves the archive is complete and self-contained for psycopg (its binary implementation loads
    from the archive, not from site-packages); boto3 comes from this interpreter, as it comes from
    the runtime on Lambda. The cp312 archive itself is checked by its contents above."""
    task = local_variant(archives)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import housekeeping, psycopg; "
        "assert housekeeping.__file__.startswith(sys.argv[1]); "
        "assert psycopg.__file__.startswith(sys.argv[1]), psycopg.__file__; "
        "import psycopg_binary; assert psycopg_binary.__file__.startswith(sys.argv[1]); "
        "s = housekeeping.Settings.from_env({'DB_SECRET_ARN': 'a', 'STACK_NAME': 's'}); "
        "assert s.sslmode == 'verify-full' and s.sslrootcert.startswith(sys.argv[1]), s; "
        "print(psycopg.pq.__impl__)"
    )
    result = run_isolated(code, task)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "binary"


INVOKE = (
    "import json, sys; sys.path.insert(0, sys.argv[1]); mod = __import__(sys.argv[2]); "
    "assert mod.__file__.startswith(sys.argv[1]); "
    "print(json.dumps(mod.handler({}, None), default=str))"
)


def invoke_packaged(task: Path, module: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``module.handler`` from an unpacked archive in a fresh isolated interpreter."""
    base = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "PATH"))}
    result = subprocess.run(
        [sys.executable, "-I", "-B", "-c", INVOKE, str(task), module],
        capture_output=True,
        text=True,
        env={**base, **env},
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.realpart
def test_packaged_job_runs_against_postgres_and_moto(
    archives: Archives, db: Postgres, aws: str
) -> None:
    """The unpacked archive's handler, in a fresh process, does the whole job for real."""
    import psycopg

    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        conn.execute("INSERT INTO links (code, url) VALUES ('abc', 'https://a.example/')")
    arn = make_secret(db)
    task = local_variant(archives)
    env = {"DB_SECRET_ARN": arn, "STACK_NAME": "pkg", "DB_SSLMODE": "disable"}
    out = invoke_packaged(task, "housekeeping", env)
    assert (out["purged"], out["stats"]["links_total"]) == (0, 1)
    [ok] = datapoints("Backbone/Jobs", "Success", {"Stack": "pkg", "Job": "housekeeping"})
    assert ok["Sum"] == 1.0


def test_packaged_canary_runs_in_a_fresh_process(
    tmp_path: Path, aws: str, app_server: tuple[str, list[str]]
) -> None:
    zip_path = packaging.build(CANARY, build_dir=tmp_path)
    base, hits = app_server
    env = {"CANARY_BASE_URL": base, "CANARY_READ_PATH": "/api/links/canary", "STACK_NAME": "pkg"}
    out = invoke_packaged(zip_path, "canary", env)  # pure Python: straight from the zip
    assert out["ok"] is True and hits == ["/readyz", "/api/links/canary"]
    [a] = datapoints("Backbone/Canary", "Availability", {"Stack": "pkg", "Probe": "read"})
    assert a["Sum"] == 1.0
