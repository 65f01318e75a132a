"""build(config): compose the components for a stack and pass outputs between them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra import packaging
from infra.components import project_stack
from infra.components.autoscaler import Autoscaler
from infra.components.cluster import Cluster
from infra.components.database import Database
from infra.components.functions import (
    CANARY_PROBES,
    CANARY_REDIRECT_PROBE,
    CanaryLink,
    Functions,
    JobNetwork,
    Packager,
)
from infra.components.host import HTTP_PORT, Host
from infra.components.loadbalancer import LoadBalancer, Targets
from infra.components.local import Local
from infra.components.monitoring import Monitoring, Watched
from infra.components.network import Network
from infra.components.observability import AppTarget, Observability
from infra.components.registry import Registry
from infra.components.rotation import PasswordRotation, RotatedSecret, RotationSchedule
from infra.components.workload import APP_NAME, SecretCredentials, Upstream, Workload
from infra.config import StackConfig, rate_seconds

APP_DIR = Path(__file__).resolve().parent.parent / "app"
PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}


def built_archive(source_dir: Path, architecture: str, python_version: str) -> pulumi.Archive:
    """A function's deployment archive, built for the Lambda platform by infra.packaging (pip,
    cached by content: a hit costs a hash). What `pulumi up` and `pulumi preview` (which hashes
    the archive to see whether the code changed) get."""
    path = packaging.build(source_dir, architecture=architecture, python_version=python_version)
    return pulumi.FileArchive(str(path))


def placeholder_archive(source_dir: Path, architecture: str, python_version: str) -> pulumi.Archive:
    """The offline engine's stand-in: the name the build would have; no pip, no network, no file
    (nothing reads it under the offline engine)."""
    spec = packaging.describe(source_dir, architecture=architecture, python_version=python_version)
    return pulumi.FileArchive(f".backbone/build/{spec.archive_name}")


# By the engine setting `backbone-engine:packager` (infra.config.PACKAGER_KEY): the offline engine
# (backbone.synth) sets `placeholder`; the Pulumi CLI sets nothing, so the real build runs.
PACKAGERS: dict[str, Packager] = {"build": built_archive, "placeholder": placeholder_archive}


def aws_provider(cfg: StackConfig) -> aws.Provider:
    """The one AWS provider: region from the stack, tags on every resource via default_tags."""
    tags = {
        "backbone:project": pulumi.get_project(),
        "backbone:stack": cfg.stack,
        "managed-by": "pulumi",
        **cfg.tags,
    }
    return aws.Provider(
        "aws",
        region=cfg.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
    )


def app_host(
    cfg: StackConfig,
    network: Network,
    registry: Registry,
    database: Database,
    opts: pulumi.ResourceOptions,
) -> tuple[Host, pulumi.Output[str]]:
    """The app on one EC2 instance (the free-tier stack): the image by digest, the database's
    credentials in one Parameter Store SecureString, behind the load balancer when there is one."""
    assert cfg.region is not None
    api_token = random.RandomPassword("app-api-token", length=48, special=False)
    behind_lb = cfg.loadbalancer.enabled
    settings = (
        {
            # the ALB's address is inside the VPC; the app's keep-alive outlives its idle timeout
            "FORWARDED_ALLOW_IPS": cfg.network.cidr,
            "LB_IDLE_TIMEOUT_SECONDS": str(cfg.loadbalancer.idle_timeout_seconds),
        }
        if behind_lb
        else {}
    )
    host = Host(
        "host",
        cfg.host,
        region=cfg.region,
        vpc_id=network.vpc_id,
        subnet_id=network.public_subnet_ids[0],
        repository_arn=registry.repository.arn,
        image=registry.image_ref,
        app_env={"DATABASE_URL": database.app_connection_url, "API_TOKEN": api_token.result},
        migration_env={
            "DATABASE_URL": database.connection_url,
            "APP_DB_USER": database.app_username,
            "APP_DB_PASSWORD": database.app_password,
            "JOB_DB_USER": database.job_username,
            "JOB_DB_PASSWORD": database.job_password,
        },
        database_security_group_id=database.security_group.id,
        settings=settings,
        # The known link the canary follows: upserted (no expiry) by every migration.
        migration_settings={
            "CANARY_LINK_CODE": cfg.app.canary_link_code,
            "CANARY_LINK_URL": cfg.app.canary_link_url,
        },
        public=not behind_lb,
        opts=opts,
    )
    return host, api_token.result


@dataclass
class Parts:
    """What build() has made so far, for the steps that wire the next piece to it (None: the
    stack has no such piece), and the stack outputs gathered on the way."""

    cfg: StackConfig
    region: str
    provider: aws.Provider
    package: Packager
    outputs: dict[str, Any]
    network: Network
    registry: Registry | None = None
    cluster: Cluster | None = None
    database: Database | None = None
    host: Host | None = None
    balancer: LoadBalancer | None = None
    functions: Functions | None = None
    workload: Workload | None = None
    rotation: PasswordRotation | None = None

    def opts(self, kubernetes: bool = False) -> pulumi.ResourceOptions:
        """The AWS provider, and the cluster's Kubernetes provider when asked for."""
        providers: dict[str, pulumi.ProviderResource] = {"aws": self.provider}
        if kubernetes and self.cluster:
            providers["kubernetes"] = self.cluster.provider
        return pulumi.ResourceOptions(providers=providers)

    def job_network(self) -> JobNetwork:
        return JobNetwork(
            vpc_id=self.network.vpc_id,
            private_subnet_ids=self.network.private_subnet_ids,
            parking_security_group_id=self.network.default_security_group_id,
        )

    def app_clients(self) -> list[pulumi.Output[str]]:
        """Who sends the app's traffic and queries the database: the host, else the nodes."""
        if self.host:
            return [self.host.security_group.id]
        return [self.cluster.node_security_group_id] if self.cluster else []


def build(cfg: StackConfig, package: Packager = built_archive) -> dict[str, Any]:
    """Register the stack's resources; return the stack outputs. `package` makes the functions'
    archives (PACKAGERS: the engine chooses). One step per component, in dependency order;
    config has already refused a stack whose settings cannot make a whole app."""
    if cfg.target == "docker":
        return local_stack(cfg)
    p = begin(cfg, package)
    p.registry = add_registry(p)
    p.cluster = add_cluster(p)
    p.database = add_database(p)
    p.host = add_host(p)
    p.balancer = add_balancer(p)
    p.functions = add_functions(p)
    p.workload = add_workload(p)
    p.rotation = add_rotation(p)
    add_monitoring(p)
    if p.host:
        # The host's own alarms: EC2 heals it, and the alerts topic (when there is one) is told.
        p.host.heal(p.outputs.get("alertsTopicArn"))
        alarms = [*p.outputs.get("alarmNames", []), *(a.name for a in p.host.alarms)]
        p.outputs["alarmNames"] = alarms
    return p.outputs


def local_stack(cfg: StackConfig) -> dict[str, Any]:
    """The local stack runs on the user's own Docker engine and registers no AWS resource."""
    local = Local("local", cfg.local, context=APP_DIR, monitoring=cfg.monitoring)
    return {
        "target": "docker",
        "url": local.url,
        "prometheusUrl": local.prometheus_url,
        "alertmanagerUrl": local.alertmanager_url,
        "grafanaUrl": local.grafana_url,
        "appApiToken": local.api_token,
        "grafanaAdminPassword": local.grafana_password,
    }


def begin(cfg: StackConfig, package: Packager) -> Parts:
    """The AWS provider and the network, which every other piece sits in."""
    assert cfg.region is not None  # config guarantees it for target aws
    provider = aws_provider(cfg)
    opts = pulumi.ResourceOptions(providers={"aws": provider})
    network = Network("network", cfg.network, region=cfg.region, opts=opts)
    outputs: dict[str, Any] = {
        "region": cfg.region,
        "vpcId": network.vpc_id,
        "availabilityZones": network.availability_zones,
        "publicSubnetIds": network.public_subnet_ids,
        "privateSubnetIds": network.private_subnet_ids,
        "natGatewayCount": len(network.nat_gateways),
    }
    return Parts(cfg, cfg.region, provider, package, outputs, network)


def add_registry(p: Parts) -> Registry | None:
    """The app's image in ECR, for the cluster or the host."""
    cfg = p.cfg
    if not (cfg.cluster.enabled or cfg.host.enabled):
        return None
    # The host runs the x86_64 Amazon Linux AMI; the cluster's nodes their architecture.
    platform = PLATFORMS[cfg.cluster.architecture if cfg.cluster.enabled else "x86_64"]
    registry = Registry(
        "registry",
        cfg.registry,
        context=APP_DIR,
        platform=platform,
        protect=cfg.protect,
        opts=p.opts(),
    )
    p.outputs |= {
        "repositoryUrl": registry.repository.repository_url,
        "imageRef": registry.image_ref,
    }
    return registry


def add_cluster(p: Parts) -> Cluster | None:
    """EKS and the cluster autoscaler that scales its nodes."""
    cfg = p.cfg
    if not cfg.cluster.enabled:
        return None
    cluster = Cluster(
        "cluster",
        cfg.cluster,
        name_prefix=project_stack(cfg.stack),
        region=p.region,
        network=p.network,
        protect=cfg.protect,
        opts=p.opts(),
    )
    Autoscaler(
        "autoscaler",
        cluster,
        region=p.region,
        opts=pulumi.ResourceOptions(providers={"aws": p.provider, "kubernetes": cluster.provider}),
    )
    p.outputs |= {
        "clusterName": cluster.cluster_name,
        "nodeGroupName": cluster.node_group.node_group_name,
        "kubeconfig": cluster.kubeconfig,
    }
    return cluster


def add_database(p: Parts) -> Database | None:
    """RDS PostgreSQL in the private subnets, admitting the nodes (the host admits itself)."""
    cfg = p.cfg
    if not cfg.database.enabled:
        return None
    database = Database(
        "database",
        cfg.database,
        vpc_id=p.network.vpc_id,
        subnet_ids=p.network.private_subnet_ids,
        clients=p.app_clients(),
        protect=cfg.protect,
        opts=p.opts(),
    )
    p.outputs |= {
        "databaseAddress": database.address,
        "databasePort": database.port,
        "databaseName": database.db_name,
        "databaseInstanceId": database.instance.identifier,
        "databaseMultiAz": cfg.database.multi_az,
    }
    return database


def add_host(p: Parts) -> Host | None:
    """The free-tier host, admitted by the database."""
    if not p.cfg.host.enabled:
        return None
    # config refuses a host without its database; the registry is made for it above.
    assert p.registry is not None and p.database is not None
    host, host_token = app_host(p.cfg, p.network, p.registry, p.database, p.opts())
    p.database.admit("host", host.security_group.id, "PostgreSQL from the app host")
    p.outputs |= {
        "url": host.url,
        "hostInstanceId": host.instance.id,
        "hostPublicIp": host.public_ip,
        "appApiToken": host_token,
    }
    return host


def add_balancer(p: Parts) -> LoadBalancer | None:
    """The ALB in front of the nodes' node port or the host's port."""
    cfg, host, cluster = p.cfg, p.host, p.cluster
    if not cfg.loadbalancer.enabled:
        return None
    balancer = LoadBalancer(
        "web",
        cfg.loadbalancer,
        vpc_id=p.network.vpc_id,
        vpc_cidr=cfg.network.cidr,
        public_subnet_ids=p.network.public_subnet_ids,
        region=p.region,
        targets=Targets(
            port=HTTP_PORT if host else cfg.app.node_port,
            # the host serves the app itself: its own /readyz on the traffic port
            health_check_port=None if host else cfg.app.health_check_node_port,
            asg_names=[cluster.autoscaling_group_name] if cluster else [],
            security_group_ids=p.app_clients(),
        ),
        web_acl=cfg.web_acl(),
        protect=cfg.protect,
        opts=p.opts(),
    )
    p.outputs |= {
        "url": balancer.url,
        "loadBalancerArn": balancer.alb.arn,
        "targetGroupArn": balancer.target_group.arn,
    }
    if host:
        host.attach(balancer.target_group.arn)
    return balancer


def add_functions(p: Parts) -> Functions | None:
    """The canary (on the load balancer, else the host's own address: its Elastic IP, the same
    across stop/start and replacements) and the housekeeping job."""
    cfg, database = p.cfg, p.database
    public_url = p.balancer.url if p.balancer else p.host.url if p.host else None
    if not cfg.functions.enabled or database is None or public_url is None:
        return None
    functions = Functions(
        "functions",
        cfg.functions,
        source_root=APP_DIR / "functions",
        package=p.package,
        stack_name=cfg.stack,
        base_url=public_url,
        network=p.job_network(),
        # The job logs in as its own role (SELECT/DELETE on links, its stats table).
        database=database,
        canary_link=canary_link(p),
        opts=p.opts(),
    )
    p.outputs["canaryFunction"] = functions.canary.name
    if functions.housekeeping and functions.job_security_group:
        database.admit("housekeeping", functions.job_security_group.id, "PostgreSQL from the job")
        p.outputs["housekeepingFunction"] = functions.housekeeping.name
    return functions


def canary_link(p: Parts) -> CanaryLink | None:
    """The known link the canary's redirect probe follows: the cluster's and the host's
    migrations create it."""
    if not (p.cluster or p.host):
        return None
    return CanaryLink(code=p.cfg.app.canary_link_code, url=p.cfg.app.canary_link_url)


def job_secret(p: Parts) -> pulumi.Output[str] | None:
    """The job's own secret (when there is a job): the migration sets its role's password from
    it, and the rotation rotates it."""
    return p.functions.secret_arn if p.functions else None


def add_workload(p: Parts) -> Workload | None:
    """The app on the cluster: its migration Job, Deployment, Service and the rest."""
    cfg, cluster, database, registry = p.cfg, p.cluster, p.database, p.registry
    if cluster is None:
        return None
    # config refuses a cluster without a database: the app needs both.
    assert registry is not None and database is not None
    # The app's write token: generated once, kept in state as a secret, given to the pods.
    api_token = random.RandomPassword("app-api-token", length=48, special=False)
    job = job_secret(p)
    workload = Workload(
        "app",
        cfg.app,
        namespace="backbone",
        image=registry.image_ref,
        # No credentials in the URLs: the pods read them from Secrets Manager (they rotate).
        database_url=database.endpoint_url,
        migration_env={
            # The master password: RDS's managed secret (DB_SECRET_ARN), else the generated one.
            "DATABASE_URL": (
                database.endpoint_url if cfg.database.manage_password else database.connection_url
            ),
            # The roles' passwords: from their secrets (which rotate), read by the migration.
            "APP_DB_USER": database.app_username,
            "JOB_DB_USER": database.job_username,
            **({} if job else {"JOB_DB_PASSWORD": database.job_password}),
        },
        api_token=api_token.result,
        vpc_cidr=cfg.network.cidr,
        database_cidrs=cfg.network.subnets()[1],
        upstream=Upstream(
            idle_timeout_seconds=cfg.loadbalancer.idle_timeout_seconds,
            drain_seconds=p.balancer.drain_seconds if p.balancer else 0,
            # The ALB's and the nodes' addresses: X-Forwarded-* from nowhere else.
            forwarded_allow_cidrs=[cfg.network.cidr],
        ),
        credentials=SecretCredentials(
            region=p.region,
            oidc_provider_arn=cluster.oidc_provider.arn,
            oidc_issuer=cluster.issuer,
            app_secret_arn=database.app_secret_arn(),
            master_secret_arn=database.master_secret_arn,
            job_secret_arn=job,
        ),
        # A restored instance is a new address: the migration runs again (schema, roles). It
        # waits for the job's secret to hold its first value (the functions' SecretVersion).
        migration_inputs=[database.address],
        migration_after=[p.functions] if p.functions else [],
        opts=p.opts(kubernetes=True),
    )
    p.outputs |= {"appNamespace": workload.namespace, "appApiToken": api_token.result}
    return workload


def add_rotation(p: Parts) -> PasswordRotation | None:
    """The app's and the job's role passwords rotate (the migration follows their secrets):
    after the migration has made the roles."""
    database, workload = p.database, p.workload
    if workload is None or database is None:
        return None
    rotated = [RotatedSecret("app", database.app_secret_arn(), database.app_username)]
    job = job_secret(p)
    if job:
        rotated.append(RotatedSecret("job", job, database.job_username))
    # config refuses a stack with the cluster whose database windows leave no hour after 00:00
    window_hours = p.cfg.database.rotation_window_hours()
    assert window_hours is not None
    rotation = PasswordRotation(
        "rotation",
        schedule=RotationSchedule(
            days=p.cfg.database.app_password_rotation_days, window_hours=window_hours
        ),
        secrets=rotated,
        database=database,
        network=p.job_network(),
        runtime=p.cfg.functions,
        source_dir=APP_DIR / "functions" / "rotation",
        package=p.package,
        stack_name=p.cfg.stack,
        after=[workload.migration],
        opts=p.opts(),
    )
    p.outputs |= {"rotationFunctions": {k: f.name for k, f in rotation.functions.items()}}
    return rotation


def watched(p: Parts, logged: AppTarget | None) -> Watched:
    """What the alarms watch: the load balancer, the database, the functions, the cluster."""
    cfg, balancer, functions = p.cfg, p.balancer, p.functions
    # functions.alarms `availability`: the read probe's availability alone.
    one_alarm = cfg.functions.alarms == "availability"
    probes = (*CANARY_PROBES, CANARY_REDIRECT_PROBE) if canary_link(p) else CANARY_PROBES
    return Watched(
        alb_arn_suffix=balancer.alb.arn_suffix if balancer else None,
        target_group_arn_suffix=balancer.target_group.arn_suffix if balancer else None,
        db_instance_identifier=p.database.instance.identifier if p.database else None,
        function_names=dict(functions.names) if functions else {},
        canary_period_seconds=(rate_seconds(cfg.functions.canary_schedule) if functions else None),
        canary_probes=probes,
        canary_alarm_probes=("read",) if one_alarm else probes,
        canary_latency_alarms=not one_alarm,
        function_alarms=not one_alarm,
        job_name="housekeeping" if functions and functions.housekeeping else None,
        failures_queue_name=functions.failures.name if functions else None,
        rotation_functions=(
            {part: fn.name for part, fn in p.rotation.functions.items()} if p.rotation else {}
        ),
        rotation_secrets=dict(p.rotation.secret_arns) if p.rotation else {},
        **(logged.watched(cfg.stack) if logged else {}),
    )


def add_monitoring(p: Parts) -> Monitoring | None:
    """Alarms, the dashboard and the alerts topic; then, on the cluster, the observability
    pieces whose Alertmanager publishes to that topic."""
    cfg, workload = p.cfg, p.workload
    if not cfg.monitoring.enabled:
        return None
    # The app as the collector and the container logs see it (config: observability needs the
    # cluster, hence the app, and monitoring, whose topic its Alertmanager publishes to).
    logged = (
        AppTarget(p.cluster.cluster_name, namespace="backbone", name=APP_NAME)
        if cfg.observability.enabled and p.cluster and workload
        else None
    )
    with_rules = workload is not None and cfg.monitoring.prometheus_rules
    monitoring = Monitoring(
        "monitoring",
        cfg.monitoring,
        stack=cfg.stack,
        region=p.region,
        watched=watched(p, logged),
        rules_namespace=workload.namespace if workload and with_rules else None,
        # The workspace's Alertmanager publishes to the topic: its key must admit it.
        publishers=("aps.amazonaws.com",) if logged else (),
        protect=cfg.protect,
        opts=p.opts(kubernetes=with_rules),
    )
    p.outputs["alertsTopicArn"] = monitoring.topic.arn
    p.outputs["alarmNames"] = [alarm.name for alarm in monitoring.alarms]
    if logged:
        add_observability(p, logged, monitoring)  # it makes the topic's policy, with its workspace
    else:
        monitoring.publish_policy()
    return monitoring


def add_observability(p: Parts, app: AppTarget, monitoring: Monitoring) -> Observability:
    """Managed Prometheus with the collector, the rules and Alertmanager; the container logs."""
    assert p.cluster is not None  # an AppTarget exists only with the cluster
    observability = Observability(
        "observability",
        p.cfg.observability,
        monitoring=p.cfg.monitoring,
        stack=p.cfg.stack,
        region=p.region,
        cluster=p.cluster,
        private_subnet_ids=p.network.private_subnet_ids,
        app=app,
        alerts=monitoring,
        opts=p.opts(kubernetes=True),
    )
    p.outputs["prometheusWorkspaceId"] = observability.metrics.workspace.id
    p.outputs["prometheusEndpoint"] = observability.metrics.workspace.prometheus_endpoint
    if observability.grafana:
        p.outputs["grafanaEndpoint"] = observability.grafana.workspace.endpoint
    return observability
