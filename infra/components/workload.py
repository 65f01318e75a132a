"""The workload: the sample app (app/) on Kubernetes, behind the ALB through a fixed NodePort.

Objects, all in one namespace and all through the Kubernetes provider given in ``opts``:

- Namespace, labelled for the Pod Security Admission ``restricted`` profile (the pods comply).
- ConfigMap (non-secret settings) and Secret (DATABASE_URL, API_TOKEN, as secret stringData).
- ServiceAccount with no API token mounted (the app never talks to the Kubernetes API).
- Deployment: the image by digest; requests and limits; startup, liveness (/healthz) and readiness
  (/readyz: the database answers) probes; non-root UID 10001, read-only root filesystem with an
  emptyDir at /tmp, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp; an
  init container that runs the idempotent migration (`python -m shortener.migrate`) before the app
  container starts, so MIGRATE_ON_STARTUP is false; spread over zones and nodes; a preStop sleep so
  every node's kube-proxy drops the pod from the Service before the app gets SIGTERM, and a grace
  period longer than that sleep plus the app's own drain timeout. The replica count is only the
  count at creation: the HorizontalPodAutoscaler owns it afterwards (ignore_changes).
- Service of type NodePort on a fixed node port: the ALB's target group points at the node group's
  instances on that port (externalTrafficPolicy Cluster: every node forwards to a ready pod).
- HorizontalPodAutoscaler (autoscaling/v2, CPU), PodDisruptionBudget (maxUnavailable 1: a node
  drain always proceeds, one pod at a time, and with two or more replicas one keeps serving).
- NetworkPolicy: default deny in and out for the namespace; the app admits its port from the VPC
  (the ALB reaches pods through the node port, so traffic arrives from node addresses) and may
  reach only cluster DNS and the database's subnets on 5432.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components import APP_UID
from infra.config import AppConfig

CORE = k8s.core.v1
META = k8s.meta.v1

# app/shortener/config.py: SHUTDOWN_TIMEOUT_SECONDS, how long the app drains after SIGTERM.
DRAIN_SECONDS = 20
# Time for endpoint removal to reach kube-proxy on every node (and the ALB's in-flight requests
# to finish) before the app gets SIGTERM.
PRESTOP_SLEEP_SECONDS = 10
# Grace period: preStop sleep + drain + margin. Kubernetes counts the preStop hook in it.
TERMINATION_GRACE_SECONDS = PRESTOP_SLEEP_SECONDS + DRAIN_SECONDS + 15
# app/shortener/config.py: STARTUP_DB_TIMEOUT_SECONDS; the startup probe allows a little more.
STARTUP_DB_TIMEOUT_SECONDS = 30

# checkov findings this workload accepts, each with its reason, as checkov reads them from the
# object's annotations (checkov.io/skipN: CHECK_ID=reason).
CHECKOV_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_35=the app reads DATABASE_URL and API_TOKEN from its environment "
    "only (12-factor, app/shortener/config.py); they come from a Secret via envFrom, never inline",
}

# On a Secret: its keys, comma-separated (never values). backbone.manifests reads it.
SECRET_KEYS_ANNOTATION = "backbone.dev/secret-keys"

_DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
_CPU = re.compile(r"^([0-9]+)(m?)$")


def check_image(image: str) -> str:
    """The image reference, if it is immutable (`repository@sha256:<64 hex>`); else ValueError."""
    if not _DIGEST.match(image):
        raise ValueError(
            f"workload image {image!r} is not an immutable reference; allowed: "
            "repository@sha256:<64 hex digits> (never a tag such as latest)"
        )
    return image


def cpu_limit(request: str) -> str:
    """Twice a CPU quantity such as `250m` or `1`, in the same unit."""
    m = _CPU.match(request)
    if not m:
        raise ValueError(f"CPU {request!r} is not a quantity such as 250m or 1")
    return f"{int(m.group(1)) * 2}{m.group(2)}"


@dataclass(frozen=True)
class WorkloadArgs:
    namespace: str
    image: pulumi.Input[str]
    """An immutable image reference, `repository@sha256:...` (checked)."""
    node_port: int
    database_url: pulumi.Input[str]
    api_token: pulumi.Input[str]
    vpc_cidr: str
    """Where the ALB's traffic comes from (through the nodes): the only ingress source."""
    database_cidrs: list[str]
    """Where the database lives: the only egress besides cluster DNS (TCP 5432)."""
    replicas: int = 2
    min_replicas: int = 2
    max_replicas: int = 4
    target_cpu_percent: int = 70
    cpu: str = "250m"
    memory: str = "256Mi"
    container_port: int = 8000
    app_name: str = "shortener"
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    """More non-secret settings for the ConfigMap (see app/shortener/config.py)."""
    migration_env: Mapping[str, pulumi.Input[str]] | None = None
    """The migration's own secret environment (the master user's DATABASE_URL, and the app's and
    job's role names and passwords it creates): a Secret only the init container reads, so the
    app's container never holds the master password. None: the migration reads the app's."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"workload replicas: 1 <= min {self.min_replicas} <= replicas {self.replicas} "
                f"<= max {self.max_replicas} does not hold"
            )
        if not 30000 <= self.node_port <= 32767:
            raise ValueError(f"workload node_port {self.node_port} is outside 30000-32767")
        if not self.database_cidrs:
            raise ValueError("workload database_cidrs is empty: the app could reach no database")
        if isinstance(self.image, str):
            check_image(self.image)
        cpu_limit(self.cpu)

    @classmethod
    def from_config(
        cls,
        app: AppConfig,
        *,
        namespace: str,
        image: pulumi.Input[str],
        database_url: pulumi.Input[str],
        api_token: pulumi.Input[str],
        vpc_cidr: str,
        database_cidrs: Sequence[str],
        migration_env: Mapping[str, pulumi.Input[str]] | None = None,
    ) -> WorkloadArgs:
        return cls(
            namespace=namespace,
            image=image,
            node_port=app.node_port,
            database_url=database_url,
            api_token=api_token,
            vpc_cidr=vpc_cidr,
            database_cidrs=list(database_cidrs),
            migration_env=migration_env,
            replicas=app.replicas,
            min_replicas=app.min_replicas,
            max_replicas=app.max_replicas,
            target_cpu_percent=app.target_cpu_percent,
            cpu=app.cpu,
            memory=app.memory,
        )

    def settings(self) -> dict[str, str]:
        """The app's non-secret environment (the ConfigMap's data)."""
        return {
            "LOG_LEVEL": self.log_level,
            "PORT": str(self.container_port),
            "HOST": "0.0.0.0",
            # The init container migrates before the app starts.
            "MIGRATE_ON_STARTUP": "false",
            "SHUTDOWN_TIMEOUT_SECONDS": str(DRAIN_SECONDS),
            "STARTUP_DB_TIMEOUT_SECONDS": str(STARTUP_DB_TIMEOUT_SECONDS),
            **self.extra_env,
        }


def _name(meta: k8s.meta.v1.outputs.ObjectMeta) -> str:
    """An object's name (always set here: every object is named explicitly)."""
    return str(meta.name)


def _security_context() -> CORE.SecurityContextArgs:
    """Every container's: the Pod Security `restricted` profile and then some."""
    return CORE.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=APP_UID,
        run_as_group=APP_UID,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        privileged=False,
        capabilities=CORE.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=CORE.SeccompProfileArgs(type="RuntimeDefault"),
    )


class Workload(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    node_port: int

    def __init__(
        self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:workload:Workload", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        app = args.app_name
        selector = {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": name}
        labels = {
            **selector,
            "app.kubernetes.io/component": "api",
            "app.kubernetes.io/part-of": "backbone",
            "app.kubernetes.io/managed-by": "pulumi",
        }
        image = pulumi.Output.from_input(args.image).apply(check_image)

        ns = CORE.Namespace(
            f"{name}-namespace",
            metadata=META.ObjectMetaArgs(
                name=args.namespace,
                labels={
                    **labels,
                    # Pod Security Admission: refuse any pod that is not `restricted`.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            ),
            opts=child,
        )
        namespace = ns.metadata.apply(_name)

        def meta(obj_name: str, **extra: Any) -> META.ObjectMetaArgs:
            return META.ObjectMetaArgs(name=obj_name, namespace=namespace, labels=labels, **extra)

        settings = args.settings()
        config = CORE.ConfigMap(
            f"{name}-config", metadata=meta(f"{app}-config"), data=settings, opts=child
        )
        secret_values = {
            "DATABASE_URL": pulumi.Output.secret(args.database_url),
            "API_TOKEN": pulumi.Output.secret(args.api_token),
        }
        secret = CORE.Secret(
            f"{name}-secret",
            # The provider masks stringData as a whole, keys included; the key list stays
            # visible here so `backbone manifests` can show which keys a GitOps user must fill.
            metadata=meta(
                f"{app}-secrets",
                annotations={SECRET_KEYS_ANNOTATION: ",".join(sorted(secret_values))},
            ),
            type="Opaque",
            string_data=secret_values,
            opts=child,
        )
        account = CORE.ServiceAccount(
            f"{name}-serviceaccount",
            metadata=meta(app),
            automount_service_account_token=False,
            opts=child,
        )

        env_from = [
            CORE.EnvFromSourceArgs(
                config_map_ref=CORE.ConfigMapEnvSourceArgs(name=config.metadata.apply(_name))
            ),
            CORE.EnvFromSourceArgs(
                secret_ref=CORE.SecretEnvSourceArgs(name=secret.metadata.apply(_name))
            ),
        ]
        resources = CORE.ResourceRequirementsArgs(
            requests={"cpu": args.cpu, "memory": args.memory},
            limits={"cpu": cpu_limit(args.cpu), "memory": args.memory},
        )
        tmp = CORE.VolumeMountArgs(name="tmp", mount_path="/tmp")

        def http_probe(path: str, period: int, failures: int, timeout: int) -> CORE.ProbeArgs:
            return CORE.ProbeArgs(
                http_get=CORE.HTTPGetActionArgs(path=path, port="http", scheme="HTTP"),
                period_seconds=period,
                timeout_seconds=timeout,
                failure_threshold=failures,
                success_threshold=1,
            )

        migrate_env_from = env_from
        if args.migration_env is not None:
            migration_values = {k: pulumi.Output.secret(v) for k, v in args.migration_env.items()}
            migration_secret = CORE.Secret(
                f"{name}-migration-secret",
                metadata=meta(
                    f"{app}-migration",
                    annotations={SECRET_KEYS_ANNOTATION: ",".join(sorted(migration_values))},
                ),
                type="Opaque",
                string_data=migration_values,
                opts=child,
            )
            # The ConfigMap, then the migration's Secret (its DATABASE_URL wins over the app's).
            migrate_env_from = [
                env_from[0],
                CORE.EnvFromSourceArgs(
                    secret_ref=CORE.SecretEnvSourceArgs(name=migration_secret.metadata.apply(_name))
                ),
            ]
        migrate = CORE.ContainerArgs(
            name="migrate",
            image=image,
            image_pull_policy="IfNotPresent",  # the image is by digest: the bytes cannot change
            command=["python", "-m", "shortener.migrate"],
            env_from=migrate_env_from,
            resources=resources,
            security_context=_security_context(),
            volume_mounts=[tmp],
        )
        container = CORE.ContainerArgs(
            name=app,
            image=image,
            image_pull_policy="IfNotPresent",
            ports=[
                CORE.ContainerPortArgs(
                    name="http", container_port=args.container_port, protocol="TCP"
                )
            ],
            env_from=env_from,
            resources=resources,
            # Until /healthz answers once, liveness and readiness wait (a slow start is not a hang).
            startup_probe=http_probe(
                "/healthz", period=2, failures=STARTUP_DB_TIMEOUT_SECONDS // 2 + 5, timeout=2
            ),
            liveness_probe=http_probe("/healthz", period=10, failures=3, timeout=2),
            readiness_probe=http_probe("/readyz", period=5, failures=2, timeout=3),
            lifecycle=CORE.LifecycleArgs(
                pre_stop=CORE.LifecycleHandlerArgs(
                    sleep=CORE.SleepActionArgs(seconds=PRESTOP_SLEEP_SECONDS)
                )
            ),
            security_context=_security_context(),
            volume_mounts=[tmp],
        )

        def spread(key: str) -> CORE.TopologySpreadConstraintArgs:
            # ScheduleAnyway: prefer spreading, but never leave a pod pending because a zone
            # or a node is full (the node group does not autoscale on pending pods).
            return CORE.TopologySpreadConstraintArgs(
                topology_key=key,
                max_skew=1,
                when_unsatisfiable="ScheduleAnyway",
                label_selector=META.LabelSelectorArgs(match_labels=selector),
                match_label_keys=["pod-template-hash"],
            )

        # A change of settings changes the pod template, so the Deployment rolls.
        config_hash = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(app, annotations=CHECKOV_SKIPS),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=args.replicas,
                revision_history_limit=5,
                selector=META.LabelSelectorArgs(match_labels=selector),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_surge=1, max_unavailable=0
                    ),
                ),
                template=CORE.PodTemplateSpecArgs(
                    metadata=META.ObjectMetaArgs(
                        labels=labels,
                        annotations={"backbone.dev/config-sha256": config_hash},
                    ),
                    spec=CORE.PodSpecArgs(
                        service_account_name=account.metadata.apply(_name),
                        automount_service_account_token=False,
                        enable_service_links=False,
                        termination_grace_period_seconds=TERMINATION_GRACE_SECONDS,
                        security_context=CORE.PodSecurityContextArgs(
                            run_as_non_root=True,
                            run_as_user=APP_UID,
                            run_as_group=APP_UID,
                            fs_group=APP_UID,
                            seccomp_profile=CORE.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        init_containers=[migrate],
                        containers=[container],
                        volumes=[
                            CORE.VolumeArgs(
                                name="tmp",
                                empty_dir=CORE.EmptyDirVolumeSourceArgs(size_limit="64Mi"),
                            )
                        ],
                        topology_spread_constraints=[
                            spread("topology.kubernetes.io/zone"),
                            spread("kubernetes.io/hostname"),
                        ],
                    ),
                ),
            ),
            # The autoscaler owns the replica count after creation.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["spec.replicas"]),
        )

        service = CORE.Service(
            f"{name}-service",
            metadata=meta(app),
            spec=CORE.ServiceSpecArgs(
                type="NodePort",
                external_traffic_policy="Cluster",
                selector=selector,
                ports=[
                    CORE.ServicePortArgs(
                        name="http",
                        protocol="TCP",
                        port=80,
                        target_port="http",
                        node_port=args.node_port,
                    )
                ],
            ),
            opts=child,
        )

        deployment_name = deployment.metadata.apply(_name)
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=meta(app),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=deployment_name
                ),
                min_replicas=args.min_replicas,
                max_replicas=args.max_replicas,
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(
                                type="Utilization",
                                average_utilization=args.target_cpu_percent,
                            ),
                        ),
                    )
                ],
            ),
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(app),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=META.LabelSelectorArgs(match_labels=selector),
                # A crash-looping pod must not block a node drain.
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=child,
        )

        net = k8s.networking.v1
        net.NetworkPolicy(
            f"{name}-default-deny",
            metadata=meta("default-deny"),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=META.LabelSelectorArgs(),
                policy_types=["Ingress", "Egress"],
            ),
            opts=child,
        )
        net.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta(app),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=META.LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    net.NetworkPolicyIngressRuleArgs(
                        from_=[
                            net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=args.vpc_cidr))
                        ],
                        ports=[net.NetworkPolicyPortArgs(protocol="TCP", port=args.container_port)],
                    )
                ],
                egress=[
                    net.NetworkPolicyEgressRuleArgs(
                        to=[
                            net.NetworkPolicyPeerArgs(
                                namespace_selector=META.LabelSelectorArgs(
                                    match_labels={"kubernetes.io/metadata.name": "kube-system"}
                                ),
                                pod_selector=META.LabelSelectorArgs(
                                    match_labels={"k8s-app": "kube-dns"}
                                ),
                            )
                        ],
                        ports=[
                            net.NetworkPolicyPortArgs(protocol="UDP", port=53),
                            net.NetworkPolicyPortArgs(protocol="TCP", port=53),
                        ],
                    ),
                    net.NetworkPolicyEgressRuleArgs(
                        to=[
                            net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=cidr))
                            for cidr in args.database_cidrs
                        ],
                        ports=[net.NetworkPolicyPortArgs(protocol="TCP", port=5432)],
                    ),
                ],
            ),
            opts=child,
        )

        self.namespace = namespace
        self.service_name = service.metadata.apply(_name)
        self.node_port = args.node_port
        self.register_outputs(
            {
                "namespace": self.namespace,
                "serviceName": self.service_name,
                "nodePort": self.node_port,
            }
        )
