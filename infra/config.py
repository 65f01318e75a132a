"""Typed, validated stack configuration: the only code that reads stack settings.

A stack file (``stacks/Pulumi.<stack>.yaml``) holds keys in the ``backbone:`` namespace plus
``aws:region``. Under ``pulumi up`` the engine hands the program those keys as strings (objects as
JSON); the offline engine (``backbone.synth``) hands them over in exactly the same form. Either way
:func:`parse` turns them into one :class:`StackConfig` or raises :class:`ConfigError` listing every
problem at once: the file, the key, the bad value, what is allowed, and "did you mean" for a typo.

Every setting is documented here, once, with its default. ``docs()`` renders that documentation.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from infra import capacity, catalogue

NAMESPACE = "backbone"

# Namespaces a stack file may hold besides ours: provider settings the Pulumi CLI passes to providers.
PROVIDER_NAMESPACES = {"aws", "kubernetes", "docker", "random", "pulumi"}

# Settings an engine hands the program besides the stack's own, never written in a stack file. One
# today: which packager makes the Lambda archives. The Pulumi CLI sets none, so the program builds
# them (`build`); backbone's offline engine (backbone.synth) sets `placeholder`: the archive's
# name, no pip, no file. This is how the program learns it runs offline (it never inspects the
# engine itself).
ENGINE_NAMESPACE = "backbone-engine"
PACKAGER_KEY = f"{ENGINE_NAMESPACE}:packager"
PACKAGER_CHOICES = ("build", "placeholder")

# AWS commercial regions (aws ec2 describe-regions, 2026). An unknown region is refused here, before
# the provider would fail on its first call.
AWS_REGIONS = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "af-south-1", "ap-east-1",
        "ap-east-2", "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2",
        "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7",
        "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ca-central-1", "ca-west-1",
        "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3", "eu-south-1",
        "eu-south-2", "eu-north-1", "il-central-1", "me-south-1", "me-central-1", "mx-central-1",
        "sa-east-1",
    }
)  # fmt: skip

# Regions whose Amazon RDS root CAs app/certs/rds-global-bundle.pem does not hold (see its README;
# tests/test_deploy_truth.py reads the bundle and keeps this list true): a database there would
# fail sslmode=verify-full until the bundle is refreshed.
RDS_CA_MISSING_REGIONS = frozenset({"ap-east-2"})

# AWS Lambda: a function name is at most 64 characters (botocore lambda CreateFunction
# FunctionName); the kit names its functions <project>-<stack>-<function>.
LAMBDA_NAME_MAX = 64
FUNCTION_NAMES = ("canary", "housekeeping")

# RFC 1918: the only ranges a VPC should use for a private network.
PRIVATE_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                      2192, 2557, 2922, 3288, 3653)  # fmt: skip


@dataclass(frozen=True)
class Problem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


def _retention_problems(key: str, days: int) -> list[Problem]:
    """A CloudWatch Logs retention setting that PutRetentionPolicy would refuse."""
    if days in LOG_RETENTION_DAYS:
        return []
    allowed = ", ".join(map(str, LOG_RETENTION_DAYS))
    return [Problem(key, f"{days} is not a CloudWatch retention period; allowed: {allowed}")]


class _Section(BaseModel):
    """Base for every config section: camelCase keys in the stack file, unknown keys refused."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_attribute_docstrings=True,
    )


class NetworkConfig(_Section):
    """The VPC: public and private subnets in each availability zone, and how private subnets
    reach the internet."""

    cidr: str = "10.0.0.0/16"
    """The VPC's IPv4 range: a private (RFC 1918) network between /16 and /24."""

    az_count: int = Field(default=2, ge=1, le=6)
    """How many availability zones to spread subnets over (1 to 6); looked up in the region at run
    time. A database or a load balancer needs at least 2."""

    subnet_prefix_length: int = Field(default=20, ge=16, le=28)
    """The prefix length of every subnet (/16 to /28, AWS's limits); one public and one private
    subnet per zone are carved from the VPC in order."""

    nat: Literal["none", "single", "per-az"] = "single"
    """How private subnets reach the internet: `none` (no NAT gateway: private subnets are
    isolated; no cost), `single` (one NAT gateway, about $33/month), `per-az` (one per zone,
    survives a zone outage, about $33/month each)."""

    flow_logs: bool = False
    """Record VPC flow logs (all traffic) to a CloudWatch log group."""

    flow_logs_retention_days: int = 30
    """How long flow logs are kept, in days (a CloudWatch Logs retention value)."""

    interface_endpoints: list[Literal["ecr.api", "ecr.dkr", "sts"]] = Field(default_factory=list)
    """Interface VPC endpoints in the private subnets, so image pulls and pods' STS calls skip the
    NAT gateway: about $7.30/month per endpoint per zone plus $0.01/GB. The S3 gateway endpoint
    (image layers come from S3) is always there: it is free."""

    def problems(self) -> list[Problem]:
        """What AWS (or sound practice) would refuse in this section."""
        out: list[Problem] = []

        def bad(key: str, text: str) -> None:
            out.append(Problem(f"{NAMESPACE}:network.{key}", text))

        try:
            net = ipaddress.ip_network(self.cidr, strict=True)
        except ValueError as exc:
            bad(
                "cidr",
                f"{self.cidr!r} is not an IPv4 network ({exc}); allowed: a private "
                "network such as 10.0.0.0/16",
            )
            return out
        if net.version != 4:
            bad("cidr", f"{self.cidr!r} is IPv6; allowed: an IPv4 network such as 10.0.0.0/16")
        elif not any(net.subnet_of(r) for r in PRIVATE_RANGES):  # type: ignore[arg-type]
            bad(
                "cidr",
                f"{self.cidr!r} is not a private network; allowed: inside 10.0.0.0/8, "
                "172.16.0.0/12 or 192.168.0.0/16 (RFC 1918)",
            )
        elif not 16 <= net.prefixlen <= 24:
            bad(
                "cidr",
                f"{self.cidr!r} has prefix /{net.prefixlen}; allowed: /16 to /24 (AWS "
                "allows /16 to /28; /24 is the smallest that still fits subnets for two zones)",
            )
        elif self.subnet_prefix_length < net.prefixlen:
            bad(
                "subnetPrefixLength",
                f"/{self.subnet_prefix_length} is larger than the VPC "
                f"{self.cidr}; allowed: /{net.prefixlen} to /28",
            )
        else:
            needed = 2 * self.az_count
            available = 2 ** (self.subnet_prefix_length - net.prefixlen)
            if needed > available:
                bad(
                    "subnetPrefixLength",
                    f"{needed} subnets of /{self.subnet_prefix_length} (a "
                    f"public and a private one in each of {self.az_count} zones) do not fit in "
                    f"{self.cidr}, which holds {available}; allowed: /"
                    f"{net.prefixlen + (needed - 1).bit_length()} or longer, or a larger VPC",
                )
        out += _retention_problems(
            f"{NAMESPACE}:network.flowLogsRetentionDays", self.flow_logs_retention_days
        )
        return out

    def subnets(self) -> tuple[list[str], list[str]]:
        """(public, private) subnet CIDRs, one of each per zone, carved in order."""
        net = ipaddress.ip_network(self.cidr)
        blocks = net.subnets(new_prefix=self.subnet_prefix_length)
        carved = [str(next(blocks)) for _ in range(2 * self.az_count)]
        return carved[: self.az_count], carved[self.az_count :]

    def nat_gateway_count(self) -> int:
        return {"none": 0, "single": 1, "per-az": self.az_count}[self.nat]


# Kubernetes versions EKS offers, with the end of their standard support (infra.catalogue: the
# EKS release calendar, dated): a version past it costs $0.60/h instead of $0.10/h.
EKS_VERSIONS = {v: str(r.standard_support_end) for v, r in catalogue.EKS_RELEASES.items()}

# PostgreSQL majors RDS supports under standard support (RDS release calendar, 2026-11): 13 left
# standard support on 2026-02-28 and would be billed as Extended Support.
POSTGRES_MAJORS = {"14": "2027-02-28", "15": "2028-02-29", "16": "2029-02-28", "17": "2030-02-28",
                   "18": "2031-02-28"}  # fmt: skip

# RDS instance classes PostgreSQL 14+ runs on (RDS "supported DB engines for DB instance classes").
_RDS_SIZES = {
    "t3": ("micro", "small", "medium", "large", "xlarge", "2xlarge"),
    "t4g": ("micro", "small", "medium", "large", "xlarge", "2xlarge"),
    "m5": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"),
    "m6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "m6i": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "32xlarge"),
    "m7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r5": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"),
    "r6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r6i": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "32xlarge"),
    "r7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
}  # fmt: skip
RDS_CLASSES = frozenset(f"db.{fam}.{size}" for fam, sizes in _RDS_SIZES.items() for size in sizes)
# Older generations exist but PostgreSQL 14+ refuses them.
# The least-privilege login roles the app's migration creates (app/shortener/db.py grants them):
# the app's and the housekeeping job's. The master user is for migrations only.
DB_APP_ROLE = "shortener_app"
DB_JOB_ROLE = "shortener_job"
DB_ROLES = (DB_APP_ROLE, DB_JOB_ROLE)
RDS_RETIRED_FAMILIES = ("db.t2.", "db.m4.", "db.r4.", "db.m3.", "db.r3.")


LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
DEFAULT_LOG_TYPES: tuple[LogType, ...] = ("api", "audit", "authenticator")


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = "([01][0-9]|2[0-3]):[0-5][0-9]"
_DDD = "(mon|tue|wed|thu|fri|sat|sun)"
WEEK = 7 * 1440


def _minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _window_minutes(window: str) -> tuple[int, int]:
    """A daily `hh:mm-hh:mm` window as [start, end) minutes of the day (end may pass midnight)."""
    start, end = (_minute(part) for part in window.split("-"))
    return start, end if end > start else end + 1440


def _weekly_minutes(window: str) -> tuple[int, int]:
    """A weekly `ddd:hh:mm-ddd:hh:mm` window as [start, end) minutes of the week."""
    a, b = window.split("-")
    start = _DAYS.index(a[:3]) * 1440 + _minute(a[4:])
    end = _DAYS.index(b[:3]) * 1440 + _minute(b[4:])
    return start, end if end > start else end + WEEK


def _overlaps_daily_weekly(daily: tuple[int, int], weekly: tuple[int, int]) -> bool:
    """Whether a daily window meets a weekly one on any day of the week."""
    for day in range(-1, 8):
        s, e = daily[0] + day * 1440, daily[1] + day * 1440
        for shift in (-WEEK, 0, WEEK):
            if s < weekly[1] + shift and weekly[0] + shift < e:
                return True
    return False


def _overlaps_daily_daily(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two daily windows meet (either may pass midnight)."""
    return any(a[0] + d < b[1] and b[0] < a[1] + d for d in (-1440, 0, 1440))


def _run_minutes(expression: str) -> list[tuple[int, int]] | None:
    """Minutes of the day (start, start + 1) a daily cron runs, or None if not a plain daily
    `cron(M H ...)` with numeric minute and hour lists."""
    if not expression.startswith("cron("):
        return None
    fields = expression[5:-1].split()
    try:
        minutes = [int(m) for m in fields[0].split(",")]
        hours = [int(h) for h in fields[1].split(",")]
    except ValueError:
        return None
    return [(h * 60 + m, h * 60 + m + 1) for h in hours for m in minutes]


class RegistryConfig(_Section):
    """The ECR repository the app's image is pushed to."""

    keep_images: int = Field(default=10, ge=1, le=1000)
    """How many images the lifecycle policy keeps; older ones are expired. With a cluster, at
    least the running image plus the Deployment's revision history (6), so `kubectl rollout undo`
    finds its image; a stack without one (free-tier) may keep fewer."""

    scan_on_push: bool = True
    """Scan every pushed image for known vulnerabilities (ECR basic scanning)."""


class ClusterConfig(_Section):
    """The EKS cluster that runs the app: control plane, managed node group, add-ons."""

    enabled: bool = False
    """Create the cluster. EKS is never free: about $73/month for the control plane alone."""

    version: str = "1.35"
    """Kubernetes minor version, one under EKS standard support (1.34, 1.35 or 1.36). The node
    group, its AMI, the add-ons and the autoscaler follow it; raise it one minor at a time (see the
    README's upgrade runbook)."""

    upgrade_from: str | None = None
    """While upgrading: the minor the cluster runs now. Config refuses a `version` that is not the
    same or the next minor (EKS upgrades one minor at a time and never downgrades)."""

    allow_extended_support: bool = False
    """Accept a version past its standard support: billed at the extended-support rate ($0.60/h
    instead of $0.10/h) and kept there (upgrade policy EXTENDED) instead of auto-upgraded."""

    ami_release_version: str | None = None
    """The EKS AL2023 AMI release the nodes run, e.g. 1.35.0-20251120 (it must match `version`).
    Unset: the release AWS recommends for `version` (its public SSM parameter), read at every
    deploy, so a `pulumi up` after AWS publishes one rolls the nodes onto it."""

    instance_types: list[str] = Field(default_factory=lambda: ["t3.medium"])
    """EC2 instance types of the node group (all of the one architecture below)."""

    architecture: Literal["x86_64", "arm64"] = "x86_64"
    """CPU architecture of the nodes; the image is built for it (linux/amd64 or linux/arm64)."""

    min_nodes: int = Field(default=2, ge=1, le=100)
    """Fewest nodes the autoscaler keeps; raising it above the live count adds nodes at the next
    `pulumi up`."""

    desired_nodes: int = Field(default=2, ge=1, le=100)
    """Nodes at creation. Afterwards the autoscaler owns the count; changing this setting sets the
    count once at the next `pulumi up` (then the autoscaler owns it again)."""

    max_nodes: int = Field(default=3, ge=1, le=100)
    """Most nodes the autoscaler scales to; the app's maxReplicas (and a rollout's surge) must fit
    in this many nodes of the smallest instance type."""

    disk_size_gb: int = Field(default=20, ge=20, le=1000)
    """Root volume of each node, in GiB."""

    log_types: list[LogType] = Field(default_factory=lambda: list(DEFAULT_LOG_TYPES))
    """Control-plane logs sent to CloudWatch Logs."""

    log_retention_days: int = 30
    """How long control-plane logs are kept (a CloudWatch Logs retention value)."""

    public_endpoint: bool = True
    """Expose the Kubernetes API endpoint to the internet (still authenticated by IAM); false keeps
    it inside the VPC, so `pulumi up` must then run from inside the VPC."""

    public_access_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"])
    """Who may reach the public API endpoint. A production stack (`tier: production`) refuses
    0.0.0.0/0: list your networks, or set publicEndpoint false."""

    private_access_cidrs: list[str] = Field(default_factory=list)
    """Private networks (a VPN, a peered CI runner's VPC) admitted on 443 to the private API
    endpoint, through the cluster security group. Nodes and pods always reach it."""

    admin_role_arns: list[str] = Field(default_factory=list)
    """IAM role ARNs given cluster-admin (access entries), whoever runs `pulumi up`; at least one.
    The program talks to Kubernetes as the first (`aws eks get-token --role-arn`), so whoever
    deploys (an engineer, CI) must be allowed to assume it. Duplicates are merged."""


class DatabaseConfig(_Section):
    """RDS PostgreSQL for the app."""

    enabled: bool = False
    """Create the database. It needs a network with at least two availability zones."""

    engine_version: str = "17"
    """PostgreSQL major version under RDS standard support (14 to 18); RDS picks the minor and
    keeps it patched. Paid Extended Support is switched off."""

    instance_class: str = "db.t4g.micro"
    """RDS instance class, e.g. db.t4g.micro (free-tier eligible) or db.m7g.large."""

    allocated_storage_gb: int = Field(default=20, ge=20, le=65536)
    """Storage at creation, in GiB (PostgreSQL's minimum is 20)."""

    max_allocated_storage_gb: int = Field(default=100, ge=0, le=65536)
    """Storage autoscaling ceiling, in GiB (0 turns autoscaling off)."""

    storage_type: Literal["gp3", "gp2"] = "gp3"
    """EBS volume type (the free tier covers gp2 only)."""

    multi_az: bool = False
    """A standby in a second zone with automatic failover (doubles the instance cost)."""

    deletion_protection: bool = False
    """RDS refuses to delete the instance until this is lifted."""

    backup_retention_days: int = Field(default=7, ge=1, le=35)
    """Days of automated backups (the point-in-time recovery window), 1 to 35."""

    name: str = Field(default="app", pattern=r"^[a-zA-Z][a-zA-Z0-9_]{0,62}$")
    """Name of the app's database."""

    username: str = Field(default="app_admin", pattern=r"^[a-zA-Z][a-zA-Z0-9_]{0,15}$")
    """Master user name (not a word RDS reserves, such as admin or postgres)."""

    manage_password: bool = False
    """Let RDS keep the master password in Secrets Manager (and rotate it every 7 days): the
    migration reads it from there at every run; otherwise the kit generates one (pulumi-random)
    and keeps it as a Pulumi secret."""

    app_password_rotation_days: int = Field(default=30, ge=1, le=1000)
    """With the cluster: days between rotations of the app's and the housekeeping job's database
    role passwords (a Secrets Manager rotation function; AWS accepts 1 to 1000)."""

    log_retention_days: int = 30
    """How long the exported PostgreSQL and upgrade logs are kept (a CloudWatch Logs retention
    value); the kit makes their log groups, so nothing is kept forever."""

    backup_window: str = Field(default="03:00-04:00", pattern=rf"^{_HHMM}-{_HHMM}$")
    """Daily window (UTC, hh:mm-hh:mm, at least 30 minutes) in which RDS takes the automated
    backup. The housekeeping job may not run inside it."""

    maintenance_window: str = Field(
        default="sun:04:30-sun:05:30",
        pattern=rf"^{_DDD}:{_HHMM}-{_DDD}:{_HHMM}$",
    )
    """Weekly window (UTC, ddd:hh:mm-ddd:hh:mm, at least 30 minutes) for RDS's patches; it may
    not overlap the backup window, nor the housekeeping job's run."""

    enhanced_monitoring_seconds: Literal[0, 1, 5, 10, 15, 30, 60] = 0
    """Enhanced Monitoring: OS metrics every N seconds (1, 5, 10, 15, 30, 60) through a role with
    the AWS managed policy AmazonRDSEnhancedMonitoringRole; 0 turns it off. Billed as CloudWatch
    Logs ingestion. (Database Insights standard mode is always on: 7 days free.)"""

    restore_snapshot: str | None = Field(
        default=None,
        pattern=r"^(arn:aws[a-z-]*:rds:[a-z0-9-]+:[0-9]{12}:snapshot:)?[a-zA-Z][a-zA-Z0-9:-]{0,254}$",
    )
    """Restore: create a new instance from this DB snapshot (identifier or ARN) and point the app
    at it. The current instance is kept (its data and its protection); see the README runbook."""

    restore_source_instance: str | None = Field(
        default=None, pattern=r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$"
    )
    """Restore to a point in time: the instance (identifier) whose automated backups to use. A new
    instance is created and the app pointed at it; the source is kept."""

    restore_time: str | None = Field(
        default=None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
    )
    """With restoreSourceInstance: the moment to restore to (UTC, 2026-11-30T21:15:00Z). Unset:
    the latest restorable time."""


class LoadBalancerConfig(_Section):
    """The public Application Load Balancer in front of the app."""

    enabled: bool = False
    """Create the load balancer. It needs a network with at least two availability zones."""

    certificate_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]{36}$",
    )
    """An ACM certificate for HTTPS, in the stack's region. With one (or domainName), port 80
    redirects to 443; without, the load balancer serves plain HTTP on port 80 (fine for a trial,
    never for real users; refused in a production stack unless allowPlainHttp)."""

    domain_name: str | None = Field(
        default=None,
        pattern=r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
        max_length=253,
    )
    """Instead of certificateArn: the domain of an ISSUED ACM certificate in the stack's region,
    looked up at deploy time (the newest one wins). `pulumi preview` stops at once, before
    anything is created, when there is none."""

    allow_plain_http: bool = False
    """The explicit opt-out a production stack needs to serve plain HTTP without a certificate.
    Every request and token then crosses the internet unencrypted."""

    deletion_protection: bool = False
    """AWS refuses to delete the load balancer until this is lifted."""

    access_logs: bool = False
    """Write access logs to an S3 bucket the kit creates."""

    idle_timeout_seconds: int = Field(default=60, ge=1, le=4000)
    """Seconds a connection may idle. The one keep-alive setting: the app keeps its connections
    5 s longer (LB_IDLE_TIMEOUT_SECONDS), so the ALB never reuses one the app has closed."""

    web_acl: bool | None = None
    """A WAFv2 web ACL on the load balancer (AWS managed common and known-bad-inputs rule groups,
    a rate-based rule): about $8 a month plus $0.60 per million requests. Unset: on in a
    production stack (backbone:tier: production), off elsewhere."""

    waf_rate_limit: int = Field(default=1000, ge=10, le=2_000_000_000)
    """Requests one client address may send in 5 minutes before the web ACL blocks it."""


class AppConfig(_Section):
    """The sample app on Kubernetes."""

    replicas: int = Field(default=2, ge=1, le=100)
    """Pods at creation (the autoscaler owns the count afterwards)."""

    min_replicas: int = Field(default=2, ge=1, le=100)
    """Fewest pods the HorizontalPodAutoscaler keeps."""

    max_replicas: int = Field(default=4, ge=1, le=100)
    """Most pods the HorizontalPodAutoscaler runs."""

    target_cpu_percent: int = Field(default=70, ge=10, le=100)
    """Average CPU use (of the request) the autoscaler aims for."""

    cpu: str = Field(default="250m", pattern=r"^[0-9]+m?$")
    """CPU request per pod (the limit is twice it)."""

    memory: str = Field(default="256Mi", pattern=r"^[0-9]+(Mi|Gi)$")
    """Memory request and limit per pod."""

    node_port: int = Field(default=30080, ge=30000, le=32767)
    """The Service's node port: the load balancer's target port."""

    health_check_node_port: int = Field(default=30081, ge=30000, le=32767)
    """The Service's health check node port (externalTrafficPolicy Local): kube-proxy answers
    200 there while the node holds a ready app pod; the load balancer's health check."""

    canary_link_code: str = Field(default="backbone-canary", pattern=r"^[A-Za-z0-9_-]{3,32}$")
    """The known link the migration creates (no expiry) on every run, and the canary follows
    through the load balancer: a cached redirect, exercised every canary run."""

    canary_link_url: str = Field(
        default="https://example.org/backbone-canary", pattern=r"^https?://[^\s]+$"
    )
    """Where the canary link redirects to (the canary checks the 3xx points exactly here)."""


# Lambda Python runtimes the functions run on: supported by Lambda (deprecation calendar, 2026-11)
# and by the function code (3.12+). Older ones are deprecated or too old for the code.
LAMBDA_PYTHON_RUNTIMES = ("python3.12", "python3.13")

# EventBridge schedule expressions (EventBridge user guide, "Schedule expressions for rules").
_RATE = re.compile(r"^rate\((?P<n>[1-9][0-9]*) (?P<unit>minute|minutes|hour|hours|day|days)\)$")
_CRON_FIELD = r"[0-9A-Za-z*?/,#L-]+"
_CRON = re.compile(rf"^cron\((?P<fields>{_CRON_FIELD}(?: {_CRON_FIELD}){{5}})\)$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of `rate(N unit)`, or None for anything else."""
    m = _RATE.match(expression)
    if not m:
        return None
    n, unit = int(m["n"]), m["unit"].rstrip("s")
    if (n == 1) != (not m["unit"].endswith("s")):
        return None  # EventBridge refuses `rate(1 minutes)` and `rate(5 minute)`
    return n * {"minute": 60, "hour": 3600, "day": 86400}[unit]


def schedule_problem(expression: str) -> str | None:
    """Why EventBridge would refuse a schedule expression, or None."""
    if rate_seconds(expression) is not None:
        return None
    m = _CRON.match(expression)
    if not m:
        return (
            f"{expression!r} is not an EventBridge schedule; allowed: rate(1 minute), "
            "rate(N minutes|hours|days), or cron(min hour day-of-month month day-of-week year) "
            "such as cron(30 3 * * ? *)"
        )
    fields = m["fields"].split()
    if "?" not in (fields[2], fields[4]) or fields[2] == fields[4] == "?":
        return (
            f"{expression!r}: exactly one of day-of-month (3rd field) and day-of-week (5th "
            "field) must be '?'; allowed: e.g. cron(30 3 * * ? *)"
        )
    return None


class FunctionsConfig(_Section):
    """The Lambda functions (app/functions/): a synthetic canary that probes the app through the
    load balancer, and a nightly housekeeping job on the app's database."""

    enabled: bool = False
    """Create the functions. They need the load balancer (the canary's URL), the database (the
    job's data) and a NAT gateway (the job, inside the VPC, reaches Secrets Manager and CloudWatch
    through it)."""

    canary_schedule: str = "rate(5 minutes)"
    """How often the canary probes the app: `rate(1 minute)` to `rate(60 minutes)`. Its alarms
    use this as their period, so a missing run is seen at once."""

    housekeeping_schedule: str = "cron(15 6 * * ? *)"
    """When the housekeeping job runs (UTC), as an EventBridge schedule: every day at least, since
    its alarm expects a run in every 24 hours; a daily cron whose run (up to its timeout) keeps out
    of the database's backup and maintenance windows."""

    architecture: Literal["x86_64", "arm64"] = "arm64"
    """CPU architecture of both functions (arm64, Graviton, costs about 20% less per GB-second);
    dependencies are packaged for it."""

    runtime: str = "python3.12"
    """Lambda Python runtime: python3.12 or python3.13."""

    memory_mb: int = Field(default=256, ge=128, le=10240)
    """Memory of each function, in MB (128 to 10240); CPU grows with it."""

    canary_timeout_seconds: int = Field(default=30, ge=1, le=900)
    """The canary's timeout: at least 25 s (two probes, two attempts of 5 s each, retry delays,
    3 s kept for publishing)."""

    housekeeping_timeout_seconds: int = Field(default=300, ge=1, le=900)
    """The job's timeout (up to 900 s); it stops purging 10 s before and carries on next night."""

    reserved_concurrency: int | None = Field(default=None, ge=1, le=1000)
    """Concurrent executions reserved for (and capping) each function; 1 keeps runs from
    overlapping. Unset (the default) reserves none: a new account whose concurrency quota is
    still 10 cannot reserve any (Lambda keeps 10 unreserved), and the first `pulumi up` would fail."""

    log_retention_days: int = 30
    """How long the functions' logs are kept (a CloudWatch Logs retention value)."""

    canary_read_path: str = Field(default="/api/links/backbone-canary", pattern=r"^/[^\s]*$")
    """The read path the canary requests besides /readyz: by default the canary link's lookup
    (app.canaryLinkCode, created by the migration), so it answers 200 through the database."""

    canary_cert_warn_days: int = Field(default=21, ge=0, le=365)
    """Where the stack serves HTTPS: the canary's CertificateExpiring metric turns 1 (and a warning
    is logged) when the certificate has fewer days left than this."""

    purge_grace_days: int = Field(default=0, ge=0, le=3650)
    """The job keeps expired links this many days past their expiry before deleting them."""

    purge_unused_after_days: int = Field(default=0, ge=0, le=36500)
    """The job deletes links not clicked for this many days (never clicked: since created);
    0 (the default) keeps unused links."""

    purge_batch_size: int = Field(default=1000, ge=1, le=100_000)
    """Rows the job deletes per transaction."""

    purge_max_batches: int = Field(default=100, ge=1, le=100_000)
    """Batches per run at most; a run that stops there reports PurgeComplete 0 and the next run
    carries on."""


class MonitoringConfig(_Section):
    """Alarms, notifications, a dashboard and the app's Prometheus rules. Thresholds below also
    render the in-cluster Prometheus rules (error ratio, p99 latency)."""

    enabled: bool = False
    """Create the alerts topic, the alarms on what the stack runs, and the dashboard."""

    alert_email: str | None = None
    """Where alarms are sent (an SNS email subscription: AWS mails a confirmation link first, and
    nothing is delivered until someone clicks it)."""

    alert_https_url: str | None = Field(default=None, pattern=r"^https://[^\s]+$")
    """An HTTPS endpoint subscribed to the alerts topic (a paging service's SNS integration URL,
    a chat webhook bridge). SNS posts a SubscriptionConfirmation first: the endpoint must confirm
    it. Kept as a secret in the plan (such URLs usually hold an integration key)."""

    alerts_routed_elsewhere: str | None = Field(default=None, min_length=20, max_length=500)
    """Only when the alerts topic gets its subscriber outside this program (an Amazon Q Developer
    / AWS Chatbot channel configured with the topic's ARN, a subscription made by another stack):
    say where, in a sentence. A production stack refuses to plan with no alertEmail, no
    alertHttpsUrl and no alertsRoutedElsewhere; `backbone plan` prints this sentence every time."""

    period_seconds: int = 60
    """Period of the ALB, database and function alarms: 60 or a multiple of it, at most 3600."""

    evaluation_periods: int = Field(default=3, ge=1, le=30)
    """Consecutive breaching periods before an alarm fires (and before a Prometheus rule does)."""

    alb_error_rate_percent: float = Field(default=5.0, gt=0, lt=100)
    """Alarm when more than this share of requests end in 5xx (from the targets or the ALB)."""

    unhealthy_hosts: int = Field(default=1, ge=1, le=100)
    """Alarm when at least this many targets fail the health check."""

    target_response_time_p99_seconds: float = Field(default=1.0, gt=0, le=60)
    """Alarm when the p99 of the targets' response time is above this."""

    db_cpu_percent: float = Field(default=80.0, gt=0, le=100)
    """Alarm when the database's average CPU is above this."""

    db_free_storage_gb: float = Field(default=2.0, gt=0, le=1000)
    """Alarm when the database's free storage falls below this many GiB."""

    db_connections: int = Field(default=80, ge=1, le=100000)
    """Alarm when the database has more connections than this (db.t4g.micro allows about 110,
    db.m7g.large about 870)."""

    db_freeable_memory_mb: float = Field(default=128, gt=0, le=1_000_000)
    """Alarm when the database's freeable memory falls below this many MiB (db.t4g.micro has
    1 GiB in all, db.m7g.large 8 GiB): the instance is about to swap."""

    db_read_latency_ms: float = Field(default=20, gt=0, le=10_000)
    """Alarm when the database's average read latency (per I/O) is above this."""

    db_write_latency_ms: float = Field(default=20, gt=0, le=10_000)
    """Alarm when the database's average write latency (per I/O) is above this."""

    error_log_lines: int = Field(default=5, ge=1, le=100_000)
    """Alarm when the app writes at least this many error-level log lines in a period (a metric
    filter on its container log group; needs observability.enabled)."""

    function_errors: int = Field(default=1, ge=1, le=10000)
    """Alarm when a function has at least this many errors in a period."""

    function_throttles: int = Field(default=1, ge=1, le=10000)
    """Alarm when a function is throttled at least this many times in a period."""

    canary_latency_ms: float = Field(default=2000.0, gt=0, le=60000)
    """Alarm when the canary's average answer time of a probe is above this."""

    billing_alarm_usd: float | None = Field(default=None, gt=0, le=1_000_000)
    """Alarm when the account's estimated charges this month pass this many US dollars (AWS
    publishes them only in us-east-1, after "Receive Billing Alerts" is switched on in the
    Billing console). For a learner: the first sign of a surprise bill."""

    encrypt_topic: bool = True
    """Encrypt the alerts topic with a customer-managed KMS key that CloudWatch may use ($1/month;
    the AWS managed key alias/aws/sns would make every alarm's notification fail). False leaves
    it unencrypted: alarm messages hold alarm names and metric values, no app data."""

    prometheus_rules: bool = True
    """Deploy the app's Prometheus alerting rules to the cluster (a ConfigMap in the app's
    namespace, no CRD needed) when the stack has one; `backbone manifests` writes it too."""

    def subscribed(self) -> bool:
        """Whether the alerts topic has a subscriber (or an explicit word that one is elsewhere)."""
        return bool(self.alert_email or self.alert_https_url or self.alerts_routed_elsewhere)

    def warnings(self) -> list[str]:
        """What `backbone plan` says about where alerts go, every time."""
        if not self.enabled:
            return []
        if self.alerts_routed_elsewhere:
            return [f"alerts: routed outside this program: {self.alerts_routed_elsewhere}"]
        if not self.subscribed():
            return [
                "alerts: the alerts topic has no subscriber; alarms reach no one (set "
                "backbone:monitoring.alertEmail or alertHttpsUrl)"
            ]
        return []


class ObservabilityConfig(_Section):
    """Metrics, rules, alerts and logs on AWS for a stack with a cluster: an Amazon Managed Service
    for Prometheus workspace, the AWS managed collector scraping the app's pods (and
    kube-state-metrics), the kit's rules as a rule group namespace, an Alertmanager definition
    routing to the alerts topic, and the containers' logs in CloudWatch Logs (the CloudWatch
    Observability EKS add-on)."""

    enabled: bool = False
    """Create the workspace, the collector, the rules, the Alertmanager definition and the
    container logs. Needs cluster.enabled and monitoring.enabled (alerts go to its topic)."""

    scrape_interval_seconds: int = Field(default=30, ge=10, le=300)
    """How often the collector scrapes each target. Samples (and cost) scale with 1/interval."""

    log_retention_days: int = 30
    """How long CloudWatch Logs keeps the containers' logs (application, host, data plane and
    performance log groups)."""

    cluster_signals: bool = True
    """Install kube-state-metrics (an EKS community add-on), scrape only the series the rules
    read, and alert on nodes not ready, pods pending or restarting, the HPA at its maximum."""

    container_insights_metrics: bool = False
    """Keep the add-on's Container Insights metrics (billed as CloudWatch custom metrics, a few
    hundred per cluster) besides the logs. Off: the add-on ships logs only."""


# The free tier's EC2 and RDS sizes (12-month offers, accounts opened before 2025-07-15; AWS free
# tier page, 2025-07): 750 hours of t2.micro or t3.micro (t2.micro only where a region has no t3),
# 30 GB of EBS; RDS 750 hours of a Single-AZ micro class with 20 GB of gp2; ECR 500 MB of storage.
FREE_TIER_HOST_TYPES = ("t3.micro", "t2.micro")
FREE_TIER_EBS_GB = 30
FREE_TIER_DB_CLASSES = ("db.t4g.micro", "db.t3.micro")
FREE_TIER_DB_GB = 20
FREE_TIER_ECR_MB = 500
# The app's image as ECR stores it (gzip layers): 97 MB measured (docker save | gzip, 2026-12).
APP_IMAGE_MB = 100


class HostConfig(_Section):
    """One EC2 instance that runs the app as a container (the free-tier stack's way, instead of a
    cluster): Amazon Linux 2023, Docker, the image from the stack's ECR repository by digest."""

    enabled: bool = False
    """Create the host. It needs the database (the app's); not with a cluster."""

    instance_type: str = Field(default="t3.micro", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
    """The EC2 instance type (x86_64): t3.micro, or t2.micro in a region without t3 (check with
    `aws ec2 describe-instance-type-offerings --filters Name=instance-type,Values=t3.micro`). A
    stack with a free tier (`backbone:freeTier`) allows only these two."""

    root_volume_gb: int = Field(default=16, ge=8, le=1000)
    """The root volume (gp3, encrypted), in GiB: at least the AMI's 8; the free tier covers 30
    (shared by every volume of the account)."""


_IMAGE = r"^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$"


class LocalConfig(_Section):
    """The local stack (target docker): the whole shape on your own Docker: PostgreSQL, the app's
    replicas behind a reverse proxy (HAProxy, the load balancer), Prometheus with the kit's
    alert rules."""

    app_port: int = Field(default=8000, ge=1024, le=65535)
    """The port on 127.0.0.1 where the app answers, through the proxy (http://localhost:<appPort>)."""

    replicas: int = Field(default=2, ge=1, le=9)
    """How many app containers the proxy balances over (1 to 9)."""

    prometheus_port: int = Field(default=9090, ge=1024, le=65535)
    """The port on 127.0.0.1 of the Prometheus UI (http://localhost:<prometheusPort>)."""

    postgres_image: str = Field(default="postgres:17-bookworm", pattern=_IMAGE)
    """The PostgreSQL image, pinned by tag or digest (never `latest`)."""

    proxy_image: str = Field(default="haproxy:3.0-bookworm", pattern=_IMAGE)
    """The reverse proxy's image (HAProxy: active health checks of every replica), pinned."""

    prometheus_image: str = Field(default="prom/prometheus:v2.53.0", pattern=_IMAGE)
    """The Prometheus image, pinned by tag or digest."""

    base_image: str | None = None
    """Build argument BASE_IMAGE for app/Dockerfile; unset keeps the Dockerfile's default
    (python:3.12-slim). Set it when Docker Hub is out of reach and you built a base yourself."""


# The names of the policy rules (policies/rules.py; the program never imports the pack, a test
# keeps the two lists equal), for `backbone:policies`.
POLICY_RULES = (
    "aws-published-constraints", "required-tags", "rds-encrypted", "rds-private", "rds-backups",
    "rds-deletion-protection", "rds-multi-az", "rds-tls-enforced", "s3-public-access-blocked",
    "s3-encrypted", "kms-key-rotation", "sg-no-public-ingress", "sg-no-ssh-rdp-from-internet",
    "db-ingress-named-groups", "vpc-flow-logs", "ec2-imdsv2", "ebs-encrypted",
    "eks-control-plane-logging", "eks-endpoint-restricted", "eks-secrets-encryption",
    "ecr-scan-on-push", "ecr-immutable-tags", "lambda-supported-runtime", "lambda-log-retention",
    "iam-no-wildcard-actions", "iam-no-passrole-star", "iam-no-inline-admin", "iam-trust-services",
    "tls-public-listeners", "db-connections-verified", "cost-no-nat-gateway", "cost-no-eks",
    "cost-free-tier-sizes", "cost-max-alarms", "cost-budget",
)  # fmt: skip


def _policy_problems(levels: Mapping[str, str]) -> list[Problem]:
    return [
        Problem(
            f"{NAMESPACE}:policies.{name}",
            f"unknown rule{_suggest(name, list(POLICY_RULES))}; allowed: {', '.join(POLICY_RULES)}",
        )
        for name in levels
        if name not in POLICY_RULES
    ]


def _version_problems(c: ClusterConfig, key: str, today: dt.date | None = None) -> list[Problem]:
    """A version EKS offers, under standard support unless accepted, one minor at a time."""
    # "Today" is the calendar's date, so a plan never changes by itself overnight: refreshing
    # infra/catalogue.py is what moves a version out of standard support here.
    releases, out = catalogue.EKS_RELEASES, list[Problem]()
    today = today or catalogue.EKS_CALENDAR_DATE
    current = [v for v, r in releases.items() if r.standard_support_end > today]
    release = releases.get(c.version)
    if release is None:
        return [
            Problem(
                f"{key}.version",
                f"{c.version!r} is not under EKS standard support; allowed: {', '.join(current)} "
                f"(infra/catalogue.py knows {', '.join(releases)}, from the EKS release calendar)",
            )
        ]
    if release.standard_support_end <= today and not c.allow_extended_support:
        out.append(
            Problem(
                f"{key}.version",
                f"{c.version!r} is not under EKS standard support (it ended on "
                f"{release.standard_support_end}; extended support bills six times the rate); "
                f"allowed: {', '.join(current)}, or allowExtendedSupport: true",
            )
        )
    if c.upgrade_from is not None:
        if c.upgrade_from not in releases:
            out.append(
                Problem(
                    f"{key}.upgradeFrom",
                    f"{c.upgrade_from!r} is not a version EKS offers; allowed: "
                    f"{', '.join(releases)}",
                )
            )
        elif catalogue.minor(c.version) - catalogue.minor(c.upgrade_from) not in (0, 1):
            nxt = f"1.{catalogue.minor(c.upgrade_from) + 1}"
            out.append(
                Problem(
                    f"{key}.version",
                    f"{c.version!r} from {c.upgrade_from} skips or reverses a minor version (EKS "
                    f"upgrades one minor at a time and never downgrades); allowed: "
                    f"{c.upgrade_from} or {nxt}, then the next minor in a later change",
                )
            )
    ami = c.ami_release_version
    if ami is not None and not re.fullmatch(rf"{re.escape(c.version)}\.[0-9]+-[0-9]{{8}}", ami):
        out.append(
            Problem(
                f"{key}.amiReleaseVersion",
                f"{ami!r} is not an AL2023 EKS AMI release of Kubernetes {c.version}; allowed: "
                f"{c.version}.<patch>-<yyyymmdd> (aws ssm get-parameter --name "
                f"{catalogue.ami_release_parameter(c.version, c.architecture)}), or leave it out",
            )
        )
    return out


_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")


def _admin_problems(c: ClusterConfig, key: str) -> list[Problem]:
    """Administrators are IAM roles; a user or a session where a role is expected is refused."""
    out = list[Problem]()
    if not c.admin_role_arns:
        out.append(
            Problem(
                f"{key}.adminRoleArns",
                "empty: nobody could administer the cluster, and the program could not create its "
                "Kubernetes objects; allowed: IAM role ARNs such as "
                "arn:aws:iam::123456789012:role/platform-admin (whoever deploys assumes one)",
            )
        )
    for arn in c.admin_role_arns:
        if _ROLE_ARN.match(arn):
            continue
        if ":user/" in arn:
            why = "is an IAM user; a user's access would follow one person"
        elif ":assumed-role/" in arn:
            why = "is a role session (sts assumed-role), not the role"
        else:
            why = "is not an IAM role ARN"
        out.append(
            Problem(
                f"{key}.adminRoleArns",
                f"{arn!r} {why}; allowed: a role ARN such as "
                "arn:aws:iam::123456789012:role/platform-admin (people and CI assume it)",
            )
        )
    return out


class StackConfig(_Section):
    """Every setting of one stack. Keys live under `backbone:` in stacks/Pulumi.<stack>.yaml."""

    target: Literal["aws", "docker"] = "aws"
    """Where the stack runs: `aws` (a real AWS account) or `docker` (your own Docker engine, no
    cloud at all)."""

    region: str | None = Field(default=None, alias="aws:region")
    """The AWS region (`aws:region`, the provider's own key). Required when target is aws."""

    protect: bool = False
    """Protect stateful resources (database, registry, keys) from deletion by `pulumi destroy` or
    a replacement: the engine refuses until the flag is lifted."""

    tags: dict[str, str] = Field(default_factory=dict)
    """Extra tags on every AWS resource (through the provider's default tags)."""

    tier: Literal["development", "production"] = "development"
    """What the stack is held to: `production` stacks must pass the production policy rules
    (Multi-AZ, deletion protection, TLS, restricted API endpoint, flow logs, ...). Set by this key,
    never by the stack's name, so a copy of the prod file under another name is held to the same
    rules."""

    budget: float | None = Field(default=None, ge=0, le=10_000_000)
    """Monthly budget in USD for `backbone cost` (exit status 1 when the estimate is over it);
    unset means no budget check."""

    free_tier: Literal["12-month", "free-plan", "none"] = "none"
    """Which AWS free tier `backbone cost` applies: `12-month` (the 12-month offers of accounts
    opened before 2025-07-15), `free-plan` (the credit-based Free plan of newer accounts) or
    `none`. Always-free allowances apply in every case."""

    policies: dict[str, Literal["mandatory", "advisory", "disabled"]] = Field(default_factory=dict)
    """Enforcement of the policy rules (`backbone check`, `pulumi preview --policy-pack policies`):
    a rule name mapped to `mandatory` (fails the check), `advisory` (reported only) or `disabled`.
    Rules not named keep their default: mandatory; the cost rules advisory, mandatory when
    freeTier is set."""

    network: NetworkConfig = Field(default_factory=NetworkConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    loadbalancer: LoadBalancerConfig = Field(default_factory=LoadBalancerConfig)
    app: AppConfig = Field(default_factory=AppConfig)
    functions: FunctionsConfig = Field(default_factory=FunctionsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    host: HostConfig = Field(default_factory=HostConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)

    # Set by the loader, not by the stack file.
    stack: str = Field(default="dev", exclude=True)
    """The stack's name (from the file name or the engine)."""

    def web_acl(self) -> bool:
        """Whether the load balancer gets its web ACL: the setting, else on in production."""
        chosen = self.loadbalancer.web_acl
        return self.tier == "production" if chosen is None else chosen

    def problems(self) -> list[Problem]:
        """Cross-field rules: what AWS would refuse, refused first."""
        out = self.network.problems() + _policy_problems(self.policies)
        if self.target == "aws":
            if self.region is None:
                out.append(
                    Problem(
                        "aws:region",
                        "missing; allowed: an AWS region such as "
                        "us-east-1 or eu-west-1 (target is aws)",
                    )
                )
            elif self.region not in AWS_REGIONS:
                hint = _suggest(self.region, sorted(AWS_REGIONS))
                out.append(
                    Problem(
                        "aws:region",
                        f"{self.region!r} is not an AWS region{hint}; "
                        f"allowed: {', '.join(sorted(AWS_REGIONS))}",
                    )
                )
            for what, section in (("database", self.database), ("loadbalancer", self.loadbalancer)):
                if section.enabled and self.network.az_count < 2:
                    out.append(
                        Problem(
                            f"{NAMESPACE}:network.azCount",
                            f"{self.network.az_count} zone is too few for the {what} (AWS needs "
                            f"subnets in at least two availability zones); allowed: 2 to 6, or "
                            f"{NAMESPACE}:{what}.enabled: false",
                        )
                    )
            out += self._cluster_problems() + self._database_problems() + self._app_problems()
            out += self._capacity_problems() + self._registry_problems()
            out += self._loadbalancer_problems() + self._naming_problems()
            out += self._functions_problems() + self._monitoring_problems()
            out += self._host_problems() + self._free_tier_problems()
        else:
            out += self._local_problems()
        return out

    def _registry_problems(self) -> list[Problem]:
        keep = capacity.APP_REVISION_HISTORY_LIMIT + 1
        if not self.cluster.enabled or self.registry.keep_images >= keep:
            return []
        return [
            Problem(
                f"{NAMESPACE}:registry.keepImages",
                f"{self.registry.keep_images} would expire images the Deployment can still roll "
                f"back to (the running one plus a revision history of "
                f"{capacity.APP_REVISION_HISTORY_LIMIT}); allowed: {keep} to 1000",
            )
        ]

    def _local_problems(self) -> list[Problem]:
        """target docker: AWS pieces have no meaning; the images must be pinned."""
        out = list[Problem]()
        for what in ("cluster", "database", "loadbalancer", "functions", "monitoring", "host",
                     "observability"):  # fmt: skip
            if getattr(self, what).enabled:
                out.append(
                    Problem(
                        f"{NAMESPACE}:{what}.enabled",
                        f"true has no meaning when target is docker (it is an AWS piece); "
                        f"allowed: false, or {NAMESPACE}:target: aws",
                    )
                )
        images = (
            ("postgresImage", self.local.postgres_image),
            ("proxyImage", self.local.proxy_image),
            ("prometheusImage", self.local.prometheus_image),
        )
        for key, image in images:
            tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
            if "@" not in image and tag in ("", "latest"):
                out.append(
                    Problem(
                        f"{NAMESPACE}:local.{key}",
                        f"{image!r} is not pinned; allowed: a tag such as postgres:17-bookworm "
                        "or a digest (latest changes under you)",
                    )
                )
        ports = {"appPort": self.local.app_port, "prometheusPort": self.local.prometheus_port}
        if len(set(ports.values())) < len(ports):
            out.append(
                Problem(
                    f"{NAMESPACE}:local.prometheusPort",
                    f"{self.local.prometheus_port} is also appPort; allowed: another port",
                )
            )
        return out

    def _host_problems(self) -> list[Problem]:
        h, out = self.host, list[Problem]()
        key = f"{NAMESPACE}:host"
        if not h.enabled:
            return out
        if self.cluster.enabled:
            out.append(
                Problem(
                    f"{key}.enabled",
                    "true together with cluster.enabled: the app runs on the host or on the "
                    f"cluster, not both; allowed: one of {key}.enabled and "
                    f"{NAMESPACE}:cluster.enabled",
                )
            )
        if not self.database.enabled:
            out.append(
                Problem(
                    f"{NAMESPACE}:database.enabled",
                    "false, but host.enabled is true and the app the host runs needs its "
                    f"database; allowed: {NAMESPACE}:database.enabled: true, or "
                    f"{key}.enabled: false",
                )
            )
        if self.database.manage_password:
            out.append(
                Problem(
                    f"{NAMESPACE}:database.managePassword",
                    "true keeps the master password in Secrets Manager, which the host does not "
                    "read (the containers' environment comes from one Parameter Store "
                    "SecureString); allowed: false while host.enabled is true",
                )
            )
        if re.search(r"\dg", h.instance_type.split(".")[0]):
            out.append(
                Problem(
                    f"{key}.instanceType",
                    f"{h.instance_type!r} is a Graviton (arm64) type; the host runs the x86_64 "
                    "Amazon Linux AMI and a linux/amd64 image; allowed: an x86_64 type such as "
                    "t3.micro",
                )
            )
        return out

    def _free_tier_problems(self) -> list[Problem]:
        """A stack that claims a free tier (`freeTier`) holds only what that tier covers."""
        out = list[Problem]()
        if self.free_tier == "none":
            return out
        why = f"the stack claims the free tier ({NAMESPACE}:freeTier: {self.free_tier})"
        h, d = self.host, self.database
        if h.enabled and h.instance_type not in FREE_TIER_HOST_TYPES:
            out.append(
                Problem(
                    f"{NAMESPACE}:host.instanceType",
                    f"{h.instance_type!r} is outside the free tier and {why}; allowed: "
                    f"{', '.join(FREE_TIER_HOST_TYPES)} (t2.micro where the region has no t3)",
                )
            )
        if h.enabled and h.root_volume_gb > FREE_TIER_EBS_GB:
            out.append(
                Problem(
                    f"{NAMESPACE}:host.rootVolumeGb",
                    f"{h.root_volume_gb} GiB is more than the free tier's {FREE_TIER_EBS_GB} GB "
                    f"of EBS and {why}; allowed: 8 to {FREE_TIER_EBS_GB}",
                )
            )
        if d.enabled:
            dbkey = f"{NAMESPACE}:database"
            checks = (
                (
                    "instanceClass",
                    d.instance_class not in FREE_TIER_DB_CLASSES,
                    f"{d.instance_class!r} is outside the free tier",
                    ", ".join(FREE_TIER_DB_CLASSES),
                ),
                ("storageType", d.storage_type != "gp2", f"{d.storage_type!r} is not free", "gp2"),
                (
                    "allocatedStorageGb",
                    d.allocated_storage_gb > FREE_TIER_DB_GB,
                    f"{d.allocated_storage_gb} GiB is more than the free {FREE_TIER_DB_GB} GB",
                    str(FREE_TIER_DB_GB),
                ),
                (
                    "maxAllocatedStorageGb",
                    d.max_allocated_storage_gb != 0,
                    f"{d.max_allocated_storage_gb} lets storage grow past the free "
                    f"{FREE_TIER_DB_GB} GB",
                    "0 (no autoscaling)",
                ),
                ("multiAz", d.multi_az, "true is never free", "false"),
            )
            for field, bad, what, allowed in checks:
                if bad:
                    out.append(Problem(f"{dbkey}.{field}", f"{what} and {why}; allowed: {allowed}"))
        if (h.enabled or self.cluster.enabled) and (
            self.registry.keep_images * APP_IMAGE_MB > FREE_TIER_ECR_MB
        ):
            most = FREE_TIER_ECR_MB // APP_IMAGE_MB
            out.append(
                Problem(
                    f"{NAMESPACE}:registry.keepImages",
                    f"{self.registry.keep_images} images of about {APP_IMAGE_MB} MB pass the "
                    f"free tier's {FREE_TIER_ECR_MB} MB of ECR storage and {why}; allowed: 1 to "
                    f"{most}",
                )
            )
        return out

    def _cluster_problems(self) -> list[Problem]:
        c, out = self.cluster, list[Problem]()
        key = f"{NAMESPACE}:cluster"
        if not c.enabled:
            return out
        out += _version_problems(c, key)
        out += _admin_problems(c, key)
        if not c.min_nodes <= c.desired_nodes <= c.max_nodes:
            out.append(
                Problem(
                    f"{key}.desiredNodes",
                    f"minNodes {c.min_nodes} <= desiredNodes "
                    f"{c.desired_nodes} <= maxNodes {c.max_nodes} does not hold; "
                    "allowed: counts in that order",
                )
            )
        if not c.instance_types:
            out.append(
                Problem(
                    f"{key}.instanceTypes", "empty; allowed: EC2 instance types such as t3.medium"
                )
            )
        for t in c.instance_types:
            family = t.split(".")[0]
            if not re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9]+", t):
                out.append(
                    Problem(
                        f"{key}.instanceTypes",
                        f"{t!r} is not an EC2 instance type; "
                        "allowed: family.size such as t3.medium or m7g.large",
                    )
                )
            elif (c.architecture == "arm64") != bool(re.search(r"\dg", family)):
                out.append(
                    Problem(
                        f"{key}.instanceTypes",
                        f"{t!r} does not run {c.architecture} "
                        "nodes; allowed: Graviton types (t4g, m7g, ...) for arm64, "
                        "others for x86_64",
                    )
                )
            elif t not in catalogue.INSTANCE_TYPES:
                out.append(
                    Problem(
                        f"{key}.instanceTypes",
                        f"{t!r} has no allocatable figures in infra/catalogue.py (the capacity "
                        f"rule needs them); allowed: {', '.join(catalogue.INSTANCE_TYPES)}, or add "
                        "the type to INSTANCE_TYPES with its source",
                    )
                )
        if not self.database.enabled:
            out.append(
                Problem(
                    f"{NAMESPACE}:database.enabled",
                    "false, but cluster.enabled is true and the app the cluster runs needs its "
                    f"database; allowed: {NAMESPACE}:database.enabled: true, or "
                    f"{key}.enabled: false",
                )
            )
        if self.network.nat == "none":
            out.append(
                Problem(
                    f"{NAMESPACE}:network.nat",
                    "'none' leaves the cluster's nodes in "
                    "private subnets with no way to reach ECR and the EKS API; "
                    "allowed: single or per-az when cluster.enabled is true",
                )
            )
        if self.network.az_count < 2:
            out.append(
                Problem(
                    f"{NAMESPACE}:network.azCount",
                    f"{self.network.az_count} zone is "
                    "too few for EKS (it needs subnets in two zones); allowed: 2 to 6",
                )
            )
        out += _retention_problems(f"{key}.logRetentionDays", c.log_retention_days)
        for cidr in c.public_access_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                out.append(
                    Problem(
                        f"{key}.publicAccessCidrs",
                        f"{cidr!r} is not a network; allowed: CIDRs such as 203.0.113.0/24",
                    )
                )
        for cidr in c.private_access_cidrs:
            try:
                net = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                net = None
            if net is None or not any(net.subnet_of(r) for r in PRIVATE_RANGES):  # type: ignore[arg-type]
                out.append(
                    Problem(
                        f"{key}.privateAccessCidrs",
                        f"{cidr!r} is not a private network; allowed: CIDRs inside 10.0.0.0/8, "
                        "172.16.0.0/12 or 192.168.0.0/16",
                    )
                )
        if (
            self.tier == "production"
            and c.public_endpoint
            and any(cidr in ("0.0.0.0/0", "::/0") for cidr in c.public_access_cidrs)
        ):
            out.append(
                Problem(
                    f"{key}.publicAccessCidrs",
                    "0.0.0.0/0 opens the Kubernetes API endpoint to the whole internet in a "
                    "production stack (backbone:tier: production); allowed: your own networks "
                    "(for example [203.0.113.0/24]), or publicEndpoint: false to reach it from "
                    "inside the VPC only (privateAccessCidrs admits a VPN or a CI runner)",
                )
            )
        return out

    def _capacity_problems(self) -> list[Problem]:
        """The app at maxReplicas, and a rollout's surge beside it, fit in maxNodes."""
        c, a = self.cluster, self.app
        types = [catalogue.INSTANCE_TYPES.get(t) for t in c.instance_types]
        if not c.enabled or not types or None in types:
            return []  # no cluster, or an instance type _instance_problems refuses
        smallest = min(
            (t for t in types if t is not None),
            key=lambda t: (t.allocatable_cpu_m, t.allocatable_memory_mib),
        )
        out = list[Problem]()
        held = capacity.fit(smallest, c.max_nodes, a.cpu, a.memory)
        for what, pods in (
            (f"{a.max_replicas} app pods (app.maxReplicas)", a.max_replicas),
            (
                f"a rolling update at maxReplicas runs {a.max_replicas + capacity.APP_MAX_SURGE} "
                f"app pods (maxReplicas {a.max_replicas} + maxSurge {capacity.APP_MAX_SURGE}), "
                "which",
                a.max_replicas + capacity.APP_MAX_SURGE,
            ),
        ):
            if held.app_pods >= pods:
                continue
            need = capacity.nodes_needed(smallest, pods, a.cpu, a.memory, 100)
            fewer = held.app_pods - (pods - a.max_replicas)
            out.append(
                Problem(
                    f"{NAMESPACE}:cluster.maxNodes",
                    f"{what} of {a.cpu} CPU and {a.memory} do not fit in maxNodes {c.max_nodes} x "
                    f"{smallest.name}: they hold {held.app_pods} beside the system pods "
                    f"({held.per_node} a node; {held.limit} runs out first); change "
                    + (f"cluster.maxNodes to {need} or more, or " if need <= 100 else "")
                    + (f"app.maxReplicas to {fewer} or fewer" if fewer >= 1 else "app.cpu")
                    + " (or app.cpu/app.memory, or a larger cluster.instanceTypes)",
                )
            )
        return out

    def _naming_problems(self) -> list[Problem]:
        """What AWS would refuse in a name the kit derives from the stack's."""
        out = list[Problem]()
        if self.database.enabled and self.region in RDS_CA_MISSING_REGIONS:
            out.append(
                Problem(
                    "aws:region",
                    f"{self.region!r}: the kit's RDS CA bundle (app/certs/rds-global-bundle.pem) "
                    "holds no certificate for this region, so the app could not verify the "
                    "database (sslmode=verify-full); allowed: another region, or refresh the "
                    "bundle as app/certs/README.md says and remove the region from "
                    "RDS_CA_MISSING_REGIONS",
                )
            )
        if self.functions.enabled:
            longest = max(FUNCTION_NAMES, key=len)
            name = f"{NAMESPACE}-{self.stack}-{longest}"
            if len(name) > LAMBDA_NAME_MAX:
                out.append(
                    Problem(
                        "stack name",
                        f"{self.stack!r} makes the function name {name!r} ({len(name)} "
                        f"characters); allowed: a stack name of at most "
                        f"{LAMBDA_NAME_MAX - len(NAMESPACE) - len(longest) - 2} characters "
                        f"(Lambda names are at most {LAMBDA_NAME_MAX})",
                    )
                )
        return out

    def _loadbalancer_problems(self) -> list[Problem]:
        lb, out = self.loadbalancer, list[Problem]()
        key = f"{NAMESPACE}:loadbalancer"
        if not lb.enabled:
            return out
        if lb.certificate_arn and lb.domain_name:
            out.append(
                Problem(
                    f"{key}.domainName",
                    "set together with certificateArn; allowed: one of the two (the certificate "
                    "by its ARN, or looked up by its domain)",
                )
            )
        if lb.certificate_arn and self.region and lb.certificate_arn.split(":")[3] != self.region:
            out.append(
                Problem(
                    f"{key}.certificateArn",
                    f"the certificate is in {lb.certificate_arn.split(':')[3]}, the load balancer "
                    f"in {self.region}; allowed: an ACM certificate in {self.region} (a load "
                    "balancer can only use certificates of its own region)",
                )
            )
        tls = bool(lb.certificate_arn or lb.domain_name)
        if self.tier == "production" and not tls and not lb.allow_plain_http:
            out.append(
                Problem(
                    f"{key}.certificateArn",
                    "missing: a production stack (backbone:tier: production) would serve the "
                    "app and its write token over plain HTTP; allowed: certificateArn (an ACM "
                    f"certificate in {self.region}), domainName (a domain with an issued ACM "
                    "certificate), or allowPlainHttp: true to accept plain HTTP",
                )
            )
        if tls and lb.allow_plain_http:
            out.append(
                Problem(
                    f"{key}.allowPlainHttp",
                    "true has no meaning with a certificate (port 80 redirects to HTTPS); "
                    "allowed: false",
                )
            )
        return out

    def _database_problems(self) -> list[Problem]:
        d, out = self.database, list[Problem]()
        key = f"{NAMESPACE}:database"
        if not d.enabled:
            return out
        if d.engine_version not in POSTGRES_MAJORS:
            out.append(
                Problem(
                    f"{key}.engineVersion",
                    f"{d.engine_version!r} is not a "
                    f"PostgreSQL major under RDS standard support; allowed: "
                    f"{', '.join(POSTGRES_MAJORS)}",
                )
            )
        if d.instance_class.startswith(RDS_RETIRED_FAMILIES):
            out.append(
                Problem(
                    f"{key}.instanceClass",
                    f"{d.instance_class!r} is a previous "
                    "generation that RDS PostgreSQL 14+ does not support; allowed: "
                    "db.t3, db.t4g, db.m5/m6g/m6i/m7g, db.r5/r6g/r6i/r7g classes",
                )
            )
        elif d.instance_class not in RDS_CLASSES:
            hint = _suggest(d.instance_class, sorted(RDS_CLASSES))
            out.append(
                Problem(
                    f"{key}.instanceClass",
                    f"{d.instance_class!r} is not an RDS "
                    f"instance class for PostgreSQL{hint}; allowed: db.<family>.<size> "
                    "of db.t3, db.t4g, db.m5/m6g/m6i/m7g, db.r5/r6g/r6i/r7g",
                )
            )
        if d.max_allocated_storage_gb and d.max_allocated_storage_gb <= d.allocated_storage_gb:
            out.append(
                Problem(
                    f"{key}.maxAllocatedStorageGb",
                    f"{d.max_allocated_storage_gb} is "
                    f"not above allocatedStorageGb {d.allocated_storage_gb}; allowed: "
                    "0 (no autoscaling) or a larger ceiling",
                )
            )
        out += self._restore_problems()
        # managePassword works with the cluster: the migration reads RDS's secret at every run (and
        # again after a refused login), so a rotation every 7 days breaks nothing.
        if d.username.lower() in {"admin", "postgres", "rdsadmin", "user", "root"}:
            out.append(
                Problem(
                    f"{key}.username",
                    f"{d.username!r} is reserved by RDS "
                    "PostgreSQL; allowed: another name such as app_admin",
                )
            )
        if d.username.lower() in DB_ROLES:
            out.append(
                Problem(
                    f"{key}.username",
                    f"{d.username!r} is the name of a role the migration creates for the app or "
                    f"the housekeeping job; allowed: another name such as app_admin",
                )
            )
        out += _retention_problems(f"{key}.logRetentionDays", d.log_retention_days)
        return out

    def _restore_problems(self) -> list[Problem]:
        d, key = self.database, f"{NAMESPACE}:database"
        out = list[Problem]()
        if d.restore_snapshot and d.restore_source_instance:
            out.append(
                Problem(
                    f"{key}.restoreSnapshot",
                    "set together with restoreSourceInstance; allowed: one restore at a time (a "
                    "snapshot, or a point in time of an instance)",
                )
            )
        if d.restore_time and not d.restore_source_instance:
            out.append(
                Problem(
                    f"{key}.restoreTime",
                    "set without restoreSourceInstance; allowed: restoreSourceInstance (the "
                    "instance whose backups to restore) with it, or leave restoreTime out",
                )
            )
        backup = _window_minutes(d.backup_window)
        maintenance = _weekly_minutes(d.maintenance_window)
        if backup[1] - backup[0] < 30:
            out.append(
                Problem(
                    f"{key}.backupWindow",
                    f"{d.backup_window!r} is shorter than 30 minutes (RDS refuses it); allowed: "
                    "hh:mm-hh:mm of 30 minutes or more",
                )
            )
        if _overlaps_daily_weekly(backup, maintenance):
            out.append(
                Problem(
                    f"{key}.maintenanceWindow",
                    f"{d.maintenance_window!r} overlaps the backup window {d.backup_window!r} "
                    "(RDS refuses it); allowed: windows apart",
                )
            )
        return out

    def _app_problems(self) -> list[Problem]:
        a, out = self.app, list[Problem]()
        if not a.min_replicas <= a.replicas <= a.max_replicas:
            out.append(
                Problem(
                    f"{NAMESPACE}:app.replicas",
                    f"minReplicas {a.min_replicas} <= "
                    f"replicas {a.replicas} <= maxReplicas {a.max_replicas} does not "
                    "hold; allowed: counts in that order",
                )
            )
        return out

    def _functions_problems(self) -> list[Problem]:
        f, out = self.functions, list[Problem]()
        key = f"{NAMESPACE}:functions"
        if not f.enabled:
            return out
        if f.runtime not in LAMBDA_PYTHON_RUNTIMES:
            out.append(
                Problem(
                    f"{key}.runtime",
                    f"{f.runtime!r} is not a supported Lambda Python runtime for these "
                    f"functions; allowed: {', '.join(LAMBDA_PYTHON_RUNTIMES)} (the code needs "
                    "Python 3.12 or newer; older runtimes are deprecated by Lambda)",
                )
            )
        every = rate_seconds(f.canary_schedule)
        if every is None or not 60 <= every <= 3600:
            out.append(
                Problem(
                    f"{key}.canarySchedule",
                    f"{f.canary_schedule!r} is not a rate between one minute and one hour; "
                    "allowed: rate(1 minute) to rate(60 minutes) or rate(1 hour) (its alarms "
                    "take the rate as their period)",
                )
            )
        problem = schedule_problem(f.housekeeping_schedule)
        if problem is None:
            rate = rate_seconds(f.housekeeping_schedule)
            fields = f.housekeeping_schedule[5:-1].split()
            if (rate is not None and rate > 86400) or (
                rate is None
                and (fields[2] not in "*?" or fields[3] != "*" or fields[4] not in "*?")
            ):
                problem = (
                    f"{f.housekeeping_schedule!r} does not run every day, and the job's alarm "
                    "expects a run in every 24 hours; allowed: a daily cron such as "
                    "cron(30 3 * * ? *), or rate(N hours) up to rate(1 day)"
                )
        if problem:
            out.append(Problem(f"{key}.housekeepingSchedule", problem))
        if f.canary_timeout_seconds < 25:
            out.append(
                Problem(
                    f"{key}.canaryTimeoutSeconds",
                    f"{f.canary_timeout_seconds} s is too short for the canary's two probes "
                    "(2 attempts of 5 s each, 0.5 s between, 3 s to publish); allowed: 25 to 900",
                )
            )
        out += self._housekeeping_window_problems()
        out += _retention_problems(f"{key}.logRetentionDays", f.log_retention_days)
        needs = (
            ("loadbalancer", self.loadbalancer.enabled, "the canary probes the app through it"),
            ("database", self.database.enabled, "the housekeeping job works on its data"),
        )
        for what, present, why in needs:
            if not present:
                out.append(
                    Problem(
                        f"{NAMESPACE}:{what}.enabled",
                        f"false, but functions.enabled is true and {why}; allowed: "
                        f"{NAMESPACE}:{what}.enabled: true, or {key}.enabled: false",
                    )
                )
        if self.network.nat == "none":
            out.append(
                Problem(
                    f"{NAMESPACE}:network.nat",
                    "'none' leaves the housekeeping job (in the private subnets) with no route "
                    "to Secrets Manager and CloudWatch; allowed: single or per-az when "
                    "functions.enabled is true",
                )
            )
        return out

    def _housekeeping_window_problems(self) -> list[Problem]:
        """The job's run (its start to its timeout) may not meet the database's backup or
        maintenance window: it would purge while RDS snapshots or patches."""
        f, d = self.functions, self.database
        if not d.enabled:
            return []
        key = f"{NAMESPACE}:functions.housekeepingSchedule"
        runs = _run_minutes(f.housekeeping_schedule)
        if runs is None:
            if schedule_problem(f.housekeeping_schedule) is not None:
                return []  # reported as a bad schedule already
            return [
                Problem(
                    key,
                    f"{f.housekeeping_schedule!r} has no fixed time of day, so it cannot be kept "
                    f"out of the database's backup ({d.backup_window}) and maintenance "
                    f"({d.maintenance_window}) windows; allowed: a daily cron with a numeric "
                    "minute and hour, such as cron(15 6 * * ? *)",
                )
            ]
        length = -(-f.housekeeping_timeout_seconds // 60)
        backup = _window_minutes(d.backup_window)
        maintenance = _weekly_minutes(d.maintenance_window)
        for start, _ in runs:
            run = (start, start + length)
            hit = None
            if _overlaps_daily_daily(run, backup):
                hit = f"the backup window {d.backup_window}"
            elif _overlaps_daily_weekly(run, maintenance):
                hit = f"the maintenance window {d.maintenance_window}"
            if hit:
                return [
                    Problem(
                        key,
                        f"{f.housekeeping_schedule!r} runs {start // 60:02d}:{start % 60:02d}-"
                        f"+{length} min (its timeout), inside {hit} (UTC); allowed: a time "
                        "outside both database windows, or move the windows "
                        "(database.backupWindow, database.maintenanceWindow)",
                    )
                ]
        return []

    def _monitoring_problems(self) -> list[Problem]:
        m, out = self.monitoring, list[Problem]()
        key = f"{NAMESPACE}:monitoring"
        if not m.enabled:
            return out + self._observability_problems()
        if m.alert_email is not None and not _EMAIL.match(m.alert_email):
            out.append(
                Problem(
                    f"{key}.alertEmail",
                    f"{m.alert_email!r} is not an email address; allowed: an address such as "
                    "ops@example.com, or leave it out",
                )
            )
        # ALB, RDS and Lambda publish one data point a minute: a 10 or 30 s alarm would see no
        # data and, treating missing data as fine, never fire.
        if not (m.period_seconds % 60 == 0 and 60 <= m.period_seconds <= 3600):
            out.append(
                Problem(
                    f"{key}.periodSeconds",
                    f"{m.period_seconds} is not a CloudWatch alarm period for these metrics; "
                    "allowed: 60, 120, ... 3600 (a multiple of 60 up to an hour)",
                )
            )
        elif m.period_seconds * m.evaluation_periods > 86400:
            out.append(
                Problem(
                    f"{key}.evaluationPeriods",
                    f"{m.evaluation_periods} periods of {m.period_seconds} s span more than a "
                    "day; allowed: periodSeconds x evaluationPeriods up to 86400",
                )
            )
        if m.billing_alarm_usd is not None and self.region != "us-east-1":
            out.append(
                Problem(
                    f"{key}.billingAlarmUsd",
                    f"set, but AWS publishes billing metrics only in us-east-1 and this stack "
                    f"runs in {self.region}; allowed: leave it out here",
                )
            )
        if self.tier == "production" and not m.subscribed():
            out.append(
                Problem(
                    f"{key}.alertEmail",
                    "missing: a production stack's alerts topic needs a subscriber, or every "
                    "alarm publishes to no one; allowed: alertEmail (an address AWS mails a "
                    "confirmation link to), alertHttpsUrl (https://..., an endpoint that "
                    "confirms the subscription), or alertsRoutedElsewhere: a sentence saying "
                    "which subscriber outside this program reads the topic",
                )
            )
        return out + self._observability_problems()

    def _observability_problems(self) -> list[Problem]:
        o, out = self.observability, list[Problem]()
        key = f"{NAMESPACE}:observability"
        if not o.enabled:
            return out
        for what, section in (("cluster", self.cluster), ("monitoring", self.monitoring)):
            if not section.enabled:
                out.append(
                    Problem(
                        f"{key}.enabled",
                        f"true needs {NAMESPACE}:{what}.enabled: true (the collector scrapes "
                        "the cluster's pods; alerts go to the monitoring topic); allowed: "
                        f"false, or enable {what}",
                    )
                )
        return out + _retention_problems(f"{key}.logRetentionDays", o.log_retention_days)


# --------------------------------------------------------------------------------------------
# Errors


class ConfigError(Exception):
    """Every problem of one stack file. The program (infra/program.py) raises it as a Pulumi
    RunError, so `pulumi up` prints the message with no traceback, before any resource is
    registered."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''} in the stack config:"
        ]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Loading


def _decode(value: Any) -> Any:
    """A config value as the engine passes it (a string; objects and lists as JSON) to Python."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _aliases(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """A model's stack-file keys, each with its sub-model when it is a section."""
    out: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        out[field.alias or name] = sub
    return out


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower().replace("-", "").replace("_", ""): c for c in choices}
        match = lowered.get(key.lower().replace("-", "").replace("_", ""))
        close = [match] if match else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _display_key(loc: tuple[Any, ...]) -> str:
    """`backbone:network.azCount` from a pydantic location."""
    if not loc:
        return ""
    head, *rest = loc
    head = str(head)
    key = head if ":" in head else f"{NAMESPACE}:{head}"
    for part in rest:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    return key


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    model: type[BaseModel] = StackConfig
    for part in loc:
        sub = _aliases(model).get(str(part))
        if sub is None:
            break
        model = sub
    return model


def _problems(exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        etype = err["type"]
        if etype == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = sorted(k for k in _aliases(parent) if ":" not in k)
            hint = _suggest(str(loc[-1]), allowed)
            problems.append(
                Problem(
                    _display_key(loc),
                    f"unknown key{hint}; allowed here: {', '.join(allowed)}",
                )
            )
            continue
        value = err.get("input")
        shown = json.dumps(value) if not isinstance(value, str) else repr(value)
        problems.append(Problem(_display_key(loc), f"{shown} is not allowed: {_allowed_text(err)}"))
    return problems


def _allowed_text(err: Any) -> str:
    ctx = err.get("ctx") or {}
    etype = err["type"]
    if etype == "literal_error":
        return f"allowed: {ctx.get('expected')}"
    if etype in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        return err["msg"].lower()
    if etype.endswith("_type") or etype.endswith("_parsing"):
        kind = etype.split("_")[0]
        return f"allowed: a {dict(bool='true or false', int='whole number', dict='mapping', string='string', float='number', list='list').get(kind, kind)}"
    return err["msg"]


def parse(raw: Mapping[str, Any], source: str, stack: str) -> StackConfig:
    """Validate a stack's config as the engine passes it: `{"backbone:network": "{...}", ...}`."""
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    top = sorted(_aliases(StackConfig))
    for full_key, value in raw.items():
        ns, sep, key = full_key.partition(":")
        if not sep:
            problems.append(
                Problem(
                    full_key,
                    f"a config key needs a namespace; did you mean '{NAMESPACE}:{full_key}'?",
                )
            )
        elif ns == NAMESPACE:
            data[key] = _decode(value)
        elif full_key == "aws:region":
            data["aws:region"] = value
        elif full_key == PACKAGER_KEY:
            if value not in PACKAGER_CHOICES:
                problems.append(
                    Problem(full_key, f"{value!r}; allowed: {', '.join(PACKAGER_CHOICES)}")
                )
        elif ns == ENGINE_NAMESPACE:
            problems.append(Problem(full_key, f"unknown engine setting; allowed: {PACKAGER_KEY}"))
        elif ns not in PROVIDER_NAMESPACES:
            hint = _suggest(ns, [NAMESPACE, *sorted(PROVIDER_NAMESPACES)])
            problems.append(
                Problem(
                    full_key,
                    f"unknown namespace {ns!r}{hint}; allowed: {NAMESPACE}:<key> for the kit's "
                    f"settings ({', '.join(k for k in top if ':' not in k)}) and provider "
                    f"settings under {', '.join(sorted(PROVIDER_NAMESPACES))}",
                )
            )
    data["stack"] = stack
    cfg: StackConfig | None = None
    try:
        cfg = StackConfig.model_validate(data)
        problems.extend(cfg.problems())
    except ValidationError as exc:
        problems.extend(_problems(exc))
        # Every problem at once: drop what failed, and check the rest with the cross-field rules.
        bad = {p.key for p in problems}
        for err in exc.errors():
            _drop(data, tuple(err["loc"]))
        try:
            partial = StackConfig.model_validate(data)
        except ValidationError:
            pass
        else:
            problems.extend(p for p in partial.problems() if p.key not in bad)
    if problems:
        raise ConfigError(source, problems)
    assert cfg is not None
    return cfg


def _drop(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    """Remove the value at a pydantic location (so the rest can still be checked)."""
    node: Any = data
    for part in loc[:-1]:
        if not isinstance(node, (dict, list)):
            return
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(loc[-1], None)


def packager(raw: Mapping[str, Any]) -> str:
    """The packager the engine chose (PACKAGER_KEY), `build` when it chose none."""
    return str(raw.get(PACKAGER_KEY, "build"))


def docs() -> str:
    """Every setting, its type, default and meaning, as Markdown (for README and `--help`)."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            key = field.alias or name
            full = key if ":" in key else f"{prefix}{key}"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{full}.")
                continue
            default = field.get_default(call_default_factory=True)
            text = (field.description or "").replace("\n", " ")
            text = " ".join(text.split())
            lines.append(f"| `{full}` | `{json.dumps(default)}` | {text} |")

    walk(StackConfig, f"{NAMESPACE}:")
    return "| key | default | meaning |\n|---|---|---|\n" + "\n".join(lines)
