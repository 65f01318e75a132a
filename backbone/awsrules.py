"""AWS's own published constraints, checked over every value a Plan would send.

The constraints are AWS's, not ours: the CloudFormation resource provider schemas that cfn-lint
bundles (``cfnlint/data/schemas``: pattern, minLength/maxLength, enum, minimum/maximum, minItems/
maxItems, nested objects and arrays), cfn-lint's Lambda runtime lifecycle dates
(``AdditionalSpecs/LmbdRuntimeLifecycle.json``), and, where the CloudFormation schema is silent,
a few constraints that botocore's service models state in words (``extra:`` in the mapping, each
with the sentence it comes from). Only the data is read, never cfn-lint's CloudFormation rules.

``backbone/data/cfn_map.yaml`` maps each Pulumi AWS type the kit registers to its CloudFormation
type, and each input path (wire names, nested objects, ``[]`` for list items, ``{map: ...}`` for
key/value maps) to the schema property AWS publishes. Types with no AWS schema (providers,
random, docker, kubernetes, the kit's ComponentResources) are listed there with a reason.

A value that is another resource's output is known only at deploy time (the offline engine
answers with placeholders): such values are skipped and counted, never judged.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import importlib.util
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import regex

from backbone import yamlio
from backbone.plan import SECRET, Plan

MAP_FILE = Path(__file__).with_name("data") / "cfn_map.yaml"
SCHEMA_REGION = "us-east-1"
DEPRECATION_WARNING_DAYS = 180
LAMBDA_FUNCTION = "aws:lambda/function:Function"

# What AWS publishes per property that this checker reads.
KEYWORDS = (
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "format",
)
FORMATS = {"ipv4-network", "ipv6-network"}

RULE_GROUP = "aws-published-constraints"


class MappingError(Exception):
    """The mapping file names a CloudFormation type or property that the schemas do not have."""


# --------------------------------------------------------------------------------------------
# cfn-lint's data (read as files: importing cfnlint itself is not needed)


@functools.cache
def cfnlint_data() -> Path:
    spec = importlib.util.find_spec("cfnlint")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cfn-lint is not installed; it is a dependency of backbone")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def cfnlint_version() -> str:
    return importlib.metadata.version("cfn-lint")


@functools.cache
def _providers() -> dict[str, str]:
    data = cfnlint_data() / "schemas" / "providers" / f"{SCHEMA_REGION}.json"
    return dict(json.loads(data.read_text()))


@functools.cache
def cfn_schema(cfn_type: str) -> dict[str, Any]:
    """The resource provider schema of a CloudFormation type, as cfn-lint bundles it."""
    digest = _providers().get(cfn_type)
    if digest is None:
        raise MappingError(f"{cfn_type}: no such CloudFormation type in cfn-lint's schemas")
    path = cfnlint_data() / "schemas" / "resources" / f"{digest}.json"
    return dict(json.loads(path.read_text()))


@functools.cache
def runtime_lifecycle() -> dict[str, dict[str, str | None]]:
    path = cfnlint_data() / "AdditionalSpecs" / "LmbdRuntimeLifecycle.json"
    return dict(json.loads(path.read_text()))


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in node and seen < 20:
        ref = str(node["$ref"])
        target: Any = schema
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    return node


def _split(path: str) -> list[str]:
    """`A.B[].C` -> ["A", "B", "[]", "C"]."""
    out: list[str] = []
    for part in path.split("."):
        while part.endswith("[]"):
            part = part[:-2]
            if part:
                out.append(part)
            part = ""
            out.append("[]")
        if part:
            out.append(part)
    return out


@functools.cache
def resolve(cfn_type: str, cfn_path: str) -> dict[str, Any]:
    """The subschema at a property path such as `VpcConfig.SubnetIds[]` ($refs resolved)."""
    schema = cfn_schema(cfn_type)
    node: dict[str, Any] = {"type": "object", "properties": schema.get("properties", {})}
    for seg in _split(cfn_path):
        node = _deref(schema, node)
        if seg == "[]":
            if "items" not in node:
                raise MappingError(f"{cfn_type} {cfn_path}: {seg!r} is not an array")
            node = node["items"]
        else:
            props = node.get("properties") or {}
            if seg not in props:
                raise MappingError(f"{cfn_type} {cfn_path}: no property {seg!r}")
            node = props[seg]
    return _deref(schema, node)


def pointer(cfn_type: str, cfn_path: str) -> str:
    return f"{cfn_type}.{cfn_path}"


# --------------------------------------------------------------------------------------------
# The mapping


@dataclass(frozen=True)
class MapSpec:
    """A key/value map in Pulumi (tags, dimensions, labels, environment variables)."""

    cfn_path: str


@dataclass(frozen=True)
class ValueSpec:
    """A value CloudFormation spells differently (`internal: false` is Scheme `internet-facing`)."""

    cfn_path: str
    values: tuple[tuple[Any, Any], ...]

    def translate(self, value: Any) -> Any:
        for pulumi_value, cfn_value in self.values:
            if pulumi_value == value and type(pulumi_value) is type(value):
                return cfn_value
        return value


Spec = str | MapSpec | ValueSpec


@dataclass(frozen=True)
class Extra:
    node: dict[str, Any]
    source: str
    quote: str


@dataclass
class TypeMap:
    cfn: str
    inputs: dict[str, Spec]
    unchecked: dict[str, str]
    extra: dict[str, list[Extra]] = field(default_factory=dict)


@dataclass
class Mapping:
    types: dict[str, TypeMap]
    no_schema: dict[str, str]

    def no_schema_reason(self, type_token: str) -> str | None:
        for pattern, reason in self.no_schema.items():
            if not pattern.startswith("aws:") and fnmatchcase(type_token, pattern):
                return reason
        return None


def _spec(target: Any) -> Spec:
    if isinstance(target, dict) and "map" in target:
        return MapSpec(str(target["map"]))
    if isinstance(target, dict) and "property" in target:
        return ValueSpec(str(target["property"]), tuple((target.get("values") or {}).items()))
    return str(target)


@functools.cache
def mapping(path: Path = MAP_FILE) -> Mapping:
    data = yamlio.safe_load(path.read_text())  # libyaml's: the same data, a tenth of the time
    types: dict[str, TypeMap] = {}
    for token, entry in (data.get("types") or {}).items():
        inputs: dict[str, Spec] = {}
        for key, target in (entry.get("inputs") or {}).items():
            inputs[str(key)] = _spec(target)
        types[str(token)] = TypeMap(
            cfn=str(entry["cfn"]),
            inputs=inputs,
            unchecked={str(k): str(v) for k, v in (entry.get("unchecked") or {}).items()},
        )
    for item in data.get("extra") or []:
        node = {k: item[k] for k in KEYWORDS if k in item}
        extra = Extra(node=node, source=str(item["source"]), quote=str(item["quote"]))
        for token in item["types"]:
            types[token].extra.setdefault(str(item["input"]), []).append(extra)
    return Mapping(types=types, no_schema=dict(data.get("no_schema") or {}))


# --------------------------------------------------------------------------------------------
# Findings and the report


@dataclass(frozen=True)
class Finding:
    resource: str
    type: str
    input: str
    value: Any
    rule: str
    message: str
    source: str
    urn: str = ""
    level: str = "violation"  # or "warning"

    @property
    def shown_value(self) -> str:
        text = json.dumps(self.value) if not isinstance(self.value, str) else repr(self.value)
        return text if len(text) <= 90 else text[:87] + "..."

    @property
    def what(self) -> str:
        """The finding without its resource: what the policy pack's rule reports."""
        return f"{self.input}={self.shown_value}: {self.rule} {self.message} [{self.source}]"

    def line(self) -> str:
        return f"{self.resource} {self.what}"

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "urn": self.urn,
            "type": self.type,
            "input": self.input,
            "value": self.value,
            "rule": self.rule,
            "level": self.level,
            "message": self.message,
            "source": self.source,
        }


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: int = 0  # values validated against a published constraint
    constrained: int = 0  # of those, values whose property has more than a type
    literal: int = 0  # literal values of AWS resources (coverage denominator)
    mapped: int = 0  # literal values with a mapping
    unknown: int = 0  # values known only at deploy (outputs of other resources)
    secret: int = 0  # secret values (masked: cannot be read, so not checked)
    assets: int = 0  # code archives and files
    unchecked: Counter[tuple[str, str]] = field(default_factory=Counter)
    unmapped: Counter[tuple[str, str]] = field(default_factory=Counter)
    no_schema: Counter[str] = field(default_factory=Counter)
    unlisted_types: Counter[str] = field(default_factory=Counter)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "violation"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def coverage(self) -> float:
        return self.mapped / self.literal if self.literal else 1.0

    def summary(self) -> str:
        n = len(self.violations)
        tail = f", {len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}"
        return (
            f"{self.checked} values checked against AWS's published constraints, "
            f"{n} violation{'s' if n != 1 else ''}"
            + (tail if self.warnings else "")
            + f" ({self.unknown} known only at deploy, skipped)"
        )

    def merge(self, other: Report) -> None:
        self.findings.extend(other.findings)
        for name in ("checked", "constrained", "literal", "mapped", "unknown", "secret", "assets"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.unchecked.update(other.unchecked)
        self.unmapped.update(other.unmapped)
        self.no_schema.update(other.no_schema)
        self.unlisted_types.update(other.unlisted_types)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "violations": [f.to_json() for f in self.violations],
            "warnings": [f.to_json() for f in self.warnings],
            "knownOnlyAtDeploy": self.unknown,
            "secret": self.secret,
            "literal": self.literal,
            "mapped": self.mapped,
            "coverage": round(self.coverage, 4),
            "unmapped": sorted(f"{t} {p}" for t, p in self.unmapped),
            "unlistedTypes": sorted(self.unlisted_types),
        }


# --------------------------------------------------------------------------------------------
# Validation of one value against one schema node


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t)


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return str(int(value)) if float(value).is_integer() else str(value)
    return None


def _as_number(value: Any) -> float | None:
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@functools.cache
def _compiled(pattern: str) -> Any:
    try:
        return regex.compile(pattern)
    except regex.error:
        return None


def _short(items: list[Any], n: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items)} allowed)" if len(items) > n else "")


def violations_of(value: Any, node: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule, message) for each published constraint the value breaks; [] when it fits."""
    out: list[tuple[str, str]] = []
    types = _types(node)
    numeric = bool(types & {"integer", "number"}) and not types & {"string", "object", "array"}
    textual = "string" in types or not types
    number = _as_number(value) if numeric else (float(value) if _is_number(value) else None)
    if numeric:
        if number is None or isinstance(value, bool):
            out.append(("type", f"is not a number (the property is {'/'.join(sorted(types))})"))
            return out
        if "integer" in types and "number" not in types and not float(number).is_integer():
            out.append(("type", "is not an integer"))
    if "enum" in node:
        out.extend(_enum_violation(value, number, list(node["enum"])))
    text = _as_text(value) if textual else None
    if text is not None and not isinstance(value, (dict, list)):
        if "pattern" in node:
            compiled = _compiled(str(node["pattern"]))
            if compiled is not None and compiled.search(text) is None:
                out.append(("pattern", f"does not match {node['pattern']}"))
        if "minLength" in node and len(text) < int(node["minLength"]):
            out.append(("minLength", f"is shorter than {node['minLength']} characters"))
        if "maxLength" in node and len(text) > int(node["maxLength"]):
            out.append(
                ("maxLength", f"is {len(text)} characters, more than {node['maxLength']} allowed")
            )
        fmt = node.get("format")
        if fmt in FORMATS and isinstance(value, str):
            out.extend(_network_violation(value, 4 if fmt == "ipv4-network" else 6))
    if number is not None and not isinstance(value, bool) and math.isfinite(number):
        if "minimum" in node and number < float(node["minimum"]):
            out.append(("minimum", f"is below the minimum {node['minimum']}"))
        if "maximum" in node and number > float(node["maximum"]):
            out.append(("maximum", f"is above the maximum {node['maximum']}"))
        if "exclusiveMinimum" in node and number <= float(node["exclusiveMinimum"]):
            out.append(("exclusiveMinimum", f"is not above {node['exclusiveMinimum']}"))
        if "exclusiveMaximum" in node and number >= float(node["exclusiveMaximum"]):
            out.append(("exclusiveMaximum", f"is not below {node['exclusiveMaximum']}"))
    return out


def _enum_violation(value: Any, number: float | None, allowed: list[Any]) -> list[tuple[str, str]]:
    """The enum rule: the value (or its text, or its number) is one of `allowed`."""
    text = _as_text(value)
    if any(
        (a == value and type(a) is type(value))
        or (isinstance(a, str) and a == text)
        or (_is_number(a) and number is not None and float(a) == number)
        for a in allowed
    ):
        return []
    if len(allowed) <= 8:
        return [("enum", f"is not one of {_short(allowed)}")]
    close = difflib.get_close_matches(text or "", [str(a) for a in allowed], 4, 0.5)
    hint = f" (closest: {', '.join(close)})" if close else ""
    return [("enum", f"is not one of the {len(allowed)} values AWS lists{hint}")]


def _network_violation(value: str, version: int) -> list[tuple[str, str]]:
    """The ipv4-network / ipv6-network formats: a network of that version in CIDR form."""
    try:
        ok = "/" in value and ipaddress.ip_network(value, strict=False).version == version
    except ValueError:
        ok = False
    return [] if ok else [("format", f"is not an IPv{version} network in CIDR form")]


def _constrained(node: dict[str, Any]) -> bool:
    return any(k in node for k in KEYWORDS if k not in ("minItems", "maxItems"))


def runtime_findings(runtime: str, today: date | None = None) -> list[tuple[str, str, str]]:
    """(level, rule, message) for a Lambda runtime from cfn-lint's lifecycle dates."""
    entry = runtime_lifecycle().get(runtime)
    if not entry or not entry.get("deprecated"):
        return []
    today = today or date.today()
    deprecated = date.fromisoformat(str(entry["deprecated"]))
    successor = entry.get("successor")
    instead = f"; move to {successor}" if successor else ""
    if deprecated <= today:
        block = entry.get("create-block")
        blocked = f", new functions refused from {block}" if block else ""
        return [
            (
                "violation",
                "runtime-deprecated",
                f"was deprecated on {deprecated.isoformat()}{blocked}{instead}",
            )
        ]
    if deprecated - today <= timedelta(days=DEPRECATION_WARNING_DAYS):
        days = (deprecated - today).days
        return [
            (
                "warning",
                "runtime-deprecation-soon",
                f"is deprecated on {deprecated.isoformat()}, in {days} days{instead}",
            )
        ]
    return []


# --------------------------------------------------------------------------------------------
# One resource


Unknown = Callable[[str], bool]


def _never(_: str) -> bool:
    return False


def _render(path: list[str]) -> str:
    out = ""
    for seg in path:
        if seg == "[]":
            out += "[]"
        else:
            out += ("." if out else "") + seg
    return out


def _is_asset(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("asset", "archive")


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


class _Checker:
    def __init__(
        self,
        type_token: str,
        name: str,
        urn: str,
        entry: TypeMap,
        unknown: Unknown,
        today: date | None,
    ) -> None:
        self.type = type_token
        self.name = name
        self.urn = urn
        self.entry = entry
        self.unknown = unknown
        self.today = today
        self.report = Report()

    def _source(self, cfn_path: str) -> str:
        return f"cfn-lint {cfnlint_version()} schema {pointer(self.entry.cfn, cfn_path)}"

    def _find(
        self, path: str, value: Any, rule: str, message: str, source: str, level: str = "violation"
    ) -> None:
        self.report.findings.append(
            Finding(self.name, self.type, path, value, rule, message, source, self.urn, level)
        )

    def _kind(self, value: Any) -> str:
        if value == SECRET:
            return "secret"
        if isinstance(value, str) and self.unknown(value):
            return "unknown"
        return "literal"

    def _check(self, path: str, value: Any, node: dict[str, Any], source: str) -> None:
        self.report.checked += 1
        if _constrained(node):
            self.report.constrained += 1
        for rule, message in violations_of(value, node):
            self._find(path, value, rule, message, source)

    def _leaf(self, path: str, value: Any) -> None:
        kind = self._kind(value)
        if kind == "secret":
            self.report.secret += 1
            return
        if kind == "unknown":
            self.report.unknown += 1
            return
        self.report.literal += 1
        spec = self.entry.inputs.get(path)
        if isinstance(spec, ValueSpec):
            self.report.mapped += 1
            node = resolve(self.entry.cfn, spec.cfn_path)
            self._check(path, spec.translate(value), node, self._source(spec.cfn_path))
        elif isinstance(spec, str):
            self.report.mapped += 1
            self._check(path, value, resolve(self.entry.cfn, spec), self._source(spec))
            for extra in self.entry.extra.get(path, []):
                for rule, message in violations_of(value, extra.node):
                    self._find(path, value, rule, message, extra.source)
            if self.type == LAMBDA_FUNCTION and path == "runtime" and isinstance(value, str):
                for level, rule, message in runtime_findings(value, self.today):
                    source = (
                        f"cfn-lint {cfnlint_version()} AdditionalSpecs/LmbdRuntimeLifecycle.json"
                    )
                    self._find(path, value, rule, message, source, level)
        elif self._unchecked(path):
            self.report.unchecked[(self.type, path)] += 1
        else:
            self.report.unmapped[(self.type, path)] += 1

    def _unchecked(self, path: str) -> bool:
        return any(
            path == k or path.startswith(k + ".") or path.startswith(k + "[")
            for k in self.entry.unchecked
        )

    def _map(self, path: str, value: dict[str, Any], spec: MapSpec) -> None:
        node = resolve(self.entry.cfn, spec.cfn_path)
        source = self._source(spec.cfn_path)
        key_node: dict[str, Any] | None = None
        value_node: dict[str, Any] | None = None
        patterns: dict[str, Any] = {}
        closed = False
        if "items" in node:
            item = resolve(self.entry.cfn, spec.cfn_path + "[]")
            props = item.get("properties") or {}
            key_name = "Key" if "Key" in props else "Name"
            key_node = resolve(self.entry.cfn, f"{spec.cfn_path}[].{key_name}")
            value_node = resolve(self.entry.cfn, f"{spec.cfn_path}[].Value")
            if "maxItems" in node and len(value) > int(node["maxItems"]):
                self._find(
                    path,
                    f"{len(value)} entries",
                    "maxItems",
                    f"has more than {node['maxItems']} entries",
                    source,
                )
        else:
            patterns = dict(node.get("patternProperties") or {})
            closed = node.get("additionalProperties") is False
            if isinstance(node.get("additionalProperties"), dict):
                value_node = node["additionalProperties"]
        schema = cfn_schema(self.entry.cfn)
        for key, item_value in value.items():
            shown = f"{path}.{key}"
            self.report.literal += 1
            self.report.mapped += 1
            this_value_node = value_node
            if key_node is not None:
                self._check(f"{shown} (key)", key, key_node, source)
            elif patterns:
                matched = [p for p in patterns if (c := _compiled(p)) is not None and c.search(key)]
                self.report.checked += 1
                self.report.constrained += 1
                if matched:
                    this_value_node = _deref(schema, patterns[matched[0]])
                elif closed:
                    self._find(
                        f"{shown} (key)",
                        key,
                        "pattern",
                        f"matches none of {_short(list(patterns))}",
                        source,
                    )
            for leaf in _leaves(item_value):
                kind = self._kind(leaf)
                if kind == "secret":
                    self.report.secret += 1
                elif kind == "unknown":
                    self.report.unknown += 1
                else:
                    self.report.literal += 1
                    self.report.mapped += 1
                    if this_value_node is not None:
                        self._check(shown, leaf, this_value_node, source)

    def walk(self, value: Any, path: list[str]) -> None:
        rendered = _render(path)
        spec = self.entry.inputs.get(rendered)
        if isinstance(spec, MapSpec) and isinstance(value, dict):
            self._map(rendered, value, spec)
            return
        if _is_asset(value):
            self.report.assets += 1
            return
        if isinstance(value, dict):
            for key, item in value.items():
                self.walk(item, [*path, str(key)])
            return
        if isinstance(value, list):
            item_spec = self.entry.inputs.get(rendered + "[]")
            if isinstance(item_spec, str) and item_spec.endswith("[]"):
                array_path = item_spec[:-2]
                node = resolve(self.entry.cfn, array_path)
                source = self._source(array_path)
                if "maxItems" in node and len(value) > int(node["maxItems"]):
                    self._find(
                        rendered,
                        value,
                        "maxItems",
                        f"has {len(value)} items, more than {node['maxItems']} allowed",
                        source,
                    )
                if "minItems" in node and len(value) < int(node["minItems"]):
                    self._find(
                        rendered,
                        value,
                        "minItems",
                        f"has {len(value)} items, fewer than {node['minItems']} required",
                        source,
                    )
            for item in value:
                self.walk(item, [*path, "[]"])
            return
        if value is None:
            return
        self._leaf(rendered, value)


def check_resource(
    type_token: str,
    inputs: dict[str, Any],
    *,
    name: str = "",
    urn: str = "",
    unknown: Unknown = _never,
    today: date | None = None,
    table: Mapping | None = None,
) -> Report:
    """Check one resource's inputs (wire names, as a Plan or CrossGuard holds them).

    `unknown(value)` says whether a string value is another resource's output (known only at
    deploy); those are skipped and counted."""
    table = table or mapping()
    entry = table.types.get(type_token)
    if entry is None:
        report = Report()
        if table.no_schema_reason(type_token) is not None:
            report.no_schema[type_token] += 1
        else:
            report.unlisted_types[type_token] += 1
        return report
    checker = _Checker(type_token, name, urn, entry, unknown, today)
    checker.walk(inputs, [])
    return checker.report


# --------------------------------------------------------------------------------------------
# A whole Plan


def _strings(value: Any) -> Iterator[str]:
    for leaf in _leaves(value):
        if isinstance(leaf, str):
            yield leaf


def computed_values(plan: Plan) -> set[str]:
    """Every value the engine computes (ids, ARNs, endpoints, generated names): the strings of
    each resource's recorded outputs that it was not given as inputs. Under the real engine
    they are unknown until the resource exists, so an input holding one is not judged.
    Short or digit-free strings are left out: generated values always carry a digit."""
    found: set[str] = set()
    for r in plan.resources:
        given = set(_strings(r.inputs))
        for s in [r.id or "", *_strings(r.outputs)]:
            if len(s) >= 8 and s not in given and s != SECRET and any(c.isdigit() for c in s):
                found.add(s)
    return found


def _trie_pattern(strings: set[str]) -> str:
    """One pattern matching exactly where any of `strings` occurs, factored by common prefixes:
    at each position of a searched value only the branches that share its first characters are
    tried, not every string (a plain alternation of some hundred ARNs and ids tries them all)."""
    trie: dict[str, Any] = {}
    for s in strings:
        node = trie
        for ch in s:
            node = node.setdefault(ch, {})
        node[""] = {}  # a string ends here

    def literal(ch: str) -> str:
        return ch if ch.isalnum() else "\\" + ch  # any other character escaped is itself

    def pattern(node: dict[str, Any]) -> str:
        run = ""
        while len(node) == 1 and "" not in node:  # one way on: no group needed
            ((ch, node),) = node.items()
            run += literal(ch)
        if "" in node:  # a shorter string already matched: what could follow is irrelevant
            return run
        branches = [literal(ch) + pattern(child) for ch, child in sorted(node.items())]
        return run + "(?:" + "|".join(branches) + ")"

    return pattern(trie)


@functools.lru_cache(maxsize=32)
def _combined(computed: frozenset[str]) -> re.Pattern[str]:
    # literals only: the standard library's engine compiles and searches it faster than regex's
    return re.compile(_trie_pattern(set(computed)))


def unknown_in(plan: Plan) -> Unknown:
    computed = computed_values(plan)
    if not computed:
        return _never
    shortest = min(map(len, computed))
    combined = _combined(frozenset(computed))  # the same stack checked again: built once
    seen: dict[str, bool] = {}

    def unknown(value: str) -> bool:
        if len(value) < shortest:
            return False  # too short to hold any computed value
        found = seen.get(value)
        if found is None:
            found = seen[value] = combined.search(value) is not None
        return found

    return unknown


def default_tags(plan: Plan) -> dict[str, dict[str, Any]]:
    """The `defaultTags` of each AWS provider, by provider URN: AWS receives them as tags of
    every resource the provider manages, so they meet each resource's tag constraints."""
    found: dict[str, dict[str, Any]] = {}
    for r in plan.resources:
        if r.type != "pulumi:providers:aws":
            continue
        raw = r.inputs.get("defaultTags")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                continue
        tags = raw.get("tags") if isinstance(raw, dict) else None
        if isinstance(tags, dict) and tags:
            found[r.urn] = tags
    return found


def check_plan(plan: Plan, today: date | None = None) -> Report:
    """Every literal input value of every resource of the Plan against AWS's constraints."""
    unknown = unknown_in(plan)
    table = mapping()
    provider_tags = default_tags(plan)
    report = Report()
    for r in plan.resources:
        if r.type == "pulumi:pulumi:Stack":
            continue
        inputs = r.inputs
        entry = table.types.get(r.type)
        defaults = provider_tags.get(r.provider or "")
        if defaults and entry is not None and isinstance(entry.inputs.get("tags"), MapSpec):
            own_tags = inputs.get("tags")
            own = dict(own_tags) if isinstance(own_tags, dict) else {}
            inputs = {**inputs, "tags": {**defaults, **own}}
        report.merge(
            check_resource(
                r.type, inputs, name=r.name, urn=r.urn, unknown=unknown, today=today, table=table
            )
        )
    return report
