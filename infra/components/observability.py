"""Observability on AWS for a stack with a cluster: the app's metrics collected and the kit's rules
evaluated (Amazon Managed Service for Prometheus), alerts that reach the alerts topic
(Alertmanager in the workspace), and the containers' logs in CloudWatch Logs.

- A workspace; the AWS managed collector (`aws.amp.Scraper`: agentless, ENIs in the cluster's
  private subnets with the cluster security group) scraping with the kit's own configuration
  (infra/components/prometheus.py `scrape_config`). The collector's service-linked role gets into
  the cluster as AWS documents it: an access entry for the role (its ARN without the
  `aws-service-role/scraper.aps.amazonaws.com/` path) with user name `aps-collector-user`, and a
  ClusterRole and ClusterRoleBinding for that user (read pods, endpoints, services, nodes).
- kube-state-metrics as an EKS community add-on (cluster signals); the collector keeps only the
  series the rules read. Both add-ons here, like the cluster's own, run at the version EKS gives
  them for the cluster's Kubernetes version (`aws.eks.get_addon_version`, looked up at deploy
  time), after the node group: a `cluster.version` bump moves them after the nodes.
- The kit's rules as a rule group namespace (the same `render_rules` the ConfigMap and
  `backbone dashboards` use; one APP_JOB for the scrape and the rules); an Alertmanager
  definition whose only receiver is the alerts topic (SNS, SigV4). The topic's policy
  (Monitoring's `publish_policy`, given this workspace) admits aps.amazonaws.com from this
  workspace, and the topic's KMS key admits the service (Monitoring adds it when given
  `publishers`).
- Container logs: the CloudWatch Observability EKS add-on (its agent and Fluent Bit), with IRSA
  for its `amazon-cloudwatch/cloudwatch-agent` service account, after the program made its log
  groups (`/aws/containerinsights/<cluster>/{application,dataplane,host,performance}`) with the
  configured retention. A metric filter counts the app's error-level JSON lines.
- With `managedGrafana`: an Amazon Managed Grafana workspace (sign-in through AWS IAM Identity
  Center, which must be enabled in the account; AWS_SSO), whose own role (customer managed, only
  grafana.amazonaws.com from this account) may query this stack's Prometheus workspace and read
  CloudWatch metrics and this cluster's log groups: its data sources PROMETHEUS and CLOUDWATCH.
  The dashboards `backbone dashboards` writes are imported into it (README).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import yaml

from infra.components import iam, project_stack
from infra.components.cluster import Cluster, irsa_trust
from infra.components.prometheus import (
    alertmanager_config,
    render_rules,
    scrape_config,
    thresholds,
    workspace_alertmanager_definition,
)
from infra.config import MonitoringConfig, ObservabilityConfig

if TYPE_CHECKING:
    from infra.components.monitoring import Monitoring

GRAFANA_VERSION = "12.4"
"""Amazon Managed Grafana's version (pulumi-aws's Workspace docs list 9.4, 10.4, 12.4, 13.2): the
first at or past the dashboards' schema (grafana-foundation-sdk 11.6)."""
GRAFANA_DATA_SOURCES = ("PROMETHEUS", "CLOUDWATCH")
COLLECTOR_USER = "aps-collector-user"
COLLECTOR_ROLE = "aps-collector-role"
LOG_KINDS = ("application", "dataplane", "host", "performance")
AGENT_NAMESPACE = "amazon-cloudwatch"
AGENT_ACCOUNT = "cloudwatch-agent"
# The app's error-level log lines, as the add-on's Fluent Bit ships them (each JSON line parsed
# into `log_processed`, Kubernetes metadata under `kubernetes`).
ERROR_LEVELS = ("error", "critical")
ERROR_METRIC_NAMESPACE = "Backbone/Logs"


def addon_version(cluster: Cluster, addon_name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    """The version EKS gives `addon_name` for the cluster's Kubernetes version (EKS's default for
    it, as the cluster's own add-ons are pinned), so a version bump moves it too."""
    return aws.eks.get_addon_version_output(
        addon_name=addon_name,
        kubernetes_version=cluster.cluster.version,
        most_recent=False,
        opts=pulumi.InvokeOutputOptions(parent=parent),
    ).version


def log_group_name(cluster_name: str, kind: str) -> str:
    """Where the CloudWatch Observability add-on writes (Container Insights' fixed names)."""
    return f"/aws/containerinsights/{cluster_name}/{kind}"


def error_metric(stack: str) -> tuple[str, str]:
    """(namespace, name) of the metric the error-line filter publishes, one per stack."""
    return ERROR_METRIC_NAMESPACE, f"{project_stack(stack)}-app-error-lines"


def error_filter_pattern(namespace: str) -> str:
    levels = " || ".join(f'$.log_processed.level = "{level}"' for level in ERROR_LEVELS)
    return f'{{ $.kubernetes.namespace_name = "{namespace}" && ({levels}) }}'


def collector_principal(role_arn: str) -> str:
    """The collector's role as an access entry takes it: without the service-role path."""
    head, _, tail = role_arn.partition(":role/")
    return f"{head}:role/{tail.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class AppTarget:
    """The app the collector scrapes and whose logs are watched: the cluster it runs in, its
    namespace and its pods' name label (workload.py's APP_NAME)."""

    cluster_name: pulumi.Input[str]
    namespace: str
    name: str

    def log_group(self) -> pulumi.Output[str]:
        return pulumi.Output.from_input(self.cluster_name).apply(
            lambda n: log_group_name(n, "application")
        )

    def watched(self, stack: str) -> dict[str, Any]:
        """What Monitoring's Watched needs to alarm on and point at the app's logs."""
        return {
            "app_log_group": self.log_group(),
            "app_namespace": self.namespace,
            "error_metric": error_metric(stack),
        }


@dataclass(frozen=True)
class Metrics:
    workspace: aws.amp.Workspace
    scraper: aws.amp.Scraper


@dataclass(frozen=True)
class Logs:
    groups: dict[str, aws.cloudwatch.LogGroup]
    addon: aws.eks.Addon


@dataclass(frozen=True)
class Grafana:
    workspace: aws.grafana.Workspace
    role: aws.iam.Role


class Observability(pulumi.ComponentResource):
    """Needs providers aws and kubernetes (the cluster's) in opts."""

    def __init__(
        self,
        name: str,
        cfg: ObservabilityConfig,
        *,
        monitoring: MonitoringConfig,
        stack: str,
        region: str,
        cluster: Cluster,
        private_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]],
        app: AppTarget,
        alerts: Monitoring,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:observability:Observability", name, None, opts)
        self._name, self._cfg, self._stack, self._region = name, cfg, stack, region
        self._prefix = project_stack(stack)
        self.logs = self._logs(cluster, app)
        self.metrics = self._metrics(cluster, private_subnet_ids, app)
        self._cluster_access(cluster, self.metrics.scraper)
        ws = self.metrics.workspace
        self.rules = aws.amp.RuleGroupNamespace(
            f"{name}-rules",
            name=f"{self._prefix}-rules",
            workspace_id=ws.id,
            data=self.logs.groups["application"].name.apply(
                lambda group: yaml.safe_dump(
                    rules_for(monitoring, cfg, stack=stack, app=app, log_group=group),
                    sort_keys=False,
                    width=100,
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.topic_policy, self.alertmanager = self._alertmanager(alerts, ws)
        self.error_filter = self._error_filter(app)
        self.grafana = self._grafana(ws) if cfg.managed_grafana else None
        outputs: dict[str, Any] = {
            "workspaceId": ws.id,
            "prometheusEndpoint": ws.prometheus_endpoint,
            "logGroups": {k: g.name for k, g in self.logs.groups.items()},
        }
        if self.grafana:
            outputs["grafanaEndpoint"] = self.grafana.workspace.endpoint
        self.register_outputs(outputs)

    def _alertmanager(
        self, alerts: Monitoring, ws: aws.amp.Workspace
    ) -> tuple[aws.sns.TopicPolicy | None, aws.amp.AlertManagerDefinition]:
        """The workspace's Alertmanager, routing to the alerts topic once its policy admits it."""
        name, region, stack = self._name, self._region, self._stack
        # The topic's one policy, now that the workspace exists (it was made here, as
        # "observability-alerts-policy": the alias, its old URN, keeps it the same resource).
        was = pulumi.create_urn(f"{name}-alerts-policy", "aws:sns/topicPolicy:TopicPolicy", self)
        policy = alerts.publish_policy(ws.arn, aliases=[was])
        definition = aws.amp.AlertManagerDefinition(
            f"{name}-alertmanager",
            workspace_id=ws.id,
            definition=alerts.topic.arn.apply(
                lambda arn: workspace_alertmanager_definition(
                    alertmanager_config(topic_arn=arn, region=region, stack=stack)
                )
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy] if policy else []),
        )
        return policy, definition

    # -- metrics ---------------------------------------------------------------------------------

    def _metrics(
        self, cluster: Cluster, subnets: pulumi.Input[Sequence[pulumi.Input[str]]], app: AppTarget
    ) -> Metrics:
        child = pulumi.ResourceOptions(parent=self)
        workspace = aws.amp.Workspace(f"{self._name}-workspace", alias=self._prefix, opts=child)
        after: list[pulumi.Resource] = []
        if self._cfg.cluster_signals:
            after.append(
                aws.eks.Addon(
                    f"{self._name}-kube-state-metrics",
                    cluster_name=cluster.cluster_name,
                    addon_name="kube-state-metrics",
                    addon_version=addon_version(cluster, "kube-state-metrics", self),
                    resolve_conflicts_on_create="OVERWRITE",
                    resolve_conflicts_on_update="OVERWRITE",
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster.node_group]),
                )
            )
        config = scrape_config(
            app_namespace=app.namespace,
            app_name=app.name,
            interval_seconds=self._cfg.scrape_interval_seconds,
            cluster_signals=self._cfg.cluster_signals,
        )
        scraper = aws.amp.Scraper(
            f"{self._name}-collector",
            alias=self._prefix,
            source=aws.amp.ScraperSourceArgs(
                eks=aws.amp.ScraperSourceEksArgs(
                    cluster_arn=cluster.cluster.arn,
                    subnet_ids=subnets,
                    # The cluster security group admits its members on every port: the
                    # collector's ENIs reach the pods (9464) and the API server (443).
                    security_group_ids=[cluster.node_security_group_id],
                )
            ),
            destination=aws.amp.ScraperDestinationArgs(
                amp=aws.amp.ScraperDestinationAmpArgs(workspace_arn=workspace.arn)
            ),
            scrape_configuration=yaml.safe_dump(config, sort_keys=False, width=100),
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )
        return Metrics(workspace, scraper)

    def _cluster_access(self, cluster: Cluster, scraper: aws.amp.Scraper) -> None:
        """AWS's documented access for the collector: an access entry and RBAC for its user."""
        aws.eks.AccessEntry(
            f"{self._name}-collector-access",
            cluster_name=cluster.cluster_name,
            principal_arn=scraper.role_arn.apply(collector_principal),
            user_name=COLLECTOR_USER,
            type="STANDARD",
            opts=pulumi.ResourceOptions(parent=self),
        )
        rbac = k8s.rbac.v1
        meta = k8s.meta.v1.ObjectMetaArgs
        labels = {"app.kubernetes.io/part-of": "backbone", "app.kubernetes.io/managed-by": "pulumi"}
        read = ["get", "list", "watch"]
        role = rbac.ClusterRole(
            f"{self._name}-collector-role",
            metadata=meta(name=COLLECTOR_ROLE, labels=labels),
            rules=[
                rbac.PolicyRuleArgs(
                    api_groups=[""],
                    resources=["nodes", "nodes/metrics", "services", "endpoints", "pods"],
                    verbs=read,
                ),
                rbac.PolicyRuleArgs(
                    api_groups=["discovery.k8s.io"], resources=["endpointslices"], verbs=read
                ),
                rbac.PolicyRuleArgs(non_resource_urls=["/metrics"], verbs=["get"]),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        rbac.ClusterRoleBinding(
            f"{self._name}-collector-binding",
            metadata=meta(name=f"{COLLECTOR_USER}-role-binding", labels=labels),
            role_ref=rbac.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=COLLECTOR_ROLE
            ),
            subjects=[
                rbac.SubjectArgs(
                    api_group="rbac.authorization.k8s.io", kind="User", name=COLLECTOR_USER
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role]),
        )

    # -- Amazon Managed Grafana --------------------------------------------------------------------

    def _grafana(self, ws: aws.amp.Workspace) -> Grafana:
        """A Grafana workspace reading this stack's Prometheus workspace and CloudWatch, through
        a role of its own that may do nothing else."""
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        role = aws.iam.Role(
            f"{self._name}-grafana-role",
            assume_role_policy=caller.account_id.apply(
                lambda account: grafana_trust(account, self._region)
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        groups = [g.arn for g in self.logs.groups.values()]
        policy = aws.iam.RolePolicy(
            f"{self._name}-grafana-read",
            role=role.id,
            policy=pulumi.Output.all(ws.arn, *groups).apply(
                lambda a: grafana_policy(a[0], list(a[1:]))
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        workspace = aws.grafana.Workspace(
            f"{self._name}-grafana",
            name=f"{self._prefix}-grafana",
            description=f"backbone {self._stack}: dashboards over the stack's Prometheus workspace",
            account_access_type="CURRENT_ACCOUNT",
            authentication_providers=["AWS_SSO"],
            permission_type="CUSTOMER_MANAGED",
            role_arn=role.arn,
            data_sources=list(GRAFANA_DATA_SOURCES),
            grafana_version=GRAFANA_VERSION,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        return Grafana(workspace, role)

    # -- logs ------------------------------------------------------------------------------------

    def _logs(self, cluster: Cluster, app: AppTarget) -> Logs:
        def name(kind: str) -> pulumi.Output[str]:
            return cluster.cluster_name.apply(lambda n: log_group_name(n, kind))

        groups = {
            kind: aws.cloudwatch.LogGroup(
                f"{self._name}-{kind}-logs",
                name=name(kind),
                retention_in_days=self._cfg.log_retention_days,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for kind in LOG_KINDS
        }
        role = aws.iam.Role(
            f"{self._name}-agent-role",
            assume_role_policy=pulumi.Output.all(cluster.oidc_provider.arn, cluster.issuer).apply(
                lambda a: irsa_trust(a[0], a[1], AGENT_NAMESPACE, AGENT_ACCOUNT)
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        policy = aws.iam.RolePolicyAttachment(
            f"{self._name}-agent-policy",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
            opts=pulumi.ResourceOptions(parent=self),
        )
        addon = aws.eks.Addon(
            f"{self._name}-cloudwatch-observability",
            cluster_name=cluster.cluster_name,
            addon_name="amazon-cloudwatch-observability",
            addon_version=addon_version(cluster, "amazon-cloudwatch-observability", self),
            service_account_role_arn=role.arn,
            configuration_values=json.dumps(addon_configuration(self._cfg)),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            # Its log groups exist, with retention, before anything writes to them.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*groups.values(), policy, cluster.node_group]
            ),
        )
        return Logs(groups, addon)

    def _error_filter(self, app: AppTarget) -> aws.cloudwatch.LogMetricFilter:
        namespace, metric = error_metric(self._stack)
        return aws.cloudwatch.LogMetricFilter(
            f"{self._name}-app-errors",
            name=f"{self._prefix}-app-errors",
            log_group_name=self.logs.groups["application"].name,
            pattern=error_filter_pattern(app.namespace),
            metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                namespace=namespace, name=metric, value="1", default_value="0", unit="Count"
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )


def rules_for(
    monitoring: MonitoringConfig,
    cfg: ObservabilityConfig,
    *,
    stack: str,
    app: AppTarget,
    log_group: str | None,
) -> dict[str, object]:
    """The rule file the workspace evaluates (and `backbone dashboards` writes for any other
    Prometheus): the monitoring thresholds, the stack label, the app's log group in runbooks."""
    return render_rules(
        **thresholds(monitoring),
        labels={"stack": stack},
        log_group=log_group,
        cluster_namespace=app.namespace if cfg.cluster_signals else None,
    )


def addon_configuration(cfg: ObservabilityConfig) -> dict[str, object]:
    """The add-on's configuration values: container logs on; Container Insights' enhanced
    metrics only when asked for (they are billed per observation)."""
    kubernetes = {"enhanced_container_insights": cfg.container_insights_metrics}
    return {
        "containerLogs": {"enabled": True},
        "agent": {"config": {"logs": {"metrics_collected": {"kubernetes": kubernetes}}}},
    }


def grafana_trust(account: str, region: str) -> str:
    """Only Amazon Managed Grafana, for a workspace of this account and region, assumes the
    workspace's role (the confused-deputy conditions AWS's user guide gives for a customer
    managed role)."""
    return iam.document(
        [
            {
                "Effect": "Allow",
                "Principal": {"Service": "grafana.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "StringLike": {
                        "aws:SourceArn": f"arn:aws:grafana:{region}:{account}:/workspaces/*"
                    },
                },
            }
        ]
    )


# What the workspace's data sources call: Prometheus queries (the AMP data source), CloudWatch
# metrics and alarms (read), Logs Insights over the cluster's log groups.
GRAFANA_PROMETHEUS_ACTIONS = (
    "aps:QueryMetrics",
    "aps:GetSeries",
    "aps:GetLabels",
    "aps:GetMetricMetadata",
    "aps:DescribeWorkspace",
)
GRAFANA_CLOUDWATCH_ACTIONS = (
    "cloudwatch:GetMetricData",
    "cloudwatch:ListMetrics",
    "cloudwatch:DescribeAlarms",
    "cloudwatch:DescribeAlarmsForMetric",
    "cloudwatch:DescribeAlarmHistory",
    "logs:DescribeLogGroups",
    "logs:GetQueryResults",
    "logs:StopQuery",
)
GRAFANA_LOG_GROUP_ACTIONS = ("logs:StartQuery", "logs:GetLogEvents", "logs:GetLogGroupFields")


def grafana_policy(amp_workspace_arn: str, log_group_arns: Sequence[str]) -> str:
    """The Grafana workspace role's only permissions: query this stack's Prometheus workspace;
    read CloudWatch metrics and alarms (their API has no resource-level permissions: `*`); query
    this cluster's log groups."""
    return iam.document(
        [
            {
                "Sid": "QueryTheStacksPrometheus",
                "Effect": "Allow",
                "Action": list(GRAFANA_PROMETHEUS_ACTIONS),
                "Resource": amp_workspace_arn,
            },
            {
                "Sid": "ReadCloudWatch",
                "Effect": "Allow",
                "Action": list(GRAFANA_CLOUDWATCH_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "QueryTheClustersLogs",
                "Effect": "Allow",
                "Action": list(GRAFANA_LOG_GROUP_ACTIONS),
                "Resource": [f"{arn}:*" for arn in log_group_arns],
            },
        ]
    )
