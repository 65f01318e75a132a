"""backbone:observability: managed Prometheus, its collector and rules, Alertmanager, and the
containers' logs."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import Problem, Section, retention_problems


class ObservabilityConfig(Section):
    """Metrics, rules, alerts and logs on AWS for a stack with a cluster: an Amazon Managed Service
    for Prometheus workspace, the AWS managed collector scraping the app's pods (and
    kube-state-metrics), the kit's rules as a rule group namespace, an Alertmanager definition
    routing to the alerts topic, and the containers' logs in CloudWatch Logs (the CloudWatch
    Observability EKS add-on)."""

    SECTION = "observability"

    enabled: bool = False
    """Create the workspace, the collector, the rules, the Alertmanager definition and the
    container logs. Needs cluster.enabled and monitoring.enabled (alerts go to its topic)."""

    scrape_interval_seconds: int = Field(default=30, ge=10, le=300)
    """How often the collector scrapes each target. Samples (and cost) scale with 1/interval."""

    log_retention_days: int = 30
    """How long CloudWatch Logs keeps the containers' logs (application, host, data plane and
    performance log groups)."""

    cluster_signals: bool = True
    """Install kube-state-metrics (an EKS community add-on), scrape only the series the rules
    read, and alert on nodes not ready, pods pending or restarting, the HPA at its maximum."""

    container_insights_metrics: bool = False
    """Keep the add-on's Container Insights metrics (billed as CloudWatch custom metrics, a few
    hundred per cluster) besides the logs. Off: the add-on ships logs only."""

    managed_grafana: bool = False
    """An Amazon Managed Grafana workspace (AWS IAM Identity Center sign-in, which must be enabled
    in the account) whose role may query this stack's Prometheus workspace (and read CloudWatch):
    its data sources. Billed per active editor/viewer user a month. Needs enabled."""

    def problems(self) -> list[Problem]:
        if not self.enabled:
            if self.managed_grafana:
                return [
                    Problem(
                        self.key("managedGrafana"),
                        "true needs observability.enabled: true (its data source is the "
                        "stack's Prometheus workspace); allowed: false, or enable observability",
                    )
                ]
            return []
        return retention_problems(self.key("logRetentionDays"), self.log_retention_days)
