"""prod: three zones, a NAT gateway per zone, flow logs, stateful resources protected."""

import json
from pathlib import Path

from backbone.synth import synth
from tests.network_checks import check_network

REPO = Path(__file__).resolve().parent.parent


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


def test_prod_load_balancer_logs_to_a_locked_bucket_and_resists_deletion(plan_of):
    plan = plan_of("prod")
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["enableDeletionProtection"] is True
    bucket = plan.one("aws:s3/bucket:Bucket")
    assert alb["accessLogs"] == {"bucket": bucket.id, "enabled": True, "prefix": "alb"}
    assert bucket.protect and bucket.inputs["forceDestroy"] is False
    block = plan.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(
        block[k]
        for k in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )
    policy = json.loads(plan.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    write = policy["Statement"][0]
    # us-east-1's Elastic Load Balancing account writes the logs, under this account's prefix
    assert write["Principal"] == {"AWS": "arn:aws:iam::127311923021:root"}
    assert write["Resource"] == f"arn:aws:s3:::{bucket.id}/alb/AWSLogs/123456789012/*"
    sse = plan.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"


def test_functions_and_monitoring_are_wired(plan_of):
    plan = plan_of("prod")
    assert plan.outputs["canaryFunction"] == "backbone-prod-canary"
    assert plan.outputs["housekeepingFunction"] == "backbone-prod-housekeeping"
    assert plan.outputs["alertsTopicArn"].startswith("arn:aws:sns:us-east-1:123456789012:")
    # 15, and (issue 16) the database's memory and read/write latency, the failures queue and the
    # app's error-level log lines
    assert len(plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")) == 20
    assert len(plan.of_type("aws:cloudwatch/dashboard:Dashboard")) == 1


def test_alb_switches_on_logging_only_after_the_bucket_policy(plan_of):
    plan = plan_of("prod")
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    for t in (
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    ):
        assert plan.one(t).urn in alb.dependencies


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


def test_with_a_certificate_http_redirects_to_tls13_https(tmp_path):
    cert = "arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-0b0a-0908-0706-050403020100"
    plan = _variant(
        tmp_path, **{"loadbalancer.certificateArn": cert, "loadbalancer.domainName": None}
    )
    listeners = {r.inputs["port"]: r.inputs for r in plan.of_type("aws:lb/listener:Listener")}
    assert listeners[80]["defaultActions"] == [
        {
            "redirect": {"port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"},
            "type": "redirect",
        }
    ]
    https = listeners[443]
    assert https["protocol"] == "HTTPS" and https["certificateArn"] == cert
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["defaultActions"][0]["type"] == "forward"
    assert plan.outputs["url"].startswith("https://")


def test_access_logs_expire_after_90_days(plan_of):
    rule = plan_of("prod").one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    (r,) = rule.inputs["rules"]
    assert r["status"] == "Enabled" and r["expiration"] == {"days": 90}
    assert r["filter"] == {"prefix": "alb/"}


def test_lowering_protection_leaves_nothing_protected_or_retained(tmp_path):
    """What the README's tear-down steps rely on."""
    plan = _variant(tmp_path, protect=False)
    assert [r.name for r in plan if r.protect or r.retain_on_delete] == []
    assert plan.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True
