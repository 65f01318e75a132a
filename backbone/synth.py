"""The offline engine: run the real Pulumi program in-process under mocks and return a Plan.

It loads the stack file exactly as the Pulumi CLI would hand it to the program (every value a
string, objects as JSON), runs ``infra/__main__.py`` inside a fresh context and a fresh event loop
against a recording resource monitor, and records each registration as the engine receives it:
the type token, the wire-form inputs, the parent, the provider reference, the dependencies and the
options (protect, retainOnDelete, deleteBeforeReplace, ignoreChanges, aliases). The mocks answer
with realistic outputs (backbone.mocks), so every ``apply`` runs.

No Pulumi CLI, no credentials, no network.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import os
import runpy
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import resource as presource
from pulumi.runtime import settings as psettings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.stack import run_in_stack

from backbone import yamlio
from backbone.mocks import BackboneMocks
from backbone.plan import SECRET, STACK_TYPE, Plan, Resource
from infra.config import ENGINE_NAMESPACE, PACKAGER_KEY, ConfigError, Problem, StackConfig, parse

# Pulumi's wire signatures (sdk/go/common/resource/sig).
SIG_KEY = "4dabf18193072939515e22adb298388d"
SIG_SECRET = "1b47061264138c4ac30d75fd1eb44270"
SIG_ASSET = "c44067f5952c0a294b673a41bacd8c17"
SIG_ARCHIVE = "0def7320c3a5731c473e5ecbe6d01bc7"
SIG_RESOURCE = "5cf8f73096256a8f31e491e813e4eb8e"
SIG_OUTPUT = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

# Top-level keys a Pulumi stack settings file may hold.
STACK_FILE_KEYS = {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"}


class StackNotFound(Exception):
    """The stack named on the command line has no settings file."""


@dataclass(frozen=True)
class StackRef:
    project_dir: Path
    project: str
    stack: str
    file: Path

    @property
    def shown(self) -> str:
        """The stack file as a user would name it: relative to the working directory if inside."""
        try:
            return str(self.file.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(self.file)


def find_project(start: Path | None = None) -> Path:
    """The folder of the nearest Pulumi.yaml, from `start` upward (as the pulumi CLI looks)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    raise StackNotFound(
        f"no Pulumi.yaml in {here} or any folder above it; run backbone inside the project, "
        "or name a stack file by its path"
    )


def _project_file(project_dir: Path) -> dict[str, Any]:
    data = yamlio.safe_load((project_dir / "Pulumi.yaml").read_text()) or {}
    return data if isinstance(data, dict) else {}


def _project_name(project_dir: Path) -> str:
    return str(_project_file(project_dir).get("name", "backbone"))


def _stack_dir(project_dir: Path) -> Path:
    return project_dir / str(_project_file(project_dir).get("stackConfigDir", "."))


def program_dir(project_dir: Path) -> Path:
    """Where the program is: Pulumi.yaml's `main` (a folder with __main__.py), as the CLI reads it."""
    return project_dir / str(_project_file(project_dir).get("main", "."))


def available_stacks(project_dir: Path) -> list[str]:
    return sorted(
        p.name[len("Pulumi.") : -len(".yaml")]
        for p in _stack_dir(project_dir).glob("Pulumi.*.yaml")
    )


def resolve(stack: str, cwd: Path | None = None) -> StackRef:
    """A stack name (found in the project's stack folder) or a path to a stack settings file."""
    cwd = cwd or Path.cwd()
    as_path = Path(stack)
    if not as_path.is_absolute():
        as_path = cwd / as_path
    looks_like_path = os.sep in stack or stack.endswith((".yaml", ".yml"))
    if looks_like_path or as_path.is_file():
        if not as_path.is_file():
            raise StackNotFound(f"{stack}: no such stack settings file")
        name = as_path.name
        if name.startswith("Pulumi.") and name.endswith((".yaml", ".yml")):
            name = name[len("Pulumi.") :].rsplit(".", 1)[0]
        else:
            name = as_path.stem
        try:
            project_dir = find_project(as_path.parent)
        except StackNotFound:
            project_dir = find_project(cwd)
        return StackRef(project_dir, _project_name(project_dir), name, as_path)
    project_dir = find_project(cwd)
    file = _stack_dir(project_dir) / f"Pulumi.{stack}.yaml"
    if not file.is_file():
        known = available_stacks(project_dir)
        raise StackNotFound(
            f"no stack named {stack!r}: {file} does not exist; allowed: "
            + (", ".join(known) if known else "(no stacks yet)")
            + ", or a path to a stack settings file"
        )
    return StackRef(project_dir, _project_name(project_dir), stack, file)


def _wire(value: Any) -> str:
    """A YAML config value as the Pulumi CLI passes it to a program."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def read_config(ref: StackRef) -> tuple[dict[str, str], list[str]]:
    """The stack file's config as the engine passes it, and the secret keys.

    Secure values (`secure: v1:...`) can only be decrypted by the Pulumi CLI; offline they become
    the placeholder `[secret]` and are marked secret, so nothing downstream can print them.
    """
    source = ref.shown
    config = _config_mapping(_stack_file(ref), source)
    return _wire_config(config, source)


def _stack_file(ref: StackRef) -> dict[Any, Any]:
    """The stack file's top-level mapping (empty for an empty file), or ConfigError."""
    source = ref.shown
    try:
        data = yamlio.safe_load(ref.file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem("", f"{where}not valid YAML ({problem})")]) from None
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read the file ({exc.strerror})")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [
                Problem(
                    "",
                    f"the file holds a {type(data).__name__}; allowed: a mapping with a "
                    "`config:` key, as `pulumi config set` writes it",
                )
            ],
        )
    return data


def _config_mapping(data: dict[Any, Any], source: str) -> dict[Any, Any]:
    """The `config:` mapping of a stack file whose top-level keys are all Pulumi's."""
    problems = [
        Problem(str(k), f"unknown top-level key; allowed: {', '.join(sorted(STACK_FILE_KEYS))}")
        for k in data
        if k not in STACK_FILE_KEYS
    ]
    config = data.get("config") or {}
    if not isinstance(config, dict):
        problems.append(Problem("config", "must be a mapping of `namespace:key: value`"))
        config = {}
    if problems:
        raise ConfigError(source, problems)
    return config


def _wire_config(config: dict[Any, Any], source: str) -> tuple[dict[str, str], list[str]]:
    """Each value as the CLI passes it (secure ones as SECRET, their keys listed); the engine's
    own namespace refused."""
    problems: list[Problem] = []
    raw: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in config.items():
        key = str(key)
        if key.partition(":")[0] == ENGINE_NAMESPACE:
            problems.append(
                Problem(key, "set by the engine, never in a stack file; allowed: remove it")
            )
        elif isinstance(value, dict) and set(value) == {"secure"}:
            raw[key] = SECRET
            secret_keys.append(key)
        else:
            raw[key] = _wire(value)
    if problems:
        raise ConfigError(source, problems)
    return raw, secret_keys


def load_config(ref: StackRef) -> StackConfig:
    """The stack's validated config, or ConfigError."""
    raw, _ = read_config(ref)
    return parse(raw, source=ref.shown, stack=ref.stack)


# --------------------------------------------------------------------------------------------
# The recording monitor


def _plain(value: Any) -> Any:
    """Wire values to plain, printable JSON: secrets masked, assets and references named."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SIG_SECRET:
            return SECRET
        if sig == SIG_RESOURCE:
            return value.get("urn")
        if sig == SIG_ASSET:
            return {"asset": value.get("path") or value.get("uri") or "[text]"}
        if sig == SIG_ARCHIVE:
            if "assets" in value:
                return {"archive": sorted((value.get("assets") or {}).keys())}
            return {"archive": value.get("path") or value.get("uri")}
        if sig == SIG_OUTPUT:
            return SECRET if value.get("secret") else _plain(value.get("value"))
        # Sorted, as `pulumi preview --json` writes them: the same plan prints the same bytes.
        return {k: _plain(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _provider_urn(ref: str) -> str | None:
    return ref.split("::" + UNKNOWN)[0].rsplit("::", 1)[0] if ref else None


class RecordingMonitor(pmocks.MockMonitor):
    """The mock monitor, keeping every registration request as the engine would receive it."""

    mocks: BackboneMocks

    def __init__(self, mocks: BackboneMocks) -> None:
        super().__init__(mocks)
        self.records: list[Resource] = []
        self.stack_outputs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._defaults: set[str] = set()
        self.thread_loops: set[asyncio.AbstractEventLoop] = set()

    def _note_loop(self) -> None:
        """Pulumi gives each executor thread an event loop of its own (for mocks) and never
        closes it; noted here so run_program can close them, rather than the garbage collector
        at interpreter exit, where closing fails noisily."""
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return
        with self._lock:
            self.thread_loops.add(loop)

    def Invoke(self, request: Any) -> Any:
        try:
            return super().Invoke(request)
        finally:
            self._note_loop()

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # As the real engine: the root stack does not prefix its children's types.
        if f"::{STACK_TYPE}::" in parent:
            parent = ""
        return super().make_urn(parent, type_, name)

    def RegisterResource(self, request: Any) -> Any:
        # As the engine does: outputs the provider declares secret come back as secrets.
        self.mocks.expect_secret_outputs(list(request.additionalSecretOutputs))
        response = super().RegisterResource(request)
        self._note_loop()
        if request.type != STACK_TYPE:
            provider = _provider_urn(request.provider)
            if request.custom and not provider and not request.type.startswith("pulumi:providers:"):
                provider = self._default_provider(request.type.split(":")[0], request.version)
            inputs = _plain(json_format.MessageToDict(request.object))
            inputs.pop("__defaults", None)
            record = Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=bool(request.custom),
                parent=request.parent or None,
                provider=provider,
                inputs=inputs,
                dependencies=sorted(set(request.dependencies)),
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                delete_before_replace=bool(request.deleteBeforeReplace),
                ignore_changes=list(request.ignoreChanges),
                custom_timeouts={
                    op: value
                    for op in ("create", "update", "delete")
                    if (value := getattr(request.customTimeouts, op))
                },
                aliases=[a.urn for a in request.aliases if a.urn]
                + [a.spec.name for a in request.aliases if a.HasField("spec") and a.spec.name],
                id=response.id or None,
                # what the engine answered (mocked): ids, ARNs, endpoints; secrets masked
                outputs=_plain(json_format.MessageToDict(response.object)),
            )
            with self._lock:
                self.records.append(record)
        return response

    def _default_provider(self, package: str, version: str) -> str:
        """The engine makes a default provider per package and version for resources given no
        provider (`default_4_21_4`); record it as the engine would, once."""
        name = "default" + (f"_{version.replace('.', '_')}" if version else "")
        urn = (
            f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}"
            f"::pulumi:providers:{package}::{name}"
        )
        with self._lock:
            if urn not in self._defaults:
                self._defaults.add(urn)
                self.records.append(
                    Resource(
                        urn=urn,
                        type=f"pulumi:providers:{package}",
                        name=name,
                        custom=True,
                        inputs={"version": version} if version else {},
                    )
                )
        return urn

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if f"::{STACK_TYPE}::" in request.urn:
            self.stack_outputs = _plain(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)


def _tree_order(resources: list[Resource], root: str) -> list[Resource]:
    """Parents before children, siblings by type then name: the same order every run."""
    by_parent: dict[str | None, list[Resource]] = {}
    for r in resources:
        by_parent.setdefault(r.parent, []).append(r)
    out: list[Resource] = []

    def walk(parent: str | None) -> None:
        for r in sorted(
            by_parent.get(parent, []), key=lambda r: (r.is_provider is False, r.type, r.name)
        ):
            out.append(r)
            walk(r.urn)

    walk(root)
    walk(None)
    seen = {id(r) for r in out}
    out.extend(r for r in resources if id(r) not in seen)
    return out


def _run_main(program: Path) -> None:
    # As the Python language host runs `main`: the folder itself, so its __main__.py runs with
    # the folder first on sys.path (infra/__main__.py must find the project's packages itself).
    runpy.run_path(str(program), run_name="__main__")


_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class _InlineLoop(asyncio.SelectorEventLoop):
    """The offline engine's event loop: what the SDK hands its default executor (each call to
    the resource monitor: register, invoke, outputs) runs at once on the loop's own thread.
    The calls are the mocks', which answer without waiting on anything; a thread hop each way
    for each of some thousand calls was a tenth of a synthesis."""

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*_Ts], _T], *args: *_Ts
    ) -> asyncio.Future[_T]:
        if executor is not None:
            return super().run_in_executor(executor, func, *args)
        future: asyncio.Future[_T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # delivered to the awaiting task, as from a thread
            future.set_exception(exc)
        return future


def _no_stack_trace() -> Any:
    return source_pb2.StackTrace()


def _engine(
    project: str,
    stack: str,
    root_directory: Path,
    raw: Mapping[str, str],
    secret_keys: list[str],
    monitor: RecordingMonitor,
    body: Callable[[], Any],
) -> Plan:
    """Run `body` as the program of `project`/`stack` against `monitor`, with `raw` config, as
    the engine would, and return the Plan it registered. Call it inside a fresh
    contextvars.Context: Pulumi keeps its settings there."""
    loop = _InlineLoop()
    asyncio.set_event_loop(loop)
    settings = psettings.Settings(
        project=project,
        stack=stack,
        monitor=monitor,
        engine=pmocks.MockEngine(None),
        dry_run=True,
        organization="organization",
        root_directory=str(root_directory),
    )
    psettings.configure(settings)
    psettings.ROOT.set(None)
    # The offline engine's stand-in, chosen through the engine's own config channel: the program
    # packages no Lambda archive (infra.config.PACKAGER_KEY).
    set_all_config({**raw, PACKAGER_KEY: "placeholder"}, secret_keys)
    # For each registration the SDK walks the program's call stack into a source position and
    # a stack trace, for the engine's diagnostics. A Plan records neither, and the walk was a
    # sixth of a synthesis: the offline engine is sent an empty trace instead.
    stack_trace, presource._get_stack_trace = presource._get_stack_trace, _no_stack_trace
    collecting, modules = gc.isenabled(), len(sys.modules)
    # The first run imports the providers' SDKs: ~300k long-lived objects (input types, typing
    # aliases) that the collector would otherwise walk again in every full collection, several
    # times while they load and once in every later run. Collection waits until the run ends.
    gc.disable()
    try:
        loop.run_until_complete(run_in_stack(body))
    finally:
        presource._get_stack_trace = stack_trace
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        for thread_loop in monitor.thread_loops:
            if not thread_loop.is_running():
                thread_loop.close()
        asyncio.set_event_loop(None)
        if collecting:
            if len(sys.modules) > modules:
                # New modules stay for the life of the process: collect the run's garbage once,
                # then keep what is left (the modules) out of every later collection.
                gc.collect()
                gc.freeze()
            gc.enable()
    root = f"urn:pulumi:{stack}::{project}::{STACK_TYPE}::{project}-{stack}"
    resources = _tree_order(monitor.records, root)
    return Plan(stack, project, resources, monitor.stack_outputs)


def run_program(
    ref: StackRef, raw: dict[str, str], secret_keys: list[str], monitor: RecordingMonitor
) -> Plan:
    """Run infra/__main__.py against `monitor` with `raw` config, as the engine would.

    Call it inside a fresh contextvars.Context (synth does): Pulumi keeps its settings there.
    """
    program = program_dir(ref.project_dir)
    return _engine(
        ref.project,
        ref.stack,
        ref.project_dir,
        raw,
        secret_keys,
        monitor,
        lambda: _run_main(program),
    )


def synth_component(
    build: Callable[[], Mapping[str, Any] | object],
    *,
    stack: str = "test",
    project: str = "backbone",
    region: str = "us-east-1",
    config: Mapping[str, str] | None = None,
) -> Plan:
    """Run `build` (one component made with minimal arguments) in-process under the offline
    engine and return its Plan: the same recording monitor, mocks, settings channel and order
    as `synth`, with no stack file and no infra/__main__.py.

        plan = synth_component(lambda: Network("network", NetworkConfig(), region="us-east-1"))
        plan.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"]

    `build` runs as the program of `project`/`stack` (what pulumi.get_project()/get_stack()
    answer) in `region` (the mocks' ARNs and zones; `aws:region` in the config). A mapping it
    returns becomes the stack outputs (Plan.outputs), as `pulumi.export` would make them; any
    other return value is ignored. `config` adds engine config (`namespace:key` -> the string
    the Pulumi CLI would pass). Nothing is resolved from a stack file, so nothing is validated:
    the caller passes config models it made itself.
    """

    def body() -> None:
        made = build()
        if isinstance(made, Mapping):
            for key, value in made.items():
                pulumi.export(str(key), value)

    raw = {"aws:region": region, **(config or {})}
    monitor = RecordingMonitor(BackboneMocks(stack, project, region))
    plan = contextvars.Context().run(_engine, project, stack, Path.cwd(), raw, [], monitor, body)
    plan.settings = {"region": region}
    return plan


def synth(stack: str | StackRef, cwd: Path | None = None) -> Plan:
    """Run the program for a stack (name or settings file) offline and return its Plan.

    Raises infra.config.ConfigError for a bad stack file (before anything is registered) and
    StackNotFound for a stack that does not exist.
    """
    ref = stack if isinstance(stack, StackRef) else resolve(stack, cwd)
    raw, secret_keys = read_config(ref)
    # Validate first: the program would refuse the same way, but before it runs we can say so
    # without starting an engine.
    cfg = parse(raw, source=ref.shown, stack=ref.stack)
    monitor = RecordingMonitor(BackboneMocks(ref.stack, ref.project, cfg.region))
    plan = contextvars.Context().run(run_program, ref, raw, secret_keys, monitor)
    # What the tool's commands read from the stack's settings (backbone cost); never secrets.
    plan.settings = {
        "region": cfg.region,
        "tier": cfg.tier,
        "freeTier": cfg.free_tier,
        "budget": cfg.budget,
    }
    return plan


__all__ = [
    "Plan",
    "StackNotFound",
    "StackRef",
    "available_stacks",
    "find_project",
    "pulumi",
    "resolve",
    "synth",
    "synth_component",
]
