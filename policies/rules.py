"""The kit's policy rules: pure functions over a resource's type and properties.

The same rules run in two places:
- offline, over a Plan (`backbone check STACK`, the verdict line of `backbone plan`, the tests):
  backbone/check.py turns each Plan resource into a `Res`;
- in a real `pulumi preview --policy-pack policies` (CrossGuard): policies/__main__.py builds one
  policy per rule with `resource_validation` / `stack_validation` below, which turn the engine's
  arguments into the same `Res`.

A rule returns messages that say what is wrong; its `fix` says what to change. A value the
engine does not know yet (another resource's output during a preview) is never judged.
What makes a stack production is its `backbone:tier: production` setting, never its name; what
makes the cost rules mandatory is a free-tier setting (`backbone:freeTier`), also never a name.
Each rule's level can be tuned per stack with `backbone:policies` (rule name -> mandatory,
advisory or disabled).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from backbone import awsrules
from backbone.plan import SECRET
from infra.config import StackConfig

MANDATORY, ADVISORY, DISABLED = "mandatory", "advisory", "disabled"
LEVELS = (MANDATORY, ADVISORY, DISABLED)
UNKNOWN = "[unknown]"  # what the CrossGuard adapter makes of a value unknown during preview
PUBLIC_CIDRS = {"0.0.0.0/0", "::/0"}
REQUIRED_TAGS = ("project", "stack", "owner")
FREE_TIER_EC2 = {"t2.micro", "t3.micro"}
FREE_TIER_RDS = {"db.t2.micro", "db.t3.micro", "db.t4g.micro"}
FREE_TIER_RDS_GB = 20
FREE_ALARMS = 10


# --------------------------------------------------------------------------------------------
# What a rule sees


@dataclass(frozen=True)
class Res:
    """One resource, as either world holds it: type token, name, URN, inputs (wire names)."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    id: str | None = None  # offline: the engine's (placeholder) id
    outputs: Mapping[str, Any] = field(default_factory=dict)  # offline: the engine's outputs
    provider_tags: Mapping[str, Any] = field(default_factory=dict)  # the provider's defaultTags
    property_dependencies: Mapping[str, tuple[str, ...]] | None = None  # CrossGuard

    def get(self, *path: str | int) -> Any:
        node: Any = self.props
        for part in path:
            if isinstance(node, Mapping) and isinstance(part, str):
                node = node.get(part)
            elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(part, int):
                node = node[part] if -len(node) <= part < len(node) else None
            else:
                return None
        return node


def _never(_: str) -> bool:
    return False


@dataclass(frozen=True)
class Context:
    """What the stack's settings say about the rules (from infra.config.StackConfig)."""

    stack: str = ""
    production: bool = False
    free_tier: bool = False
    budget: float | None = None
    levels: Mapping[str, str] = field(default_factory=dict)  # backbone:policies
    unknown: Callable[[str], bool] = _never
    monthly_cost: Callable[[], float] | None = None  # the cost model (backbone.cost)
    settings: Mapping[str, Any] = field(default_factory=dict)  # what backbone.cost reads

    @classmethod
    def from_config(cls, cfg: StackConfig, **kw: Any) -> Context:
        return cls(
            stack=cfg.stack,
            production=cfg.tier == "production",
            free_tier=cfg.free_tier != "none",
            budget=cfg.budget,
            levels=dict(cfg.policies),
            settings={
                "region": cfg.region,
                "tier": cfg.tier,
                "freeTier": cfg.free_tier,
                "budget": cfg.budget,
            },
            **kw,
        )

    def is_unknown(self, value: Any) -> bool:
        return value == UNKNOWN or (isinstance(value, str) and self.unknown(value))


@dataclass(frozen=True)
class Violation:
    rule: str
    level: str
    resource: str
    urn: str
    type: str
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "level": self.level,
            "resource": self.resource,
            "urn": self.urn,
            "type": self.type,
            "message": self.message,
            "fix": self.fix,
        }


ResourceCheck = Callable[[Res, Context], Iterable[str]]
StackCheck = Callable[[list[Res], Context], Iterable[tuple[Res | None, str]]]


@dataclass(frozen=True)
class Rule:
    name: str
    group: str
    description: str
    fix: str
    resource: ResourceCheck | None = None
    stack: StackCheck | None = None
    default: str = MANDATORY
    cost: bool = False  # advisory by default, mandatory on a free-tier stack

    def level(self, ctx: Context) -> str:
        if self.name in ctx.levels:
            return str(ctx.levels[self.name])
        if self.cost:
            return MANDATORY if ctx.free_tier else ADVISORY
        return self.default


# --------------------------------------------------------------------------------------------
# Helpers


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _strings(value: Any) -> set[str]:
    return {v for v in _leaves(value) if isinstance(v, str)}


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def refs(res: Res, prop: str, among: Iterable[Res]) -> list[Res]:
    """The resources whose id, ARN or name the property holds (CrossGuard: its dependencies)."""
    deps = (res.property_dependencies or {}).get(prop)
    candidates = [r for r in among if r is not res]
    if deps:
        return [r for r in candidates if r.urn in deps]
    held = _strings(res.props.get(prop)) - {UNKNOWN, SECRET, ""}
    if not held:
        return []
    found = []
    for r in candidates:
        keys = {r.id} | {r.outputs.get(k) for k in ("arn", "name", "id")}
        if held & {k for k in keys if isinstance(k, str) and k}:
            found.append(r)
    return found


def _of(resources: Iterable[Res], *types: str) -> list[Res]:
    return [r for r in resources if r.type in types]


def _doc(value: Any, ctx: Context) -> dict[str, Any] | None:
    """A policy document (JSON text or an object); None when unknown or unreadable."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str) or ctx.is_unknown(value) or value == SECRET:
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _statements(doc: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not doc:
        return []
    return [s for s in _list(doc.get("Statement")) if isinstance(s, Mapping)]


def _allows(stmt: Mapping[str, Any]) -> bool:
    return stmt.get("Effect") == "Allow"


def _actions(stmt: Mapping[str, Any]) -> list[str]:
    return [a for a in _list(stmt.get("Action")) if isinstance(a, str)]


def _resources_of(stmt: Mapping[str, Any]) -> list[str]:
    return [a for a in _list(stmt.get("Resource")) if isinstance(a, str)]


# Policy documents by type: inline ones (attached to one principal) and managed ones.
INLINE_POLICIES = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
MANAGED_POLICIES = {"aws:iam/policy:Policy": "policy"}


def _policy_docs(
    r: Res, ctx: Context, inline_only: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    kinds = INLINE_POLICIES if inline_only else {**INLINE_POLICIES, **MANAGED_POLICIES}
    if r.type in kinds:
        doc = _doc(r.props.get(kinds[r.type]), ctx)
        if doc:
            out.append((kinds[r.type], doc))
    if r.type == "aws:iam/role:Role":
        for i, inline in enumerate(_list(r.props.get("inlinePolicies"))):
            doc = _doc(inline.get("policy") if isinstance(inline, Mapping) else None, ctx)
            if doc:
                out.append((f"inlinePolicies[{i}]", doc))
    return out


def _wildcard(action: str) -> bool:
    return action == "*" or action.endswith(":*")


def _covers(action: str, wanted: str) -> bool:
    """Whether an IAM action pattern (with * and ?) matches the action `wanted`."""
    pattern = "^" + re.escape(action).replace(r"\*", ".*").replace(r"\?", ".") + "$"
    return re.match(pattern, wanted, re.IGNORECASE) is not None


# Ingress rules in their three shapes: (resource, group reference prop, cidrs, from, to, protocol)
@dataclass(frozen=True)
class Ingress:
    res: Res
    cidrs: tuple[str, ...]
    from_port: Any
    to_port: Any
    protocol: str
    referenced_group: bool
    group_of: Callable[[Iterable[Res]], list[Res]]


def _itself(r: Res, among: Iterable[Res]) -> list[Res]:
    return [r]


def _ingresses(r: Res) -> list[Ingress]:
    out: list[Ingress] = []
    if r.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        cidrs = tuple(c for c in (r.get("cidrIpv4"), r.get("cidrIpv6")) if isinstance(c, str))
        out.append(
            Ingress(
                r,
                cidrs,
                r.get("fromPort"),
                r.get("toPort"),
                str(r.get("ipProtocol") or ""),
                r.get("referencedSecurityGroupId") is not None,
                functools.partial(refs, r, "securityGroupId"),
            )
        )
    elif r.type == "aws:ec2/securityGroupRule:SecurityGroupRule" and r.get("type") == "ingress":
        cidrs = tuple(_strings(r.get("cidrBlocks")) | _strings(r.get("ipv6CidrBlocks")))
        out.append(
            Ingress(
                r,
                cidrs,
                r.get("fromPort"),
                r.get("toPort"),
                str(r.get("protocol") or ""),
                r.get("sourceSecurityGroupId") is not None or _true(r.get("self")),
                functools.partial(refs, r, "securityGroupId"),
            )
        )
    elif r.type == "aws:ec2/securityGroup:SecurityGroup":
        for rule in _list(r.get("ingress")):
            if not isinstance(rule, Mapping):
                continue
            cidrs = tuple(_strings(rule.get("cidrBlocks")) | _strings(rule.get("ipv6CidrBlocks")))
            out.append(
                Ingress(
                    r,
                    cidrs,
                    rule.get("fromPort"),
                    rule.get("toPort"),
                    str(rule.get("protocol") or ""),
                    bool(rule.get("securityGroups")) or _true(rule.get("self")),
                    functools.partial(_itself, r),
                )
            )
    return out


def _port_range(ing: Ingress) -> tuple[int, int] | None:
    """The ports an ingress opens; None for all ports (protocol -1 / all)."""
    if ing.protocol in ("-1", "all"):
        return None
    try:
        low, high = int(ing.from_port), int(ing.to_port)
    except (TypeError, ValueError):
        return None
    if low == -1 and high == -1:
        return None
    return low, high


def _public(ing: Ingress) -> list[str]:
    return [c for c in ing.cidrs if c in PUBLIC_CIDRS]


def _merged_tags(r: Res) -> dict[str, Any]:
    own = r.props.get("tags")
    return {**dict(r.provider_tags), **(dict(own) if isinstance(own, Mapping) else {})}


# --------------------------------------------------------------------------------------------
# data


RDS = "aws:rds/instance:Instance"


def rds_encrypted(r: Res, ctx: Context) -> Iterator[str]:
    if (
        r.type == RDS
        and not _true(r.get("storageEncrypted"))
        and not ctx.is_unknown(r.get("storageEncrypted"))
    ):
        yield "storage is not encrypted (storageEncrypted is not true)"


def rds_private(r: Res, ctx: Context) -> Iterator[str]:
    if r.type == RDS and _true(r.get("publiclyAccessible")):
        yield "the database is publicly accessible (publiclyAccessible: true)"


def rds_backups(r: Res, ctx: Context) -> Iterator[str]:
    if r.type != RDS:
        return
    days = r.get("backupRetentionPeriod")
    if isinstance(days, (int, float)) and not isinstance(days, bool) and days < 1:
        yield f"automated backups are off (backupRetentionPeriod: {days})"


def rds_deletion_protection(r: Res, ctx: Context) -> Iterator[str]:
    if ctx.production and r.type == RDS and not _true(r.get("deletionProtection")):
        yield "a production database without deletion protection"


def rds_multi_az(r: Res, ctx: Context) -> Iterator[str]:
    if ctx.production and r.type == RDS and not _true(r.get("multiAz")):
        yield "a production database in one availability zone (multiAz is not true)"


TLS_PARAMETERS = {"postgres": ("rds.force_ssl", "1"), "mysql": ("require_secure_transport", "1")}


def rds_tls_enforced(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    groups = _of(resources, "aws:rds/parameterGroup:ParameterGroup")
    for db in _of(resources, RDS):
        engine = str(db.get("engine") or "")
        family = "mysql" if engine in ("mysql", "mariadb") else engine.split("-")[0]
        if family not in TLS_PARAMETERS:
            continue
        name, wanted = TLS_PARAMETERS[family]
        group_name = db.get("parameterGroupName")
        if group_name is None:
            yield db, f"uses the engine's default parameter group: {name} is not set to {wanted}"
            continue
        if ctx.is_unknown(group_name) and not (db.property_dependencies or {}).get(
            "parameterGroupName"
        ):
            continue
        linked = refs(db, "parameterGroupName", groups) or [
            g for g in groups if g.get("name") == group_name
        ]
        if not linked:
            yield (
                db,
                f"its parameter group {group_name!r} is not in the stack: {name}={wanted} cannot be confirmed",
            )
            continue
        for group in linked:
            values = {
                str(p.get("name")): str(p.get("value"))
                for p in _list(group.get("parameters"))
                if isinstance(p, Mapping)
            }
            if values.get(name) != wanted:
                yield (
                    db,
                    f"its parameter group {group.name} does not set {name}={wanted} (connections without TLS are accepted)",
                )


BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")


def s3_public_access_blocked(
    resources: list[Res], ctx: Context
) -> Iterator[tuple[Res | None, str]]:
    blocks = _of(resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for bucket in _of(resources, *BUCKETS):
        mine = [b for b in blocks if bucket in refs(b, "bucket", [bucket])]
        if not mine:
            yield bucket, "no public access block on the bucket"
            continue
        off = [f for f in flags if not any(_true(b.get(f)) for b in mine)]
        if off:
            yield bucket, f"its public access block leaves {', '.join(off)} off"


def s3_encrypted(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    configs = _of(
        resources,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    )
    for bucket in _of(resources, *BUCKETS):
        if not any(bucket in refs(c, "bucket", [bucket]) for c in configs):
            yield bucket, "no server-side encryption configuration for the bucket"


def kms_key_rotation(r: Res, ctx: Context) -> Iterator[str]:
    if r.type != "aws:kms/key:Key":
        return
    spec = r.get("customerMasterKeySpec") or r.get("keySpec") or "SYMMETRIC_DEFAULT"
    if spec == "SYMMETRIC_DEFAULT" and not _true(r.get("enableKeyRotation")):
        yield "a symmetric key that never rotates (enableKeyRotation is not true)"


# --------------------------------------------------------------------------------------------
# network


def _lb_groups(resources: list[Res]) -> set[str]:
    urns: set[str] = set()
    groups = _of(resources, "aws:ec2/securityGroup:SecurityGroup")
    for lb in _of(
        resources, "aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"
    ):
        urns.update(g.urn for g in refs(lb, "securityGroups", groups))
    return urns


def _entry_groups(resources: list[Res]) -> set[str]:
    """The groups of the stack's web entry point: its load balancers' or, in a stack with no load
    balancer, its single web instance's (the free-tier host serves from its own address)."""
    lb_groups = _lb_groups(resources)
    if lb_groups:
        return lb_groups
    groups = _of(resources, "aws:ec2/securityGroup:SecurityGroup")
    instances = _of(resources, "aws:ec2/instance:Instance")
    if len(instances) != 1:
        return set()
    return {g.urn for g in refs(instances[0], "vpcSecurityGroupIds", groups)}


def sg_no_public_ingress(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    lb_groups = _entry_groups(resources)
    groups = _of(resources, "aws:ec2/securityGroup:SecurityGroup")
    for r in resources:
        for ing in _ingresses(r):
            public = _public(ing)
            if not public:
                continue
            ports = _port_range(ing)
            web = ports in ((80, 80), (443, 443)) and ing.protocol in ("tcp", "6")
            attached = {g.urn for g in ing.group_of(groups)}
            if web and attached and attached <= lb_groups:
                continue
            where = "all ports" if ports is None else f"ports {ports[0]}-{ports[1]}"
            why = "" if web else " (only the load balancer may take 80/443 from the internet)"
            if web:
                why = " on a group that is not the load balancer's"
            yield r, f"ingress from {', '.join(public)} on {where}{why}"


def sg_no_ssh_rdp_from_internet(r: Res, ctx: Context) -> Iterator[str]:
    for ing in _ingresses(r):
        public = _public(ing)
        if not public:
            continue
        ports = _port_range(ing)
        for port, what in ((22, "SSH"), (3389, "RDP")):
            if ports is None or ports[0] <= port <= ports[1]:
                yield f"{what} (port {port}) open to {', '.join(public)}"


def db_ingress_named_groups(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    groups = _of(resources, "aws:ec2/securityGroup:SecurityGroup")
    db_groups: set[str] = set()
    for db in _of(resources, RDS):
        db_groups.update(g.urn for g in refs(db, "vpcSecurityGroupIds", groups))
    for r in resources:
        for ing in _ingresses(r):
            attached = {g.urn for g in ing.group_of(groups)}
            if attached & db_groups and not ing.referenced_group:
                source = ", ".join(ing.cidrs) or "a prefix list or an unnamed source"
                yield (
                    r,
                    f"the database's security group takes ingress from {source}, not from a named security group",
                )


def vpc_flow_logs(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    if not ctx.production:
        return
    logs = _of(resources, "aws:ec2/flowLog:FlowLog")
    for vpc in _of(resources, "aws:ec2/vpc:Vpc"):
        if not any(vpc in refs(f, "vpcId", [vpc]) for f in logs):
            yield vpc, "a production VPC without flow logs"


# --------------------------------------------------------------------------------------------
# compute


def ec2_imdsv2(r: Res, ctx: Context) -> Iterator[str]:
    if r.type in ("aws:ec2/instance:Instance", "aws:ec2/launchTemplate:LaunchTemplate"):
        tokens = r.get("metadataOptions", "httpTokens")
        if tokens != "required" and not ctx.is_unknown(tokens):
            yield f"the instance metadata service accepts IMDSv1 (metadataOptions.httpTokens: {tokens or 'unset'})"


def ebs_encrypted(r: Res, ctx: Context) -> Iterator[str]:
    if r.type == "aws:ec2/instance:Instance":
        if not _true(r.get("rootBlockDevice", "encrypted")):
            yield "the root volume is not encrypted (rootBlockDevice.encrypted is not true)"
        for i, dev in enumerate(_list(r.get("ebsBlockDevices"))):
            if isinstance(dev, Mapping) and not _true(dev.get("encrypted")):
                yield f"ebsBlockDevices[{i}] is not encrypted"
    elif r.type == "aws:ebs/volume:Volume" and not _true(r.get("encrypted")):
        yield "the volume is not encrypted"
    elif r.type == "aws:ec2/launchTemplate:LaunchTemplate":
        for i, dev in enumerate(_list(r.get("blockDeviceMappings"))):
            ebs = dev.get("ebs") if isinstance(dev, Mapping) else None
            if isinstance(ebs, Mapping) and not _true(ebs.get("encrypted")):
                yield f"blockDeviceMappings[{i}].ebs is not encrypted"


EKS = "aws:eks/cluster:Cluster"
EKS_LOGS = ("api", "audit", "authenticator")


def eks_control_plane_logging(r: Res, ctx: Context) -> Iterator[str]:
    if r.type != EKS:
        return
    enabled = set(_strings(r.get("enabledClusterLogTypes")))
    missing = [t for t in EKS_LOGS if t not in enabled]
    if missing:
        yield f"control-plane logs {', '.join(missing)} are off"


def eks_endpoint_restricted(r: Res, ctx: Context) -> Iterator[str]:
    if not ctx.production or r.type != EKS:
        return
    public = r.get("vpcConfig", "endpointPublicAccess")
    if public is False or (isinstance(public, str) and public.lower() == "false"):
        return
    cidrs = _strings(r.get("vpcConfig", "publicAccessCidrs"))
    if ctx.is_unknown(public) or any(ctx.is_unknown(c) for c in cidrs):
        return
    if not cidrs:
        yield "the Kubernetes API is public to 0.0.0.0/0 (public access on, no publicAccessCidrs)"
    elif cidrs & PUBLIC_CIDRS:
        yield f"the Kubernetes API is open to {', '.join(sorted(cidrs & PUBLIC_CIDRS))}"


def eks_secrets_encryption(r: Res, ctx: Context) -> Iterator[str]:
    if not ctx.production or r.type != EKS:
        return
    config = r.get("encryptionConfig")
    resources = _strings(config.get("resources")) if isinstance(config, Mapping) else set()
    key = r.get("encryptionConfig", "provider", "keyArn")
    if "secrets" not in resources or not key:
        yield "Kubernetes Secrets are not envelope-encrypted with a KMS key (encryptionConfig)"


ECR = "aws:ecr/repository:Repository"


def ecr_scan_on_push(r: Res, ctx: Context) -> Iterator[str]:
    if r.type == ECR and not _true(r.get("imageScanningConfiguration", "scanOnPush")):
        yield "images are not scanned on push"


def ecr_immutable_tags(r: Res, ctx: Context) -> Iterator[str]:
    if r.type == ECR and r.get("imageTagMutability") not in (
        "IMMUTABLE",
        "IMMUTABLE_WITH_EXCLUSION",
    ):
        yield f"image tags can be overwritten (imageTagMutability: {r.get('imageTagMutability') or 'MUTABLE'})"


LAMBDA = "aws:lambda/function:Function"


def lambda_supported_runtime(r: Res, ctx: Context) -> Iterator[str]:
    if r.type != LAMBDA:
        return
    runtime = r.get("runtime")
    if not isinstance(runtime, str) or ctx.is_unknown(runtime):
        return
    allowed = awsrules.resolve("AWS::Lambda::Function", "Runtime").get("enum") or []
    if allowed and runtime not in allowed:
        yield f"runtime {runtime!r} is not one AWS lists"
        return
    for level, _rule, message in awsrules.runtime_findings(runtime):
        if level == "violation":
            yield f"runtime {runtime} {message}"


def lambda_log_retention(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    groups = {str(g.get("name")): g for g in _of(resources, "aws:cloudwatch/logGroup:LogGroup")}
    for fn in _of(resources, LAMBDA):
        group = fn.get("loggingConfig", "logGroup")
        if group is None and isinstance(fn.get("name"), str):
            group = f"/aws/lambda/{fn.get('name')}"
        if not isinstance(group, str) or ctx.is_unknown(group):
            continue
        found = groups.get(group)
        if found is None:
            yield (
                fn,
                f"its log group {group} is not in the stack (Lambda would create it, kept forever)",
            )
        elif not found.get("retentionInDays"):
            yield fn, f"its log group {group} keeps logs forever (no retentionInDays)"


# --------------------------------------------------------------------------------------------
# identity


def iam_no_wildcard_actions(r: Res, ctx: Context) -> Iterator[str]:
    for where, doc in _policy_docs(r, ctx):
        for stmt in _statements(doc):
            wild = [a for a in _actions(stmt) if _wildcard(a)] if _allows(stmt) else []
            if wild:
                yield f"{where} allows every action of {', '.join(wild)}"


def iam_no_passrole_star(r: Res, ctx: Context) -> Iterator[str]:
    for where, doc in _policy_docs(r, ctx):
        for stmt in _statements(doc):
            if not _allows(stmt):
                continue
            if any(_covers(a, "iam:PassRole") for a in _actions(stmt)) and "*" in _resources_of(
                stmt
            ):
                yield f"{where} allows iam:PassRole on every role (Resource: *)"


def iam_no_inline_admin(r: Res, ctx: Context) -> Iterator[str]:
    for where, doc in _policy_docs(r, ctx, inline_only=True):
        for stmt in _statements(doc):
            if _allows(stmt) and "*" in _actions(stmt) and "*" in _resources_of(stmt):
                yield f"{where} is an inline administrator policy (Action * on Resource *)"


def iam_trust_services(r: Res, ctx: Context) -> Iterator[str]:
    if r.type != "aws:iam/role:Role":
        return
    for stmt in _statements(_doc(r.get("assumeRolePolicy"), ctx)):
        if not _allows(stmt):
            continue
        principal = stmt.get("Principal")
        if principal == "*" or not isinstance(principal, Mapping):
            yield f"anyone may assume the role (Principal: {json.dumps(principal)})"
            continue
        for kind, who in principal.items():
            if kind == "Service":
                continue
            if kind == "Federated" and stmt.get("Condition"):
                continue
            yield f"the role trusts {kind} {json.dumps(who)}" + (
                " without a condition" if kind == "Federated" else ", not a service"
            )


# --------------------------------------------------------------------------------------------
# hygiene


def _taggable(type_token: str) -> bool:
    entry = awsrules.mapping().types.get(type_token)
    return entry is not None and isinstance(entry.inputs.get("tags"), awsrules.MapSpec)


def _tag_name(key: str) -> str:
    return re.split(r"[:/]", key)[-1].lower()


def required_tags(r: Res, ctx: Context) -> Iterator[str]:
    if not _taggable(r.type):
        return
    have = {_tag_name(k) for k in _merged_tags(r)}
    missing = [t for t in REQUIRED_TAGS if t not in have]
    if missing:
        yield f"missing tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}"


def aws_published_constraints(r: Res, ctx: Context) -> Iterator[str]:
    props = dict(r.props)
    if r.provider_tags and _taggable(r.type):
        props["tags"] = _merged_tags(r)
    report = awsrules.check_resource(r.type, props, name=r.name, urn=r.urn, unknown=ctx.is_unknown)
    for f in report.violations:
        yield f.what


# --------------------------------------------------------------------------------------------
# transport


def tls_public_listeners(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    if not ctx.production:
        return
    lbs = _of(resources, "aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
    for listener in _of(resources, "aws:lb/listener:Listener", "aws:alb/listener:Listener"):
        owners = refs(listener, "loadBalancerArn", lbs)
        if owners and all(_true(lb.get("internal")) for lb in owners):
            continue
        protocol = str(listener.get("protocol") or "HTTP")
        if protocol in ("HTTPS", "TLS"):
            continue
        actions = [a for a in _list(listener.get("defaultActions")) if isinstance(a, Mapping)]
        redirects = actions and all(
            a.get("type") == "redirect"
            and str((a.get("redirect") or {}).get("protocol", "")).upper() == "HTTPS"
            for a in actions
        )
        if not redirects:
            yield (
                listener,
                f"a public {protocol} listener on port {listener.get('port')} serves without TLS",
            )


_URL = re.compile(r"postgres(?:ql)?://[^\s\"']+")


def db_connections_verified(r: Res, ctx: Context) -> Iterator[str]:
    def pairs(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, Mapping):
            if isinstance(node.get("name"), str) and "value" in node:
                yield node["name"], node["value"]
            for k, v in node.items():
                if isinstance(k, str):
                    yield k, v
                yield from pairs(v)
        elif isinstance(node, Sequence) and not isinstance(node, str):
            for v in node:
                yield from pairs(v)

    for key, value in pairs(r.props):
        if (
            key.upper().endswith("SSLMODE")
            and isinstance(value, str)
            and value != "verify-full"
            and not ctx.is_unknown(value)
            and value != SECRET
        ):
            yield f"{key}={value}: the database server is not verified (allowed: verify-full)"
    for text in _strings(r.props):
        if ctx.is_unknown(text) or text == SECRET:
            continue
        for url in _URL.findall(text):
            mode = (parse_qs(urlsplit(url).query).get("sslmode") or [""])[0]
            if mode != "verify-full":
                yield f"a PostgreSQL connection string with sslmode={mode or 'unset (prefer)'} (allowed: verify-full)"


# --------------------------------------------------------------------------------------------
# cost


def cost_no_nat_gateway(r: Res, ctx: Context) -> Iterator[str]:
    if r.type == "aws:ec2/natGateway:NatGateway":
        yield "a NAT gateway (never free: hourly plus per GB)"


def cost_no_eks(r: Res, ctx: Context) -> Iterator[str]:
    if r.type == EKS:
        yield "an EKS cluster (its control plane is never free)"


def cost_free_tier_sizes(r: Res, ctx: Context) -> Iterator[str]:
    if r.type == "aws:ec2/instance:Instance":
        itype = r.get("instanceType")
        if isinstance(itype, str) and itype not in FREE_TIER_EC2:
            yield f"instance type {itype} is outside the free tier ({', '.join(sorted(FREE_TIER_EC2))})"
    if r.type == RDS:
        cls = r.get("instanceClass")
        if isinstance(cls, str) and cls not in FREE_TIER_RDS:
            yield f"instance class {cls} is outside the free tier ({', '.join(sorted(FREE_TIER_RDS))})"
        size = r.get("allocatedStorage")
        if (
            isinstance(size, (int, float))
            and not isinstance(size, bool)
            and size > FREE_TIER_RDS_GB
        ):
            yield f"{size} GB of storage, more than the free tier's {FREE_TIER_RDS_GB} GB"
        if _true(r.get("multiAz")):
            yield "Multi-AZ is never free"


def cost_max_alarms(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    alarms = _of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
    if len(alarms) > FREE_ALARMS:
        yield None, f"{len(alarms)} alarms, more than the {FREE_ALARMS} the free tier covers"


def cost_budget(resources: list[Res], ctx: Context) -> Iterator[tuple[Res | None, str]]:
    if ctx.budget is None or ctx.monthly_cost is None:
        return
    from backbone.cost import CostError

    try:
        total = ctx.monthly_cost()
    except CostError as exc:  # e.g. a region the price table does not know: say so, never crash
        yield None, f"the budget cannot be checked: {exc}"
        return
    if total > ctx.budget:
        yield None, f"estimated ${total:,.2f} a month, over the budget of ${ctx.budget:,.2f}"


# --------------------------------------------------------------------------------------------
# The rules


RULES: tuple[Rule, ...] = (
    # hygiene first: AWS's own constraints are the pack's first rule group
    Rule("aws-published-constraints", "hygiene", "Every value fits AWS's published constraints (CloudFormation schemas, Lambda runtime lifecycle)", "change the value to one AWS accepts (the source names the constraint)", resource=aws_published_constraints),
    Rule("required-tags", "hygiene", "Every taggable AWS resource carries project, stack and owner tags", "add the missing tags under backbone:tags (the provider's default tags)", resource=required_tags),
    Rule("rds-encrypted", "data", "RDS storage is encrypted", "set storageEncrypted: true (a new instance: encryption cannot be turned on later)", resource=rds_encrypted),
    Rule("rds-private", "data", "RDS is not publicly accessible", "set publiclyAccessible: false and keep the database in private subnets", resource=rds_private),
    Rule("rds-backups", "data", "RDS keeps automated backups", "set backupRetentionPeriod to 1 day or more", resource=rds_backups),
    Rule("rds-deletion-protection", "data", "Production databases have deletion protection", "set backbone:database.deletionProtection: true", resource=rds_deletion_protection),
    Rule("rds-multi-az", "data", "Production databases are Multi-AZ", "set backbone:database.multiAz: true", resource=rds_multi_az),
    Rule("rds-tls-enforced", "data", "RDS refuses connections without TLS", "use a parameter group with rds.force_ssl=1 (PostgreSQL) or require_secure_transport=1 (MySQL)", stack=rds_tls_enforced),
    Rule("s3-public-access-blocked", "data", "S3 buckets block public access", "add an aws.s3.BucketPublicAccessBlock with all four settings true", stack=s3_public_access_blocked),
    Rule("s3-encrypted", "data", "S3 buckets are encrypted", "add an aws.s3.BucketServerSideEncryptionConfiguration (AES256 or aws:kms)", stack=s3_encrypted),
    Rule("kms-key-rotation", "data", "Symmetric KMS keys rotate", "set enableKeyRotation: true", resource=kms_key_rotation),
    Rule("sg-no-public-ingress", "network", "No ingress from 0.0.0.0/0 or ::/0, except the web entry point on 80/443 (the load balancer; with none, the one web instance)", "allow a named security group or your own CIDR instead of the internet", stack=sg_no_public_ingress),
    Rule("sg-no-ssh-rdp-from-internet", "network", "No SSH or RDP from the internet", "remove the rule; reach instances through SSM Session Manager or a bastion on your own CIDR", resource=sg_no_ssh_rdp_from_internet),
    Rule("db-ingress-named-groups", "network", "The database is reachable only from named security groups", "allow the clients' security groups (referencedSecurityGroupId), not CIDRs", stack=db_ingress_named_groups),
    Rule("vpc-flow-logs", "network", "Production VPCs have flow logs", "set backbone:network.flowLogs: true", stack=vpc_flow_logs),
    Rule("ec2-imdsv2", "compute", "IMDSv2 is required on every instance and launch template", "set metadataOptions.httpTokens: required", resource=ec2_imdsv2),
    Rule("ebs-encrypted", "compute", "EBS volumes are encrypted", "set encrypted: true on every volume and block device", resource=ebs_encrypted),
    Rule("eks-control-plane-logging", "compute", "EKS control-plane logging is on (api, audit, authenticator)", "list api, audit and authenticator in enabledClusterLogTypes", resource=eks_control_plane_logging),
    Rule("eks-endpoint-restricted", "compute", "In production the EKS API endpoint is private or restricted, never open to 0.0.0.0/0 (also the transport rule)", "set backbone:cluster.publicEndpoint: false, or backbone:cluster.publicAccessCidrs to your own networks", resource=eks_endpoint_restricted),
    Rule("eks-secrets-encryption", "compute", "In production Kubernetes Secrets are envelope-encrypted with KMS", "give the cluster an encryptionConfig with resources [secrets] and a KMS key", resource=eks_secrets_encryption),
    Rule("ecr-scan-on-push", "compute", "ECR scans images on push", "set imageScanningConfiguration.scanOnPush: true", resource=ecr_scan_on_push),
    Rule("ecr-immutable-tags", "compute", "ECR tags are immutable", "set imageTagMutability: IMMUTABLE", resource=ecr_immutable_tags),
    Rule("lambda-supported-runtime", "compute", "Lambda functions use a runtime AWS still supports", "move to the successor runtime (backbone:functions.runtime)", resource=lambda_supported_runtime),
    Rule("lambda-log-retention", "compute", "Lambda functions log to a group with a retention period", "create the function's log group with retentionInDays (backbone:functions.logRetentionDays)", stack=lambda_log_retention),
    Rule("iam-no-wildcard-actions", "identity", "No IAM policy allows * or service:* actions", "list the actions the principal needs", resource=iam_no_wildcard_actions),
    Rule("iam-no-passrole-star", "identity", "No IAM policy allows iam:PassRole on *", "name the roles that may be passed", resource=iam_no_passrole_star),
    Rule("iam-no-inline-admin", "identity", "No inline administrator policy", "grant the actions and resources needed, in a policy of their own", resource=iam_no_inline_admin),
    Rule("iam-trust-services", "identity", "Roles are assumable only by the services that need them", "trust a Service principal, or a federated principal with conditions", resource=iam_trust_services),
    Rule("tls-public-listeners", "transport", "In production every public listener uses TLS (or redirects to HTTPS)", "set backbone:loadbalancer.certificateArn (port 80 then redirects)", stack=tls_public_listeners),
    Rule("db-connections-verified", "transport", "Database connections verify the server (sslmode=verify-full)", "use sslmode=verify-full with RDS's CA bundle", resource=db_connections_verified),
    Rule("cost-no-nat-gateway", "cost", "No NAT gateway (advisory; mandatory on a free-tier stack)", "set backbone:network.nat: none", resource=cost_no_nat_gateway, cost=True),
    Rule("cost-no-eks", "cost", "No EKS cluster (advisory; mandatory on a free-tier stack)", "run the app without a cluster (the free-tier stack)", resource=cost_no_eks, cost=True),
    Rule("cost-free-tier-sizes", "cost", "Instance classes and sizes within the free tier (advisory; mandatory on a free-tier stack)", "use t2.micro/t3.micro instances and db.t3/t4g.micro with 20 GB", resource=cost_free_tier_sizes, cost=True),
    Rule("cost-max-alarms", "cost", "At most 10 alarms (advisory; mandatory on a free-tier stack)", "keep 10 alarms or fewer (backbone:monitoring)", stack=cost_max_alarms, cost=True),
    Rule("cost-budget", "cost", "The estimated monthly cost is within backbone:budget (advisory; mandatory on a free-tier stack)", "lower the stack's cost or raise backbone:budget", stack=cost_budget, cost=True),
)  # fmt: skip

BY_NAME = {rule.name: rule for rule in RULES}
NAMES = tuple(BY_NAME)


def evaluate(resources: list[Res], ctx: Context, rules: Iterable[Rule] = RULES) -> list[Violation]:
    """Every violation of every rule that is not disabled, at its level for this stack."""
    out: list[Violation] = []
    for rule in rules:
        level = rule.level(ctx)
        if level == DISABLED:
            continue
        if rule.resource is not None:
            for r in resources:
                for message in rule.resource(r, ctx):
                    out.append(
                        Violation(rule.name, level, r.name, r.urn, r.type, message, rule.fix)
                    )
        if rule.stack is not None:
            for found, message in rule.stack(resources, ctx):
                out.append(
                    Violation(
                        rule.name,
                        level,
                        found.name if found else ctx.stack or "(stack)",
                        found.urn if found else "",
                        found.type if found else "pulumi:pulumi:Stack",
                        message,
                        rule.fix,
                    )
                )
    return out


# --------------------------------------------------------------------------------------------
# CrossGuard: the engine's arguments as Res (used by policies/__main__.py and the tests)


def plain(value: Any) -> Any:
    """CrossGuard's proxied properties as plain data: unknown values become UNKNOWN, secrets
    SECRET (never read), so the rules judge exactly what they judge offline."""
    cls = type(value).__name__
    if cls == "Secret":
        return SECRET
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in list(value):
            try:
                out[str(key)] = plain(value[key])
            except Exception as exc:  # pulumi_policy's UnknownValueError
                if type(exc).__name__ != "UnknownValueError":
                    raise
                out[str(key)] = UNKNOWN
        return out
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items: list[Any] = []
        for i in range(len(value)):
            try:
                items.append(plain(value[i]))
            except Exception as exc:
                if type(exc).__name__ != "UnknownValueError":
                    raise
                items.append(UNKNOWN)
        return items
    if isinstance(value, str) and value in _SENTINELS:
        return UNKNOWN
    return value


# pulumi_policy's sentinels for unknown values (proxy.py), in case a value slips past the proxy
_SENTINELS = {
    "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
    "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
    "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
    "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
    "030794c1-ac77-496b-92df-f27374a8bd58",
    "e48ece36-62e2-4504-bad9-02848725956a",
    "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
}


def _provider_tags(provider: Any) -> dict[str, Any]:
    if provider is None or not str(getattr(provider, "resource_type", "")).startswith(
        "pulumi:providers:aws"
    ):
        return {}
    props = plain(getattr(provider, "props", {}) or {})
    raw = props.get("defaultTags")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    tags = raw.get("tags") if isinstance(raw, Mapping) else None
    return dict(tags) if isinstance(tags, Mapping) else {}


def from_resource_args(args: Any) -> Res:
    """A `pulumi_policy.ResourceValidationArgs` (or a `PolicyResource`) as a Res."""
    deps = getattr(args, "property_dependencies", None)
    return Res(
        type=str(args.resource_type),
        name=str(args.name),
        urn=str(args.urn),
        props=plain(args.props),
        provider_tags=_provider_tags(getattr(args, "provider", None)),
        property_dependencies=(
            {k: tuple(str(d.urn) for d in v) for k, v in deps.items()} if deps else None
        ),
    )


def resource_validation(rule: Rule, ctx: Context) -> Callable[[Any, Callable[..., None]], None]:
    """The CrossGuard `validate` of a resource rule: report_violation(message, urn)."""
    check = rule.resource
    assert check is not None

    def validate(args: Any, report_violation: Callable[..., None]) -> None:
        res = from_resource_args(args)
        for message in check(res, ctx):
            report_violation(f"{res.name}: {message}. Fix: {rule.fix}", res.urn)

    return validate


def stack_validation(rule: Rule, ctx: Context) -> Callable[[Any, Callable[..., None]], None]:
    """The CrossGuard `validate` of a stack rule, over `StackValidationArgs.resources`."""
    check = rule.stack
    assert check is not None

    def validate(args: Any, report_violation: Callable[..., None]) -> None:
        resources = [from_resource_args(r) for r in args.resources]
        here = ctx
        if ctx.monthly_cost is None and ctx.budget is not None:
            here = replace(ctx, monthly_cost=lambda: monthly_cost(resources, ctx))
        for found, message in check(resources, here):
            name = found.name if found else ctx.stack or "stack"
            report_violation(f"{name}: {message}. Fix: {rule.fix}", found.urn if found else None)

    return validate


def monthly_cost(resources: list[Res], ctx: Context) -> float:
    """backbone.cost's estimate of resources the engine handed over (CrossGuard's stack view)."""
    from backbone.cost import estimate
    from backbone.plan import Plan, Resource

    plan = Plan(
        stack=ctx.stack,
        project="backbone",
        resources=[
            Resource(urn=r.urn, type=r.type, name=r.name, custom=True, inputs=dict(r.props))
            for r in resources
        ],
        settings=dict(ctx.settings),
    )
    return estimate(plan).total_usd
