"""One botocore data loader per test process.

botocore parses its JSON models (a service's API, endpoints.json, partitions) once per Session,
in that Session's Loader. A real `backbone verify` or `bootstrap` is one process with one
session, so it parses each model once. The tests make many sessions in one process: each test's
fresh boto3 default session, each in-process CLI run (tests/cli_harness.py), moto's backends in
the same process. Each of those used to parse the same files again; about a sixth of the
suite's CPU went to that.

install() makes every Session in this process take its Loader from one cache keyed by the data
path (AWS_DATA_PATH), as if they were one session. A Loader only reads the files botocore ships
(and the data path's), so sharing it changes no request and no answer: credentials, region,
endpoint and retry settings stay per session and per client.
"""

from __future__ import annotations

import functools

import botocore.loaders
import botocore.session

_create_loader = botocore.loaders.create_loader


@functools.cache
def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    return _create_loader(search_path_string)


def install() -> None:
    """Every botocore Session made after this call shares one Loader per data path."""
    botocore.session.create_loader = _shared_loader  # type: ignore[attr-defined]
