"""backbone:cluster: the EKS cluster, its node group and its administrators."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field

from infra.config import catalogues
from infra.config.base import Problem, Section, retention_problems
from infra.config.network import PRIVATE_RANGES_TEXT, is_private

LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
DEFAULT_LOG_TYPES: tuple[LogType, ...] = ("api", "audit", "authenticator")
CATALOGUE = "infra/config/catalogues.py"

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
_GRAVITON = re.compile(r"\dg")


def standard_versions() -> list[str]:
    """The Kubernetes versions under EKS standard support on the calendar's date ("today" is that
    date, so a plan never changes by itself overnight: refreshing the catalogue is what moves a
    version out of standard support here)."""
    today = catalogues.EKS_CALENDAR_DATE
    return [v for v, r in catalogues.EKS_RELEASES.items() if r.standard_support_end > today]


def _either(items: list[str]) -> str:
    """`a, b or c`."""
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


def is_graviton(instance_type: str) -> bool:
    """Whether an EC2 instance type is a Graviton (arm64) one: a `g` after the generation."""
    return bool(_GRAVITON.search(instance_type.split(".")[0]))


class ClusterConfig(Section):
    """The EKS cluster that runs the app: control plane, managed node group, add-ons."""

    SECTION = "cluster"

    enabled: bool = False
    """Create the cluster. EKS is never free: about $73/month for the control plane alone."""

    version: str = Field(
        default="1.35",
        description="Kubernetes minor version, one under EKS standard support "
        f"({_either(standard_versions())}). The node group, its AMI, the add-ons and the "
        "autoscaler follow it; raise it one minor at a time (see the README's upgrade runbook).",
    )

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

    def problems(self) -> list[Problem]:
        if not self.enabled:
            return []
        out = self._version_problems() + self._admin_problems()
        if not self.min_nodes <= self.desired_nodes <= self.max_nodes:
            out.append(
                Problem(
                    self.key("desiredNodes"),
                    f"minNodes {self.min_nodes} <= desiredNodes {self.desired_nodes} <= maxNodes "
                    f"{self.max_nodes} does not hold; allowed: counts in that order",
                )
            )
        out += self._instance_problems()
        out += retention_problems(self.key("logRetentionDays"), self.log_retention_days)
        return out + self._access_problems()

    def _version_problems(self) -> list[Problem]:
        """A version EKS offers, under standard support unless accepted, one minor at a time."""
        releases, current = catalogues.EKS_RELEASES, standard_versions()
        release = releases.get(self.version)
        if release is None:
            return [
                Problem(
                    self.key("version"),
                    f"{self.version!r} is not under EKS standard support; allowed: "
                    f"{', '.join(current)} ({CATALOGUE} knows {', '.join(releases)}, from the EKS "
                    "release calendar)",
                )
            ]
        out = list[Problem]()
        if self.version not in current and not self.allow_extended_support:
            out.append(
                Problem(
                    self.key("version"),
                    f"{self.version!r} is not under EKS standard support (it ended on "
                    f"{release.standard_support_end}; extended support bills six times the rate); "
                    f"allowed: {', '.join(current)}, or allowExtendedSupport: true",
                )
            )
        return out + self._upgrade_problems() + self._ami_problems()

    def _upgrade_problems(self) -> list[Problem]:
        start = self.upgrade_from
        if start is None:
            return []
        if start not in catalogues.EKS_RELEASES:
            return [
                Problem(
                    self.key("upgradeFrom"),
                    f"{start!r} is not a version EKS offers; allowed: "
                    f"{', '.join(catalogues.EKS_RELEASES)}",
                )
            ]
        if catalogues.minor(self.version) - catalogues.minor(start) in (0, 1):
            return []
        return [
            Problem(
                self.key("version"),
                f"{self.version!r} from {start} skips or reverses a minor version (EKS upgrades "
                f"one minor at a time and never downgrades); allowed: {start} or "
                f"1.{catalogues.minor(start) + 1}, then the next minor in a later change",
            )
        ]

    def _ami_problems(self) -> list[Problem]:
        ami, version = self.ami_release_version, self.version
        if ami is None or re.fullmatch(rf"{re.escape(version)}\.[0-9]+-[0-9]{{8}}", ami):
            return []
        parameter = catalogues.ami_release_parameter(version, self.architecture)
        return [
            Problem(
                self.key("amiReleaseVersion"),
                f"{ami!r} is not an AL2023 EKS AMI release of Kubernetes {version}; allowed: "
                f"{version}.<patch>-<yyyymmdd> (aws ssm get-parameter --name {parameter}), or "
                "leave it out",
            )
        ]

    def _admin_problems(self) -> list[Problem]:
        """Administrators are IAM roles; a user or a session where a role is expected is refused."""
        key, out = self.key("adminRoleArns"), list[Problem]()
        example = "a role ARN such as arn:aws:iam::123456789012:role/platform-admin"
        if not self.admin_role_arns:
            out.append(
                Problem(
                    key,
                    "empty: nobody could administer the cluster, and the program could not create "
                    "its Kubernetes objects; allowed: IAM role ARNs such as "
                    "arn:aws:iam::123456789012:role/platform-admin (whoever deploys assumes one)",
                )
            )
        for arn in self.admin_role_arns:
            if _ROLE_ARN.match(arn):
                continue
            if ":user/" in arn:
                why = "is an IAM user; a user's access would follow one person"
            elif ":assumed-role/" in arn:
                why = "is a role session (sts assumed-role), not the role"
            else:
                why = "is not an IAM role ARN"
            out.append(Problem(key, f"{arn!r} {why}; allowed: {example} (people and CI assume it)"))
        return out

    def _instance_problems(self) -> list[Problem]:
        key = self.key("instanceTypes")
        if not self.instance_types:
            return [Problem(key, "empty; allowed: EC2 instance types such as t3.medium")]
        out = list[Problem]()
        for t in self.instance_types:
            if not _INSTANCE_TYPE.fullmatch(t):
                why = (
                    "is not an EC2 instance type; allowed: family.size such as t3.medium or "
                    "m7g.large"
                )
            elif (self.architecture == "arm64") != is_graviton(t):
                why = (
                    f"does not run {self.architecture} nodes; allowed: Graviton types (t4g, m7g, "
                    "...) for arm64, others for x86_64"
                )
            elif t not in catalogues.INSTANCE_TYPES:
                why = (
                    f"has no allocatable figures in {CATALOGUE} (the capacity rule needs them); "
                    f"allowed: {', '.join(catalogues.INSTANCE_TYPES)}, or add the type to "
                    "INSTANCE_TYPES with its source"
                )
            else:
                continue
            out.append(Problem(key, f"{t!r} {why}"))
        return out

    def _access_problems(self) -> list[Problem]:
        """Who may reach the API endpoint: networks, the private ones private."""
        out = list[Problem]()
        for cidr in self.public_access_cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                out.append(
                    Problem(
                        self.key("publicAccessCidrs"),
                        f"{cidr!r} is not a network; allowed: CIDRs such as 203.0.113.0/24",
                    )
                )
        out += [
            Problem(
                self.key("privateAccessCidrs"),
                f"{cidr!r} is not a private network; allowed: CIDRs inside {PRIVATE_RANGES_TEXT}",
            )
            for cidr in self.private_access_cidrs
            if not is_private(cidr)
        ]
        return out

    def open_to_internet(self) -> bool:
        """Whether the public API endpoint admits the whole internet."""
        return self.public_endpoint and any(
            cidr in ("0.0.0.0/0", "::/0") for cidr in self.public_access_cidrs
        )
