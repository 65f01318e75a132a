"""local: the whole shape on the user's own Docker engine: PostgreSQL, the app's replicas behind a
reverse proxy, Prometheus with the kit's alert rules sending to an Alertmanager with the kit's
routing, Grafana provisioned with the kit's dashboards; nothing on AWS, nothing off 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.realparts import require_tool

CONTAINER = "docker:index/container:Container"
HOW_PROXY = "install HAProxy (Debian: apt-get install haproxy; .ci/run does)"
HOW_PROMTOOL = "install promtool (Debian: apt-get install prometheus; .ci/run does)"
HOW_AMTOOL = "install amtool (Debian: apt-get install prometheus-alertmanager; .ci/run does)"


def uploads(plan, name: str) -> dict[str, str]:
    """The files the stack writes into a container: {path under /etc/backbone: content}."""
    container = plan.one(CONTAINER, name)
    return {
        u["file"].removeprefix("/etc/backbone/"): u["content"] for u in container.inputs["uploads"]
    }


def written(plan, name: str, folder: Path) -> Path:
    for file, content in uploads(plan, name).items():
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_text(content)
    return folder


def test_registers_no_aws_resource(plan_of):
    plan = plan_of("local")
    assert [r for r in plan if r.package == "aws"] == []
    assert plan.outputs["target"] == "docker"
    assert plan.outputs["url"] == "http://localhost:8000"
    assert plan.outputs["prometheusUrl"] == "http://localhost:9090"
    assert plan.outputs["alertmanagerUrl"] == "http://localhost:9093"
    assert plan.outputs["grafanaUrl"] == "http://localhost:3000"
    assert plan.outputs["appApiToken"] == "[secret]"
    assert plan.outputs["grafanaAdminPassword"] == "[secret]"


def test_needs_no_region(backbone_cli):
    result = backbone_cli("plan", "local")
    assert result.returncode == 0, result.stderr
    assert "backbone stack local" in result.stdout


def test_postgres_is_pinned_persistent_private_and_waited_for(plan_of):
    plan = plan_of("local")
    pg = plan.one(CONTAINER, "local-postgres").inputs
    image = plan.one("docker:index/remoteImage:RemoteImage", "local-postgres-image")
    assert image.inputs["name"] == "postgres:17-bookworm" and image.inputs["keepLocally"] is True
    assert pg["image"] == image.outputs["imageId"]
    assert pg["volumes"] == [
        {"containerPath": "/var/lib/postgresql/data", "volumeName": "backbone-local-pgdata"}
    ]
    assert "ports" not in pg  # reachable only on the stack's network
    assert pg["networksAdvanced"] == [{"aliases": ["postgres"], "name": "backbone-local"}]
    assert pg["healthcheck"]["tests"] == ["CMD-SHELL", "pg_isready -U shortener -d shortener"]
    assert pg["wait"] is True
    # the password is generated and never in clear
    assert pg["envs"][0] == "[secret]" and not any("PASSWORD=" in e for e in pg["envs"])


def test_app_replicas_run_hardened_unpublished_one_after_the_other(plan_of):
    plan = plan_of("local")
    image = plan.one("docker:index/image:Image")
    name, tag = image.inputs["imageName"].rsplit(":", 1)
    assert name == "backbone-local-shortener" and re.fullmatch(r"[0-9a-f]{16}-local", tag)
    assert image.inputs["skipPush"] is True
    assert image.inputs["build"]["dockerfile"].endswith("app/Dockerfile")
    apps = [plan.one(CONTAINER, f"local-app-{n}") for n in (1, 2)]
    assert not [r for r in plan.of_type(CONTAINER) if r.name == "local-app-3"]  # replicas: 2
    before = plan.one(CONTAINER, "local-postgres")
    for n, app in enumerate(apps, start=1):
        i = app.inputs
        assert i["name"] == f"backbone-local-app-{n}" and i["image"] == image.inputs["imageName"]
        assert "ports" not in i  # reached through the proxy only
        assert i["user"] == "10001:10001" and i["readOnly"] is True
        assert i["capabilities"] == {"drops": ["ALL"]}
        assert i["securityOpts"] == ["no-new-privileges:true"]
        assert "/tmp" in i["tmpfs"] and i["restart"] == "unless-stopped"
        assert i["wait"] is True  # healthy (the image's HEALTHCHECK) before the next starts
        # DATABASE_URL, API_TOKEN secret; only the first replica migrates
        migrate = "true" if n == 1 else "false"
        assert i["envs"] == [
            "[secret]", "[secret]", "PORT=8000", "METRICS_PORT=9464", f"MIGRATE_ON_STARTUP={migrate}",
        ]  # fmt: skip
        assert before.urn in app.dependencies
        before = app


def test_every_port_is_on_loopback_only(plan_of):
    plan = plan_of("local")
    published = {
        r.name: [(p["ip"], p["external"], p["internal"]) for p in r.inputs["ports"]]
        for r in plan.of_type(CONTAINER)
        if r.inputs.get("ports")
    }
    assert published == {
        "local-proxy": [("127.0.0.1", 8000, 8080)],
        "local-prometheus": [("127.0.0.1", 9090, 9090)],
        "local-alertmanager": [("127.0.0.1", 9093, 9093)],
        "local-grafana": [("127.0.0.1", 3000, 3000)],
    }


def test_proxy_balances_the_replicas_with_health_checks(plan_of):
    plan = plan_of("local")
    proxy = plan.one(CONTAINER, "local-proxy")
    for n in (1, 2):
        assert plan.one(CONTAINER, f"local-app-{n}").urn in proxy.dependencies
    i = proxy.inputs
    assert i["readOnly"] is True and i["capabilities"] == {"drops": ["ALL"]}
    assert i["command"] == ["haproxy", "-W", "-db", "-f", "/etc/backbone/haproxy.cfg"]
    config = uploads(plan, "local-proxy")["haproxy.cfg"]
    lines = [line.split() for line in config.splitlines()]
    assert ["bind", ":8080"] in lines
    assert ["http-check", "send", "meth", "GET", "uri", "/readyz"] in lines
    assert ["http-check", "expect", "status", "200"] in lines
    default_server = next(words for words in lines if words[:1] == ["default-server"])
    assert default_server[1:7] == ["check", "inter", "2s", "fall", "2", "rise"]
    servers = [words[1:] for words in lines if words[:1] == ["server"]]
    assert servers == [[f"backbone-local-app-{n}", f"backbone-local-app-{n}:8000"] for n in (1, 2)]


def test_prometheus_scrapes_every_replica_with_the_kits_rules(plan_of):
    from infra.components.prometheus import APP_JOB as JOB
    from infra.components.prometheus import render_rules, thresholds
    from infra.config import MonitoringConfig

    plan = plan_of("local")
    files = uploads(plan, "local-prometheus")
    config = yaml.safe_load(files["prometheus.yml"])
    assert config["rule_files"] == ["rules.yml"]
    (app,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    assert app["static_configs"] == [
        {"targets": ["backbone-local-app-1:9464", "backbone-local-app-2:9464"]}
    ]
    rules = yaml.safe_load(files["rules.yml"])
    expected = render_rules(**thresholds(MonitoringConfig()), job=JOB, group_by=("job",))
    assert rules == expected
    # the same thresholds as the cloud's alarms (monitoring defaults: 5% errors), on this job
    error = next(r for g in rules["groups"] for r in g["rules"] if "5.." in r["expr"])
    assert f'job="{JOB}"' in error["expr"] and error["expr"].endswith("> 0.05")
    i = plan.one(CONTAINER, "local-prometheus").inputs
    assert "--config.file=/etc/backbone/prometheus.yml" in i["command"]
    assert i["readOnly"] is True and i["capabilities"] == {"drops": ["ALL"]}
    assert {v["containerPath"] for v in i["volumes"]} == {"/etc/backbone", "/prometheus"}
    # alerts go to the local Alertmanager, by its name on the stack's network
    am = plan.one(CONTAINER, "local-alertmanager")
    assert config["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": [f"{am.inputs['name']}:9093"]}]}]
    }
    assert am.urn in plan.one(CONTAINER, "local-prometheus").dependencies


def test_alertmanager_routes_like_the_workspace_to_a_receiver_that_sends_nowhere(plan_of):
    from infra.components.prometheus import alertmanager_config

    plan = plan_of("local")
    i = plan.one(CONTAINER, "local-alertmanager").inputs
    image = plan.one("docker:index/remoteImage:RemoteImage", "local-alertmanager-image")
    assert (
        image.inputs["name"] == "prom/alertmanager:v0.27.0"
        and i["image"] == image.outputs["imageId"]
    )
    assert i["readOnly"] is True and i["capabilities"] == {"drops": ["ALL"]}
    assert i["securityOpts"] == ["no-new-privileges:true"]
    assert "--config.file=/etc/backbone/alertmanager.yml" in i["command"]
    assert "--cluster.listen-address=" in i["command"]  # one instance, no gossip port
    assert {v["containerPath"] for v in i["volumes"]} == {"/etc/backbone", "/alertmanager"}
    local = yaml.safe_load(uploads(plan, "local-alertmanager")["alertmanager.yml"])
    aws = alertmanager_config(topic_arn="arn:aws:sns:us-east-1:1:t", region="us-east-1", stack="x")
    # the same grouping and timing as the workspace's Alertmanager; only the receiver differs
    assert {k: v for k, v in local["route"].items() if k != "receiver"} == {
        k: v for k, v in aws["route"].items() if k != "receiver"
    }
    (receiver,) = local["receivers"]
    assert receiver == {"name": local["route"]["receiver"]}  # no integration: sent nowhere


# Grafana's documented provisioning fields (grafana.com/docs/grafana/v11.6/administration/
# provisioning, "Data sources" and "Dashboards"): Grafana is not packaged here, so the files are
# checked against these, and each dashboard's queries by promtool (tests/test_observability_scrape).
GRAFANA_DATASOURCE_FILE = {"apiVersion", "datasources", "deleteDatasources", "prune"}
GRAFANA_DATASOURCE = {
    "name", "type", "access", "orgId", "uid", "url", "user", "database", "basicAuth",
    "basicAuthUser", "withCredentials", "isDefault", "jsonData", "secureJsonData", "version",
    "editable",
}  # fmt: skip
GRAFANA_PROVIDER_FILE = {"apiVersion", "providers"}
GRAFANA_PROVIDER = {
    "name", "orgId", "folder", "folderUid", "type", "disableDeletion", "updateIntervalSeconds",
    "allowUiUpdates", "options",
}  # fmt: skip
GRAFANA_PROVIDER_OPTIONS = {"path", "foldersFromFilesStructure"}


def test_grafana_is_provisioned_with_the_local_prometheus_and_the_kits_dashboards(plan_of):
    from infra.components.dashboards import dashboards

    plan = plan_of("local")
    grafana = plan.one(CONTAINER, "local-grafana")
    i = grafana.inputs
    image = plan.one("docker:index/remoteImage:RemoteImage", "local-grafana-image")
    assert (
        image.inputs["name"] == "grafana/grafana:11.6.0" and i["image"] == image.outputs["imageId"]
    )
    assert i["readOnly"] is True and i["capabilities"] == {"drops": ["ALL"]}
    assert {v["containerPath"] for v in i["volumes"]} == {"/etc/backbone", "/var/lib/grafana"}
    env = dict(e.split("=", 1) for e in i["envs"] if e != "[secret]")
    assert env["GF_PATHS_PROVISIONING"] == "/etc/backbone/provisioning"
    assert env["GF_SERVER_HTTP_PORT"] == "3000"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # the admin password is generated and secret
    assert i["envs"][0] == "[secret]" and not any("ADMIN_PASSWORD=" in e for e in i["envs"])
    files = uploads(plan, "local-grafana")

    ds_file = yaml.safe_load(files["provisioning/datasources/backbone.yaml"])
    assert set(ds_file) <= GRAFANA_DATASOURCE_FILE and ds_file["apiVersion"] == 1
    for source in ds_file["datasources"]:
        assert set(source) <= GRAFANA_DATASOURCE, set(source) - GRAFANA_DATASOURCE
        assert source["access"] == "proxy"  # Grafana's server reaches it on the stack's network
    by_type = {s["type"]: s for s in ds_file["datasources"]}
    assert set(by_type) == {"prometheus", "alertmanager"}
    prom = plan.one(CONTAINER, "local-prometheus").inputs
    assert by_type["prometheus"]["url"] == f"http://{prom['name']}:9090"
    assert by_type["prometheus"]["isDefault"] is True
    am = plan.one(CONTAINER, "local-alertmanager").inputs
    assert by_type["alertmanager"]["url"] == f"http://{am['name']}:9093"
    assert by_type["alertmanager"]["jsonData"]["implementation"] == "prometheus"

    providers = yaml.safe_load(files["provisioning/dashboards/backbone.yaml"])
    assert set(providers) <= GRAFANA_PROVIDER_FILE and providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert set(provider) <= GRAFANA_PROVIDER and provider["type"] == "file"
    assert set(provider["options"]) <= GRAFANA_PROVIDER_OPTIONS
    # the provider reads the folder the dashboards are uploaded to: the kit's, unchanged
    folder = provider["options"]["path"].removeprefix("/etc/backbone/")
    boards = {f.rsplit("/", 1)[1]: t for f, t in files.items() if f.startswith(f"{folder}/")}
    assert boards == dashboards() and len(boards) == 2
    for text in boards.values():
        board = json.loads(text)
        (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == by_type["prometheus"]["type"]  # picks the provisioned one


@pytest.mark.realpart
def test_the_proxy_config_passes_haproxy_check(plan_of, tmp_path):
    haproxy = require_tool("haproxy", HOW_PROXY)
    folder = written(plan_of("local"), "local-proxy", tmp_path)
    done = subprocess.run(
        [haproxy, "-c", "-f", str(folder / "haproxy.cfg")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr
    # the check is real: a broken health check line is refused
    bad = folder / "bad.cfg"
    bad.write_text((folder / "haproxy.cfg").read_text().replace("expect status", "expect sttus"))
    assert subprocess.run([haproxy, "-c", "-f", str(bad)], capture_output=True).returncode != 0


@pytest.mark.realpart
def test_prometheus_config_and_rules_pass_promtool(plan_of, tmp_path):
    promtool = require_tool("promtool", HOW_PROMTOOL)
    folder = written(plan_of("local"), "local-prometheus", tmp_path)
    config = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=folder, capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    rules = subprocess.run(
        [promtool, "check", "rules", "rules.yml"], cwd=folder, capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # the alerting block is checked too: a misspelt field in it is refused
    bad = (folder / "prometheus.yml").read_text().replace("alertmanagers:", "alertmanager:")
    (folder / "bad.yml").write_text(bad)
    refused = subprocess.run(
        [promtool, "check", "config", "bad.yml"], cwd=folder, capture_output=True
    )
    assert refused.returncode != 0


@pytest.mark.realpart
def test_promtool_parses_every_query_of_the_provisioned_dashboards(plan_of, tmp_path):
    from infra.components.dashboards import panel_queries

    promtool = require_tool("promtool", HOW_PROMTOOL)
    files = uploads(plan_of("local"), "local-grafana")
    boards = [json.loads(t) for f, t in files.items() if f.startswith("dashboards/")]
    exprs = [expr for board in boards for _, expr in panel_queries(board)]
    assert len(boards) == 2 and len(exprs) > 20
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "exprs.yml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", "exprs.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


@pytest.mark.realpart
def test_alertmanager_config_passes_amtool(plan_of, tmp_path):
    amtool = require_tool("amtool", HOW_AMTOOL)
    folder = written(plan_of("local"), "local-alertmanager", tmp_path)
    done = subprocess.run(
        [amtool, "check-config", str(folder / "alertmanager.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Found:" in done.stdout and "1 receivers" in done.stdout
    # the check is real: a route to a receiver that does not exist is refused
    bad = folder / "bad.yml"
    bad.write_text(
        (folder / "alertmanager.yml").read_text().replace("receiver: local", "receiver: x")
    )
    assert subprocess.run([amtool, "check-config", str(bad)], capture_output=True).returncode != 0


def test_replicas_setting(backbone_cli, tmp_path):
    file = tmp_path / "Pulumi.local.yaml"
    config = {"backbone:target": "docker", "backbone:local": {"replicas": 3}}
    file.write_text(json.dumps({"config": config}))
    result = backbone_cli("plan", str(file), "-f", "json")
    assert result.returncode == 0, result.stderr
    resources = json.loads(result.stdout)["resources"]
    names = sorted(r["name"] for r in resources if re.fullmatch(r"local-app-[0-9]", r["name"]))
    assert names == ["local-app-1", "local-app-2", "local-app-3"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"backbone:cluster": {"enabled": True}},
            "backbone:cluster.enabled: true has no meaning when target is docker",
        ),
        (
            {"backbone:local": {"postgresImage": "postgres:latest"}},
            "backbone:local.postgresImage: 'postgres:latest' is not pinned",
        ),
        ({"backbone:local": {"appPort": 80}}, "backbone:local.appPort: 80 is not allowed"),
        ({"backbone:local": {"replicas": 0}}, "backbone:local.replicas: 0 is not allowed"),
        (
            {"backbone:local": {"proxyImage": "haproxy"}},
            "backbone:local.proxyImage: 'haproxy' is not pinned",
        ),
        (
            {"backbone:local": {"prometheusPort": 8000}},
            "backbone:local.prometheusPort: 8000 is also appPort",
        ),
        (
            {"backbone:local": {"grafanaPort": 9093}},
            "backbone:local.grafanaPort: 9093 is also alertmanagerPort",
        ),
        (
            {"backbone:local": {"grafanaImage": "grafana/grafana:latest"}},
            "backbone:local.grafanaImage: 'grafana/grafana:latest' is not pinned",
        ),
        (
            {"backbone:observability": {"managedGrafana": True}},
            "backbone:observability.managedGrafana: true has no meaning when target is docker",
        ),
        (
            {"backbone:local": {"alertmanagerImage": "prom/alertmanager"}},
            "backbone:local.alertmanagerImage: 'prom/alertmanager' is not pinned",
        ),
    ],
)
def test_local_settings_are_checked(backbone_cli, tmp_path, settings, expected):
    config = {"backbone:target": "docker", **settings}
    bad = tmp_path / "Pulumi.local.yaml"
    bad.write_text(json.dumps({"config": config}))
    result = backbone_cli("plan", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr


def test_base_image_build_argument(backbone_cli, tmp_path):
    file = tmp_path / "Pulumi.local.yaml"
    file.write_text(
        json.dumps(
            {
                "config": {
                    "backbone:target": "docker",
                    "backbone:local": {"baseImage": "backbone/python-base:3.11"},
                }
            }
        )
    )
    result = backbone_cli("plan", str(file), "-f", "json")
    assert result.returncode == 0, result.stderr
    image = next(
        r for r in json.loads(result.stdout)["resources"] if r["type"] == "docker:index/image:Image"
    )
    assert image["inputs"]["build"]["args"] == {"BASE_IMAGE": "backbone/python-base:3.11"}


def test_docker_inputs_are_wire_names(plan_of):
    from tests.test_wire_format import sdk_input_names

    for r in plan_of("local").managed():
        assert set(r.inputs) <= sdk_input_names(r.type), r.type
