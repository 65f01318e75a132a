"""Observability with real parts: the real app on a real PostgreSQL, its live exposition, and a real
Prometheus (Debian's build) running the kit's own scrape configuration and rules.

- The exposition is the source of truth: after one request of each kind, every metric a rule, a
  dashboard panel or a relabeling names (of the app's job) is in the app's /metrics.
- Debian's Prometheus has no Kubernetes discovery: each kubernetes_sd block of the dev plan's
  scrape configuration becomes a file_sd block whose targets carry the __meta_kubernetes_* labels
  a pod of the rendered Deployment would have (one target per container port, as the pod role
  makes them); every relabeling is kept as it is. The target is up with the job the rules select
  and BackboneAppAbsent does not fire.
- promtool check config / check rules over what the plan deploys, amtool check-config over the
  Alertmanager definition, promtool over every dashboard expression.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from backbone import dashboards
from infra.components.prometheus import APP_JOB, relabeled_metrics
from tests.app.conftest import TOKEN, LiveServer, PgCluster, app_env
from tests.realparts import free_port, require_tool, wait_until

pytestmark = pytest.mark.realpart
AUTH = {"authorization": f"Bearer {TOKEN}"}
# Series Prometheus makes itself (not the app's): `up` per target, `ALERTS` per alert.
GENERATED = {"up", "ALERTS"}
SCRAPE = "aws:amp/scraper:Scraper"
RULES = "aws:amp/ruleGroupNamespace:RuleGroupNamespace"


def tool(name: str) -> str:
    return require_tool(name, f"apt-get install prometheus prometheus-alertmanager ({name})")


@pytest.fixture(scope="module")
def app(prometheus_started: dict[str, Any]) -> Iterator[LiveServer]:
    """The real app on a real PostgreSQL, after one request of each kind. (Prometheus is started
    first, with no target yet, so that its start overlaps the app's.)"""
    cluster = PgCluster()
    server = LiveServer(app_env(cluster.new_database()))
    try:
        server.wait_up()
        made = httpx.post(
            f"{server.base}/api/links", json={"url": "https://example.org/o"}, headers=AUTH
        )
        assert made.status_code == 201, made.text
        code = made.json()["code"]
        assert httpx.get(f"{server.base}/{code}").status_code == 307  # redirect (cache miss)
        assert httpx.get(f"{server.base}/{code}").status_code == 307  # redirect (cache hit)
        assert httpx.get(f"{server.base}/api/links/{code}").status_code == 200
        assert httpx.get(f"{server.base}/nope-nope").status_code == 404
        assert httpx.post(f"{server.base}/api/links", json={"url": "x"}, headers=AUTH).is_error
        assert httpx.get(f"{server.base}/healthz").status_code == 200
        assert httpx.get(f"{server.base}/readyz").status_code == 200
        # the database failing: a write answers 503 (app_db_errors_total{operation}); then back
        cluster.stop()
        failed = httpx.post(
            f"{server.base}/api/links", json={"url": "https://example.org/p"}, headers=AUTH
        )
        assert failed.status_code == 503, failed.text
        cluster.start()
        _until("the database back", lambda: "app_db_up 1.0" in exposition(server))
        yield server
    finally:
        server.close()
        cluster.destroy()


def exposition(server: LiveServer) -> str:
    r = httpx.get(server.metrics, timeout=5)
    assert r.status_code == 200
    return r.text


def exposed_names(text: str) -> set[str]:
    """Every sample name in the Prometheus text (histograms' _bucket/_sum/_count included)."""
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}


def selected_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (every selector here has braces)."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr)) - GENERATED


def app_rules(plan: Any) -> dict[str, Any]:
    data = yaml.safe_load(plan.one(RULES).inputs["data"])
    assert isinstance(data, dict)
    return data


def test_every_metric_the_kit_names_is_in_the_live_exposition(app: LiveServer, plan_of) -> None:
    text = exposition(app)
    have = exposed_names(text)
    plan = plan_of("dev")
    wanted: dict[str, set[str]] = {}
    for group in app_rules(plan)["groups"]:
        for rule in group["rules"]:
            if f'job="{APP_JOB}"' in rule["expr"]:
                wanted[f"rule {rule['alert']}"] = selected_names(rule["expr"])
    for title, expr in dashboards.panel_queries(dashboards.app_dashboard()):
        wanted.setdefault(f"panel {title}", set()).update(selected_names(expr))
    scrape = yaml.safe_load(plan.one(SCRAPE).inputs["scrapeConfiguration"])
    app_job = [j for j in scrape["scrape_configs"] if j["job_name"] == APP_JOB]
    wanted["relabeling"] = relabeled_metrics({"scrape_configs": app_job})
    missing = {what: sorted(names - have) for what, names in wanted.items() if names - have}
    assert missing == {}, "named by the kit but not exported by the app"
    named = set().union(*wanted.values())
    # the check looked at what matters: the rules' and the panels' own series
    assert {"http_requests_total", "http_request_duration_seconds_bucket", "app_db_up"} <= named
    assert len(named) >= 12, named
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    # The figure the README and the cost use: series one pod exports (after one request of
    # each kind; each new route x method x status adds 17 latency series).
    print(f"\nseries per pod: {len(series)}")
    assert 100 < len(series) < 1000


# -- a real Prometheus with the kit's configuration -----------------------------------------------


def _meta(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def pod_targets(deployment: dict[str, Any], address: dict[str, str]) -> list[dict[str, Any]]:
    """What Kubernetes pod discovery gives for one pod of `deployment`: a target per declared
    container port, with the labels a pod of it carries. `address` maps port name to host:port."""
    meta = deployment["metadata"]
    template = deployment["spec"]["template"]
    base = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": f"{meta['name']}-6d9f7c8b5-x2x7q",
        "__meta_kubernetes_pod_node_name": "ip-10-20-1-17.ec2.internal",
        "__meta_kubernetes_pod_ip": "127.0.0.1",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_ready": "true",
    }
    for k, v in (template["metadata"].get("labels") or {}).items():
        base[f"__meta_kubernetes_pod_label_{_meta(k)}"] = v
        base[f"__meta_kubernetes_pod_labelpresent_{_meta(k)}"] = "true"
    for k, v in (template["metadata"].get("annotations") or {}).items():
        base[f"__meta_kubernetes_pod_annotation_{_meta(k)}"] = v
        base[f"__meta_kubernetes_pod_annotationpresent_{_meta(k)}"] = "true"
    out = []
    for container in template["spec"]["containers"]:
        for port in container.get("ports") or []:
            labels = {
                **base,
                "__meta_kubernetes_pod_container_name": container["name"],
                "__meta_kubernetes_pod_container_init": "false",
                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
            }
            host = address.get(port.get("name", ""), "127.0.0.1:9")
            out.append({"targets": [host], "labels": labels})
    return out


def swap_discovery(config: dict[str, Any], folder: Path, groups: dict[str, list[Any]]) -> dict:
    """Each kubernetes_sd_configs block becomes file_sd_configs over a file of `groups` for that
    job (empty when none); relabel_configs and metric_relabel_configs stay as they are."""
    swapped = copy.deepcopy(config)
    for job in swapped["scrape_configs"]:
        assert "kubernetes_sd_configs" in job, job["job_name"]
        del job["kubernetes_sd_configs"]
        path = folder / f"{job['job_name']}.targets.json"
        path.write_text(json.dumps(groups.get(job["job_name"], [])))
        job["file_sd_configs"] = [{"files": [str(path)], "refresh_interval": "1s"}]
    return swapped


def deployment_of(plan: Any) -> dict[str, Any]:
    dep = plan.one("kubernetes:apps/v1:Deployment", "app-deployment")
    data: dict[str, Any] = dep.inputs
    return data


def metrics_port_name(deployment: dict[str, Any]) -> list[str]:
    return [
        p.get("name", "")
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports") or []
    ]


@pytest.fixture(scope="module")
def prometheus_started(plan_of, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Prometheus with the kit's scrape configuration and rules, its discovery files empty: no
    target until `prometheus` writes the app's pod (after the app's outage, which must not be
    scraped: the rules would be pending)."""
    folder = tmp_path_factory.mktemp("prometheus")
    plan = plan_of("dev")
    kit = yaml.safe_load(plan.one(SCRAPE).inputs["scrapeConfiguration"])
    config = swap_discovery(kit, folder, {})
    # Half-seconds instead of the stack's minute: the same job, sooner.
    config["global"] = {
        "scrape_interval": "500ms",
        "scrape_timeout": "500ms",
        "evaluation_interval": "500ms",
    }
    (folder / "rules.yml").write_text(plan.one(RULES).inputs["data"])
    config["rule_files"] = [str(folder / "rules.yml")]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield {"url": f"http://127.0.0.1:{port}", "folder": folder, "plan": plan}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def prometheus(app: LiveServer, prometheus_started: dict[str, Any]) -> dict[str, Any]:
    """The running Prometheus, now discovering one pod of the rendered Deployment: the app."""
    folder, plan = prometheus_started["folder"], prometheus_started["plan"]
    deployment = deployment_of(plan)
    assert "metrics" in metrics_port_name(deployment), (
        "the Deployment declares no container port named metrics (/work/notes/obs-interface.md)"
    )
    pods = pod_targets(deployment, {"metrics": f"127.0.0.1:{app.metrics_port}",
                                    "http": f"127.0.0.1:{app.port}"})  # fmt: skip
    targets = folder / f"{APP_JOB}.targets.json"
    staged = targets.with_suffix(".tmp")
    staged.write_text(json.dumps(pods))
    staged.replace(targets)  # whole, as file discovery expects
    return {**prometheus_started, "pods": pods}


def _api(base: str, path: str, **params: str) -> Any:
    r = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=5)
    r.raise_for_status()
    return r.json()["data"]


def _until(what: str, probe: Any, timeout: float = 30.0) -> Any:
    return wait_until(what, probe, timeout, every=0.25, tolerate=(httpx.HTTPError,))


def test_prometheus_scrapes_the_app_with_the_kits_configuration(prometheus) -> None:
    base = prometheus["url"]

    def app_targets() -> list[dict[str, Any]]:
        active = _api(base, "targets")["activeTargets"]
        return [t for t in active if t["labels"].get("job") == APP_JOB and t["health"] == "up"]

    (target,) = _until("the app's target up", app_targets)
    # Only the metrics port survived the relabeling (the pod also declares its http port).
    assert len(prometheus["pods"]) >= 2
    dropped = _api(base, "targets")["droppedTargets"]
    assert any(
        t["discoveredLabels"]["__meta_kubernetes_pod_container_port_name"] != "metrics"
        for t in dropped
    )
    labels = target["labels"]
    containers = [
        c["name"]
        for c in deployment_of(prometheus["plan"])["spec"]["template"]["spec"]["containers"]
    ]
    assert labels["namespace"] == "backbone" and labels["container"] in containers
    assert labels["pod"].startswith("shortener-") and labels["node"].startswith("ip-10-20-")
    # The rules' selector finds the series the app exports through this job.
    result = _until(
        "app_db_up through the job",
        lambda: _api(base, "query", query=f'app_db_up{{job="{APP_JOB}"}}')["result"],
    )
    assert result[0]["value"][1] == "1"

    def absent_state() -> Any:
        rules = _api(base, "rules", type="alert")["groups"]
        by = {r["name"]: r for g in rules for r in g["rules"]}
        absent = by["BackboneAppAbsent"]
        # evaluated at least once since the target came up
        return absent if absent.get("lastEvaluation", "").startswith("2") else None

    # a few more evaluations (three) with the target up
    seen: set[str] = set()

    def evaluations() -> bool:
        seen.add(absent_state()["lastEvaluation"])
        return len(seen) > 3

    _until("a rule evaluation", absent_state)
    _until("three more rule evaluations", evaluations)
    rules = _api(base, "rules", type="alert")["groups"]
    states = {r["name"]: r["state"] for g in rules for r in g["rules"]}
    assert states["BackboneAppAbsent"] == "inactive", states
    assert states["BackboneAppTargetDown"] == "inactive" and states["BackboneAppDatabaseDown"] == (
        "inactive"
    )
    firing = [a for a in _api(base, "alerts")["alerts"] if a["labels"]["alertname"] != ""]
    assert not [a for a in firing if a["labels"]["alertname"].startswith("BackboneApp")], firing


def test_promtool_checks_the_swapped_scrape_configuration(prometheus) -> None:
    folder = prometheus["folder"]
    done = subprocess.run(
        [tool("promtool"), "check", "config", str(folder / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_promtool_and_amtool_check_what_the_workspace_gets(plan_of, stack, tmp_path) -> None:
    plan = plan_of(stack)
    (tmp_path / "rules.yml").write_text(plan.one(RULES).inputs["data"])
    checked = subprocess.run(
        [tool("promtool"), "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    definition = yaml.safe_load(
        plan.one("aws:amp/alertManagerDefinition:AlertManagerDefinition").inputs["definition"]
    )
    (tmp_path / "alertmanager.yml").write_text(definition["alertmanager_config"])
    am = subprocess.run(
        [tool("amtool"), "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert am.returncode == 0, am.stdout + am.stderr
    inner = yaml.safe_load(definition["alertmanager_config"])
    (receiver,) = inner["receivers"]
    topic = plan.one("aws:sns/topic:Topic")
    assert receiver["sns_configs"][0]["topic_arn"].endswith(f":{topic.id}") or receiver[
        "sns_configs"
    ][0]["topic_arn"].startswith("arn:aws:sns:us-east-1:")


def test_promtool_parses_every_dashboard_expression(tmp_path) -> None:
    exprs = [
        e
        for board in (dashboards.app_dashboard(), dashboards.alerts_dashboard())
        for _, e in dashboards.panel_queries(board)
    ]
    assert len(exprs) > 20
    rules = {
        "groups": [
            {
                "name": "dashboard-expressions",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "exprs.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(tmp_path / "exprs.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout
    # and a broken expression is refused (the check really parses)
    rules["groups"][0]["rules"][0]["expr"] = "sum(rate(http_requests_total[5m]"
    (tmp_path / "exprs.yml").write_text(yaml.safe_dump(rules))
    bad = subprocess.run(
        [tool("promtool"), "check", "rules", str(tmp_path / "exprs.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
