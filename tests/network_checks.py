"""Invariants every AWS stack's network must hold, asserted over the Plan."""

from __future__ import annotations

import ipaddress

from backbone.plan import Plan, Resource

SUBNET = "aws:ec2/subnet:Subnet"
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ASSOC = "aws:ec2/routeTableAssociation:RouteTableAssociation"
NAT = "aws:ec2/natGateway:NatGateway"
VPC = "aws:ec2/vpc:Vpc"
IGW = "aws:ec2/internetGateway:InternetGateway"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"


def subnets(plan: Plan, kind: str) -> list[Resource]:
    return sorted((s for s in plan.of_type(SUBNET) if f"-{kind}-" in s.name), key=lambda s: s.name)


def out_id(plan: Plan, r: Resource) -> str:
    """The mocked id the engine gave a resource (what other resources' inputs refer to)."""
    assert r.id, r.urn
    return r.id


def check_network(plan: Plan, *, azs: int, nat: int, cidr: str) -> None:
    vpc = plan.one(VPC)
    assert vpc.inputs["cidrBlock"] == cidr
    assert vpc.inputs["enableDnsHostnames"] is True and vpc.inputs["enableDnsSupport"] is True
    net = ipaddress.ip_network(cidr)

    public, private = subnets(plan, "public"), subnets(plan, "private")
    assert len(public) == len(private) == azs
    # One public and one private subnet in each of `azs` distinct zones.
    assert len({s.inputs["availabilityZone"] for s in public}) == azs
    assert {s.inputs["availabilityZone"] for s in public} == {
        s.inputs["availabilityZone"] for s in private
    }
    # Every subnet inside the VPC, none overlapping another.
    blocks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in public + private]
    assert all(b.subnet_of(net) for b in blocks)  # type: ignore[arg-type]
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    assert all(s.inputs["vpcId"] == vpc.id for s in public + private)
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in public + private)

    # Public subnets: one route table whose default route goes to the internet gateway.
    igw = plan.one(IGW)
    assert igw.inputs["vpcId"] == vpc.id
    routes = plan.of_type(ROUTE)
    tables = {t.id: t for t in plan.of_type(ROUTE_TABLE)}
    assoc = {a.inputs["subnetId"]: a.inputs["routeTableId"] for a in plan.of_type(ASSOC)}
    default_route = {
        r.inputs["routeTableId"]: r
        for r in routes
        if r.inputs["destinationCidrBlock"] == "0.0.0.0/0"
    }
    for s in public:
        table = assoc[s.id]
        assert table in tables
        assert default_route[table].inputs["gatewayId"] == igw.id

    # NAT gateways: the expected count, each in a public subnet of a distinct zone.
    nats = plan.of_type(NAT)
    assert len(nats) == nat
    public_ids = {s.id: s for s in public}
    assert all(n.inputs["subnetId"] in public_ids for n in nats)
    assert len({public_ids[n.inputs["subnetId"]].inputs["availabilityZone"] for n in nats}) == nat
    nat_zone = {n.id: public_ids[n.inputs["subnetId"]].inputs["availabilityZone"] for n in nats}

    # Private subnets: each its own route table; out through a NAT gateway or not at all.
    private_tables = [assoc[s.id] for s in private]
    assert len(set(private_tables)) == azs
    for s in private:
        route = default_route.get(assoc[s.id])
        if nat == 0:
            assert route is None, f"{s.name} has a way out though the stack has no NAT"
            continue
        assert route is not None and "gatewayId" not in route.inputs
        target = route.inputs["natGatewayId"]
        if nat == azs:  # one per zone: traffic stays in its own zone
            assert nat_zone[target] == s.inputs["availabilityZone"]
        else:
            assert target in nat_zone

    # With a NAT gateway, S3 through a gateway endpoint on every private route table (free;
    # ECR's image layers skip the NAT's processing charge). Without one, nothing goes out.
    gateways = [e for e in plan.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] == "Gateway"]
    if nat == 0:
        assert gateways == []
        return
    (s3,) = gateways
    assert s3.inputs["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert s3.inputs["vpcId"] == vpc.id
    assert sorted(s3.inputs["routeTableIds"]) == sorted(private_tables)
