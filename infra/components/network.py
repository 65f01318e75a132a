"""The network: a VPC with a public and a private subnet in each availability zone.

Public subnets route to an internet gateway. Private subnets each get their own route table; how
they reach the internet is the NAT strategy: `none` (no route out: isolated, free), `single` (all
zones through one NAT gateway in the first zone) or `per-az` (a NAT gateway in each zone, so a zone
outage does not cut the others off). Zones are looked up in the region, never hard-coded; subnet
CIDRs are carved from the VPC range with the standard library (NetworkConfig.subnets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from infra.config import NetworkConfig

# Zones where EKS cannot place a control plane (AWS EKS user guide, "insufficient capacity" list);
# leaving them out keeps the same subnets usable by every component.
# How long `pulumi destroy` waits for a private subnet to be free of a VPC function's interfaces.
SUBNET_DELETE_TIMEOUT = "60m"
EKS_UNSUPPORTED_ZONE_IDS = ["use1-az3", "usw1-az2", "cac1-az3"]


@dataclass(frozen=True)
class NetworkArgs:
    cidr: str
    az_count: int
    public_cidrs: list[str]
    private_cidrs: list[str]
    nat: Literal["none", "single", "per-az"]
    flow_logs: bool = False
    flow_logs_retention_days: int = 30

    @classmethod
    def from_config(cls, cfg: NetworkConfig) -> NetworkArgs:
        public, private = cfg.subnets()
        return cls(
            cidr=cfg.cidr,
            az_count=cfg.az_count,
            public_cidrs=public,
            private_cidrs=private,
            nat=cfg.nat,
            flow_logs=cfg.flow_logs,
            flow_logs_retention_days=cfg.flow_logs_retention_days,
        )


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    public_subnets: list[aws.ec2.Subnet]
    private_subnets: list[aws.ec2.Subnet]
    nat_gateways: list[aws.ec2.NatGateway]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        zones = aws.get_availability_zones(
            state="available",
            exclude_zone_ids=EKS_UNSUPPORTED_ZONE_IDS,
            filters=[
                aws.GetAvailabilityZonesFilterArgs(
                    name="opt-in-status", values=["opt-in-not-required"]
                )
            ],
            opts=pulumi.InvokeOptions(parent=self),
        )
        if len(zones.names) < args.az_count:
            raise pulumi.RunError(
                f"network.azCount: {args.az_count} zones asked for, but the region offers "
                f"{len(zones.names)} usable ones ({', '.join(zones.names)}); allowed: 1 to "
                f"{len(zones.names)} here"
            )
        self.availability_zones = list(zones.names[: args.az_count])

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{name}-vpc"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags={"Name": f"{name}-igw"}, opts=child
        )

        # Public side: one route table, default route to the internet gateway.
        public_rt = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=self.vpc.id, tags={"Name": f"{name}-public"}, opts=child
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )

        self.public_subnets = []
        self.private_subnets = []
        for i, zone in enumerate(self.availability_zones):
            suffix = zone[-1]
            pub = aws.ec2.Subnet(
                f"{name}-public-{suffix}",
                vpc_id=self.vpc.id,
                cidr_block=args.public_cidrs[i],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-public-{suffix}", "kubernetes.io/role/elb": "1"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{suffix}", subnet_id=pub.id, route_table_id=public_rt.id, opts=child
            )
            priv = aws.ec2.Subnet(
                f"{name}-private-{suffix}",
                vpc_id=self.vpc.id,
                cidr_block=args.private_cidrs[i],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-private-{suffix}", "kubernetes.io/role/internal-elb": "1"},
                # A function in the VPC leaves network interfaces that Lambda releases up to
                # ~40 minutes after the function is gone; the subnet's delete waits for them
                # (the provider retries DependencyViolation until this timeout, default 20m).
                opts=pulumi.ResourceOptions(
                    parent=self, custom_timeouts=pulumi.CustomTimeouts(delete=SUBNET_DELETE_TIMEOUT)
                ),
            )
            self.public_subnets.append(pub)
            self.private_subnets.append(priv)

        # NAT gateways: none, one in the first zone, or one per zone; each in a public subnet.
        nat_count = {"none": 0, "single": 1, "per-az": args.az_count}[args.nat]
        self.nat_gateways = []
        for i in range(nat_count):
            suffix = self.availability_zones[i][-1]
            eip = aws.ec2.Eip(
                f"{name}-nat-{suffix}",
                domain="vpc",
                tags={"Name": f"{name}-nat-{suffix}"},
                opts=child,
            )
            self.nat_gateways.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{suffix}",
                    allocation_id=eip.allocation_id,
                    subnet_id=self.public_subnets[i].id,
                    connectivity_type="public",
                    tags={"Name": f"{name}-nat-{suffix}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )

        # Private side: a route table per zone, so `per-az` keeps traffic in its own zone.
        for i, zone in enumerate(self.availability_zones):
            suffix = zone[-1]
            rt = aws.ec2.RouteTable(
                f"{name}-private-{suffix}",
                vpc_id=self.vpc.id,
                tags={"Name": f"{name}-private-{suffix}"},
                opts=child,
            )
            if self.nat_gateways:
                nat = self.nat_gateways[i if args.nat == "per-az" else 0]
                aws.ec2.Route(
                    f"{name}-private-{suffix}-default",
                    route_table_id=rt.id,
                    destination_cidr_block="0.0.0.0/0",
                    nat_gateway_id=nat.id,
                    opts=child,
                )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{suffix}",
                subnet_id=self.private_subnets[i].id,
                route_table_id=rt.id,
                opts=child,
            )

        if args.flow_logs:
            self._flow_logs(name, args.flow_logs_retention_days)

        self.vpc_id = self.vpc.id
        # Where a function's network interfaces are parked when it is destroyed (see Functions).
        self.default_security_group_id = self.vpc.default_security_group_id
        self.public_subnet_ids = [s.id for s in self.public_subnets]
        self.private_subnet_ids = [s.id for s in self.private_subnets]
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "availabilityZones": self.availability_zones,
                "publicSubnetIds": self.public_subnet_ids,
                "privateSubnetIds": self.private_subnet_ids,
            }
        )

    def _flow_logs(self, name: str, retention_days: int) -> None:
        child = pulumi.ResourceOptions(parent=self)
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs", retention_in_days=retention_days, opts=child
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=group.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "logs:CreateLogStream",
                                    "logs:PutLogEvents",
                                    "logs:DescribeLogStreams",
                                ],
                                "Resource": [arn, f"{arn}:*"],
                            }
                        ],
                    }
                )
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            opts=child,
        )
