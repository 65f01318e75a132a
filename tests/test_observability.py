"""The observability component as planned (dev, prod): the workspace, the collector with the kit's
scrape configuration and its cluster access, the rules the workspace evaluates, the Alertmanager
definition to the alerts topic (and the policies that let it publish), the log groups made before
the add-on that writes them, the error-line filter; who hears alerts (a production stack with no
subscriber is refused, others warned); `backbone dashboards`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from backbone.mocks import MAKERS
from backbone.synth import load_config, resolve
from infra.components.prometheus import APP_JOB, KSM_KEPT, render_rules, thresholds
from tests.stack_files import ALERT_URL, dev_settings_plan, prod_settings_plan

REPO = Path(__file__).resolve().parent.parent
OBS = "backbone:observability:Observability"


@pytest.fixture(params=["dev", "prod"])
def plan(request, plan_of):
    return plan_of(request.param)


def mocked(plan, resource):
    urn = f"{plan.project}::{plan.stack}::{resource.type}::{resource.name}"
    return MAKERS[resource.type](resource.name, urn, resource.inputs, "us-east-1")[1]


def children(plan, type_token):
    parent = plan.one(OBS).urn
    return [r for r in plan.of_type(type_token) if r.parent == parent]


def test_the_collector_scrapes_the_app_into_the_workspace(plan):
    cfg = load_config(resolve(plan.stack, REPO))
    ws = plan.one("aws:amp/workspace:Workspace")
    scraper = plan.one("aws:amp/scraper:Scraper")
    cluster = plan.one("aws:eks/cluster:Cluster")
    assert scraper.inputs["destination"]["amp"]["workspaceArn"] == mocked(plan, ws)["arn"]
    eks = scraper.inputs["source"]["eks"]
    made = mocked(plan, cluster)
    assert eks["clusterArn"] == made["arn"]
    assert eks["subnetIds"] == plan.outputs["privateSubnetIds"]
    # the cluster security group: it admits its members on every port (pods 9464, API 443)
    assert eks["securityGroupIds"] == [made["vpcConfig"]["clusterSecurityGroupId"]]
    config = yaml.safe_load(scraper.inputs["scrapeConfiguration"])
    assert config["global"]["scrape_interval"] == f"{cfg.observability.scrape_interval_seconds}s"
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {APP_JOB, "kube-state-metrics"}
    app = jobs[APP_JOB]
    assert app["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["backbone"]}}]
    keeps = {
        r["source_labels"][0]: r["regex"] for r in app["relabel_configs"] if r["action"] == "keep"
    }
    # what the rendered Deployment's pods carry (obs-interface.md)
    dep = plan.one("kubernetes:apps/v1:Deployment", "app-deployment")
    labels = dep.inputs["spec"]["template"]["metadata"]["labels"]
    assert (
        keeps["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
        == labels["app.kubernetes.io/name"]
    )
    assert (
        keeps["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
        == labels["app.kubernetes.io/component"]
    )
    ports = [p for c in dep.inputs["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
    (metrics,) = [
        p for p in ports if p.get("name") == keeps["__meta_kubernetes_pod_container_port_name"]
    ]
    assert metrics["containerPort"] == 9464
    ksm = jobs["kube-state-metrics"]
    assert ksm["honor_labels"] is True
    assert set(ksm["metric_relabel_configs"][0]["regex"].split("|")) == set(KSM_KEPT)
    (addon,) = [
        a
        for a in children(plan, "aws:eks/addon:Addon")
        if a.inputs["addonName"] == "kube-state-metrics"
    ]
    assert addon.urn in scraper.dependencies


def test_the_collector_gets_the_cluster_access_aws_documents(plan):
    scraper = plan.one("aws:amp/scraper:Scraper")
    role_arn = mocked(plan, scraper)["roleArn"]
    assert "/aws-service-role/scraper.aps.amazonaws.com/" in role_arn
    (entry,) = children(plan, "aws:eks/accessEntry:AccessEntry")
    name = role_arn.rsplit("/", 1)[1]
    assert entry.inputs["principalArn"] == f"arn:aws:iam::123456789012:role/{name}"
    assert entry.inputs["userName"] == "aps-collector-user"
    assert entry.inputs["type"] == "STANDARD"
    role = plan.one(
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "observability-collector-role"
    )
    rules = role.inputs["rules"]
    resources = {r for rule in rules for r in rule.get("resources", [])}
    assert {"pods", "endpoints", "services", "nodes"} <= resources
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in rules)
    assert {"nonResourceURLs": ["/metrics"], "verbs": ["get"]} in rules
    binding = plan.one(
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
        "observability-collector-binding",
    )
    assert binding.inputs["roleRef"]["name"] == role.inputs["metadata"]["name"]
    assert binding.inputs["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "aps-collector-user"}
    ]
    assert binding.provider == plan.one("pulumi:providers:kubernetes").urn


def test_the_workspace_evaluates_the_kits_rules_at_the_stacks_thresholds(plan):
    cfg = load_config(resolve(plan.stack, REPO))
    group = plan.one("aws:cloudwatch/logMetricFilter:LogMetricFilter").inputs["logGroupName"]
    (ns,) = children(plan, "aws:amp/ruleGroupNamespace:RuleGroupNamespace")
    assert ns.inputs["workspaceId"] == plan.one("aws:amp/workspace:Workspace").id
    assert yaml.safe_load(ns.inputs["data"]) == render_rules(
        **thresholds(cfg.monitoring),
        labels={"stack": plan.stack},
        log_group=group,
        cluster_namespace="backbone",
    )
    assert group.startswith("/aws/containerinsights/backbone-") and group.endswith("/application")


def test_alertmanager_publishes_to_the_topic_and_the_policies_admit_it(plan):
    topic = plan.one("aws:sns/topic:Topic")
    topic_arn = mocked(plan, topic)["arn"]
    ws_arn = mocked(plan, plan.one("aws:amp/workspace:Workspace"))["arn"]
    am = plan.one("aws:amp/alertManagerDefinition:AlertManagerDefinition")
    inner = yaml.safe_load(yaml.safe_load(am.inputs["definition"])["alertmanager_config"])
    (receiver,) = inner["receivers"]
    assert inner["route"]["receiver"] == receiver["name"]
    sns = receiver["sns_configs"][0]
    assert sns["topic_arn"] == topic_arn and sns["sigv4"] == {"region": "us-east-1"}
    (policy,) = plan.of_type("aws:sns/topicPolicy:TopicPolicy")
    assert policy.inputs["arn"] == topic_arn
    assert policy.urn in am.dependencies
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    aps = statements["PrometheusAlertmanagerPublishes"]
    assert aps["Principal"] == {"Service": "aps.amazonaws.com"}
    assert set(aps["Action"]) == {"sns:Publish", "sns:GetTopicAttributes"}
    assert aps["Condition"]["ArnEquals"] == {"aws:SourceArn": ws_arn}
    assert aps["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    # replacing the default policy must not lock CloudWatch alarms out
    assert statements["CloudWatchAlarmsPublish"]["Principal"] == {
        "Service": "cloudwatch.amazonaws.com"
    }
    (key,) = [k for k in plan.of_type("aws:kms/key:Key") if k.name == "monitoring-alerts-key"]
    key_statements = json.loads(key.inputs["policy"])["Statement"]
    (aps_key,) = [s for s in key_statements if s["Principal"] == {"Service": "aps.amazonaws.com"}]
    assert set(aps_key["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


def test_container_logs_go_to_groups_made_first_with_retention(plan):
    cfg = load_config(resolve(plan.stack, REPO))
    groups = children(plan, "aws:cloudwatch/logGroup:LogGroup")
    names = sorted(g.inputs["name"].rsplit("/", 1)[1] for g in groups)
    assert names == ["application", "dataplane", "host", "performance"]
    assert {g.inputs["retentionInDays"] for g in groups} == {cfg.observability.log_retention_days}
    cluster_name = plan.outputs["clusterName"]
    assert all(
        g.inputs["name"].startswith(f"/aws/containerinsights/{cluster_name}/") for g in groups
    )
    (addon,) = [
        a
        for a in children(plan, "aws:eks/addon:Addon")
        if a.inputs["addonName"] == "amazon-cloudwatch-observability"
    ]
    assert {g.urn for g in groups} <= set(addon.dependencies)
    assert json.loads(addon.inputs["configurationValues"])["containerLogs"] == {"enabled": True}
    role = next(
        r for r in children(plan, "aws:iam/role:Role") if r.name == "observability-agent-role"
    )
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert any(
        v == "system:serviceaccount:amazon-cloudwatch:cloudwatch-agent"
        for v in trust["Condition"]["StringEquals"].values()
    )
    assert addon.inputs["serviceAccountRoleArn"] == mocked(plan, role)["arn"]
    (f,) = plan.of_type("aws:cloudwatch/logMetricFilter:LogMetricFilter")
    assert f.inputs["logGroupName"].endswith("/application")
    assert '$.kubernetes.namespace_name = "backbone"' in f.inputs["pattern"]
    assert '$.log_processed.level = "error"' in f.inputs["pattern"]
    # the alarm on it names the log group and the Logs Insights query
    (alarm,) = [
        a
        for a in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.name == "monitoring-app-error-logs"
    ]
    assert alarm.inputs["metricName"] == f.inputs["metricTransformation"]["name"]
    assert f.inputs["logGroupName"] in alarm.inputs["alarmDescription"]
    assert "Logs Insights: fields @timestamp" in alarm.inputs["alarmDescription"]


def test_free_tier_and_local_have_no_observability(plan_of):
    for stack in ("free-tier", "local"):
        plan = plan_of(stack)
        assert not plan.of_type(OBS)
        assert not [r for r in plan.resources if r.type.startswith("aws:amp/")]


# -- who hears alerts ----------------------------------------------------------------------------


def _prod_copy(tmp_path, **monitoring):
    data = yaml.safe_load((REPO / "stacks" / "Pulumi.prod.yaml").read_text())
    section = data["config"]["backbone:monitoring"]
    for key, value in monitoring.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    path = tmp_path / "Pulumi.shadow.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_production_stack_with_no_subscriber_is_refused(backbone_cli, tmp_path):
    path = _prod_copy(tmp_path, alertsRoutedElsewhere=None)
    result = backbone_cli("plan", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "backbone:monitoring.alertEmail: missing: a production stack's alerts topic"
        in result.stderr
    )
    assert "alertHttpsUrl" in result.stderr and "alertsRoutedElsewhere" in result.stderr


def test_a_subscriber_satisfies_production_and_the_https_url_stays_secret():
    # prod with monitoring.alertHttpsUrl set and alertsRoutedElsewhere removed
    url = ALERT_URL
    plan = prod_settings_plan()
    (sub,) = plan.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sub.inputs["protocol"] == "https"
    assert sub.inputs["endpoint"] == "[secret]"
    assert url not in json.dumps([r.inputs for r in plan.resources])


def test_backbone_plan_says_where_alerts_go(backbone_cli):
    dev = backbone_cli("plan", "dev")
    assert dev.returncode == 0, dev.stderr
    assert "warning: alerts: the alerts topic has no subscriber" in dev.stdout + dev.stderr
    prod = backbone_cli("plan", "prod")
    assert "warning: alerts: routed outside this program: NOBODY YET" in prod.stdout + prod.stderr


# -- backbone dashboards ---------------------------------------------------------------------------


def test_backbone_dashboards_writes_the_files(backbone_cli, tmp_path):
    out = tmp_path / "obs"
    result = backbone_cli("dashboards", "dev", "-o", str(out))
    assert result.returncode == 0, result.stderr
    board = json.loads((out / "dashboards" / "backbone-app.json").read_text())
    assert board["uid"] == "backbone-app"
    assert board["templating"]["list"][0] == {
        **board["templating"]["list"][0],
        "type": "datasource",
        "query": "prometheus",
    }
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets") or []]
    assert exprs and all(f'job="{APP_JOB}"' in e for e in exprs)
    titles = " ".join(p["title"] for p in board["panels"])
    for signal in ("Traffic", "Errors", "Latency", "Saturation"):
        assert signal in titles
    cfg = load_config(resolve("dev", REPO))
    rules = yaml.safe_load((out / "prometheus" / "backbone.rules.yml").read_text())
    assert rules == render_rules(
        **thresholds(cfg.monitoring), labels={"stack": "dev"}, cluster_namespace="backbone"
    )
    assert (out / "alertmanager" / "alertmanager.yml").exists()
    assert (out / "grafana" / "provisioning" / "dashboards" / "backbone.yaml").exists()


def test_backbone_dashboards_bad_input(backbone_cli, tmp_path):
    result = backbone_cli("dashboards", "no-such-stack", "-o", str(tmp_path))
    assert result.returncode == 2 and "no stack named 'no-such-stack'" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = backbone_cli("dashboards", "dev", "-o", str(blocker))
    assert result.returncode == 2 and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"backbone:target": "docker", "backbone:observability": '{"enabled": true}'},
            "backbone:observability.enabled: true has no meaning when target is docker",
        ),
        (
            {"aws:region": "us-east-1", "backbone:observability": '{"enabled": true}'},
            "backbone:observability.enabled: true needs backbone:cluster.enabled: true",
        ),
        (
            {
                "aws:region": "us-east-1",
                "backbone:observability": '{"enabled": true, "logRetentionDays": 10}',
            },
            "backbone:observability.logRetentionDays: 10 is not a CloudWatch retention period",
        ),
    ],
)
def test_observability_settings_that_cannot_work_are_refused(settings, message):
    from infra.config import ConfigError, parse

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse(settings, source="Pulumi.x.yaml", stack="x")


# -- upgrades -------------------------------------------------------------------------------------


def test_the_observability_addons_follow_a_cluster_version_bump_after_the_nodes(plan_of):
    bumped = dev_settings_plan()  # cluster.version 1.36, upgradeFrom 1.35
    for plan, version in ((plan_of("dev"), "1.35"), (bumped, "1.36")):
        assert plan.one("aws:eks/cluster:Cluster").inputs["version"] == version
        nodes = plan.one("aws:eks/nodeGroup:NodeGroup")
        addons = {a.inputs["addonName"]: a for a in children(plan, "aws:eks/addon:Addon")}
        assert set(addons) == {"kube-state-metrics", "amazon-cloudwatch-observability"}
        for name, addon in addons.items():
            # the version EKS gives it for that Kubernetes version, as the cluster's own add-ons
            assert addon.inputs["addonVersion"] == f"v{version}.0-offline-eksbuild.1", name
            assert nodes.urn in addon.dependencies, name
