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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.components import iam, sg
from infra.config import DB_APP_ROLE, DB_JOB_ROLE, DatabaseConfig

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
# Database Insights standard mode (the successor to Performance Insights): 7 days of history, free.
INSIGHTS_MODE = "standard"
INSIGHTS_RETENTION_DAYS = 7
# The AWS managed policy Enhanced Monitoring's role needs (RDS user guide, "Setting up and
# enabling Enhanced Monitoring").
ENHANCED_MONITORING_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"


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


def endpoint_url(host: str, port: int, db_name: str) -> str:
    """A libpq URL without credentials (they come from a secret read at connect time), verifying
    the server like connection_url."""
    return (
        f"postgresql://{host}:{port}/{db_name}?sslmode=verify-full&sslrootcert={quote(CA_BUNDLE)}"
    )


def identifier(*parts: str, suffix: str) -> str:
    """An RDS instance identifier: 1 to 63 letters, digits and single hyphens, starting with a
    letter, not ending in a hyphen; unique per instance by its suffix."""
    return f"{snapshot_prefix(*parts)[: 62 - len(suffix)].rstrip('-')}-{suffix}"


@dataclass(frozen=True)
class Placement:
    """What every instance of the component shares: its subnets, parameters, monitoring role."""

    subnet_group: pulumi.Output[str]
    parameter_group: pulumi.Output[str]
    monitoring_role_arn: pulumi.Output[str] | None


def _restore_args(cfg: DatabaseConfig, restored: bool) -> dict[str, Any]:
    """The instance's source when it is the restored one: a snapshot, or a point in time."""
    if not restored:
        return {}
    if cfg.restore_snapshot:
        return {"snapshot_identifier": cfg.restore_snapshot}
    return {
        "restore_to_point_in_time": aws.rds.InstanceRestoreToPointInTimeArgs(
            source_db_instance_identifier=cfg.restore_source_instance,
            restore_time=cfg.restore_time,
            use_latest_restorable_time=None if cfg.restore_time else True,
        )
    }


def _operations_args(cfg: DatabaseConfig, placement: Placement) -> dict[str, Any]:
    """Backups, windows, Database Insights and Enhanced Monitoring: the instance's operations."""
    return {
        "backup_retention_period": cfg.backup_retention_days,
        "backup_window": cfg.backup_window,
        "maintenance_window": cfg.maintenance_window,
        "database_insights_mode": INSIGHTS_MODE,
        "performance_insights_enabled": True,
        "performance_insights_retention_period": INSIGHTS_RETENTION_DAYS,
        "monitoring_interval": cfg.enhanced_monitoring_seconds,
        "monitoring_role_arn": placement.monitoring_role_arn,
    }


@dataclass(frozen=True)
class Naming:
    """What names one instance: its identifier, its log groups, its final snapshot."""

    identifier: pulumi.Output[str]
    log_groups: list[aws.cloudwatch.LogGroup]
    final_snapshot: pulumi.Output[str]


@dataclass(frozen=True)
class Credentials:
    """The master user's password (generated, or read from RDS's own secret) and that secret."""

    password: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str] | None


class Database(pulumi.ComponentResource):
    """RDS PostgreSQL from its config section; `network` gives the VPC and private subnets,
    `clients` the security groups admitted on 5432 (more through `admit`)."""

    def __init__(
        self,
        name: str,
        cfg: DatabaseConfig,
        *,
        vpc_id: pulumi.Input[str],
        subnet_ids: Sequence[Any],
        clients: Sequence[pulumi.Input[str]] = (),
        protect: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:database:Database", name, None, opts)
        self._name = name
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=vpc_id,
            description="PostgreSQL: 5432 from the app nodes only; no egress",
            opts=pulumi.ResourceOptions(parent=self),
        )
        for i, source in enumerate(clients):
            self.admit(f"client-{i}", source, "PostgreSQL from the app")
        generated = self._generated_password(name, cfg)
        placement = self._placement(name, cfg, subnet_ids)
        self.instance = self._instance(name, cfg, placement, generated, protect)
        if cfg.restore_snapshot or cfg.restore_source_instance:
            # Restore: a new instance beside the one above (kept, with its data and protection);
            # everything below (the app's URL, the job's secret, the alarms) points at the new one.
            self.original_instance: aws.rds.Instance | None = self.instance
            self.instance = self._instance(
                name, cfg, placement, generated, protect, part="restored"
            )
        else:
            self.original_instance = None
        creds = self._credentials(cfg, generated)
        self.master_secret_arn = creds.master_secret_arn
        self.username = cfg.username
        self.password: pulumi.Output[str] = pulumi.Output.secret(creds.password)
        self.address = self.instance.address
        self.port = PORT
        self.db_name = cfg.name
        # The master user's URL: for the migration only.
        self.connection_url: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(creds.password, self.instance.address).apply(
                lambda a: connection_url(cfg.username, a[0], a[1], PORT, cfg.name)
            )
        )
        self._role_credentials(name, cfg)
        self.register_outputs(
            {
                "address": self.address,
                "port": PORT,
                "name": cfg.name,
                "connectionUrl": self.connection_url,
            }
        )

    def _generated_password(self, name: str, cfg: DatabaseConfig) -> pulumi.Output[str] | None:
        """The master password the kit generates, or None when RDS manages it."""
        if cfg.manage_password:
            return None
        return random.RandomPassword(
            f"{name}-password",
            length=32,
            special=True,
            override_special=PASSWORD_SPECIALS,
            opts=pulumi.ResourceOptions(parent=self),
        ).result

    def _parameter_group(self, name: str, cfg: DatabaseConfig) -> aws.rds.ParameterGroup:
        family = f"postgres{cfg.engine_version}"
        return aws.rds.ParameterGroup(
            f"{name}-params",
            family=family,
            description=f"{family}: TLS required, slow statements logged",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_min_duration_statement", value="500"),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _log_groups(
        self, name: str, cfg: DatabaseConfig, db_identifier: pulumi.Output[str]
    ) -> list[aws.cloudwatch.LogGroup]:
        """RDS creates /aws/rds/instance/<id>/<log> itself, never expiring, on the first export,
        and leaves it after a destroy: made here first, with retention, and deleted after."""
        return [
            aws.cloudwatch.LogGroup(
                f"{name}-logs-{log}",
                name=pulumi.Output.concat("/aws/rds/instance/", db_identifier, f"/{log}"),
                retention_in_days=cfg.log_retention_days,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for log in LOG_EXPORTS
        ]

    def _placement(self, name: str, cfg: DatabaseConfig, subnet_ids: Sequence[Any]) -> Placement:
        child = pulumi.ResourceOptions(parent=self)
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=list(subnet_ids),
            description="private subnets, two zones at least",
            opts=child,
        )
        monitoring_role = None
        if cfg.enhanced_monitoring_seconds:
            role = aws.iam.Role(
                f"{name}-monitoring",
                description="RDS Enhanced Monitoring: OS metrics to CloudWatch Logs",
                assume_role_policy=iam.trust("monitoring.rds.amazonaws.com"),
                opts=child,
            )
            aws.iam.RolePolicyAttachment(
                f"{name}-monitoring",
                role=role.name,
                policy_arn=ENHANCED_MONITORING_POLICY,
                opts=child,
            )
            monitoring_role = role.arn
        return Placement(
            subnet_group=subnet_group.name,
            parameter_group=self._parameter_group(name, cfg).name,
            monitoring_role_arn=monitoring_role,
        )

    def _instance(
        self,
        name: str,
        cfg: DatabaseConfig,
        placement: Placement,
        password: pulumi.Output[str] | None,
        protect: bool,
        part: str = "postgres",
    ) -> aws.rds.Instance:
        restored = part != "postgres"
        naming = self._naming(name, cfg, part)
        # Data lives here: protected stacks keep it even if the resource leaves the program.
        stateful = pulumi.ResourceOptions(
            parent=self, protect=protect, retain_on_delete=protect, depends_on=naming.log_groups
        )
        return aws.rds.Instance(
            f"{name}-{part}",
            identifier=naming.identifier,
            **_restore_args(cfg, restored),
            engine="postgres",
            engine_version=cfg.engine_version,
            engine_lifecycle_support="open-source-rds-extended-support-disabled",
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            instance_class=cfg.instance_class,
            allocated_storage=cfg.allocated_storage_gb,
            max_allocated_storage=cfg.max_allocated_storage_gb or None,
            storage_type=cfg.storage_type,
            storage_encrypted=True,
            # A restored instance takes its database and master user from the backup.
            db_name=None if restored else cfg.name,
            username=None if restored else cfg.username,
            password=password,
            manage_master_user_password=True if cfg.manage_password else None,
            port=PORT,
            db_subnet_group_name=placement.subnet_group,
            vpc_security_group_ids=[self.security_group.id],
            publicly_accessible=False,
            parameter_group_name=placement.parameter_group,
            multi_az=cfg.multi_az,
            **_operations_args(cfg, placement),
            copy_tags_to_snapshot=True,
            deletion_protection=cfg.deletion_protection,
            skip_final_snapshot=False,
            # Unique per instance: a fixed name would collide with the snapshot the previous
            # destroy left, and the next destroy would fail (DBSnapshotAlreadyExists).
            final_snapshot_identifier=naming.final_snapshot,
            # Automated backups outlive a deleted instance (until their retention ends) only where
            # data is protected; elsewhere the final snapshot is what remains.
            delete_automated_backups=not protect,
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            ca_cert_identifier="rds-ca-rsa2048-g1",
            apply_immediately=False,
            opts=stateful,
        )

    def _naming(self, name: str, cfg: DatabaseConfig, part: str) -> Naming:
        """The instance's identifier, its log groups and its final snapshot's name."""
        child = pulumi.ResourceOptions(parent=self)
        stack, project = pulumi.get_stack(), pulumi.get_project()
        restored = part != "postgres"
        # Drawn once per instance and kept in the state: names the instance, its log groups and its
        # final snapshot, so a re-created instance never meets what the last one left behind.
        suffix = random.RandomId(
            f"{name}-{part}-suffix" if restored else f"{name}-snapshot-suffix",
            byte_length=4,
            opts=child,
        )
        db_identifier: pulumi.Output[str] = suffix.hex.apply(
            lambda h: identifier(project, stack, name, suffix=h)
        )
        log_groups = self._log_groups(f"{name}-{part}" if restored else name, cfg, db_identifier)
        final_snapshot = pulumi.Output.concat(
            snapshot_prefix(project, stack, name if not restored else f"{name}-{part}"),
            "-final-",
            suffix.hex,
        )
        return Naming(db_identifier, log_groups, final_snapshot)

    def _credentials(
        self, cfg: DatabaseConfig, generated: pulumi.Output[str] | None
    ) -> Credentials:
        """RDS's own secret (username and password only) when it manages the password."""
        if generated is not None:
            return Credentials(password=generated, master_secret_arn=None)
        secret_arn = self.instance.master_user_secrets.apply(lambda s: s[0].secret_arn)
        secret = aws.secretsmanager.get_secret_version_output(
            secret_id=secret_arn, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        password: pulumi.Output[str] = pulumi.Output.secret(
            secret.secret_string.apply(lambda text: str(json.loads(text)["password"]))
        )
        # always set by RDS
        return Credentials(
            password=password, master_secret_arn=cast(pulumi.Output[str], secret_arn)
        )

    def _role_credentials(self, name: str, cfg: DatabaseConfig) -> None:
        """The app's and the job's own roles, created (and their passwords set) by the migration.
        Letters and digits only: nothing to escape in a URL or a libpq string."""
        child = pulumi.ResourceOptions(parent=self)
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
                lambda a: connection_url(APP_ROLE, a[0], a[1], PORT, cfg.name)
            )
        )
        # Where the URL holds no credentials: they are read from a secret at connect time.
        self.endpoint_url: pulumi.Output[str] = self.instance.address.apply(
            lambda host: endpoint_url(host, PORT, cfg.name)
        )
        self._app_secret_arn: pulumi.Output[str] | None = None

    def app_secret_arn(self) -> pulumi.Output[str]:
        """The app role's credentials where they can change (made on first use, by the clients
        that read it): the app reads them at every new connection (DB_SECRET_ARN), so a new
        password reaches running pods without a restart."""
        if self._app_secret_arn is not None:
            return self._app_secret_arn
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            f"{name}-app-credentials",
            description="the app's database role: username and password (JSON)",
            recovery_window_in_days=7,
            opts=child,
        )
        version = aws.secretsmanager.SecretVersion(
            f"{name}-app-credentials",
            secret_id=secret.id,
            secret_string=self.app_password.apply(
                lambda password: json.dumps({"username": APP_ROLE, "password": password})
            ),
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretString"]),
        )
        # The ARN once the secret has its first value: whatever reads it (the migration, the
        # rotation's first check) waits for the version, not only for the empty secret.
        arn: pulumi.Output[str] = pulumi.Output.all(secret.arn, version.id).apply(lambda a: a[0])
        self._app_secret_arn = arn
        return arn

    def admit(self, key: str, security_group_id: pulumi.Input[str], description: str) -> None:
        """Open 5432 to one more client security group (e.g. a function's, made after this)."""
        sg.allow_in(
            f"{self._name}-from-{key}",
            self.security_group.id,
            PORT,
            description,
            peer=security_group_id,
            opts=pulumi.ResourceOptions(parent=self),
        )
