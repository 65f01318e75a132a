"""Credentials that rotate (issue 17, part 3), read from the Plan: the pods read their database
credentials from Secrets Manager as an IAM role of their own (IRSA through the cluster's OIDC
provider), never from a URL fixed at deploy time; with RDS managing the master password (rotated
every 7 days) the migration reads RDS's secret, so that mode now works with the cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backbone.plan import Plan
from infra.components.workload import AWS_TOKEN_AUDIENCE, AWS_TOKEN_DIR
from tests.stack_files import dev_settings_plan

REPO = Path(__file__).resolve().parent.parent


def _pod(plan: Plan) -> dict[str, Any]:
    deployment = plan.one("kubernetes:apps/v1:Deployment", "app-deployment").inputs
    return dict(deployment["spec"]["template"]["spec"])


def _job_pod(plan: Plan) -> dict[str, Any]:
    """The migration's pod: its own Job (kubernetes:batch/v1:Job app-migration)."""
    job = plan.one("kubernetes:batch/v1:Job", "app-migration").inputs
    return dict(job["spec"]["template"]["spec"])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_app_reads_its_roles_secret_as_its_own_iam_role(plan_of: Any, stack: str) -> None:
    plan = plan_of(stack)
    pod = _pod(plan)
    (app,) = pod["containers"]
    role = plan.one("aws:iam/role:Role", "app-role")
    secret = plan.one("aws:secretsmanager/secret:Secret", "database-app-credentials")
    env = _env(app)
    assert env["DB_SECRET_ARN"] == secret.outputs["arn"]
    assert env["AWS_ROLE_ARN"] == role.outputs["arn"]
    assert env["AWS_REGION"] == plan.outputs["region"]
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{AWS_TOKEN_DIR}/token"
    # the token is minted for STS only and projected; the Kubernetes API token stays unmounted
    assert pod["automountServiceAccountToken"] is False
    (volume,) = [v for v in pod["volumes"] if v["name"] == "aws-token"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == AWS_TOKEN_AUDIENCE
    assert source["serviceAccountToken"]["expirationSeconds"] <= 86400
    for container in (app, *_job_pod(plan)["containers"]):
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["aws-token"]["mountPath"] == AWS_TOKEN_DIR and mounts["aws-token"]["readOnly"]
    # the secret holds the app role's name and password, and is a secret in the plan
    version = plan.one("aws:secretsmanager/secretVersion:SecretVersion", "database-app-credentials")
    assert version.inputs["secretString"] == "[secret]"
    assert version.inputs["secretId"] == secret.id


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_pods_role_is_assumed_by_their_service_account_only_and_reads_one_secret(
    plan_of: Any, stack: str
) -> None:
    plan = plan_of(stack)
    role = plan.one("aws:iam/role:Role", "app-role")
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    oidc = plan.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert statement["Principal"] == {"Federated": oidc.outputs["arn"]}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    (conditions,) = statement["Condition"].values()
    subjects = {k.rsplit(":", 1)[1]: v for k, v in conditions.items()}
    namespace = plan.outputs["appNamespace"]
    assert subjects == {
        "aud": AWS_TOKEN_AUDIENCE,
        "sub": f"system:serviceaccount:{namespace}:shortener",
    }
    account = plan.one("kubernetes:core/v1:ServiceAccount", "app-serviceaccount").inputs[
        "metadata"
    ]["name"]
    assert _pod(plan)["serviceAccountName"] == account == "shortener"
    policy = json.loads(plan.one("aws:iam/rolePolicy:RolePolicy", "app-role").inputs["policy"])
    secret = plan.one("aws:secretsmanager/secret:Secret", "database-app-credentials")
    assert policy["Statement"] == [
        {
            "Sid": "ReadTheDatabaseCredentials",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": [secret.outputs["arn"]],
        }
    ]
    # the role goes through the stack's AWS provider (its region and default tags)
    assert role.provider == plan.one("pulumi:providers:aws").urn


def test_managed_master_password_works_with_the_cluster() -> None:
    plan = dev_settings_plan()  # database.managePassword: true (tests/stack_files.py)
    db = plan.one("aws:rds/instance:Instance")
    assert db.inputs["manageMasterUserPassword"] is True and "password" not in db.inputs
    (app,) = _pod(plan)["containers"]
    job = _job_pod(plan)
    (migrate,) = job["containers"]
    master = db.outputs["masterUserSecrets"][0]["secretArn"]
    # the migration reads RDS's own secret at every run (and after a refused login): a rotation
    # every 7 days reaches it; the app keeps reading its own role's secret
    assert _env(migrate)["DB_SECRET_ARN"] == master
    assert _env(app)["DB_SECRET_ARN"] != master
    # ...as an IAM role of its own, assumed by its own service account: the app's role (which
    # the app's pods can assume) cannot read the master secret, the migration's can
    app_policy = json.loads(plan.one("aws:iam/rolePolicy:RolePolicy", "app-role").inputs["policy"])
    assert master not in json.dumps(app_policy)
    migration_role = plan.one("aws:iam/role:Role", "app-migration-role")
    assert (
        _env(migrate)["AWS_ROLE_ARN"] == migration_role.outputs["arn"] != _env(app)["AWS_ROLE_ARN"]
    )
    (trust,) = json.loads(migration_role.inputs["assumeRolePolicy"])["Statement"]
    (conditions,) = trust["Condition"].values()
    assert {k.rsplit(":", 1)[1]: v for k, v in conditions.items()}["sub"] == (
        "system:serviceaccount:backbone:shortener-migrate"
    )
    assert job["serviceAccountName"] == "shortener-migrate"
    policy = json.loads(
        plan.one("aws:iam/rolePolicy:RolePolicy", "app-migration-role").inputs["policy"]
    )
    (statement,) = policy["Statement"]
    app_secret = plan.one("aws:secretsmanager/secret:Secret", "database-app-credentials")
    job_secret = plan.one("aws:secretsmanager/secret:Secret", "functions-db-credentials")
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == [
        app_secret.outputs["arn"],
        job_secret.outputs["arn"],
        master,
    ]
    # the migration's URL needs no password then: nothing reads the master password at deploy
    migration = plan.one("kubernetes:core/v1:Secret", "app-migration-secret")
    names = {plan.by_urn(u).name for u in migration.dependencies}
    assert "database-password" not in names


def test_without_a_managed_password_the_migration_reads_no_secret(plan_of: Any) -> None:
    plan = plan_of("dev")
    (migrate,) = _job_pod(plan)["containers"]
    assert "DB_SECRET_ARN" not in _env(migrate)
    # the roles' passwords still come from their secrets; the app's role reads only its own
    app_secret = plan.one("aws:secretsmanager/secret:Secret", "database-app-credentials")
    job_secret = plan.one("aws:secretsmanager/secret:Secret", "functions-db-credentials")
    assert _env(migrate)["APP_DB_SECRET_ARN"] == app_secret.outputs["arn"]
    assert _env(migrate)["JOB_DB_SECRET_ARN"] == job_secret.outputs["arn"]
    policy = json.loads(
        plan.one("aws:iam/rolePolicy:RolePolicy", "app-migration-role").inputs["policy"]
    )
    assert policy["Statement"][0]["Resource"] == [
        app_secret.outputs["arn"],
        job_secret.outputs["arn"],
    ]
