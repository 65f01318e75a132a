"""The Prometheus side of the kit: the alerting rules for the sample app's own metrics, rendered
from the monitoring config's thresholds (one source of each default: infra.config's
MonitoringConfig; `thresholds(cfg.monitoring)` gives the keyword arguments).

    rules = render_rules(**thresholds(cfg.monitoring))
    yaml.safe_dump(rules)  # a rule file: `promtool check rules` passes it

The metric names are the app's interface (app/shortener/metrics.py, app/README.md):

* ``http_requests_total{route,method,status}``: counter of answered requests;
* ``http_request_duration_seconds_bucket{route,method,status,le}``: latency histogram;
* ``app_ready``: 1 when the last readiness check reached the database, else 0;
* ``up``: Prometheus's own scrape health of each target.

Alerts (``alertname``, default severity):

* ``BackboneAppHighErrorRatio`` (critical): 5xx / all requests above ``error_ratio``;
* ``BackboneAppHighLatency`` (warning): the ``latency_quantile`` (p99) above ``latency_p99_seconds``;
* ``BackboneAppNotReady`` (warning): an instance reports ``app_ready == 0``;
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
from typing import Any

from infra.config import MonitoringConfig

ALERTS = (
    "BackboneAppHighErrorRatio",
    "BackboneAppHighLatency",
    "BackboneAppNotReady",
    "BackboneAppTargetDown",
    "BackboneAppAbsent",
)
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


def render_rules(
    *,
    error_ratio: float,
    latency_p99_seconds: float,
    for_minutes: int,
    latency_quantile: float = 0.99,
    rate_window: str = "5m",
    job: str = "backbone-app",
    namespace: str | None = None,
    exclude_routes: Sequence[str] = DEFAULT_EXCLUDED_ROUTES,
    group_by: Sequence[str] = ("namespace", "job"),
    labels: Mapping[str, str] | None = None,
    group_name: str = "backbone-app",
    runbook_url: str | None = None,
) -> dict[str, Any]:
    """The rule file as a dict (``{"groups": [...]}``), ready for ``yaml.safe_dump``.

    ``job`` and ``namespace`` select the app's series (the scrape job's name and, on Kubernetes,
    its namespace); ``labels`` are added to every alert (for routing, e.g. ``{"stack": "prod"}``);
    ``group_by`` are the labels the ratio and the quantile keep (one alert per job by default).
    """
    if not 0 < error_ratio < 1:
        raise ValueError(f"error_ratio={error_ratio} must be between 0 and 1 (exclusive)")
    if latency_p99_seconds <= 0:
        raise ValueError(f"latency_p99_seconds={latency_p99_seconds} must be positive")
    if not 0 < latency_quantile < 1:
        raise ValueError(f"latency_quantile={latency_quantile} must be between 0 and 1")
    if for_minutes < 0:
        raise ValueError(f"for_minutes={for_minutes} must be 0 or more")
    if not _DURATION.match(rate_window):
        raise ValueError(f"rate_window={rate_window!r} must be a duration such as 5m")
    extra = dict(labels or {})
    for name in [*extra, *group_by]:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a valid Prometheus label name")
    if "severity" in extra or "alertname" in extra:
        raise ValueError("labels must not set severity or alertname: each alert sets its own")

    base: list[tuple[str, str, str]] = [("job", "=", job)]
    if namespace:
        base.append(("namespace", "=", namespace))
    traffic = list(base)
    if exclude_routes:
        traffic.append(("route", "!~", "|".join(re.escape(r) for r in exclude_routes)))
    sel_all = _selector(traffic)
    sel_5xx = _selector([*traffic, ("status", "=~", "5..")])
    sel_base = _selector(base)
    by = ", ".join(group_by)
    by_le = ", ".join([*group_by, "le"])
    where = f"job {job}" + (f" in namespace {namespace}" if namespace else "")
    who = "{{ $labels.job }}" + (" in {{ $labels.namespace }}" if namespace else "")
    duration = f"{for_minutes} minutes"
    pct = f"{latency_quantile * 100:g}"  # 0.99 -> 99, 0.999 -> 99.9

    error_expr = (
        f"sum by ({by}) (rate(http_requests_total{sel_5xx}[{rate_window}]))"
        f" / sum by ({by}) (rate(http_requests_total{sel_all}[{rate_window}]))"
        f" > {error_ratio:g}"
    )
    latency_expr = (
        f"histogram_quantile({latency_quantile:g}, sum by ({by_le})"
        f" (rate(http_request_duration_seconds_bucket{sel_all}[{rate_window}])))"
        f" > {latency_p99_seconds:g}"
    )

    def alert(
        name: str, expr: str, severity: str, summary: str, description: str, runbook: str
    ) -> dict[str, Any]:
        annotations = {"summary": summary, "description": description, "runbook": runbook}
        if runbook_url:
            annotations["runbook_url"] = f"{runbook_url.rstrip('/')}#{name.lower()}"
        return {
            "alert": name,
            "expr": expr,
            "for": f"{for_minutes}m",
            "labels": {"severity": severity, **extra},
            "annotations": annotations,
        }

    rules = [
        alert(
            "BackboneAppHighErrorRatio",
            error_expr,
            "critical",
            f"More than {_percent(error_ratio)} of requests to {who} fail with 5xx",
            f"For {duration}, over {_percent(error_ratio)} of the requests answered by {where} "
            "(operational routes excluded) were 5xx errors. Users see failures now.",
            "1. Look at the app's JSON logs for status >= 500 and their request ids; "
            "app_db_errors_total shows whether the database is the cause (503). "
            "2. If a deploy started it, roll back (kubectl rollout undo). "
            "3. If the database is failing, check its CloudWatch alarms (CPU, connections, "
            "free storage) and app_db_pool_requests_waiting.",
        ),
        alert(
            "BackboneAppHighLatency",
            latency_expr,
            "warning",
            f"p{pct} latency of {who} is above {_seconds(latency_p99_seconds)}",
            f"For {duration}, the {latency_quantile:g} quantile of request latency of {where} "
            f"(operational routes excluded) was above {_seconds(latency_p99_seconds)}.",
            "1. Check saturation: app_db_pool_in_use against app_db_pool_max_size and "
            "app_db_pool_requests_waiting (pool exhausted: raise DB_POOL_MAX or add replicas). "
            "2. Check the database's CPU and slow queries. "
            "3. Check CPU throttling of the pods; scale out if they are at their limits. "
            "4. A low app_cache_hits / app_cache_misses ratio sends redirects to the database.",
        ),
        alert(
            "BackboneAppNotReady",
            f"app_ready{sel_base} == 0",
            "warning",
            f"An instance of {who} reports not ready",
            f"For {duration}, {{{{ $labels.instance }}}} of {where} has reported app_ready 0: "
            "its readiness check cannot reach the database, so it receives no traffic.",
            "1. Read the instance's logs for readiness failures. "
            "2. Check that the database is up and reachable from the cluster (security group, "
            "DNS, credentials in the app's secret). "
            "3. If only one instance is affected, delete its pod so it is rescheduled.",
        ),
        alert(
            "BackboneAppTargetDown",
            f"up{sel_base} == 0",
            "critical",
            f"Prometheus cannot scrape {{{{ $labels.instance }}}} of {who}",
            f"For {duration}, the scrape of {{{{ $labels.instance }}}} of {where} has failed: "
            "the process is down, restarting, or its /metrics endpoint does not answer.",
            "1. kubectl get pods: look for CrashLoopBackOff or OOMKilled and read the previous "
            "container's logs (kubectl logs --previous). "
            "2. Check liveness (/healthz) from inside the cluster. "
            "3. Check the last deploy and roll back if it started there.",
        ),
        alert(
            "BackboneAppAbsent",
            f"absent(up{sel_base})",
            "critical",
            f"No instance of {where} is being scraped",
            f"For {duration}, Prometheus has found no target for {where}: the app is not "
            "deployed, scaled to zero, or the scrape configuration does not select it.",
            "1. kubectl get deploy,pods in the app's namespace: is the app running? "
            "2. Check the scrape configuration (job name, namespace, pod annotations or "
            "ServiceMonitor) against these rules' selector. "
            "3. If the app was removed on purpose, remove these rules too.",
        ),
    ]
    return {"groups": [{"name": group_name, "rules": rules}]}
