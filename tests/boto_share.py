"""One botocore data loader per test process.

botocore parses its JSON models (a service's API, endpoints.json, partitions) once per Session,
in that Session's Loader. A real `backbone verify` or `bootstrap` is one process with one
session, so it parses each model once. The tests make many sessions in one process: each test's
fresh boto3 default session, each in-process CLI run (tests/cli_harness.py), moto's backends in
the same process. Each of those used to parse the same files again; about a sixth of the
suite's CPU went to that.

install() makes every Session in this process take its Loader from one cache keyed by the data
path (AWS_DATA_PATH), as if they were one session, and every client of a service one class. A
Loader only reads the files botocore ships (and the data path's), so sharing it changes no
request and no answer: credentials, region, endpoint and retry settings stay per session and per
client.
"""

from __future__ import annotations

import functools
from typing import Any

import botocore.client
import botocore.loaders
import botocore.session

_create_loader = botocore.loaders.create_loader


@functools.cache
def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    return _create_loader(search_path_string)


_create_client_class = botocore.client.ClientCreator._create_client_class


_CLASSES: dict[tuple[str, int, str], type] = {}


def _shared_client_class(self: Any, service_name: str, service_model: Any) -> type:
    """A service's client class, made once per process: building it (a method per operation,
    then botocore's and boto3's default handlers adding theirs) was two fifths of a client's
    creation, paid again by every session. The key is the service's parsed model, which the
    shared Loader makes once; every session of the tests has the default handlers."""
    key = (service_name, id(service_model._service_description), service_model.api_version)
    if key not in _CLASSES:
        _CLASSES[key] = _create_client_class(self, service_name, service_model)
    return _CLASSES[key]


def install() -> None:
    """Every botocore Session made after this call shares one Loader per data path, and every
    client of a service one class."""
    botocore.session.create_loader = _shared_loader  # type: ignore[attr-defined]
    botocore.client.ClientCreator._create_client_class = _shared_client_class  # type: ignore[method-assign]
