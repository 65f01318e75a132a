"""Amazon Managed Grafana behind `observability.managedGrafana`: absent from the shipped stacks;
on a copy of dev with it on, a workspace signed into through IAM Identity Center whose own role may
only query the stack's Prometheus workspace, read CloudWatch and query the cluster's log groups;
its values within AWS's published constraints (botocore's grafana model, cfn-lint's schema), the
policy pack passing, and its cost priced per active user."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import botocore
import pytest

from backbone import awsrules
from backbone import check as offline
from backbone.cost import estimate
from backbone.mocks import MAKERS
from backbone.plan import Plan
from backbone.synth import load_config, resolve
from infra.config import ConfigError, parse
from tests.stack_files import DEV_SETTINGS, DEV_SETTINGS_FILE, dev_settings_plan, stack_variant

REPO = Path(__file__).resolve().parent.parent
WORKSPACE = "aws:grafana/workspace:Workspace"
OBS = "backbone:observability:Observability"


def botocore_enum(shape: str) -> set[str]:
    """Allowed values of a shape of AWS's published Grafana API model (botocore's)."""
    folder = Path(botocore.__file__).parent / "data" / "grafana"
    (model,) = sorted(folder.glob("*/service-2.json*"))[-1:]
    raw = gzip.decompress(model.read_bytes()) if model.suffix == ".gz" else model.read_bytes()
    return set(json.loads(raw)["shapes"][shape]["enum"])


@pytest.fixture(scope="module")
def on(tmp_path_factory) -> tuple[Plan, Path]:
    """dev with managed Grafana on (tests/stack_files.py's DEV_SETTINGS, which other modules read
    for their own settings): its stack file, and its Plan (made once per run, whichever workers
    ask)."""
    plan = dev_settings_plan()
    path = stack_variant(tmp_path_factory.mktemp("grafana"), "dev", DEV_SETTINGS_FILE, DEV_SETTINGS)
    assert DEV_SETTINGS["observability.managedGrafana"] is True
    return plan, path


def mocked(plan: Plan, resource: Any) -> dict[str, Any]:
    urn = f"{plan.project}::{plan.stack}::{resource.type}::{resource.name}"
    return MAKERS[resource.type](resource.name, urn, resource.inputs, "us-east-1")[1]


@pytest.mark.parametrize("stack", ["dev", "prod", "free-tier", "local"])
def test_the_shipped_stacks_have_no_managed_grafana(plan_of, stack):
    plan = plan_of(stack)
    assert not plan.of_type(WORKSPACE)
    assert "grafanaEndpoint" not in plan.outputs
    assert not [r for r in plan.resources if r.name.startswith("observability-grafana")]


def test_the_workspace_signs_in_through_identity_center_and_reads_prometheus_and_cloudwatch(on):
    plan, _ = on
    (ws,) = plan.of_type(WORKSPACE)
    assert ws.parent == plan.one(OBS).urn
    i = ws.inputs
    assert i["authenticationProviders"] == ["AWS_SSO"]
    assert i["accountAccessType"] == "CURRENT_ACCOUNT"
    assert i["permissionType"] == "CUSTOMER_MANAGED"  # the kit's role, not one AWS makes
    assert i["dataSources"] == ["PROMETHEUS", "CLOUDWATCH"]
    # every value is one AWS's API allows
    assert set(i["authenticationProviders"]) <= botocore_enum("AuthenticationProviderTypes")
    assert i["accountAccessType"] in botocore_enum("AccountAccessType")
    assert i["permissionType"] in botocore_enum("PermissionType")
    assert set(i["dataSources"]) <= botocore_enum("DataSourceType")
    role = plan.one("aws:iam/role:Role", "observability-grafana-role")
    assert i["roleArn"] == mocked(plan, role)["arn"]
    # the workspace's own host, as AWS names it (botocore grafana WorkspaceId: g-[0-9a-f]{10})
    assert re.fullmatch(
        r"g-[0-9a-f]{10}\.grafana-workspace\.us-east-1\.amazonaws\.com",
        plan.outputs["grafanaEndpoint"],
    )
    # the names the engine receives are the SDK's own (a misspelt one would be dropped)
    from tests.test_wire_format import sdk_input_names

    assert set(i) <= sdk_input_names(WORKSPACE)


def test_the_workspace_role_may_only_query_this_stacks_data(on):
    plan, _ = on
    role = plan.one("aws:iam/role:Role", "observability-grafana-role")
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "grafana.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    assert trust["Condition"]["StringLike"] == {
        "aws:SourceArn": "arn:aws:grafana:us-east-1:123456789012:/workspaces/*"
    }
    policy = plan.one("aws:iam/rolePolicy:RolePolicy", "observability-grafana-read")
    assert policy.inputs["role"] == role.id
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    amp = mocked(plan, plan.one("aws:amp/workspace:Workspace"))["arn"]
    prom = statements["QueryTheStacksPrometheus"]
    assert prom["Resource"] == amp  # this stack's workspace only
    assert set(prom["Action"]) == {
        "aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels", "aps:GetMetricMetadata",
        "aps:DescribeWorkspace",
    }  # fmt: skip
    # read-only everywhere: no write, put, delete or wildcard action
    actions = [a for s in statements.values() for a in s["Action"]]
    assert all("*" not in a for a in actions)
    assert not [a for a in actions if a.split(":")[1].startswith(("Put", "Delete", "Create"))]
    logs = statements["QueryTheClustersLogs"]
    groups = [
        g.inputs["name"]
        for g in plan.of_type("aws:cloudwatch/logGroup:LogGroup")
        if g.parent == plan.one(OBS).urn
    ]
    assert len(logs["Resource"]) == len(groups) == 4
    assert all(":log-group:/aws/containerinsights/" in arn for arn in logs["Resource"])


def test_the_workspace_is_within_aws_published_constraints_and_the_pack_passes(on):
    plan, path = on
    report = awsrules.check_plan(plan)
    assert not report.unlisted_types and not report.violations, report.violations
    (ws,) = plan.of_type(WORKSPACE)
    # the mapping is real: a value outside the schema's enumeration is caught
    bad = awsrules.check_resource(WORKSPACE, {**ws.inputs, "authenticationProviders": ["SSO"]})
    assert [v for v in bad.violations if "AuthenticationProviders" in str(v)], bad.violations
    cfg = load_config(resolve(str(path), REPO))
    mandatory = [v for v in offline.evaluate(plan, cfg) if v.level == "mandatory"]
    assert mandatory == []


def test_its_cost_is_priced_per_active_user(on):
    plan, _ = on
    est = estimate(plan, free_tier="none")
    lines = {line.item: line for line in est.lines if line.resource == "observability-grafana"}
    assert set(lines) == {"grafana/editor", "grafana/viewer"}
    assert lines["grafana/editor"].quantity >= 1  # AWS bills one editor per workspace at least
    assert lines["grafana/editor"].price.usd == 9.0 and lines["grafana/viewer"].price.usd == 5.0
    assert all(
        line.price.source.startswith("aws.amazon.com/grafana/pricing") for line in lines.values()
    )
    assert not [u for u in est.unpriced if u.type == WORKSPACE]


def test_managed_grafana_needs_observability():
    settings = {
        "aws:region": "us-east-1",
        "backbone:observability": '{"managedGrafana": true}',
    }
    with pytest.raises(ConfigError) as info:
        parse(settings, source="Pulumi.x.yaml", stack="x")
    assert "backbone:observability.managedGrafana: true needs observability.enabled: true" in str(
        info.value
    )
