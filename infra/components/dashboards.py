"""Grafana dashboards as code (grafana-foundation-sdk): the one definition of the kit's dashboards,
and the Grafana provisioning files that load them. `backbone dashboards` (backbone/dashboards.py)
writes them for any Grafana; the local stack (infra/components/local.py) provisions them into its
own Grafana, next to its Prometheus and Alertmanager.

    dashboards()                      {file name: dashboard JSON}: backbone-app.json (the app's
                                      golden signals: traffic, errors, latency, saturation, and
                                      its database), backbone-alerts.json (the kit's alerts, as
                                      Prometheus's ALERTS series, and the cluster signals)
    dashboard_provider(path)          a file provider reading the dashboards at `path`
    datasources(prometheus_url, ...)  a Prometheus data source (and an Alertmanager one)

Every panel queries the data source chosen by the dashboard's `datasource` variable (type
prometheus): Amazon Managed Grafana with the workspace as data source, or the local Grafana with
the local Prometheus, alike. The metric names come from the app's exposition (app/shortener/
metrics.py) and the scrape jobs from infra/components/prometheus.py (APP_JOB, KSM_JOB): a test
scrapes the real app and fails on any name a panel uses that it does not export, and promtool
parses every panel's expression.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm

from infra.components.prometheus import APP_JOB, KSM_JOB

DASHBOARDS_PATH = "/var/lib/grafana/dashboards/backbone"
"""Where the provider reads the dashboards unless told otherwise (a Grafana's usual layout)."""
PROMETHEUS_UID = "backbone-prometheus"
ALERTMANAGER_UID = "backbone-alertmanager"

DATASOURCE = gm.DataSourceRef(type_val="prometheus", uid="${datasource}")
APP = f'job="{APP_JOB}"'
TRAFFIC = f'{APP},route!~"/metrics|/healthz|/readyz"'
KSM = f'job="{KSM_JOB}"'
APP_NAMESPACE = "backbone"


def _query(expr: str, legend: str, ref: str) -> gp.Dataquery:
    return gp.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _series(title: str, unit: str, *queries: tuple[str, str], width: int = 12) -> gts.Panel:
    panel = gts.Panel().title(title).unit(unit).datasource(DATASOURCE).span(width).height(8)
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def _stat(title: str, unit: str, expr: str, width: int = 6) -> gstat.Panel:
    return (
        gstat.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(4)
        .with_target(_query(expr, title, "A"))
    )


def _board(uid: str, title: str, description: str) -> gd.Dashboard:
    variable = gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    return (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["backbone"])
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(variable)
    )


def app_dashboard() -> dict[str, Any]:
    """The app's golden signals: traffic, errors, latency, saturation; then its database."""
    board = _board(
        "backbone-app",
        "backbone: the app's golden signals",
        "Requests, 5xx ratio, latency quantiles and saturation of the link shortener, from its "
        f"own metrics (scrape job {APP_JOB}).",
    )
    board = (
        board.with_row(gd.Row("Traffic and errors"))
        .with_panel(
            _series(
                "Traffic: requests per second by route",
                "reqps",
                (f"sum by (route) (rate(http_requests_total{{{TRAFFIC}}}[5m]))", "{{route}}"),
            )
        )
        .with_panel(
            _series(
                "Errors: share of requests answered 5xx",
                "percentunit",
                (
                    f'sum(rate(http_requests_total{{{TRAFFIC},status=~"5.."}}[5m])) / '
                    f"sum(rate(http_requests_total{{{TRAFFIC}}}[5m]))",
                    "5xx ratio",
                ),
                (
                    f"sum by (operation) (rate(app_db_errors_total{{{APP}}}[5m]))",
                    "503 {{operation}}",
                ),
            )
        )
        .with_row(gd.Row("Latency and saturation"))
        .with_panel(_latency_panel())
        .with_panel(_saturation_panel())
        .with_row(gd.Row("Database and cache"))
        .with_panel(_stat("Database up (pods reporting 1)", "none", f"sum(app_db_up{{{APP}}})"))
        .with_panel(_stat("Pods ready", "none", f"sum(app_ready{{{APP}}})"))
        .with_panel(_stat("Targets scraped", "none", f"sum(up{{{APP}}})"))
        .with_panel(
            _stat(
                "Cache hit ratio (5m)",
                "percentunit",
                f"sum(rate(app_cache_hits_total{{{APP}}}[5m])) / (sum(rate(app_cache_hits_total"
                f"{{{APP}}}[5m])) + sum(rate(app_cache_misses_total{{{APP}}}[5m])))",
            )
        )
        .with_panel(
            _series(
                "Database: failed checks, refused logins, clicks dropped (per second)",
                "ops",
                (f"sum(rate(app_db_check_failures_total{{{APP}}}[5m]))", "failed checks"),
                (f"sum(rate(app_db_auth_failures_total{{{APP}}}[5m]))", "refused logins"),
                (f"sum(rate(app_clicks_dropped_total{{{APP}}}[5m]))", "clicks dropped"),
                width=24,
            )
        )
    )
    return _encode(board)


def _latency_panel() -> gts.Panel:
    def q(quantile: str) -> tuple[str, str]:
        return (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(http_request_duration_seconds_bucket{{{TRAFFIC}}}[5m])))",
            f"p{float(quantile) * 100:g}",
        )

    return _series("Latency: request duration quantiles", "s", q("0.5"), q("0.9"), q("0.99"))


def _saturation_panel() -> gts.Panel:
    return _series(
        "Saturation: pool and requests in flight",
        "none",
        (f"sum(app_db_pool_in_use{{{APP}}})", "pool in use"),
        (f"sum(app_db_pool_max_size{{{APP}}})", "pool maximum"),
        (f"sum(app_db_pool_requests_waiting{{{APP}}})", "waiting for a connection"),
        (f"sum(http_requests_in_progress{{{APP}}})", "requests in progress"),
    )


def alerts_dashboard() -> dict[str, Any]:
    """The kit's alerts as Prometheus evaluates them, and the cluster signals they read."""
    board = _board(
        "backbone-alerts",
        "backbone: alerts and the cluster",
        "Which of the kit's alerts fire now (ALERTS), and the kube-state-metrics series the "
        "cluster rules read: nodes, pending and restarting pods, the autoscaler.",
    )
    board = board.with_row(gd.Row("Alerts"))
    for panel in _alert_panels():
        board = board.with_panel(panel)
    board = board.with_row(gd.Row("The cluster"))
    for panel in _cluster_panels(f'{KSM},namespace="{APP_NAMESPACE}"'):
        board = board.with_panel(panel)
    return _encode(board)


def _alert_panels() -> list[Any]:
    """How many alerts fire, and each by name and state."""
    return [
        _stat("Alerts firing", "none", 'count(ALERTS{alertstate="firing"}) or vector(0)'),
        _series(
            "Alerts by name and state",
            "none",
            ("sum by (alertname, alertstate) (ALERTS)", "{{alertname}} {{alertstate}}"),
            width=18,
        ),
    ]


def _cluster_panels(app_ns: str) -> list[Any]:
    """The kube-state-metrics series the cluster rules read (`app_ns`: the app's namespace)."""
    hpa = "sum by (horizontalpodautoscaler) "
    return [
        _series(
            "Nodes ready",
            "none",
            (f'sum(kube_node_status_condition{{{KSM},condition="Ready",status="true"}})', "ready"),
            (
                f'sum(kube_node_status_condition{{{KSM},condition="Ready",status!="true"}})',
                "not ready",
            ),
        ),
        _series(
            "Pods pending and restarts (15m)",
            "none",
            (f'sum(kube_pod_status_phase{{{app_ns},phase="Pending"}})', "pending"),
            (
                f"sum(increase(kube_pod_container_status_restarts_total{{{app_ns}}}[15m]))",
                "restarts",
            ),
        ),
        _series(
            "Autoscaler: replicas and maximum",
            "none",
            (
                f"{hpa}(kube_horizontalpodautoscaler_status_current_replicas{{{app_ns}}})",
                "{{horizontalpodautoscaler}} replicas",
            ),
            (
                f"{hpa}(kube_horizontalpodautoscaler_spec_max_replicas{{{app_ns}}})",
                "{{horizontalpodautoscaler}} maximum",
            ),
            width=24,
        ),
    ]


def _encode(board: gd.Dashboard) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return data


def panel_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    for panel in board.get("panels", []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield panel.get("title", ""), target["expr"]


def dashboard_provider(path: str = DASHBOARDS_PATH) -> dict[str, Any]:
    """Grafana's dashboard provisioning file: a file provider reading the dashboards at `path`
    into a folder `backbone` (Grafana, provisioning: dashboards)."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "backbone",
                "folder": "backbone",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "options": {"path": path},
            }
        ],
    }


def datasources(prometheus_url: str, alertmanager_url: str | None = None) -> dict[str, Any]:
    """Grafana's data source provisioning file: the Prometheus at `prometheus_url` (the default
    data source, so the dashboards' `datasource` variable picks it) and, given its URL, the
    Alertmanager it sends to (Grafana, provisioning: data sources; Alertmanager data source)."""
    sources: list[dict[str, Any]] = [
        {
            "name": "Prometheus",
            "type": "prometheus",
            "uid": PROMETHEUS_UID,
            "access": "proxy",
            "url": prometheus_url,
            "isDefault": True,
            "editable": False,
            "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
        }
    ]
    if alertmanager_url:
        sources.append(
            {
                "name": "Alertmanager",
                "type": "alertmanager",
                "uid": ALERTMANAGER_UID,
                "access": "proxy",
                "url": alertmanager_url,
                "editable": False,
                "jsonData": {"implementation": "prometheus", "handleGrafanaManagedAlerts": False},
            }
        )
    return {"apiVersion": 1, "datasources": sources}


def dashboards() -> dict[str, str]:
    """{file name: JSON text} of every dashboard of the kit."""
    return {
        "backbone-app.json": json.dumps(app_dashboard(), indent=2) + "\n",
        "backbone-alerts.json": json.dumps(alerts_dashboard(), indent=2) + "\n",
    }
