"""A failed password rotation reaches the alerts topic even when its function did not error
(Secrets Manager's RotationFailed / TestRotationFailed CloudTrail service events, through an
EventBridge rule per rotated secret), and the canary's redirect probe has its alarms on dev and
prod: the component on its own (backbone.synth.synth_component), the stacks' plans, and the
rule's pattern and message run by moto's EventBridge over HTTP (a real part)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backbone.plan import Plan
from backbone.synth import synth_component
from infra.components.monitoring import Monitoring, Watched
from infra.config import MonitoringConfig
from tests.aws_harness import REGION, aws, client, moto_server

_ = (aws, moto_server)  # fixtures

ACCOUNT = "123456789012"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
POLICY = "aws:sns/topicPolicy:TopicPolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
APP_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:backbone-test-app-AbCdEf"
JOB_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:backbone-test-job-GhIjKl"
ROTATING = Watched(
    rotation_functions={"app": "backbone-test-rotate-app", "job": "backbone-test-rotate-job"},
    rotation_secrets={"app": APP_SECRET, "job": JOB_SECRET},
)


def monitoring(watched: Watched, *, workspace: str | None = None, twice: bool = False) -> Plan:
    """One Monitoring watching `watched`, its topic policy made as the stack makes it."""

    def build() -> dict[str, Any]:
        made = Monitoring(
            "monitoring",
            MonitoringConfig(enabled=True),
            stack="test",
            region=REGION,
            watched=watched,
            protect=False,
        )
        made.publish_policy(workspace)
        if twice:
            made.publish_policy(workspace)
        return {"rules": [r.name for r in made.event_rules]}

    return synth_component(build)


def failed_event(secret: str, name: str = "RotationFailed", **detail: Any) -> dict[str, Any]:
    """A RotationFailed record as CloudTrail logs it (Secrets Manager user guide, "CloudTrail
    entries", example log entry), as EventBridge delivers it: the record is the detail."""
    record = {
        "eventVersion": "1.08",
        "userIdentity": {"accountId": ACCOUNT, "invokedBy": "secretsmanager.amazonaws.com"},
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": "secretsmanager.amazonaws.com",
        "errorMessage": "Error when executing lambda backbone-test-rotate-app during setSecret "
        "step",
        "requestParameters": None,
        "responseElements": None,
        "additionalEventData": {"SecretId": secret},
        "eventType": "AwsServiceEvent",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    return record | detail


# -- the component -------------------------------------------------------------------------------


def test_each_rotated_secret_has_a_rule_for_its_failed_rotations_and_only_its_own():
    plan = monitoring(ROTATING)
    rules = {r.name: r for r in plan.of_type(RULE)}
    assert set(rules) == {"monitoring-rotation-app-failed", "monitoring-rotation-job-failed"}
    for part, secret in (("app", APP_SECRET), ("job", JOB_SECRET)):
        rule = rules[f"monitoring-rotation-{part}-failed"].inputs
        assert rule["name"] == f"backbone-test-rotfail-{part}"
        assert json.loads(rule["eventPattern"]) == {
            "source": ["aws.secretsmanager"],
            "detail-type": ["AWS Service Event via CloudTrail"],
            "detail": {
                "eventSource": ["secretsmanager.amazonaws.com"],
                "eventName": ["RotationFailed", "TestRotationFailed"],
                "additionalEventData": {"SecretId": [secret]},
            },
        }
        assert "scheduleExpression" not in rule


def test_the_rules_publish_to_the_topic_a_runbook_naming_the_secret_and_the_error():
    plan = monitoring(ROTATING)
    topic = plan.one("aws:sns/topic:Topic").outputs["arn"]
    targets = {t.name: t.inputs for t in plan.of_type(TARGET)}
    assert set(targets) == {"monitoring-rotation-app-failed", "monitoring-rotation-job-failed"}
    for part in ("app", "job"):
        target = targets[f"monitoring-rotation-{part}-failed"]
        assert target["arn"] == topic
        assert target["rule"] == f"backbone-test-rotfail-{part}"
        transformer = target["inputTransformer"]
        assert transformer["inputPaths"] == {
            "secret": "$.detail.additionalEventData.SecretId",
            "event": "$.detail.eventName",
            "error": "$.detail.errorMessage",
            "at": "$.time",
        }
        # a JSON string: SNS publishes it as the plain-text message
        text = json.loads(transformer["inputTemplate"])
        assert isinstance(text, str)
        assert text.startswith(f"The {part} role's password rotation failed")
        for placeholder in ("<secret>", "<error>", "<event>", "<at>"):
            assert placeholder in text
        assert f"/aws/lambda/backbone-test-rotate-{part}" in text
        assert "aws secretsmanager rotate-secret --secret-id <secret>" in text
        assert "describe-secret --secret-id <secret>" in text


def test_the_topic_policy_and_key_admit_the_rules_and_nothing_wider():
    plan = monitoring(ROTATING)
    topic = plan.one("aws:sns/topic:Topic").outputs["arn"]
    (policy,) = plan.of_type(POLICY)
    assert policy.name == "monitoring-alerts-policy" and policy.inputs["arn"] == topic
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    assert set(statements) == {
        "AccountManages",
        "CloudWatchAlarmsPublish",
        "EventBridgeRulesPublish",
    }
    events = statements["EventBridgeRulesPublish"]
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Action"] == "sns:Publish" and events["Resource"] == topic
    rule_arns = sorted(r.outputs["arn"] for r in plan.of_type(RULE))
    assert sorted(events["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule_arns
    key = plan.one("aws:kms/key:Key", "monitoring-alerts-key")
    (events_key,) = [
        s
        for s in json.loads(key.inputs["policy"])["Statement"]
        if s.get("Principal") == {"Service": "events.amazonaws.com"}
    ]
    assert set(events_key["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert events_key["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}


def test_with_a_workspace_the_one_policy_also_admits_its_alertmanager():
    workspace = f"arn:aws:aps:{REGION}:{ACCOUNT}:workspace/ws-0123"
    plan = monitoring(ROTATING, workspace=workspace)
    (policy,) = plan.of_type(POLICY)
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    aps = statements["PrometheusAlertmanagerPublishes"]
    assert aps["Condition"]["ArnEquals"] == {"aws:SourceArn": workspace}
    assert "EventBridgeRulesPublish" in statements


def test_no_rotation_no_rule_no_policy_and_a_key_without_eventbridge():
    plan = monitoring(Watched(db_instance_identifier="backbone-test-database"))
    assert not plan.of_type(RULE) and not plan.of_type(TARGET)
    assert not plan.of_type(POLICY)  # the default policy admits the account's alarms
    key = plan.one("aws:kms/key:Key", "monitoring-alerts-key")
    assert "events.amazonaws.com" not in key.inputs["policy"]


def test_the_topic_has_one_policy():
    with pytest.raises(Exception, match="call publish_policy once"):
        monitoring(ROTATING, twice=True)


# -- the stacks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stacks_rules_watch_exactly_the_secrets_they_rotate(plan_of, stack):
    plan = plan_of(stack)
    rotated = {
        r.name.removeprefix("rotation-"): r.inputs["secretId"]
        for r in plan.of_type("aws:secretsmanager/secretRotation:SecretRotation")
    }
    assert set(rotated) == {"app", "job"}
    watched = {
        r.name.removeprefix("monitoring-rotation-").removesuffix("-failed"): json.loads(
            r.inputs["eventPattern"]
        )["detail"]["additionalEventData"]["SecretId"]
        for r in plan.of_type(RULE)
        if r.name.startswith("monitoring-rotation-")
    }
    assert watched == {part: [arn] for part, arn in rotated.items()}
    topic = plan.one("aws:sns/topic:Topic")
    for t in plan.of_type(TARGET):
        if t.name.startswith("monitoring-rotation-"):
            assert t.inputs["arn"] == topic.outputs["arn"]
            assert (
                f"/aws/lambda/backbone-{stack}-rotate-"
                in t.inputs["inputTransformer"]["inputTemplate"]
            )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_topic_policy_moved_to_monitoring_is_the_same_resource(plan_of, stack):
    plan = plan_of(stack)
    (policy,) = plan.of_type(POLICY)
    assert policy.parent == plan.one("backbone:monitoring:Monitoring").urn
    # made by observability before: the alias is its old URN, so `pulumi up` updates it in place
    assert policy.aliases == [
        f"urn:pulumi:{stack}::backbone::backbone:observability:Observability"
        "$aws:sns/topicPolicy:TopicPolicy::observability-alerts-policy"
    ]
    statements = {s["Sid"] for s in json.loads(policy.inputs["policy"])["Statement"]}
    assert {"EventBridgeRulesPublish", "PrometheusAlertmanagerPublishes"} <= statements
    alertmanager = plan.one("aws:amp/alertManagerDefinition:AlertManagerDefinition")
    assert policy.urn in alertmanager.dependencies


def test_free_tier_rotates_nothing_and_keeps_its_topic_as_it_was(plan_of):
    plan = plan_of("free-tier")
    # its rules are the functions' schedules; none watches a rotation
    assert all(r.name.startswith("functions-") for r in plan.of_type(RULE))
    assert not plan.of_type(POLICY)
    names = [a.inputs["name"] for a in plan.of_type(ALARM)]
    assert "backbone-free-tier-canary-redirect-availability" not in names


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_redirect_probe_has_the_alarms_the_read_probe_has(plan_of, stack):
    plan = plan_of(stack)
    by = {
        a.inputs["name"].removeprefix(f"backbone-{stack}-"): a.inputs for a in plan.of_type(ALARM)
    }
    for metric in ("availability", "latency"):
        redirect, read = by[f"canary-redirect-{metric}"], by[f"canary-read-{metric}"]
        assert redirect["dimensions"] == {"Stack": stack, "Probe": "redirect"}
        same = ("namespace", "metricName", "statistic", "comparisonOperator", "threshold")
        same += ("period", "evaluationPeriods", "datapointsToAlarm", "treatMissingData")
        assert {k: redirect[k] for k in same} == {k: read[k] for k in same}
        assert redirect["alarmActions"] == read["alarmActions"]
    # a canary that stops is as bad as a failed redirect
    assert by["canary-redirect-availability"]["treatMissingData"] == "breaching"
    text = by["canary-redirect-availability"]["alarmDescription"]
    assert "cached redirect" in text and "canary link" in text
    assert f"/aws/lambda/backbone-{stack}-canary" in text


def test_backbone_cost_prices_the_redirect_alarms_and_not_the_rules(plan_of, backbone_cli):
    report = json.loads(backbone_cli("cost", "dev", "--format", "json").stdout)
    lines = {x["resource"]: x for x in report["lines"] if x["type"] == ALARM}
    for metric in ("availability", "latency"):
        assert lines[f"monitoring-canary-redirect-{metric}"]["item"] == "cloudwatch/alarm-metric"
    # every alarm of the plan is priced, and the rules and targets are free (no line, not
    # unpriced: EventBridge does not charge for AWS service events on the default bus)
    assert set(lines) == {a.name for a in plan_of("dev").of_type(ALARM)}
    assert not [x for x in report["lines"] if x["type"] in (RULE, TARGET)]
    assert report["unpriced"] == []


# -- moto's EventBridge, over HTTP -----------------------------------------------------------------


@pytest.mark.realpart
def test_a_failed_rotation_of_the_secret_reaches_a_subscriber_with_the_runbook(aws):
    """moto 5.2 delivers to SQS targets, not SNS ones: the queue stands for the topic's
    subscriber, fed by the rule's own pattern and input transformer, and moto's EventBridge
    decides what matches."""
    plan = monitoring(ROTATING)
    rule = plan.one(RULE, "monitoring-rotation-app-failed").inputs
    target = plan.one(TARGET, "monitoring-rotation-app-failed").inputs
    events, sqs = client("events"), client("sqs")
    queue = sqs.create_queue(QueueName="alerts-subscriber")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name=rule["name"], EventPattern=rule["eventPattern"], State="ENABLED")
    transformer = target["inputTransformer"]
    events.put_targets(
        Rule=rule["name"],
        Targets=[
            {
                "Id": "alerts",
                "Arn": queue_arn,
                "InputTransformer": {
                    "InputPathsMap": transformer["inputPaths"],
                    "InputTemplate": transformer["inputTemplate"],
                },
            }
        ],
    )

    def put(detail: dict[str, Any], kind: str = "AWS Service Event via CloudTrail") -> None:
        entry = {"Source": "aws.secretsmanager", "DetailType": kind, "Detail": json.dumps(detail)}
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0

    # not this rule's: another secret, a success, an API call record
    put(failed_event(JOB_SECRET))
    put(failed_event(APP_SECRET, "RotationSucceeded"))
    put(failed_event(APP_SECRET), kind="AWS API Call via CloudTrail")
    put(failed_event(APP_SECRET))
    put(failed_event(APP_SECRET, "TestRotationFailed", errorMessage="the role refused the login"))
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [json.loads(m["Body"]) for m in got.get("Messages", [])]
    assert len(bodies) == 2, bodies
    first, second = sorted(bodies, key=lambda b: "TestRotationFailed" in b)
    assert first.startswith("The app role's password rotation failed (Secrets Manager ")
    assert "RotationFailed, " in first and f"for the secret {APP_SECRET}: Error when" in first
    assert f"rotate-secret --secret-id {APP_SECRET}." in first
    assert "<" not in first  # every placeholder filled
    assert "TestRotationFailed" in second and "the role refused the login" in second
