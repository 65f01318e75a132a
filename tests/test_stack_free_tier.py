"""free-tier: a learner's own account: no NAT gateway (never free), two zones."""

import json

from tests.network_checks import check_network


def test_network_has_no_nat_and_private_subnets_are_isolated(plan_of):
    plan = plan_of("free-tier")
    check_network(plan, azs=2, nat=0, cidr="10.10.0.0/16")
    assert not plan.of_type("aws:ec2/eip:Eip")
    assert plan.outputs["natGatewayCount"] == 0


def test_every_aws_resource_uses_the_one_tagged_provider(plan_of):
    plan = plan_of("free-tier")
    provider = plan.one("pulumi:providers:aws")
    # Provider inputs reach the engine as strings, objects as JSON (as in a real preview).
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    assert tags["backbone:stack"] == "free-tier"
    assert tags["managed-by"] == "pulumi"
    aws = [r for r in plan.managed() if r.package == "aws"]
    assert aws and all(r.provider == provider.urn for r in aws)


def test_monitoring_is_a_billing_alarm_inside_the_always_free_allowances(plan_of):
    from tests.test_monitoring import FREE, free_tier_usage

    plan = plan_of("free-tier")
    assert not plan.of_type("aws:lambda/function:Function")  # no load balancer or database
    (alarm,) = plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert alarm.inputs["metricName"] == "EstimatedCharges" and alarm.inputs["threshold"] == 5
    assert not plan.of_type("aws:kms/key:Key")  # a customer key is $1/month
    usage = free_tier_usage(plan)
    assert all(usage[k] <= FREE[k] for k in FREE), usage
