"""The load balancer: a public ALB in front of the app's nodes.

Its security group admits 80 and 443 from the internet and nothing else, and may only reach the
targets' port inside the VPC. The target group checks the app's readiness endpoint. With an ACM
certificate, port 80 redirects to HTTPS on 443 (TLS 1.3 policy); without one, port 80 serves plain
HTTP. Invalid header fields are dropped. Targets: the node group's Auto Scaling group, attached to
the target group, and the nodes' security group opened to the ALB on the node port.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components import iam, sg
from infra.config import LoadBalancerConfig

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# A deregistered target (a node leaving the group) keeps its in-flight requests this long.
DEREGISTRATION_DELAY_SECONDS = 30
# The health check on the Service's health check node port (kube-proxy's /healthz): a node whose
# last ready app pod goes away answers 503 and is out after INTERVAL x UNHEALTHY seconds.
HEALTH_CHECK_PATH = "/healthz"
HEALTH_CHECK_INTERVAL_SECONDS = 5
HEALTH_CHECK_UNHEALTHY = 2
HEALTH_CHECK_HEALTHY = 2
# The web ACL's AWS managed rule groups (AWS WAF developer guide, "AWS Managed Rules rule groups
# list": the baseline groups, no extra subscription fee).
MANAGED_RULE_GROUPS = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet")
# Elastic Load Balancing's account per region, for access-log bucket policies in regions that
# predate August 2022 (ELB user guide, "Enable access logs"); newer regions use the service
# principal logdelivery.elasticloadbalancing.amazonaws.com.
ELB_ACCOUNTS = {
    "us-east-1": "127311923021", "us-east-2": "033677994240", "us-west-1": "027434742980",
    "us-west-2": "797873946194", "af-south-1": "098369216593", "ap-east-1": "754344448648",
    "ap-south-1": "718504428378", "ap-northeast-1": "582318560864",
    "ap-northeast-2": "600734575887", "ap-northeast-3": "383597477331",
    "ap-southeast-1": "114774131450", "ap-southeast-2": "783225319266",
    "ap-southeast-3": "589379963580", "ca-central-1": "985666609251",
    "eu-central-1": "054676820928", "eu-west-1": "156460612806", "eu-west-2": "652711504416",
    "eu-west-3": "009996457667", "eu-south-1": "635631232127", "eu-north-1": "897822967062",
    "me-south-1": "076674570225", "sa-east-1": "507241528517",
}  # fmt: skip


@dataclass(frozen=True)
class Targets:
    """Where the load balancer sends traffic: wiring from the stack, not settings."""

    port: int
    """The port the targets serve on (the app Service's node port)."""
    health_check_port: int | None = None
    """The Service's health check node port (kube-proxy: 200 while the node holds a ready app
    pod). None: the targets are the app itself, checked on its port at /readyz."""
    asg_names: Sequence[Any] = field(default_factory=list)
    """The node groups' Auto Scaling groups, attached to the target group."""
    security_group_ids: Sequence[Any] = field(default_factory=list)
    """The targets' security groups, opened to the load balancer on the port."""


class LoadBalancer(pulumi.ComponentResource):
    """The ALB from its config section; the VPC, its CIDR, the public subnets and the targets
    are wiring."""

    def __init__(
        self,
        name: str,
        cfg: LoadBalancerConfig,
        *,
        vpc_id: pulumi.Input[str],
        vpc_cidr: str,
        public_subnet_ids: Sequence[Any],
        region: str,
        targets: Targets,
        web_acl: bool,
        protect: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:loadbalancer:LoadBalancer", name, None, opts)
        self._name = name
        certificate_arn = self._certificate(cfg)
        tls = certificate_arn is not None
        self.security_group = self._security_group(vpc_id, vpc_cidr, targets, tls)
        self.alb = self._alb(cfg, public_subnet_ids, region, protect)
        self.target_group = self._target_group(vpc_id, targets)
        self._listeners(certificate_arn)
        self._attach(targets)
        # How long after a node's last pod goes unready the ALB still sends to it, plus the
        # deregistration delay: what the app's preStop pause must outlast.
        self.drain_seconds = (
            HEALTH_CHECK_INTERVAL_SECONDS * HEALTH_CHECK_UNHEALTHY + DEREGISTRATION_DELAY_SECONDS
        )
        self.web_acl = self._web_acl(cfg) if web_acl else None
        if cfg.domain_name and not cfg.domain_name.startswith("*."):
            # The certificate names the domain, not the load balancer's own DNS name: the URL is
            # the domain (point its DNS record at dnsName).
            self.url = pulumi.Output.from_input(f"https://{cfg.domain_name}")
        else:
            scheme = "https" if tls else "http"
            self.url = self.alb.dns_name.apply(lambda dns: f"{scheme}://{dns}")
        self.register_outputs(
            {
                "dnsName": self.alb.dns_name,
                "url": self.url,
                "arnSuffix": self.alb.arn_suffix,
                "targetGroupArnSuffix": self.target_group.arn_suffix,
            }
        )

    def _certificate(self, cfg: LoadBalancerConfig) -> pulumi.Input[str] | None:
        """The ACM certificate's ARN: given, or looked up by domain during preview (no
        certificate, no deploy: nothing is created first); None serves plain HTTP."""
        if cfg.domain_name:
            return aws.acm.get_certificate_output(
                domain=cfg.domain_name,
                statuses=["ISSUED"],
                most_recent=True,
                opts=pulumi.InvokeOutputOptions(parent=self),
            ).arn
        return cfg.certificate_arn

    def _security_group(
        self, vpc_id: pulumi.Input[str], vpc_cidr: str, targets: Targets, tls: bool
    ) -> aws.ec2.SecurityGroup:
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        # 443 only where a listener serves it: an open port with nothing behind it is a finding.
        ports = (80, 443) if tls else (80,)
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=vpc_id,
            description=f"ALB: {' and '.join(map(str, ports))} from the internet; "
            "out to the target port only",
            opts=child,
        )
        for port in ports:
            what = "HTTPS" if port == 443 else "HTTP"
            sg.allow_in(
                f"{name}-in-{port}",
                group.id,
                port,
                f"{what} from the internet",
                cidr="0.0.0.0/0",
                opts=child,
            )
        sg.allow_out(
            f"{name}-out-targets",
            group.id,
            targets.port,
            "to the target port inside the VPC",
            cidr=vpc_cidr,
            opts=child,
        )
        if targets.health_check_port is not None:
            sg.allow_out(
                f"{name}-out-health",
                group.id,
                targets.health_check_port,
                "to the targets health check port inside the VPC",
                cidr=vpc_cidr,
                opts=child,
            )
        return group

    def _alb(
        self, cfg: LoadBalancerConfig, subnets: Sequence[Any], region: str, protect: bool
    ) -> aws.lb.LoadBalancer:
        access_logs = None
        log_bucket_ready: list[pulumi.Resource] = []
        if cfg.access_logs:
            logs = self._log_bucket(region, protect)
            log_bucket_ready = [logs.policy, logs.ownership]
            access_logs = aws.lb.LoadBalancerAccessLogsArgs(
                bucket=logs.bucket.bucket, prefix="alb", enabled=True
            )
        return aws.lb.LoadBalancer(
            f"{self._name}-alb",
            load_balancer_type="application",
            internal=False,
            subnets=list(subnets),
            security_groups=[self.security_group.id],
            drop_invalid_header_fields=True,
            enable_deletion_protection=cfg.deletion_protection,
            idle_timeout=cfg.idle_timeout_seconds,
            enable_http2=True,
            access_logs=access_logs,
            # ELB checks it may write to the bucket when logging is switched on: policy first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=log_bucket_ready),
        )

    def _target_group(self, vpc_id: pulumi.Input[str], targets: Targets) -> aws.lb.TargetGroup:
        return aws.lb.TargetGroup(
            f"{self._name}-tg",
            port=targets.port,
            protocol="HTTP",
            target_type="instance",
            vpc_id=vpc_id,
            deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
            # kube-proxy's answer for the Service on this node, not the app's (which a random
            # pod behind the node port would give).
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                path="/readyz" if targets.health_check_port is None else HEALTH_CHECK_PATH,
                port=(
                    "traffic-port"
                    if targets.health_check_port is None
                    else str(targets.health_check_port)
                ),
                protocol="HTTP",
                matcher="200",
                interval=HEALTH_CHECK_INTERVAL_SECONDS,
                timeout=2,
                healthy_threshold=HEALTH_CHECK_HEALTHY,
                unhealthy_threshold=HEALTH_CHECK_UNHEALTHY,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _listeners(self, certificate_arn: pulumi.Input[str] | None) -> None:
        """With a certificate: HTTPS on 443 and a redirect on 80; without: HTTP on 80."""
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        forward = [
            aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)
        ]
        http_actions = forward
        if certificate_arn is not None:
            aws.lb.Listener(
                f"{name}-https",
                load_balancer_arn=self.alb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy=TLS_POLICY,
                certificate_arn=certificate_arn,
                default_actions=forward,
                opts=child,
            )
            http_actions = [
                aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                        port="443", protocol="HTTPS", status_code="HTTP_301"
                    ),
                )
            ]
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=self.alb.arn,
            port=80,
            protocol="HTTP",
            default_actions=http_actions,
            opts=child,
        )

    def _attach(self, targets: Targets) -> None:
        """The nodes' Auto Scaling groups, and the nodes opened to the ALB on the port."""
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        for i, asg in enumerate(targets.asg_names):
            aws.autoscaling.Attachment(
                f"{name}-targets-{i}",
                autoscaling_group_name=asg,
                lb_target_group_arn=self.target_group.arn,
                opts=child,
            )
        alb = self.security_group.id
        for i, group in enumerate(targets.security_group_ids):
            sg.allow_in(
                f"{name}-to-targets-{i}",
                group,
                targets.port,
                "from the load balancer to the app node port",
                peer=alb,
                opts=child,
            )
            if targets.health_check_port is not None:
                sg.allow_in(
                    f"{name}-health-to-targets-{i}",
                    group,
                    targets.health_check_port,
                    "from the load balancer to the health check node port",
                    peer=alb,
                    opts=child,
                )

    def _web_acl(self, cfg: LoadBalancerConfig) -> aws.wafv2.WebAcl:
        """A regional WAFv2 web ACL on the ALB: AWS's common and known-bad-inputs rule groups, and
        a rate-based rule per client address; everything else allowed."""
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        waf = aws.wafv2
        acl = waf.WebAcl(
            f"{name}-waf",
            scope="REGIONAL",
            description="app load balancer: AWS managed common and known-bad-inputs rules, "
            "rate limit per client address",
            default_action=waf.WebAclDefaultActionArgs(allow=waf.WebAclDefaultActionAllowArgs()),
            rules=[
                _rate_rule(cfg.waf_rate_limit),
                *(_managed_rule(i + 1, g) for i, g in enumerate(MANAGED_RULE_GROUPS)),
            ],
            visibility_config=waf.WebAclVisibilityConfigArgs(
                cloudwatch_metrics_enabled=True,
                metric_name=f"{name}-waf",
                sampled_requests_enabled=True,
            ),
            opts=child,
        )
        waf.WebAclAssociation(
            f"{name}-waf", resource_arn=self.alb.arn, web_acl_arn=acl.arn, opts=child
        )
        return acl

    def _log_bucket(self, region: str, protect: bool) -> LogBucket:
        """The access-log bucket: private, encrypted, expiring, written by ELB only."""
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(
            f"{name}-logs",
            force_destroy=not protect,
            opts=pulumi.ResourceOptions(parent=self, protect=protect),
        )
        ownership = _private(f"{name}-logs", bucket, child)
        _encrypted_and_expiring(f"{name}-logs", bucket, child)
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        policy = aws.s3.BucketPolicy(
            f"{name}-logs",
            bucket=bucket.id,
            policy=pulumi.Output.all(bucket.arn, caller.account_id).apply(
                lambda a: _log_bucket_policy(region, bucket_arn=a[0], account=a[1])
            ),
            opts=child,
        )
        return LogBucket(bucket=bucket, policy=policy, ownership=ownership)


def _rule_visibility(metric: str) -> aws.wafv2.WebAclRuleVisibilityConfigArgs:
    return aws.wafv2.WebAclRuleVisibilityConfigArgs(
        cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


def _rate_rule(limit: int) -> aws.wafv2.WebAclRuleArgs:
    """Block a client address past `limit` requests in 5 minutes (first rule: priority 0)."""
    waf = aws.wafv2
    return waf.WebAclRuleArgs(
        name="rate-per-ip",
        priority=0,
        action=waf.WebAclRuleActionArgs(block=waf.WebAclRuleActionBlockArgs()),
        statement=waf.WebAclRuleStatementArgs(
            rate_based_statement=waf.WebAclRuleStatementRateBasedStatementArgs(
                aggregate_key_type="IP", limit=limit, evaluation_window_sec=300
            )
        ),
        visibility_config=_rule_visibility("rate-per-ip"),
    )


def _managed_rule(priority: int, group: str) -> aws.wafv2.WebAclRuleArgs:
    """An AWS managed rule group, its own actions kept (override: none)."""
    waf = aws.wafv2
    return waf.WebAclRuleArgs(
        name=group,
        priority=priority,
        override_action=waf.WebAclRuleOverrideActionArgs(
            none=waf.WebAclRuleOverrideActionNoneArgs()
        ),
        statement=waf.WebAclRuleStatementArgs(
            managed_rule_group_statement=waf.WebAclRuleStatementManagedRuleGroupStatementArgs(
                name=group, vendor_name="AWS"
            )
        ),
        visibility_config=_rule_visibility(group),
    )


@dataclass(frozen=True)
class LogBucket:
    """The access-log bucket, and what must exist before the ALB may log to it."""

    bucket: aws.s3.Bucket
    policy: aws.s3.BucketPolicy
    ownership: aws.s3.BucketOwnershipControls


def _private(
    name: str, bucket: aws.s3.Bucket, opts: pulumi.ResourceOptions
) -> aws.s3.BucketOwnershipControls:
    """No public access of any kind, and no ACLs: the bucket owner owns every object."""
    aws.s3.BucketPublicAccessBlock(
        name,
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=opts,
    )
    return aws.s3.BucketOwnershipControls(
        name,
        bucket=bucket.id,
        rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
        opts=opts,
    )


def _encrypted_and_expiring(name: str, bucket: aws.s3.Bucket, opts: pulumi.ResourceOptions) -> None:
    """SSE-S3 (ALB access logs support SSE-S3 only); the logs expire after 90 days."""
    aws.s3.BucketServerSideEncryptionConfiguration(
        name,
        bucket=bucket.id,
        rules=[
            aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"
                )
            )
        ],
        opts=opts,
    )
    aws.s3.BucketLifecycleConfiguration(
        name,
        bucket=bucket.id,
        rules=[
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-access-logs",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix="alb/"),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=90),
            )
        ],
        opts=opts,
    )


def _log_bucket_policy(region: str, *, bucket_arn: str, account: str) -> str:
    """ELB (the region's account, or the log delivery service in newer regions) may put objects
    under alb/AWSLogs/<account>/; nothing reaches the bucket without TLS."""
    elb_account = ELB_ACCOUNTS.get(region)
    principal = (
        {"AWS": f"arn:aws:iam::{elb_account}:root"}
        if elb_account
        else {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}
    )
    return iam.document(
        [
            {
                "Sid": "ElbAccessLogs",
                "Effect": "Allow",
                "Principal": principal,
                "Action": "s3:PutObject",
                "Resource": f"{bucket_arn}/alb/AWSLogs/{account}/*",
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ]
    )
