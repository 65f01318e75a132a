"""Monitoring: an alerts topic, CloudWatch alarms on what the stack runs, a dashboard of the golden
signals, and the app's Prometheus rules in the cluster.

Every alarm notifies the topic when it fires and when it clears, and its description says what to
check and what to do. Missing data is treated per alarm, on one principle: the canary's
availability alarm (and the job's success alarm) own the "nothing reports at all" case
(`breaching`); the others watch a signal that is simply absent when nothing happens (no requests,
no invocations) and treat a gap as `notBreaching`, except free storage, which keeps its state over
a gap (`ignore`): storage does not come back by itself during a failover.

The topic is encrypted with a customer-managed KMS key whose policy lets CloudWatch use it, not
with the AWS managed key `alias/aws/sns`: that key's policy cannot be changed and does not admit
cloudwatch.amazonaws.com, so an alarm's publish to such a topic fails and no one is told
(CloudWatch user guide, "Amazon SNS topic encryption"). A key costs $1/month; `encrypt_topic`
false leaves the topic unencrypted (the free-tier stack: alarm messages hold alarm names and
metric values, no data).

A rotation can fail without its function erroring (the function timed out or was never invoked,
a step never finished): Secrets Manager then records a `RotationFailed` (or, right after the
rotation is configured, `TestRotationFailed`) CloudTrail service event. An EventBridge rule per
rotated secret matches those events for that secret's ARN only (`source` aws.secretsmanager,
`detail-type` "AWS Service Event via CloudTrail", the ARN in `detail.additionalEventData.SecretId`:
Secrets Manager user guide, "CloudTrail entries" and "Match events with EventBridge") and
publishes to the topic a text that names the secret, the error and what to do. EventBridge
receives CloudTrail-delivered events only from an account with a trail that logs management
events (EventBridge user guide, "AWS service events delivered via AWS CloudTrail"); the kit makes
none (one per account, usually an organization's: README). Rules matching AWS service events on
the default bus cost nothing. The topic's one policy (`publish_policy`) admits the account,
CloudWatch alarms, these rules (by ARN) and, with observability, the workspace's Alertmanager;
the topic's key admits events.amazonaws.com as it admits each publisher.

Prometheus rules (infra/components/prometheus.py) go to the cluster as a ConfigMap: no CRD needed;
a Prometheus with a rule-file sidecar (or `kubectl get cm -o jsonpath`) loads it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import yaml

from infra.components import iam, project_stack
from infra.components.functions import (
    CANARY_NAMESPACE,
    CANARY_PROBES,
    CANARY_REDIRECT_PROBE,
    JOBS_NAMESPACE,
)
from infra.components.prometheus import logs_insights_query, render_rules, thresholds
from infra.config import MonitoringConfig

RULES_CONFIGMAP = "backbone-prometheus-rules"
RULES_FILE = "backbone-app.rules.yaml"
# The 5xx rate is only judged over at least this many requests in a period: 1 error in 2
# requests is not a 50% outage.
MIN_REQUESTS = 10
# What the rotation and the canary functions log when something fails (their JSON lines).
ROTATION_QUERY = (
    "fields @timestamp, @message | filter @message like /rotation failed/ "
    "| sort @timestamp desc | limit 20"
)
CANARY_QUERY = (
    'fields @timestamp, @message | filter @message like /"event": "probe"/ '
    "| sort @timestamp desc | limit 50"
)
GIB = 1024**3
MIB = 1024**2
# What a canary probe checks, for its alarms' descriptions.
PROBE_WHAT = {
    "health": "readiness (/readyz)",
    "read": "read path",
    CANARY_REDIRECT_PROBE: "cached redirect (the canary link: a 3xx to its URL)",
}
# What a failed probe points at besides the stack's own alarms.
PROBE_HINT = {
    CANARY_REDIRECT_PROBE: "a 404 means the canary link is gone (every migration upserts it: run "
    "the migration again), a 3xx elsewhere that app.canaryLinkUrl and the link differ; ",
}
# The Secrets Manager events of a failed rotation (CloudTrail service events, eventType
# AwsServiceEvent): the scheduled one, and the test it runs when rotation is configured.
ROTATION_FAILED_EVENTS = ("RotationFailed", "TestRotationFailed")
SERVICE_EVENT = "AWS Service Event via CloudTrail"
EVENTS_PRINCIPAL = "events.amazonaws.com"


def rotation_failed_pattern(secret_arn: str) -> dict[str, Any]:
    """The EventBridge pattern of a failed rotation of the secret `secret_arn`, and only of it."""
    return {
        "source": ["aws.secretsmanager"],
        "detail-type": [SERVICE_EVENT],
        "detail": {
            "eventSource": ["secretsmanager.amazonaws.com"],
            "eventName": list(ROTATION_FAILED_EVENTS),
            "additionalEventData": {"SecretId": [secret_arn]},
        },
    }


# Where the input transformer finds what the message names (the CloudTrail record in `detail`).
ROTATION_EVENT_PATHS = {
    "secret": "$.detail.additionalEventData.SecretId",
    "event": "$.detail.eventName",
    "error": "$.detail.errorMessage",
    "at": "$.time",
}


@dataclass(frozen=True)
class Watched:
    """What the stack runs, for the alarms and the dashboard (None or empty: not in this stack)."""

    alb_arn_suffix: pulumi.Input[str] | None = None
    target_group_arn_suffix: pulumi.Input[str] | None = None
    db_instance_identifier: pulumi.Input[str] | None = None
    function_names: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    """Lambda functions by short name (e.g. canary, housekeeping)."""
    canary_period_seconds: int | None = None
    """The canary's schedule in seconds, when the stack runs it."""
    canary_probes: tuple[str, ...] = CANARY_PROBES
    """The probes the canary publishes (health, read, and redirect where the known link is
    wired): the dashboard's canary row."""
    canary_alarm_probes: tuple[str, ...] = CANARY_PROBES
    """The probes whose availability (and latency) the canary's alarms watch."""
    canary_latency_alarms: bool = True
    """Latency alarms besides the availability ones (off within the 10 free alarm metrics)."""
    function_alarms: bool = True
    """The functions' Errors and Throttles alarms and the failures queue's (off where the canary's
    availability alarm, missing data breaching, catches a canary that fails or stops)."""
    job_name: str | None = None
    """The housekeeping job's `Job` dimension, when the stack runs it."""
    failures_queue_name: pulumi.Input[str] | None = None
    """The functions' on-failure queue: a message there is a failed run for a human to read."""
    app_log_group: pulumi.Input[str] | None = None
    """The app's container log group (observability), named in the runbooks of app alarms."""
    app_namespace: str = "backbone"
    """The app's Kubernetes namespace, for the Logs Insights query in the runbooks."""
    error_metric: tuple[str, str] | None = None
    """(namespace, name) of the app's error-line count (the log group's metric filter)."""
    rotation_functions: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    """The database roles' password rotation functions, by the secret they rotate (app, job)."""
    rotation_secrets: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    """The rotated secrets' ARNs, by the same names: a failed rotation of one is an event."""

    @property
    def anything(self) -> bool:
        return bool(self.alb_arn_suffix or self.db_instance_identifier or self.function_names)


def _metric(
    namespace: str, name: str, dims: dict[str, Any], stat: str, period: int
) -> aws.cloudwatch.MetricAlarmMetricQueryMetricArgs:
    return aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
        namespace=namespace, metric_name=name, dimensions=dims, stat=stat, period=period
    )


class Monitoring(pulumi.ComponentResource):
    """The alerts topic, the alarms on what `watched` names, the dashboard and the Prometheus rules
    (a ConfigMap in `rules_namespace`, when given: needs a kubernetes provider in opts)."""

    topic: aws.sns.Topic
    alarms: list[aws.cloudwatch.MetricAlarm]
    event_rules: list[aws.cloudwatch.EventRule]
    topic_policy: aws.sns.TopicPolicy | None

    def __init__(
        self,
        name: str,
        cfg: MonitoringConfig,
        *,
        stack: str,
        region: str,
        watched: Watched,
        rules_namespace: pulumi.Input[str] | None = None,
        publishers: tuple[str, ...] = (),
        protect: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:monitoring:Monitoring", name, None, opts)
        self._name = name
        self._cfg = cfg
        self._stack = stack
        self._region = region
        self._prefix = project_stack(stack)
        self.alarms = []
        self.event_rules = []
        self.topic_policy = None
        # The rotation events' rules publish too: the key must admit EventBridge.
        events = (EVENTS_PRINCIPAL,) if watched.rotation_secrets else ()
        self._publishers = (*publishers, *(e for e in events if e not in publishers))
        self._watched = watched

        self.topic = self._topic(protect)
        self._alb_alarms(watched)
        self._db_alarms(watched)
        self._function_alarms(watched)
        self._rotation_alarms(watched)
        self._rotation_events(watched)
        self._canary_alarms(watched)
        self._job_alarms(watched)
        self._queue_alarm(watched)
        self._log_alarm(watched)
        self._billing_alarm()
        self.dashboard = self._dashboard_resource(watched)
        self.rules = self._rules(rules_namespace)
        self.register_outputs(
            {
                "topicArn": self.topic.arn,
                "alarmNames": [a.name for a in self.alarms],
                "dashboardName": self.dashboard.dashboard_name if self.dashboard else None,
            }
        )

    def _topic(self, protect: bool) -> aws.sns.Topic:
        key_id: pulumi.Input[str] | None = None
        if self._cfg.encrypt_topic:
            key_id = self._topic_key(self._name, protect).arn
        topic = aws.sns.Topic(
            f"{self._name}-alerts",
            display_name=f"{self._prefix} alerts",
            kms_master_key_id=key_id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        if self._cfg.alert_email:
            aws.sns.TopicSubscription(
                f"{self._name}-alerts-email",
                topic=topic.arn,
                protocol="email",
                endpoint=self._cfg.alert_email,
                opts=pulumi.ResourceOptions(parent=self),
            )
        if self._cfg.alert_https_url:
            aws.sns.TopicSubscription(
                f"{self._name}-alerts-https",
                topic=topic.arn,
                protocol="https",
                # Such URLs usually carry an integration key: a secret in the state and the plan.
                endpoint=pulumi.Output.secret(self._cfg.alert_https_url),
                endpoint_auto_confirms=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
        return topic

    def publish_policy(
        self,
        workspace_arn: pulumi.Input[str] | None = None,
        *,
        aliases: Sequence[pulumi.Input[str]] = (),
    ) -> aws.sns.TopicPolicy | None:
        """The topic's policy (a topic has one): the account manages it; CloudWatch alarms, the
        rotation events' rules and, given `workspace_arn`, that Prometheus workspace's
        Alertmanager publish. Call once, when the last publisher exists (Observability calls it
        with its workspace, else the stack); `aliases`: its former URNs. None when only the account's alarms publish: the
        topic's default policy admits them."""
        if workspace_arn is None and not self.event_rules:
            return None
        if self.topic_policy is not None:
            raise RuntimeError(
                "the alerts topic's policy is already made: call publish_policy once"
            )
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        self.topic_policy = aws.sns.TopicPolicy(
            f"{self._name}-alerts-policy",
            arn=self.topic.arn,
            policy=pulumi.Output.all(
                self.topic.arn,
                caller.account_id,
                pulumi.Output.all(*(r.arn for r in self.event_rules)),
                workspace_arn,
            ).apply(lambda a: topic_policy(a[0], a[1], rule_arns=a[2], workspace_arn=a[3])),
            opts=pulumi.ResourceOptions(parent=self, aliases=list(aliases)),
        )
        return self.topic_policy

    def _with_logs(self, text: str) -> pulumi.Input[str]:
        """An app alarm's description, ending with the app's log group and the Logs Insights
        query that lists its error lines (when the stack ships container logs)."""
        w = self._watched
        if w.app_log_group is None:
            return text
        return pulumi.Output.concat(
            text,
            " Logs: CloudWatch Logs group ",
            w.app_log_group,
            "; Logs Insights: ",
            logs_insights_query(w.app_namespace),
        )

    def _queue_alarm(self, w: Watched) -> None:
        if w.failures_queue_name is None or not w.function_alarms:
            return
        # A message is a function run that failed after its retries: someone must read it.
        self._alarm(
            "fn-failures-queue",
            "The functions' failures queue is not empty: a canary or housekeeping run failed "
            "after its retries and its event waits there. Read the message (aws sqs "
            "receive-message) and the function's log group (/aws/lambda/<function>, Logs "
            "Insights: fields @timestamp, @message | filter @message like /failed/ | sort "
            "@timestamp desc); fix the cause, then purge the queue.",
            namespace="AWS/SQS",
            metric="ApproximateNumberOfMessagesVisible",
            dims={"QueueName": w.failures_queue_name},
            stat="Maximum",
            comparison="GreaterThanOrEqualToThreshold",
            threshold=1,
            # SQS reports every 5 minutes, also for an empty queue: a gap is no message.
            missing="notBreaching",
            period=300,
            periods=1,
        )

    def _log_alarm(self, w: Watched) -> None:
        if w.error_metric is None:
            return
        namespace, metric = w.error_metric
        self._alarm(
            "app-error-logs",
            self._with_logs(
                f"The app wrote at least {self._cfg.error_log_lines} error-level log lines in a "
                "period. Run the Logs Insights query below over the last hour: the msg and "
                "route fields say what fails; a database message points at the database alarms, "
                "a deploy's first minutes at the rollout (kubectl rollout undo)."
            ),
            namespace=namespace,
            metric=metric,
            dims=None,
            stat="Sum",
            comparison="GreaterThanOrEqualToThreshold",
            threshold=self._cfg.error_log_lines,
            # The filter publishes 0 for lines that do not match; no lines at all: quiet.
            missing="notBreaching",
            periods=1,
        )

    def _billing_alarm(self) -> None:
        usd = self._cfg.billing_alarm_usd
        if usd is None:
            return
        # Published a few times a day, and only once billing alerts are switched on: a gap
        # is normal, never a bill.
        self._alarm(
            "billing",
            f"The account's estimated charges this month passed ${usd:g}. "
            "Open Billing > Bills to see which service costs; delete what you do not use "
            "(`pulumi destroy` for this stack). Needs 'Receive Billing Alerts' switched on.",
            namespace="AWS/Billing",
            metric="EstimatedCharges",
            dims={"Currency": "USD"},
            stat="Maximum",
            comparison="GreaterThanThreshold",
            threshold=usd,
            missing="notBreaching",
            period=21600,
            periods=1,
        )

    def _dashboard_resource(self, w: Watched) -> aws.cloudwatch.Dashboard | None:
        if not w.anything:
            return None
        # The rotation functions' invocations and errors beside the other functions'.
        rotation = {f"rotate-{k}": v for k, v in w.rotation_functions.items()}
        return aws.cloudwatch.Dashboard(
            f"{self._name}-dashboard",
            dashboard_name=self._prefix,
            dashboard_body=pulumi.Output.all(
                w.alb_arn_suffix,
                w.target_group_arn_suffix,
                w.db_instance_identifier,
                pulumi.Output.all(**w.function_names, **rotation) if w.function_names else {},
                pulumi.Output.all(w.failures_queue_name, w.app_log_group),
            ).apply(lambda a: json.dumps(self._dashboard(w, *a))),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _rules(self, namespace: pulumi.Input[str] | None) -> k8s.core.v1.ConfigMap | None:
        if namespace is None:
            return None
        rules = render_rules(**thresholds(self._cfg), namespace=None, labels={"stack": self._stack})
        return k8s.core.v1.ConfigMap(
            f"{self._name}-prometheus-rules",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=RULES_CONFIGMAP,
                namespace=namespace,
                labels={
                    "app.kubernetes.io/name": "backbone-prometheus-rules",
                    "app.kubernetes.io/part-of": "backbone",
                    "app.kubernetes.io/managed-by": "pulumi",
                    # What rule-file sidecars (kube-prometheus-stack, Grafana's) look for.
                    "prometheus_rule": "1",
                },
            ),
            data={RULES_FILE: yaml.safe_dump(rules, sort_keys=False, width=100)},
            opts=pulumi.ResourceOptions(parent=self),
        )

    # -- building blocks ---------------------------------------------------------------------------

    def _topic_key(self, name: str, protect: bool) -> aws.kms.Key:
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        key = aws.kms.Key(
            f"{name}-alerts-key",
            description=f"{self._prefix}: encrypts the alerts topic; CloudWatch may use it",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            policy=caller.account_id.apply(lambda a: _key_policy(a, self._publishers)),
            opts=pulumi.ResourceOptions(parent=self, protect=protect, retain_on_delete=protect),
        )
        aws.kms.Alias(
            f"{name}-alerts-key",
            name=f"alias/{self._prefix}-alerts",
            target_key_id=key.key_id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return key

    def _alarm(
        self,
        part: str,
        description: pulumi.Input[str],
        *,
        comparison: str,
        threshold: float,
        missing: str,
        namespace: str | None = None,
        metric: str | None = None,
        dims: dict[str, Any] | None = None,
        stat: str | None = None,
        queries: list[aws.cloudwatch.MetricAlarmMetricQueryArgs] | None = None,
        period: int | None = None,
        periods: int | None = None,
    ) -> aws.cloudwatch.MetricAlarm:
        cfg = self._cfg
        periods = periods or cfg.evaluation_periods
        percentile = stat is not None and stat.startswith("p")
        alarm = aws.cloudwatch.MetricAlarm(
            f"{self._name}-{part}",
            name=f"{self._prefix}-{part}",
            alarm_description=description,
            namespace=namespace,
            metric_name=metric,
            dimensions=dims,
            statistic=None if percentile else stat,
            extended_statistic=stat if percentile else None,
            # A percentile over a handful of requests is noise: too few samples keep the state.
            evaluate_low_sample_count_percentiles="ignore" if percentile else None,
            period=None if queries else (period or cfg.period_seconds),
            metric_queries=queries,
            comparison_operator=comparison,
            threshold=threshold,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            treat_missing_data=missing,
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.alarms.append(alarm)
        return alarm

    # -- the alarms ----------------------------------------------------------------------------------

    def _alb_alarms(self, w: Watched) -> None:
        if w.alb_arn_suffix is None:
            return
        lb = {"LoadBalancer": w.alb_arn_suffix}
        self._alb_5xx_alarm(lb)
        if w.target_group_arn_suffix is not None:
            self._alb_unhealthy_alarm(lb, w.target_group_arn_suffix)
        self._alb_latency_alarm(lb)

    def _alb_5xx_alarm(self, lb: dict[str, Any]) -> None:
        m, p = self._cfg, self._cfg.period_seconds

        def q(qid: str, metric: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=qid, metric=_metric("AWS/ApplicationELB", metric, lb, "Sum", p)
            )

        # No requests: no datapoints and no rate. Quiet is not failing (the canary sees outages).
        self._alarm(
            "alb-5xx-rate",
            self._with_logs(
                f"More than {m.alb_error_rate_percent:g}% of requests through the load balancer "
                "ended in 5xx (from the app or the ALB itself). Check the app's logs for status >= "
                "500 and the unhealthy-hosts and database alarms; roll back a deploy that started it "
                "(kubectl rollout undo)."
            ),
            queries=[
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="rate",
                    expression=f"IF(requests >= {MIN_REQUESTS}, "
                    "100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests, 0)",
                    label="5xx per cent of requests",
                    return_data=True,
                ),
                q("target5xx", "HTTPCode_Target_5XX_Count"),
                q("elb5xx", "HTTPCode_ELB_5XX_Count"),
                q("requests", "RequestCount"),
            ],
            comparison="GreaterThanThreshold",
            threshold=m.alb_error_rate_percent,
            missing="notBreaching",
        )

    def _alb_unhealthy_alarm(self, lb: dict[str, Any], target_group: pulumi.Input[str]) -> None:
        m = self._cfg
        # A gap means no target group is reporting: the canary's availability alarm
        # (breaching on missing data) owns that case; this one warns of partial failure.
        self._alarm(
            "alb-unhealthy-hosts",
            f"At least {m.unhealthy_hosts} of the app's targets fail the health check "
            "(/readyz). Check the pods (kubectl get pods -n backbone), their readiness "
            "logs and the database; replace a broken node.",
            namespace="AWS/ApplicationELB",
            metric="UnHealthyHostCount",
            dims={"TargetGroup": target_group, **lb},
            stat="Maximum",
            comparison="GreaterThanOrEqualToThreshold",
            threshold=m.unhealthy_hosts,
            missing="notBreaching",
        )

    def _alb_latency_alarm(self, lb: dict[str, Any]) -> None:
        m = self._cfg
        # No requests: no latency to judge.
        self._alarm(
            "alb-target-p99",
            self._with_logs(
                f"The app's p99 response time behind the load balancer is above "
                f"{m.target_response_time_p99_seconds:g} s. Check the database CPU and "
                "connections alarms, the pods' CPU throttling and the app's pool metrics; scale out "
                "(raise app.minReplicas) if the pods are saturated."
            ),
            namespace="AWS/ApplicationELB",
            metric="TargetResponseTime",
            dims=lb,
            stat="p99",
            comparison="GreaterThanThreshold",
            threshold=m.target_response_time_p99_seconds,
            missing="notBreaching",
        )

    def _db_alarms(self, w: Watched) -> None:
        """The database's alarms, one per row of its tables (_db_capacity, _db_pressure)."""
        if w.db_instance_identifier is None:
            return
        db = {"DBInstanceIdentifier": w.db_instance_identifier}
        for check in (*_db_capacity(self._cfg), *_db_pressure(self._cfg)):
            self._alarm(
                check.part,
                self._db_logs(w, check.description) if check.with_logs else check.description,
                namespace="AWS/RDS",
                metric=check.metric,
                dims=db,
                stat=check.stat,
                comparison=check.comparison,
                threshold=check.threshold,
                missing=check.missing,
            )

    def _db_logs(self, w: Watched, text: str) -> pulumi.Input[str]:
        """A database alarm's description, ending with the instance's PostgreSQL log group and a
        Logs Insights query for its slow statements and errors."""
        return pulumi.Output.concat(
            text,
            " Logs: CloudWatch Logs group /aws/rds/instance/",
            w.db_instance_identifier or "",
            "/postgresql; Logs Insights: fields @timestamp, @message | filter @message like "
            "/duration:|ERROR|FATAL/ | sort @timestamp desc | limit 100",
        )

    def _function_alarms(self, w: Watched) -> None:
        m = self._cfg
        if not w.function_alarms:
            return
        # Lambda publishes Errors and Throttles only when invoked: no invocation, no data, and a
        # schedule that stopped is caught by the canary's and the job's own alarms.
        for short, fn_name in sorted(w.function_names.items()):
            dims = {"FunctionName": fn_name}
            self._alarm(
                f"fn-{short}-errors",
                f"The {short} function failed at least {m.function_errors} time(s) in a "
                f"period. Read its log group (/aws/lambda/<function>) for the JSON 'failed' line; "
                "failed events wait in the functions' failures queue.",
                namespace="AWS/Lambda",
                metric="Errors",
                dims=dims,
                stat="Sum",
                comparison="GreaterThanOrEqualToThreshold",
                threshold=m.function_errors,
                missing="notBreaching",
                periods=1,
            )
            self._alarm(
                f"fn-{short}-throttles",
                f"The {short} function was throttled at least {m.function_throttles} "
                "time(s): it ran into its reserved concurrency or the account's limit. Check for "
                "runs that overlap (timeout longer than the schedule) and the account's "
                "concurrency quota.",
                namespace="AWS/Lambda",
                metric="Throttles",
                dims=dims,
                stat="Sum",
                comparison="GreaterThanOrEqualToThreshold",
                threshold=m.function_throttles,
                missing="notBreaching",
                periods=1,
            )

    def _canary_alarms(self, w: Watched) -> None:
        m = self._cfg
        if w.canary_period_seconds is None:
            return
        period = w.canary_period_seconds
        periods = min(m.evaluation_periods, 86400 // period)
        for probe in w.canary_alarm_probes:
            dims = {"Stack": self._stack, "Probe": probe}
            what = PROBE_WHAT[probe]
            # No datapoint means the canary itself did not run: as bad as a failed probe.
            self._alarm(
                f"canary-{probe}-availability",
                pulumi.Output.concat(
                    f"The app's {what} failed from outside, at its public URL, for {periods} "
                    f"canary run(s). Open the app's URL; {PROBE_HINT.get(probe, '')}"
                    f"{self._canary_checks(w)}; and the "
                    "canary's log lines (event=probe, reason): CloudWatch Logs group /aws/lambda/",
                    w.function_names.get("canary", f"{self._prefix}-canary"),
                    f"; Logs Insights: {CANARY_QUERY}",
                ),
                namespace=CANARY_NAMESPACE,
                metric="Availability",
                dims=dims,
                stat="Minimum",
                comparison="LessThanThreshold",
                threshold=1,
                missing="breaching",
                period=period,
                periods=periods,
            )
            if not w.canary_latency_alarms:
                continue
            # A probe with no answer has no latency: availability covers it.
            self._alarm(
                f"canary-{probe}-latency",
                f"The app's {what} took more than {m.canary_latency_ms:g} ms on average, as "
                "a user sees it. Check the "
                + ("load balancer's target response time and the " if w.alb_arn_suffix else "")
                + "database alarms.",
                namespace=CANARY_NAMESPACE,
                metric="Latency",
                dims=dims,
                stat="Average",
                comparison="GreaterThanThreshold",
                threshold=m.canary_latency_ms,
                missing="notBreaching",
                period=period,
                periods=periods,
            )

    def _canary_checks(self, w: Watched) -> str:
        """What a failed probe points at, by what the stack has: the load balancer's alarms, or
        the free-tier host's own (its status checks and its container)."""
        checks = []
        if w.alb_arn_suffix is not None:
            checks.append("the load balancer's unhealthy-hosts and 5xx alarms")
        if w.db_instance_identifier is not None:
            checks.append("the database alarms")
        if w.alb_arn_suffix is None:
            checks.append(
                "the host's status-check alarms (host-reboot, host-recover) and its container "
                "(Session Manager: docker ps, docker logs)"
            )
        return "check " + ", ".join(checks)

    def _rotation_alarms(self, w: Watched) -> None:
        """A rotation that fails leaves the old password in use (AWSCURRENT moves only when all
        four steps succeed), and the next try comes a rotation period later: someone must look."""
        m = self._cfg
        for part, fn_name in sorted(w.rotation_functions.items()):
            self._alarm(
                f"rotation-{part}-errors",
                pulumi.Output.concat(
                    f"The {part} role's password rotation (Lambda ",
                    fn_name,
                    f") failed at least {m.function_errors} time(s). Until a rotation succeeds "
                    "the secret keeps its current password (AWSCURRENT moves at the last step), "
                    "so the app and the job go on working. Logs: CloudWatch Logs group "
                    "/aws/lambda/",
                    fn_name,
                    f"; Logs Insights: {ROTATION_QUERY} (the step and the error: a refused "
                    "login, the database or Secrets Manager unreachable, a stuck AWSPENDING "
                    "version). Fix it, then rotate once by hand: aws secretsmanager "
                    "rotate-secret --secret-id <the secret>, and read its describe-secret "
                    "(LastRotatedDate, the version stages).",
                ),
                namespace="AWS/Lambda",
                metric="Errors",
                dims={"FunctionName": fn_name},
                stat="Sum",
                comparison="GreaterThanOrEqualToThreshold",
                threshold=m.function_errors,
                # Invoked only while rotating (4 steps every N days): no invocation, no data.
                missing="notBreaching",
                periods=1,
            )

    def _rotation_events(self, w: Watched) -> None:
        """A rule per rotated secret: its failed rotations (RotationFailed, TestRotationFailed)
        reach the topic as a text naming the secret, the error and what to do. Also the failures
        no Errors alarm sees: a function that timed out or was never invoked, a stuck step."""
        for part, secret_arn in sorted(w.rotation_secrets.items()):
            fn_name = w.rotation_functions.get(part, f"{self._prefix}-rotate-{part}")
            rule = aws.cloudwatch.EventRule(
                f"{self._name}-rotation-{part}-failed",
                # No longer than the longest function name, so the stack-name bound that keeps
                # Lambda's 64 characters keeps EventBridge's too (AWS::Events::Rule.Name).
                name=f"{self._prefix}-rotfail-{part}",
                description=f"the {part} role's password rotation failed: to the alerts topic",
                event_pattern=pulumi.Output.from_input(secret_arn).apply(
                    lambda arn: json.dumps(rotation_failed_pattern(arn))
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            aws.cloudwatch.EventTarget(
                f"{self._name}-rotation-{part}-failed",
                rule=rule.name,
                arn=self.topic.arn,
                input_transformer=aws.cloudwatch.EventTargetInputTransformerArgs(
                    input_paths=ROTATION_EVENT_PATHS,
                    input_template=pulumi.Output.from_input(fn_name).apply(
                        functools.partial(_rotation_template, part)
                    ),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.event_rules.append(rule)

    def _job_alarms(self, w: Watched) -> None:
        if w.job_name is None:
            return
        # A day without a datapoint means the job did not run. (Right after the first deploy it
        # fires until the first night's run.)
        self._alarm(
            f"job-{w.job_name}",
            f"The {w.job_name} job failed or did not run in the last 24 hours. Read its log "
            "group for the 'failed' line (secret, database reachability, SQL) and the "
            "functions' failures queue; run it once by hand (aws lambda invoke) after a fix.",
            namespace=JOBS_NAMESPACE,
            metric="Success",
            dims={"Stack": self._stack, "Job": w.job_name},
            stat="Minimum",
            comparison="LessThanThreshold",
            threshold=1,
            missing="breaching",
            period=86400,
            periods=1,
        )

    # -- the dashboard ---------------------------------------------------------------------------------

    def _dashboard(
        self,
        w: Watched,
        alb: str | None,
        tg: str | None,
        db: str | None,
        functions: dict[str, str],
        queue_and_logs: list[str | None],
    ) -> dict[str, Any]:
        queue, log_group = queue_and_logs
        rows: list[Row] = []
        if alb:
            rows.append(_alb_row(alb, tg))
        if w.canary_period_seconds:
            rows.append(_canary_row(self._stack, w.canary_period_seconds, w.canary_probes))
        if db:
            rows.append(_db_row(db))
        if functions:
            rows.append(_functions_row(sorted(functions.values())))
            if w.job_name:
                rows.append(_job_row(self._stack, w.job_name))
        if queue or w.error_metric:
            rows.append(_queue_and_errors_row(queue, w.error_metric))
        widgets = _layout(rows, self._region, self._cfg.period_seconds)
        if log_group:
            widgets.append(_log_widget(log_group, w.app_namespace, self._region, len(rows) * 7))
        return {"widgets": widgets}


@dataclass(frozen=True)
class Check:
    """One row of a table of alarms that share a namespace and dimensions (the database's)."""

    part: str
    description: str
    metric: str
    stat: str
    comparison: str
    threshold: float
    missing: str
    with_logs: bool = False
    """End the description with the log group and the Logs Insights query of what it watches."""


def _db_capacity(m: MonitoringConfig) -> tuple[Check, ...]:
    """CPU, free storage and connections. CPU and connections: a gap is a reboot or a failover,
    not load; the canary's health probe alarms if the database is really gone. Free storage: a
    gap keeps the state (free space does not come back by itself)."""
    return (
        Check(
            "db-cpu",
            f"The database's CPU is above {m.db_cpu_percent:g}%. Look at Performance "
            "Insights or pg_stat_statements for the top queries; add an index or scale the "
            "instance class (database.instanceClass).",
            "CPUUtilization",
            "Average",
            "GreaterThanThreshold",
            m.db_cpu_percent,
            "notBreaching",
        ),
        Check(
            "db-free-storage",
            f"The database has less than {m.db_free_storage_gb:g} GiB free. Raise "
            "database.maxAllocatedStorageGb (autoscaling ceiling) or allocatedStorageGb, and "
            "look for runaway tables or WAL (replication slots).",
            "FreeStorageSpace",
            "Minimum",
            "LessThanThreshold",
            m.db_free_storage_gb * GIB,
            "ignore",
        ),
        Check(
            "db-connections",
            f"The database has more than {m.db_connections} connections. Check the app's "
            "pool size (DB_POOL_MAX x replicas) against max_connections and look for leaked or "
            "idle-in-transaction sessions (pg_stat_activity).",
            "DatabaseConnections",
            "Maximum",
            "GreaterThanThreshold",
            m.db_connections,
            "notBreaching",
        ),
    )


def _db_pressure(m: MonitoringConfig) -> tuple[Check, ...]:
    """Memory and latency, like CPU: a gap is a reboot or failover, not a bad value. Each ends
    with the instance's PostgreSQL log group and the query for its slow statements."""
    memory = Check(
        "db-freeable-memory",
        f"The database has less than {m.db_freeable_memory_mb:g} MiB of freeable "
        "memory: it is about to swap and every query slows. Look for too many "
        "connections (each takes work_mem), large sorts or hash joins in the slow "
        "queries; scale the instance class (database.instanceClass).",
        "FreeableMemory",
        "Minimum",
        "LessThanThreshold",
        m.db_freeable_memory_mb * MIB,
        "notBreaching",
        with_logs=True,
    )
    latency = tuple(
        Check(
            f"db-{what}-latency",
            f"The database's average {what} latency is above {limit:g} ms per I/O: "
            "its storage is saturated (IOPS or throughput at the volume's limit, burst "
            "credits spent) or a query scans too much. Compare ReadIOPS/WriteIOPS with "
            "the volume's provisioned IOPS; raise them (gp3) or fix the query.",
            metric,
            "Average",
            "GreaterThanThreshold",
            limit / 1000,
            "notBreaching",
            with_logs=True,
        )
        for what, metric, limit in (
            ("read", "ReadLatency", m.db_read_latency_ms),
            ("write", "WriteLatency", m.db_write_latency_ms),
        )
    )
    return (memory, *latency)


def _rotation_template(part: str, function_name: str) -> str:
    """The input template: the message as a JSON string (SNS publishes it as plain text)."""
    return json.dumps(rotation_failed_message(part, function_name))


def rotation_failed_message(part: str, function_name: str) -> str:
    """The text a failed rotation of the `part` role's secret publishes; EventBridge fills in the
    <placeholders> from the event (ROTATION_EVENT_PATHS)."""
    return (
        f"The {part} role's password rotation failed (Secrets Manager <event>, <at>) for the "
        "secret <secret>: <error>. Until a rotation succeeds the secret keeps its current "
        "password (AWSCURRENT moves at the last step), so the app and the job go on working; "
        "Secrets Manager tries again a rotation period later. Read the rotation function's log "
        f"group /aws/lambda/{function_name} (the step and its error: a refused login, the "
        "database or Secrets Manager unreachable, a step that never finished) and aws "
        "secretsmanager describe-secret --secret-id <secret> (a version left with AWSPENDING "
        "blocks the next rotation: remove that label with update-secret-version-stage). Fix "
        "it, then rotate once by hand: aws secretsmanager rotate-secret --secret-id <secret>."
    )


def topic_policy(
    topic_arn: str,
    account: str,
    *,
    rule_arns: Sequence[str] = (),
    workspace_arn: str | None = None,
) -> str:
    """The alerts topic's policy: the account manages it; CloudWatch alarms from this account,
    the EventBridge rules `rule_arns` and the Alertmanager of `workspace_arn` publish."""
    statements: list[dict[str, Any]] = [
        _account_manages(topic_arn, account),
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        },
    ]
    rules = list(rule_arns)
    if rules:
        statements.append(
            {
                "Sid": "EventBridgeRulesPublish",
                "Effect": "Allow",
                "Principal": {"Service": EVENTS_PRINCIPAL},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "ArnEquals": {"aws:SourceArn": rules[0] if len(rules) == 1 else rules}
                },
            }
        )
    if workspace_arn:
        statements.append(
            {
                "Sid": "PrometheusAlertmanagerPublishes",
                "Effect": "Allow",
                "Principal": {"Service": "aps.amazonaws.com"},
                "Action": ["sns:Publish", "sns:GetTopicAttributes"],
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnEquals": {"aws:SourceArn": workspace_arn},
                },
            }
        )
    return iam.document(statements)


def _account_manages(topic_arn: str, account: str) -> dict[str, Any]:
    return {
        "Sid": "AccountManages",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
        "Action": [
            "sns:GetTopicAttributes",
            "sns:SetTopicAttributes",
            "sns:Subscribe",
            "sns:ListSubscriptionsByTopic",
            "sns:Publish",
        ],
        "Resource": topic_arn,
    }


def _key_policy(account: str, publishers: tuple[str, ...] = ()) -> str:
    """The alerts key: the account administers it; CloudWatch alarms (and each of `publishers`,
    a service principal such as aps.amazonaws.com) may use it to publish."""
    return iam.document(
        [
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            },
            *(
                {
                    "Sid": f"{svc.split('.')[0].title()}Publishes",
                    "Effect": "Allow",
                    "Principal": {"Service": svc},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                }
                for svc in publishers
            ),
        ]
    )


# A dashboard row: a title and its graphs (title, metric lines, extra widget properties).
Graph = tuple[str, list[list[Any]], dict[str, Any]]
Row = tuple[str, list[Graph]]


def _layout(rows: list[Row], region: str, period: int) -> list[dict[str, Any]]:
    """Each row a markdown title across the width, then its graphs side by side."""
    widgets: list[dict[str, Any]] = []
    y = 0
    for title, graphs in rows:
        text = {"markdown": f"## {title}"}
        widgets.append(
            {"type": "text", "x": 0, "y": y, "width": 24, "height": 1, "properties": text}
        )
        width = 24 // len(graphs)
        for i, (name, metrics, extra) in enumerate(graphs):
            widgets.append(
                {
                    "type": "metric",
                    "x": i * width,
                    "y": y + 1,
                    "width": width,
                    "height": 6,
                    "properties": {
                        "title": name,
                        "region": region,
                        "view": "timeSeries",
                        "period": period,
                        "metrics": metrics,
                        **extra,
                    },
                }
            )
        y += 7
    return widgets


def _alb_row(alb: str, tg: str | None) -> Row:
    e = "AWS/ApplicationELB"
    lb = ["LoadBalancer", alb]
    targets = [
        [e, m, "TargetGroup", tg, *lb, {"stat": "Maximum"}]
        for m in ("HealthyHostCount", "UnHealthyHostCount")
        if tg
    ]
    return (
        "Load balancer",
        [
            ("Traffic: requests", [[e, "RequestCount", *lb, {"stat": "Sum"}]], {}),
            (
                "Errors: 5xx and 4xx",
                [
                    [e, "HTTPCode_Target_5XX_Count", *lb, {"stat": "Sum"}],
                    [e, "HTTPCode_ELB_5XX_Count", *lb, {"stat": "Sum"}],
                    [e, "HTTPCode_Target_4XX_Count", *lb, {"stat": "Sum"}],
                ],
                {},
            ),
            (
                "Latency: target response time",
                [
                    [e, "TargetResponseTime", *lb, {"stat": "p50"}],
                    [e, "TargetResponseTime", *lb, {"stat": "p99"}],
                ],
                {},
            ),
            (
                "Saturation: targets and connections",
                [*targets, [e, "ActiveConnectionCount", *lb, {"stat": "Sum"}]],
                {},
            ),
        ],
    )


def _canary_row(stack: str, period: int, published: tuple[str, ...]) -> Row:
    c = CANARY_NAMESPACE
    probes = [("Stack", stack, "Probe", p) for p in published]
    return (
        "The app, as a user sees it (canary)",
        [
            (
                "Availability (1 = up)",
                [[c, "Availability", *d, {"stat": "Minimum"}] for d in probes],
                {"period": period},
            ),
            (
                "Latency (ms)",
                [[c, "Latency", *d, {"stat": "Average"}] for d in probes],
                {"period": period},
            ),
        ],
    )


def _db_row(db: str) -> Row:
    r = "AWS/RDS"
    d = ["DBInstanceIdentifier", db]
    return (
        "Database",
        [
            ("Traffic: IOPS", [[r, "ReadIOPS", *d], [r, "WriteIOPS", *d]], {}),
            ("Latency: read and write (s)", [[r, "ReadLatency", *d], [r, "WriteLatency", *d]], {}),
            (
                "Saturation: CPU % and connections",
                [[r, "CPUUtilization", *d], [r, "DatabaseConnections", *d, {"yAxis": "right"}]],
                {},
            ),
            (
                "Saturation: free storage and memory (bytes)",
                [[r, "FreeStorageSpace", *d], [r, "FreeableMemory", *d]],
                {},
            ),
        ],
    )


def _functions_row(names: list[str]) -> Row:
    f = "AWS/Lambda"
    return (
        "Functions",
        [
            (title, [[f, metric, "FunctionName", n, {"stat": stat}] for n in names], {})
            for title, metric, stat in (
                ("Traffic: invocations", "Invocations", "Sum"),
                ("Errors", "Errors", "Sum"),
                ("Latency: duration p99 (ms)", "Duration", "p99"),
                ("Saturation: throttles", "Throttles", "Sum"),
            )
        ],
    )


def _job_row(stack: str, job: str) -> Row:
    dims = ["Stack", stack, "Job", job]
    return (
        f"The {job} job",
        [
            (
                "Success (1 = ok)",
                [[JOBS_NAMESPACE, "Success", *dims, {"stat": "Minimum"}]],
                {"period": 86400},
            ),
            (
                "Links purged and live",
                [
                    [JOBS_NAMESPACE, "PurgedLinks", *dims, {"stat": "Sum"}],
                    [JOBS_NAMESPACE, "LiveLinks", *dims, {"stat": "Maximum"}],
                ],
                {"period": 86400},
            ),
        ],
    )


def _queue_and_errors_row(queue: str | None, error_metric: tuple[str, str] | None) -> Row:
    graphs: list[Graph] = []
    if queue:
        q = ["AWS/SQS", "QueueName", queue]
        graphs.append(
            (
                "Errors: failed function runs waiting (failures queue)",
                [
                    [q[0], "ApproximateNumberOfMessagesVisible", *q[1:], {"stat": "Maximum"}],
                    [
                        q[0],
                        "ApproximateAgeOfOldestMessage",
                        *q[1:],
                        {"stat": "Maximum", "yAxis": "right"},
                    ],
                ],
                {"period": 300},
            )
        )
    if error_metric:
        graphs.append(
            ("Errors: the app's error-level log lines", [[*error_metric, {"stat": "Sum"}]], {})
        )
    title = {
        (True, True): "The cluster's app and the failures queue",
        (True, False): "The functions' failures queue",
        (False, True): "The cluster's app",
    }[(bool(queue), bool(error_metric))]
    return (title, graphs)


def _log_widget(log_group: str, namespace: str, region: str, y: int) -> dict[str, Any]:
    """The app's latest error lines from its container log group (Logs Insights)."""
    return {
        "type": "log",
        "x": 0,
        "y": y,
        "width": 24,
        "height": 6,
        "properties": {
            "title": "Errors: the app's latest error lines (Logs Insights)",
            "region": region,
            "view": "table",
            "query": f"SOURCE '{log_group}' | {logs_insights_query(namespace)}",
        },
    }
