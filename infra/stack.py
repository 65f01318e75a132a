"""build(config): compose the components for a stack and pass outputs between them."""

from __future__ import annotations

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


def build(cfg: StackConfig, package: Packager = built_archive) -> dict[str, Any]:
    """Register the stack's resources; return the stack outputs. `package` makes the functions'
    archives (PACKAGERS: the engine chooses)."""
    if cfg.target == "docker":
        # The local stack runs on the user's own Docker engine and registers no AWS resource.
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

    cluster = registry = database = None
    if cfg.cluster.enabled or cfg.host.enabled:
        # The host runs the x86_64 Amazon Linux AMI; the cluster's nodes their architecture.
        platform = PLATFORMS[cfg.cluster.architecture if cfg.cluster.enabled else "x86_64"]
        registry = Registry(
            "registry",
            cfg.registry,
            context=APP_DIR,
            platform=platform,
            protect=cfg.protect,
            opts=opts,
        )
        outputs |= {
            "repositoryUrl": registry.repository.repository_url,
            "imageRef": registry.image_ref,
        }
    if cfg.cluster.enabled:
        cluster = Cluster(
            "cluster",
            cfg.cluster,
            name_prefix=project_stack(cfg.stack),
            region=cfg.region,
            network=network,
            protect=cfg.protect,
            opts=opts,
        )
        Autoscaler(
            "autoscaler",
            cluster,
            region=cfg.region,
            opts=pulumi.ResourceOptions(
                providers={"aws": provider, "kubernetes": cluster.provider}
            ),
        )
        outputs |= {
            "clusterName": cluster.cluster_name,
            "nodeGroupName": cluster.node_group.node_group_name,
            "kubeconfig": cluster.kubeconfig,
        }

    app_clients = [cluster.node_security_group_id] if cluster else []

    if cfg.database.enabled:
        database = Database(
            "database",
            cfg.database,
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            clients=app_clients,
            protect=cfg.protect,
            opts=opts,
        )
        outputs |= {
            "databaseAddress": database.address,
            "databasePort": database.port,
            "databaseName": database.db_name,
            "databaseInstanceId": database.instance.identifier,
            "databaseMultiAz": cfg.database.multi_az,
        }

    host: Host | None = None
    if cfg.host.enabled:
        # config refuses a host without its database; the registry is made for it above.
        assert registry is not None and database is not None
        host, host_token = app_host(cfg, network, registry, database, opts)
        database.admit("host", host.security_group.id, "PostgreSQL from the app host")
        app_clients = [host.security_group.id]
        outputs |= {
            "url": host.url,
            "hostInstanceId": host.instance.id,
            "hostPublicIp": host.public_ip,
            "appApiToken": host_token,
        }

    balancer: LoadBalancer | None = None
    if cfg.loadbalancer.enabled:
        balancer = LoadBalancer(
            "web",
            cfg.loadbalancer,
            vpc_id=network.vpc_id,
            vpc_cidr=cfg.network.cidr,
            public_subnet_ids=network.public_subnet_ids,
            region=cfg.region,
            targets=Targets(
                port=HTTP_PORT if host else cfg.app.node_port,
                # the host serves the app itself: its own /readyz on the traffic port
                health_check_port=None if host else cfg.app.health_check_node_port,
                asg_names=[cluster.autoscaling_group_name] if cluster else [],
                security_group_ids=app_clients,
            ),
            web_acl=cfg.web_acl(),
            protect=cfg.protect,
            opts=opts,
        )
        outputs |= {
            "url": balancer.url,
            "loadBalancerArn": balancer.alb.arn,
            "targetGroupArn": balancer.target_group.arn,
        }
        if host:
            host.attach(balancer.target_group.arn)

    workload: Workload | None = None
    if cluster:
        # config refuses a cluster without a database: the app needs both.
        assert registry is not None and database is not None
        # The app's write token: generated once, kept in state as a secret, given to the pods.
        api_token = random.RandomPassword("app-api-token", length=48, special=False)
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
                    database.endpoint_url
                    if cfg.database.manage_password
                    else database.connection_url
                ),
                "APP_DB_USER": database.app_username,
                "APP_DB_PASSWORD": database.app_password,
                "JOB_DB_USER": database.job_username,
                "JOB_DB_PASSWORD": database.job_password,
            },
            api_token=api_token.result,
            vpc_cidr=cfg.network.cidr,
            database_cidrs=cfg.network.subnets()[1],
            upstream=Upstream(
                idle_timeout_seconds=cfg.loadbalancer.idle_timeout_seconds,
                drain_seconds=balancer.drain_seconds if balancer else 0,
                # The ALB's and the nodes' addresses: X-Forwarded-* from nowhere else.
                forwarded_allow_cidrs=[cfg.network.cidr],
            ),
            credentials=SecretCredentials(
                region=cfg.region,
                oidc_provider_arn=cluster.oidc_provider.arn,
                oidc_issuer=cluster.issuer,
                app_secret_arn=database.app_secret_arn(),
                master_secret_arn=database.master_secret_arn,
            ),
            opts=pulumi.ResourceOptions(
                providers={"kubernetes": cluster.provider, "aws": provider}
            ),
        )
        outputs |= {
            "appNamespace": workload.namespace,
            "appApiToken": api_token.result,
        }

    functions = None
    # The canary probes the load balancer, else the host's own address (its Elastic IP: the
    # same across stop/start and replacements; a new one, if ever, updates the canary with it).
    public_url = balancer.url if balancer else host.url if host else None
    if cfg.functions.enabled and database and public_url is not None:
        functions = Functions(
            "functions",
            cfg.functions,
            source_root=APP_DIR / "functions",
            package=package,
            stack_name=cfg.stack,
            base_url=public_url,
            network=JobNetwork(
                vpc_id=network.vpc_id,
                private_subnet_ids=network.private_subnet_ids,
                parking_security_group_id=network.default_security_group_id,
            ),
            # The job logs in as its own role (SELECT/DELETE on links, its stats table).
            database=database,
            # The cluster's and the host's migrations create the canary's link.
            canary_link=(
                CanaryLink(code=cfg.app.canary_link_code, url=cfg.app.canary_link_url)
                if workload or host
                else None
            ),
            opts=opts,
        )
        outputs["canaryFunction"] = functions.canary.name
        if functions.housekeeping and functions.job_security_group:
            database.admit(
                "housekeeping", functions.job_security_group.id, "PostgreSQL from the job"
            )
            outputs["housekeepingFunction"] = functions.housekeeping.name

    # The app as the collector and the container logs see it (config: observability needs the
    # cluster, hence the app, and monitoring, whose topic its Alertmanager publishes to).
    logged = (
        AppTarget(cluster.cluster_name, namespace="backbone", name=APP_NAME)
        if cfg.observability.enabled and cluster and workload
        else None
    )
    if cfg.monitoring.enabled:
        one_alarm = cfg.functions.alarms == "availability"
        with_rules = workload is not None and cfg.monitoring.prometheus_rules
        monitoring = Monitoring(
            "monitoring",
            cfg.monitoring,
            stack=cfg.stack,
            region=cfg.region,
            watched=Watched(
                alb_arn_suffix=balancer.alb.arn_suffix if balancer else None,
                target_group_arn_suffix=balancer.target_group.arn_suffix if balancer else None,
                db_instance_identifier=database.instance.identifier if database else None,
                function_names=dict(functions.names) if functions else {},
                canary_period_seconds=(
                    rate_seconds(cfg.functions.canary_schedule) if functions else None
                ),
                # functions.alarms `availability`: the read probe's availability alone.
                canary_alarm_probes=("read",) if one_alarm else CANARY_PROBES,
                canary_latency_alarms=not one_alarm,
                function_alarms=not one_alarm,
                job_name="housekeeping" if functions and functions.housekeeping else None,
                failures_queue_name=functions.failures.name if functions else None,
                **(logged.watched(cfg.stack) if logged else {}),
            ),
            rules_namespace=workload.namespace if workload and with_rules else None,
            # The workspace's Alertmanager publishes to the topic: its key must admit it.
            publishers=("aps.amazonaws.com",) if logged else (),
            protect=cfg.protect,
            opts=pulumi.ResourceOptions(
                providers={"aws": provider, "kubernetes": cluster.provider}
                if with_rules and cluster
                else {"aws": provider}
            ),
        )
        outputs["alertsTopicArn"] = monitoring.topic.arn
        outputs["alarmNames"] = [alarm.name for alarm in monitoring.alarms]

        if logged and cluster:
            observability = Observability(
                "observability",
                cfg.observability,
                monitoring=cfg.monitoring,
                stack=cfg.stack,
                region=cfg.region,
                cluster=cluster,
                private_subnet_ids=network.private_subnet_ids,
                app=logged,
                topic=monitoring.topic,
                opts=pulumi.ResourceOptions(
                    providers={"aws": provider, "kubernetes": cluster.provider}
                ),
            )
            outputs["prometheusWorkspaceId"] = observability.metrics.workspace.id
            outputs["prometheusEndpoint"] = observability.metrics.workspace.prometheus_endpoint
            if observability.grafana:
                outputs["grafanaEndpoint"] = observability.grafana.workspace.endpoint

    if host:
        # The host's own alarms: EC2 heals it, and the alerts topic (when there is one) is told.
        host.heal(outputs.get("alertsTopicArn"))
        outputs["alarmNames"] = [*outputs.get("alarmNames", []), *(a.name for a in host.alarms)]

    return outputs
