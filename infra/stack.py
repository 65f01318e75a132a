"""build(config): compose the components for a stack and pass outputs between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.components.cluster import Cluster, ClusterArgs
from infra.components.database import Database, DatabaseArgs
from infra.components.loadbalancer import LoadBalancer, LoadBalancerArgs
from infra.components.network import Network, NetworkArgs
from infra.components.registry import Registry, RegistryArgs
from infra.components.workload import Workload, WorkloadArgs
from infra.config import StackConfig

APP_DIR = Path(__file__).resolve().parent.parent / "app"
PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}


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


def build(cfg: StackConfig) -> dict[str, Any]:
    """Register the stack's resources; return the stack outputs."""
    if cfg.target == "docker":
        # The local stack runs on the user's own Docker engine and registers no AWS resource.
        return {"target": "docker"}

    assert cfg.region is not None  # config guarantees it for target aws
    provider = aws_provider(cfg)
    opts = pulumi.ResourceOptions(providers={"aws": provider})
    network = Network("network", NetworkArgs.from_config(cfg.network), opts=opts)
    outputs: dict[str, Any] = {
        "region": cfg.region,
        "vpcId": network.vpc_id,
        "availabilityZones": network.availability_zones,
        "publicSubnetIds": network.public_subnet_ids,
        "privateSubnetIds": network.private_subnet_ids,
        "natGatewayCount": len(network.nat_gateways),
    }

    cluster = registry = database = None
    if cfg.cluster.enabled:
        c = cfg.cluster
        registry = Registry(
            "registry",
            RegistryArgs(
                context=APP_DIR,
                platform=PLATFORMS[c.architecture],
                keep_images=cfg.registry.keep_images,
                scan_on_push=cfg.registry.scan_on_push,
                protect=cfg.protect,
            ),
            opts=opts,
        )
        cluster = Cluster(
            "cluster",
            ClusterArgs(
                cluster_name=f"{pulumi.get_project()}-{cfg.stack}",
                region=cfg.region,
                version=c.version,
                vpc_id=network.vpc_id,
                public_subnet_ids=network.public_subnet_ids,
                private_subnet_ids=network.private_subnet_ids,
                instance_types=c.instance_types,
                architecture=c.architecture,
                min_nodes=c.min_nodes,
                desired_nodes=c.desired_nodes,
                max_nodes=c.max_nodes,
                disk_size_gb=c.disk_size_gb,
                log_types=list(c.log_types),
                log_retention_days=c.log_retention_days,
                public_endpoint=c.public_endpoint,
                public_access_cidrs=c.public_access_cidrs,
                admin_principal_arns=c.admin_principal_arns,
            ),
            opts=opts,
        )
        outputs |= {
            "repositoryUrl": registry.repository.repository_url,
            "imageRef": registry.image_ref,
            "clusterName": cluster.cluster_name,
            "kubeconfig": cluster.kubeconfig,
        }

    app_clients = [cluster.node_security_group_id] if cluster else []

    if cfg.database.enabled:
        d = cfg.database
        database = Database(
            "database",
            DatabaseArgs(
                vpc_id=network.vpc_id,
                subnet_ids=network.private_subnet_ids,
                client_security_group_ids=app_clients,
                engine_version=d.engine_version,
                instance_class=d.instance_class,
                allocated_storage_gb=d.allocated_storage_gb,
                max_allocated_storage_gb=d.max_allocated_storage_gb,
                storage_type=d.storage_type,
                multi_az=d.multi_az,
                deletion_protection=d.deletion_protection,
                backup_retention_days=d.backup_retention_days,
                db_name=d.name,
                username=d.username,
                manage_password=d.manage_password,
                protect=cfg.protect,
            ),
            opts=opts,
        )
        outputs |= {
            "databaseAddress": database.address,
            "databasePort": database.port,
            "databaseName": database.db_name,
        }

    if cfg.loadbalancer.enabled:
        lb = cfg.loadbalancer
        balancer = LoadBalancer(
            "web",
            LoadBalancerArgs(
                vpc_id=network.vpc_id,
                vpc_cidr=cfg.network.cidr,
                public_subnet_ids=network.public_subnet_ids,
                target_port=cfg.app.node_port,
                health_check_path="/readyz",
                region=cfg.region,
                target_asg_names=[cluster.autoscaling_group_name] if cluster else [],
                target_security_group_ids=app_clients,
                certificate_arn=lb.certificate_arn,
                deletion_protection=lb.deletion_protection,
                access_logs=lb.access_logs,
                idle_timeout_seconds=lb.idle_timeout_seconds,
                protect=cfg.protect,
            ),
            opts=opts,
        )
        outputs["url"] = balancer.url

    if cluster and registry and database:
        # The app's write token: generated once, kept in state as a secret, given to the pods.
        api_token = random.RandomPassword("app-api-token", length=48, special=False)
        workload = Workload(
            "app",
            WorkloadArgs.from_config(
                cfg.app,
                namespace="backbone",
                image=registry.image_ref,
                database_url=database.connection_url,
                api_token=api_token.result,
                vpc_cidr=cfg.network.cidr,
                database_cidrs=cfg.network.subnets()[1],
            ),
            opts=pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}),
        )
        outputs |= {
            "appNamespace": workload.namespace,
            "appApiToken": pulumi.Output.secret(api_token.result),
        }

    return outputs
