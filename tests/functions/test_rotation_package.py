"""The rotation function's archive (infra/packaging.py, the housekeeping job's packaging): its own
handler, the job's credentials code and CA bundle as real files (the function directory holds
them as links to the job's), the job's pins; the archive imports and reads its settings in a
fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra import packaging
from tests.functions.test_packaging import archive_for_this_interpreter
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
def test_the_archive_imports_in_a_fresh_process(tmp_path: Path) -> None:
    zip_path = archive_for_this_interpreter(ROTATION, tmp_path)
    task = tmp_path / "task"
    with zipfile.ZipFile(zip_path) as z:
        # real files in the archive, never links
        for info in z.infolist():
            assert (info.external_attr >> 16) & 0o170000 != 0o120000, info.filename
        z.extractall(task)
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
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(task)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('createSecret', 'setSecret', 'testSecret', 'finishSecret')"
