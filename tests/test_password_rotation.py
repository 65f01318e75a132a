"""The database roles' passwords rotate (issue 17, part 3), read from the Plan: a Secrets Manager
rotation function per role secret (the app's, the housekeeping job's) in the VPC, its least
privilege, its invoke permission, the SecretRotation and its schedule from
database.appPasswordRotationDays, after the migration Job; and the migration's separation from
the app (its own Job, service account and IAM role) in every stack with a cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backbone.plan import Plan, Resource
from infra.components.functions import VPC_ENI_ACTIONS
from infra.components.rotation import SECRET_ACTIONS
from tests.stack_files import dev_settings_plan, variant_plan
from tests.test_database_ops import _refusal, _variant

ROTATION = "aws:secretsmanager/secretRotation:SecretRotation"
FUNCTION = "aws:lambda/function:Function"
SECRETS = {"app": "database-app-credentials", "job": "functions-db-credentials"}
ROLES = {"app": "shortener_app", "job": "shortener_job"}


def _secret(plan: Plan, part: str) -> Resource:
    return plan.one("aws:secretsmanager/secret:Secret", SECRETS[part])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_role_secret_rotates_on_the_schedule_after_the_migration(
    plan_of: Any, stack: str
) -> None:
    plan = plan_of(stack)
    rotations = {r.name: r for r in plan.of_type(ROTATION)}
    assert set(rotations) == {"rotation-app", "rotation-job"}
    job = plan.one("kubernetes:batch/v1:Job", "app-migration")
    for part in ("app", "job"):
        rotation = rotations[f"rotation-{part}"]
        function = plan.one(FUNCTION, f"rotation-{part}")
        assert rotation.inputs["secretId"] == _secret(plan, part).outputs["arn"]
        assert rotation.inputs["rotationLambdaArn"] == function.outputs["arn"]
        # the default: every 30 days, in 00:00-02:00 UTC (before the 03:00 backup window); the
        # first after 30 days, not at creation
        assert rotation.inputs["rotationRules"] == {
            "scheduleExpression": "rate(30 days)",
            "duration": "2h",
        }
        assert rotation.inputs["rotateImmediately"] is False
        # after the migration has made the role with the secret's password, and after the
        # permission that lets Secrets Manager invoke the function
        assert job.urn in rotation.dependencies
        if part == "app":
            version = "aws:secretsmanager/secretVersion:SecretVersion"
            assert plan.one(version, SECRETS[part]).urn in rotation.dependencies
        permission = plan.one("aws:lambda/permission:Permission", f"rotation-{part}-invoke")
        assert permission.urn in rotation.dependencies
        assert permission.inputs == {
            **permission.inputs,
            "action": "lambda:InvokeFunction",
            "principal": "secretsmanager.amazonaws.com",
            # this secret only: no other secret's rotation may invoke it
            "sourceArn": _secret(plan, part).outputs["arn"],
            "function": function.outputs["name"],
        }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_rotation_function_runs_in_the_vpc_next_to_the_database(
    plan_of: Any, stack: str
) -> None:
    plan = plan_of(stack)
    db = plan.one("aws:rds/instance:Instance")
    group = plan.one("aws:ec2/securityGroup:SecurityGroup", "rotation-sg")
    db_group = plan.one("aws:ec2/securityGroup:SecurityGroup", "database-sg")
    private = {
        r.outputs["id"] for r in plan.of_type("aws:ec2/subnet:Subnet") if "private" in r.name
    }
    for part in ("app", "job"):
        fn = plan.one(FUNCTION, f"rotation-{part}").inputs
        assert fn["handler"] == "rotation.handler"
        assert fn["name"] == f"backbone-{stack}-rotate-{part}"
        assert Path(fn["code"]["archive"]).name.startswith("rotation-")
        assert set(fn["vpcConfig"]["subnetIds"]) == private
        assert fn["vpcConfig"]["securityGroupIds"] == [group.outputs["id"]]
        # where the database is; the app role's secret holds only username and password
        assert fn["environment"]["variables"] == {
            "DB_HOST": db.outputs["address"],
            "DB_PORT": "5432",
            "DB_NAME": "app",
            "STACK_NAME": stack,
        }
        logs = plan.one("aws:cloudwatch/logGroup:LogGroup", f"rotation-{part}-logs").inputs
        assert logs["name"] == f"/aws/lambda/{fn['name']}" and logs["retentionInDays"] > 0
    egress = {
        r.inputs["description"]: r.inputs
        for r in plan.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.inputs["securityGroupId"] == group.outputs["id"]
    }
    assert egress["PostgreSQL"]["referencedSecurityGroupId"] == db_group.outputs["id"]
    assert egress["PostgreSQL"]["fromPort"] == egress["PostgreSQL"]["toPort"] == 5432
    assert egress["HTTPS to Secrets Manager (through the NAT gateway)"]["fromPort"] == 443
    assert len(egress) == 2
    ingress = plan.one(
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "database-from-rotation"
    ).inputs
    assert ingress["securityGroupId"] == db_group.outputs["id"]
    assert ingress["referencedSecurityGroupId"] == group.outputs["id"]
    assert (ingress["fromPort"], ingress["toPort"]) == (5432, 5432)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_rotation_functions_role_rotates_its_one_secret_and_nothing_else(
    plan_of: Any, stack: str
) -> None:
    plan = plan_of(stack)
    for part, other in (("app", "job"), ("job", "app")):
        role = plan.one("aws:iam/role:Role", f"rotation-{part}-role")
        (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
        policy = plan.one("aws:iam/rolePolicy:RolePolicy", f"rotation-{part}-policy")
        assert policy.inputs["role"] == role.outputs["id"]
        statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
        assert set(statements) == {
            "RotateItsSecret",
            "DrawAPassword",
            "WriteItsLogs",
            "AttachToTheVpc",
        }
        rotate = statements["RotateItsSecret"]
        assert rotate["Resource"] == _secret(plan, part).outputs["arn"]
        assert sorted(rotate["Action"]) == sorted(SECRET_ACTIONS)
        assert "secretsmanager:DeleteSecret" not in rotate["Action"]
        assert statements["DrawAPassword"] == {
            "Sid": "DrawAPassword",
            "Effect": "Allow",
            "Action": "secretsmanager:GetRandomPassword",
            "Resource": "*",
        }
        logs = plan.one("aws:cloudwatch/logGroup:LogGroup", f"rotation-{part}-logs")
        assert statements["WriteItsLogs"]["Resource"] == f"{logs.outputs['arn']}:log-stream:*"
        assert statements["AttachToTheVpc"]["Action"] == list(VPC_ENI_ACTIONS)
        text = policy.inputs["policy"]
        # not the other role's secret, not the master's, no KMS (aws/secretsmanager's key policy
        # admits the account's principals through Secrets Manager)
        assert _secret(plan, other).outputs["arn"] not in text
        assert "kms:" not in text and "rds!" not in text


# appPasswordRotationDays 7 and a 3-hour rotation window: read by the schedule and window tests
WEEKLY = {"database.appPasswordRotationDays": 7, "database.passwordRotationWindowHours": 3}


def test_the_schedule_is_a_setting_aws_bounds(tmp_path: Path, backbone_cli: Any) -> None:
    plan = variant_plan("dev", "Pulumi.dev-copy.yaml", WEEKLY)
    assert {r.inputs["rotationRules"]["scheduleExpression"] for r in plan.of_type(ROTATION)} == {
        "rate(7 days)"
    }
    plan = dev_settings_plan()  # database.appPasswordRotationDays: 1
    # Secrets Manager's rate: one day, not "1 days"
    assert {r.inputs["rotationRules"]["scheduleExpression"] for r in plan.of_type(ROTATION)} == {
        "rate(1 day)"
    }
    # the rate's longest period is 999 days (Secrets Manager user guide, rotation schedules)
    for days in (0, 1000):
        text = _refusal(
            backbone_cli, _variant(tmp_path, **{"database.appPasswordRotationDays": days})
        )
        assert "appPasswordRotationDays" in text, text


@pytest.mark.parametrize("stack", ["local", "free-tier", "dev", "prod"])
def test_the_migration_job_exists_in_every_stack_with_a_cluster(plan_of: Any, stack: str) -> None:
    plan = plan_of(stack)
    clusters = plan.of_type("aws:eks/cluster:Cluster")
    jobs = plan.of_type("kubernetes:batch/v1:Job")
    rotations = plan.of_type(ROTATION)
    if not clusters:
        # no cluster: the host (or Docker) runs the migration itself; nothing rotates the roles
        assert not jobs and not rotations
        return
    (job,) = jobs
    assert job.inputs["metadata"]["name"].startswith("shortener-migrate-")
    (deployment,) = [
        r for r in plan.of_type("kubernetes:apps/v1:Deployment") if r.name == "app-deployment"
    ]
    assert job.urn in deployment.dependencies
    # the Job runs once its role may read the secrets (no AccessDenied burning its retries)
    migration_policy = plan.one("aws:iam/rolePolicy:RolePolicy", "app-migration-role")
    assert migration_policy.urn in job.dependencies
    # ...and once the roles' secrets hold their first values (it reads them at once)
    version = "aws:secretsmanager/secretVersion:SecretVersion"
    assert plan.one(version, "database-app-credentials").urn in job.dependencies
    if plan.of_type("backbone:functions:Functions"):
        assert plan.one(version, "functions-db-credentials").urn in job.dependencies
    # the app's pods can assume only the app's role, which reads the app's secret only
    app_policy = json.loads(plan.one("aws:iam/rolePolicy:RolePolicy", "app-role").inputs["policy"])
    assert app_policy["Statement"][0]["Resource"] == [_secret(plan, "app").outputs["arn"]]
    assert job.inputs["spec"]["template"]["spec"]["serviceAccountName"] == "shortener-migrate"
    assert (
        plan.one("kubernetes:apps/v1:Deployment", "app-deployment").inputs["spec"]["template"][
            "spec"
        ]["serviceAccountName"]
        == "shortener"
    )
    # no role password in any plan: the migration reads them from their secrets
    secret = plan.one("kubernetes:core/v1:Secret", "app-migration-secret")
    names = {plan.by_urn(u).name for u in secret.dependencies}
    assert not {"database-app-password", "database-job-password"} & names


def _rules(plan: Plan) -> set[tuple[str, str]]:
    return {
        (r.inputs["rotationRules"]["scheduleExpression"], r.inputs["rotationRules"]["duration"])
        for r in plan.of_type(ROTATION)
    }


def test_the_rotation_window_is_a_setting_kept_out_of_the_database_windows(
    tmp_path: Path, backbone_cli: Any
) -> None:
    # the window opens at 00:00 UTC (a rate()'s does) and may run up to the backup window
    # (the variant rotates weekly)
    assert _rules(variant_plan("dev", "Pulumi.dev-copy.yaml", WEEKLY)) == {("rate(7 days)", "3h")}
    # unset, it is 2 hours, cut shorter by a backup window that starts earlier, 01:00-02:00
    # (the variant rotates daily)
    assert _rules(dev_settings_plan()) == {("rate(1 day)", "1h")}
    # into the 03:00-04:00 backup window: refused, naming it and the hours allowed
    text = _refusal(backbone_cli, _variant(tmp_path, **{"database.passwordRotationWindowHours": 4}))
    assert "backbone:database.passwordRotationWindowHours" in text, text
    assert "00:00-04:00 UTC" in text and "backup window '03:00-04:00'" in text, text
    assert "allowed: 1 to 3 (the window ends by 03:00 UTC)" in text, text
    # the maintenance window too, on any weekday (30 days drift over the week)
    text = _refusal(
        backbone_cli,
        _variant(
            tmp_path,
            **{
                "database.maintenanceWindow": "wed:01:00-wed:01:30",
                "database.passwordRotationWindowHours": 2,
            },
        ),
    )
    assert "maintenance window 'wed:01:00-wed:01:30'" in text, text
    assert "allowed: 1 (the window ends by 01:00 UTC)" in text, text
    # no free hour after midnight, set or not: say which windows to move
    for hours in (1, None):
        text = _refusal(
            backbone_cli,
            _variant(
                tmp_path,
                **{
                    "database.backupWindow": "23:45-00:30",
                    "database.passwordRotationWindowHours": hours,
                },
            ),
        )
        assert "no hour from 00:00 UTC is free of the backup window '23:45-00:30'" in text, text
        assert "move database.backupWindow and database.maintenanceWindow" in text, text
    # and more than a UTC day is what Secrets Manager refuses
    text = _refusal(
        backbone_cli, _variant(tmp_path, **{"database.passwordRotationWindowHours": 25})
    )
    assert "passwordRotationWindowHours" in text, text


def test_a_stack_without_the_cluster_is_not_held_to_the_rotation_window(
    tmp_path: Path, backbone_cli: Any
) -> None:
    # free-tier rotates nothing: its backup window may open at midnight
    path = _variant(tmp_path, "free-tier", **{"database.backupWindow": "00:00-01:00"})
    result = backbone_cli("plan", str(path), "-f", "json")
    assert result.returncode == 0, result.stderr
