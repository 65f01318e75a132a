"""The AWS platform (registry, cluster, database, load balancer) as planned for dev and prod.

Invariants both stacks must hold; what differs between them is in test_stack_dev/prod.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.network_checks import subnets

STACKS = ["dev", "prod"]


@pytest.fixture(params=STACKS)
def plan(request, plan_of):
    return plan_of(request.param)


def _sg_rules(plan, sg_id, kind="Ingress"):
    token = f"aws:vpc/securityGroup{kind}Rule:SecurityGroup{kind}Rule"
    return [r for r in plan.of_type(token) if r.inputs["securityGroupId"] == sg_id]


# -- registry -------------------------------------------------------------------------------


def test_registry_repository_is_immutable_scanned_and_pruned(plan):
    repo = plan.one("aws:ecr/repository:Repository")
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    policy = json.loads(plan.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    (rule,) = policy["rules"]
    assert rule["selection"]["countType"] == "imageCountMoreThan"
    assert rule["selection"]["countNumber"] == 10
    assert rule["action"] == {"type": "expire"}


def test_image_is_tagged_by_content_pushed_with_ecr_token_and_run_by_digest(plan):
    repo_url = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{plan.one('aws:ecr/repository:Repository').id}"
    image = plan.one("docker:index/image:Image")
    name, tag = image.inputs["imageName"].rsplit(":", 1)
    assert name == repo_url
    assert re.fullmatch(r"[0-9a-f]{16}-(amd64|arm64)", tag)
    assert image.inputs["build"]["platform"] == "linux/amd64"
    assert image.inputs["build"]["dockerfile"].endswith("app/Dockerfile")
    registry = image.inputs["registry"]
    assert registry["server"] == repo_url.split("/")[0]
    assert registry["username"] == "AWS"
    assert registry["password"] == "[secret]"
    assert (
        plan.outputs["imageRef"]
        == f"{repo_url}@sha256:" + plan.outputs["imageRef"].split("@sha256:")[1]
    )


def test_content_tag_changes_with_the_source(tmp_path):
    from infra.components.registry import context_tag

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("__pycache__\n*.pyc\n")
    first = context_tag(tmp_path, "linux/amd64")
    (tmp_path / "x.pyc").write_text("ignored")
    assert context_tag(tmp_path, "linux/amd64") == first
    (tmp_path / "app.py").write_text("print(1)\n")
    assert context_tag(tmp_path, "linux/amd64") != first


# -- database ---------------------------------------------------------------------------------


def test_database_engine_storage_tls_backups_and_secret_password(plan):
    db = plan.one("aws:rds/instance:Instance")
    i = db.inputs
    assert i["engine"] == "postgres" and i["engineVersion"] == "17"
    assert i["engineLifecycleSupport"] == "open-source-rds-extended-support-disabled"
    assert i["storageEncrypted"] is True and i["publiclyAccessible"] is False
    assert i["skipFinalSnapshot"] is False and i["finalSnapshotIdentifier"]
    assert i["password"] == "[secret]"
    params = plan.one("aws:rds/parameterGroup:ParameterGroup")
    assert params.inputs["family"] == "postgres17"
    assert {(p["name"], p["value"]) for p in params.inputs["parameters"]} >= {
        ("rds.force_ssl", "1")
    }
    assert i["parameterGroupName"] == params.id


def test_database_subnets_span_two_private_zones(plan):
    group = plan.one("aws:rds/subnetGroup:SubnetGroup")
    private = {s.id: s.inputs["availabilityZone"] for s in subnets(plan, "private")}
    assert set(group.inputs["subnetIds"]) == set(private)
    assert len(set(private.values())) >= 2


def test_database_admits_exactly_the_nodes_on_5432(plan):
    db = plan.one("aws:rds/instance:Instance")
    sg = plan.one("aws:ec2/securityGroup:SecurityGroup", "database-sg")
    assert db.inputs["vpcSecurityGroupIds"] == [sg.id]
    # the cluster security group EKS gives the managed nodes, as the engine returned it
    node_sg = plan.one("aws:eks/cluster:Cluster").outputs["vpcConfig"]["clusterSecurityGroupId"]
    job_sg = plan.one("aws:ec2/securityGroup:SecurityGroup", "functions-housekeeping-sg").id
    # ...and the password rotation functions (tests/test_password_rotation.py)
    rotation_sg = plan.one("aws:ec2/securityGroup:SecurityGroup", "rotation-sg").id
    rules = _sg_rules(plan, sg.id)
    assert sorted(r.inputs["referencedSecurityGroupId"] for r in rules) == sorted(
        [node_sg, job_sg, rotation_sg]
    )
    for rule in rules:
        assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (
            5432,
            5432,
            "tcp",
        )
        assert "cidrIpv4" not in rule.inputs
    assert not _sg_rules(plan, sg.id, "Egress") and "egress" not in sg.inputs


# -- load balancer -----------------------------------------------------------------------------


def test_alb_public_two_zones_drops_invalid_headers(plan):
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    assert alb.inputs["loadBalancerType"] == "application" and alb.inputs["internal"] is False
    public = {s.id: s.inputs["availabilityZone"] for s in subnets(plan, "public")}
    assert set(alb.inputs["subnets"]) == set(public) and len(set(public.values())) >= 2
    assert alb.inputs["dropInvalidHeaderFields"] is True


def test_alb_security_group_admits_80_and_443_only_and_reaches_the_node_ports_only(plan):
    sg = plan.one("aws:ec2/securityGroup:SecurityGroup", "web-sg")
    ingress = _sg_rules(plan, sg.id)
    # 443 only where a listener serves it (prod has TLS; dev, without a certificate, does not)
    listening = sorted(r.inputs["port"] for r in plan.of_type("aws:lb/listener:Listener"))
    assert listening == ([80, 443] if plan.stack == "prod" else [80])
    assert sorted(
        (r.inputs["fromPort"], r.inputs["toPort"], r.inputs["cidrIpv4"]) for r in ingress
    ) == [(port, port, "0.0.0.0/0") for port in listening]
    # out: the app's node port and the Service's health check node port, inside the VPC only
    tg = plan.one("aws:lb/targetGroup:TargetGroup").inputs
    ports = sorted([tg["port"], int(tg["healthCheck"]["port"])])
    egress = _sg_rules(plan, sg.id, "Egress")
    assert sorted((r.inputs["fromPort"], r.inputs["toPort"]) for r in egress) == [
        (p, p) for p in ports
    ]
    vpc = plan.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"]
    assert {r.inputs["cidrIpv4"] for r in egress} == {vpc}


def test_target_group_checks_the_nodes_service_health_port_and_targets_the_node_group(plan):
    tg = plan.one("aws:lb/targetGroup:TargetGroup")
    assert tg.inputs["targetType"] == "instance" and tg.inputs["port"] == 30080
    # kube-proxy's /healthz on the Service's health check node port: 200 only while this node
    # holds a ready app pod (externalTrafficPolicy Local), so a node without one leaves the group
    check = tg.inputs["healthCheck"]
    assert (check["path"], check["port"], check["matcher"]) == ("/healthz", "30081", "200")
    service = next(
        r.inputs
        for r in plan.of_type("kubernetes:core/v1:Service")
        if r.inputs["metadata"]["name"] == "shortener"
    )
    assert service["spec"]["healthCheckNodePort"] == int(check["port"])
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    # only the app's port is a target: the metrics port (9464) is no port of the load balancer's
    assert tg.inputs["port"] == service["spec"]["ports"][0]["nodePort"]
    assert all(r.inputs["port"] in (80, 443) for r in plan.of_type("aws:lb/listener:Listener"))
    (attachment,) = plan.of_type("aws:autoscaling/attachment:Attachment")
    assert attachment.inputs["lbTargetGroupArn"] == tg.id
    assert attachment.inputs["autoscalingGroupName"].startswith("eks-cluster-nodes-")
    (to_nodes,) = [
        r
        for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.name == "web-to-targets-0"
    ]
    assert to_nodes.inputs["fromPort"] == to_nodes.inputs["toPort"] == 30080
    (health,) = [
        r
        for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.name == "web-health-to-targets-0"
    ]
    assert health.inputs["fromPort"] == health.inputs["toPort"] == 30081
    assert (
        health.inputs["referencedSecurityGroupId"] == to_nodes.inputs["referencedSecurityGroupId"]
    )
    assert (
        to_nodes.inputs["referencedSecurityGroupId"]
        == plan.one("aws:ec2/securityGroup:SecurityGroup", "web-sg").id
    )


def test_plain_http_without_a_certificate(plan_of):
    plan = plan_of("dev")
    (listener,) = plan.of_type("aws:lb/listener:Listener")
    assert listener.inputs["port"] == 80 and listener.inputs["protocol"] == "HTTP"
    assert listener.inputs["defaultActions"][0]["type"] == "forward"
    assert plan.outputs["url"].startswith("http://")


def test_final_snapshot_name_is_unique_and_valid(plan):
    ident = plan.one("aws:rds/instance:Instance").inputs["finalSnapshotIdentifier"]
    prefix, _, suffix = ident.rpartition("-final-")
    assert prefix == f"backbone-{plan.stack}-database"
    # a random id (as the engine returned it): a second destroy cannot collide
    assert (
        suffix
        == plan.one("random:index/randomId:RandomId", "database-snapshot-suffix").outputs["hex"]
    )
    assert re.fullmatch(r"[0-9a-f]{8}", suffix)
    from infra.components.database import snapshot_prefix

    assert snapshot_prefix("backbone", "my_stack.1", "database") == "backbone-my-stack-1-database"
    assert snapshot_prefix("9lives", "x") == "s-9lives-x"


def test_content_tag_covers_the_dockerfile_and_file_modes(tmp_path):
    from infra.components.registry import context_tag

    (tmp_path / ".dockerignore").write_text("*\n!shortener/\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.12-slim\n")
    (tmp_path / "shortener").mkdir()
    script = tmp_path / "shortener" / "run.sh"
    script.write_text("echo hi\n")
    first = context_tag(tmp_path, "linux/amd64")
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.13-slim\n"
    )  # ignored for COPY, still counts
    second = context_tag(tmp_path, "linux/amd64")
    assert second != first
    script.chmod(0o755)
    third = context_tag(tmp_path, "linux/amd64")
    assert third != second
    (tmp_path / "notes.txt").write_text("ignored entirely")  # not sent to Docker: same tag
    assert context_tag(tmp_path, "linux/amd64") == third


WAF = "aws:wafv2/webAcl:WebAcl"


def test_prod_has_a_web_acl_with_the_managed_groups_and_a_rate_rule_on_its_alb(plan_of):
    plan = plan_of("prod")
    (acl,) = plan.of_type(WAF)
    assert acl.inputs["scope"] == "REGIONAL"
    assert "allow" in acl.inputs["defaultAction"]
    rules = {r["name"]: r for r in acl.inputs["rules"]}
    assert sorted(r["priority"] for r in rules.values()) == [0, 1, 2]
    for group in ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"):
        statement = rules[group]["statement"]["managedRuleGroupStatement"]
        assert (statement["vendorName"], statement["name"]) == ("AWS", group)
        assert "none" in rules[group]["overrideAction"]  # the group's own block actions apply
    rate = rules["rate-per-ip"]
    assert "block" in rate["action"]
    assert rate["statement"]["rateBasedStatement"]["aggregateKeyType"] == "IP"
    assert rate["statement"]["rateBasedStatement"]["limit"] == 1000
    (assoc,) = plan.of_type("aws:wafv2/webAclAssociation:WebAclAssociation")
    # the association takes the ACL's ARN (the offline engine's mock answers a bare id for it)
    assert (
        assoc.inputs["resourceArn"] == plan.one("aws:lb/loadBalancer:LoadBalancer").outputs["arn"]
    )
    assert acl.urn in assoc.dependencies


def test_the_web_acl_is_a_setting_off_by_default_outside_production(plan_of, tmp_path):
    assert not plan_of("dev").of_type(WAF)
    from infra.config import parse

    on = parse(
        {"aws:region": "us-east-1", "backbone:loadbalancer": {"enabled": True, "webAcl": True}},
        "Pulumi.t.yaml",
        "t",
    )
    off = parse(
        {
            "aws:region": "us-east-1",
            "backbone:tier": "production",
            "backbone:loadbalancer": {"enabled": True, "webAcl": False, "allowPlainHttp": True},
        },
        "Pulumi.t.yaml",
        "t",
    )
    assert on.web_acl() is True and off.web_acl() is False
