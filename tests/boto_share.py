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
client. A new Session's event handlers (botocore's built-in ones, some hundred and thirty, and
moto's once it is imported) are a copy of the first such Session's, as botocore itself copies a
session's handlers into each client: registering them one by one takes 5-9 ms per Session, a
copy about a tenth of that (0.7-1 ms), and a test process makes some hundreds of Sessions.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import botocore.client
import botocore.handlers
import botocore.hooks
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


_session_init = botocore.session.Session.__init__
_register_builtin_handlers = botocore.session.Session._register_builtin_handlers
_BUILTIN: dict[tuple[object, ...], botocore.hooks.HierarchicalEmitter] = {}


def _session_init_noting_its_emitter(self: Any, *args: Any, **kwargs: Any) -> None:
    """Session.__init__, noting whether the Session makes its own emitter (no event_hooks given):
    only such a Session's built-in handlers are copied."""
    given = args[1] if len(args) > 1 else kwargs.get("event_hooks")
    self._backbone_own_emitter = given is None
    _session_init(self, *args, **kwargs)


def _copied_builtin_handlers(self: Any, events: Any) -> None:
    """Session.__init__'s registration of the built-in handlers into the emitter the Session
    made itself: the handlers a first such Session registered, copied. The key is the list
    registered (botocore.handlers.BUILTIN_HANDLERS, which moto extends when imported). A Session
    given an emitter of its own (event_hooks) has them registered into it, as botocore does."""
    if not getattr(self, "_backbone_own_emitter", False) or events is not self._events:
        _register_builtin_handlers(self, events)
        return
    key = tuple((spec[0], *map(id, spec[1:])) for spec in botocore.handlers.BUILTIN_HANDLERS)
    if key not in _BUILTIN:
        _register_builtin_handlers(self, events)
        _BUILTIN[key] = copy.copy(self._original_handler)
        return
    handlers = copy.copy(_BUILTIN[key])
    handlers._lookup_cache = {}
    self._original_handler = handlers
    self._events = botocore.hooks.EventAliaser(handlers)


def install() -> None:
    """Every botocore Session made after this call shares one Loader per data path, and every
    client of a service one class; each Session's built-in handlers are a copy."""
    botocore.session.create_loader = _shared_loader  # type: ignore[attr-defined]
    botocore.client.ClientCreator._create_client_class = _shared_client_class  # type: ignore[method-assign]
    botocore.session.Session.__init__ = _session_init_noting_its_emitter  # type: ignore[method-assign]
    botocore.session.Session._register_builtin_handlers = _copied_builtin_handlers  # type: ignore[method-assign]
