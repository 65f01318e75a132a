"""Plan and Resource: the one model every command reads.

A Plan is what a stack would register, as the Pulumi engine sees it: type tokens such as
``aws:ec2/subnet:Subnet``, input names in Pulumi's wire form (``availabilityZone``), parents and
providers as URNs, and the resource options that matter to a reviewer (protect, retainOnDelete,
deleteBeforeReplace, ignoreChanges). Secret inputs are already masked as ``[secret]``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

SECRET = "[secret]"
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str | None = None
    provider: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    id: str | None = None
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    """The customTimeouts option: {"create"|"update"|"delete": "45m"}, only those set."""

    @property
    def is_provider(self) -> bool:
        return self.type.startswith("pulumi:providers:")

    @property
    def package(self) -> str:
        """The provider package of the type: `aws`, `kubernetes`, `docker`, `random`, `pulumi`."""
        return self.type.split(":", 1)[0]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {
            "urn": data["urn"],
            "type": data["type"],
            "name": data["name"],
            "custom": data["custom"],
            "parent": data["parent"],
            "provider": data["provider"],
            "inputs": data["inputs"],
            "dependencies": data["dependencies"],
            "protect": data["protect"],
            "retainOnDelete": data["retain_on_delete"],
            "deleteBeforeReplace": data["delete_before_replace"],
            "ignoreChanges": data["ignore_changes"],
            "aliases": data["aliases"],
            "customTimeouts": data["custom_timeouts"],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resource:
        return cls(
            urn=data["urn"],
            type=data["type"],
            name=data["name"],
            custom=bool(data.get("custom", True)),
            parent=data.get("parent"),
            provider=data.get("provider"),
            inputs=dict(data.get("inputs") or {}),
            dependencies=list(data.get("dependencies") or []),
            protect=bool(data.get("protect", False)),
            retain_on_delete=bool(data.get("retainOnDelete", False)),
            delete_before_replace=bool(data.get("deleteBeforeReplace", False)),
            ignore_changes=list(data.get("ignoreChanges") or []),
            aliases=list(data.get("aliases") or []),
            custom_timeouts=dict(data.get("customTimeouts") or {}),
        )


@dataclass
class Plan:
    stack: str
    project: str
    resources: list[Resource]
    outputs: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    """Stack settings the tool's commands read, never secrets: `region` (aws:region), `tier`,
    `freeTier` and `budget` (backbone:*), as the stack file sets them or their defaults.
    Empty for a Plan made by hand or read from an older JSON file."""

    # -- queries ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Resource]:
        return iter(self.resources)

    def __len__(self) -> int:
        return len(self.resources)

    def by_urn(self, urn: str) -> Resource:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise KeyError(urn)

    def of_type(self, type_token: str) -> list[Resource]:
        """Resources of one type token, e.g. ``aws:ec2/subnet:Subnet``."""
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> Resource:
        """The single resource of a type (and name); a clear error otherwise."""
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_token)]
            raise LookupError(f"expected one {type_token} named {name!r}, found {names}")
        return found[0]

    def named(self, name: str) -> Resource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one resource named {name!r}, found {len(found)}")
        return found[0]

    def children(self, urn: str | None) -> list[Resource]:
        return [r for r in self.resources if r.parent == urn]

    def managed(self) -> list[Resource]:
        """Cloud or Docker resources: custom resources other than providers."""
        return [r for r in self.resources if r.custom and not r.is_provider]

    def counts(self) -> Counter[str]:
        return Counter(r.type for r in self.managed())

    def root(self) -> str:
        return f"urn:pulumi:{self.stack}::{self.project}::{STACK_TYPE}::{self.project}-{self.stack}"

    # -- serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "project": self.project,
            "resources": [r.to_json() for r in self.resources],
            "outputs": self.outputs,
            "settings": self.settings,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False, default=str)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            stack=data["stack"],
            project=data["project"],
            resources=[Resource.from_json(r) for r in data.get("resources", [])],
            outputs=dict(data.get("outputs") or {}),
            settings=dict(data.get("settings") or {}),
        )
