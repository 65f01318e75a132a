"""Security-group rules in the one shape the kit uses: TCP on one port, from (or to) an address
range or another security group, each with a description that says why it is open.

    sg.allow_in("web-in-80", group.id, 80, "HTTP from the internet", cidr="0.0.0.0/0", opts=child)
    sg.allow_out("web-out-db", group.id, 5432, "PostgreSQL", peer=database_group.id, opts=child)

Exactly one of `cidr` (an IPv4 range) or `peer` (the other security group's id) is given.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


def _peer(cidr: pulumi.Input[str] | None, peer: pulumi.Input[str] | None) -> None:
    if (cidr is None) == (peer is None):
        raise ValueError("a security group rule takes exactly one of cidr or peer")


def allow_in(
    resource_name: str,
    group_id: pulumi.Input[str],
    port: pulumi.Input[int],
    description: str,
    *,
    cidr: pulumi.Input[str] | None = None,
    peer: pulumi.Input[str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> aws.vpc.SecurityGroupIngressRule:
    """Admit TCP on `port` into `group_id` from `cidr` or from the security group `peer`."""
    _peer(cidr, peer)
    return aws.vpc.SecurityGroupIngressRule(
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


def allow_out(
    resource_name: str,
    group_id: pulumi.Input[str],
    port: pulumi.Input[int],
    description: str,
    *,
    cidr: pulumi.Input[str] | None = None,
    peer: pulumi.Input[str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> aws.vpc.SecurityGroupEgressRule:
    """Let `group_id` reach TCP `port` in `cidr` or in the security group `peer`."""
    _peer(cidr, peer)
    return aws.vpc.SecurityGroupEgressRule(
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
