"""The rotation function's archive (infra/packaging.py, the housekeeping job's packaging): its own
handler, the job's credentials code and CA bundle as real files (the function directory holds
them as links to the job's), the job's pins; the archive imports and reads its settings in a
fresh interpreter."""

from __future__ import annotations

import zipfile

import pytest

from infra import packaging
from tests.functions.conftest import Archives, run_isolated
from tests.functions.test_packaging import this_interpreter
from tests.realparts import REPO

FUNCTIONS = REPO / "app" / "functions"
ROTATION = FUNCTIONS / "rotation"
HOUSEKEEPING = FUNCTIONS / "housekeeping"


def test_the_archive_holds_the_handler_and_the_jobs_credentials_code() -> None:
    spec = packaging.describe(ROTATION, architecture="arm64", python_version="3.12")
    assert spec.handler_files == ("certs/rds-global-bundle.pem", "housekeeping.py", "rotation.py")
    # one copy of the job's code, pins and CA bundle: the rotation directory links to them
    for name in ("housekeeping.py", "requirements.txt", "certs/rds-global-bundle.pem"):
        assert (ROTATION / name).read_bytes() == (HOUSEKEEPING / name).read_bytes(), name
    assert (
        spec.requirements
        == packaging.describe(
            HOUSEKEEPING, architecture="arm64", python_version="3.12"
        ).requirements
    )
    # a change to the job's credentials code changes the rotation's archive too (the key hashes
    # the bytes the links point at)
    assert spec.archive_name.startswith("rotation-arm64-py3.12-")


@pytest.mark.slow
def test_the_archive_imports_in_a_fresh_process(archives: Archives) -> None:
    # built after the job's archive in the same build directory, it takes the job's installed
    # dependencies (the same pins, the same platform): a pip that always fails is never run
    job = archives.build(HOUSEKEEPING, **this_interpreter())
    zip_path = archives.build(ROTATION, pip=["false"], **this_interpreter())
    own = packaging.describe(ROTATION).handler_files
    job_own = packaging.describe(HOUSEKEEPING).handler_files
    with zipfile.ZipFile(zip_path) as z, zipfile.ZipFile(job) as j:
        # real files in the archive, never links
        for info in z.infolist():
            assert (info.external_attr >> 16) & 0o170000 != 0o120000, info.filename
        deps = [n for n in z.namelist() if n not in own]
        assert deps == [n for n in j.namelist() if n not in job_own]
        assert all(z.read(n) == j.read(n) for n in deps)
    task = archives.unpacked(ROTATION, **this_interpreter())
    assert (task / "certs" / "rds-global-bundle.pem").read_bytes().startswith(b"-----BEGIN")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import rotation, housekeeping, psycopg; "
        "assert rotation.__file__.startswith(sys.argv[1]); "
        "assert housekeeping.__file__.startswith(sys.argv[1]); "
        "assert psycopg.__file__.startswith(sys.argv[1]); "
        "s = rotation.settings('arn:x', {'DB_HOST': 'h', 'DB_NAME': 'app'}); "
        "assert s.sslmode == 'verify-full' and s.sslrootcert.startswith(sys.argv[1]), s; "
        "print(rotation.STEPS)"
    )
    result = run_isolated(code, task)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('createSecret', 'setSecret', 'testSecret', 'finishSecret')"
