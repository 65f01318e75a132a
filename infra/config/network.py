"""backbone:network: the VPC."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field

from infra.config.base import Problem, Section, bounded, retention_problems

# RFC 1918: the only ranges a VPC should use for a private network.
PRIVATE_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
PRIVATE_RANGES_TEXT = "10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"


def is_private(cidr: str) -> bool:
    """Whether `cidr` is a network (strict) inside one of the RFC 1918 ranges."""
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        return False
    return net.version == 4 and any(net.subnet_of(r) for r in PRIVATE_RANGES)  # type: ignore[arg-type]


class NetworkConfig(Section):
    """The VPC: public and private subnets in each availability zone, and how private subnets
    reach the internet."""

    SECTION = "network"

    cidr: str = "10.0.0.0/16"
    """The VPC's IPv4 range: a private (RFC 1918) network between /16 and /24."""

    az_count: int = bounded(
        2,
        1,
        6,
        """How many availability zones to spread subnets over ({low} to {high}); looked up in the
        region at run time. A database or a load balancer needs at least 2.""",
    )

    subnet_prefix_length: int = bounded(
        20,
        16,
        28,
        """The prefix length of every subnet (/{low} to /{high}, AWS's limits); one public and one
        private subnet per zone are carved from the VPC in order.""",
    )

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
        return self._cidr_problems() + retention_problems(
            self.key("flowLogsRetentionDays"), self.flow_logs_retention_days
        )

    def _cidr_problems(self) -> list[Problem]:
        """The VPC's range, and the subnets carved from it."""
        try:
            net = ipaddress.ip_network(self.cidr, strict=True)
        except ValueError as exc:
            why = f"is not an IPv4 network ({exc}); allowed: a private network such as 10.0.0.0/16"
            return [Problem(self.key("cidr"), f"{self.cidr!r} {why}")]
        smallest = self.high("subnet_prefix_length")
        if net.version != 4:
            why = "is IPv6; allowed: an IPv4 network such as 10.0.0.0/16"
        elif not any(net.subnet_of(r) for r in PRIVATE_RANGES):  # type: ignore[arg-type]
            why = f"is not a private network; allowed: inside {PRIVATE_RANGES_TEXT} (RFC 1918)"
        elif not 16 <= net.prefixlen <= 24:
            why = (
                f"has prefix /{net.prefixlen}; allowed: /16 to /24 (AWS allows /16 to "
                f"/{smallest}; /24 is the smallest that still fits subnets for two zones)"
            )
        else:
            return self._subnet_problems(net)
        return [Problem(self.key("cidr"), f"{self.cidr!r} {why}")]

    def _subnet_problems(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[Problem]:
        key, prefix = self.key("subnetPrefixLength"), self.subnet_prefix_length
        if prefix < net.prefixlen:
            allowed = f"/{net.prefixlen} to /{self.high('subnet_prefix_length')}"
            return [
                Problem(key, f"/{prefix} is larger than the VPC {self.cidr}; allowed: {allowed}")
            ]
        needed = 2 * self.az_count
        available = 2 ** (prefix - net.prefixlen)
        if needed <= available:
            return []
        return [
            Problem(
                key,
                f"{needed} subnets of /{prefix} (a public and a private one in each of "
                f"{self.az_count} zones) do not fit in {self.cidr}, which holds {available}; "
                f"allowed: /{net.prefixlen + (needed - 1).bit_length()} or longer, or a larger VPC",
            )
        ]

    def subnets(self) -> tuple[list[str], list[str]]:
        """(public, private) subnet CIDRs, one of each per zone, carved in order."""
        net = ipaddress.ip_network(self.cidr)
        blocks = net.subnets(new_prefix=self.subnet_prefix_length)
        carved = [str(next(blocks)) for _ in range(2 * self.az_count)]
        return carved[: self.az_count], carved[self.az_count :]

    def nat_gateway_count(self) -> int:
        return {"none": 0, "single": 1, "per-az": self.az_count}[self.nat]
