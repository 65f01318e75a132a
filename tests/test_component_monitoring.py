"""The monitoring component on its own (backbone.synth.synth_component): the alerts topic and its
key, the alarm each watched piece brings with the thresholds, periods and missing-data choices of
its config section, the dashboard and the Prometheus rules, made from plain names of what it
watches."""

from __future__ import annotations

import json
from typing import Any

import yaml

from backbone.plan import Plan
from backbone.synth import synth_component
from infra.components.monitoring import Monitoring, Watched
from infra.components.prometheus import render_rules, thresholds
from infra.config import MonitoringConfig

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DB_ALARMS = {f"db-{m}" for m in ("cpu", "free-storage", "connections", "freeable-memory")} | {
    f"db-{io}-latency" for io in ("read", "write")
}
TOPIC = "aws:sns/topic:Topic"
# Everything a stack can give it to watch, by the names AWS would report.
EVERYTHING = Watched(
    alb_arn_suffix="app/web-alb/0123456789abcdef",
    target_group_arn_suffix="targetgroup/web-tg/0123456789abcdef",
    db_instance_identifier="backbone-test-database",
    function_names={"canary": "backbone-test-canary", "housekeeping": "backbone-test-housekeeping"},
    canary_period_seconds=300,
    job_name="housekeeping",
    failures_queue_name="backbone-test-failures",
    app_log_group="/aws/containerinsights/backbone-test/application",
    error_metric=("Backbone/App", "ErrorLogLines"),
)
# Every threshold off its default, so a threshold that ignored its setting would show.
TUNED = {
    "period_seconds": 120,
    "evaluation_periods": 4,
    "alb_error_rate_percent": 2.5,
    "unhealthy_hosts": 2,
    "target_response_time_p99_seconds": 0.75,
    "db_cpu_percent": 70,
    "db_free_storage_gb": 5,
    "db_connections": 150,
    "db_freeable_memory_mb": 256,
    "db_read_latency_ms": 15,
    "db_write_latency_ms": 25,
    "error_log_lines": 7,
    "function_errors": 2,
    "function_throttles": 3,
    "canary_latency_ms": 1500,
    "billing_alarm_usd": 40,
}


def monitoring(
    watched: Watched = EVERYTHING,
    *,
    rules_namespace: str | None = None,
    publishers: tuple[str, ...] = (),
    protect: bool = False,
    **settings: Any,
) -> Plan:
    """The plan of one Monitoring made from `settings` (MonitoringConfig's field names)."""
    cfg = MonitoringConfig(enabled=True, **settings)

    def build() -> dict[str, Any]:
        made = Monitoring(
            "monitoring",
            cfg,
            stack="test",
            region="us-east-1",
            watched=watched,
            rules_namespace=rules_namespace,
            publishers=publishers,
            protect=protect,
        )
        return {"alarmNames": [a.name for a in made.alarms]}

    return synth_component(build)


def alarms(plan: Plan) -> dict[str, dict[str, Any]]:
    """Each alarm's inputs by its name without the stack's prefix."""
    return {a.inputs["name"].removeprefix("backbone-test-"): a.inputs for a in plan.of_type(ALARM)}


def test_each_watched_piece_brings_its_alarms_and_nothing_else_does():
    names = set(alarms(monitoring(billing_alarm_usd=40)))
    assert names == {
        "alb-5xx-rate",
        "alb-unhealthy-hosts",
        "alb-target-p99",
        *DB_ALARMS,
        *(f"fn-{f}-{m}" for f in ("canary", "housekeeping") for m in ("errors", "throttles")),
        *(f"canary-{p}-{m}" for p in ("health", "read") for m in ("availability", "latency")),
        "job-housekeeping",
        "fn-failures-queue",
        "app-error-logs",
        "billing",
    }
    only_db = alarms(monitoring(Watched(db_instance_identifier="backbone-test-database")))
    assert set(only_db) == DB_ALARMS
    # a load balancer without a target group to judge: no unhealthy-hosts alarm
    alb_only = alarms(monitoring(Watched(alb_arn_suffix="app/web-alb/0123456789abcdef")))
    assert set(alb_only) == {"alb-5xx-rate", "alb-target-p99"}


def test_nothing_to_watch_is_a_topic_and_no_alarm_or_dashboard():
    plan = monitoring(Watched())
    assert plan.one(TOPIC)
    assert not plan.of_type(ALARM)
    assert not plan.of_type("aws:cloudwatch/dashboard:Dashboard")
    assert plan.outputs["alarmNames"] == []


def test_every_alarm_tells_the_topic_when_it_fires_and_when_it_clears():
    plan = monitoring(billing_alarm_usd=40)
    topic = plan.one(TOPIC).outputs["arn"]
    for name, alarm in alarms(plan).items():
        assert alarm["alarmActions"] == [topic] and alarm["okActions"] == [topic], name
        assert len(alarm["alarmDescription"]) > 80, name  # what happened and what to do
        assert 1 <= alarm["datapointsToAlarm"] <= alarm["evaluationPeriods"], name
    assert sorted(plan.outputs["alarmNames"]) == sorted(
        a.inputs["name"] for a in plan.of_type(ALARM)
    )


def test_thresholds_periods_and_missing_data_follow_the_config():
    m = MonitoringConfig(enabled=True, **TUNED)
    by = alarms(monitoring(**TUNED))
    rate = by["alb-5xx-rate"]
    assert rate["threshold"] == m.alb_error_rate_percent
    (expr,) = [q for q in rate["metricQueries"] if q.get("returnData")]
    assert "requests >= 10" in expr["expression"] and "target5xx" in expr["expression"]
    assert {q["metric"]["period"] for q in rate["metricQueries"] if "metric" in q} == {120}
    assert by["alb-unhealthy-hosts"]["threshold"] == 2
    assert by["alb-target-p99"]["extendedStatistic"] == "p99"
    assert by["alb-target-p99"]["threshold"] == 0.75
    assert by["db-cpu"]["threshold"] == 70
    assert by["db-free-storage"]["threshold"] == 5 * 1024**3
    assert by["db-free-storage"]["comparisonOperator"] == "LessThanThreshold"
    assert by["db-connections"]["threshold"] == 150
    assert by["db-freeable-memory"]["threshold"] == 256 * 1024**2
    assert by["db-freeable-memory"]["comparisonOperator"] == "LessThanThreshold"
    assert by["db-read-latency"]["threshold"] == 15 / 1000  # RDS: seconds
    assert by["db-write-latency"]["threshold"] == 25 / 1000
    assert by["app-error-logs"]["threshold"] == 7
    assert by["fn-canary-errors"]["threshold"] == 2
    assert by["fn-housekeeping-throttles"]["threshold"] == 3
    assert by["billing"]["threshold"] == 40
    queue = by["fn-failures-queue"]
    assert (queue["metricName"], queue["threshold"], queue["statistic"]) == (
        "ApproximateNumberOfMessagesVisible",
        1,
        "Maximum",
    )
    # a p99 over a handful of requests keeps the alarm's state instead of paging
    assert by["alb-target-p99"]["evaluateLowSampleCountPercentiles"] == "ignore"
    assert all(
        "evaluateLowSampleCountPercentiles" not in a for a in by.values() if "statistic" in a
    )
    for name in ("alb-unhealthy-hosts", "alb-target-p99", "db-cpu", "db-connections"):
        assert by[name]["period"] == 120
        assert by[name]["evaluationPeriods"] == 4
    for probe in ("health", "read"):
        avail = by[f"canary-{probe}-availability"]
        assert (avail["period"], avail["statistic"], avail["threshold"]) == (300, "Minimum", 1)
        assert avail["evaluationPeriods"] == 4
        assert by[f"canary-{probe}-latency"]["threshold"] == 1500
    job = by["job-housekeeping"]
    assert (job["period"], job["evaluationPeriods"]) == (86400, 1)
    # Deliberate missing-data choices: "nothing reported" is owned by the canary and the job.
    missing = {n: a["treatMissingData"] for n, a in by.items()}
    assert {n for n, v in missing.items() if v == "breaching"} == {
        "canary-health-availability",
        "canary-read-availability",
        "job-housekeeping",
    }
    assert missing["db-free-storage"] == "ignore"


def test_app_and_database_alarms_point_at_their_logs():
    by = alarms(monitoring())
    for name in ("alb-5xx-rate", "alb-target-p99", "app-error-logs"):
        text = by[name]["alarmDescription"]
        assert f"CloudWatch Logs group {EVERYTHING.app_log_group}" in text, name
        assert 'kubernetes.namespace_name = "backbone"' in text, name
    for name in ("db-freeable-memory", "db-read-latency", "db-write-latency"):
        text = by[name]["alarmDescription"]
        assert "/aws/rds/instance/backbone-test-database/postgresql" in text, name
    assert "Logs:" not in by["db-cpu"]["alarmDescription"]


def test_the_topic_key_admits_cloudwatch_and_each_publisher():
    plan = monitoring(publishers=("aps.amazonaws.com",), protect=True)
    key = plan.one("aws:kms/key:Key", "monitoring-alerts-key")
    assert plan.one(TOPIC).inputs["kmsMasterKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    assert key.protect and key.retain_on_delete
    statements = json.loads(key.inputs["policy"])["Statement"]
    services = {
        s["Principal"]["Service"]: s for s in statements if "Service" in s.get("Principal", {})
    }
    assert set(services) == {"cloudwatch.amazonaws.com", "aps.amazonaws.com"}
    for statement in services.values():
        assert set(statement["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
        assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    alias = plan.one("aws:kms/alias:Alias")
    assert alias.inputs["name"] == "alias/backbone-test-alerts"


def test_an_unencrypted_topic_has_no_key():
    plan = monitoring(encrypt_topic=False)
    assert "kmsMasterKeyId" not in plan.one(TOPIC).inputs
    assert not plan.of_type("aws:kms/key:Key")


def test_email_subscription_when_an_address_is_set():
    plan = monitoring(Watched(), alert_email="ops@example.com")
    sub = plan.one("aws:sns/topicSubscription:TopicSubscription")
    assert sub.inputs["protocol"] == "email" and sub.inputs["endpoint"] == "ops@example.com"
    assert sub.inputs["topic"] == plan.one(TOPIC).outputs["arn"]
    assert not monitoring(Watched()).of_type("aws:sns/topicSubscription:TopicSubscription")


def test_the_dashboard_has_a_row_per_watched_piece_and_the_apps_error_lines():
    plan = monitoring()
    board = plan.one("aws:cloudwatch/dashboard:Dashboard")
    assert board.inputs["dashboardName"] == "backbone-test"
    body = json.loads(board.inputs["dashboardBody"])
    rows = [w["properties"]["markdown"] for w in body["widgets"] if w["type"] == "text"]
    assert rows == [
        "## Load balancer",
        "## The app, as a user sees it (canary)",
        "## Database",
        "## Functions",
        "## The housekeeping job",
        "## The cluster's app and the failures queue",
    ]
    (logs,) = [w for w in body["widgets"] if w["type"] == "log"]
    assert logs["properties"]["query"].startswith(f"SOURCE '{EVERYTHING.app_log_group}' | ")
    only_db = monitoring(Watched(db_instance_identifier="backbone-test-database"))
    body = json.loads(only_db.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    assert [w["properties"]["markdown"] for w in body["widgets"] if w["type"] == "text"] == [
        "## Database"
    ]


def test_prometheus_rules_go_to_the_namespace_as_a_configmap_sidecars_find():
    assert not monitoring().of_type("kubernetes:core/v1:ConfigMap")
    cm = monitoring(rules_namespace="backbone", **TUNED).one("kubernetes:core/v1:ConfigMap")
    meta = cm.inputs["metadata"]
    assert (meta["name"], meta["namespace"]) == ("backbone-prometheus-rules", "backbone")
    assert meta["labels"]["prometheus_rule"] == "1"
    rules = yaml.safe_load(cm.inputs["data"]["backbone-app.rules.yaml"])
    m = MonitoringConfig(enabled=True, **TUNED)
    assert rules == render_rules(**thresholds(m), labels={"stack": "test"})
    # `for` as long as the alarms' evaluation window: 4 periods of 2 minutes
    assert {r["for"] for r in rules["groups"][0]["rules"]} >= {"8m"}
