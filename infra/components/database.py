"""The database: RDS PostgreSQL in the private subnets, reachable only from the app's nodes.

Storage encrypted; TLS enforced by the parameter group (`rds.force_ssl`); automated backups; a
final snapshot on delete; paid Extended Support switched off; Multi-AZ, deletion protection and
`protect` from config. The master password is generated (pulumi-random) and kept secret, or kept
by RDS in Secrets Manager, and is for migrations only: the app and the housekeeping job log in as
their own least-privilege roles (APP_ROLE, JOB_ROLE), which the migration creates with generated
passwords. Every connection string verifies the server (`sslmode=verify-full` with RDS's CA
bundle). The exported logs go to log groups made here, with retention.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.config import DB_APP_ROLE, DB_JOB_ROLE

PORT = 5432
# RDS forbids '/', '@', '"' and spaces in a master password.
PASSWORD_SPECIALS = "!#$%^&*()-_=+[]{}<>:?"
# The least-privilege login roles the app's migration creates (app/shortener/db.py grants them
# exactly what they need); the master user is for migrations only.
APP_ROLE, JOB_ROLE = DB_APP_ROLE, DB_JOB_ROLE
# Where the image (app/Dockerfile) keeps RDS's CA bundle: clients verify the server's certificate
# and its name (sslmode=verify-full), not only that the connection is encrypted.
CA_BUNDLE = "/opt/app/certs/rds-global-bundle.pem"
# The logs the instance exports to CloudWatch Logs, in groups the program makes with retention.
LOG_EXPORTS = ("postgresql", "upgrade")


@dataclass(frozen=True)
class DatabaseArgs:
    vpc_id: pulumi.Input[str]
    subnet_ids: list[Any]
    """Private subnets in at least two zones (RDS refuses a subnet group with fewer)."""
    client_security_group_ids: list[Any]
    """The only sources admitted on 5432: the app's nodes (and functions that need it)."""
    engine_version: str
    instance_class: str
    allocated_storage_gb: int
    max_allocated_storage_gb: int
    storage_type: str
    multi_az: bool
    deletion_protection: bool
    backup_retention_days: int
    db_name: str
    username: str
    manage_password: bool
    protect: bool
    log_retention_days: int = 30
    """How long the exported PostgreSQL and upgrade logs are kept."""


def snapshot_prefix(*parts: str) -> str:
    """Letters, digits and single hyphens, starting with a letter: what RDS accepts in a snapshot
    identifier (stack names may hold `_` or `.`)."""
    text = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return ("s-" + text if not text[:1].isalpha() else text)[:200]


def connection_url(username: str, password: str, host: str, port: int, db_name: str) -> str:
    """A libpq URL that verifies the server: RDS's CA and the endpoint's name (verify-full)."""
    return (
        f"postgresql://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{db_name}?sslmode=verify-full&sslrootcert={quote(CA_BUNDLE)}"
    )


def identifier(*parts: str, suffix: str) -> str:
    """An RDS instance identifier: 1 to 63 letters, digits and single hyphens, starting with a
    letter, not ending in a hyphen; unique per instance by its suffix."""
    return f"{snapshot_prefix(*parts)[: 62 - len(suffix)].rstrip('-')}-{suffix}"


class Database(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:database:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Data lives here: protected stacks keep it even if the resource leaves the program.
        stateful = pulumi.ResourceOptions(
            parent=self, protect=args.protect, retain_on_delete=args.protect
        )

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
            description="PostgreSQL: 5432 from the app nodes only; no egress",
            opts=child,
        )
        self._name = name
        for i, source in enumerate(args.client_security_group_ids):
            self.admit(f"client-{i}", source, "PostgreSQL from the app")

        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=args.subnet_ids,
            description="private subnets, two zones at least",
            opts=child,
        )
        family = f"postgres{args.engine_version}"
        parameters = aws.rds.ParameterGroup(
            f"{name}-params",
            family=family,
            description=f"{family}: TLS required, slow statements logged",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_min_duration_statement", value="500"),
            ],
            opts=child,
        )

        password: pulumi.Output[str] | None = None
        if not args.manage_password:
            password = random.RandomPassword(
                f"{name}-password",
                length=32,
                special=True,
                override_special=PASSWORD_SPECIALS,
                opts=child,
            ).result

        stack = pulumi.get_stack()
        # Drawn once per instance and kept in the state: names the instance, its log groups and its
        # final snapshot, so a re-created instance never meets what the last one left behind.
        suffix = random.RandomId(f"{name}-snapshot-suffix", byte_length=4, opts=child)
        project = pulumi.get_project()

        def instance_id(h: str) -> str:
            return identifier(project, stack, name, suffix=h)

        db_identifier: pulumi.Output[str] = suffix.hex.apply(instance_id)
        # RDS creates /aws/rds/instance/<id>/<log> itself, never expiring, on the first export,
        # and leaves it after a destroy: made here first, with retention, and deleted after.
        log_groups = [
            aws.cloudwatch.LogGroup(
                f"{name}-logs-{log}",
                name=pulumi.Output.concat("/aws/rds/instance/", db_identifier, f"/{log}"),
                retention_in_days=args.log_retention_days,
                opts=child,
            )
            for log in LOG_EXPORTS
        ]
        self.instance = aws.rds.Instance(
            f"{name}-postgres",
            identifier=db_identifier,
            engine="postgres",
            engine_version=args.engine_version,
            engine_lifecycle_support="open-source-rds-extended-support-disabled",
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            instance_class=args.instance_class,
            allocated_storage=args.allocated_storage_gb,
            max_allocated_storage=args.max_allocated_storage_gb or None,
            storage_type=args.storage_type,
            storage_encrypted=True,
            db_name=args.db_name,
            username=args.username,
            password=password,
            manage_master_user_password=True if args.manage_password else None,
            port=PORT,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[self.security_group.id],
            publicly_accessible=False,
            parameter_group_name=parameters.name,
            multi_az=args.multi_az,
            backup_retention_period=args.backup_retention_days,
            backup_window="03:00-04:00",
            maintenance_window="sun:04:30-sun:05:30",
            copy_tags_to_snapshot=True,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=False,
            # Unique per instance: a fixed name would collide with the snapshot the previous
            # destroy left, and the next destroy would fail (DBSnapshotAlreadyExists).
            final_snapshot_identifier=pulumi.Output.concat(
                snapshot_prefix(pulumi.get_project(), stack, name), "-final-", suffix.hex
            ),
            # Automated backups outlive a deleted instance (until their retention ends) only where
            # data is protected; elsewhere the final snapshot is what remains.
            delete_automated_backups=not args.protect,
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            ca_cert_identifier="rds-ca-rsa2048-g1",
            apply_immediately=False,
            opts=pulumi.ResourceOptions.merge(
                stateful, pulumi.ResourceOptions(depends_on=log_groups)
            ),
        )

        # RDS's own secret (username and password only) when it manages the password, else None.
        self.master_secret_arn: pulumi.Output[str] | None = None
        if args.manage_password:
            secret_arn = self.instance.master_user_secrets.apply(lambda s: s[0].secret_arn)
            self.master_secret_arn = cast(pulumi.Output[str], secret_arn)  # always set by RDS
            secret = aws.secretsmanager.get_secret_version_output(
                secret_id=secret_arn, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            password = pulumi.Output.secret(
                secret.secret_string.apply(lambda text: json.loads(text)["password"])
            )
        assert password is not None
        self.username = args.username
        self.password: pulumi.Output[str] = pulumi.Output.secret(password)
        self.address = self.instance.address
        self.port = PORT
        self.db_name = args.db_name
        # The master user's URL: for the migration only.
        self.connection_url: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(password, self.instance.address).apply(
                lambda a: connection_url(args.username, a[0], a[1], PORT, args.db_name)
            )
        )
        # The app's and the job's own roles, created (and their passwords set) by the migration.
        # Letters and digits only: nothing to escape in a URL or a libpq string.
        app_password: pulumi.Output[str] = random.RandomPassword(
            f"{name}-app-password", length=32, special=False, opts=child
        ).result
        self.app_password: pulumi.Output[str] = pulumi.Output.secret(app_password)
        job_password: pulumi.Output[str] = random.RandomPassword(
            f"{name}-job-password", length=32, special=False, opts=child
        ).result
        self.job_password: pulumi.Output[str] = pulumi.Output.secret(job_password)
        self.app_username = APP_ROLE
        self.job_username = JOB_ROLE
        self.app_connection_url: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(self.app_password, self.instance.address).apply(
                lambda a: connection_url(APP_ROLE, a[0], a[1], PORT, args.db_name)
            )
        )
        self.register_outputs(
            {
                "address": self.address,
                "port": PORT,
                "name": args.db_name,
                "connectionUrl": self.connection_url,
            }
        )

    def admit(self, key: str, security_group_id: pulumi.Input[str], description: str) -> None:
        """Open 5432 to one more client security group (e.g. a function's, made after this)."""
        aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-from-{key}",
            security_group_id=self.security_group.id,
            referenced_security_group_id=security_group_id,
            ip_protocol="tcp",
            from_port=PORT,
            to_port=PORT,
            description=description,
            opts=pulumi.ResourceOptions(parent=self),
        )
