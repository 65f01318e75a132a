"""Security-group rules in the one shape the kit uses: TCP on one port, from (or to) an address
range or another security group, each with a description that says why it is open.

    sg.allow_in("web-in-80", group.id, 80, "HTTP from the internet", cidr="0.0.0.0/0", opts=child)
    sg.allow_out("web-out-db", group.id, 5432, "PostgreSQL", peer=database_group.id, opts=child)

Exactly one of `cidr` (an IPv4 range) or `peer` (the other security group's id) is given.
"""

from __future__ import annotations

import functools
from typing import Literal

import pulumi
import pulumi_aws as aws

Rule = aws.vpc.SecurityGroupIngressRule | aws.vpc.SecurityGroupEgressRule


def allow(
    direction: Literal["in", "out"],
    resource_name: str,
    group_id: pulumi.Input[str],
    port: pulumi.Input[int],
    description: str,
    *,
    cidr: pulumi.Input[str] | None = None,
    peer: pulumi.Input[str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> Rule:
    """Admit TCP on `port` into `group_id` (`in`), or let `group_id` reach it (`out`), from or
    to `cidr` or the security group `peer`."""
    if (cidr is None) == (peer is None):
        raise ValueError("a security group rule takes exactly one of cidr or peer")
    kind = (
        aws.vpc.SecurityGroupIngressRule if direction == "in" else aws.vpc.SecurityGroupEgressRule
    )
    return kind(
        resource_name,
        security_group_id=group_id,
        cidr_ipv4=cidr,
        referenced_security_group_id=peer,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        description=description,
        opts=opts,
    )


allow_in = functools.partial(allow, "in")
"""An ingress rule: allow("in", ...)."""
allow_out = functools.partial(allow, "out")
"""An egress rule: allow("out", ...)."""
