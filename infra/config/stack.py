"""StackConfig: every setting of one stack, and the rules that read more than one section (a
section's own rules are its `problems()`, in its module)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infra.config import capacity, catalogues
from infra.config.app import AppConfig
from infra.config.base import NAMESPACE, Problem, Section, suggest
from infra.config.catalogues import (
    APP_IMAGE_MB,
    AWS_REGIONS,
    FREE_TIER_DB_CLASSES,
    FREE_TIER_DB_GB,
    FREE_TIER_EBS_GB,
    FREE_TIER_ECR_MB,
    FREE_TIER_HOST_TYPES,
    LAMBDA_NAME_MAX,
    RDS_CA_MISSING_REGIONS,
)
from infra.config.cluster import ClusterConfig
from infra.config.database import DatabaseConfig
from infra.config.functions import FUNCTION_NAMES, FunctionsConfig
from infra.config.host import HostConfig
from infra.config.loadbalancer import LoadBalancerConfig
from infra.config.local import LocalConfig
from infra.config.monitoring import MonitoringConfig
from infra.config.network import NetworkConfig
from infra.config.observability import ObservabilityConfig
from infra.config.policies import Level, policy_problems
from infra.config.registry import KEEP_WITH_CLUSTER, RegistryConfig
from infra.config.schedules import (
    daily_window,
    overlaps_daily_daily,
    overlaps_daily_weekly,
    weekly_window,
)

# The AWS pieces: sections with an `enabled` switch that mean nothing on target docker.
AWS_PIECES = ("cluster", "database", "loadbalancer", "functions", "monitoring", "host",
              "observability")  # fmt: skip


def _k(section: str, field: str) -> str:
    return f"{NAMESPACE}:{section}.{field}"


class StackConfig(Section):
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

    policies: dict[str, Level] = Field(default_factory=dict)
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

    @property
    def production(self) -> bool:
        return self.tier == "production"

    def problems(self) -> list[Problem]:
        """Every section's own rules, then the rules across sections: what AWS would refuse,
        refused first."""
        out = self.network.problems() + policy_problems(self.policies)
        if self.target != "aws":
            return out + self._docker_problems() + self.local.problems()
        out += self._region_problems() + self._zone_problems()
        out += self.cluster.problems() + self._cluster_needs()
        out += self.database.problems() + self.app.problems() + self._capacity_problems()
        out += self._registry_problems()
        out += self.loadbalancer.problems() + self._tls_problems() + self._naming_problems()
        out += self.functions.problems() + self._functions_needs()
        out += self.monitoring.problems() + self._alerting_problems()
        out += self.observability.problems() + self._observability_needs()
        out += self.host.problems() + self._host_needs()
        return out + self._free_tier_problems()

    def _region_problems(self) -> list[Problem]:
        if self.region is None:
            return [
                Problem(
                    "aws:region",
                    "missing; allowed: an AWS region such as us-east-1 or eu-west-1 (target is "
                    "aws)",
                )
            ]
        if self.region in AWS_REGIONS:
            return []
        regions = sorted(AWS_REGIONS)
        return [
            Problem(
                "aws:region",
                f"{self.region!r} is not an AWS region{suggest(self.region, regions)}; allowed: "
                f"{', '.join(regions)}",
            )
        ]

    def _zone_problems(self) -> list[Problem]:
        """The database and the load balancer need subnets in two zones."""
        zones, most = self.network.az_count, NetworkConfig.high("az_count")
        return [
            Problem(
                _k("network", "azCount"),
                f"{zones} zone is too few for the {what} (AWS needs subnets in at least two "
                f"availability zones); allowed: 2 to {most}, or {NAMESPACE}:{what}.enabled: false",
            )
            for what, section in (("database", self.database), ("loadbalancer", self.loadbalancer))
            if section.enabled and zones < 2
        ]

    def _needs(
        self, what: str, present: bool, key: str, why: str, other: str = ""
    ) -> list[Problem]:
        """`what` must be enabled because the piece at `key` (enabled) needs it (`other`: what
        else would do)."""
        if present:
            return []
        return [
            Problem(
                f"{NAMESPACE}:{what}.enabled",
                f"false, but {key}.enabled is true and {why}; allowed: "
                f"{NAMESPACE}:{what}.enabled: true{other}, or {NAMESPACE}:{key}.enabled: false",
            )
        ]

    def _cluster_needs(self) -> list[Problem]:
        c = self.cluster
        if not c.enabled:
            return []
        out = self._needs(
            "database",
            self.database.enabled,
            "cluster",
            "the app the cluster runs needs its database",
        )
        # the roles' passwords rotate (with the cluster): outside the database's windows
        out += self.database.rotation_problems()
        if self.network.nat == "none":
            out.append(
                Problem(
                    _k("network", "nat"),
                    "'none' leaves the cluster's nodes in private subnets with no way to reach ECR "
                    "and the EKS API; allowed: single or per-az when cluster.enabled is true",
                )
            )
        if self.network.az_count < 2:
            out.append(
                Problem(
                    _k("network", "azCount"),
                    f"{self.network.az_count} zone is too few for EKS (it needs subnets in two "
                    f"zones); allowed: 2 to {NetworkConfig.high('az_count')}",
                )
            )
        if self.production and c.open_to_internet():
            out.append(
                Problem(
                    c.key("publicAccessCidrs"),
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
        types = [catalogues.INSTANCE_TYPES.get(t) for t in c.instance_types]
        if not c.enabled or not types or None in types:
            return []  # no cluster, or an instance type the cluster's own rules refuse
        smallest = min(
            (t for t in types if t is not None),
            key=lambda t: (t.allocatable_cpu_m, t.allocatable_memory_mib),
        )
        surge = a.max_replicas + capacity.APP_MAX_SURGE
        peaks = (
            (f"{a.max_replicas} app pods (app.maxReplicas)", a.max_replicas),
            (
                f"a rolling update at maxReplicas runs {surge} app pods (maxReplicas "
                f"{a.max_replicas} + maxSurge {capacity.APP_MAX_SURGE}), which",
                surge,
            ),
        )
        held = capacity.fit(smallest, c.max_nodes, a.cpu, a.memory)
        return [
            self._capacity_problem(smallest, held, what, pods)
            for what, pods in peaks
            if held.app_pods < pods
        ]

    def _capacity_problem(
        self, smallest: catalogues.InstanceType, held: capacity.Fit, what: str, pods: int
    ) -> Problem:
        c, a = self.cluster, self.app
        most = ClusterConfig.high("max_nodes")
        need = capacity.nodes_needed(smallest, pods, a.cpu, a.memory, most)
        fewer = held.app_pods - (pods - a.max_replicas)
        return Problem(
            c.key("maxNodes"),
            f"{what} of {a.cpu} CPU and {a.memory} do not fit in maxNodes {c.max_nodes} x "
            f"{smallest.name}: they hold {held.app_pods} beside the system pods "
            f"({held.per_node} a node; {held.limit} runs out first); change "
            + (f"cluster.maxNodes to {need} or more, or " if need <= most else "")
            + (f"app.maxReplicas to {fewer} or fewer" if fewer >= 1 else "app.cpu")
            + " (or app.cpu/app.memory, or a larger cluster.instanceTypes)",
        )

    def _registry_problems(self) -> list[Problem]:
        keep = self.registry.keep_images
        if not self.cluster.enabled or keep >= KEEP_WITH_CLUSTER:
            return []
        return [
            Problem(
                self.registry.key("keepImages"),
                f"{keep} would expire images the Deployment can still roll back to (the running "
                f"one plus a revision history of {capacity.APP_REVISION_HISTORY_LIMIT}); allowed: "
                f"{KEEP_WITH_CLUSTER} to {RegistryConfig.high('keep_images')}",
            )
        ]

    def _tls_problems(self) -> list[Problem]:
        """The certificate in the stack's region; HTTPS in production unless waived."""
        lb, out = self.loadbalancer, list[Problem]()
        if not lb.enabled:
            return out
        where = lb.certificate_region
        if where and self.region and where != self.region:
            out.append(
                Problem(
                    lb.key("certificateArn"),
                    f"the certificate is in {where}, the load balancer in {self.region}; "
                    f"allowed: an ACM certificate in {self.region} (a load balancer can only use "
                    "certificates of its own region)",
                )
            )
        if self.production and not lb.tls and not lb.allow_plain_http:
            out.append(
                Problem(
                    lb.key("certificateArn"),
                    "missing: a production stack (backbone:tier: production) would serve the "
                    "app and its write token over plain HTTP; allowed: certificateArn (an ACM "
                    f"certificate in {self.region}), domainName (a domain with an issued ACM "
                    "certificate), or allowPlainHttp: true to accept plain HTTP",
                )
            )
        return out

    def _naming_problems(self) -> list[Problem]:
        """What AWS would refuse in a name the kit derives from the stack's (or its region)."""
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
        if not self.functions.enabled:
            return out
        longest = max(FUNCTION_NAMES, key=len)
        name = f"{NAMESPACE}-{self.stack}-{longest}"
        if len(name) > LAMBDA_NAME_MAX:
            out.append(
                Problem(
                    "stack name",
                    f"{self.stack!r} makes the function name {name!r} ({len(name)} characters); "
                    "allowed: a stack name of at most "
                    f"{LAMBDA_NAME_MAX - len(NAMESPACE) - len(longest) - 2} characters (Lambda "
                    f"names are at most {LAMBDA_NAME_MAX})",
                )
            )
        return out

    def _functions_needs(self) -> list[Problem]:
        if not self.functions.enabled:
            return []
        out = self._housekeeping_window_problems()
        f = self.functions
        out += self._needs(
            "loadbalancer",
            self.loadbalancer.enabled or self.host.enabled,
            "functions",
            "the canary probes the app through it",
            other=f" (or {NAMESPACE}:host.enabled: true)",
        )
        out += self._needs(
            "database",
            self.database.enabled or not f.housekeeping,
            "functions",
            "the housekeeping job works on its data",
        )
        if f.housekeeping and self.network.nat == "none":
            out.append(
                Problem(
                    _k("network", "nat"),
                    "'none' leaves the housekeeping job (in the private subnets) with no route "
                    "to Secrets Manager and CloudWatch; allowed: single or per-az when "
                    "functions.enabled is true, or functions.housekeeping: false (the canary "
                    "only)",
                )
            )
        return out

    def _housekeeping_window_problems(self) -> list[Problem]:
        """The job's run (its start to its timeout) may not meet the database's backup or
        maintenance window: it would purge while RDS snapshots or patches."""
        f, d = self.functions, self.database
        if not d.enabled or not f.housekeeping:
            return []
        key, runs = f.key("housekeepingSchedule"), f.housekeeping_runs.runs
        if runs is None:
            if f.housekeeping_runs.problem is not None:
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
        backup, maintenance = daily_window(d.backup_window), weekly_window(d.maintenance_window)
        length = f.housekeeping_minutes
        for start, _ in runs:
            run = (start, start + length)
            if overlaps_daily_daily(run, backup):
                hit = f"the backup window {d.backup_window}"
            elif overlaps_daily_weekly(run, maintenance):
                hit = f"the maintenance window {d.maintenance_window}"
            else:
                continue
            return [
                Problem(
                    key,
                    f"{f.housekeeping_schedule!r} runs {start // 60:02d}:{start % 60:02d}-"
                    f"+{length} min (its timeout), inside {hit} (UTC); allowed: a time outside "
                    "both database windows, or move the windows (database.backupWindow, "
                    "database.maintenanceWindow)",
                )
            ]
        return []

    def _alerting_problems(self) -> list[Problem]:
        """Billing metrics exist in us-east-1 only; a production topic needs a subscriber."""
        m, out = self.monitoring, list[Problem]()
        if not m.enabled:
            return out
        if m.billing_alarm_usd is not None and self.region != "us-east-1":
            out.append(
                Problem(
                    m.key("billingAlarmUsd"),
                    f"set, but AWS publishes billing metrics only in us-east-1 and this stack "
                    f"runs in {self.region}; allowed: leave it out here",
                )
            )
        if self.production and not m.subscribed():
            out.append(
                Problem(
                    m.key("alertEmail"),
                    "missing: a production stack's alerts topic needs a subscriber, or every "
                    "alarm publishes to no one; allowed: alertEmail (an address AWS mails a "
                    "confirmation link to), alertHttpsUrl (https://..., an endpoint that "
                    "confirms the subscription), or alertsRoutedElsewhere: a sentence saying "
                    "which subscriber outside this program reads the topic",
                )
            )
        return out

    def _observability_needs(self) -> list[Problem]:
        o = self.observability
        if not o.enabled:
            return []
        return [
            Problem(
                o.key("enabled"),
                f"true needs {NAMESPACE}:{what}.enabled: true (the collector scrapes the "
                "cluster's pods; alerts go to the monitoring topic); allowed: false, or enable "
                f"{what}",
            )
            for what, section in (("cluster", self.cluster), ("monitoring", self.monitoring))
            if not section.enabled
        ]

    def _host_needs(self) -> list[Problem]:
        h = self.host
        if not h.enabled:
            return []
        out = list[Problem]()
        if self.cluster.enabled:
            out.append(
                Problem(
                    h.key("enabled"),
                    "true together with cluster.enabled: the app runs on the host or on the "
                    f"cluster, not both; allowed: one of {h.key('enabled')} and "
                    f"{self.cluster.key('enabled')}",
                )
            )
        out += self._needs(
            "database", self.database.enabled, "host", "the app the host runs needs its database"
        )
        if self.database.manage_password:
            out.append(
                Problem(
                    self.database.key("managePassword"),
                    "true keeps the master password in Secrets Manager, which the host does not "
                    "read (the containers' environment comes from one Parameter Store "
                    "SecureString); allowed: false while host.enabled is true",
                )
            )
        return out

    def _free_tier_problems(self) -> list[Problem]:
        """A stack that claims a free tier (`freeTier`) holds only what that tier covers."""
        if self.free_tier == "none":
            return []
        why = f"the stack claims the free tier ({NAMESPACE}:freeTier: {self.free_tier})"
        out = self._free_host_problems(why) + self._free_database_problems(why)
        keep = self.registry.keep_images
        if (self.host.enabled or self.cluster.enabled) and keep * APP_IMAGE_MB > FREE_TIER_ECR_MB:
            out.append(
                Problem(
                    self.registry.key("keepImages"),
                    f"{keep} images of about {APP_IMAGE_MB} MB pass the free tier's "
                    f"{FREE_TIER_ECR_MB} MB of ECR storage and {why}; allowed: "
                    f"{RegistryConfig.low('keep_images')} to {FREE_TIER_ECR_MB // APP_IMAGE_MB}",
                )
            )
        return out

    def _free_host_problems(self, why: str) -> list[Problem]:
        h, out = self.host, list[Problem]()
        if not h.enabled:
            return out
        if h.instance_type not in FREE_TIER_HOST_TYPES:
            out.append(
                Problem(
                    h.key("instanceType"),
                    f"{h.instance_type!r} is outside the free tier and {why}; allowed: "
                    f"{', '.join(FREE_TIER_HOST_TYPES)} (t2.micro where the region has no t3)",
                )
            )
        if h.root_volume_gb > FREE_TIER_EBS_GB:
            out.append(
                Problem(
                    h.key("rootVolumeGb"),
                    f"{h.root_volume_gb} GiB is more than the free tier's {FREE_TIER_EBS_GB} GB "
                    f"of EBS and {why}; allowed: {HostConfig.low('root_volume_gb')} to "
                    f"{FREE_TIER_EBS_GB}",
                )
            )
        return out

    def _free_database_problems(self, why: str) -> list[Problem]:
        d = self.database
        if not d.enabled:
            return []
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
        return [
            Problem(d.key(field), f"{what} and {why}; allowed: {allowed}")
            for field, bad, what, allowed in checks
            if bad
        ]

    def _docker_problems(self) -> list[Problem]:
        """target docker: AWS pieces have no meaning."""
        return [
            Problem(
                f"{NAMESPACE}:{what}.enabled",
                "true has no meaning when target is docker (it is an AWS piece); allowed: false, "
                f"or {NAMESPACE}:target: aws",
            )
            for what in AWS_PIECES
            if getattr(self, what).enabled
        ] + (
            [
                Problem(
                    self.observability.key("managedGrafana"),
                    "true has no meaning when target is docker (the local stack runs its own "
                    f"Grafana, on local.grafanaPort); allowed: false, or {NAMESPACE}:target: aws",
                )
            ]
            if self.observability.managed_grafana
            else []
        )
