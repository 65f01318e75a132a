"""backbone:monitoring: the alerts topic, the alarms, the dashboard and the app's Prometheus
rules' thresholds."""

from __future__ import annotations

import re

from pydantic import Field

from infra.config.base import Problem, Section

_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
# The alarms' period: the metrics come a data point a minute; CloudWatch's longest is an hour.
PERIOD = (60, 3600)
ALARM_SPAN = 86400  # CloudWatch: period x evaluation periods up to a day


class MonitoringConfig(Section):
    """Alarms, notifications, a dashboard and the app's Prometheus rules. Thresholds below also
    render the in-cluster Prometheus rules (error ratio, p99 latency)."""

    SECTION = "monitoring"

    enabled: bool = False
    """Create the alerts topic, the alarms on what the stack runs, and the dashboard."""

    alert_email: str | None = None
    """Where alarms are sent (an SNS email subscription: AWS mails a confirmation link first, and
    nothing is delivered until someone clicks it)."""

    alert_https_url: str | None = Field(default=None, pattern=r"^https://[^\s]+$")
    """An HTTPS endpoint subscribed to the alerts topic (a paging service's SNS integration URL,
    a chat webhook bridge). SNS posts a SubscriptionConfirmation first: the endpoint must confirm
    it. Kept as a secret in the plan (such URLs usually hold an integration key)."""

    alerts_routed_elsewhere: str | None = Field(default=None, min_length=20, max_length=500)
    """Only when the alerts topic gets its subscriber outside this program (an Amazon Q Developer
    / AWS Chatbot channel configured with the topic's ARN, a subscription made by another stack):
    say where, in a sentence. A production stack refuses to plan with no alertEmail, no
    alertHttpsUrl and no alertsRoutedElsewhere; `backbone plan` prints this sentence every time."""

    period_seconds: int = Field(
        default=60,
        description="Period of the ALB, database and function alarms: "
        f"{PERIOD[0]} or a multiple of it, at most {PERIOD[1]}.",
    )

    evaluation_periods: int = Field(default=3, ge=1, le=30)
    """Consecutive breaching periods before an alarm fires (and before a Prometheus rule does)."""

    alb_error_rate_percent: float = Field(default=5.0, gt=0, lt=100)
    """Alarm when more than this share of requests end in 5xx (from the targets or the ALB)."""

    unhealthy_hosts: int = Field(default=1, ge=1, le=100)
    """Alarm when at least this many targets fail the health check."""

    target_response_time_p99_seconds: float = Field(default=1.0, gt=0, le=60)
    """Alarm when the p99 of the targets' response time is above this."""

    db_cpu_percent: float = Field(default=80.0, gt=0, le=100)
    """Alarm when the database's average CPU is above this."""

    db_free_storage_gb: float = Field(default=2.0, gt=0, le=1000)
    """Alarm when the database's free storage falls below this many GiB."""

    db_connections: int = Field(default=80, ge=1, le=100000)
    """Alarm when the database has more connections than this (db.t4g.micro allows about 110,
    db.m7g.large about 870)."""

    db_freeable_memory_mb: float = Field(default=128, gt=0, le=1_000_000)
    """Alarm when the database's freeable memory falls below this many MiB (db.t4g.micro has
    1 GiB in all, db.m7g.large 8 GiB): the instance is about to swap."""

    db_read_latency_ms: float = Field(default=20, gt=0, le=10_000)
    """Alarm when the database's average read latency (per I/O) is above this."""

    db_write_latency_ms: float = Field(default=20, gt=0, le=10_000)
    """Alarm when the database's average write latency (per I/O) is above this."""

    error_log_lines: int = Field(default=5, ge=1, le=100_000)
    """Alarm when the app writes at least this many error-level log lines in a period (a metric
    filter on its container log group; needs observability.enabled)."""

    function_errors: int = Field(default=1, ge=1, le=10000)
    """Alarm when a function has at least this many errors in a period."""

    function_throttles: int = Field(default=1, ge=1, le=10000)
    """Alarm when a function is throttled at least this many times in a period."""

    canary_latency_ms: float = Field(default=2000.0, gt=0, le=60000)
    """Alarm when the canary's average answer time of a probe is above this."""

    billing_alarm_usd: float | None = Field(default=None, gt=0, le=1_000_000)
    """Alarm when the account's estimated charges this month pass this many US dollars (AWS
    publishes them only in us-east-1, after "Receive Billing Alerts" is switched on in the
    Billing console). For a learner: the first sign of a surprise bill."""

    encrypt_topic: bool = True
    """Encrypt the alerts topic with a customer-managed KMS key that CloudWatch may use ($1/month;
    the AWS managed key alias/aws/sns would make every alarm's notification fail). False leaves
    it unencrypted: alarm messages hold alarm names and metric values, no app data."""

    prometheus_rules: bool = True
    """Deploy the app's Prometheus alerting rules to the cluster (a ConfigMap in the app's
    namespace, no CRD needed) when the stack has one; `backbone manifests` writes it too."""

    def subscribed(self) -> bool:
        """Whether the alerts topic has a subscriber (or an explicit word that one is elsewhere)."""
        return bool(self.alert_email or self.alert_https_url or self.alerts_routed_elsewhere)

    def warnings(self) -> list[str]:
        """What `backbone plan` says about where alerts go, every time."""
        if not self.enabled:
            return []
        if self.alerts_routed_elsewhere:
            return [f"alerts: routed outside this program: {self.alerts_routed_elsewhere}"]
        if not self.subscribed():
            return [
                "alerts: the alerts topic has no subscriber; alarms reach no one (set "
                "backbone:monitoring.alertEmail or alertHttpsUrl)"
            ]
        return []

    def problems(self) -> list[Problem]:
        if not self.enabled:
            return []
        out = list[Problem]()
        if self.alert_email is not None and not _EMAIL.match(self.alert_email):
            out.append(
                Problem(
                    self.key("alertEmail"),
                    f"{self.alert_email!r} is not an email address; allowed: an address such as "
                    "ops@example.com, or leave it out",
                )
            )
        return out + self._period_problems()

    def _period_problems(self) -> list[Problem]:
        # ALB, RDS and Lambda publish one data point a minute: a 10 or 30 s alarm would see no
        # data and, treating missing data as fine, never fire.
        period, low, high = self.period_seconds, *PERIOD
        if not (period % low == 0 and low <= period <= high):
            return [
                Problem(
                    self.key("periodSeconds"),
                    f"{period} is not a CloudWatch alarm period for these metrics; allowed: "
                    f"{low}, {2 * low}, ... {high} (a multiple of {low} up to an hour)",
                )
            ]
        if period * self.evaluation_periods > ALARM_SPAN:
            return [
                Problem(
                    self.key("evaluationPeriods"),
                    f"{self.evaluation_periods} periods of {period} s span more than a day; "
                    f"allowed: periodSeconds x evaluationPeriods up to {ALARM_SPAN}",
                )
            ]
        return []
