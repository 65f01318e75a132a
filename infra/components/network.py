"""The network: a VPC with a public and a private subnet in each availability zone.

Public subnets route to an internet gateway. Private subnets each get their own route table; how
they reach the internet is the NAT strategy: `none` (no route out: isolated, free), `single` (all
zones through one NAT gateway in the first zone) or `per-az` (a NAT gateway in each zone, so a zone
outage does not cut the others off). Zones are looked up in the region, never hard-coded; subnet
CIDRs are carved from the VPC range with the standard library (NetworkConfig.subnets).

With a NAT gateway, an S3 gateway endpoint sits on every private route table (free; ECR serves
image layers from S3, so pulls skip the NAT gateway's processing charge). Interface endpoints for ECR and STS are optional
(`interfaceEndpoints`), priced per zone-hour and per GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components import iam, sg
from infra.config import NetworkConfig

# How long `pulumi destroy` waits for a private subnet to be free of a VPC function's interfaces.
SUBNET_DELETE_TIMEOUT = "60m"
# Zones where EKS cannot place a control plane (AWS EKS user guide, "insufficient capacity" list);
# leaving them out keeps the same subnets usable by every component.
EKS_UNSUPPORTED_ZONE_IDS = ["use1-az3", "usw1-az2", "cac1-az3"]


@dataclass(frozen=True)
class Subnets:
    public: list[aws.ec2.Subnet]
    private: list[aws.ec2.Subnet]


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    public_subnets: list[aws.ec2.Subnet]
    private_subnets: list[aws.ec2.Subnet]
    nat_gateways: list[aws.ec2.NatGateway]
    private_route_tables: list[aws.ec2.RouteTable]

    def __init__(
        self,
        name: str,
        cfg: NetworkConfig,
        *,
        region: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:network:Network", name, None, opts)
        self._name, self._cfg, self._region = name, cfg, region
        self.availability_zones = self._zones()
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cfg.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{name}-vpc"},
            opts=self._child(),
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags={"Name": f"{name}-igw"}, opts=self._child()
        )
        public_rt = self._public_route_table(igw)
        subnets = self._subnets(public_rt)
        self.public_subnets, self.private_subnets = subnets.public, subnets.private
        self.nat_gateways = self._nat_gateways(igw)
        self.private_route_tables = self._private_route_tables()
        self.s3_endpoint = self._s3_endpoint()
        self.interface_endpoints = self._interface_endpoints()
        if cfg.flow_logs:
            self._flow_logs()

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

    def _child(self, **extra: object) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **extra)  # type: ignore[arg-type]

    def _zones(self) -> list[str]:
        """The first azCount usable zones of the region (EKS-capable, no opt-in needed)."""
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
        count = self._cfg.az_count
        if len(zones.names) < count:
            raise pulumi.RunError(
                f"network.azCount: {count} zones asked for, but the region offers "
                f"{len(zones.names)} usable ones ({', '.join(zones.names)}); allowed: 1 to "
                f"{len(zones.names)} here"
            )
        return list(zones.names[:count])

    def _public_route_table(self, igw: aws.ec2.InternetGateway) -> aws.ec2.RouteTable:
        """Public side: one route table, default route to the internet gateway."""
        name = self._name
        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=self.vpc.id,
            tags={"Name": f"{name}-public"},
            opts=self._child(),
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=self._child(),
        )
        return public_rt

    def _subnets(self, public_rt: aws.ec2.RouteTable) -> Subnets:
        name = self._name
        public_cidrs, private_cidrs = self._cfg.subnets()
        out = Subnets(public=[], private=[])
        for i, zone in enumerate(self.availability_zones):
            suffix = zone[-1]
            pub = aws.ec2.Subnet(
                f"{name}-public-{suffix}",
                vpc_id=self.vpc.id,
                cidr_block=public_cidrs[i],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-public-{suffix}", "kubernetes.io/role/elb": "1"},
                opts=self._child(),
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{suffix}",
                subnet_id=pub.id,
                route_table_id=public_rt.id,
                opts=self._child(),
            )
            priv = aws.ec2.Subnet(
                f"{name}-private-{suffix}",
                vpc_id=self.vpc.id,
                cidr_block=private_cidrs[i],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-private-{suffix}", "kubernetes.io/role/internal-elb": "1"},
                # A function in the VPC leaves network interfaces that Lambda releases up to
                # ~40 minutes after the function is gone; the subnet's delete waits for them
                # (the provider retries DependencyViolation until this timeout, default 20m).
                opts=self._child(
                    custom_timeouts=pulumi.CustomTimeouts(delete=SUBNET_DELETE_TIMEOUT)
                ),
            )
            out.public.append(pub)
            out.private.append(priv)
        return out

    def _nat_gateways(self, igw: aws.ec2.InternetGateway) -> list[aws.ec2.NatGateway]:
        """None, one in the first zone, or one per zone; each in a public subnet."""
        name, out = self._name, []
        for i in range(self._cfg.nat_gateway_count()):
            suffix = self.availability_zones[i][-1]
            eip = aws.ec2.Eip(
                f"{name}-nat-{suffix}",
                domain="vpc",
                tags={"Name": f"{name}-nat-{suffix}"},
                opts=self._child(),
            )
            out.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{suffix}",
                    allocation_id=eip.allocation_id,
                    subnet_id=self.public_subnets[i].id,
                    connectivity_type="public",
                    tags={"Name": f"{name}-nat-{suffix}"},
                    opts=self._child(depends_on=[igw]),
                )
            )
        return out

    def _private_route_tables(self) -> list[aws.ec2.RouteTable]:
        """A route table per zone, so `per-az` keeps traffic in its own zone."""
        name, out = self._name, []
        for i, zone in enumerate(self.availability_zones):
            suffix = zone[-1]
            rt = aws.ec2.RouteTable(
                f"{name}-private-{suffix}",
                vpc_id=self.vpc.id,
                tags={"Name": f"{name}-private-{suffix}"},
                opts=self._child(),
            )
            if self.nat_gateways:
                nat = self.nat_gateways[i if self._cfg.nat == "per-az" else 0]
                aws.ec2.Route(
                    f"{name}-private-{suffix}-default",
                    route_table_id=rt.id,
                    destination_cidr_block="0.0.0.0/0",
                    nat_gateway_id=nat.id,
                    opts=self._child(),
                )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{suffix}",
                subnet_id=self.private_subnets[i].id,
                route_table_id=rt.id,
                opts=self._child(),
            )
            out.append(rt)
        return out

    def _s3_endpoint(self) -> aws.ec2.VpcEndpoint | None:
        """S3 through the private route tables: free, and image layers skip NAT processing
        (with no NAT gateway nothing in the private subnets goes out, so none is made)."""
        if not self.nat_gateways:
            return None
        return aws.ec2.VpcEndpoint(
            f"{self._name}-s3",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{self._region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in self.private_route_tables],
            tags={"Name": f"{self._name}-s3"},
            opts=self._child(),
        )

    def _interface_endpoints(self) -> list[aws.ec2.VpcEndpoint]:
        """ECR and STS inside the VPC (private DNS), reachable on 443 from the VPC only."""
        services = self._cfg.interface_endpoints
        if not services:
            return []
        name = self._name
        group = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            vpc_id=self.vpc.id,
            description="Interface VPC endpoints: HTTPS from inside the VPC",
            tags={"Name": f"{name}-endpoints"},
            opts=self._child(),
        )
        sg.allow_in(
            f"{name}-endpoints-https",
            group.id,
            443,
            "HTTPS from the VPC",
            cidr=self._cfg.cidr,
            opts=self._child(),
        )
        return [
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{self._region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in self.private_subnets],
                security_group_ids=[group.id],
                tags={"Name": f"{name}-{service}"},
                opts=self._child(),
            )
            for service in services
        ]

    def _flow_logs(self) -> None:
        name = self._name
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            retention_in_days=self._cfg.flow_logs_retention_days,
            opts=self._child(),
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=iam.trust("vpc-flow-logs.amazonaws.com"),
            opts=self._child(),
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=group.arn.apply(
                lambda arn: iam.document(
                    [
                        {
                            "Effect": "Allow",
                            "Action": [
                                "logs:CreateLogStream",
                                "logs:PutLogEvents",
                                "logs:DescribeLogStreams",
                            ],
                            "Resource": [arn, f"{arn}:*"],
                        }
                    ]
                )
            ),
            opts=self._child(),
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            opts=self._child(),
        )
