"""prod: three zones, a NAT gateway per zone, flow logs, stateful resources protected."""

import json

from tests.network_checks import check_network


def test_network_three_zones_nat_per_zone(plan_of):
    plan = plan_of("prod")
    check_network(plan, azs=3, nat=3, cidr="10.30.0.0/16")
    assert plan.outputs["natGatewayCount"] == 3
    # us-east-1c is use1-az3 here, where EKS cannot place a control plane: it is skipped.
    assert plan.outputs["availabilityZones"] == ["us-east-1a", "us-east-1b", "us-east-1d"]


def test_flow_logs_capture_all_traffic_to_a_log_group_kept_90_days(plan_of):
    plan = plan_of("prod")
    flow = plan.one("aws:ec2/flowLog:FlowLog")
    group = plan.one("aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    role = plan.one("aws:iam/role:Role", "network-flow-logs")
    policy = plan.one("aws:iam/rolePolicy:RolePolicy", "network-flow-logs")
    assert flow.inputs["trafficType"] == "ALL"
    assert flow.inputs["logDestinationType"] == "cloud-watch-logs"
    assert flow.inputs["vpcId"] == plan.one("aws:ec2/vpc:Vpc").id
    assert group.inputs["retentionInDays"] == 90
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    doc = json.loads(policy.inputs["policy"])
    (stmt,) = doc["Statement"]
    # Only what flow logs need, on this log group only: no wildcard actions or resources.
    assert sorted(stmt["Action"]) == [
        "logs:CreateLogStream",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
    ]
    assert all(res.startswith("arn:aws:logs:us-east-1:") for res in stmt["Resource"])
    assert flow.inputs["logDestination"] == stmt["Resource"][0]
