"""Grafana dashboards as code (grafana-foundation-sdk), and the Prometheus files any Grafana and
Prometheus next to them need: what `backbone dashboards STACK -o DIR` writes.

    DIR/dashboards/backbone-app.json       the app's golden signals (traffic, errors, latency,
                                            saturation) and its database view
    DIR/dashboards/backbone-alerts.json    the kit's alerts (Prometheus's ALERTS series) and the
                                            cluster signals the rules watch
    DIR/prometheus/backbone.rules.yml      the kit's rules at the stack's thresholds (the rule
                                            group namespace the workspace evaluates)
    DIR/prometheus/scrape.yml              the kit's scrape configuration for the stack
    DIR/alertmanager/alertmanager.yml      Alertmanager to the stack's alerts topic (AWS stacks)
    DIR/grafana/provisioning/dashboards/backbone.yaml
                                            a Grafana dashboard provider for DIR/dashboards

Every panel queries a data source chosen by the dashboard's `datasource` variable (type
prometheus): Amazon Managed Grafana with the workspace as data source, or a local Grafana with a
local Prometheus, alike. The metric names come from the app's exposition (app/shortener/
metrics.py) and the scrape job from infra/components/prometheus.py (APP_JOB, KSM_JOB): a test
scrapes the real app and fails on any name a panel uses that it does not export, and promtool
parses every panel's expression.

The dashboards themselves and the Grafana provisioning are defined once, in
infra/components/dashboards.py (the local stack provisions the same into its own Grafana); this
module only gathers a stack's files. `bundle(cfg)` returns them as {relative path: text};
`write(cfg, out)` writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from infra.components.dashboards import (
    APP_NAMESPACE,
    alerts_dashboard,
    app_dashboard,
    dashboard_provider,
    dashboards,
    panel_queries,
)
from infra.components.prometheus import (
    alertmanager_config,
    render_rules,
    scrape_config,
    thresholds,
)
from infra.components.workload import APP_NAME
from infra.config import StackConfig

__all__ = ["alerts_dashboard", "app_dashboard", "bundle", "panel_queries", "write"]


def bundle(cfg: StackConfig) -> dict[str, str]:
    """Every file `backbone dashboards` writes for a stack: {relative path: text}."""

    def dump(data: Any) -> str:
        return yaml.safe_dump(data, sort_keys=False, width=100)

    o = cfg.observability
    rules = render_rules(
        **thresholds(cfg.monitoring),
        labels={"stack": cfg.stack},
        cluster_namespace=APP_NAMESPACE if cfg.cluster.enabled and o.cluster_signals else None,
    )
    scrape = scrape_config(
        app_namespace=APP_NAMESPACE,
        app_name=APP_NAME,
        interval_seconds=o.scrape_interval_seconds,
        cluster_signals=cfg.cluster.enabled and o.cluster_signals,
    )
    files = {
        **{f"dashboards/{name}": text for name, text in dashboards().items()},
        "prometheus/backbone.rules.yml": dump(rules),
        "prometheus/scrape.yml": dump(scrape),
        "grafana/provisioning/dashboards/backbone.yaml": dump(dashboard_provider()),
    }
    if cfg.target == "aws" and cfg.region:
        topic = f"arn:aws:sns:{cfg.region}:<account>:<the stack's alertsTopicArn output>"
        am = alertmanager_config(topic_arn=topic, region=cfg.region, stack=cfg.stack)
        files["alertmanager/alertmanager.yml"] = dump(am)
    return files


def write(cfg: StackConfig, out: Path) -> list[Path]:
    written = []
    for rel, text in bundle(cfg).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
