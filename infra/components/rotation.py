"""Rotation of the database roles' passwords: a Secrets Manager rotation function per secret.

The app's role (shortener_app) and the housekeeping job's (shortener_job) keep their passwords in
Secrets Manager secrets; each secret gets, here:

- a Lambda function (app/functions/rotation, handler ``rotation.handler``: single-user strategy,
  the role changes its own password) in the private subnets with a security group of its own
  (out: 5432 to the database's group, 443 to Secrets Manager through the NAT gateway; the
  database admits it), its log group with retention, and an execution role that may read, write
  and relabel that one secret and nothing else;
- the invoke permission for secretsmanager.amazonaws.com, for that secret only (SourceArn);
- ``aws.secretsmanager.SecretRotation``: every N days (``database.appPasswordRotationDays``) as
  the schedule ``rate(N days)``, whose window opens at 00:00 UTC and lasts
  ``database.passwordRotationWindowHours`` (config keeps it out of the backup and maintenance
  windows: a days-only rule, ``automaticallyAfterDays``, may rotate at any hour of the day), not
  at creation (the first rotation comes after N days; Secrets Manager runs the testSecret step at
  once to check the wiring).

A failed rotation reaches the alerts topic (monitoring): the function's Errors alarm, and for a
failure with no function error (a timeout, no invocation, a step never finished) the rule on
Secrets Manager's RotationFailed event for the secret (`secret_arns`).

The secrets are encrypted with the account's AWS managed key (aws/secretsmanager): its key policy
admits any principal of the account calling through Secrets Manager, so the role needs no KMS
grant (a customer managed key would need kms:Decrypt and kms:GenerateDataKey on it, and cost
$1/month). The packaging is the housekeeping job's: ``package`` (infra/packaging.py) makes the
archive from app/functions/rotation, whose housekeeping.py (the job's credentials code) and
requirements are the job's own files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

from infra.components import iam, project_stack, sg
from infra.components.functions import VPC_ENI_ACTIONS, JobNetwork, Packager
from infra.config import FunctionsConfig

if TYPE_CHECKING:
    from infra.components.database import Database

HANDLER = "rotation.handler"
# Four short steps, each a login or two and a Secrets Manager call or two.
TIMEOUT_SECONDS = 30
MEMORY_MB = 256
# What the single-user rotation does with its one secret (the steps in app/functions/rotation).
SECRET_ACTIONS = (
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
)


@dataclass(frozen=True)
class RotationSchedule:
    """Every `days` days, in a window of `window_hours` from 00:00 UTC."""

    days: int
    window_hours: int

    @property
    def rules(self) -> aws.secretsmanager.SecretRotationRotationRulesArgs:
        unit = "day" if self.days == 1 else "days"
        return aws.secretsmanager.SecretRotationRotationRulesArgs(
            schedule_expression=f"rate({self.days} {unit})", duration=f"{self.window_hours}h"
        )


@dataclass(frozen=True)
class RotatedSecret:
    """One role's secret to rotate: `part` names its resources (app, job)."""

    part: str
    secret_arn: pulumi.Input[str]
    role: str


class PasswordRotation(pulumi.ComponentResource):
    """Rotation functions and schedules for the given secrets, on `schedule`. `runtime` is
    the functions' config (runtime, architecture, log retention); `after` what must have run
    first (the migration that creates the roles with the secrets' passwords)."""

    security_group: aws.ec2.SecurityGroup
    functions: dict[str, aws.lambda_.Function]
    secret_arns: dict[str, pulumi.Input[str]]
    """The rotated secrets' ARNs, by part (app, job): monitoring watches their failed rotations."""

    def __init__(
        self,
        name: str,
        *,
        schedule: RotationSchedule,
        secrets: Sequence[RotatedSecret],
        database: Database,
        network: JobNetwork,
        runtime: FunctionsConfig,
        source_dir: Path,
        package: Packager,
        stack_name: str,
        after: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:rotation:PasswordRotation", name, None, opts)
        self._name, self._runtime, self._database = name, runtime, database
        self._prefix = project_stack(stack_name)
        self._network = network
        self.security_group = self._security_group(network, database)
        database.admit("rotation", self.security_group.id, "PostgreSQL from the rotation")
        python_version = runtime.runtime.removeprefix("python")
        self._code = package(source_dir, runtime.architecture, python_version)
        self._env: dict[str, pulumi.Input[str]] = {
            "DB_HOST": database.address,
            "DB_PORT": str(database.port),
            "DB_NAME": database.db_name,
            "STACK_NAME": stack_name,
        }
        self.functions = {}
        self.secret_arns = {secret.part: secret.secret_arn for secret in secrets}
        for secret in secrets:
            function = self._function(secret)
            self.functions[secret.part] = function
            self._schedule(secret, function, schedule, after)
        self.register_outputs(
            {part: fn.name for part, fn in self.functions.items()}
            | {"securityGroupId": self.security_group.id}
        )

    @property
    def _child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self)

    def _security_group(self, network: JobNetwork, database: Database) -> aws.ec2.SecurityGroup:
        name = self._name
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=network.vpc_id,
            description="password rotation: out to PostgreSQL and HTTPS only; no ingress",
            opts=self._child,
        )
        sg.allow_out(
            f"{name}-to-db",
            group.id,
            database.port,
            "PostgreSQL",
            peer=database.security_group.id,
            opts=self._child,
        )
        sg.allow_out(
            f"{name}-to-https",
            group.id,
            443,
            "HTTPS to Secrets Manager (through the NAT gateway)",
            cidr="0.0.0.0/0",
            opts=self._child,
        )
        return group

    def _policy(
        self, secret: RotatedSecret, log_group: aws.cloudwatch.LogGroup
    ) -> pulumi.Output[str]:
        return pulumi.Output.all(secret.secret_arn, log_group.arn).apply(
            lambda a: iam.document(
                [
                    {
                        "Sid": "RotateItsSecret",
                        "Effect": "Allow",
                        "Action": list(SECRET_ACTIONS),
                        "Resource": a[0],
                    },
                    {
                        # GetRandomPassword acts on no resource: "*" is the only form it has.
                        "Sid": "DrawAPassword",
                        "Effect": "Allow",
                        "Action": "secretsmanager:GetRandomPassword",
                        "Resource": "*",
                    },
                    {
                        "Sid": "WriteItsLogs",
                        "Effect": "Allow",
                        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                        "Resource": f"{a[1]}:log-stream:*",
                    },
                    {
                        "Sid": "AttachToTheVpc",
                        "Effect": "Allow",
                        "Action": list(VPC_ENI_ACTIONS),
                        "Resource": "*",
                    },
                ]
            )
        )

    def _function(self, secret: RotatedSecret) -> aws.lambda_.Function:
        name, part, cfg = self._name, secret.part, self._runtime
        fn_name = f"{self._prefix}-rotate-{part}"
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-{part}-logs",
            name=f"/aws/lambda/{fn_name}",
            retention_in_days=cfg.log_retention_days,
            opts=self._child,
        )
        role = aws.iam.Role(
            f"{name}-{part}-role",
            description=f"Lambda {fn_name}: rotates the {secret.role} role's secret, nothing else",
            assume_role_policy=iam.trust("lambda.amazonaws.com"),
            opts=self._child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-{part}-policy",
            role=role.id,
            policy=self._policy(secret, log_group),
            opts=self._child,
        )
        parking = self._network.parking_security_group_id
        return aws.lambda_.Function(
            f"{name}-{part}",
            name=fn_name,
            description=f"rotates the password of the database role {secret.role}",
            role=role.arn,
            runtime=cfg.runtime,
            architectures=[cfg.architecture],
            handler=HANDLER,
            code=self._code,
            memory_size=MEMORY_MB,
            timeout=TIMEOUT_SECONDS,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=self._env),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="Text", log_group=log_group.name
            ),
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(
                subnet_ids=list(self._network.private_subnet_ids),
                security_group_ids=[self.security_group.id],
            ),
            # Destroy: the interfaces move to the VPC's default group, so this one goes at once.
            replace_security_groups_on_destroy=True if parking is not None else None,
            replacement_security_group_ids=[parking] if parking is not None else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, policy]),
        )

    def _schedule(
        self,
        secret: RotatedSecret,
        function: aws.lambda_.Function,
        schedule: RotationSchedule,
        after: Sequence[pulumi.Resource],
    ) -> None:
        name, part = self._name, secret.part
        permission = aws.lambda_.Permission(
            f"{name}-{part}-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="secretsmanager.amazonaws.com",
            source_arn=secret.secret_arn,
            opts=self._child,
        )
        aws.secretsmanager.SecretRotation(
            f"{name}-{part}",
            secret_id=secret.secret_arn,
            rotation_lambda_arn=function.arn,
            rotation_rules=schedule.rules,
            # The role must exist with the secret's password first (the migration makes it).
            rotate_immediately=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission, *after]),
        )
