"""The component harness (backbone.synth.synth_component): one callable run under the offline
engine gives the same Plan model a stack gives, and the security-group rule helper every
component can use (infra/components/sg.py)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pytest

from backbone.plan import STACK_TYPE
from backbone.synth import synth_component
from infra.components import sg
from infra.components.network import Network
from infra.config import NetworkConfig


def test_a_component_plan_is_the_stacks_plan_of_the_same_resources(plan_of):
    """The network alone under the harness registers what it registers inside a stack: the same
    types, names, inputs and options (URNs differ only by the stack, the provider by its kind)."""
    stack = plan_of("dev")
    alone = synth_component(
        lambda: Network("network", NetworkConfig(cidr="10.20.0.0/16"), region="us-east-1"),
        stack="dev",
    )

    def shape(plan, predicate):
        return sorted(
            (r.type, r.name, repr(r.inputs), r.protect, repr(r.custom_timeouts))
            for r in plan
            if predicate(r)
        )

    in_stack = shape(stack, lambda r: r.urn.split("::")[2].startswith("backbone:network:Network"))
    assert in_stack and in_stack == shape(alone, lambda r: not r.is_provider)


def test_what_the_callable_returns_becomes_the_outputs_and_nothing_leaks_between_runs():
    def bucket() -> dict[str, object]:
        made = aws.s3.Bucket("logs", force_destroy=True)
        return {"bucket": made.bucket, "project": pulumi.get_project(), "stack": pulumi.get_stack()}

    plan = synth_component(bucket, stack="harness", project="kit", region="eu-west-1")
    assert plan.outputs["project"] == "kit" and plan.outputs["stack"] == "harness"
    assert plan.outputs["bucket"] == plan.one("aws:s3/bucket:Bucket").outputs["bucket"]
    assert plan.root() == f"urn:pulumi:harness::kit::{STACK_TYPE}::kit-harness"
    assert plan.settings == {"region": "eu-west-1"}
    # a second run starts from nothing
    assert len(synth_component(lambda: None)) == 0


def test_config_reaches_the_component_through_the_engines_channel():
    def read() -> dict[str, object]:
        return {"size": pulumi.Config("demo").require_int("size")}

    assert synth_component(read, config={"demo:size": "3"}).outputs == {"size": 3}


def test_a_component_that_fails_fails_the_harness_with_its_own_error():
    with pytest.raises(pulumi.RunError, match=r"network\.azCount: 6 zones asked for"):
        synth_component(lambda: Network("network", NetworkConfig(az_count=6), region="us-west-1"))


def test_a_security_group_rule_takes_exactly_one_peer():
    def rules() -> None:
        sg.allow_in("in", "sg-0a", 443, "HTTPS from the VPC", cidr="10.0.0.0/16")
        sg.allow_out("out", "sg-0a", 5432, "PostgreSQL", peer="sg-0b")

    plan = synth_component(rules)
    ingress = plan.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").inputs
    assert ingress == {
        "cidrIpv4": "10.0.0.0/16",
        "description": "HTTPS from the VPC",
        "fromPort": 443,
        "ipProtocol": "tcp",
        "securityGroupId": "sg-0a",
        "toPort": 443,
    }
    egress = plan.one("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule").inputs
    assert egress["referencedSecurityGroupId"] == "sg-0b" and "cidrIpv4" not in egress
    for both_or_neither in ({"cidr": "10.0.0.0/16", "peer": "sg-0b"}, {}):
        with pytest.raises(ValueError, match="exactly one of cidr or peer"):
            sg.allow_in("x", "sg-0a", 80, "HTTP", **both_or_neither)
