"""AWS's published constraints over every plan (backbone.awsrules).

The constraints come from cfn-lint's bundled CloudFormation schemas and lifecycle data, and from
botocore's models where CloudFormation is silent; the mapping (backbone/data/cfn_map.yaml) says
which schema property each Pulumi input is. These tests run the checker over the four stacks,
plant the values AWS refuses into a copy of a real Plan, and hold the mapping to the schemas, the
SDK's wire names and botocore's own words.
"""

from __future__ import annotations

import copy
import gzip
import html
import json
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import botocore
import pytest

from backbone import awsrules
from backbone.plan import Plan
from tests.test_wire_format import sdk_input_names

STACKS = ["local", "free-tier", "dev", "prod"]


def planted(plan: Plan, resource: str, **inputs: object) -> Plan:
    """A deep copy of the plan with some inputs of one resource replaced."""
    copied = copy.deepcopy(plan)
    copied.named(resource).inputs.update(inputs)
    return copied


def findings_for(report: awsrules.Report, resource: str, input_name: str) -> list[awsrules.Finding]:
    return [f for f in report.findings if f.resource == resource and f.input == input_name]


# --------------------------------------------------------------------------------------------
# the shipped stacks


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_fits_aws_published_constraints(plan_of, stack):
    report = awsrules.check_plan(plan_of(stack))
    assert [f.line() for f in report.violations] == []
    aws_resources = [r for r in plan_of(stack).resources if r.package == "aws"]
    if aws_resources:
        # every AWS stack has values checked, and outputs of other resources skipped
        assert report.checked > len(aws_resources)
        assert report.unknown > 0
    else:
        assert report.checked == 0


@pytest.mark.parametrize("stack", STACKS)
def test_every_registered_type_is_mapped_or_listed_without_schema(plan_of, stack):
    table = awsrules.mapping()
    unlisted = sorted(
        {
            r.type
            for r in plan_of(stack).resources
            if r.type not in table.types and table.no_schema_reason(r.type) is None
        }
    )
    assert unlisted == [], (
        f"{stack} registers types with no entry in backbone/data/cfn_map.yaml: map each to its "
        "CloudFormation type, or list it under no_schema with the reason"
    )
    assert not awsrules.check_plan(plan_of(stack)).unlisted_types


def test_an_unlisted_type_is_reported_as_such(plan_of):
    plan = copy.deepcopy(plan_of("free-tier"))
    plan.resources[-1].type = "aws:apigateway/restApi:RestApi"
    report = awsrules.check_plan(plan)
    assert report.unlisted_types == {"aws:apigateway/restApi:RestApi": 1}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_nearly_every_literal_input_is_mapped(plan_of, stack):
    report = awsrules.check_plan(plan_of(stack))
    assert report.coverage >= 0.95, sorted(report.unmapped)
    assert report.mapped + sum(report.unchecked.values()) + sum(report.unmapped.values()) == (
        report.literal
    )


# --------------------------------------------------------------------------------------------
# planted violations: each caught by the right rule, with its source


def test_an_apostrophe_in_a_security_group_description_breaks_ec2s_pattern(plan_of):
    plan = planted(plan_of("dev"), "database-sg", description="PostgreSQL from the app's nodes")
    report = awsrules.check_plan(plan)
    [finding] = findings_for(report, "database-sg", "description")
    assert finding.rule == "pattern"
    assert finding.value == "PostgreSQL from the app's nodes"
    assert "AWS::EC2::SecurityGroup.GroupDescription" in finding.source
    assert finding.source.startswith("cfn-lint ")
    assert len(report.violations) == 1


def test_an_apostrophe_in_a_security_group_rule_description_is_caught_too(plan_of):
    """CloudFormation's rule Description has no pattern: botocore's model states EC2's rule."""
    plan = planted(plan_of("dev"), "database-from-client-0", description="from the app's nodes")
    [finding] = findings_for(awsrules.check_plan(plan), "database-from-client-0", "description")
    assert (finding.rule, finding.source) == ("pattern", "botocore ec2 IpRange.Description")


def test_a_33_character_target_group_name_is_too_long(plan_of):
    plan = planted(plan_of("dev"), "web-tg", name="backbone-dev-web-targets-abcdefgh")
    assert len("backbone-dev-web-targets-abcdefgh") == 33
    report = awsrules.check_plan(plan)
    [finding] = findings_for(report, "web-tg", "name")
    assert finding.rule == "maxLength"
    assert "33 characters, more than 32" in finding.message
    assert finding.source == "botocore elbv2 CreateTargetGroupInput.Name"
    # 32 characters is allowed
    fits = planted(plan_of("dev"), "web-tg", name="backbone-dev-web-targets-abcdefg")
    assert findings_for(awsrules.check_plan(fits), "web-tg", "name") == []


def test_an_invalid_lambda_runtime_is_not_one_aws_lists(plan_of):
    plan = planted(plan_of("dev"), "functions-canary", runtime="python3.99")
    [finding] = findings_for(awsrules.check_plan(plan), "functions-canary", "runtime")
    assert finding.rule == "enum"
    assert "AWS::Lambda::Function.Runtime" in finding.source
    assert "values AWS lists (closest: python3." in finding.message


def test_an_out_of_range_port_is_above_the_published_maximum(plan_of):
    plan = planted(plan_of("dev"), "web-tg", port=70000)
    [finding] = findings_for(awsrules.check_plan(plan), "web-tg", "port")
    assert (finding.rule, finding.value) == ("maximum", 70000)
    assert "maximum 65535" in finding.message
    assert "AWS::ElasticLoadBalancingV2::TargetGroup.Port" in finding.source
    listener = next(r.name for r in plan_of("dev").of_type("aws:lb/listener:Listener"))
    low = planted(plan_of("dev"), listener, port=0)
    [finding] = findings_for(awsrules.check_plan(low), listener, "port")
    assert finding.rule == "minimum"


def test_nested_objects_lists_and_maps_are_checked(plan_of):
    dev = plan_of("dev")
    tg = dev.named("web-tg")
    plan = planted(dev, "web-tg", healthCheck={**tg.inputs["healthCheck"], "interval": 2})
    [finding] = findings_for(awsrules.check_plan(plan), "web-tg", "healthCheck.interval")
    assert finding.rule == "minimum"
    assert "HealthCheckIntervalSeconds" in finding.source

    plan = planted(dev, "functions-canary", architectures=["arm64", "sparc"])
    found = findings_for(awsrules.check_plan(plan), "functions-canary", "architectures")
    assert {f.rule for f in found} == {"maxItems"}
    assert {
        f.rule
        for f in findings_for(awsrules.check_plan(plan), "functions-canary", "architectures[]")
    } == {"enum"}

    alarm = next(
        r
        for r in dev.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if r.inputs.get("dimensions")
    )
    dimensions = {**alarm.inputs["dimensions"], "D" * 256: "x"}
    plan = planted(dev, alarm.name, dimensions=dimensions)
    [finding] = findings_for(awsrules.check_plan(plan), alarm.name, f"dimensions.{'D' * 256} (key)")
    assert finding.rule == "maxLength"
    assert "AWS::CloudWatch::Alarm.Dimensions" in finding.source

    plan = planted(dev, "functions-canary", tags={"Name": "x" * 300})
    [finding] = findings_for(awsrules.check_plan(plan), "functions-canary", "tags.Name")
    assert finding.rule == "maxLength"
    assert "AWS::Lambda::Function.Tags" in finding.source


def test_the_providers_default_tags_meet_every_resources_tag_constraints(plan_of):
    """AWS receives the provider's defaultTags on each resource: IAM's tag pattern refuses `'`."""
    plan = copy.deepcopy(plan_of("dev"))
    provider = next(r for r in plan.resources if r.type == "pulumi:providers:aws")
    tags = json.loads(provider.inputs["defaultTags"])
    tags["tags"]["owner"] = "Jane O'Brien"
    provider.inputs["defaultTags"] = json.dumps(tags)
    report = awsrules.check_plan(plan)
    bad = {(f.type, f.rule) for f in report.violations if f.input == "tags.owner"}
    assert ("aws:iam/role:Role", "pattern") in bad
    assert all(f.input == "tags.owner" for f in report.violations)
    assert awsrules.check_plan(plan_of("dev")).violations == []


def test_a_value_cloudformation_spells_differently_is_translated(plan_of):
    """`internal: false` is Scheme internet-facing: no violation for a bool against an enum."""
    lb = next(iter(plan_of("dev").of_type("aws:lb/loadBalancer:LoadBalancer")))
    assert lb.inputs["internal"] is False
    assert findings_for(awsrules.check_plan(plan_of("dev")), lb.name, "internal") == []


def test_values_known_only_at_deploy_are_skipped_and_counted(plan_of):
    """The ALB's DNS name is an output: a description made from it is not judged offline."""
    dev = plan_of("dev")
    vpc_id = dev.named("network-vpc").id
    assert vpc_id
    plan = planted(dev, "database-sg", description=f"the group of {vpc_id}'s database")
    before = awsrules.check_plan(dev)
    after = awsrules.check_plan(plan)
    assert findings_for(after, "database-sg", "description") == []
    assert after.unknown == before.unknown + 1
    assert after.checked == before.checked - 1


def test_secrets_are_never_read_or_shown(plan_of):
    report = awsrules.check_plan(plan_of("dev"))
    assert report.secret >= 1
    plan = planted(
        plan_of("dev"), "database-postgres", password="[secret]", username="1-not-a-user"
    )
    lines = [f.line() for f in awsrules.check_plan(plan).findings]
    assert any("username" in line and "pattern" in line for line in lines)
    assert not any("password" in line for line in lines)


# --------------------------------------------------------------------------------------------
# Lambda runtime lifecycle (cfn-lint's AdditionalSpecs)


def _lifecycle_dates(runtime: str) -> date:
    return date.fromisoformat(str(awsrules.runtime_lifecycle()[runtime]["deprecated"]))


def test_a_deprecated_runtime_is_refused_and_one_about_to_be_is_warned(plan_of):
    deprecated = _lifecycle_dates("python3.12")
    plan = plan_of("dev")
    after = awsrules.check_plan(plan, today=deprecated + timedelta(days=1))
    found = findings_for(after, "functions-canary", "runtime")
    assert [(f.level, f.rule) for f in found] == [("violation", "runtime-deprecated")]
    assert "LmbdRuntimeLifecycle.json" in found[0].source

    soon = awsrules.check_plan(plan, today=deprecated - timedelta(days=30))
    found = findings_for(soon, "functions-canary", "runtime")
    assert [(f.level, f.rule) for f in found] == [("warning", "runtime-deprecation-soon")]
    assert "in 30 days" in found[0].message
    assert soon.violations == []  # a warning does not fail the plan

    far = awsrules.check_plan(plan, today=deprecated - timedelta(days=181))
    assert findings_for(far, "functions-canary", "runtime") == []


# --------------------------------------------------------------------------------------------
# the mapping itself


def test_the_mapping_names_real_schema_properties_and_real_sdk_inputs():
    table = awsrules.mapping()
    for token, entry in table.types.items():
        awsrules.cfn_schema(entry.cfn)  # the CloudFormation type exists
        for spec in entry.inputs.values():
            target = spec if isinstance(spec, str) else spec.cfn_path
            awsrules.resolve(entry.cfn, target)  # raises MappingError if the schema lacks it
        names = sdk_input_names(token)
        top = {re.split(r"[.\[]", p)[0] for p in [*entry.inputs, *entry.unchecked]}
        assert top <= names, (token, sorted(top - names))


def test_no_schema_patterns_never_cover_aws_types():
    table = awsrules.mapping()
    assert all(not p.startswith("aws:") for p in table.no_schema)
    assert all(reason.strip() for reason in table.no_schema.values())
    assert table.no_schema_reason("aws:ec2/vpc:Vpc") is None
    assert table.no_schema_reason("kubernetes:core/v1:Service") is not None


def _botocore_doc(service: str, shape: str, member: str) -> str:
    folder = Path(botocore.__file__).parent / "data" / service
    model_file = sorted(folder.glob("*/service-2.json*"))[-1]
    raw = model_file.read_bytes()
    model = json.loads(gzip.decompress(raw) if model_file.suffix == ".gz" else raw)
    doc = model["shapes"][shape]["members"][member].get("documentation", "")
    return html.unescape(re.sub(r"<[^>]+>", " ", doc))


def test_each_extra_constraint_is_what_botocores_model_says():
    data = awsrules.mapping()
    extras = [(t, p, e) for t, m in data.types.items() for p, es in m.extra.items() for e in es]
    assert extras
    for token, path, extra in extras:
        kind, service, ref = extra.source.split(" ")
        assert kind == "botocore"
        shape, member = ref.split(".")
        doc = " ".join(_botocore_doc(service, shape, member).split())
        assert extra.quote in doc, (token, path, extra.source, doc)
        if "maxLength" in extra.node:
            assert f"{extra.node['maxLength']} characters" in extra.quote


# --------------------------------------------------------------------------------------------
# on the command line


def test_backbone_plan_prints_the_summary_line(backbone_cli):
    result = backbone_cli("plan", "free-tier")
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"^\d+ values checked against AWS's published constraints, 0 violations",
        result.stdout,
        re.M,
    )
    as_json = backbone_cli("plan", "free-tier", "--format", "json")
    assert as_json.returncode == 0
    json.loads(as_json.stdout)  # stdout stays the Plan alone
    assert "values checked against AWS's published constraints" in as_json.stderr


def test_a_copied_stack_with_a_long_name_is_refused_and_the_lambda_name_rule_holds(
    backbone_cli, tmp_path, plan_of
):
    """Names built from the stack name outgrow Lambda's 64 characters. The config refuses such a
    stack name first (exit 2, the limit named); the published-constraints check catches the same
    name when it reaches a plan anyway (planted)."""
    repo = Path(__file__).resolve().parent.parent
    stack = tmp_path / "Pulumi.team-sandbox-for-the-quarterly-load-test-2027.yaml"
    shutil.copy(repo / "stacks" / "Pulumi.dev.yaml", stack)
    result = backbone_cli("plan", str(stack))
    assert result.returncode == 2, result.stderr
    assert "(Lambda names are at most 64)" in result.stderr
    long_name = "backbone-team-sandbox-for-the-quarterly-load-test-2027-housekeeping"
    plan = planted(plan_of("dev"), "functions-housekeeping", name=long_name)
    [finding] = findings_for(awsrules.check_plan(plan), "functions-housekeeping", "name")
    assert finding.rule == "pattern" and finding.value == long_name
    assert "AWS::Lambda::Function.FunctionName" in finding.source
