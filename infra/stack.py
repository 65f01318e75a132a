"""build(config): compose the components for a stack and pass outputs between them."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.network import Network, NetworkArgs
from infra.config import StackConfig


def aws_provider(cfg: StackConfig) -> aws.Provider:
    """The one AWS provider: region from the stack, tags on every resource via default_tags."""
    tags = {
        "backbone:project": pulumi.get_project(),
        "backbone:stack": cfg.stack,
        "managed-by": "pulumi",
        **cfg.tags,
    }
    return aws.Provider(
        "aws",
        region=cfg.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
    )


def build(cfg: StackConfig) -> dict[str, Any]:
    """Register the stack's resources; return the stack outputs."""
    if cfg.target == "docker":
        # The local stack runs on the user's own Docker engine and registers no AWS resource.
        return {"target": "docker"}

    provider = aws_provider(cfg)
    opts = pulumi.ResourceOptions(providers={"aws": provider})
    network = Network("network", NetworkArgs.from_config(cfg.network), opts=opts)
    return {
        "region": cfg.region,
        "vpcId": network.vpc_id,
        "availabilityZones": network.availability_zones,
        "publicSubnetIds": network.public_subnet_ids,
        "privateSubnetIds": network.private_subnet_ids,
        "natGatewayCount": len(network.nat_gateways),
    }
