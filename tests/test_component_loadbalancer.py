"""The load balancer component on its own (backbone.synth.synth_component): listeners with and
without TLS, its security group, its targets, the access-log bucket and the web ACL, made from
its config section and plain ids for the VPC, subnets and targets."""

from __future__ import annotations

import json
from typing import Any

from backbone.plan import Plan, Resource
from backbone.synth import synth_component
from infra.components.loadbalancer import LoadBalancer, Targets
from infra.config import LoadBalancerConfig

VPC_ID = "vpc-0a1b2c3d4e5f60718"
VPC_CIDR = "10.60.0.0/16"
SUBNETS = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]
NODES = Targets(
    port=30080,
    health_check_port=30081,
    asg_names=["eks-cluster-nodes-0123"],
    security_group_ids=["sg-0c0c0c0c0c0c0c0c0"],
)
# The free-tier host: the app itself, checked on its own port.
HOST = Targets(port=8000, security_group_ids=["sg-0d0d0d0d0d0d0d0d0"])
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0f0e0d0c-0b0a-0908-0706-050403020100"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
LISTENER = "aws:lb/listener:Listener"
WAF = "aws:wafv2/webAcl:WebAcl"


def balancer(
    targets: Targets = NODES,
    *,
    region: str = "us-east-1",
    web_acl: bool = False,
    protect: bool = False,
    **settings: Any,
) -> Plan:
    """The plan of one LoadBalancer made from `settings` (LoadBalancerConfig's field names)."""
    cfg = LoadBalancerConfig(enabled=True, **settings)

    def build() -> dict[str, Any]:
        lb = LoadBalancer(
            "web",
            cfg,
            vpc_id=VPC_ID,
            vpc_cidr=VPC_CIDR,
            public_subnet_ids=SUBNETS,
            region=region,
            targets=targets,
            web_acl=web_acl,
            protect=protect,
        )
        return {"url": lb.url, "drainSeconds": lb.drain_seconds}

    return synth_component(build, region=region)


def rules(plan: Plan, token: str, group_id: str) -> list[Resource]:
    return [r for r in plan.of_type(token) if r.inputs["securityGroupId"] == group_id]


def ports(rules_: list[Resource]) -> list[tuple[int, int]]:
    return sorted((r.inputs["fromPort"], r.inputs["toPort"]) for r in rules_)


def test_a_public_alb_on_the_given_subnets_that_drops_invalid_headers():
    plan = balancer(idle_timeout_seconds=120)
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["loadBalancerType"] == "application" and alb["internal"] is False
    assert alb["subnets"] == SUBNETS
    assert alb["dropInvalidHeaderFields"] is True and alb["enableHttp2"] is True
    assert alb["idleTimeout"] == 120
    assert alb["enableDeletionProtection"] is False and "accessLogs" not in alb
    assert alb["securityGroups"] == [plan.one("aws:ec2/securityGroup:SecurityGroup").id]


def test_plain_http_without_a_certificate_and_only_80_open():
    plan = balancer()
    (listener,) = plan.of_type(LISTENER)
    assert listener.inputs["port"] == 80 and listener.inputs["protocol"] == "HTTP"
    assert listener.inputs["defaultActions"][0]["type"] == "forward"
    assert (
        listener.inputs["defaultActions"][0]["targetGroupArn"]
        == plan.one("aws:lb/targetGroup:TargetGroup").id
    )
    assert plan.outputs["url"].startswith("http://")
    group = plan.one("aws:ec2/securityGroup:SecurityGroup", "web-sg")
    ingress = rules(plan, INGRESS, group.id)
    assert ports(ingress) == [(80, 80)]
    assert {r.inputs["cidrIpv4"] for r in ingress} == {"0.0.0.0/0"}


def test_with_a_certificate_http_redirects_to_tls13_https():
    plan = balancer(certificate_arn=CERT)
    listeners = {r.inputs["port"]: r.inputs for r in plan.of_type(LISTENER)}
    assert listeners[80]["defaultActions"] == [
        {
            "redirect": {"port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"},
            "type": "redirect",
        }
    ]
    https = listeners[443]
    assert https["protocol"] == "HTTPS" and https["certificateArn"] == CERT
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert https["defaultActions"][0]["type"] == "forward"
    assert plan.outputs["url"].startswith("https://")
    # 443 open only now that a listener serves it
    group = plan.one("aws:ec2/securityGroup:SecurityGroup", "web-sg")
    assert ports(rules(plan, INGRESS, group.id)) == [(80, 80), (443, 443)]


def test_a_domain_is_the_url_and_its_certificate_is_looked_up():
    plan = balancer(domain_name="links.example.com")
    assert plan.outputs["url"] == "https://links.example.com"
    https = next(r.inputs for r in plan.of_type(LISTENER) if r.inputs["port"] == 443)
    assert https["certificateArn"].startswith("arn:aws:acm:us-east-1:123456789012:certificate/")
    # a wildcard names no one host: the load balancer's own name is the URL
    wildcard = balancer(domain_name="*.example.com")
    assert wildcard.outputs["url"].startswith("https://web-alb-")


def test_out_only_to_the_target_and_health_ports_inside_the_vpc():
    plan = balancer()
    group = plan.one("aws:ec2/securityGroup:SecurityGroup", "web-sg")
    egress = rules(plan, EGRESS, group.id)
    assert ports(egress) == [(30080, 30080), (30081, 30081)]
    assert {r.inputs["cidrIpv4"] for r in egress} == {VPC_CIDR}


def test_the_nodes_are_attached_and_opened_to_the_alb_on_their_two_ports():
    plan = balancer()
    tg = plan.one("aws:lb/targetGroup:TargetGroup")
    check = tg.inputs["healthCheck"]
    assert (check["path"], check["port"], check["matcher"]) == ("/healthz", "30081", "200")
    assert tg.inputs["port"] == 30080 and tg.inputs["vpcId"] == VPC_ID
    (attachment,) = plan.of_type("aws:autoscaling/attachment:Attachment")
    assert attachment.inputs == {
        "autoscalingGroupName": "eks-cluster-nodes-0123",
        "lbTargetGroupArn": tg.id,
    }
    opened = rules(plan, INGRESS, "sg-0c0c0c0c0c0c0c0c0")
    assert ports(opened) == [(30080, 30080), (30081, 30081)]
    alb_group = plan.one("aws:ec2/securityGroup:SecurityGroup", "web-sg").id
    assert {r.inputs["referencedSecurityGroupId"] for r in opened} == {alb_group}
    # out of rotation two failed checks 5 s apart, plus 30 s of deregistration delay
    assert plan.outputs["drainSeconds"] == 40


def test_a_host_target_is_checked_on_its_own_readiness_and_port():
    plan = balancer(HOST)
    check = plan.one("aws:lb/targetGroup:TargetGroup").inputs["healthCheck"]
    assert (check["path"], check["port"]) == ("/readyz", "traffic-port")
    assert not plan.of_type("aws:autoscaling/attachment:Attachment")
    group = plan.one("aws:ec2/securityGroup:SecurityGroup", "web-sg")
    assert ports(rules(plan, EGRESS, group.id)) == [(8000, 8000)]
    assert ports(rules(plan, INGRESS, "sg-0d0d0d0d0d0d0d0d0")) == [(8000, 8000)]


def test_access_logs_go_to_a_locked_bucket_that_elb_alone_writes():
    plan = balancer(access_logs=True, deletion_protection=True, protect=True)
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    assert alb.inputs["enableDeletionProtection"] is True
    bucket = plan.one("aws:s3/bucket:Bucket")
    assert alb.inputs["accessLogs"] == {"bucket": bucket.id, "enabled": True, "prefix": "alb"}
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
    ownership = plan.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    policy = json.loads(plan.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    write, deny = policy["Statement"]
    # us-east-1's Elastic Load Balancing account writes the logs, under this account's prefix
    assert write["Principal"] == {"AWS": "arn:aws:iam::127311923021:root"}
    assert write["Resource"] == f"arn:aws:s3:::{bucket.id}/alb/AWSLogs/123456789012/*"
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    sse = plan.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"


def test_the_alb_switches_on_logging_only_after_the_bucket_policy():
    plan = balancer(access_logs=True)
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    for t in (
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    ):
        assert plan.one(t).urn in alb.dependencies
    # unprotected, the bucket goes with the stack
    assert plan.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True


def test_access_logs_expire_after_90_days():
    rule = balancer(access_logs=True).one(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    )
    (r,) = rule.inputs["rules"]
    assert r["status"] == "Enabled" and r["expiration"] == {"days": 90}
    assert r["filter"] == {"prefix": "alb/"}


def test_a_region_newer_than_the_elb_accounts_writes_logs_through_the_service_principal():
    plan = balancer(region="ca-west-1", access_logs=True)
    write = json.loads(plan.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])["Statement"][
        0
    ]
    assert write["Principal"] == {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}


def test_the_web_acl_has_the_managed_groups_and_a_rate_rule_on_the_alb():
    plan = balancer(web_acl=True, waf_rate_limit=2000)
    (acl,) = plan.of_type(WAF)
    assert acl.inputs["scope"] == "REGIONAL"
    assert "allow" in acl.inputs["defaultAction"]
    by_name = {r["name"]: r for r in acl.inputs["rules"]}
    assert sorted(r["priority"] for r in by_name.values()) == [0, 1, 2]
    for group in ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"):
        statement = by_name[group]["statement"]["managedRuleGroupStatement"]
        assert (statement["vendorName"], statement["name"]) == ("AWS", group)
        assert "none" in by_name[group]["overrideAction"]  # the group's own block actions apply
    rate = by_name["rate-per-ip"]
    assert "block" in rate["action"]
    assert rate["statement"]["rateBasedStatement"]["aggregateKeyType"] == "IP"
    assert rate["statement"]["rateBasedStatement"]["limit"] == 2000
    (assoc,) = plan.of_type("aws:wafv2/webAclAssociation:WebAclAssociation")
    # the association takes the ACL's ARN (the offline engine's mock answers a bare id for it)
    assert (
        assoc.inputs["resourceArn"] == plan.one("aws:lb/loadBalancer:LoadBalancer").outputs["arn"]
    )
    assert acl.urn in assoc.dependencies
    assert not balancer().of_type(WAF)
