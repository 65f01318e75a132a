"""Kubernetes manifests from a Plan: every Kubernetes object a stack would apply, as YAML.

For GitOps users and for scanners (checkov, kubeconform, kubernetes-validate). Each object is the
resource's inputs exactly as the Pulumi Kubernetes provider receives them (apiVersion, kind,
metadata, spec, data...), one file per object named ``NN-<kind>-<name>.yaml``, numbered in apply
order (Namespace first, then policies, accounts, configuration, Services, workloads, autoscalers:
the order Helm installs kinds in), except that an object the program makes wait for another comes
after it (the app's Deployment after the migration's Job), so ``kubectl apply -f DIR`` applies
them in a sound order.

Secrets: every value under a Secret's ``data`` and ``stringData`` is written as ``[redacted]``,
whether or not the Plan marked it secret. When the provider masked the whole map, keys included,
the keys come from the object's ``backbone.dev/secret-keys`` annotation (a comma-separated list
the workload component sets), so the file still shows which keys must be filled in. Any other
value the Plan masked stays the placeholder ``[secret]``: no real secret value is ever written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backbone.plan import SECRET, Plan, Resource

REDACTED = "[redacted]"
# Set by infra/components/workload.py on its Secret (backbone never imports infra).
SECRET_KEYS_ANNOTATION = "backbone.dev/secret-keys"

# Helm's install order (pkg/release/util/kind_sorter.go); kinds not listed come after, in plan
# order.
KIND_ORDER = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]
_FILE = re.compile(r"^\d{2,}-[a-z0-9]+-.+\.yaml$")


class ManifestError(Exception):
    """A user-facing problem: nothing to write, or nowhere to write it."""


@dataclass(frozen=True)
class Manifest:
    filename: str
    obj: dict[str, Any]
    resource: str
    """The Pulumi resource's URN the object comes from."""

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name") or "")


def is_kubernetes_object(r: Resource) -> bool:
    """A custom resource of the Kubernetes provider that is one API object (not a Helm release,
    a YAML group or the provider itself)."""
    if r.package != "kubernetes" or not r.custom or r.is_provider:
        return False
    kind, api = r.inputs.get("kind"), r.inputs.get("apiVersion")
    return isinstance(kind, str) and isinstance(api, str) and r.type.endswith(f":{kind}")


def _redact_secret(obj: dict[str, Any]) -> dict[str, Any]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    listed = [k for k in str(annotations.get(SECRET_KEYS_ANNOTATION, "")).split(",") if k]
    for field in ("data", "stringData"):
        if field not in obj:
            continue
        value = obj[field]
        keys = list(value) if isinstance(value, dict) else listed
        obj[field] = {k: REDACTED for k in keys}
    return obj


def to_object(r: Resource) -> dict[str, Any]:
    """The object as the provider receives it: apiVersion, kind, metadata first; Secrets
    redacted."""
    inputs = r.inputs
    obj: dict[str, Any] = {k: inputs[k] for k in ("apiVersion", "kind", "metadata") if k in inputs}
    obj.update({k: v for k, v in inputs.items() if k not in obj})
    obj = _copy(obj)
    if obj["kind"] == "Secret":
        obj = _redact_secret(obj)
    return obj


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-") or "unnamed"


def render(plan: Plan) -> list[Manifest]:
    """Every Kubernetes object of the plan, in apply order, with its file name."""
    resources = [r for r in plan.resources if is_kubernetes_object(r)]
    rank = {kind: i for i, kind in enumerate(KIND_ORDER)}
    by_kind = [
        r
        for _, r in sorted(
            enumerate(resources),
            key=lambda ir: (rank.get(ir[1].inputs["kind"], len(KIND_ORDER)), ir[0]),
        )
    ]
    ordered = _after_dependencies(by_kind)
    width = max(2, len(str(len(ordered))))
    out = []
    for n, r in enumerate(ordered, start=1):
        obj = to_object(r)
        name = (obj.get("metadata") or {}).get("name")
        # A name the provider would generate at deploy time (autonaming) is not known offline:
        # the file is named after the Pulumi resource instead.
        shown = name if isinstance(name, str) and name != SECRET else r.name
        filename = f"{n:0{width}d}-{_slug(obj['kind'])}-{_slug(shown)}.yaml"
        out.append(Manifest(filename, obj, r.urn))
    return out


def _after_dependencies(by_kind: list[Resource]) -> list[Resource]:
    """Helm's kind order, except that an object the program makes wait for another (the
    Deployment for the migration's Job: Pulumi applies it only once the Job has completed) comes
    after it, so `kubectl apply -f DIR` applies them in the program's order too."""
    urns = {r.urn for r in by_kind}
    done: set[str] = set()
    left, out = list(by_kind), []
    while left:
        ready = next(
            (r for r in left if all(d in done for d in r.dependencies if d in urns)), left[0]
        )  # left[0]: a cycle (none in a Pulumi program) keeps the kind order
        left.remove(ready)
        done.add(ready.urn)
        out.append(ready)
    return out


def nothing_to_write(plan: Plan) -> str:
    return (
        f"stack {plan.stack!r} has no Kubernetes objects, nothing to write: only a stack with a "
        "cluster (backbone:cluster enabled, as in dev and prod) runs the app on Kubernetes"
    )


def dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def header(plan: Plan) -> str:
    return (
        f"# Rendered by `backbone manifests` from stack {plan.stack!r} (offline plan).\n"
        f"# Secret values are {REDACTED}; other masked values read {SECRET}.\n"
    )


def stream(plan: Plan, manifests: Iterable[Manifest]) -> str:
    """All objects as one multi-document YAML stream, in apply order."""
    return header(plan) + "".join(f"---\n{dump(m.obj)}" for m in manifests)


def write(plan: Plan, directory: Path) -> tuple[list[Path], list[Path]]:
    """Write one file per object into `directory` (created if missing).

    Returns (written, stale): `stale` are files in the folder that look like ours (NN-kind-name.yaml)
    but were not written now; they are left alone, for the caller to mention.
    Raises ManifestError when the plan has no Kubernetes objects or the folder cannot be written.
    """
    manifests = render(plan)
    if not manifests:
        raise ManifestError(nothing_to_write(plan))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ManifestError(f"cannot create {directory}: {exc.strerror or exc}") from None
    if not directory.is_dir():
        raise ManifestError(f"{directory} is not a folder")
    written = []
    for m in manifests:
        path = directory / m.filename
        try:
            path.write_text(header(plan) + dump(m.obj))
        except OSError as exc:
            raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    names = {p.name for p in written}
    stale = sorted(p for p in directory.iterdir() if _FILE.match(p.name) and p.name not in names)
    return written, stale
