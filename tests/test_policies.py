"""The policy pack (policies/): the same rules offline (`backbone check`) and under CrossGuard.

Every rule is run on a violating and a compliant set of resources twice: as the offline engine
hands them over (ids in the properties) and as `pulumi preview` hands them to the pack (hand-built
`pulumi_policy` arguments, references unknown and given as property dependencies). The pack
module itself is only ever run in a subprocess: building the PolicyPack starts its gRPC server,
which the tests then ask for its policies and send a resource to analyze.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from backbone import check as offline
from backbone.synth import load_config, resolve
from infra.config import POLICY_RULES
from policies import rules
from tests.realparts import REPO

STACKS = ["local", "free-tier", "dev", "prod"]
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def R(type_: str, resource: str, id_: str | None = None, **props: Any) -> rules.Res:
    token = {
        "rds": "aws:rds/instance:Instance",
        "pg": "aws:rds/parameterGroup:ParameterGroup",
        "bucket": "aws:s3/bucket:Bucket",
        "pab": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "sse": "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "kms": "aws:kms/key:Key",
        "sg": "aws:ec2/securityGroup:SecurityGroup",
        "in": "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "lb": "aws:lb/loadBalancer:LoadBalancer",
        "listener": "aws:lb/listener:Listener",
        "vpc": "aws:ec2/vpc:Vpc",
        "flow": "aws:ec2/flowLog:FlowLog",
        "ec2": "aws:ec2/instance:Instance",
        "eks": "aws:eks/cluster:Cluster",
        "ecr": "aws:ecr/repository:Repository",
        "fn": "aws:lambda/function:Function",
        "logs": "aws:cloudwatch/logGroup:LogGroup",
        "policy": "aws:iam/rolePolicy:RolePolicy",
        "role": "aws:iam/role:Role",
        "nat": "aws:ec2/natGateway:NatGateway",
        "alarm": "aws:cloudwatch/metricAlarm:MetricAlarm",
        "cm": "kubernetes:core/v1:ConfigMap",
    }.get(type_, type_)
    urn = f"urn:pulumi:test::backbone::{token}::{resource}"
    return rules.Res(token, resource, urn, props, id=id_, outputs={"id": id_} if id_ else {})


TAGS = {"project": "backbone", "stack": "test", "owner": "platform-team"}


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any, resource: Any = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


PROD = {"production": True}
BUDGET = {"budget": 10.0, "settings": {"region": "us-east-1", "freeTier": "none"}}

# rule -> (violating resources, compliant resources, context settings)
CASES: dict[str, tuple[list[rules.Res], list[rules.Res], dict[str, Any]]] = {
    "aws-published-constraints": (
        [R("sg", "sg", description="from the app's nodes", tags=TAGS)],
        [R("sg", "sg", description="from the app nodes", tags=TAGS)],
        {},
    ),
    "required-tags": (
        [R("vpc", "vpc", tags={"project": "backbone", "stack": "test"})],
        [R("vpc", "vpc", tags={"backbone:project": "b", "backbone:stack": "t", "owner": "me"})],
        {},
    ),
    "rds-encrypted": (
        [R("rds", "db", storageEncrypted=False)],
        [R("rds", "db", storageEncrypted=True)],
        {},
    ),
    "rds-private": (
        [R("rds", "db", publiclyAccessible=True)],
        [R("rds", "db", publiclyAccessible=False)],
        {},
    ),
    "rds-backups": (
        [R("rds", "db", backupRetentionPeriod=0)],
        [R("rds", "db", backupRetentionPeriod=7)],
        {},
    ),
    "rds-deletion-protection": (
        [R("rds", "db", deletionProtection=False)],
        [R("rds", "db", deletionProtection=True)],
        PROD,
    ),
    "rds-multi-az": ([R("rds", "db", multiAz=False)], [R("rds", "db", multiAz=True)], PROD),
    "rds-tls-enforced": (
        [
            R("rds", "db", engine="postgres", parameterGroupName="params-1"),
            R("pg", "params", "params-1", parameters=[{"name": "rds.force_ssl", "value": "0"}]),
        ],
        [
            R("rds", "db", engine="postgres", parameterGroupName="params-1"),
            R("pg", "params", "params-1", parameters=[{"name": "rds.force_ssl", "value": "1"}]),
        ],
        {},
    ),
    "s3-public-access-blocked": (
        [
            R("bucket", "logs", "logs-1"),
            R(
                "pab",
                "logs-pab",
                bucket="logs-1",
                blockPublicAcls=True,
                blockPublicPolicy=False,
                ignorePublicAcls=True,
                restrictPublicBuckets=True,
            ),
        ],
        [
            R("bucket", "logs", "logs-1"),
            R(
                "pab",
                "logs-pab",
                bucket="logs-1",
                blockPublicAcls=True,
                blockPublicPolicy=True,
                ignorePublicAcls=True,
                restrictPublicBuckets=True,
            ),
        ],
        {},
    ),
    "s3-encrypted": (
        [R("bucket", "logs", "logs-1")],
        [R("bucket", "logs", "logs-1"), R("sse", "logs-sse", bucket="logs-1", rules=[])],
        {},
    ),
    "kms-key-rotation": (
        [R("kms", "key", enableKeyRotation=False)],
        [R("kms", "key", enableKeyRotation=True)],
        {},
    ),
    "sg-no-public-ingress": (
        [
            R("sg", "app-sg", "sg-app", description="app"),
            R(
                "in",
                "app-in",
                securityGroupId="sg-app",
                cidrIpv4="0.0.0.0/0",
                fromPort=8080,
                toPort=8080,
                ipProtocol="tcp",
            ),
        ],
        [
            R("sg", "lb-sg", "sg-lb", description="lb"),
            R("lb", "lb", "lb-1", securityGroups=["sg-lb"]),
            R(
                "in",
                "lb-in",
                securityGroupId="sg-lb",
                cidrIpv4="0.0.0.0/0",
                fromPort=443,
                toPort=443,
                ipProtocol="tcp",
            ),
        ],
        {},
    ),
    "sg-no-ssh-rdp-from-internet": (
        [
            R(
                "in",
                "ssh",
                securityGroupId="sg-x",
                cidrIpv6="::/0",
                fromPort=20,
                toPort=25,
                ipProtocol="tcp",
            )
        ],
        [
            R(
                "in",
                "ssh",
                securityGroupId="sg-x",
                cidrIpv4="10.0.0.0/8",
                fromPort=22,
                toPort=22,
                ipProtocol="tcp",
            )
        ],
        {},
    ),
    "db-ingress-named-groups": (
        [
            R("sg", "db-sg", "sg-db", description="db"),
            R("rds", "db", vpcSecurityGroupIds=["sg-db"]),
            R(
                "in",
                "db-in",
                securityGroupId="sg-db",
                cidrIpv4="10.0.0.0/16",
                fromPort=5432,
                toPort=5432,
                ipProtocol="tcp",
            ),
        ],
        [
            R("sg", "db-sg", "sg-db", description="db"),
            R("sg", "app-sg", "sg-app", description="app"),
            R("rds", "db", vpcSecurityGroupIds=["sg-db"]),
            R(
                "in",
                "db-in",
                securityGroupId="sg-db",
                referencedSecurityGroupId="sg-app",
                fromPort=5432,
                toPort=5432,
                ipProtocol="tcp",
            ),
        ],
        {},
    ),
    "vpc-flow-logs": (
        [R("vpc", "vpc", "vpc-1")],
        [R("vpc", "vpc", "vpc-1"), R("flow", "flow", vpcId="vpc-1", trafficType="ALL")],
        PROD,
    ),
    "ec2-imdsv2": (
        [R("ec2", "host", metadataOptions={"httpTokens": "optional"})],
        [R("ec2", "host", metadataOptions={"httpTokens": "required"})],
        {},
    ),
    "ebs-encrypted": (
        [R("ec2", "host", rootBlockDevice={"encrypted": False})],
        [R("ec2", "host", rootBlockDevice={"encrypted": True})],
        {},
    ),
    "eks-control-plane-logging": (
        [R("eks", "eks", enabledClusterLogTypes=["api"])],
        [R("eks", "eks", enabledClusterLogTypes=["api", "audit", "authenticator"])],
        {},
    ),
    "eks-endpoint-restricted": (
        [
            R(
                "eks",
                "eks",
                vpcConfig={"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]},
            )
        ],
        [
            R(
                "eks",
                "eks",
                vpcConfig={"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]},
            )
        ],
        PROD,
    ),
    "eks-secrets-encryption": (
        [R("eks", "eks")],
        [R("eks", "eks", encryptionConfig={"resources": ["secrets"], "provider": {"keyArn": KEY}})],
        PROD,
    ),
    "ecr-scan-on-push": (
        [R("ecr", "repo", imageScanningConfiguration={"scanOnPush": False})],
        [R("ecr", "repo", imageScanningConfiguration={"scanOnPush": True})],
        {},
    ),
    "ecr-immutable-tags": (
        [R("ecr", "repo", imageTagMutability="MUTABLE")],
        [R("ecr", "repo", imageTagMutability="IMMUTABLE")],
        {},
    ),
    "lambda-supported-runtime": (
        [R("fn", "fn", runtime="python3.8")],
        [R("fn", "fn", runtime="python3.13")],
        {},
    ),
    "lambda-log-retention": (
        [R("fn", "fn", name="backbone-fn"), R("logs", "fn-logs", name="/aws/lambda/backbone-fn")],
        [
            R("fn", "fn", name="backbone-fn"),
            R("logs", "fn-logs", name="/aws/lambda/backbone-fn", retentionInDays=30),
        ],
        {},
    ),
    "iam-no-wildcard-actions": (
        [R("policy", "p", policy=doc(allow("s3:*", "arn:aws:s3:::b/*")))],
        [R("policy", "p", policy=doc(allow("s3:GetObject", "arn:aws:s3:::b/*")))],
        {},
    ),
    "iam-no-passrole-star": (
        [R("policy", "p", policy=doc(allow(["iam:PassRole"], "*")))],
        [
            R(
                "policy",
                "p",
                policy=doc(allow(["iam:PassRole"], "arn:aws:iam::123456789012:role/app")),
            )
        ],
        {},
    ),
    "iam-no-inline-admin": (
        [R("policy", "p", policy=doc(allow("*", "*")))],
        [R("policy", "p", policy=doc(allow("logs:PutLogEvents", "*")))],
        {},
    ),
    "iam-trust-services": (
        [
            R(
                "role",
                "r",
                assumeRolePolicy=doc(
                    {
                        "Effect": "Allow",
                        "Action": "sts:AssumeRole",
                        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    }
                ),
            )
        ],
        [
            R(
                "role",
                "r",
                assumeRolePolicy=doc(
                    {
                        "Effect": "Allow",
                        "Action": "sts:AssumeRole",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                    }
                ),
            )
        ],
        {},
    ),
    "tls-public-listeners": (
        [
            R("lb", "lb", "lb-1", internal=False),
            R(
                "listener",
                "http",
                loadBalancerArn="lb-1",
                port=80,
                protocol="HTTP",
                defaultActions=[{"type": "forward", "targetGroupArn": "tg"}],
            ),
        ],
        [
            R("lb", "lb", "lb-1", internal=False),
            R(
                "listener",
                "http",
                loadBalancerArn="lb-1",
                port=80,
                protocol="HTTP",
                defaultActions=[
                    {
                        "type": "redirect",
                        "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"},
                    }
                ],
            ),
        ],
        PROD,
    ),
    "db-connections-verified": (
        [
            R("fn", "job", environment={"variables": {"DB_SSLMODE": "require"}}),
            R(
                "cm",
                "config",
                data={"DATABASE_URL": "postgresql://app@db:5432/app?sslmode=require"},
            ),
        ],
        [
            R("fn", "job", environment={"variables": {"DB_SSLMODE": "verify-full"}}),
            R(
                "cm",
                "config",
                data={
                    "DATABASE_URL": "postgresql://app@db/app?sslmode=verify-full&sslrootcert=/ca.pem"
                },
            ),
        ],
        {},
    ),
    "cost-no-nat-gateway": ([R("nat", "nat", connectivityType="public")], [R("vpc", "vpc")], {}),
    "cost-no-eks": ([R("eks", "eks")], [R("vpc", "vpc")], {}),
    "cost-free-tier-sizes": (
        [R("ec2", "host", instanceType="t3.large")],
        [R("ec2", "host", instanceType="t3.micro")],
        {},
    ),
    "cost-max-alarms": (
        [R("alarm", f"a{i}") for i in range(11)],
        [R("alarm", f"a{i}") for i in range(10)],
        {},
    ),
    "cost-budget": (
        [R("nat", "nat", connectivityType="public")],
        [R("vpc", "vpc", cidrBlock="10.0.0.0/16")],
        BUDGET,
    ),
}


def ctx_for(settings: dict[str, Any], resources: list[rules.Res] | None = None) -> rules.Context:
    ctx = rules.Context(stack="test", **settings)
    if resources is not None and ctx.budget is not None:
        ctx = rules.Context(
            stack="test",
            monthly_cost=lambda: rules.monthly_cost(resources, ctx),
            **settings,
        )
    return ctx


def offline_violations(
    rule: rules.Rule, resources: list[rules.Res], settings: dict[str, Any]
) -> list[rules.Violation]:
    return rules.evaluate(resources, ctx_for(settings, resources), [rule])


# ------------------------------------------------------------------------------------------------
# CrossGuard's arguments, hand-built as the analyzer builds them during a preview


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def _previewed(
    res: rules.Res, ids: dict[str, rules.Res]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Properties as a preview has them: another resource's id is unknown, and the engine says
    which resource each property depends on."""
    deps: dict[str, list[str]] = {}

    def scrub(value: Any, prop: str) -> Any:
        if isinstance(value, str) and value in ids and ids[value] is not res:
            deps.setdefault(prop, []).append(ids[value].urn)
            return UNKNOWN_STRING_VALUE
        if isinstance(value, dict):
            return {k: scrub(v, prop) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v, prop) for v in value]
        return value

    return {k: scrub(v, k) for k, v in res.props.items()}, deps


def crossguard_messages(
    rule: rules.Rule, resources: list[rules.Res], settings: dict[str, Any]
) -> list[str]:
    ctx = rules.Context(stack="test", **settings)
    ids = {r.id: r for r in resources if r.id}
    provider = PolicyProviderResource(
        "pulumi:providers:aws", {}, "urn:pulumi:test::backbone::pulumi:providers:aws::aws", "aws"
    )
    reported: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        reported.append(message)

    if rule.resource is not None:
        validate = rules.resource_validation(rule, ctx)
        for res in resources:
            props, _ = _previewed(res, ids)
            args = ResourceValidationArgs(
                res.type, unknown_checking_proxy(props), res.urn, res.name, _opts(), provider
            )
            validate(args, report)
    else:
        validate = rules.stack_validation(rule, ctx)
        policy_resources: dict[str, PolicyResource] = {}
        for res in resources:
            props, deps = _previewed(res, ids)
            policy_resources[res.urn] = PolicyResource(
                res.type,
                unknown_checking_proxy(props),
                res.urn,
                res.name,
                _opts(),
                provider,
                None,
                [],
                {},
            )
            policy_resources[res.urn].property_dependencies = deps  # type: ignore[assignment]
        for pr in policy_resources.values():
            pr.property_dependencies = {
                k: [policy_resources[u] for u in urns]
                for k, urns in pr.property_dependencies.items()  # type: ignore[union-attr]
            }
        validate(StackValidationArgs(list(policy_resources.values())), report)
    return reported


# ------------------------------------------------------------------------------------------------
# every rule, both worlds


def test_every_rule_has_a_violating_and_a_compliant_case():
    assert set(CASES) == set(rules.NAMES)


def test_the_configs_rule_names_are_the_packs():
    """infra/config/ validates backbone:policies without importing the pack: same list."""
    assert tuple(POLICY_RULES) == rules.NAMES


@pytest.mark.parametrize("name", list(CASES))
def test_offline_rule_catches_the_violation_and_passes_the_fix(name):
    bad, good, settings = CASES[name]
    rule = rules.BY_NAME[name]
    found = offline_violations(rule, bad, settings)
    assert found and {v.rule for v in found} == {name}, found
    assert all(v.message and v.fix and v.resource for v in found)
    assert offline_violations(rule, good, settings) == []


@pytest.mark.parametrize("name", list(CASES))
def test_crossguard_rule_catches_the_violation_and_passes_the_fix(name):
    bad, good, settings = CASES[name]
    rule = rules.BY_NAME[name]
    messages = crossguard_messages(rule, bad, settings)
    assert messages, f"{name}: the CrossGuard side reported nothing"
    assert all("Fix: " + rule.fix in m for m in messages)
    assert crossguard_messages(rule, good, settings) == []


def test_production_rules_hold_only_production_stacks():
    for name in ("rds-multi-az", "rds-deletion-protection", "vpc-flow-logs", "eks-endpoint-restricted",
                 "eks-secrets-encryption", "tls-public-listeners"):  # fmt: skip
        bad, _, _ = CASES[name]
        assert offline_violations(rules.BY_NAME[name], bad, {}) == [], name


def test_cost_rules_are_advisory_unless_the_stack_is_priced_under_a_free_tier():
    bad, _, _ = CASES["cost-no-nat-gateway"]
    rule = rules.BY_NAME["cost-no-nat-gateway"]
    assert {v.level for v in offline_violations(rule, bad, {})} == {"advisory"}
    assert {v.level for v in offline_violations(rule, bad, {"free_tier": True})} == {"mandatory"}


def test_backbone_policies_tunes_each_rule():
    bad, _, _ = CASES["rds-private"]
    rule = rules.BY_NAME["rds-private"]
    assert {v.level for v in offline_violations(rule, bad, {})} == {"mandatory"}
    assert {
        v.level for v in offline_violations(rule, bad, {"levels": {"rds-private": "advisory"}})
    } == {"advisory"}
    assert offline_violations(rule, bad, {"levels": {"rds-private": "disabled"}}) == []


def test_unknown_values_are_never_judged():
    """During a preview the engine does not know an output yet: no verdict on it."""
    rds = R(
        "rds",
        "db",
        engine="postgres",
        parameterGroupName=rules.UNKNOWN,
        storageEncrypted=rules.UNKNOWN,
    )
    ctx = rules.Context()
    assert (
        rules.evaluate(
            [rds], ctx, [rules.BY_NAME["rds-tls-enforced"], rules.BY_NAME["rds-encrypted"]]
        )
        == []
    )


# ------------------------------------------------------------------------------------------------
# the pack itself, loaded in a subprocess


def _start_pack(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "policies" / "__main__.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
        cwd=REPO / "policies",
    )
    import selectors

    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=60):
        proc.kill()
        pytest.fail(
            "the policy pack did not start within 60 s: "
            + (proc.stderr.read().decode() if proc.stderr else "")
        )
    port = proc.stdout.readline().decode().strip()
    if not port.isdigit():
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
        pytest.fail(f"the policy pack failed to load: {stderr.decode()[-2000:]}")
    return proc, port


def test_the_pack_loads_serves_every_rule_and_reads_the_stacks_settings():
    import grpc
    from google.protobuf import empty_pb2, struct_pb2
    from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

    config = {
        "aws:region": "us-east-1",
        "backbone:tier": "production",
        "backbone:policies": json.dumps(
            {"kms-key-rotation": "advisory", "ecr-scan-on-push": "disabled"}
        ),
    }
    proc, port = _start_pack(
        {"PULUMI_STACK": "a-copy-of-prod", "PULUMI_CONFIG": json.dumps(config)}
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
            assert info.name == "backbone"
            assert tuple(p.name for p in info.policies) == rules.NAMES
            levels = {p.name: p.enforcementLevel for p in info.policies}
            assert levels["kms-key-rotation"] == analyzer_pb2.ADVISORY
            assert levels["ecr-scan-on-push"] == analyzer_pb2.DISABLED
            assert levels["rds-private"] == analyzer_pb2.MANDATORY
            assert levels["cost-no-eks"] == analyzer_pb2.ADVISORY

            props = struct_pb2.Struct()
            props.update({"engine": "postgres", "publiclyAccessible": True, "multiAz": False,
                          "storageEncrypted": True, "deletionProtection": True})  # fmt: skip
            request = analyzer_pb2.AnalyzeRequest(
                type="aws:rds/instance:Instance",
                properties=props,
                urn="urn:pulumi:a-copy-of-prod::backbone::aws:rds/instance:Instance::db",
                name="db",
            )
            found = {d.policyName: d for d in stub.Analyze(request, timeout=30).diagnostics}
            assert "rds-private" in found and "publicly accessible" in found["rds-private"].message
            assert found["rds-private"].enforcementLevel == analyzer_pb2.MANDATORY
            # production by the tier setting, on a stack of another name
            assert "rds-multi-az" in found
            assert "rds-deletion-protection" not in found
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_the_packs_files_let_pulumi_load_it():
    spec = yaml.safe_load((REPO / "policies" / "PulumiPolicy.yaml").read_text())
    assert spec["runtime"]["name"] == "python"
    requirements = (REPO / "policies" / "requirements.txt").read_text().split()
    assert "-r" in requirements and "../requirements.txt" in requirements
    assert any(line.startswith("pulumi-policy") for line in requirements)


# ------------------------------------------------------------------------------------------------
# the shipped stacks and planted ones


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_passes_every_mandatory_rule(plan_of, stack):
    cfg = load_config(resolve(stack, cwd=REPO))
    mandatory = [v for v in offline.evaluate(plan_of(stack), cfg) if v.level == "mandatory"]
    assert [f"{v.rule} {v.resource}: {v.message}" for v in mandatory] == []


def test_planted_violations_in_a_real_plan_are_each_caught_by_the_right_rule(plan_of):
    plan = copy.deepcopy(plan_of("dev"))
    cfg = load_config(resolve("dev", cwd=REPO))
    plan.named("database-postgres").inputs["publiclyAccessible"] = True
    web_80 = plan.named("web-in-80").inputs
    web_80.update(fromPort=22, toPort=22)
    plan.named("network-vpc").inputs["tags"] = {"Name": "network-vpc"}
    policy = plan.named("functions-canary-policy")
    policy.inputs["policy"] = doc(allow("*", "*"))
    found = {(v.rule, v.resource) for v in offline.evaluate(plan, cfg)}
    assert ("rds-private", "database-postgres") in found
    assert ("sg-no-ssh-rdp-from-internet", "web-in-80") in found
    assert ("sg-no-public-ingress", "web-in-80") in found
    assert ("iam-no-wildcard-actions", "functions-canary-policy") in found
    assert ("iam-no-inline-admin", "functions-canary-policy") in found
    # the provider's default tags still count: only a stack without them misses tags
    provider = next(r for r in plan.resources if r.type == "pulumi:providers:aws")
    provider.inputs["defaultTags"] = json.dumps({"tags": {}})
    found = {(v.rule, v.resource) for v in offline.evaluate(plan, cfg)}
    assert ("required-tags", "network-vpc") in found


def _copied_stack(tmp_path: Path, source: str, name: str, **settings: Any) -> Path:
    data = yaml.safe_load((REPO / "stacks" / f"Pulumi.{source}.yaml").read_text())
    data["config"].update(settings)
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_copy_of_prod_under_another_name_is_held_to_the_production_rules(backbone_cli, tmp_path):
    copied = _copied_stack(tmp_path, "prod", "shadow", **{"backbone:network": {"flowLogs": False}})
    result = backbone_cli("check", str(copied), "--no-scan", "--format", "json")
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout)
    found = {(v["rule"], v["level"]) for v in data["violations"]}
    assert ("vpc-flow-logs", "mandatory") in found
    assert result.returncode == 1
    assert {"rule", "level", "resource", "urn", "message", "fix"} <= set(data["violations"][0])

    tuned = _copied_stack(tmp_path, "prod", "shadow2", **{"backbone:network": {"flowLogs": False},
                                                          "backbone:policies": {"vpc-flow-logs": "advisory"}})  # fmt: skip
    data = json.loads(backbone_cli("check", str(tuned), "--no-scan", "-f", "json").stdout)
    assert ("vpc-flow-logs", "advisory") in {(v["rule"], v["level"]) for v in data["violations"]}


def test_an_unknown_rule_name_is_a_config_error_with_a_suggestion(backbone_cli, tmp_path):
    bad = _copied_stack(
        tmp_path, "dev", "typo", **{"backbone:policies": {"rds-multiaz": "advisory"}}
    )
    result = backbone_cli("check", str(bad), "--no-scan")
    assert result.returncode == 2
    assert (
        "backbone:policies.rds-multiaz: unknown rule (did you mean 'rds-multi-az'?)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_backbone_plan_shows_the_verdict_in_one_line(backbone_cli):
    result = backbone_cli("plan", "local")
    assert result.returncode == 0, result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("policies: ")]
    assert line.startswith(f"policies: PASS, {len(rules.RULES)} rules, 0 mandatory violations")
    assert "backbone check local" in line


# ------------------------------------------------------------------------------------------------
# checkov over what the kit renders


@pytest.mark.realpart
def test_checkov_findings_are_reported_as_violations(plan_of, tmp_path, checkov, monkeypatch):
    # checkov itself, each distinct scan once per test run (tests/checkov_cache.py)
    monkeypatch.setattr(offline, "find_checkov", lambda: checkov)
    plan = plan_of("dev")
    shipped = offline.Verdict("dev")
    offline.checkov_violations(plan, shipped)
    assert shipped.scanned == ["Kubernetes manifests of dev", "app/Dockerfile"]
    assert shipped.violations == []

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM python:3.12-slim\nRUN pip install flask\nCMD ["python"]\n')
    planted = offline.Verdict("dev")
    offline.checkov_violations(plan, planted, dockerfile=dockerfile)
    ids = {v.rule for v in planted.violations}
    assert "CKV_DOCKER_3" in ids  # no USER: the container runs as root
    v = next(v for v in planted.violations if v.rule == "CKV_DOCKER_3")
    assert v.level == "mandatory" and v.message and v.fix and v.type.startswith("checkov:")


@pytest.mark.realpart
def test_backbone_check_runs_checkov(backbone_cli, checkov, monkeypatch):
    monkeypatch.setattr(offline, "find_checkov", lambda: checkov)
    result = backbone_cli("check", "local", timeout=600)
    assert "checkov scanned app/Dockerfile" in result.stdout, result.stdout + result.stderr
    assert shutil.which("true")  # the command ran to its verdict line


def test_every_setting_a_fix_names_is_a_real_setting():
    """A fix that names a key the config does not have sends the user to a dead end."""
    import re as _re

    from infra.config import docs
    from policies.rules import RULES

    keys = set(_re.findall(r"`(backbone:[^`]+)`", docs()))
    sections = {k.split(".")[0] for k in keys}
    named = {
        m for rule in RULES for m in _re.findall(r"backbone:[A-Za-z]+(?:\.[A-Za-z]+)?", rule.fix)
    }
    assert named, "no fix names a setting"
    assert sorted(n for n in named if n not in keys and n not in sections) == []


def test_a_budget_in_a_region_without_prices_is_a_finding_not_a_crash(tmp_path, backbone_cli):
    import yaml as _yaml

    repo = Path(__file__).resolve().parent.parent
    data = _yaml.safe_load((repo / "stacks" / "Pulumi.dev.yaml").read_text())
    data["config"]["aws:region"] = "eu-west-1"
    data["config"]["backbone:budget"] = 500
    path = tmp_path / "Pulumi.eu.yaml"
    path.write_text(_yaml.safe_dump(data))
    done = backbone_cli("check", str(path), "--no-scan")
    assert "Traceback" not in done.stderr
    # cost rules are advisory outside a free-tier stack: said, not fatal
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "[advisory] cost-budget: the budget cannot be checked: no prices for region 'eu-west-1'"
        in done.stdout
    )


def test_the_free_tier_host_is_the_web_entry_point_and_nothing_else_is(plan_of):
    """With no load balancer, the one web instance may take 80 from the internet, enforced
    (mandatory): the shipped free-tier passes; the database's group opened to the world fails."""
    plan = copy.deepcopy(plan_of("free-tier"))
    cfg = load_config(resolve("free-tier", cwd=REPO))
    assert cfg.policies.get("sg-no-public-ingress") in (None, "mandatory")
    assert not [v for v in offline.evaluate(plan, cfg) if v.rule == "sg-no-public-ingress"]
    db_sg = next(
        r
        for r in plan.of_type("aws:ec2/securityGroup:SecurityGroup")
        if r.name.startswith("database")
    )
    host_in = next(
        r
        for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs.get("cidrIpv4") == "0.0.0.0/0"
    )
    host_in.inputs["securityGroupId"] = db_sg.id
    found = [v for v in offline.evaluate(plan, cfg) if v.rule == "sg-no-public-ingress"]
    assert [(v.resource, v.level) for v in found] == [(host_in.name, "mandatory")]


def test_backbone_plan_reads_its_aws_check_and_finds_what_backbone_check_finds(plan_of):
    """`backbone plan` checks AWS's published constraints once and hands that report to the
    pack; its verdict is the one `backbone check` reaches by running the rule itself: the same
    violations (an own value, a provider default tag, a runtime), at the same level, in order."""
    from backbone import awsrules

    plan = copy.deepcopy(plan_of("dev"))
    cfg = load_config(resolve("dev", cwd=REPO))
    plan.named("database-from-client-0").inputs["description"] = "from the app's nodes"
    plan.named("functions-canary").inputs["runtime"] = "python3.99"
    provider = next(r for r in plan.resources if r.type == "pulumi:providers:aws")
    tags = json.loads(provider.inputs["defaultTags"])
    tags["tags"]["owner"] = "Jane O'Brien"
    provider.inputs["defaultTags"] = json.dumps(tags)
    own = offline.evaluate(plan, cfg)
    shared = offline.evaluate(plan, cfg, aws=awsrules.check_plan(plan))
    assert shared == own
    found = {(v.resource, v.message.split("=")[0]) for v in own if v.rule == awsrules.RULE_GROUP}
    assert {("database-from-client-0", "description"), ("functions-canary", "runtime")} <= found
    assert any(input_ == "tags.owner" for _, input_ in found)
    assert offline.policy_verdict(plan, cfg, awsrules.check_plan(plan)).line() == (
        offline.policy_verdict(plan, cfg).line()
    )
