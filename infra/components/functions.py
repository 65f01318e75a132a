"""The Lambda functions of app/functions/: a synthetic canary and a nightly housekeeping job.

Per function: a log group `/aws/lambda/<name>` with retention (created before the function, so
Lambda never creates an unmanaged one), an execution role with only what the code needs (see
app/functions/README.md), the function (runtime, architecture, memory, timeout and reserved
concurrency from config), an EventBridge schedule rule with its target and invoke permission, and
an async invoke config: retries bounded, events older than the schedule interval dropped, failed
events sent to one encrypted SQS queue (the on-failure destination) for a human to read.

* canary: outside the VPC (it probes the public load balancer, or the host's own public address
  on a stack without one: no NAT needed); may publish metrics in `Backbone/Canary` only.
* housekeeping: in the private subnets with its own security group (out: 5432 to the database's
  security group, 443 to AWS APIs through the NAT gateway); reads its one secret at run time; may
  publish metrics in `Backbone/Jobs` only. Made only with `housekeeping` (config
  functions.housekeeping): without it (the free-tier stack) there is no job, no job security
  group and no Secrets Manager secret.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

from infra.components import iam, project_stack, sg
from infra.config import FunctionsConfig, rate_seconds

if TYPE_CHECKING:
    from infra.components.database import Database

# Namespaces and dimensions the code publishes (app/functions/README.md): an interface.
CANARY_NAMESPACE = "Backbone/Canary"
CANARY_METRICS = ("Availability", "Latency")
CANARY_PROBES = ("health", "read")
# With the canary link wired (the cluster's migration creates it): the cached-redirect probe, and
# on https the certificate metrics (dimension Probe=certificate). For alarms (monitoring).
CANARY_REDIRECT_PROBE = "redirect"
CANARY_CERT_METRICS = ("CertificateExpiring", "CertificateDaysLeft")
JOBS_NAMESPACE = "Backbone/Jobs"
JOB_METRICS = ("Success", "PurgedLinks", "LiveLinks")
# The purge's own metrics (app/functions/housekeeping): what it deleted and whether it finished.
PURGE_METRICS = ("PurgedExpired", "PurgedUnused", "PurgeBatches", "PurgeComplete", "ExpiredLinks")
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
class JobNetwork:
    """Where the housekeeping job runs: wiring from the network component."""

    vpc_id: pulumi.Input[str]
    private_subnet_ids: Sequence[Any]
    parking_security_group_id: pulumi.Input[str] | None = None
    """The VPC's default security group: on destroy the job's network interfaces move to it, so
    the job's own group is deleted at once instead of waiting for Lambda to release them."""


@dataclass(frozen=True)
class CanaryLink:
    """The known link the app's migration creates: the canary follows it (a cached redirect)."""

    code: str
    url: str


@dataclass(frozen=True)
class Spec:
    """One function as the component makes it (what differs between the two)."""

    part: str
    timeout: int
    schedule: str
    retries: int
    max_event_age: int
    env: dict[str, pulumi.Input[str]]
    statements: list[dict[str, Any]]
    namespace: str
    vpc: aws.lambda_.FunctionVpcConfigArgs | None = None


DESCRIPTIONS = {
    "canary": "probes the app from the internet; publishes availability",
    "housekeeping": "nightly: purges expired links, records daily stats",
}


class Functions(pulumi.ComponentResource):
    """The canary and the housekeeping job from their config section. `package` makes an
    archive; `base_url` is the app's public URL (the load balancer's, or the host's own);
    `network` where the job runs; `database` the one it works on (its security group, endpoint
    and the job's own role). Without `cfg.housekeeping` only the canary is made, and `network`
    and `database` may be None."""

    canary: aws.lambda_.Function
    housekeeping: aws.lambda_.Function | None
    job_security_group: aws.ec2.SecurityGroup | None
    failures: aws.sqs.Queue
    secret_arn: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        cfg: FunctionsConfig,
        *,
        source_root: Path,
        package: Packager,
        stack_name: str,
        base_url: pulumi.Input[str],
        network: JobNetwork | None,
        database: Database | None,
        canary_link: CanaryLink | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:functions:Functions", name, None, opts)
        self._name, self._cfg = name, cfg
        self._source_root, self._package = source_root, package
        self._prefix = project_stack(stack_name)
        # Failed async invocations (after the retries) land here, kept 14 days, encrypted (SSE-SQS).
        self.failures = aws.sqs.Queue(
            f"{name}-failures",
            message_retention_seconds=14 * 86400,
            sqs_managed_sse_enabled=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.job_security_group = None
        self.secret_arn = None
        self.housekeeping = None
        self._parking = network.parking_security_group_id if network else None
        self.canary = self._function(self._canary_spec(stack_name, base_url, canary_link))
        outputs: dict[str, Any] = {"canaryName": self.canary.name}
        if cfg.housekeeping:
            if network is None or database is None:
                raise ValueError("the housekeeping job needs its network and its database")
            group = self.job_security_group = self._job_security_group(network, database)
            secret = self.secret_arn = self._job_secret(database)
            self.housekeeping = self._function(
                self._housekeeping_spec(stack_name, network, database, secret, group)
            )
            outputs |= {
                "housekeepingName": self.housekeeping.name,
                "jobSecurityGroupId": group.id,
            }
        self.register_outputs({**outputs, "failuresQueueUrl": self.failures.url})

    @property
    def names(self) -> dict[str, pulumi.Output[str]]:
        """The functions made, by short name (canary, housekeeping)."""
        made = {"canary": self.canary, "housekeeping": self.housekeeping}
        return {part: fn.name for part, fn in made.items() if fn is not None}

    def _job_security_group(self, network: JobNetwork, database: Database) -> aws.ec2.SecurityGroup:
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        group = aws.ec2.SecurityGroup(
            f"{name}-housekeeping-sg",
            vpc_id=network.vpc_id,
            description="housekeeping job: out to PostgreSQL and HTTPS only; no ingress",
            opts=child,
        )
        sg.allow_out(
            f"{name}-housekeeping-to-db",
            group.id,
            database.port,
            "PostgreSQL",
            peer=database.security_group.id,
            opts=child,
        )
        sg.allow_out(
            f"{name}-housekeeping-to-https",
            group.id,
            443,
            "HTTPS to Secrets Manager and CloudWatch (through the NAT gateway)",
            cidr="0.0.0.0/0",
            opts=child,
        )
        return group

    def _job_secret(self, database: Database) -> pulumi.Output[str]:
        """The job's own role's credentials (JSON), read at run time: never in its package, its
        environment or a plan."""
        name = self._name
        username, port, dbname = database.job_username, database.port, database.db_name
        secret = aws.secretsmanager.Secret(
            f"{name}-db-credentials",
            description="the housekeeping job's database credentials (JSON)",
            recovery_window_in_days=7,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-db-credentials",
            secret_id=secret.id,
            # Secret because the password is; said again so it can never leak.
            secret_string=pulumi.Output.all(database.job_password, database.address).apply(
                lambda a: json.dumps(
                    {
                        "username": username,
                        "password": a[0],
                        "host": a[1],
                        "port": port,
                        "dbname": dbname,
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretString"]),
        )
        return secret.arn

    def _canary_spec(
        self, stack_name: str, base_url: pulumi.Input[str], link: CanaryLink | None
    ) -> Spec:
        cfg = self._cfg
        probes: dict[str, pulumi.Input[str]] = (
            {
                # The link exists: its lookup answers 200, and its redirect must point at the URL.
                "CANARY_REDIRECT_CODE": link.code,
                "CANARY_REDIRECT_URL": link.url,
            }
            if link is not None
            # No link made: a 404 still went through the app and the database.
            else {"CANARY_READ_ACCEPT_STATUS": "404"}
        )
        return Spec(
            part="canary",
            timeout=cfg.canary_timeout_seconds,
            schedule=cfg.canary_schedule,
            # A missed probe is replaced by the next run: no retry, nothing older than a period.
            retries=0,
            max_event_age=max(60, rate_seconds(cfg.canary_schedule) or 300),
            env={
                "CANARY_BASE_URL": base_url,
                "CANARY_HEALTH_PATH": HEALTH_PATH,
                "CANARY_READ_PATH": cfg.canary_read_path,
                **probes,
                # Read only where the base URL is https.
                "CANARY_CERT_WARN_DAYS": str(cfg.canary_cert_warn_days),
                "STACK_NAME": stack_name,
                "METRICS_NAMESPACE": CANARY_NAMESPACE,
            },
            statements=[],
            namespace=CANARY_NAMESPACE,
        )

    def _housekeeping_spec(
        self,
        stack_name: str,
        network: JobNetwork,
        database: Database,
        secret_arn: pulumi.Output[str],
        group: aws.ec2.SecurityGroup,
    ) -> Spec:
        cfg = self._cfg
        return Spec(
            part="housekeeping",
            timeout=cfg.housekeeping_timeout_seconds,
            schedule=cfg.housekeeping_schedule,
            # The job is idempotent and takes an advisory lock: two retries are safe.
            retries=2,
            max_event_age=6 * 3600,
            env={
                "DB_SECRET_ARN": secret_arn,
                "DB_HOST": database.address,
                "DB_PORT": str(database.port),
                "DB_NAME": database.db_name,
                "PURGE_GRACE_DAYS": str(cfg.purge_grace_days),
                "PURGE_UNUSED_AFTER_DAYS": str(cfg.purge_unused_after_days),
                "PURGE_BATCH_SIZE": str(cfg.purge_batch_size),
                "PURGE_MAX_BATCHES": str(cfg.purge_max_batches),
                "STACK_NAME": stack_name,
                "METRICS_NAMESPACE": JOBS_NAMESPACE,
            },
            statements=[
                {
                    "Sid": "ReadItsDatabaseSecret",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": secret_arn,
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
                subnet_ids=list(network.private_subnet_ids),
                security_group_ids=[group.id],
            ),
        )

    def _role(
        self, spec: Spec, fn_name: str, log_group: aws.cloudwatch.LogGroup
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        """An execution role with its log group, its metrics namespace, the failure queue, and
        the spec's own statements; nothing else."""
        name, child = f"{self._name}-{spec.part}", pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            description=f"Lambda {fn_name}: its log group, its metrics namespace, nothing else",
            assume_role_policy=iam.trust("lambda.amazonaws.com"),
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
                "Condition": {"StringEquals": {"cloudwatch:namespace": spec.namespace}},
            },
            {
                "Sid": "SendFailedEvents",
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": self.failures.arn,
            },
        ]
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.from_input(base + spec.statements).apply(
                lambda statements: iam.document(statements)  # type: ignore[arg-type]
            ),
            opts=child,
        )
        return role, policy

    def _function(self, spec: Spec) -> aws.lambda_.Function:
        cfg, part = self._cfg, spec.part
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        fn_name = f"{self._prefix}-{part}"  # known before creation: the log group is named after it
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-{part}-logs",
            name=f"/aws/lambda/{fn_name}",
            retention_in_days=cfg.log_retention_days,
            opts=child,
        )
        role, policy = self._role(spec, fn_name, log_group)
        # Destroy: swap the function's security groups for the VPC's default group first, so
        # its own group is free to delete while Lambda releases the interfaces (the private
        # subnets wait for those: network.SUBNET_DELETE_TIMEOUT).
        parking = self._parking
        park = spec.vpc is not None and parking is not None
        python_version = cfg.runtime.removeprefix("python")
        function = aws.lambda_.Function(
            f"{name}-{part}",
            name=fn_name,
            description=DESCRIPTIONS[part],
            role=role.arn,
            runtime=cfg.runtime,
            architectures=[cfg.architecture],
            handler=f"{part}.handler",
            code=self._package(self._source_root / part, cfg.architecture, python_version),
            memory_size=cfg.memory_mb,
            timeout=spec.timeout,
            reserved_concurrent_executions=cfg.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=spec.env),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="Text", log_group=log_group.name
            ),
            vpc_config=spec.vpc,
            replace_security_groups_on_destroy=True if park else None,
            replacement_security_group_ids=[parking] if parking is not None and park else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, policy]),
        )
        self._schedule(spec, function, fn_name)
        return function

    def _schedule(self, spec: Spec, function: aws.lambda_.Function, fn_name: str) -> None:
        """Async retries bounded and failures to the queue; the EventBridge rule that runs it."""
        name, part, child = self._name, spec.part, pulumi.ResourceOptions(parent=self)
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-{part}-async",
            function_name=function.name,
            maximum_retry_attempts=spec.retries,
            maximum_event_age_in_seconds=spec.max_event_age,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=self.failures.arn
                )
            ),
            opts=child,
        )
        rule = aws.cloudwatch.EventRule(
            f"{name}-{part}-schedule",
            description=f"runs {fn_name} on {spec.schedule}",
            schedule_expression=spec.schedule,
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
                maximum_retry_attempts=2, maximum_event_age_in_seconds=spec.max_event_age
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
        )
