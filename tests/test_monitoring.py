"""Monitoring as planned per stack: every alarm watches a real metric of a resource in the same
stack and notifies the topic; the dashboard shows only real metrics; the Prometheus rules reach
the cluster and `backbone manifests`; free-tier stays inside CloudWatch's always-free allowances.
What the component makes of its settings (thresholds, the topic's key, subscriptions):
tests/test_component_monitoring.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from backbone.manifests import write
from backbone.mocks import MAKERS
from backbone.synth import load_config, resolve
from infra.components.prometheus import ALERTS, render_rules

REPO = Path(__file__).resolve().parent.parent
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
STACKS = ["free-tier", "dev", "prod"]
ALB_METRICS = {
    "RequestCount",
    "HTTPCode_Target_5XX_Count",
    "HTTPCode_ELB_5XX_Count",
    "HTTPCode_Target_4XX_Count",
    "TargetResponseTime",
    "ActiveConnectionCount",
}
RDS_METRICS = {
    "CPUUtilization",
    "DatabaseConnections",
    "FreeStorageSpace",
    "FreeableMemory",
    "ReadIOPS",
    "WriteIOPS",
    "ReadLatency",
    "WriteLatency",
}
LAMBDA_METRICS = {"Invocations", "Errors", "Throttles", "Duration"}
EC2_METRICS = {"StatusCheckFailed_System", "StatusCheckFailed_Instance"}
SQS_METRICS = {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}
# Always free (CloudWatch pricing, free tier): 10 alarm metrics, 10 custom metrics, 3 dashboards.
FREE = {"alarm_metrics": 10, "custom_metrics": 10, "dashboards": 3}


@pytest.fixture(params=STACKS)
def plan(request, plan_of):
    return plan_of(request.param)


def mocked(plan, resource):
    urn = f"{plan.project}::{plan.stack}::{resource.type}::{resource.name}"
    return MAKERS[resource.type](resource.name, urn, resource.inputs, "us-east-1")[1]


def key(namespace, name, dims):
    return (namespace, name, tuple(sorted(dims.items())))


def real_metrics(plan):
    """Every metric the stack's resources publish, with the dimensions that name them."""
    known = set()
    for alb in plan.of_type("aws:lb/loadBalancer:LoadBalancer"):
        lb = {"LoadBalancer": mocked(plan, alb)["arnSuffix"]}
        known |= {key("AWS/ApplicationELB", m, lb) for m in ALB_METRICS}
        for tg in plan.of_type("aws:lb/targetGroup:TargetGroup"):
            dims = {**lb, "TargetGroup": mocked(plan, tg)["arnSuffix"]}
            known |= {
                key("AWS/ApplicationELB", m, dims)
                for m in ("UnHealthyHostCount", "HealthyHostCount")
            }
    for db in plan.of_type("aws:rds/instance:Instance"):
        dims = {"DBInstanceIdentifier": mocked(plan, db)["identifier"]}
        assert dims["DBInstanceIdentifier"] == db.id
        known |= {key("AWS/RDS", m, dims) for m in RDS_METRICS}
    for fn in plan.of_type("aws:lambda/function:Function"):
        known |= {key("AWS/Lambda", m, {"FunctionName": fn.id}) for m in LAMBDA_METRICS}
    for instance in plan.of_type("aws:ec2/instance:Instance"):
        dims = {"InstanceId": instance.id}
        known |= {key("AWS/EC2", m, dims) for m in EC2_METRICS}
    for queue in plan.of_type("aws:sqs/queue:Queue"):
        dims = {"QueueName": mocked(plan, queue).get("name") or queue.inputs.get("name")}
        known |= {key("AWS/SQS", m, dims) for m in SQS_METRICS}
    # what a log group's metric filter publishes (no dimensions)
    for f in plan.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter"):
        t = f.inputs["metricTransformation"]
        known.add(key(t["namespace"], t["name"], {}))
    known |= custom_metrics(plan)
    if plan.outputs.get("region") == "us-east-1":
        known.add(key("AWS/Billing", "EstimatedCharges", {"Currency": "USD"}))
    return known


# What the housekeeping job publishes (app/functions/README.md, its metrics table).
JOB_METRICS = (
    "Success",
    "PurgedLinks",
    "PurgedExpired",
    "PurgedUnused",
    "PurgeBatches",
    "PurgeComplete",
    "LiveLinks",
    "ExpiredLinks",
)


def custom_metrics(plan):
    """What the functions publish (app/functions/README.md), read from their own settings: the
    canary's Availability and Latency per probe (health, read, and redirect when it is given the
    known link), its two certificate metrics on https; the job's eight."""
    out = set()
    for fn in plan.of_type("aws:lambda/function:Function"):
        env = fn.inputs["environment"]["variables"]
        part = fn.inputs["handler"].split(".")[0]
        if part == "canary":
            assert env["METRICS_NAMESPACE"] == "Backbone/Canary"
            probes = ["health", "read"] + (["redirect"] if "CANARY_REDIRECT_CODE" in env else [])
            for probe in probes:
                dims = {"Stack": env["STACK_NAME"], "Probe": probe}
                out |= {key("Backbone/Canary", m, dims) for m in ("Availability", "Latency")}
            if str(env["CANARY_BASE_URL"]).startswith("https://"):
                dims = {"Stack": env["STACK_NAME"], "Probe": "certificate"}
                out |= {
                    key("Backbone/Canary", m, dims)
                    for m in ("CertificateExpiring", "CertificateDaysLeft")
                }
        elif part == "housekeeping":
            assert env["METRICS_NAMESPACE"] == "Backbone/Jobs"
            dims = {"Stack": env["STACK_NAME"], "Job": "housekeeping"}
            out |= {key("Backbone/Jobs", m, dims) for m in JOB_METRICS}
    return out


def alarm_metrics(alarm):
    i = alarm.inputs
    if "metricQueries" in i:
        return [
            key(q["metric"]["namespace"], q["metric"]["metricName"], q["metric"]["dimensions"])
            for q in i["metricQueries"]
            if "metric" in q
        ]
    return [key(i["namespace"], i["metricName"], i.get("dimensions") or {})]


def test_every_alarm_watches_a_real_metric_and_notifies_the_topic(plan):
    alarms = plan.of_type(ALARM)
    assert alarms
    topic = mocked(plan, plan.one("aws:sns/topic:Topic"))["arn"]
    known = real_metrics(plan)
    for alarm in alarms:
        for metric in alarm_metrics(alarm):
            assert metric in known, (alarm.name, metric)
        i = alarm.inputs
        if any(a.startswith("arn:aws:automate:") for a in i["alarmActions"]):
            # the free-tier host's own EC2 actions (reboot, recover) come first: the host
            # component's alarms, whose actions its own tests check
            continue
        assert i["alarmActions"] == [topic] and i["okActions"] == [topic], alarm.name
        assert i["name"].startswith(f"backbone-{plan.stack}-")
        assert len(i["alarmDescription"]) > 80  # says what happened and what to do
        assert i["treatMissingData"] in {"breaching", "notBreaching", "ignore", "missing"}
        assert 1 <= i["datapointsToAlarm"] <= i["evaluationPeriods"]


def test_the_alarm_set_of_each_stack(plan):
    """Each alarm for a piece the stack runs, and none for a piece it does not."""
    names = {a.inputs["name"].removeprefix(f"backbone-{plan.stack}-") for a in plan.of_type(ALARM)}
    m = load_config(resolve(plan.stack, REPO)).monitoring
    expected = {"billing"} if m.billing_alarm_usd is not None else set()
    if plan.of_type("aws:lb/loadBalancer:LoadBalancer"):
        expected |= {"alb-5xx-rate", "alb-unhealthy-hosts", "alb-target-p99"}
    if plan.of_type("aws:rds/instance:Instance"):
        expected |= {
            "db-cpu",
            "db-free-storage",
            "db-connections",
            "db-freeable-memory",
            "db-read-latency",
            "db-write-latency",
        }
    f = load_config(resolve(plan.stack, REPO)).functions
    if plan.of_type("aws:lambda/function:Function") and f.alarms == "availability":
        expected.add("canary-read-availability")  # the free-tier stack: one, the 10th free
    elif plan.of_type("aws:lambda/function:Function"):
        parts = ("canary", "housekeeping") if f.housekeeping else ("canary",)
        expected |= {f"fn-{p}-{m}" for p in parts for m in ("errors", "throttles")}
        # each probe the canary publishes: the redirect's where the known link is wired
        canary = plan.one("aws:lambda/function:Function", "functions-canary")
        wired = "CANARY_REDIRECT_CODE" in canary.inputs["environment"]["variables"]
        probes = ("health", "read", "redirect") if wired else ("health", "read")
        expected |= {f"canary-{p}-{m}" for p in probes for m in ("availability", "latency")}
        expected |= {"job-housekeeping"} if f.housekeeping else set()
        expected.add("fn-failures-queue")
    # each role password's rotation function (the stacks with the cluster)
    rotations = plan.of_type("aws:secretsmanager/secretRotation:SecretRotation")
    expected |= {f"{r.name}-errors" for r in rotations}
    if plan.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter"):
        expected.add("app-error-logs")
    if plan.of_type("aws:ec2/instance:Instance"):  # the free-tier host heals itself
        expected |= {"host-reboot", "host-recover"}
    assert names == expected
    if plan.stack in ("dev", "prod"):
        assert {"alb-5xx-rate", "db-read-latency", "fn-failures-queue", "app-error-logs"} <= names
        assert {"rotation-app-errors", "rotation-job-errors"} <= names
        assert {"canary-redirect-availability", "canary-redirect-latency"} <= names
    else:
        assert "billing" in names


def test_dashboard_shows_golden_signals_of_real_metrics(plan):
    boards = plan.of_type("aws:cloudwatch/dashboard:Dashboard")
    watched = ("aws:lb/loadBalancer:LoadBalancer", "aws:rds/instance:Instance")
    if not any(plan.of_type(t) for t in watched):
        assert not boards
        return
    (board,) = boards
    body = json.loads(board.inputs["dashboardBody"])
    known = real_metrics(plan)
    titles = []
    for w in body["widgets"]:
        if w["type"] != "metric":
            continue
        titles.append(w["properties"]["title"])
        for line in w["properties"]["metrics"]:
            parts = [p for p in line if not isinstance(p, dict)]
            dims = dict(zip(parts[2::2], parts[3::2], strict=True))
            assert key(parts[0], parts[1], dims) in known, line
    text = " ".join(titles)
    signals = ("Traffic", "Errors", "Latency", "Saturation", "Availability")
    assert all(signal in text for signal in signals) or plan.stack == "free-tier", text
    if plan.stack in ("dev", "prod"):
        # the cluster's app and the failures queue: the error lines, the queue, the log query
        assert "failed function runs waiting" in text and "error-level log lines" in text
        (logs,) = [w for w in body["widgets"] if w["type"] == "log"]
        group = plan.one("aws:cloudwatch/logMetricFilter:LogMetricFilter").inputs["logGroupName"]
        assert logs["properties"]["query"].startswith(f"SOURCE '{group}' | fields @timestamp")


def free_tier_usage(plan):
    """Alarm metrics (a metric-math alarm counts each metric it reads), custom metrics the
    functions publish, dashboards."""
    return {
        "alarm_metrics": sum(len(alarm_metrics(a)) for a in plan.of_type(ALARM)),
        "custom_metrics": len(custom_metrics(plan)),
        "dashboards": len(plan.of_type("aws:cloudwatch/dashboard:Dashboard")),
    }


def test_free_tier_monitoring_fits_the_always_free_allowances(plan_of):
    usage = free_tier_usage(plan_of("free-tier"))
    assert all(usage[k] <= FREE[k] for k in FREE), usage
    # the canary's 6: 2 metrics x 3 probes, the redirect probe's included (the host's migration
    # makes the known link); tests/test_stack_free_tier.py counts the same 6 through backbone cost
    assert usage["custom_metrics"] == 6


def test_the_functions_custom_metrics_pass_the_free_allowance_and_cost_charges_the_rest(
    plan_of, backbone_cli
):
    # 6 canary (2 metrics x 3 probes: health, read, the known link's redirect; dev serves http,
    # so no certificate metrics) + 8 job metrics, as app/functions/README.md says: 14, past the
    # always-free 10.
    published = free_tier_usage(plan_of("dev"))["custom_metrics"]
    assert published == 14 > FREE["custom_metrics"]
    # backbone cost prices the same 14 (backbone/data/usage.yaml), the free 10 applied once.
    report = json.loads(backbone_cli("cost", "dev", "--format", "json").stdout)
    lines = [
        x
        for x in report["lines"]
        if x["item"] == "cloudwatch/custom-metric" and x["type"] == "aws:lambda/function:Function"
    ]
    assert sum(x["quantity"] for x in lines) == published
    charged = sum(x["quantity"] - x["freeQuantity"] for x in lines)
    assert charged == published - FREE["custom_metrics"] == 4
    price = lines[0]["price"]["usd"]
    assert sum(x["usd"] for x in lines) == pytest.approx(4 * price)


def test_prometheus_rules_reach_the_cluster_from_the_same_thresholds(plan):
    maps = [
        r
        for r in plan.of_type("kubernetes:core/v1:ConfigMap")
        if r.name == "monitoring-prometheus-rules"
    ]
    if plan.stack == "free-tier":
        assert not maps
        return
    m = load_config(resolve(plan.stack, REPO)).monitoring
    (cm,) = maps
    assert cm.provider == plan.one("pulumi:providers:kubernetes").urn
    assert cm.inputs["metadata"]["name"] == "backbone-prometheus-rules"
    assert cm.inputs["metadata"]["namespace"] == plan.outputs["appNamespace"]
    rules = yaml.safe_load(cm.inputs["data"]["backbone-app.rules.yaml"])
    assert rules == render_rules(
        error_ratio=m.alb_error_rate_percent / 100,
        latency_p99_seconds=m.target_response_time_p99_seconds,
        for_minutes=m.period_seconds * m.evaluation_periods // 60,
        labels={"stack": plan.stack},
    )


def test_backbone_manifests_writes_the_rules(plan_of, tmp_path):
    write(plan_of("dev"), tmp_path)
    (file,) = tmp_path.glob("*-configmap-backbone-prometheus-rules.yaml")
    obj = yaml.safe_load(file.read_text())
    rules = yaml.safe_load(obj["data"]["backbone-app.rules.yaml"])
    assert tuple(r["alert"] for r in rules["groups"][0]["rules"]) == ALERTS


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_rotation_function_has_an_errors_alarm_with_its_runbook(plan_of, stack):
    plan = plan_of(stack)
    topic = mocked(plan, plan.one("aws:sns/topic:Topic"))["arn"]
    for part in ("app", "job"):
        fn = plan.one("aws:lambda/function:Function", f"rotation-{part}")
        alarm = plan.one(ALARM, f"monitoring-rotation-{part}-errors").inputs
        assert (alarm["namespace"], alarm["metricName"]) == ("AWS/Lambda", "Errors")
        assert alarm["dimensions"] == {"FunctionName": fn.inputs["name"]}
        assert alarm["statistic"] == "Sum" and alarm["threshold"] == 1
        assert alarm["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
        # rotating is 4 invocations every N days: no invocation is no failure
        assert alarm["treatMissingData"] == "notBreaching"
        assert alarm["alarmActions"] == alarm["okActions"] == [topic]
        text = alarm["alarmDescription"]
        logs = plan.one("aws:cloudwatch/logGroup:LogGroup", f"rotation-{part}-logs").inputs["name"]
        assert f"CloudWatch Logs group {logs};" in text
        # the query finds the line the function logs on a failed step (app/functions/rotation)
        assert (
            "Logs Insights: fields @timestamp, @message | filter @message like /rotation " in text
        )
        assert "aws secretsmanager rotate-secret" in text
    board = json.loads(plan.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    (errors,) = [w for w in board["widgets"] if w["properties"].get("title") == "Errors"]
    shown = {line[3] for line in errors["properties"]["metrics"]}
    assert {f"backbone-{stack}-rotate-app", f"backbone-{stack}-rotate-job"} <= shown
