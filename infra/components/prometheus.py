"""The Prometheus side of the kit: the alerting rules for the sample app's own metrics, rendered
from the monitoring config's thresholds (one source of each default: infra.config's
MonitoringConfig; `thresholds(cfg.monitoring)` gives the keyword arguments).

    rules = render_rules(**thresholds(cfg.monitoring))
    yaml.safe_dump(rules)  # a rule file: `promtool check rules` passes it

The metric names are the app's interface (app/shortener/metrics.py, app/README.md):

* ``http_requests_total{route,method,status}``: counter of answered requests;
* ``http_request_duration_seconds_bucket{route,method,status,le}``: latency histogram;
* ``app_ready``: 1 when ``/readyz`` answers 200 (started, schema current, not draining);
* ``app_db_up``: 1 when the app's last database check succeeded, else 0;
* ``up``: Prometheus's own scrape health of each target.

With ``cluster_namespace`` set, a second group watches the cluster through kube-state-metrics
(``KSM_KEPT``): nodes not ready, pods pending or restarting, the HPA at its maximum.

Alerts (``alertname``, default severity):

* ``BackboneAppHighErrorRatio`` (critical): 5xx / all requests above ``error_ratio``;
* ``BackboneAppHighLatency`` (warning): the ``latency_quantile`` (p99) above ``latency_p99_seconds``;
* ``BackboneAppNotReady`` (warning): an instance reports ``app_ready == 0``;
* ``BackboneAppDatabaseDown`` (critical): an instance's database checks all failed for 2 minutes;
* ``BackboneAppTargetDown`` (critical): Prometheus cannot scrape an instance (``up == 0``);
* ``BackboneAppAbsent`` (critical): no instance of the job is scraped at all.

Each fires after ``for_minutes`` and carries ``summary``, ``description`` and ``runbook``
annotations that say what to check and what to do. Operational routes (``/metrics``, ``/healthz``,
``/readyz``) are left out of the error ratio and latency: readiness has its own alert.

Pure: no I/O; the same thresholds feed the CloudWatch alarms, the cluster deployment and
`backbone manifests`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from infra.config import MonitoringConfig

# The scrape jobs: one definition, used by the scrape configuration (the `job` label it writes)
# and by the rules (the `job` they select).
APP_JOB = "backbone-app"
KSM_JOB = "kube-state-metrics"
# What the app's pods must carry for the app job to select them (/work/notes/obs-interface.md):
# a container port of this name (the app's METRICS_PORT, 9464) and these pod labels.
METRICS_PORT_NAME = "metrics"
APP_COMPONENT = "api"
# Where the EKS community add-on runs kube-state-metrics, and its pods' name label and port name.
KSM_NAMESPACE = "kube-state-metrics"
KSM_PORT_NAME = "http"
# The only kube-state-metrics series the cluster rules and dashboards read: everything else it
# exports is dropped at scrape time (samples are what the workspace bills).
KSM_KEPT = (
    "kube_node_status_condition",
    "kube_pod_status_phase",
    "kube_pod_container_status_restarts_total",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
)

ALERTS = (
    "BackboneAppHighErrorRatio",
    "BackboneAppHighLatency",
    "BackboneAppNotReady",
    "BackboneAppDatabaseDown",
    "BackboneAppTargetDown",
    "BackboneAppAbsent",
)
CLUSTER_ALERTS = (
    "BackboneNodeNotReady",
    "BackbonePodPending",
    "BackbonePodRestarting",
    "BackboneHpaAtMax",
)
# The HPA pinned at its maximum this long: the app needs more than it may have.
HPA_AT_MAX_MINUTES = 15
DEFAULT_EXCLUDED_ROUTES = ("/metrics", "/healthz", "/readyz")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION = re.compile(r"^[0-9]+[smhd]$")


def _quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _selector(matchers: Sequence[tuple[str, str, str]]) -> str:
    return "{" + ",".join(f"{name}{op}{_quote(value)}" for name, op, value in matchers) + "}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def thresholds(m: MonitoringConfig) -> dict[str, Any]:
    """render_rules' thresholds from the monitoring config: the alarms' error rate and p99, and
    `for` as long as the alarms' evaluation window (periods x period, at least a minute)."""
    return {
        "error_ratio": m.alb_error_rate_percent / 100,
        "latency_p99_seconds": m.target_response_time_p99_seconds,
        "for_minutes": max(1, m.period_seconds * m.evaluation_periods // 60),
    }


@dataclass(frozen=True)
class _Rules:
    """What every alert of a rendering shares: selectors, wording, `for`, extra labels."""

    job: str
    namespace: str | None
    for_minutes: int
    extra: dict[str, str]
    runbook_url: str | None
    logs: str
    """The runbook's last step: where the logs are and the query that finds the cause."""

    @property
    def base(self) -> list[tuple[str, str, str]]:
        out = [("job", "=", self.job)]
        return [*out, ("namespace", "=", self.namespace)] if self.namespace else out

    @property
    def where(self) -> str:
        return f"job {self.job}" + (f" in namespace {self.namespace}" if self.namespace else "")

    @property
    def who(self) -> str:
        return "{{ $labels.job }}" + (" in {{ $labels.namespace }}" if self.namespace else "")

    @property
    def duration(self) -> str:
        return f"{self.for_minutes} minutes"

    def alert(
        self,
        name: str,
        expr: str,
        severity: str,
        text: tuple[str, str, str],
        for_minutes: int | None = None,
    ) -> dict[str, Any]:
        summary, description, runbook = text
        annotations = {"summary": summary, "description": description, "runbook": runbook}
        if self.logs:
            annotations["runbook"] = f"{runbook} {self.logs}"
        if self.runbook_url:
            annotations["runbook_url"] = f"{self.runbook_url.rstrip('/')}#{name.lower()}"
        minutes = self.for_minutes if for_minutes is None else for_minutes
        return {
            "alert": name,
            "expr": expr,
            "for": f"{minutes}m",
            "labels": {"severity": severity, **self.extra},
            "annotations": annotations,
        }


def logs_insights_query(namespace: str, levels: Sequence[str] = ("error", "critical")) -> str:
    """The CloudWatch Logs Insights query that lists the app's error lines (Container Insights'
    Fluent Bit parses each JSON line into `log_processed`)."""
    wanted = " or ".join(f'log_processed.level = "{level}"' for level in levels)
    return (
        "fields @timestamp, kubernetes.pod_name, log_processed.msg, log_processed.status, "
        "log_processed.route, log_processed.request_id | filter kubernetes.namespace_name = "
        f'"{namespace}" and ({wanted}) | sort @timestamp desc | limit 100'
    )


def render_rules(
    *,
    error_ratio: float,
    latency_p99_seconds: float,
    for_minutes: int,
    latency_quantile: float = 0.99,
    rate_window: str = "5m",
    job: str = APP_JOB,
    namespace: str | None = None,
    exclude_routes: Sequence[str] = DEFAULT_EXCLUDED_ROUTES,
    group_by: Sequence[str] = ("namespace", "job"),
    labels: Mapping[str, str] | None = None,
    group_name: str = "backbone-app",
    runbook_url: str | None = None,
    log_group: str | None = None,
    cluster_namespace: str | None = None,
) -> dict[str, Any]:
    """The rule file as a dict (``{"groups": [...]}``), ready for ``yaml.safe_dump``.

    ``job`` and ``namespace`` select the app's series (the scrape job's name and, on Kubernetes,
    its namespace); ``labels`` are added to every alert (for routing, e.g. ``{"stack": "prod"}``);
    ``group_by`` are the labels the ratio and the quantile keep (one alert per job by default).
    ``log_group`` (the app's container log group) ends each runbook with where to read the logs
    and a Logs Insights query; ``cluster_namespace`` (the app's namespace) adds the cluster group.
    """
    _check(error_ratio, latency_p99_seconds, latency_quantile, for_minutes, rate_window)
    extra = dict(labels or {})
    _check_labels(extra, group_by)
    logs = ""
    if log_group:
        query = logs_insights_query(cluster_namespace or namespace or "backbone")
        logs = f"Logs: CloudWatch Logs group {log_group}; Logs Insights: {query}"
    ctx = _Rules(job, namespace, for_minutes, extra, runbook_url, logs)
    traffic = list(ctx.base)
    if exclude_routes:
        traffic.append(("route", "!~", "|".join(re.escape(r) for r in exclude_routes)))
    quantile = (latency_quantile, latency_p99_seconds)
    rules = [
        *_traffic_alerts(ctx, traffic, error_ratio, quantile, rate_window, ", ".join(group_by)),
        *_instance_alerts(ctx),
    ]
    groups = [{"name": group_name, "rules": rules}]
    if cluster_namespace:
        groups.append(
            {"name": "backbone-cluster", "rules": _cluster_alerts(ctx, cluster_namespace)}
        )
    return {"groups": groups}


def _check_labels(extra: Mapping[str, str], group_by: Sequence[str]) -> None:
    for name in [*extra, *group_by]:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a valid Prometheus label name")
    if "severity" in extra or "alertname" in extra:
        raise ValueError("labels must not set severity or alertname: each alert sets its own")


def _check(
    error_ratio: float, latency: float, quantile: float, for_minutes: int, rate_window: str
) -> None:
    if not 0 < error_ratio < 1:
        raise ValueError(f"error_ratio={error_ratio} must be between 0 and 1 (exclusive)")
    if latency <= 0:
        raise ValueError(f"latency_p99_seconds={latency} must be positive")
    if not 0 < quantile < 1:
        raise ValueError(f"latency_quantile={quantile} must be between 0 and 1")
    if for_minutes < 0:
        raise ValueError(f"for_minutes={for_minutes} must be 0 or more")
    if not _DURATION.match(rate_window):
        raise ValueError(f"rate_window={rate_window!r} must be a duration such as 5m")


def _traffic_alerts(
    ctx: _Rules,
    traffic: list[tuple[str, str, str]],
    error_ratio: float,
    latency_quantile: tuple[float, float],
    window: str,
    by: str,
) -> list[dict[str, Any]]:
    return [
        _error_ratio_alert(ctx, traffic, error_ratio, window, by),
        _latency_alert(ctx, traffic, latency_quantile, window, by),
    ]


def _error_ratio_alert(
    ctx: _Rules, traffic: list[tuple[str, str, str]], error_ratio: float, window: str, by: str
) -> dict[str, Any]:
    sel_all = _selector(traffic)
    sel_5xx = _selector([*traffic, ("status", "=~", "5..")])
    return ctx.alert(
        "BackboneAppHighErrorRatio",
        f"sum by ({by}) (rate(http_requests_total{sel_5xx}[{window}]))"
        f" / sum by ({by}) (rate(http_requests_total{sel_all}[{window}]))"
        f" > {error_ratio:g}",
        "critical",
        (
            f"More than {_percent(error_ratio)} of requests to {ctx.who} fail with 5xx",
            f"For {ctx.duration}, over {_percent(error_ratio)} of the requests answered by "
            f"{ctx.where} (operational routes excluded) were 5xx errors. Users see failures.",
            "1. Look at the app's JSON logs for status >= 500 and their request ids; "
            "app_db_errors_total shows whether the database is the cause (503). "
            "2. If a deploy started it, roll back (kubectl rollout undo). "
            "3. If the database is failing, check its CloudWatch alarms (CPU, connections, "
            "free storage) and app_db_pool_requests_waiting.",
        ),
    )


def _latency_alert(
    ctx: _Rules,
    traffic: list[tuple[str, str, str]],
    latency_quantile: tuple[float, float],
    window: str,
    by: str,
) -> dict[str, Any]:
    quantile, latency = latency_quantile
    pct = f"{quantile * 100:g}"  # 0.99 -> 99, 0.999 -> 99.9
    return ctx.alert(
        "BackboneAppHighLatency",
        f"histogram_quantile({quantile:g}, sum by ({by}, le)"
        f" (rate(http_request_duration_seconds_bucket{_selector(traffic)}[{window}])))"
        f" > {latency:g}",
        "warning",
        (
            f"p{pct} latency of {ctx.who} is above {_seconds(latency)}",
            f"For {ctx.duration}, the {quantile:g} quantile of request latency of "
            f"{ctx.where} (operational routes excluded) was above {_seconds(latency)}.",
            "1. Check saturation: app_db_pool_in_use against app_db_pool_max_size and "
            "app_db_pool_requests_waiting (pool exhausted: raise DB_POOL_MAX or add "
            "replicas). 2. Check the database's CPU and slow queries. "
            "3. Check CPU throttling of the pods; scale out if they are at their limits. "
            "4. A low app_cache_hits / app_cache_misses ratio sends redirects to the database.",
        ),
    )


INSTANCE = "{{ $labels.instance }}"
POD = "{{ $labels.pod }}"


def _instance_alerts(ctx: _Rules) -> list[dict[str, Any]]:
    """Each instance's own health: ready, its database reachable, scraped, any scraped at all."""
    sel = _selector(ctx.base)
    return [
        _not_ready(ctx, sel),
        _database_down(ctx, sel),
        _target_down(ctx, sel),
        _absent(ctx, sel),
    ]


def _not_ready(ctx: _Rules, sel: str) -> dict[str, Any]:
    return ctx.alert(
        "BackboneAppNotReady",
        f"app_ready{sel} == 0",
        "warning",
        (
            f"An instance of {ctx.who} reports not ready",
            f"For {ctx.duration}, {INSTANCE} of {ctx.where} has reported app_ready 0: the "
            "pod is not serving (starting, its schema behind, or shutting down), so it gets "
            "no traffic. Readiness does not follow the database (BackboneAppDatabaseDown).",
            "1. Read the pod's logs for its start-up or shutdown lines. "
            "2. A schema behind: the migration's Job failed or is still running (kubectl get "
            "jobs, kubectl logs job/<name> in the app's namespace). "
            "3. If only one pod is affected, delete it so it is rescheduled.",
        ),
    )


def _database_down(ctx: _Rules, sel: str) -> dict[str, Any]:
    return ctx.alert(
        "BackboneAppDatabaseDown",
        f"max_over_time(app_db_up{sel}[2m]) == 0",
        "critical",
        (
            f"{INSTANCE} of {ctx.who} cannot reach its database",
            f"Every database check of {INSTANCE} of {ctx.where} failed for 2 minutes: "
            "writes and uncached reads answer 503, cached redirects are still served.",
            "1. Check the database's CloudWatch alarms and its status (a failover, a "
            "reboot, storage full). 2. Check app_db_auth_failures_total and "
            'app_db_credential_reads_total{result="failed"}: a rotated password not '
            "re-read, or the secret unreadable (IAM). 3. Check the network path (security "
            "group, NetworkPolicy egress to 5432, DNS).",
        ),
        for_minutes=0,
    )


def _target_down(ctx: _Rules, sel: str) -> dict[str, Any]:
    return ctx.alert(
        "BackboneAppTargetDown",
        f"up{sel} == 0",
        "critical",
        (
            f"Prometheus cannot scrape {INSTANCE} of {ctx.who}",
            f"For {ctx.duration}, the scrape of {INSTANCE} of {ctx.where} has failed: "
            "the process is down, restarting, or its metrics port does not answer.",
            "1. kubectl get pods: look for CrashLoopBackOff or OOMKilled and read the "
            "previous container's logs (kubectl logs --previous). "
            "2. Check liveness (/healthz) from inside the cluster. "
            "3. Check the last deploy and roll back if it started there.",
        ),
    )


def _absent(ctx: _Rules, sel: str) -> dict[str, Any]:
    return ctx.alert(
        "BackboneAppAbsent",
        f"absent(up{sel})",
        "critical",
        (
            f"No instance of {ctx.where} is being scraped",
            f"For {ctx.duration}, Prometheus has found no target for {ctx.where}: the app "
            "is not deployed, scaled to zero, or the scrape configuration does not select it.",
            "1. kubectl get deploy,pods in the app's namespace: is the app running? "
            "2. Check the scrape configuration (job name, namespace, the pods' labels and "
            "their container port named metrics) against these rules' selector. "
            "3. If the app was removed on purpose, remove these rules too.",
        ),
    )


def _cluster_alerts(ctx: _Rules, namespace: str) -> list[dict[str, Any]]:
    """The cluster as kube-state-metrics reports it: nodes, the app's pods, its autoscaler."""
    ksm = [("job", "=", KSM_JOB)]
    app = [*ksm, ("namespace", "=", namespace)]
    return [
        _node_not_ready(ctx, ksm),
        _pod_pending(ctx, app, namespace),
        _pod_restarting(ctx, app, namespace),
        _hpa_at_max(ctx, app, namespace),
    ]


Matchers = list[tuple[str, str, str]]


def _node_not_ready(ctx: _Rules, ksm: Matchers) -> dict[str, Any]:
    return ctx.alert(
        "BackboneNodeNotReady",
        "kube_node_status_condition"
        f"{_selector([*ksm, ('condition', '=', 'Ready'), ('status', '=', 'true')])} == 0",
        "warning",
        (
            "Node {{ $labels.node }} is not ready",
            f"For {ctx.duration}, node {{{{ $labels.node }}}} has not reported Ready: its "
            "pods are being evicted and rescheduled on the others.",
            "1. kubectl describe node: look at its conditions (memory or disk pressure, "
            "kubelet stopped). 2. In the EC2 console, check the instance's status checks; "
            "the node group replaces an instance that fails them. 3. If pods are pending "
            "too, the cluster lacks capacity: raise cluster.maxNodes.",
        ),
    )


def _pod_pending(ctx: _Rules, app: Matchers, namespace: str) -> dict[str, Any]:
    return ctx.alert(
        "BackbonePodPending",
        f"sum by (namespace, pod) (kube_pod_status_phase{_selector([*app, ('phase', '=', 'Pending')])}) > 0",
        "warning",
        (
            f"Pod {POD} in {namespace} is pending",
            f"For {ctx.duration}, pod {POD} of namespace {namespace} could not be scheduled "
            "or started.",
            "1. kubectl describe pod: the events say why (Insufficient cpu/memory, an image "
            "that cannot be pulled, a volume). 2. Insufficient resources: the nodes are full; "
            "raise cluster.maxNodes or lower app.cpu/app.memory.",
        ),
    )


def _pod_restarting(ctx: _Rules, app: Matchers, namespace: str) -> dict[str, Any]:
    return ctx.alert(
        "BackbonePodRestarting",
        f"increase(kube_pod_container_status_restarts_total{_selector(app)}[15m]) > 2",
        "warning",
        (
            f"Container {{{{ $labels.container }}}} of {POD} restarts",
            f"A container of pod {POD} in {namespace} restarted more than twice in 15 "
            "minutes (crash loop, OOMKilled, a failing liveness probe).",
            "1. kubectl logs --previous for the last crash; kubectl describe pod for the "
            "reason (OOMKilled: raise app.memory). 2. A failing liveness probe: check "
            "/healthz and the node's load.",
        ),
        for_minutes=0,
    )


def _hpa_at_max(ctx: _Rules, app: Matchers, namespace: str) -> dict[str, Any]:
    return ctx.alert(
        "BackboneHpaAtMax",
        f"kube_horizontalpodautoscaler_status_current_replicas{_selector(app)}"
        f" >= kube_horizontalpodautoscaler_spec_max_replicas{_selector(app)}",
        "warning",
        (
            "The autoscaler {{ $labels.horizontalpodautoscaler }} is at its maximum",
            f"For {HPA_AT_MAX_MINUTES} minutes the app in {namespace} has run at its "
            "maximum replicas: it needs more than it may have, and latency follows.",
            "1. Check the latency and error alerts and the pods' CPU. 2. Raise "
            "app.maxReplicas (and cluster.maxNodes so they fit), or find what made the "
            "load grow (a client retrying, a cache that stopped hitting).",
        ),
        for_minutes=HPA_AT_MAX_MINUTES,
    )


# -- scrape configuration ---------------------------------------------------------------------


def _label(name: str) -> str:
    """A Kubernetes label name as Prometheus's discovery spells it (meta label suffix)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _keep(source: str, regex: str) -> dict[str, Any]:
    return {"source_labels": [source], "regex": regex, "action": "keep"}


def _copy(source: str, target: str) -> dict[str, Any]:
    return {"source_labels": [source], "target_label": target, "action": "replace"}


def _pod_discovery(namespace: str) -> list[dict[str, Any]]:
    return [{"role": "pod", "namespaces": {"names": [namespace]}}]


POD_LABELS = (
    ("__meta_kubernetes_namespace", "namespace"),
    ("__meta_kubernetes_pod_name", "pod"),
    ("__meta_kubernetes_pod_node_name", "node"),
    ("__meta_kubernetes_pod_container_name", "container"),
)


def scrape_config(
    *,
    app_namespace: str,
    app_name: str,
    interval_seconds: int,
    cluster_signals: bool = True,
) -> dict[str, Any]:
    """The collector's Prometheus configuration (the AMP managed collector's subset: global and
    scrape_configs). Job APP_JOB: the app's pods in `app_namespace`, by their name and component
    labels, on their container port named METRICS_PORT_NAME, Running only; each target labelled
    with its namespace, pod, node and container. Job KSM_JOB (cluster_signals): kube-state-
    metrics, keeping only KSM_KEPT (its own labels win: `honor_labels`)."""
    app: dict[str, Any] = {
        "job_name": APP_JOB,
        "kubernetes_sd_configs": _pod_discovery(app_namespace),
        "relabel_configs": [
            _keep(f"__meta_kubernetes_pod_label_{_label('app.kubernetes.io/name')}", app_name),
            _keep(
                f"__meta_kubernetes_pod_label_{_label('app.kubernetes.io/component')}",
                APP_COMPONENT,
            ),
            _keep("__meta_kubernetes_pod_container_port_name", METRICS_PORT_NAME),
            _keep("__meta_kubernetes_pod_phase", "Running"),
            *(_copy(source, target) for source, target in POD_LABELS),
        ],
    }
    jobs = [app, _ksm_job()] if cluster_signals else [app]
    interval = f"{interval_seconds}s"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": f"{min(interval_seconds, 10)}s"},
        "scrape_configs": jobs,
    }


def _ksm_job() -> dict[str, Any]:
    """kube-state-metrics, keeping only KSM_KEPT (its own labels win: `honor_labels`)."""
    return {
        "job_name": KSM_JOB,
        "honor_labels": True,
        "kubernetes_sd_configs": _pod_discovery(KSM_NAMESPACE),
        "relabel_configs": [
            _keep(f"__meta_kubernetes_pod_label_{_label('app.kubernetes.io/name')}", KSM_JOB),
            _keep("__meta_kubernetes_pod_container_port_name", KSM_PORT_NAME),
        ],
        "metric_relabel_configs": [_keep("__name__", "|".join(KSM_KEPT))],
    }


def relabeled_metrics(config: Mapping[str, Any]) -> set[str]:
    """Metric names a scrape configuration's metric relabeling keeps by name (a test checks the
    rules and dashboards need no other)."""
    out: set[str] = set()
    for job in config.get("scrape_configs", []):
        for rule in job.get("metric_relabel_configs", []):
            if rule.get("source_labels") == ["__name__"]:
                out |= set(str(rule["regex"]).split("|"))
    return out


# -- Alertmanager -----------------------------------------------------------------------------


def alert_route(receiver: str) -> dict[str, Any]:
    """The one routing and grouping of the kit's alerts (the workspace's and the local stack's
    Alertmanager): every alert to `receiver`, grouped by alert, stack and namespace."""
    return {
        "receiver": receiver,
        "group_by": ["alertname", "stack", "namespace"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "4h",
    }


def local_alertmanager_config() -> dict[str, Any]:
    """The local stack's Alertmanager: the same route as the workspace's, to a receiver with no
    integration (a null receiver): alerts are grouped and shown in Alertmanager's UI and API, and
    sent nowhere. Add a webhook_configs entry to it to send them somewhere."""
    return {"route": alert_route("local-nowhere"), "receivers": [{"name": "local-nowhere"}]}


def alertmanager_config(*, topic_arn: str, region: str, stack: str) -> dict[str, Any]:
    """An Alertmanager configuration that sends every alert to the SNS topic (signed with the
    workspace's own identity, SigV4), grouped by alert and stack; resolved alerts too."""
    return {
        "route": alert_route("alerts-topic"),
        "receivers": [
            {
                "name": "alerts-topic",
                "sns_configs": [
                    {
                        "topic_arn": topic_arn,
                        "sigv4": {"region": region},
                        "send_resolved": True,
                        "subject": f"[{stack}] {{{{ .CommonLabels.alertname }}}} "
                        "({{ .Status }})",
                        "attributes": {"stack": stack, "source": "prometheus"},
                    }
                ],
            }
        ],
    }


def workspace_alertmanager_definition(config: Mapping[str, Any]) -> str:
    """What AMP's Alertmanager definition takes: the configuration under `alertmanager_config` as
    a YAML string (AMP user guide, alert manager configuration)."""
    inner = yaml.safe_dump(dict(config), sort_keys=False, width=100)
    return "alertmanager_config: |\n" + "".join(f"  {line}\n" for line in inner.splitlines())
