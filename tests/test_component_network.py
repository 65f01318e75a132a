"""The network component on its own (backbone.synth.synth_component): each NAT strategy, the
zones it picks, flow logs and interface endpoints, with nothing but its config section."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from backbone.plan import Plan
from backbone.synth import synth_component
from infra.components.network import Network
from infra.config import NetworkConfig
from tests.network_checks import ENDPOINT, NAT, check_network, subnets

FLOW_LOG = "aws:ec2/flowLog:FlowLog"


def network(region: str = "us-east-1", **settings: Any) -> Plan:
    """The plan of one Network made from `settings` (NetworkConfig's field names)."""
    cfg = NetworkConfig(**settings)

    def build() -> dict[str, Any]:
        net = Network("network", cfg, region=region)
        return {"zones": net.availability_zones, "nats": len(net.nat_gateways)}

    return synth_component(build, region=region)


@pytest.mark.parametrize(
    ("nat", "azs", "count"),
    [("none", 2, 0), ("single", 2, 1), ("single", 3, 1), ("per-az", 3, 3)],
)
def test_each_nat_strategy_holds_the_network_invariants(nat, azs, count):
    plan = network(cidr="10.40.0.0/16", nat=nat, az_count=azs)
    check_network(plan, azs=azs, nat=count, cidr="10.40.0.0/16")
    assert plan.outputs["nats"] == count


def test_a_single_nat_sits_in_the_first_zone():
    plan = network(nat="single", az_count=3)
    (gateway,) = plan.of_type(NAT)
    assert gateway.name == "network-nat-a"
    assert gateway.inputs["subnetId"] == subnets(plan, "public")[0].id


def test_zones_where_eks_cannot_run_are_skipped():
    # us-east-1c is use1-az3 here, where EKS cannot place a control plane.
    assert network(az_count=3).outputs["zones"] == ["us-east-1a", "us-east-1b", "us-east-1d"]
    assert network("us-west-2", az_count=2).outputs["zones"] == ["us-west-2a", "us-west-2b"]


def test_more_zones_than_the_region_offers_is_refused_naming_the_setting():
    with pytest.raises(pulumi.RunError, match=r"network\.azCount: 4 zones asked for") as err:
        network("us-west-1", az_count=4)
    assert "allowed: 1 to" in str(err.value)


def test_no_flow_logs_unless_asked():
    plan = network()
    assert not plan.of_type(FLOW_LOG)
    assert not plan.of_type("aws:cloudwatch/logGroup:LogGroup")


def test_flow_logs_capture_all_traffic_to_their_own_log_group_with_a_minimal_role():
    plan = network(flow_logs=True, flow_logs_retention_days=90)
    flow = plan.one(FLOW_LOG)
    group = plan.one("aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    role = plan.one("aws:iam/role:Role", "network-flow-logs")
    policy = plan.one("aws:iam/rolePolicy:RolePolicy", "network-flow-logs")
    assert flow.inputs["trafficType"] == "ALL"
    assert flow.inputs["logDestinationType"] == "cloud-watch-logs"
    assert flow.inputs["vpcId"] == plan.one("aws:ec2/vpc:Vpc").id
    assert group.inputs["retentionInDays"] == 90
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    (stmt,) = json.loads(policy.inputs["policy"])["Statement"]
    # Only what flow logs need, on this log group only: no wildcard actions or resources.
    assert sorted(stmt["Action"]) == [
        "logs:CreateLogStream",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
    ]
    assert all(res.startswith("arn:aws:logs:us-east-1:") for res in stmt["Resource"])
    assert flow.inputs["logDestination"] == stmt["Resource"][0]


def test_interface_endpoints_sit_in_the_private_subnets_open_to_the_vpc_on_443_only():
    plan = network(cidr="10.50.0.0/16", interface_endpoints=["ecr.api", "sts"])
    interface = [e for e in plan.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] == "Interface"]
    assert sorted(e.inputs["serviceName"] for e in interface) == [
        "com.amazonaws.us-east-1.ecr.api",
        "com.amazonaws.us-east-1.sts",
    ]
    group = plan.one("aws:ec2/securityGroup:SecurityGroup", "network-endpoints")
    private = sorted(s.id for s in subnets(plan, "private"))
    for endpoint in interface:
        assert endpoint.inputs["privateDnsEnabled"] is True
        assert sorted(endpoint.inputs["subnetIds"]) == private
        assert endpoint.inputs["securityGroupIds"] == [group.id]
    (rule,) = plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.inputs["securityGroupId"] == group.id
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["cidrIpv4"]) == (
        443,
        443,
        "10.50.0.0/16",
    )
