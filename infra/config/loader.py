"""Loading a stack's config: the keys as the engine hands them over (strings; objects and lists as
JSON) turned into one StackConfig, or one ConfigError listing every problem at once (the file, the
key, the bad value, what is allowed, and "did you mean" for a typo), pydantic's errors translated
into those words."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from infra.config.base import NAMESPACE, Problem, suggest
from infra.config.stack import StackConfig

# Namespaces a stack file may hold besides ours: provider settings the Pulumi CLI passes to providers.
PROVIDER_NAMESPACES = {"aws", "kubernetes", "docker", "random", "pulumi"}

# Settings an engine hands the program besides the stack's own, never written in a stack file. One
# today: which packager makes the Lambda archives. The Pulumi CLI sets none, so the program builds
# them (`build`); backbone's offline engine (backbone.synth) sets `placeholder`: the archive's
# name, no pip, no file. This is how the program learns it runs offline (it never inspects the
# engine itself).
ENGINE_NAMESPACE = "backbone-engine"
PACKAGER_KEY = f"{ENGINE_NAMESPACE}:packager"
PACKAGER_CHOICES = ("build", "placeholder")

_KINDS = {
    "bool": "true or false",
    "int": "whole number",
    "dict": "mapping",
    "string": "string",
    "float": "number",
    "list": "list",
}


class ConfigError(Exception):
    """Every problem of one stack file. The program (infra/program.py) raises it as a Pulumi
    RunError, so `pulumi up` prints the message with no traceback, before any resource is
    registered."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = [f"{source}: {count} in the stack config:", *(f"  - {p}" for p in problems)]
        super().__init__("\n".join(lines))


def parse(raw: Mapping[str, Any], source: str, stack: str) -> StackConfig:
    """Validate a stack's config as the engine passes it: `{"backbone:network": "{...}", ...}`."""
    data, problems = _sort_keys(raw)
    data["stack"] = stack
    cfg: StackConfig | None = None
    try:
        cfg = StackConfig.model_validate(data)
        problems.extend(cfg.problems())
    except ValidationError as exc:
        problems.extend(_problems(exc))
        problems.extend(_rest_problems(data, exc, {p.key for p in problems}))
    if problems:
        raise ConfigError(source, problems)
    assert cfg is not None
    return cfg


def _sort_keys(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Our keys (decoded) for the model; the engine's and the providers' checked; others refused."""
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    for full_key, value in raw.items():
        ns, sep, key = full_key.partition(":")
        if not sep:
            problems.append(
                Problem(
                    full_key,
                    f"a config key needs a namespace; did you mean '{NAMESPACE}:{full_key}'?",
                )
            )
        elif ns == NAMESPACE:
            data[key] = _decode(value)
        elif full_key == "aws:region":
            data["aws:region"] = value
        elif full_key == PACKAGER_KEY:
            if value not in PACKAGER_CHOICES:
                problems.append(
                    Problem(full_key, f"{value!r}; allowed: {', '.join(PACKAGER_CHOICES)}")
                )
        elif ns == ENGINE_NAMESPACE:
            problems.append(Problem(full_key, f"unknown engine setting; allowed: {PACKAGER_KEY}"))
        elif ns not in PROVIDER_NAMESPACES:
            problems.append(_unknown_namespace(full_key, ns))
    return data, problems


def _unknown_namespace(full_key: str, ns: str) -> Problem:
    hint = suggest(ns, [NAMESPACE, *sorted(PROVIDER_NAMESPACES)])
    ours = ", ".join(k for k in sorted(aliases(StackConfig)) if ":" not in k)
    return Problem(
        full_key,
        f"unknown namespace {ns!r}{hint}; allowed: {NAMESPACE}:<key> for the kit's settings "
        f"({ours}) and provider settings under {', '.join(sorted(PROVIDER_NAMESPACES))}",
    )


def _rest_problems(data: dict[str, Any], exc: ValidationError, bad: set[str]) -> list[Problem]:
    """Every problem at once: drop what failed, and check the rest with the cross-field rules."""
    for err in exc.errors():
        _drop(data, tuple(err["loc"]))
    try:
        partial = StackConfig.model_validate(data)
    except ValidationError:
        return []
    return [p for p in partial.problems() if p.key not in bad]


def _decode(value: Any) -> Any:
    """A config value as the engine passes it (a string; objects and lists as JSON) to Python."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def aliases(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """A model's stack-file keys, each with its sub-model when it is a section."""
    out: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        out[field.alias or name] = sub
    return out


def _display_key(loc: tuple[Any, ...]) -> str:
    """`backbone:network.azCount` from a pydantic location."""
    if not loc:
        return ""
    head, *rest = loc
    head = str(head)
    key = head if ":" in head else f"{NAMESPACE}:{head}"
    for part in rest:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    return key


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    model: type[BaseModel] = StackConfig
    for part in loc:
        sub = aliases(model).get(str(part))
        if sub is None:
            break
        model = sub
    return model


def _problems(exc: ValidationError) -> list[Problem]:
    """pydantic's errors in the config's words."""
    problems: list[Problem] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = sorted(k for k in aliases(_model_at(loc[:-1])) if ":" not in k)
            hint = suggest(str(loc[-1]), allowed)
            problems.append(
                Problem(_display_key(loc), f"unknown key{hint}; allowed here: {', '.join(allowed)}")
            )
            continue
        value = err.get("input")
        shown = json.dumps(value) if not isinstance(value, str) else repr(value)
        problems.append(Problem(_display_key(loc), f"{shown} is not allowed: {_allowed_text(err)}"))
    return problems


def _allowed_text(err: Any) -> str:
    ctx = err.get("ctx") or {}
    etype = err["type"]
    if etype == "literal_error":
        return f"allowed: {ctx.get('expected')}"
    if etype in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        return str(err["msg"]).lower()
    if etype.endswith("_type") or etype.endswith("_parsing"):
        kind = etype.split("_")[0]
        return f"allowed: a {_KINDS.get(kind, kind)}"
    return str(err["msg"])


def _drop(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    """Remove the value at a pydantic location (so the rest can still be checked)."""
    node: Any = data
    for part in loc[:-1]:
        if not isinstance(node, (dict, list)):
            return
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(loc[-1], None)


def packager(raw: Mapping[str, Any]) -> str:
    """The packager the engine chose (PACKAGER_KEY), `build` when it chose none."""
    return str(raw.get(PACKAGER_KEY, "build"))
