"""The Lambda functions of app/functions/: a synthetic canary and a nightly housekeeping job.

Per function: a log group `/aws/lambda/<name>` with retention (created before the function, so
Lambda never creates an unmanaged one), an execution role with only what the code needs (see
app/functions/README.md), the function (runtime, architecture, memory, timeout and reserved
concurrency from config), an EventBridge schedule rule with its target and invoke permission, and
an async invoke config: retries bounded, events older than the schedule interval dropped, failed
events sent to one encrypted SQS queue (the on-failure destination) for a human to read.

* canary: outside the VPC (it probes the public load balancer); may publish metrics in
  `Backbone/Canary` only.
* housekeeping: in the private subnets with its own security group (out: 5432 to the database's
  security group, 443 to AWS APIs through the NAT gateway); reads its one secret at run time; may
  publish metrics in `Backbone/Jobs` only.

Packaging: the component does not build anything. It takes `package`, a function
(source_dir, architecture, python_version) -> pulumi.Archive, from infra/stack.py, which passes
`packaging.build` (pip for the Lambda platform, cached by content) under a real engine and a
placeholder archive named by `packaging.describe` (same name, no pip, no file) under Pulumi's
mocks. Why not key on `is_dry_run()`: `pulumi preview` is a dry run too, and it must see the real
archive, since the engine hashes the archive's contents to tell whether the code changed; an
unknown archive (built only in an `apply` when not dry-run) would show as a change in every
preview. What tells the offline engine apart is the mock monitor itself (see stack.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components import project_stack

# Namespaces and dimensions the code publishes (app/functions/README.md): an interface.
CANARY_NAMESPACE = "Backbone/Canary"
CANARY_METRICS = ("Availability", "Latency")
CANARY_PROBES = ("health", "read")
JOBS_NAMESPACE = "Backbone/Jobs"
JOB_METRICS = ("Success", "PurgedLinks", "LiveLinks")
HEALTH_PATH = "/readyz"

# What Lambda needs to attach a function to a VPC: the actions of the AWS managed policy
# AWSLambdaVPCAccessExecutionRole, without its logs:* on every log group (the role below grants
# its own log group only). EC2 supports no resource-level scoping of the Describe actions, and
# Lambda manages the interfaces itself, so these are granted on "*".
VPC_ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)

Packager = Callable[[Path, str, str], pulumi.Archive]


@dataclass(frozen=True)
class FunctionsArgs:
    source_root: Path
    """The folder holding canary/ and housekeeping/ (app/functions)."""
    package: Packager
    """(source_dir, architecture, python_version) -> the function's archive."""
    stack_name: str
    runtime: str
    architecture: str
    memory_mb: int
    canary_timeout_seconds: int
    housekeeping_timeout_seconds: int
    reserved_concurrency: int | None
    log_retention_days: int
    canary_schedule: str
    housekeeping_schedule: str
    canary_schedule_seconds: int
    """Seconds between canary runs: a canary event older than this is not worth delivering."""
    base_url: pulumi.Input[str]
    """The load balancer's URL (scheme and host)."""
    read_path: str
    vpc_id: pulumi.Input[str]
    private_subnet_ids: list[Any]
    database_security_group_id: pulumi.Input[str]
    database_address: pulumi.Input[str]
    database_port: int
    database_name: str
    database_username: str
    database_password: pulumi.Input[str] | None = None
    """Used to create the job's credentials secret when the database has no RDS-managed one."""
    database_secret_arn: pulumi.Input[str] | None = None
    """RDS's own master-user secret (username and password only), when it manages the password."""
    parking_security_group_id: pulumi.Input[str] | None = None
    """The VPC's default security group: on destroy the job's network interfaces move to it, so
    the job's own group is deleted at once instead of waiting for Lambda to release them."""


def _policy(statements: list[Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


class Functions(pulumi.ComponentResource):
    canary: aws.lambda_.Function
    housekeeping: aws.lambda_.Function
    job_security_group: aws.ec2.SecurityGroup
    failures: aws.sqs.Queue
    secret_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:functions:Functions", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = project_stack(args.stack_name)
        python_version = args.runtime.removeprefix("python")

        # Failed async invocations (after the retries) land here, kept 14 days, encrypted (SSE-SQS).
        self.failures = aws.sqs.Queue(
            f"{name}-failures",
            message_retention_seconds=14 * 86400,
            sqs_managed_sse_enabled=True,
            opts=child,
        )

        # -- the job's network and credentials -----------------------------------------------------
        self.job_security_group = aws.ec2.SecurityGroup(
            f"{name}-housekeeping-sg",
            vpc_id=args.vpc_id,
            description="housekeeping job: out to PostgreSQL and HTTPS only; no ingress",
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-housekeeping-to-db",
            security_group_id=self.job_security_group.id,
            referenced_security_group_id=args.database_security_group_id,
            ip_protocol="tcp",
            from_port=args.database_port,
            to_port=args.database_port,
            description="PostgreSQL",
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-housekeeping-to-https",
            security_group_id=self.job_security_group.id,
            cidr_ipv4="0.0.0.0/0",
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            description="HTTPS to Secrets Manager and CloudWatch (through the NAT gateway)",
            opts=child,
        )
        db_env: dict[str, pulumi.Input[str]] = {
            "DB_HOST": args.database_address,
            "DB_PORT": str(args.database_port),
            "DB_NAME": args.database_name,
        }
        if args.database_secret_arn is not None:
            self.secret_arn = pulumi.Output.from_input(args.database_secret_arn)
        else:
            if args.database_password is None:
                raise ValueError("FunctionsArgs needs database_secret_arn or database_password")
            # The job reads the credentials at run time; they are never in its package or env.
            secret = aws.secretsmanager.Secret(
                f"{name}-db-credentials",
                description="the housekeeping job's database credentials (JSON)",
                recovery_window_in_days=7,
                opts=child,
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-db-credentials",
                secret_id=secret.id,
                # Secret because the password is; said again so it can never leak.
                secret_string=pulumi.Output.all(
                    args.database_password, args.database_address
                ).apply(
                    lambda a: json.dumps(
                        {
                            "username": args.database_username,
                            "password": a[0],
                            "host": a[1],
                            "port": args.database_port,
                            "dbname": args.database_name,
                        }
                    )
                ),
                opts=pulumi.ResourceOptions(
                    parent=self, additional_secret_outputs=["secretString"]
                ),
            )
            self.secret_arn = secret.arn

        # -- the functions --------------------------------------------------------------------------
        self.canary = self._function(
            name,
            "canary",
            args,
            prefix=prefix,
            python_version=python_version,
            timeout=args.canary_timeout_seconds,
            schedule=args.canary_schedule,
            # A missed probe is replaced by the next run: no retry, nothing older than a period.
            retries=0,
            max_event_age=max(60, args.canary_schedule_seconds),
            env={
                "CANARY_BASE_URL": args.base_url,
                "CANARY_HEALTH_PATH": HEALTH_PATH,
                "CANARY_READ_PATH": args.read_path,
                # The kit creates no canary link: a 404 still went through the app and the DB.
                "CANARY_READ_ACCEPT_STATUS": "404",
                "STACK_NAME": args.stack_name,
                "METRICS_NAMESPACE": CANARY_NAMESPACE,
            },
            statements=[],
            namespace=CANARY_NAMESPACE,
        )
        self.housekeeping = self._function(
            name,
            "housekeeping",
            args,
            prefix=prefix,
            python_version=python_version,
            timeout=args.housekeeping_timeout_seconds,
            schedule=args.housekeeping_schedule,
            # The job is idempotent and takes an advisory lock: two retries are safe.
            retries=2,
            max_event_age=6 * 3600,
            env={
                "DB_SECRET_ARN": self.secret_arn,
                **db_env,
                "STACK_NAME": args.stack_name,
                "METRICS_NAMESPACE": JOBS_NAMESPACE,
            },
            statements=[
                {
                    "Sid": "ReadItsDatabaseSecret",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": self.secret_arn,
                },
                {
                    "Sid": "AttachToTheVpc",
                    "Effect": "Allow",
                    "Action": list(VPC_ENI_ACTIONS),
                    "Resource": "*",
                },
            ],
            namespace=JOBS_NAMESPACE,
            vpc=aws.lambda_.FunctionVpcConfigArgs(
                subnet_ids=args.private_subnet_ids,
                security_group_ids=[self.job_security_group.id],
            ),
        )
        self.register_outputs(
            {
                "canaryName": self.canary.name,
                "housekeepingName": self.housekeeping.name,
                "failuresQueueUrl": self.failures.url,
                "jobSecurityGroupId": self.job_security_group.id,
            }
        )

    def _function(
        self,
        name: str,
        part: str,
        args: FunctionsArgs,
        *,
        prefix: str,
        python_version: str,
        timeout: int,
        schedule: str,
        retries: int,
        max_event_age: int,
        env: dict[str, pulumi.Input[str]],
        statements: list[dict[str, Any]],
        namespace: str,
        vpc: aws.lambda_.FunctionVpcConfigArgs | None = None,
    ) -> aws.lambda_.Function:
        child = pulumi.ResourceOptions(parent=self)
        fn_name = f"{prefix}-{part}"  # known before creation: the log group is named after it
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-{part}-logs",
            name=f"/aws/lambda/{fn_name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-{part}-role",
            description=f"Lambda {fn_name}: its log group, its metrics namespace, nothing else",
            assume_role_policy=_policy(
                [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ]
            ),
            opts=child,
        )
        base = [
            {
                "Sid": "WriteItsLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": log_group.arn.apply(lambda arn: f"{arn}:log-stream:*"),
            },
            {
                # PutMetricData has no resource-level permissions: "*" with the namespace
                # condition is the narrowest grant there is.
                "Sid": "PublishItsMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
            },
            {
                "Sid": "SendFailedEvents",
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": self.failures.arn,
            },
        ]
        policy = aws.iam.RolePolicy(
            f"{name}-{part}-policy",
            role=role.id,
            policy=pulumi.Output.from_input(base + statements).apply(_policy),
            opts=child,
        )
        function = aws.lambda_.Function(
            f"{name}-{part}",
            name=fn_name,
            description={
                "canary": "probes the app through the load balancer; publishes availability",
                "housekeeping": "nightly: purges expired links, records daily stats",
            }[part],
            role=role.arn,
            runtime=args.runtime,
            architectures=[args.architecture],
            handler=f"{part}.handler",
            code=args.package(args.source_root / part, args.architecture, python_version),
            memory_size=args.memory_mb,
            timeout=timeout,
            reserved_concurrent_executions=args.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=env),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="Text", log_group=log_group.name
            ),
            vpc_config=vpc,
            # Destroy: swap the function's security groups for the VPC's default group first, so
            # its own group is free to delete while Lambda releases the interfaces (the private
            # subnets wait for those: network.SUBNET_DELETE_TIMEOUT).
            replace_security_groups_on_destroy=(
                True if vpc is not None and args.parking_security_group_id is not None else None
            ),
            replacement_security_group_ids=(
                [args.parking_security_group_id]
                if vpc is not None and args.parking_security_group_id is not None
                else None
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, policy]),
        )
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-{part}-async",
            function_name=function.name,
            maximum_retry_attempts=retries,
            maximum_event_age_in_seconds=max_event_age,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=self.failures.arn
                )
            ),
            opts=child,
        )
        rule = aws.cloudwatch.EventRule(
            f"{name}-{part}-schedule",
            description=f"runs {fn_name} on {schedule}",
            schedule_expression=schedule,
            opts=child,
        )
        permission = aws.lambda_.Permission(
            f"{name}-{part}-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-{part}-target",
            rule=rule.name,
            arn=function.arn,
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_retry_attempts=2, maximum_event_age_in_seconds=max_event_age
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
        )
        return function
