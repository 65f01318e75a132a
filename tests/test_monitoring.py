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


def custom_metrics(plan):
    """What the functions publish (app/functions/README.md), read from their own settings."""
    out = set()
    for fn in plan.of_type("aws:lambda/function:Function"):
        env = fn.inputs["environment"]["variables"]
        part = fn.inputs["handler"].split(".")[0]
        if part == "canary":
            assert env["METRICS_NAMESPACE"] == "Backbone/Canary"
            for probe in ("health", "read"):
                dims = {"Stack": env["STACK_NAME"], "Probe": probe}
                out |= {key("Backbone/Canary", m, dims) for m in ("Availability", "Latency")}
        elif part == "housekeeping":
            assert env["METRICS_NAMESPACE"] == "Backbone/Jobs"
            dims = {"Stack": env["STACK_NAME"], "Job": "housekeeping"}
            out |= {key("Backbone/Jobs", m, dims) for m in ("Success", "PurgedLinks", "LiveLinks")}
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
        expected |= {
            f"canary-{p}-{m}" for p in ("health", "read") for m in ("availability", "latency")
        }
        expected |= {"job-housekeeping"} if f.housekeeping else set()
        expected.add("fn-failures-queue")
    if plan.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter"):
        expected.add("app-error-logs")
    if plan.of_type("aws:ec2/instance:Instance"):  # the free-tier host heals itself
        expected |= {"host-reboot", "host-recover"}
    assert names == expected
    if plan.stack in ("dev", "prod"):
        assert {"alb-5xx-rate", "db-read-latency", "fn-failures-queue", "app-error-logs"} <= names
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
    # the canary's (tests/test_stack_free_tier.py counts its 6, the redirect probe's included)
    assert usage["custom_metrics"] > 0


def test_the_functions_custom_metrics_alone_fit_the_free_allowance(plan_of):
    # 4 canary (2 metrics x 2 probes) + 3 job metrics, as app/functions/README.md promises.
    assert free_tier_usage(plan_of("dev"))["custom_metrics"] == 7 <= FREE["custom_metrics"]


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
