"""dev: a small, cheap copy of production: two zones, one NAT gateway, nothing protected."""

import json

from tests.network_checks import check_network

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def test_network_two_zones_one_nat(plan_of):
    plan = plan_of("dev")
    check_network(plan, azs=2, nat=1, cidr="10.20.0.0/16")
    assert plan.outputs["natGatewayCount"] == 1
    assert plan.outputs["availabilityZones"] == ["us-east-1a", "us-east-1b"]


def test_nothing_protected_and_no_flow_logs(plan_of):
    plan = plan_of("dev")
    assert not [r.name for r in plan if r.protect]
    assert not plan.of_type("aws:ec2/flowLog:FlowLog")


def test_dev_is_small_and_cheap(plan_of):
    plan = plan_of("dev")
    ng = plan.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert ng["instanceTypes"] == ["t4g.medium"]  # Graviton: t3.medium's size, 19% cheaper
    assert ng["amiType"] == "AL2023_ARM_64_STANDARD"
    assert ng["scalingConfig"] == {"desiredSize": 2, "maxSize": 3, "minSize": 2}
    db = plan.one("aws:rds/instance:Instance")
    assert db.inputs["instanceClass"] == "db.t4g.micro"
    assert db.inputs["multiAz"] is False and db.inputs["deletionProtection"] is False
    # a week of backups even here (issue 17: the restore runbook needs something to restore)
    assert db.inputs["backupRetentionPeriod"] == 7
    assert not db.protect and not db.retain_on_delete
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["enableDeletionProtection"] is False and "accessLogs" not in alb
    # images and the repository go with `pulumi destroy` in dev
    assert plan.one("aws:ecr/repository:Repository").inputs["forceDelete"] is True


def test_functions_and_monitoring_are_wired(plan_of):
    plan = plan_of("dev")
    assert plan.outputs["canaryFunction"] == "backbone-dev-canary"
    assert plan.outputs["housekeepingFunction"] == "backbone-dev-housekeeping"
    assert plan.outputs["alertsTopicArn"].startswith("arn:aws:sns:us-east-1:123456789012:")
    # 15, and (issue 16) the database's memory and read/write latency, the failures queue and the
    # app's error-level log lines; (issue 17) the errors of the two password rotation functions;
    # the redirect probe's availability and latency
    assert len(plan.of_type(ALARM)) == 24
    assert len(plan.of_type("aws:cloudwatch/dashboard:Dashboard")) == 1


def test_the_dashboard_shows_the_cluster_and_every_canary_probe(plan_of):
    plan = plan_of("dev")
    board = json.loads(plan.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    headings = [w["properties"]["markdown"] for w in board["widgets"] if w["type"] == "text"]
    assert headings == [
        "## Load balancer",
        "## The app, as a user sees it (canary)",
        "## Database",
        "## Functions",
        "## The housekeeping job",
        "## The cluster's app and the failures queue",
    ]
    graphs = {w["properties"]["title"]: w for w in board["widgets"] if w["type"] == "metric"}
    for title in ("Availability (1 = up)", "Latency (ms)"):
        lines = graphs[title]["properties"]["metrics"]
        assert [line[5] for line in lines] == ["health", "read", "redirect"], title


def test_the_canary_alarms_point_at_the_load_balancers_alarms(plan_of):
    plan = plan_of("dev")
    names = {a.inputs["name"] for a in plan.of_type(ALARM)}
    assert {"backbone-dev-alb-5xx-rate", "backbone-dev-alb-unhealthy-hosts"} <= names
    for probe in ("health", "read"):
        text = plan.one(ALARM, f"monitoring-canary-{probe}-availability").inputs["alarmDescription"]
        assert "the load balancer's unhealthy-hosts and 5xx alarms" in text
        assert "host-reboot" not in text  # no host here
        assert "CloudWatch Logs group /aws/lambda/backbone-dev-canary; Logs Insights:" in text
