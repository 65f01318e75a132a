"""Price a Plan per month: what a stack would cost on AWS, before anything is deployed.

    from backbone.cost import estimate
    est = estimate(plan, free_tier="12-month")          # or None: the stack's backbone:freeTier
    est.total_usd, est.lines, est.unpriced, est.components()

Prices are data (backbone/data/prices.yaml: a source and a date per figure, per region); usage a
price depends on (NAT data, load balancer capacity, invocations, log volume...) comes from
backbone/data/usage.yaml, which ``usage=Path`` overrides key by key. What the Plan states always
wins: instance types and counts, sizes, schedules, retention, memory.

- Hourly resources are priced by their hours (a month is 730), storage by its size, every public
  IPv4 address by its hours (Elastic IPs, one per zone for an internet-facing ALB, instances with
  a public address), request- and usage-priced resources from the usage assumptions.
- Free tier is applied once per account, across the whole stack: always-free allowances in every
  mode; the 12-month offers with ``12-month``; with ``free-plan``, the monthly cost is charged
  against the Free plan's credits and the estimate says how many months they last.
- A resource the table cannot price is listed in ``unpriced`` with the reason: never a silent zero.
  Resources that cost nothing by themselves (VPCs, subnets, IAM, security groups...) are listed in
  ``free`` with the reason.

Errors the user can fix (a region with no prices, a bad usage file, an unknown free-tier mode)
raise CostError.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from backbone import yamlio
from backbone.plan import STACK_TYPE, Plan, Resource

if TYPE_CHECKING:
    from rich.table import Table

DATA = Path(__file__).resolve().parent / "data"
PRICES_FILE = DATA / "prices.yaml"
USAGE_FILE = DATA / "usage.yaml"
FREE_TIERS = ("12-month", "free-plan", "none")

# Usage maps keyed by Pulumi resource name: any key is allowed under these.
_OPEN_USAGE_MAPS = {"lambda.duration_ms", "lambda.custom_metrics"}


class CostError(Exception):
    """Input the estimate cannot use: unknown region, bad usage file, unknown free-tier mode."""


# --------------------------------------------------------------------------------------------
# The price table


@dataclass(frozen=True)
class Price:
    item: str
    usd: float
    per: str
    source: str
    date: str

    @property
    def divisor(self) -> float:
        """How many base units the price is for: "1M requests" -> 1e6, "10k requests" -> 1e4."""
        m = re.match(r"^(\d+)([kM]?)\s", self.per)
        if not m:
            return 1.0
        return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6}[m.group(2)]

    @property
    def unit(self) -> str:
        """The base unit a line counts: "requests" for "1M requests", "hours" for "hour"."""
        m = re.match(r"^\d+[kM]?\s+(.*)$", self.per)
        if m:
            return m.group(1)
        return {"hour": "hours", "GB": "GB", "LCU-hour": "LCU-hours"}.get(self.per, self.per)

    def to_json(self) -> dict[str, Any]:
        return {"usd": self.usd, "per": self.per, "source": self.source, "date": self.date}


@dataclass(frozen=True)
class Allowance:
    what: str
    offer: str  # "always" or "12-month"
    items: tuple[str, ...]
    quantity: float
    unit: str
    eligible_only: bool
    source: str
    date: str


@dataclass
class PriceTable:
    hours_per_month: float
    regions: dict[str, dict[str, Price]]
    eks_standard_support_end: dict[str, str]
    allowances: list[Allowance]
    free_plan: dict[str, Any]

    @classmethod
    def load(cls, path: Path = PRICES_FILE) -> PriceTable:
        data = yamlio.load_file(path)
        regions = {
            region: {
                item: Price(item, float(p["usd"]), str(p["per"]), str(p["source"]), str(p["date"]))
                for item, p in (items or {}).items()
            }
            for region, items in data["regions"].items()
        }
        free = data.get("free_tier") or {}
        allowances = [
            Allowance(
                what=str(a["what"]),
                offer=offer,
                items=tuple(a["items"]),
                quantity=float(a["quantity"]),
                unit=str(a["unit"]),
                eligible_only=bool(a.get("eligible_only", False)),
                source=str(a["source"]),
                date=str(a["date"]),
            )
            for offer in ("always", "12-month")
            for a in free.get(offer) or []
        ]
        return cls(
            hours_per_month=float(data["hours_per_month"]),
            regions=regions,
            eks_standard_support_end={
                str(k): str(v) for k, v in (data.get("eks_standard_support_end") or {}).items()
            },
            allowances=allowances,
            free_plan=dict(free.get("free-plan") or {}),
        )

    def region(self, name: str) -> dict[str, Price]:
        if name not in self.regions:
            raise CostError(
                f"no prices for region {name!r} in {PRICES_FILE.name}; allowed: "
                f"{', '.join(sorted(self.regions))} (add the region's prices, each with its "
                "source and date, to price it)"
            )
        return self.regions[name]


# --------------------------------------------------------------------------------------------
# Usage assumptions


def _merge_usage(base: dict[str, Any], override: Any, source: str, path: str = "") -> None:
    if not isinstance(override, dict):
        where = path or "the file"
        raise CostError(f"{source}: {where} must be a mapping of usage keys")
    for key, value in override.items():
        key = str(key)
        full = f"{path}.{key}" if path else key
        if path in _OPEN_USAGE_MAPS:
            if not _is_number(value) or value < 0:
                raise CostError(f"{source}: {full} is {value!r}; allowed: a number >= 0")
            base[key] = float(value)
            continue
        if key not in base:
            raise CostError(
                f"{source}: unknown usage key {full!r}; allowed: "
                + ", ".join(f"{path + '.' if path else ''}{k}" for k in sorted(base))
            )
        current = base[key]
        if isinstance(current, dict):
            _merge_usage(current, value, source, full)
        elif isinstance(current, str):
            if not isinstance(value, str) or not value:
                raise CostError(
                    f"{source}: {full} is {value!r}; allowed: a text such as {current!r}"
                )
            base[key] = value
        else:
            if not _is_number(value) or value < 0:
                raise CostError(f"{source}: {full} is {value!r}; allowed: a number >= 0")
            base[key] = float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_usage(path: Path | None = None) -> dict[str, Any]:
    """The default usage assumptions, with the keys of ``path`` (a YAML file) replacing them."""
    usage: dict[str, Any] = yamlio.load_file(USAGE_FILE)
    if path is None:
        return usage
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CostError(f"{path}: cannot read the usage file ({exc.strerror})") from None
    try:
        override = yamlio.safe_load(text)
    except yaml.YAMLError as exc:
        raise CostError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    _merge_usage(usage, override or {}, str(path))
    return usage


# --------------------------------------------------------------------------------------------
# The estimate


@dataclass
class Line:
    """One priced quantity of one resource: 730 hours of an instance, 20 GB of storage..."""

    component: str
    resource: str
    type: str
    description: str
    quantity: float  # in price.unit
    price: Price
    eligible: bool = True  # may an `eligible_only` allowance cover it (Single-AZ, standard...)
    free_quantity: float = 0.0
    free_by: list[str] = field(default_factory=list)

    @property
    def item(self) -> str:
        return self.price.item

    @property
    def unit(self) -> str:
        return self.price.unit

    @property
    def gross_usd(self) -> float:
        return self.quantity / self.price.divisor * self.price.usd

    @property
    def free_usd(self) -> float:
        return self.free_quantity / self.price.divisor * self.price.usd

    @property
    def usd(self) -> float:
        return self.gross_usd - self.free_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "resource": self.resource,
            "type": self.type,
            "item": self.item,
            "description": self.description,
            "quantity": _round(self.quantity),
            "unit": self.unit,
            "price": self.price.to_json(),
            "grossUsd": _round(self.gross_usd),
            "freeQuantity": _round(self.free_quantity),
            "freeBy": self.free_by,
            "freeUsd": _round(self.free_usd),
            "usd": _round(self.usd),
        }


@dataclass
class Unpriced:
    component: str
    resource: str
    type: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "resource": self.resource,
            "type": self.type,
            "reason": self.reason,
        }


@dataclass
class Free:
    """A resource with no charge of its own, and why."""

    component: str
    resource: str
    type: str
    reason: str


@dataclass
class AllowanceUse:
    what: str
    offer: str
    quantity: float
    used: float
    unit: str
    usd: float
    source: str
    date: str

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "offer": self.offer,
            "quantity": self.quantity,
            "used": _round(self.used),
            "unit": self.unit,
            "usd": _round(self.usd),
            "source": self.source,
            "date": self.date,
        }


@dataclass
class Credits:
    """The Free plan: credits charged with the monthly cost, for at most `plan_months`."""

    credits_usd: float
    plan_months: float
    monthly_usd: float

    @property
    def months(self) -> float:
        """How many months the credits last at this monthly cost (at most the plan's length)."""
        if self.monthly_usd <= 0:
            return self.plan_months
        return min(self.plan_months, self.credits_usd / self.monthly_usd)

    @property
    def note(self) -> str:
        if self.monthly_usd <= 0:
            return (
                f"Free plan: nothing is charged against the ${self.credits_usd:.0f} of credits; "
                f"the plan closes after {self.plan_months:g} months (upgrade the account to keep it)"
            )
        if self.months >= self.plan_months:
            return (
                f"Free plan: ${self.credits_usd:.0f} of credits cover ${self.monthly_usd:.2f} a month "
                f"for the plan's whole {self.plan_months:g} months "
                f"(${self.monthly_usd * self.plan_months:.2f} used); the plan closes then"
            )
        return (
            f"Free plan: ${self.credits_usd:.0f} of credits last {self.months:.1f} months at "
            f"${self.monthly_usd:.2f} a month; after that the account pays (or the plan closes "
            f"after {self.plan_months:g} months)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "creditsUsd": self.credits_usd,
            "planMonths": self.plan_months,
            "monthlyUsd": _round(self.monthly_usd),
            "months": _round(self.months),
            "note": self.note,
        }


@dataclass
class Estimate:
    stack: str
    region: str | None
    free_tier: str
    lines: list[Line]
    unpriced: list[Unpriced]
    free: list[Free]
    allowances: list[AllowanceUse]
    credits: Credits | None = None
    notes: list[str] = field(default_factory=list)
    budget: float | None = None
    hours_per_month: float = 730.0

    @property
    def total_usd(self) -> float:
        """The monthly cost in USD, free tier applied, rounded to cents."""
        return round(sum(line.usd for line in self.lines) + 1e-9, 2)

    @property
    def gross_usd(self) -> float:
        """The monthly cost before any free tier, rounded to cents."""
        return round(sum(line.gross_usd for line in self.lines) + 1e-9, 2)

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.total_usd > self.budget

    def components(self) -> dict[str, float]:
        """Monthly USD per component, in the order the Plan holds them."""
        out: dict[str, float] = {}
        for line in self.lines:
            out[line.component] = out.get(line.component, 0.0) + line.usd
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "region": self.region,
            "freeTier": self.free_tier,
            "currency": "USD",
            "hoursPerMonth": self.hours_per_month,
            "totalUsd": self.total_usd,
            "grossUsd": self.gross_usd,
            "budget": self.budget,
            "overBudget": self.over_budget,
            "components": {k: _round(v) for k, v in self.components().items()},
            "lines": [line.to_json() for line in self.lines],
            "unpriced": [u.to_json() for u in self.unpriced],
            "allowances": [a.to_json() for a in self.allowances],
            "credits": self.credits.to_json() if self.credits else None,
            "notes": self.notes,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def _round(value: float) -> float:
    return round(value, 6)


# --------------------------------------------------------------------------------------------
# Resources with no charge of their own

_FREE_AWS = {
    "aws:ec2/vpc:Vpc": "VPCs have no charge",
    "aws:ec2/subnet:Subnet": "subnets have no charge",
    "aws:ec2/routeTable:RouteTable": "route tables have no charge",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "no charge",
    "aws:ec2/route:Route": "no charge",
    "aws:ec2/mainRouteTableAssociation:MainRouteTableAssociation": "no charge",
    "aws:ec2/internetGateway:InternetGateway": "internet gateways have no charge (addresses "
    "and NAT gateways are priced where they are)",
    "aws:ec2/securityGroup:SecurityGroup": "security groups have no charge",
    "aws:ec2/securityGroupRule:SecurityGroupRule": "no charge",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "no charge",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "no charge",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "no charge",
    "aws:ec2/keyPair:KeyPair": "no charge",
    "aws:ec2/launchTemplate:LaunchTemplate": "no charge itself: its instances are priced on "
    "the group that launches them",
    "aws:ec2/launchConfiguration:LaunchConfiguration": "no charge itself: its instances are "
    "priced on the group that launches them",
    "aws:ec2/eipAssociation:EipAssociation": "no charge (the address is priced on the EIP)",
    "aws:ec2/flowLog:FlowLog": "no charge itself: the logs it delivers are priced on the log group",
    "aws:iam/role:Role": "IAM has no charge",
    "aws:iam/rolePolicy:RolePolicy": "IAM has no charge",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "IAM has no charge",
    "aws:iam/policy:Policy": "IAM has no charge",
    "aws:iam/instanceProfile:InstanceProfile": "IAM has no charge",
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": "IAM has no charge",
    "aws:iam/serviceLinkedRole:ServiceLinkedRole": "IAM has no charge",
    "aws:eks/addon:Addon": "EKS add-ons have no charge (they run on the nodes)",
    "aws:eks/accessEntry:AccessEntry": "no charge",
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": "no charge",
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": "no charge",
    "aws:autoscaling/attachment:Attachment": "no charge",
    "aws:lb/listener:Listener": "no charge itself: the load balancer is priced",
    "aws:lb/listenerRule:ListenerRule": "no charge itself: rule evaluations are part of LCUs",
    "aws:lb/targetGroup:TargetGroup": "no charge itself: the load balancer is priced",
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": "no charge",
    "aws:rds/subnetGroup:SubnetGroup": "no charge",
    "aws:rds/parameterGroup:ParameterGroup": "no charge",
    "aws:kms/alias:Alias": "no charge (the key is priced)",
    "aws:s3/bucketPolicy:BucketPolicy": "no charge (the bucket is priced)",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "no charge",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "no charge",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "no charge (SSE-S3)"
    ),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "no charge",
    "aws:s3/bucketVersioning:BucketVersioning": "no charge itself (old versions are storage)",
    "aws:lambda/permission:Permission": "no charge",
    "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig": "no charge",
    "aws:cloudwatch/eventRule:EventRule": "scheduled rules and AWS service events on the "
    "default bus have no charge (wring.co and cloudburn.io EventBridge pricing, 2026); the "
    "invocations are priced on the function",
    "aws:cloudwatch/eventTarget:EventTarget": "no charge",
    "aws:sns/topicSubscription:TopicSubscription": "no charge (deliveries are within the "
    "always-free allowances at this volume)",
    "aws:sns/topicPolicy:TopicPolicy": "no charge",
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": "no charge (it limits the priced storage)",
    "aws:ecr/repositoryPolicy:RepositoryPolicy": "no charge",
    "aws:secretsmanager/secretVersion:SecretVersion": "no charge (the secret is priced)",
    "aws:secretsmanager/secretRotation:SecretRotation": "no charge (its function's invocations "
    "are priced on the function, its API calls on the secret)",
    "aws:wafv2/webAclAssociation:WebAclAssociation": "no charge (the web ACL is priced)",
    "aws:budgets/budget:Budget": "the first two action-less budgets have no charge",
    "aws:amp/ruleGroupNamespace:RuleGroupNamespace": "no charge itself: rule evaluation is "
    "billed as the workspace's query samples",
    "aws:amp/alertManagerDefinition:AlertManagerDefinition": "no charge (notifications are "
    "SNS publishes, priced on the topic)",
}

_FREE_PACKAGES = {
    "random": "made by Pulumi, no cloud resource",
    "tls": "made by Pulumi, no cloud resource",
    "command": "runs a command, no cloud resource",
    "pulumi": "no cloud resource",
    "docker": "runs on your own Docker engine (an image pushed to ECR is priced on the repository)",
    "kubernetes": "runs on the cluster's nodes, which are priced",
}


# --------------------------------------------------------------------------------------------
# Pricing each resource


class _Context:
    def __init__(self, plan: Plan, table: PriceTable, usage: dict[str, Any]) -> None:
        self.plan = plan
        self.table = table
        self.usage = usage
        self.hours = table.hours_per_month
        self.by_urn = {r.urn: r for r in plan.resources}
        self.by_id = {r.id: r for r in plan.resources if r.id}
        self.root = plan.root()
        self.lines: list[Line] = []
        self.unpriced: list[Unpriced] = []
        self.free: list[Free] = []
        self.notes: list[str] = []
        self.regions_seen: list[str] = []

    # -- where a resource sits ---------------------------------------------------------------
    def component(self, r: Resource) -> str:
        node = r
        while node.parent and node.parent != self.root and f"::{STACK_TYPE}::" not in node.parent:
            parent = self.by_urn.get(node.parent)
            if parent is None:
                return node.parent.rsplit("::", 1)[-1]
            node = parent
        return node.name if node is not r else "(stack)"

    def region_of(self, r: Resource) -> str:
        provider = self.by_urn.get(r.provider or "")
        region = (provider.inputs.get("region") if provider else None) or self.plan.settings.get(
            "region"
        )
        if not region:
            raise CostError(
                f"the Plan of stack {self.plan.stack!r} does not say its AWS region (no region on "
                f"the provider of {r.name} and no `region` setting); allowed: a Plan made by "
                "`backbone.synth` or one whose settings hold the region"
            )
        if region not in self.regions_seen:
            self.regions_seen.append(str(region))
        return str(region)

    def prices(self, r: Resource) -> dict[str, Price]:
        return self.table.region(self.region_of(r))

    def ref(self, value: Any) -> Resource | None:
        """The resource an input refers to: by URN or by (mocked) id."""
        if not isinstance(value, str):
            return None
        return self.by_urn.get(value) or self.by_id.get(value)

    def deps_of_type(self, r: Resource, type_token: str) -> list[Resource]:
        return [d for urn in r.dependencies if (d := self.by_urn.get(urn)) and d.type == type_token]

    # -- recording -----------------------------------------------------------------------------
    def line(
        self,
        r: Resource,
        item: str,
        quantity: float,
        description: str,
        *,
        eligible: bool = True,
        missing: str | None = None,
    ) -> None:
        prices = self.prices(r)
        price = prices.get(item)
        if price is None:
            self.unpriced.append(
                Unpriced(
                    self.component(r),
                    r.name,
                    r.type,
                    missing or f"{description}: no price for {item!r} in {PRICES_FILE.name}",
                )
            )
            return
        self.lines.append(
            Line(self.component(r), r.name, r.type, description, quantity, price, eligible)
        )

    def cannot(self, r: Resource, reason: str) -> None:
        self.unpriced.append(Unpriced(self.component(r), r.name, r.type, reason))

    def no_charge(self, r: Resource, reason: str) -> None:
        self.free.append(Free(self.component(r), r.name, r.type, reason))

    def use(self, *path: str) -> Any:
        value: Any = self.usage
        for key in path:
            value = value[key]
        return value

    def by_name(self, path: tuple[str, ...], name: str) -> float:
        table = self.use(*path)
        return float(table.get(name, table["default"]))


def _num(value: Any, default: float | None = None) -> float | None:
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return default
    return default


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _storage(
    ctx: _Context, r: Resource, gb: float, volume_type: str, what: str, count: float = 1
) -> None:
    ctx.line(
        r,
        f"ebs/{volume_type}",
        gb * count,
        f"{what}: {count:g} x {gb:g} GB {volume_type}"
        if count != 1
        else f"{what}: {gb:g} GB {volume_type}",
    )


def _instance_hours(ctx: _Context, r: Resource, itype: str | None, count: float, what: str) -> None:
    if not itype:
        ctx.cannot(r, f"{what}: no instance type in the Plan")
        return
    ctx.line(
        r,
        f"ec2/{itype}",
        count * ctx.hours,
        f"{what}: {count:g} x {itype}, {ctx.hours:g} h",
        missing=f"{what}: no price for EC2 {itype} in {PRICES_FILE.name}",
    )


def _ipv4(ctx: _Context, r: Resource, count: float, what: str) -> None:
    if count > 0:
        ctx.line(r, "ipv4/hour", count * ctx.hours, f"public IPv4: {what}")


def _subnets_map_public_ip(ctx: _Context, subnet_ids: Iterable[Any]) -> bool:
    for sid in subnet_ids:
        subnet = ctx.ref(sid)
        if subnet is not None and _truthy(subnet.inputs.get("mapPublicIpOnLaunch")):
            return True
    return False


def _has_eip(ctx: _Context, r: Resource) -> bool:
    for other in ctx.plan.managed():
        if other.type == "aws:ec2/eip:Eip" and ctx.ref(other.inputs.get("instance")) is r:
            return True
        if other.type == "aws:ec2/eipAssociation:EipAssociation" and (
            ctx.ref(other.inputs.get("instanceId")) is r
        ):
            return True
    return False


def _ec2_instance(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    _instance_hours(ctx, r, i.get("instanceType"), 1, "instance")
    root = i.get("rootBlockDevice") or {}
    size = _num(root.get("volumeSize")) or float(ctx.use("ec2", "root_volume_gb"))
    vtype = root.get("volumeType") or ctx.use("ec2", "root_volume_type")
    _storage(ctx, r, size, vtype, "root volume")
    for dev in i.get("ebsBlockDevices") or []:
        _storage(
            ctx,
            r,
            _num(dev.get("volumeSize"), 8) or 8,
            dev.get("volumeType") or "gp2",
            f"volume {dev.get('deviceName', '')}".strip(),
        )
    public = i.get("associatePublicIpAddress")
    if public is None:
        has_public = _subnets_map_public_ip(ctx, [i.get("subnetId")])
    else:
        has_public = _truthy(public)
    if has_public and not _has_eip(ctx, r):
        _ipv4(ctx, r, 1, "the instance's public address")


def _ebs_volume(ctx: _Context, r: Resource) -> None:
    size = _num(r.inputs.get("size"))
    if size is None:
        ctx.cannot(r, "volume size not in the Plan (from a snapshot?)")
        return
    _storage(ctx, r, size, r.inputs.get("type") or "gp2", "volume")


def _eip(ctx: _Context, r: Resource) -> None:
    held = [
        nat.name
        for nat in ctx.plan.of_type("aws:ec2/natGateway:NatGateway")
        if ctx.ref(nat.inputs.get("allocationId")) is r or r.urn in nat.dependencies
    ]
    _ipv4(ctx, r, 1, "Elastic IP" + (f", held by NAT gateway {held[0]}" if held else ""))


def _nat_gateway(ctx: _Context, r: Resource) -> None:
    ctx.line(r, "nat/hour", ctx.hours, f"NAT gateway, {ctx.hours:g} h")
    gb = float(ctx.use("nat_gateway", "gb_processed_per_month"))
    ctx.line(r, "nat/data", gb, f"data processed: {gb:g} GB (usage)")
    if (
        r.inputs.get("connectivityType", "public") == "public"
        and not r.inputs.get("allocationId")
        and not ctx.deps_of_type(r, "aws:ec2/eip:Eip")
    ):
        ctx.notes.append(
            f"{r.name}: a public NAT gateway with no Elastic IP in the Plan; its address is "
            "not counted"
        )


def _load_balancer(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    kind = i.get("loadBalancerType", "application")
    if kind != "application":
        ctx.cannot(r, f"a {kind} load balancer: only application load balancers are in the table")
        return
    ctx.line(r, "alb/hour", ctx.hours, f"Application Load Balancer, {ctx.hours:g} h")
    lcu = float(ctx.use("load_balancer", "lcu_per_hour"))
    ctx.line(r, "alb/lcu", lcu * ctx.hours, f"capacity: {lcu:g} LCU x {ctx.hours:g} h (usage)")
    if not _truthy(i.get("internal")):
        zones = len(i.get("subnets") or []) or len(i.get("subnetMappings") or [])
        if zones == 0:
            ctx.cannot(r, "internet-facing, but its subnets (one public IPv4 per zone) are unknown")
        else:
            _ipv4(ctx, r, zones, f"internet-facing, one per zone ({zones} zones)")


def _eks_cluster(ctx: _Context, r: Resource) -> None:
    version = str(r.inputs.get("version") or "")
    support = (r.inputs.get("upgradePolicy") or {}).get("supportType", "EXTENDED")
    ended = ctx.table.eks_standard_support_end.get(version)
    if ended and support != "STANDARD":
        ctx.line(
            r,
            "eks/cluster-extended-support",
            ctx.hours,
            f"EKS control plane {version} in extended support (standard support ended {ended})",
        )
        return
    ctx.line(r, "eks/cluster", ctx.hours, f"EKS control plane{' ' + version if version else ''}")
    if support != "STANDARD":
        ctx.notes.append(
            f"{r.name}: upgrade policy {support}: once Kubernetes {version or '(unset)'} leaves "
            "standard support the control plane bills the extended-support rate ($0.60/h); "
            "upgradePolicy.supportType STANDARD upgrades it instead"
        )


def _launch_template_of(ctx: _Context, r: Resource, spec: Any) -> Resource | None:
    if isinstance(spec, dict):
        lt = ctx.ref(spec.get("id"))
        if lt is not None:
            return lt
    found = ctx.deps_of_type(r, "aws:ec2/launchTemplate:LaunchTemplate")
    return found[0] if len(found) == 1 else None


def _template_volumes(
    ctx: _Context, r: Resource, lt: Resource, count: float, default_gb: float, default_type: str
) -> None:
    mappings = lt.inputs.get("blockDeviceMappings") or []
    if not mappings:
        _storage(ctx, r, default_gb, default_type, "root volume (the AMI's, usage)", count)
    for m in mappings:
        ebs = m.get("ebs") or {}
        size = _num(ebs.get("volumeSize"))
        vtype = ebs.get("volumeType") or default_type
        what = f"volume {m.get('deviceName', '')}".strip()
        if size is None:
            _storage(ctx, r, default_gb, vtype, f"{what} (size from the AMI, usage)", count)
        else:
            _storage(ctx, r, size, vtype, what, count)


def _eks_node_group(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    scaling = i.get("scalingConfig") or {}
    count = _num(scaling.get("desiredSize")) or _num(scaling.get("minSize")) or 1.0
    if i.get("capacityType") == "SPOT":
        ctx.cannot(r, "Spot capacity: Spot prices move with demand; not in the table")
        return
    lt = _launch_template_of(ctx, r, i.get("launchTemplate"))
    types = i.get("instanceTypes") or []
    itype = types[0] if types else (lt.inputs.get("instanceType") if lt else None) or "t3.medium"
    _instance_hours(ctx, r, itype, count, "nodes (desired size)")
    disk_type = str(ctx.use("eks_node_group", "volume_type"))
    if lt is not None:
        _template_volumes(ctx, r, lt, count, float(ctx.use("eks_node_group", "disk_gb")), disk_type)
    else:
        size = _num(i.get("diskSize")) or float(ctx.use("eks_node_group", "disk_gb"))
        _storage(ctx, r, size, disk_type, "node disks", count)


def _autoscaling_group(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    count = _num(i.get("desiredCapacity"))
    if count is None:
        count = _num(i.get("minSize"), 0.0) or 0.0
    if i.get("mixedInstancesPolicy"):
        ctx.cannot(r, "a mixed instances policy: its instance mix is not priced")
        return
    lt = _launch_template_of(ctx, r, i.get("launchTemplate"))
    if lt is None:
        lc = ctx.ref(i.get("launchConfiguration"))
        if lc is None:
            ctx.cannot(r, "its launch template or configuration is not in the Plan")
            return
        _instance_hours(ctx, r, lc.inputs.get("instanceType"), count, "instances (desired)")
        root = lc.inputs.get("rootBlockDevice") or {}
        size = _num(root.get("volumeSize")) or float(ctx.use("ec2", "root_volume_gb"))
        vtype = root.get("volumeType") or ctx.use("ec2", "root_volume_type")
        _storage(ctx, r, size, vtype, "root volumes", count)
        if _truthy(lc.inputs.get("associatePublicIpAddress")):
            _ipv4(ctx, r, count, f"{count:g} instances with public addresses")
        return
    _instance_hours(ctx, r, lt.inputs.get("instanceType"), count, "instances (desired)")
    _template_volumes(
        ctx,
        r,
        lt,
        count,
        float(ctx.use("ec2", "root_volume_gb")),
        str(ctx.use("ec2", "root_volume_type")),
    )
    nics = lt.inputs.get("networkInterfaces") or []
    public = nics[0].get("associatePublicIpAddress") if nics else None
    if public is None:
        has_public = _subnets_map_public_ip(ctx, i.get("vpcZoneIdentifiers") or [])
    else:
        has_public = _truthy(public)
    if has_public:
        _ipv4(ctx, r, count, f"{count:g} instances with public addresses")


def _rds_instance(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    engine = str(i.get("engine") or "postgres")
    klass = str(i.get("instanceClass") or "")
    multi = _truthy(i.get("multiAz"))
    n = 2 if multi else 1
    deploy = "Multi-AZ (primary and standby)" if multi else "Single-AZ"
    ctx.line(
        r,
        f"rds/{engine}/{klass}",
        n * ctx.hours,
        f"{engine} {klass}, {deploy}: {n} x {ctx.hours:g} h",
        eligible=not multi,
        missing=f"instance hours: no price for RDS {engine} {klass} in {PRICES_FILE.name}",
    )
    gb = _num(i.get("allocatedStorage"))
    stype = str(i.get("storageType") or ("io1" if i.get("iops") else "gp2"))
    if gb is None:
        ctx.cannot(r, "storage: allocatedStorage is not in the Plan")
    else:
        ctx.line(
            r,
            f"rds-storage/{stype}",
            gb * n,
            f"storage: {gb:g} GB {stype}" + (" x 2 (standby)" if multi else ""),
            eligible=not multi,
        )
    # Exports go to /aws/rds/instance/<id>/<type>; a log group of the Plan made for one is priced
    # there (with its retention), the others here (RDS makes them never to expire).
    made = [
        str(g.inputs.get("name") or "")
        for g in ctx.plan.of_type("aws:cloudwatch/logGroup:LogGroup")
        if str(g.inputs.get("name") or "").startswith("/aws/rds/")
    ]
    exports = [e for e in i.get("enabledCloudwatchLogsExports") or [] if not _made_for(made, e)]
    if exports:
        per = float(ctx.use("cloudwatch_logs", "ingest_gb_per_month", "rds_export_per_log_type"))
        gb_in = per * len(exports)
        months = float(ctx.use("cloudwatch_logs", "never_expire_months"))
        ctx.line(r, "logs/ingest", gb_in, f"log exports ({', '.join(exports)}): {gb_in:g} GB")
        ctx.line(
            r,
            "logs/storage",
            gb_in * months,
            f"log exports kept (RDS log groups never expire): {months:g} months",
        )
    if i.get("engineLifecycleSupport") != "open-source-rds-extended-support-disabled":
        ctx.notes.append(
            f"{r.name}: RDS Extended Support is on (the default): once {engine} "
            f"{i.get('engineVersion', '')} reaches the end of standard support it bills per "
            "vCPU-hour on top (not priced here)"
        )


def _made_for(log_groups: list[str], export: str) -> bool:
    return any(name.endswith(f"/{export}") for name in log_groups)


def _schedule_per_month(expr: str, hours: float) -> float | None:
    """Invocations a month of an EventBridge schedule expression, or None if not understood."""
    m = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expr.strip())
    if m:
        n = int(m.group(1))
        per_hour = {"minute": 60, "hour": 1, "day": 1 / 24}[m.group(2).rstrip("s")]
        return hours * per_hour / n
    m = re.fullmatch(r"cron\((.+)\)", expr.strip())
    if not m:
        return None
    fields = m.group(1).split()
    if len(fields) != 6:
        return None
    minute, hour, dom, month, dow, _year = fields

    def count(f: str, size: int) -> float | None:
        if f in ("*", "?"):
            return float(size)
        if re.fullmatch(r"(\d+|\*)/\d+", f):
            return size / int(f.split("/")[1])
        if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", f):
            total = 0
            for part in f.split(","):
                lo, _, hi = part.partition("-")
                total += int(hi) - int(lo) + 1 if hi else 1
            return float(total)
        return None

    per_hour_count = count(minute, 60)
    hours_count = count(hour, 24)
    if per_hour_count is None or hours_count is None or month not in ("*", "?"):
        return None
    days = hours / 24
    if dom in ("*", "?") and dow in ("*", "?"):
        day_share = days
    elif dom in ("*", "?"):
        names = {"MON-FRI": 5, "SAT-SUN": 2}
        d = names.get(dow.upper()) or count(dow, 7)
        if d is None:
            return None
        day_share = days * d / 7
    else:
        d = count(dom, 31)
        if d is None:
            return None
        day_share = min(d, days)
    return per_hour_count * hours_count * day_share


def _lambda_requests(ctx: _Context, r: Resource) -> tuple[float, str]:
    fname = r.inputs.get("name") or r.name
    total = 0.0
    found: list[str] = []
    for target in ctx.plan.of_type("aws:cloudwatch/eventTarget:EventTarget"):
        arn = str(target.inputs.get("arn") or "")
        if not (arn.endswith(f":function:{fname}") or ctx.ref(arn) is r):
            continue
        rules = ctx.deps_of_type(target, "aws:cloudwatch/eventRule:EventRule")
        if not rules:
            rule_name = target.inputs.get("rule")
            rules = [
                x
                for x in ctx.plan.of_type("aws:cloudwatch/eventRule:EventRule")
                if rule_name in (x.inputs.get("name"), x.outputs.get("name"), x.id)
            ]
        for rule in rules:
            expr = rule.inputs.get("scheduleExpression")
            if not expr:
                continue
            n = _schedule_per_month(str(expr), ctx.hours)
            if n is None:
                ctx.notes.append(f"{rule.name}: schedule {expr!r} not understood; not counted")
                continue
            total += n
            found.append(str(expr))
    for rotation in ctx.plan.of_type("aws:secretsmanager/secretRotation:SecretRotation"):
        # a rotation function: Secrets Manager invokes it 4 times (its steps) per rotation
        arn = str(rotation.inputs.get("rotationLambdaArn") or "")
        every: dict[str, Any] = rotation.inputs.get("rotationRules") or {}
        days = every.get("automaticallyAfterDays") or _rotation_rate_days(
            str(every.get("scheduleExpression") or "")
        )
        if (arn.endswith(f":function:{fname}") or ctx.ref(arn) is r) and days:
            total += 4 * ctx.hours / 24 / float(days)
            found.append(f"4 steps every {days:g} days (Secrets Manager rotation)")
    if found:
        return total, f"on {', '.join(found)}"
    n = float(ctx.use("lambda", "unscheduled_requests_per_month"))
    return n, "no schedule in the Plan (usage)"


def _rotation_rate_days(expression: str) -> float | None:
    """Days between rotations of a Secrets Manager `rate(N day(s)|hour(s))` schedule, or None."""
    m = re.fullmatch(r"rate\((\d+) (day|days|hour|hours)\)", expression.strip())
    if m is None:
        return None
    n = float(m[1])
    return n if m[2].startswith("day") else n / 24


def _lambda_function(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    arch = (i.get("architectures") or ["x86_64"])[0]
    memory = _num(i.get("memorySize"), 128.0) or 128.0
    requests, why = _lambda_requests(ctx, r)
    ms = ctx.by_name(("lambda", "duration_ms"), r.name)
    ctx.line(r, "lambda/requests", requests, f"invocations: {requests:,.0f} ({why})")
    gb_s = requests * ms / 1000 * memory / 1024
    ctx.line(
        r,
        f"lambda/duration/{arch}",
        gb_s,
        f"compute: {memory:g} MB x {ms:g} ms (usage) x {requests:,.0f} = {gb_s:,.0f} GB-s {arch}",
    )
    metrics = ctx.by_name(("lambda", "custom_metrics"), r.name)
    if metrics:
        ctx.line(
            r, "cloudwatch/custom-metric", metrics, f"custom metrics it publishes: {metrics:g}"
        )


def _metric_alarm(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    queries = i.get("metricQueries") or []
    if queries:
        metrics = [q.get("metric") or {} for q in queries if q.get("metric") is not None]
        n = len(metrics)
        periods = [_num(m.get("period"), 60) or 60 for m in metrics]
    else:
        n = 1
        periods = [_num(i.get("period"), 60) or 60]
    if any(p < 60 for p in periods):
        ctx.line(
            r,
            "cloudwatch/alarm-metric-high-resolution",
            n,
            f"high-resolution alarm: {n} metric(s)",
            eligible=False,
        )
    else:
        ctx.line(r, "cloudwatch/alarm-metric", n, f"alarm: {n} metric(s)")


def _log_group(ctx: _Context, r: Resource) -> None:
    i = r.inputs
    name = str(i.get("name") or (r.outputs or {}).get("name") or "")
    ingest = ("cloudwatch_logs", "ingest_gb_per_month")
    if name.startswith("/aws/eks/"):
        cluster_name = name.split("/")[3] if name.count("/") >= 3 else ""
        types = 0
        for c in ctx.plan.of_type("aws:eks/cluster:Cluster"):
            if c.inputs.get("name") == cluster_name:
                types = len(c.inputs.get("enabledClusterLogTypes") or [])
        gb = types * float(ctx.use(*ingest, "eks_control_plane_per_log_type"))
        why = f"EKS control plane, {types} log type(s)"
    elif name.startswith("/aws/rds/"):
        gb = float(ctx.use(*ingest, "rds_export_per_log_type"))
        why = "a database log export"
    elif name.startswith("/aws/lambda/"):
        gb = float(ctx.use(*ingest, "lambda"))
        why = "a function's logs"
    elif any(
        r.urn in f.dependencies
        or (name and name in str(f.inputs.get("logDestination") or ""))
        or ctx.ref(f.inputs.get("logGroupName")) is r
        for f in ctx.plan.of_type("aws:ec2/flowLog:FlowLog")
    ):
        gb = float(ctx.use(*ingest, "vpc_flow_logs"))
        why = "VPC flow logs"
    else:
        gb = float(ctx.use(*ingest, "default"))
        why = "default"
    days = _num(i.get("retentionInDays"), 0.0) or 0.0
    months = days / 30 if days else float(ctx.use("cloudwatch_logs", "never_expire_months"))
    kept = f"{days:g} days" if days else "never expires"
    ctx.line(r, "logs/ingest", gb, f"ingested: {gb:g} GB ({why}, usage)")
    ctx.line(r, "logs/storage", gb * months, f"stored: {gb:g} GB x {months:.2f} months ({kept})")


def _ecr_repository(ctx: _Context, r: Resource) -> None:
    kept: float | None = None
    for policy in ctx.plan.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy"):
        if not (r.urn in policy.dependencies or ctx.ref(policy.inputs.get("repository")) is r):
            continue
        try:
            rules = json.loads(policy.inputs.get("policy") or "{}").get("rules") or []
        except (json.JSONDecodeError, AttributeError):
            rules = []
        counts = [
            float(rule["selection"]["countNumber"])
            for rule in rules
            if (rule.get("selection") or {}).get("countType") == "imageCountMoreThan"
        ]
        if counts:
            kept = sum(counts)
    image_gb = float(ctx.use("registry", "image_gb"))
    why = "lifecycle rule"
    if kept is None:
        kept = float(ctx.use("registry", "images_without_lifecycle_rule"))
        why = "no count rule: usage"
    ctx.line(
        r,
        "ecr/storage",
        kept * image_gb,
        f"images: {kept:g} kept ({why}) x {image_gb:g} GB (usage)",
    )


def _secret(ctx: _Context, r: Resource) -> None:
    ctx.line(r, "secretsmanager/secret", 1, "secret")
    n = float(ctx.use("secrets_manager", "api_requests_per_month"))
    ctx.line(r, "secretsmanager/api", n, f"API requests: {n:,.0f} (usage)")


def _web_acl(ctx: _Context, r: Resource) -> None:
    """A WAFv2 web ACL: the ACL, each rule (a managed rule group counts as one), the requests it
    inspects (usage)."""
    ctx.line(r, "waf/web-acl", 1, "web ACL")
    rules = len(r.inputs.get("rules") or [])
    ctx.line(r, "waf/rule", rules, f"rules: {rules} (managed rule groups count one each)")
    n = float(ctx.use("waf", "requests_per_month"))
    ctx.line(r, "waf/requests", n, f"requests inspected: {n:,.0f} (usage)")


def _kms_key(ctx: _Context, r: Resource) -> None:
    ctx.line(r, "kms/key", 1, "customer managed key")
    n = float(ctx.use("kms", "requests_per_month"))
    ctx.line(r, "kms/requests", n, f"requests: {n:,.0f} (usage)")


def _vpc_endpoint(ctx: _Context, r: Resource) -> None:
    kind = r.inputs.get("vpcEndpointType", "Gateway")
    if kind == "Gateway":
        ctx.no_charge(r, "gateway endpoints (S3, DynamoDB) have no charge")
        return
    if kind != "Interface":
        ctx.cannot(r, f"a {kind} endpoint: only interface endpoints are in the table")
        return
    zones = len(r.inputs.get("subnetIds") or []) or 1
    hours = zones * ctx.hours
    ctx.line(r, "vpc-endpoint/interface-zone-hour", hours, f"{zones} zone(s) x {ctx.hours:g} h")
    gb = float(ctx.use("vpc_endpoint", "gb_processed_per_month"))
    ctx.line(r, "vpc-endpoint/data", gb, f"data processed: {gb:g} GB (usage)")


def _prometheus_samples(ctx: _Context, scraper: Resource) -> float:
    """Samples a month the managed collector sends: the series of each scraped target (usage:
    prometheus.series_per_app_pod x the Deployment's replicas, plus kube-state-metrics' kept
    series) every scrape interval of the scraper's own configuration."""
    config = yaml.safe_load(str(scraper.inputs.get("scrapeConfiguration") or "{}")) or {}
    interval = str((config.get("global") or {}).get("scrape_interval", "60s"))
    seconds = float(interval.rstrip("s")) if interval.endswith("s") else 60.0
    pods = sum(
        int((d.inputs.get("spec") or {}).get("replicas") or 1)
        for d in ctx.plan.of_type("kubernetes:apps/v1:Deployment")
    )
    series = pods * float(ctx.use("prometheus", "series_per_app_pod"))
    if any(j.get("job_name") == "kube-state-metrics" for j in config.get("scrape_configs", [])):
        series += float(ctx.use("prometheus", "kube_state_metrics_series"))
    return series * ctx.hours * 3600 / seconds


def _amp_scraper(ctx: _Context, r: Resource) -> None:
    samples = _prometheus_samples(ctx, r)
    ctx.line(r, "amp/collector-hour", ctx.hours, f"collector: {ctx.hours:g} h")
    ctx.line(r, "amp/collector-samples", samples, f"samples collected: {samples:,.0f}")


def _amp_workspace(ctx: _Context, r: Resource) -> None:
    samples = sum(_prometheus_samples(ctx, s) for s in ctx.plan.of_type("aws:amp/scraper:Scraper"))
    ctx.line(r, "amp/ingest", samples, f"samples ingested: {samples:,.0f} (the collector's)")
    gb = float(ctx.use("prometheus", "stored_gb"))
    ctx.line(r, "amp/storage", gb, f"stored: {gb:g} GB (usage)")
    qsp = float(ctx.use("prometheus", "query_samples_per_month"))
    ctx.line(r, "amp/query", qsp, f"query samples (rules, dashboards): {qsp:,.0f} (usage)")


def _grafana_workspace(ctx: _Context, r: Resource) -> None:
    # Per active user a month; at least one editor license per workspace.
    editors = max(1.0, float(ctx.use("grafana", "active_editors")))
    viewers = float(ctx.use("grafana", "active_viewers"))
    ctx.line(r, "grafana/editor", editors, f"active editors: {editors:g} (usage; 1 at least)")
    ctx.line(r, "grafana/viewer", viewers, f"active viewers: {viewers:g} (usage)")


def _log_metric_filter(ctx: _Context, r: Resource) -> None:
    ctx.line(r, "cloudwatch/custom-metric", 1, "the filter's metric (a custom metric)")


def _sqs_queue(ctx: _Context, r: Resource) -> None:
    n = float(ctx.use("sqs", "requests_per_month"))
    ctx.line(r, "sqs/requests", n, f"requests: {n:,.0f} (usage)")


def _sns_topic(ctx: _Context, r: Resource) -> None:
    n = float(ctx.use("sns", "publishes_per_month"))
    ctx.line(r, "sns/publish", n, f"publishes: {n:,.0f} (usage)")


def _s3_bucket(ctx: _Context, r: Resource) -> None:
    gb = float(ctx.use("s3", "stored_gb"))
    puts = float(ctx.use("s3", "put_requests_per_month"))
    ctx.line(r, "s3/standard", gb, f"stored: {gb:g} GB Standard (usage)")
    ctx.line(r, "s3/put", puts, f"PUT requests: {puts:,.0f} (usage)")


def _ssm_parameter(ctx: _Context, r: Resource) -> None:
    tier = str(r.inputs.get("tier") or "Standard")
    item = "ssm/parameter-advanced" if tier == "Advanced" else "ssm/parameter-standard"
    ctx.line(r, item, 1, f"{tier} parameter ({r.inputs.get('type', 'String')})")


def _dashboard(ctx: _Context, r: Resource) -> None:
    ctx.line(r, "cloudwatch/dashboard", 1, "dashboard")


_PRICERS = {
    "aws:ec2/instance:Instance": _ec2_instance,
    "aws:ebs/volume:Volume": _ebs_volume,
    "aws:ec2/eip:Eip": _eip,
    "aws:ec2/natGateway:NatGateway": _nat_gateway,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:alb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:eks/cluster:Cluster": _eks_cluster,
    "aws:eks/nodeGroup:NodeGroup": _eks_node_group,
    "aws:autoscaling/group:Group": _autoscaling_group,
    "aws:rds/instance:Instance": _rds_instance,
    "aws:lambda/function:Function": _lambda_function,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _metric_alarm,
    "aws:cloudwatch/dashboard:Dashboard": _dashboard,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:ecr/repository:Repository": _ecr_repository,
    "aws:secretsmanager/secret:Secret": _secret,
    "aws:wafv2/webAcl:WebAcl": _web_acl,
    "aws:kms/key:Key": _kms_key,
    "aws:ec2/vpcEndpoint:VpcEndpoint": _vpc_endpoint,
    "aws:sqs/queue:Queue": _sqs_queue,
    "aws:amp/workspace:Workspace": _amp_workspace,
    "aws:amp/scraper:Scraper": _amp_scraper,
    "aws:grafana/workspace:Workspace": _grafana_workspace,
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": _log_metric_filter,
    "aws:sns/topic:Topic": _sns_topic,
    "aws:s3/bucket:Bucket": _s3_bucket,
    "aws:s3/bucketV2:BucketV2": _s3_bucket,
    "aws:ssm/parameter:Parameter": _ssm_parameter,
}


def _kubernetes(ctx: _Context, r: Resource) -> None:
    """Kubernetes objects run on the nodes, except those that make cloud resources of their own."""
    if r.type == "kubernetes:core/v1:Service":
        spec = r.inputs.get("spec") or {}
        # AWS's controllers serve a Service of type LoadBalancer without a class or with theirs;
        # one of another class (the workload's: only for its health check node port) makes none.
        aws_classes = (None, "service.k8s.aws/nlb", "eks.amazonaws.com/nlb")
        if (
            isinstance(spec, dict)
            and spec.get("type") == "LoadBalancer"
            and spec.get("loadBalancerClass") in aws_classes
        ):
            ctx.cannot(
                r, "a Service of type LoadBalancer makes an AWS load balancer outside the Plan"
            )
            return
    if r.type == "kubernetes:core/v1:PersistentVolumeClaim":
        ctx.cannot(r, "a volume claim makes an EBS volume outside the Plan")
        return
    ctx.no_charge(r, _FREE_PACKAGES["kubernetes"])


def _price(ctx: _Context, r: Resource) -> None:
    if r.type in _PRICERS:
        _PRICERS[r.type](ctx, r)
    elif r.type in _FREE_AWS:
        ctx.no_charge(r, _FREE_AWS[r.type])
    elif r.package == "kubernetes":
        _kubernetes(ctx, r)
    elif r.package in _FREE_PACKAGES:
        ctx.no_charge(r, _FREE_PACKAGES[r.package])
    else:
        ctx.cannot(r, f"no price rule for {r.type} in backbone/cost.py")


# --------------------------------------------------------------------------------------------
# Free tier


def _apply_allowances(lines: list[Line], allowances: list[Allowance]) -> list[AllowanceUse]:
    """Each allowance once, across every line it covers, in the Plan's order."""
    uses = []
    for a in allowances:
        left = a.quantity
        saved = 0.0
        for line in lines:
            if left <= 0:
                break
            if line.item not in a.items or (a.eligible_only and not line.eligible):
                continue
            take = min(left, line.quantity - line.free_quantity)
            if take <= 0:
                continue
            line.free_quantity += take
            line.free_by.append(a.what)
            saved += take / line.price.divisor * line.price.usd
            left -= take
        uses.append(
            AllowanceUse(
                a.what, a.offer, a.quantity, a.quantity - left, a.unit, saved, a.source, a.date
            )
        )
    return uses


# --------------------------------------------------------------------------------------------
# The public interface


def estimate(
    plan: Plan,
    *,
    free_tier: str | None = None,
    usage: Path | None = None,
    prices: Path | None = None,
) -> Estimate:
    """The monthly cost of `plan`.

    free_tier: "12-month", "free-plan" or "none"; None takes the stack's `freeTier` setting
    (plan.settings), else "none". usage: a YAML file whose keys replace the default usage
    assumptions (backbone/data/usage.yaml). prices: another price table (tests, what-ifs).
    """
    mode = free_tier if free_tier is not None else str(plan.settings.get("freeTier") or "none")
    if mode not in FREE_TIERS:
        raise CostError(f"free tier {mode!r} is not known; allowed: {', '.join(FREE_TIERS)}")
    table = PriceTable.load(prices or PRICES_FILE)
    ctx = _Context(plan, table, load_usage(usage))
    if plan.settings.get("region") and any(r.package == "aws" for r in plan.managed()):
        table.region(str(plan.settings["region"]))  # refuse an unknown region up front
    for r in plan.managed():
        _price(ctx, r)
    offers = {"12-month": ("always", "12-month"), "free-plan": ("always",), "none": ("always",)}
    uses = _apply_allowances(ctx.lines, [a for a in table.allowances if a.offer in offers[mode]])
    budget = plan.settings.get("budget")
    est = Estimate(
        stack=plan.stack,
        region=str(plan.settings.get("region") or (ctx.regions_seen[0] if ctx.regions_seen else ""))
        or None,
        free_tier=mode,
        lines=ctx.lines,
        unpriced=ctx.unpriced,
        free=ctx.free,
        allowances=uses,
        notes=ctx.notes,
        budget=_num(budget),
        hours_per_month=table.hours_per_month,
    )
    if mode == "free-plan":
        est.credits = Credits(
            credits_usd=float(ctx.use("free_plan", "credits_usd")),
            plan_months=float(table.free_plan.get("months", 6)),
            monthly_usd=est.total_usd,
        )
    return est


# --------------------------------------------------------------------------------------------
# Rendering


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _qty(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"


def _price_text(p: Price) -> str:
    return f"${p.usd:g} per {p.per}"


def _mode_text(est: Estimate) -> str:
    return {
        "12-month": "12-month free tier offers and always-free allowances",
        "free-plan": "Free plan (credits) and always-free allowances",
        "none": "no free tier, always-free allowances only",
    }[est.free_tier]


def total_line(est: Estimate) -> str:
    """The one-line summary: total, free tier, what is left out, the budget."""
    text = f"estimated monthly cost: {_usd(est.total_usd)} ({_mode_text(est)}"
    if est.gross_usd != est.total_usd:
        text += f"; {_usd(est.gross_usd)} before them"
    text += ")"
    if est.unpriced:
        text += f"; {len(est.unpriced)} item(s) not priced, left out"
    if est.budget is not None:
        text += f"; budget {_usd(est.budget)}: " + ("OVER" if est.over_budget else "within")
    return text


def summary(plan: Plan) -> str:
    """The cost line `backbone plan` ends with; never raises (says why instead)."""
    if not any(r.package == "aws" for r in plan.managed()):
        return "estimated monthly cost: $0.00 (no AWS resources)"
    try:
        est = estimate(plan)
    except CostError as exc:
        return f"estimated monthly cost: not available ({exc})"
    return total_line(est) + f"; details: backbone cost {plan.stack}"


def render_text(est: Estimate, console: Any) -> None:
    """Rich tables on `console`: one per component, a summary with the total, what is unpriced."""
    for component, subtotal in est.components().items():
        console.print(_component_table(est, component, subtotal))
    if est.unpriced:
        console.print(_unpriced_table(est))
    used = [a for a in est.allowances if a.used > 0]
    if used:
        console.print(_allowances_table(used))
    for note in est.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(_summary_table(est))
    if est.credits:
        console.print(est.credits.note, markup=False, highlight=False)
    console.print(total_line(est), markup=False, highlight=False)


def _component_table(est: Estimate, component: str, subtotal: float) -> Table:
    from rich.table import Table

    table = Table(title=f"{component}: {_usd(subtotal)} a month", title_justify="left")
    for col, justify in (
        ("resource", "left"),
        ("what", "left"),
        ("quantity", "right"),
        ("price", "right"),
        ("cost", "right"),
        ("free tier", "right"),
        ("monthly", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for line in est.lines:
        if line.component != component:
            continue
        table.add_row(
            line.resource,
            line.description,
            f"{_qty(line.quantity)} {line.unit}",
            _price_text(line.price),
            _usd(line.gross_usd),
            f"-{_usd(line.free_usd)}" if line.free_quantity else "",
            _usd(line.usd),
        )
    return table


def _unpriced_table(est: Estimate) -> Table:
    from rich.table import Table

    table = Table(
        title=f"not priced ({len(est.unpriced)}): the total leaves these out",
        title_justify="left",
    )
    for col in ("component", "resource", "type", "why"):
        table.add_column(col)
    for u in est.unpriced:
        table.add_row(u.component, u.resource, u.type, u.reason)
    return table


def _allowances_table(used: list[AllowanceUse]) -> Table:
    from rich.table import Table

    table = Table(title="free tier used (once for the account)", title_justify="left")
    for col, justify in (("allowance", "left"), ("offer", "left"), ("used", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("saves", justify="right")
    for a in used:
        table.add_row(
            a.what, a.offer, f"{_qty(a.used)} of {_qty(a.quantity)} {a.unit}", _usd(a.usd)
        )
    return table


def _summary_table(est: Estimate) -> Table:
    from rich.table import Table

    summary_table = Table(
        title=f"stack {est.stack} ({est.region or 'no region'}), per month", title_justify="left"
    )
    summary_table.add_column("component")
    summary_table.add_column("monthly", justify="right")
    for component, subtotal in est.components().items():
        summary_table.add_row(component, _usd(subtotal))
    summary_table.add_row("total", _usd(est.total_usd), style="bold")
    return summary_table


def render_markdown(est: Estimate) -> str:
    """The estimate as Markdown: a table per component, the summary, what is unpriced."""
    out = [f"# Monthly cost of stack `{est.stack}` ({est.region or 'no region'})", ""]
    out.append(f"Free tier: {_mode_text(est)}. A month is {est.hours_per_month:g} hours.")
    out.append("")
    for component, subtotal in est.components().items():
        out += [
            f"## {component}: {_usd(subtotal)}",
            "",
            "| resource | what | quantity | price | cost | free tier | monthly |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for line in est.lines:
            if line.component == component:
                free = f"-{_usd(line.free_usd)}" if line.free_quantity else ""
                out.append(
                    f"| {line.resource} | {line.description} | {_qty(line.quantity)} "
                    f"{line.unit} | {_price_text(line.price)} | {_usd(line.gross_usd)} | {free} "
                    f"| {_usd(line.usd)} |"
                )
        out.append("")
    out += ["## Total", "", "| component | monthly |", "|---|---:|"]
    out += [f"| {c} | {_usd(v)} |" for c, v in est.components().items()]
    out += [f"| **total** | **{_usd(est.total_usd)}** |", ""]
    if est.unpriced:
        out += [f"## Not priced ({len(est.unpriced)}): left out of the total", ""]
        out += [f"- `{u.resource}` ({u.type}): {u.reason}" for u in est.unpriced]
        out.append("")
    if est.credits:
        out += [est.credits.note, ""]
    out += [f"- {n}" for n in est.notes]
    if est.notes:
        out.append("")
    out.append(total_line(est))
    return "\n".join(out) + "\n"


__all__ = [
    "FREE_TIERS",
    "AllowanceUse",
    "CostError",
    "Credits",
    "Estimate",
    "Line",
    "PriceTable",
    "Unpriced",
    "estimate",
    "load_usage",
    "render_markdown",
    "render_text",
    "summary",
    "total_line",
]
