"""prod: three zones, a NAT gateway per zone, flow logs, stateful resources protected."""

from pathlib import Path

from backbone.synth import synth
from tests.network_checks import check_network

REPO = Path(__file__).resolve().parent.parent


def test_network_three_zones_nat_per_zone(plan_of):
    plan = plan_of("prod")
    check_network(plan, azs=3, nat=3, cidr="10.30.0.0/16")
    assert plan.outputs["natGatewayCount"] == 3


def test_flow_logs_record_all_traffic_kept_90_days(plan_of):
    # what flow logs are made of: tests/test_component_network.py
    plan = plan_of("prod")
    assert plan.one("aws:ec2/flowLog:FlowLog").inputs["trafficType"] == "ALL"
    group = plan.one("aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    assert group.inputs["retentionInDays"] == 90


def test_prod_database_is_multi_az_protected_and_kept(plan_of):
    plan = plan_of("prod")
    db = plan.one("aws:rds/instance:Instance")
    assert db.inputs["multiAz"] is True and db.inputs["deletionProtection"] is True
    assert db.inputs["backupRetentionPeriod"] == 14
    assert db.protect and db.retain_on_delete
    assert plan.one("aws:ecr/repository:Repository").protect
    assert plan.one("aws:ecr/repository:Repository").inputs["forceDelete"] is False


def test_prod_nodes_survive_a_drain(plan_of):
    ng = plan_of("prod").one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["scalingConfig"]["minSize"] >= 3
    assert ng["updateConfig"] == {"maxUnavailable": 1}


def test_prod_load_balancer_logs_its_access_and_resists_deletion(plan_of):
    # what the log bucket is made of: tests/test_component_loadbalancer.py
    plan = plan_of("prod")
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["enableDeletionProtection"] is True
    bucket = plan.one("aws:s3/bucket:Bucket")
    assert alb["accessLogs"]["bucket"] == bucket.id and alb["accessLogs"]["enabled"] is True
    assert bucket.protect and bucket.inputs["forceDestroy"] is False


def test_prod_filters_its_web_traffic_through_a_web_acl(plan_of):
    # what the web ACL holds: tests/test_component_loadbalancer.py
    plan = plan_of("prod")
    (assoc,) = plan.of_type("aws:wafv2/webAclAssociation:WebAclAssociation")
    assert (
        assoc.inputs["resourceArn"] == plan.one("aws:lb/loadBalancer:LoadBalancer").outputs["arn"]
    )


def test_functions_and_monitoring_are_wired(plan_of):
    plan = plan_of("prod")
    assert plan.outputs["canaryFunction"] == "backbone-prod-canary"
    assert plan.outputs["housekeepingFunction"] == "backbone-prod-housekeeping"
    assert plan.outputs["alertsTopicArn"].startswith("arn:aws:sns:us-east-1:123456789012:")
    # 15, and (issue 16) the database's memory and read/write latency, the failures queue and the
    # app's error-level log lines; (issue 17) the errors of the two password rotation functions;
    # the redirect probe's availability and latency
    assert len(plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")) == 24
    assert len(plan.of_type("aws:cloudwatch/dashboard:Dashboard")) == 1
    # the alerts topic's key is kept with the stack (what the key admits: test_component_monitoring)
    key = plan.one("aws:kms/key:Key", "monitoring-alerts-key")
    assert key.protect and key.retain_on_delete


def _variant(tmp_path, **changes):
    """prod's stack file with some settings changed, as a user would edit it."""
    import yaml

    data = yaml.safe_load((REPO / "stacks" / "Pulumi.prod.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        target = data["config"][f"backbone:{section}"]
        if field:
            target[field] = value
        else:
            data["config"][f"backbone:{section}"] = value
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data))
    return synth(str(path), cwd=REPO)


def test_lowering_protection_leaves_nothing_protected_or_retained(tmp_path):
    """What the README's tear-down steps rely on."""
    plan = _variant(tmp_path, protect=False)
    assert [r.name for r in plan if r.protect or r.retain_on_delete] == []
    assert plan.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True
