"""The AWS platform (registry, cluster, database, load balancer) as planned for dev and prod.

Invariants both stacks must hold; what differs between them is in test_stack_dev/prod; what one
component makes of its settings, in tests/test_component_*.py.
"""

from __future__ import annotations

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


def test_the_stack_builds_the_sample_app_and_exports_it_by_digest(plan):
    # how the registry tags, builds and pushes: tests/test_component_registry.py
    image = plan.one("docker:index/image:Image")
    # built for the nodes' architecture: dev's Graviton, prod's x86_64
    arm = plan.stack == "dev"
    assert image.inputs["build"]["platform"] == ("linux/arm64" if arm else "linux/amd64")
    assert image.inputs["build"]["dockerfile"].endswith("app/Dockerfile")
    assert plan.outputs["imageRef"] == image.outputs["repoDigest"]
    assert "@sha256:" in plan.outputs["imageRef"]


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
    # the ports the load balancer opens on its targets (tests/test_component_loadbalancer.py)
    # are opened on the nodes' own security group
    nodes = plan.one("aws:eks/cluster:Cluster").outputs["vpcConfig"]["clusterSecurityGroupId"]
    opened = {
        r.inputs["fromPort"]
        for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.name.startswith(("web-to-targets-", "web-health-to-targets-"))
        and r.inputs["securityGroupId"] == nodes
    }
    assert opened == {30080, 30081}


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


WAF = "aws:wafv2/webAcl:WebAcl"


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
