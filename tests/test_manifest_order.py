"""`backbone manifests` numbers objects in an order `kubectl apply -f DIR` can follow: Helm's kind
order, and after whatever the program makes an object wait for."""

from __future__ import annotations

import pytest

from backbone.manifests import render
from backbone.plan import Plan, Resource


def _object(name: str, kind: str, deps: list[str] | None = None) -> Resource:
    return Resource(
        urn=f"urn:pulumi:t::backbone::kubernetes:x:{kind}::{name}",
        type=f"kubernetes:x/v1:{kind}",
        name=name,
        custom=True,
        inputs={"apiVersion": "x/v1", "kind": kind, "metadata": {"name": name}},
        dependencies=deps or [],
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_app_rolls_after_its_migration_job(plan_of, stack):
    files = [m.filename for m in render(plan_of(stack))]
    job = next(i for i, f in enumerate(files) if f.split("-")[1] == "job")
    app = files.index(next(f for f in files if f.endswith("-deployment-shortener.yaml")))
    assert job < app, files
    # the rest keeps Helm's order: the namespace first, the autoscaler after the Deployment
    assert files[0].endswith("-namespace-backbone.yaml")
    assert files[-1].split("-")[1] == "horizontalpodautoscaler"


def test_an_object_waits_for_what_it_depends_on_and_otherwise_keeps_the_kind_order():
    job = _object("migrate", "Job")
    app = _object(
        "app", "Deployment", deps=[job.urn, "urn:pulumi:t::backbone::aws:iam/role:Role::r"]
    )
    svc = _object("svc", "Service")
    cm = _object("cfg", "ConfigMap")
    plan = Plan(stack="t", project="backbone", resources=[app, job, svc, cm], outputs={})
    assert [m.obj["kind"] for m in render(plan)] == ["ConfigMap", "Service", "Job", "Deployment"]
    # without the dependency, Helm's order: Deployments before Jobs
    free = _object("app", "Deployment")
    plan = Plan(stack="t", project="backbone", resources=[free, job, svc, cm], outputs={})
    assert [m.obj["kind"] for m in render(plan)] == ["ConfigMap", "Service", "Deployment", "Job"]
