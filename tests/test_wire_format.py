"""A Plan speaks the engine's language: compared key for key with real `pulumi preview --json`.

The fixtures are real previews (../shared/fixtures/pulumi). For every resource type that appears
both there and in one of our plans, each input name the program sets must be one the real engine
recorded for that type (the engine adds defaults, so the real set may be larger), and URNs, parents
and type tokens must have the engine's shape.
"""

from __future__ import annotations

import importlib
import json
import re
import sys

import pytest

from tests.realparts import shared_fixture

FIXTURES = [
    "drift-adopter__aws_tags_and_sets.preview.json",
    "stratify__sample-preview-creates.json",
]
URN = re.compile(
    r"^urn:pulumi:(?P<stack>[^:]+)::(?P<project>[^:]+)::(?P<type>[^:]+(:[^:]+)*?)::(?P<name>.+)$"
)
TYPE = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9/.-]*:[A-Z][A-Za-z0-9]*$")


def real_inputs() -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for name in FIXTURES:
        data = json.loads(shared_fixture("pulumi", name).read_text())
        for step in data["steps"]:
            state = step.get("newState") or step.get("oldState") or {}
            inputs = set(state.get("inputs") or {}) - {"__defaults"}
            if inputs:
                keys.setdefault(state["type"], set()).update(inputs)
    return keys


def sdk_input_names(type_token: str) -> set[str]:
    """The wire names of a resource's inputs, read off the installed SDK's Args class
    (`@pulumi.getter(name="assumeRolePolicy")`): the names the engine receives."""
    package, module, cls = type_token.split(":")
    sdk = importlib.import_module(f"pulumi_{package}")
    mod_name = module.split("/")[0].replace("-", "_")
    mod = (
        sdk
        if mod_name == "index"
        else getattr(sdk, "lambda_" if mod_name == "lambda" else mod_name)
    )
    resource = getattr(mod, cls)
    # The Args class defined beside the resource. When a nested type has taken the name, the SDK
    # calls the resource's own `<Type>InitArgs`.
    module_ns = vars(sys.modules[resource.__module__])
    args = next(
        module_ns[n]
        for n in (f"{cls}InitArgs", f"{cls}Args")
        if n in module_ns and module_ns[n].__module__ == resource.__module__
    )
    names = set()
    for attr in vars(args).values():
        if isinstance(attr, property) and attr.fget is not None:
            names.add(getattr(attr.fget, "_pulumi_name", attr.fget.__name__))
    return names


def test_sdk_wire_names_are_what_real_previews_record():
    """Triangulation: the SDK's names are the engine's, on every type the real previews hold."""
    checked = 0
    for type_token, keys in real_inputs().items():
        if not type_token.startswith("aws:") or type_token.count(":") != 2:
            continue
        try:
            names = sdk_input_names(type_token)
        except AttributeError:
            continue  # a type the installed SDK no longer has (e.g. BucketVersioningV2)
        assert keys - {"tagsAll"} <= names, (type_token, sorted(keys - names))
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_input_name_is_a_wire_name(plan_of, stack):
    """Each input of each AWS, Docker and random resource in the Plan is spelled as the engine
    spells it (camelCase wire names, not Python's snake_case)."""
    plan = plan_of(stack)
    checked = 0
    for r in plan.managed():
        if r.package not in {"aws", "docker", "random"}:
            continue
        names = sdk_input_names(r.type)
        extra = set(r.inputs) - names - {"tagsAll"}
        assert not extra, f"{r.type} {r.name}: {sorted(extra)} are not wire names"
        checked += 1
    assert checked > 40
    real = real_inputs()
    assert any(r.type in real for r in plan)  # the plan shares types with real previews


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_urns_types_and_parents_have_the_engines_shape(plan_of, stack):
    plan = plan_of(stack)
    urns = {r.urn for r in plan}
    for r in plan:
        m = URN.match(r.urn)
        assert m and m["stack"] == stack and m["project"] == "backbone", r.urn
        assert m["type"].split("$")[-1] == r.type and m["name"] == r.name
        if not r.is_provider:
            assert TYPE.match(r.type) or r.type.startswith("backbone:"), r.type
        # a child's URN type is prefixed with its parent's type, unless the parent is the stack
        if r.parent and r.parent != plan.root():
            assert r.parent in urns
            parent_type = r.parent.split("::")[2].split("$")[-1]
            assert m["type"].split("$")[-2] == parent_type
        else:
            assert "$" not in m["type"]
    # the preview fixture's URNs pass the same pattern
    data = json.loads(shared_fixture("pulumi", FIXTURES[1]).read_text())
    assert all(URN.match(s["urn"]) for s in data["steps"])


def test_providers_are_referenced_as_the_engine_does(plan_of):
    plan = plan_of("dev")
    providers = {r.urn for r in plan if r.is_provider}
    custom = [r for r in plan.managed()]
    assert custom and all(r.provider in providers for r in custom)
    components = [r for r in plan if not r.custom]
    assert components and all(r.provider is None for r in components)
