"""The workload: the sample app (app/) on Kubernetes, behind the ALB through a fixed NodePort.

Objects, all in one namespace and all through the Kubernetes provider given in ``opts``:

- Namespace, labelled for the Pod Security Admission ``restricted`` profile (the pods comply).
- ConfigMap (non-secret settings) and Secret (DATABASE_URL, API_TOKEN, as secret stringData).
- ServiceAccount with no API token mounted (the app never talks to the Kubernetes API).
- Job (batch/v1): the idempotent migration (`python -m shortener.migrate`) with its own
  ServiceAccount (and, with AWS credentials, its own IAM role: the only one that reads RDS's master
  secret), named by a hash of what it runs; the Deployment depends on it, and Pulumi awaits its
  Complete condition, so the pods roll after the migration (MIGRATE_ON_STARTUP is false).
- Deployment: the image by digest; requests and limits; startup, liveness (/healthz) and readiness
  (/readyz: started, schema current, not draining) probes; non-root UID 10001, read-only root
  filesystem with an emptyDir at /tmp, no privilege escalation, all capabilities dropped,
  RuntimeDefault seccomp (the migration's pod too); spread over zones and nodes; a preStop sleep so
  every node's kube-proxy drops the pod from the Service before the app gets SIGTERM, and a grace
  period longer than that sleep plus the app's own drain timeout. The replica count is only the
  count at creation: the HorizontalPodAutoscaler owns it afterwards (ignore_changes).
- Service of type NodePort on a fixed node port: the ALB's target group points at the node group's
  instances on that port (externalTrafficPolicy Cluster: every node forwards to a ready pod).
- HorizontalPodAutoscaler (autoscaling/v2, CPU), PodDisruptionBudget (maxUnavailable 1: a node
  drain always proceeds, one pod at a time, and with two or more replicas one keeps serving).
- NetworkPolicy: default deny in and out for the namespace; the app admits its port from the VPC
  (the ALB reaches pods through the node port, so traffic arrives from node addresses) and may
  reach only cluster DNS and the database's subnets on 5432 (and HTTPS for STS and Secrets
  Manager); the migration's pods admit nothing and may reach the same.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components import APP_UID, iam
from infra.components.cluster import STS_AUDIENCE, irsa_trust
from infra.config import AppConfig

CORE = k8s.core.v1
META = k8s.meta.v1

# app/shortener/config.py: SHUTDOWN_TIMEOUT_SECONDS, how long in-flight requests get after SIGTERM.
DRAIN_SECONDS = 20
# app/shortener/config.py: SHUTDOWN_DRAIN_SECONDS: after the preStop pause, 5 s more of serving with
# `Connection: close` on each response, so the load balancer's kept-alive connections end cleanly.
APP_DRAIN_SECONDS = 5
# Time for an endpoint's removal to reach kube-proxy on every node.
ENDPOINT_PROPAGATION_SECONDS = 5
# The click flush and pool close after the in-flight requests (app17-interface.md: 5 s), rounded up.
SHUTDOWN_MARGIN_SECONDS = 10
# The app's metrics listener (METRICS_PORT): scraped inside the VPC, never behind the load balancer.
METRICS_PORT = 9464


def prestop_seconds(upstream_drain_seconds: int) -> int:
    """The preStop pause: the load balancer stops sending (its drain time: it sees the node's
    health check fail, then lets in-flight requests finish for the deregistration delay), and the
    endpoint's removal reaches every node, before the app gets SIGTERM."""
    return upstream_drain_seconds + ENDPOINT_PROPAGATION_SECONDS


def grace_seconds(upstream_drain_seconds: int) -> int:
    """terminationGracePeriodSeconds (it counts the preStop pause): the pause, the app's own drain
    phase, its in-flight timeout and the shutdown margin."""
    return (
        prestop_seconds(upstream_drain_seconds)
        + APP_DRAIN_SECONDS
        + DRAIN_SECONDS
        + SHUTDOWN_MARGIN_SECONDS
    )


# app/shortener/config.py: STARTUP_DB_TIMEOUT_SECONDS; the startup probe allows a little more.
STARTUP_DB_TIMEOUT_SECONDS = 30

# checkov findings this workload accepts, each with its reason, as checkov reads them from the
# object's annotations (checkov.io/skipN: CHECK_ID=reason).
CHECKOV_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_35=the app reads DATABASE_URL and API_TOKEN from its environment "
    "only (12-factor, app/shortener/config.py); they come from a Secret via envFrom, never inline",
}

# The Service's load balancer class: no controller implements it, so Kubernetes makes no cloud
# load balancer for it (the kit's ALB is made by Pulumi) but still serves its health check port.
SERVICE_LB_CLASS = "backbone.dev/pulumi-alb"

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


APP_NAME = "shortener"
CONTAINER_PORT = 8000
LOG_LEVEL = "INFO"
# The migration's Job: its service account (and IAM role), its pods' name label, its name's prefix.
MIGRATION_NAME = f"{APP_NAME}-migrate"
# Two retries of a failed pod (the database coming up, a rotation finishing), all within the
# deadline; Pulumi waits a minute longer than the deadline for the Complete condition.
MIGRATION_BACKOFF_LIMIT = 2
MIGRATION_DEADLINE_SECONDS = 600
MIGRATION_ANNOTATIONS = {
    # A Job that failed (Pulumi saw its Failed condition) is replaced on the next `pulumi up`
    # instead of being awaited again: a re-run after a fix runs the migration again.
    "pulumi.com/replaceUnready": "true",
}


def migration_job_name(
    image: str, data: Mapping[str, str], cfg: AppConfig, secret_arns: Sequence[Any]
) -> str:
    """The Job's name: what the migration runs (image, settings, the canary link, the secrets
    it reads the passwords from), hashed. A Job's pod template cannot change; a new name is a
    new Job, run to completion before the pods roll."""
    what = {
        "image": image,
        "settings": dict(data),
        "canary": [cfg.canary_link_code, cfg.canary_link_url],
        "secrets": [str(a) for a in secret_arns],
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
    return f"{MIGRATION_NAME}-{digest[:10]}"


@dataclass(frozen=True)
class Upstream:
    """The load balancer in front of the pods: wiring from the stack."""

    idle_timeout_seconds: int
    """The ALB's idle timeout: the app's keep-alive is derived from it (LB_IDLE_TIMEOUT_SECONDS)."""
    drain_seconds: int
    """How long the load balancer takes to stop sending to a pod being stopped (the preStop
    pause covers it)."""
    forwarded_allow_cidrs: Sequence[str]
    """Where X-Forwarded-* may come from: the VPC (the ALB's addresses, the nodes')."""


# Where the pod's service account token for AWS (IRSA) is projected, and for whom it is minted.
AWS_TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
AWS_TOKEN_AUDIENCE = STS_AUDIENCE


@dataclass(frozen=True)
class AwsIdentity:
    role_arn: pulumi.Output[str]
    migration_role_arn: pulumi.Output[str]
    creds: SecretCredentials
    role_policies: tuple[aws.iam.RolePolicy, ...] = ()
    """The roles' policies: the migration's Job waits for them (no AccessDenied at first run)."""


@dataclass(frozen=True)
class SecretCredentials:
    """The pods read their database credentials from Secrets Manager (read again after a refused
    login, so a rotation needs no restart), as an IAM role of their own through the cluster's
    OIDC provider (IRSA). Wiring from the cluster and the database."""

    region: str
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    """The cluster's OIDC issuer URL (https://oidc.eks.<region>.amazonaws.com/id/...)."""
    app_secret_arn: pulumi.Input[str]
    """The app role's secret ({"username", "password"}): the app's DB_SECRET_ARN."""
    master_secret_arn: pulumi.Input[str] | None = None
    """RDS's managed master secret, when RDS keeps (and rotates) the master password: the
    migration's DB_SECRET_ARN. None: the migration's URL carries the generated password."""
    job_secret_arn: pulumi.Input[str] | None = None
    """The housekeeping job role's secret, when there is a job: the migration sets that role's
    password from it (JOB_DB_SECRET_ARN), as it sets the app role's from app_secret_arn."""


def _secret_arns(creds: SecretCredentials) -> list[pulumi.Input[str]]:
    """The secrets the migration reads: the roles' (their passwords) and RDS's master secret."""
    return [
        a
        for a in (creds.app_secret_arn, creds.job_secret_arn, creds.master_secret_arn)
        if a is not None
    ]


def settings(upstream: Upstream) -> dict[str, str]:
    """The app's non-secret environment (the ConfigMap's data; app17-interface.md section 2)."""
    return {
        "LOG_LEVEL": LOG_LEVEL,
        "PORT": str(CONTAINER_PORT),
        "HOST": "0.0.0.0",
        # The migration's Job migrates before the app rolls (the Deployment waits for it).
        "MIGRATE_ON_STARTUP": "false",
        "SHUTDOWN_TIMEOUT_SECONDS": str(DRAIN_SECONDS),
        "SHUTDOWN_DRAIN_SECONDS": str(APP_DRAIN_SECONDS),
        "STARTUP_DB_TIMEOUT_SECONDS": str(STARTUP_DB_TIMEOUT_SECONDS),
        # One setting: the app's keep-alive is this + 5 s, longer than the ALB keeps a connection.
        "LB_IDLE_TIMEOUT_SECONDS": str(upstream.idle_timeout_seconds),
        "FORWARDED_ALLOW_IPS": ",".join(upstream.forwarded_allow_cidrs),
        "METRICS_PORT": str(METRICS_PORT),
        "DOCS_ENABLED": "false",
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


def _http_probe(path: str, period: int, failures: int, timeout: int) -> CORE.ProbeArgs:
    return CORE.ProbeArgs(
        http_get=CORE.HTTPGetActionArgs(path=path, port="http", scheme="HTTP"),
        period_seconds=period,
        timeout_seconds=timeout,
        failure_threshold=failures,
        success_threshold=1,
    )


def _spread(key: str, selector: dict[str, str]) -> CORE.TopologySpreadConstraintArgs:
    # ScheduleAnyway: prefer spreading, but never leave a pod pending because a zone
    # or a node is full (the node group does not autoscale on pending pods).
    return CORE.TopologySpreadConstraintArgs(
        topology_key=key,
        max_skew=1,
        when_unsatisfiable="ScheduleAnyway",
        label_selector=META.LabelSelectorArgs(match_labels=selector),
        match_label_keys=["pod-template-hash"],
    )


def _env_from(config: CORE.ConfigMap, secret: CORE.Secret) -> list[CORE.EnvFromSourceArgs]:
    return [
        CORE.EnvFromSourceArgs(
            config_map_ref=CORE.ConfigMapEnvSourceArgs(name=config.metadata.apply(_name))
        ),
        CORE.EnvFromSourceArgs(
            secret_ref=CORE.SecretEnvSourceArgs(name=secret.metadata.apply(_name))
        ),
    ]


def _egress(
    database_cidrs: Sequence[str], aws_apis: bool
) -> list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]:
    """Where the app's (and the migration's) pods may connect: cluster DNS, the database's
    subnets on 5432, and with AWS credentials, HTTPS to STS and Secrets Manager."""
    net = k8s.networking.v1
    dns = net.NetworkPolicyPeerArgs(
        namespace_selector=META.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": "kube-system"}
        ),
        pod_selector=META.LabelSelectorArgs(match_labels={"k8s-app": "kube-dns"}),
    )
    rules = [
        net.NetworkPolicyEgressRuleArgs(
            to=[dns],
            ports=[
                net.NetworkPolicyPortArgs(protocol="UDP", port=53),
                net.NetworkPolicyPortArgs(protocol="TCP", port=53),
            ],
        ),
        net.NetworkPolicyEgressRuleArgs(
            to=[
                net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=cidr))
                for cidr in database_cidrs
            ],
            ports=[net.NetworkPolicyPortArgs(protocol="TCP", port=5432)],
        ),
    ]
    if aws_apis:
        # STS and Secrets Manager (the credentials) over HTTPS, through the NAT gateway: their
        # public endpoints have no fixed addresses to name here.
        rules.append(
            net.NetworkPolicyEgressRuleArgs(
                to=[net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr="0.0.0.0/0"))],
                ports=[net.NetworkPolicyPortArgs(protocol="TCP", port=443)],
            )
        )
    return rules


class Workload(pulumi.ComponentResource):
    """The app on Kubernetes from its config section. The image, the database's URLs, the API
    token and the networks it talks to are wiring; the Kubernetes provider comes in `opts`."""

    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    node_port: int
    health_check_node_port: int
    migration: k8s.batch.v1.Job
    """The migration's Job: what must have run before anything logs in as the roles it makes."""

    def __init__(
        self,
        name: str,
        cfg: AppConfig,
        *,
        namespace: str,
        image: pulumi.Input[str],
        database_url: pulumi.Input[str],
        api_token: pulumi.Input[str],
        vpc_cidr: str,
        database_cidrs: Sequence[str],
        upstream: Upstream,
        migration_env: Mapping[str, pulumi.Input[str]] | None = None,
        credentials: SecretCredentials | None = None,
        migration_inputs: Sequence[pulumi.Input[str]] = (),
        migration_after: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:workload:Workload", name, None, opts)
        if not database_cidrs:
            raise ValueError("workload database_cidrs is empty: the app could reach no database")
        self._name, self._cfg, self._upstream = name, cfg, upstream
        # Not secret: what else re-runs the migration when it changes (the database's address,
        # after a restore), and what it waits for (the secrets' first values).
        self._migration_inputs, self._migration_after = (
            list(migration_inputs),
            list(migration_after),
        )
        self._labelled(name)
        self.namespace = self._namespace(namespace)
        data = settings(upstream)
        env_from, migrate_env_from = self._environment(
            data, database_url=database_url, api_token=api_token, migration_env=migration_env
        )
        checked = pulumi.Output.from_input(image).apply(check_image)
        self._aws = self._aws_identity(namespace, credentials) if credentials else None
        self.migration = self._migration_job(checked, migrate_env_from, data)
        deployment = self._deployment(checked, env_from, data)
        service = self._service()
        self._autoscaling(deployment)
        self._network_policies(vpc_cidr, database_cidrs, aws_apis=credentials is not None)
        self.health_check_node_port = cfg.health_check_node_port
        self.service_name = service.metadata.apply(_name)
        self.node_port = cfg.node_port
        self.register_outputs(
            {
                "namespace": self.namespace,
                "serviceName": self.service_name,
                "nodePort": self.node_port,
            }
        )

    def _labelled(self, name: str) -> None:
        """The app's selector and labels, and the migration's (a name of their own, so no
        Service, PDB or app policy selects them: a Job's pod in the Service would get traffic on
        a port nothing listens on)."""
        self._selector = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": name}
        self._labels = {
            **self._selector,
            "app.kubernetes.io/component": "api",
            "app.kubernetes.io/part-of": "backbone",
            "app.kubernetes.io/managed-by": "pulumi",
        }
        self._migration_selector = {**self._selector, "app.kubernetes.io/name": MIGRATION_NAME}
        self._migration_labels = {
            **self._labels,
            **self._migration_selector,
            "app.kubernetes.io/component": "migration",
        }

    @property
    def _child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self)

    def _meta(
        self,
        obj_name: pulumi.Input[str],
        labels: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> META.ObjectMetaArgs:
        return META.ObjectMetaArgs(
            name=obj_name,
            namespace=self.namespace,
            labels=dict(labels if labels is not None else self._labels),
            **extra,
        )

    def _namespace(self, namespace: str) -> pulumi.Output[str]:
        ns = CORE.Namespace(
            f"{self._name}-namespace",
            metadata=META.ObjectMetaArgs(
                name=namespace,
                labels={
                    **self._labels,
                    # Pod Security Admission: refuse any pod that is not `restricted`.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            ),
            opts=self._child,
        )
        return ns.metadata.apply(_name)

    def _secret(
        self, resource: str, obj_name: str, values: Mapping[str, pulumi.Input[str]]
    ) -> CORE.Secret:
        """A Secret of secret stringData. The provider masks stringData as a whole, keys
        included; the key list stays visible so `backbone manifests` can show which keys a
        GitOps user must fill."""
        return CORE.Secret(
            resource,
            metadata=self._meta(
                obj_name, annotations={SECRET_KEYS_ANNOTATION: ",".join(sorted(values))}
            ),
            type="Opaque",
            string_data={k: pulumi.Output.secret(v) for k, v in values.items()},
            opts=self._child,
        )

    def _environment(
        self,
        data: dict[str, str],
        *,
        database_url: pulumi.Input[str],
        api_token: pulumi.Input[str],
        migration_env: Mapping[str, pulumi.Input[str]] | None,
    ) -> tuple[list[CORE.EnvFromSourceArgs], list[CORE.EnvFromSourceArgs]]:
        """The ConfigMap and the Secrets: the app's envFrom, and the migration's."""
        name = self._name
        config = CORE.ConfigMap(
            f"{name}-config", metadata=self._meta(f"{APP_NAME}-config"), data=data, opts=self._child
        )
        secret = self._secret(
            f"{name}-secret",
            f"{APP_NAME}-secrets",
            {"DATABASE_URL": database_url, "API_TOKEN": api_token},
        )
        env_from = _env_from(config, secret)
        if migration_env is None:
            return env_from, env_from
        migration = self._secret(f"{name}-migration-secret", f"{APP_NAME}-migration", migration_env)
        # The ConfigMap, then the migration's Secret (its DATABASE_URL wins over the app's).
        return env_from, [env_from[0], _env_from(config, migration)[1]]

    def _resources(self) -> CORE.ResourceRequirementsArgs:
        cfg = self._cfg
        return CORE.ResourceRequirementsArgs(
            requests={"cpu": cfg.cpu, "memory": cfg.memory},
            limits={"cpu": cpu_limit(cfg.cpu), "memory": cfg.memory},
        )

    def _migrate_container(
        self, image: pulumi.Output[str], migrate_env_from: list[CORE.EnvFromSourceArgs]
    ) -> CORE.ContainerArgs:
        """The migration: the schema, the login roles (their passwords from their secrets,
        where the pods read credentials from Secrets Manager) and the canary's link."""
        cfg = self._cfg
        return CORE.ContainerArgs(
            name="migrate",
            image=image,
            image_pull_policy="IfNotPresent",  # the image is by digest: the bytes cannot change
            command=["python", "-m", "shortener.migrate"],
            env_from=migrate_env_from,
            # The known link the canary follows: upserted (no expiry) on every run.
            env=[
                CORE.EnvVarArgs(name="CANARY_LINK_CODE", value=cfg.canary_link_code),
                CORE.EnvVarArgs(name="CANARY_LINK_URL", value=cfg.canary_link_url),
                *self._aws_env(migration=True),
            ],
            resources=self._resources(),
            security_context=_security_context(),
            volume_mounts=[
                CORE.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                *self._aws_mounts(),
            ],
        )

    def _app_container(
        self, image: pulumi.Output[str], env_from: list[CORE.EnvFromSourceArgs]
    ) -> CORE.ContainerArgs:
        return CORE.ContainerArgs(
            name=APP_NAME,
            image=image,
            image_pull_policy="IfNotPresent",
            ports=[
                CORE.ContainerPortArgs(name="http", container_port=CONTAINER_PORT, protocol="TCP"),
                # Scraped inside the VPC (obs-interface.md): in no Service, no target group.
                CORE.ContainerPortArgs(name="metrics", container_port=METRICS_PORT, protocol="TCP"),
            ],
            env_from=env_from,
            env=self._aws_env(migration=False) or None,
            resources=self._resources(),
            # Until /healthz answers once, liveness and readiness wait (a slow start is not a hang).
            startup_probe=_http_probe(
                "/healthz", period=2, failures=STARTUP_DB_TIMEOUT_SECONDS // 2 + 5, timeout=2
            ),
            # Liveness stays shallow; readiness says whether this pod serves (started, schema
            # current, not draining), never whether the database is up: no cascade.
            liveness_probe=_http_probe("/healthz", period=10, failures=3, timeout=2),
            readiness_probe=_http_probe("/readyz", period=5, failures=2, timeout=3),
            lifecycle=CORE.LifecycleArgs(
                pre_stop=CORE.LifecycleHandlerArgs(
                    sleep=CORE.SleepActionArgs(
                        seconds=prestop_seconds(self._upstream.drain_seconds)
                    )
                )
            ),
            security_context=_security_context(),
            volume_mounts=[
                CORE.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                *self._aws_mounts(),
            ],
        )

    def _deployment(
        self,
        image: pulumi.Output[str],
        env_from: list[CORE.EnvFromSourceArgs],
        data: dict[str, str],
    ) -> k8s.apps.v1.Deployment:
        account = CORE.ServiceAccount(
            f"{self._name}-serviceaccount",
            metadata=self._meta(APP_NAME),
            automount_service_account_token=False,
            opts=self._child,
        )
        app = self._app_container(image, env_from)
        # A change of settings changes the pod template, so the Deployment rolls.
        config_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return k8s.apps.v1.Deployment(
            f"{self._name}-deployment",
            metadata=self._meta(APP_NAME, annotations=CHECKOV_SKIPS),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=self._cfg.replicas,
                revision_history_limit=5,
                selector=META.LabelSelectorArgs(match_labels=self._selector),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_surge=1, max_unavailable=0
                    ),
                ),
                template=CORE.PodTemplateSpecArgs(
                    metadata=META.ObjectMetaArgs(
                        labels=self._labels,
                        annotations={"backbone.dev/config-sha256": config_hash},
                    ),
                    spec=self._pod_spec(account, app),
                ),
            ),
            # The autoscaler owns the replica count after creation. The pods roll only once this
            # revision's migration has completed (Pulumi awaits the Job's Complete condition).
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["spec.replicas"], depends_on=[self.migration]
            ),
        )

    def _migration_job(
        self,
        image: pulumi.Output[str],
        migrate_env_from: list[CORE.EnvFromSourceArgs],
        data: dict[str, str],
    ) -> k8s.batch.v1.Job:
        """The migration as a Job of its own, with its own service account (and IAM role): the
        app's pods never hold what only the migration needs (the master password). Named by
        a hash of what it runs (image, settings, the secrets it reads), so a new image or a
        changed migration makes a new Job, which Pulumi creates, awaits, then deletes the old."""
        account = CORE.ServiceAccount(
            f"{self._name}-migration-serviceaccount",
            metadata=self._meta(MIGRATION_NAME, labels=self._migration_labels),
            automount_service_account_token=False,
            opts=self._child,
        )
        container = self._migrate_container(image, migrate_env_from)
        arns = [*(_secret_arns(self._aws.creds) if self._aws else []), *self._migration_inputs]
        job_name = pulumi.Output.all(image, *arns).apply(
            lambda values: migration_job_name(str(values[0]), data, self._cfg, values[1:])
        )
        spec = self._pod_spec(account, container, job=True)
        return k8s.batch.v1.Job(
            f"{self._name}-migration",
            metadata=self._meta(
                job_name,
                labels=self._migration_labels,
                annotations={**CHECKOV_SKIPS, **MIGRATION_ANNOTATIONS},
            ),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=MIGRATION_BACKOFF_LIMIT,
                active_deadline_seconds=MIGRATION_DEADLINE_SECONDS,
                template=CORE.PodTemplateSpecArgs(
                    metadata=META.ObjectMetaArgs(labels=self._migration_labels), spec=spec
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    *(self._aws.role_policies if self._aws else ()),
                    *self._migration_after,
                ],
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{MIGRATION_DEADLINE_SECONDS // 60 + 1}m",
                    update=f"{MIGRATION_DEADLINE_SECONDS // 60 + 1}m",
                ),
            ),
        )

    def _pod_spec(
        self, account: CORE.ServiceAccount, container: CORE.ContainerArgs, *, job: bool = False
    ) -> CORE.PodSpecArgs:
        """A pod of the workload: its account, one container, the volumes; the app's pods
        spread and drain, the migration's run once (restartPolicy Never: the Job retries)."""
        selector = self._selector
        hardened = CORE.PodSecurityContextArgs(
            run_as_non_root=True,
            run_as_user=APP_UID,
            run_as_group=APP_UID,
            fs_group=APP_UID,
            seccomp_profile=CORE.SeccompProfileArgs(type="RuntimeDefault"),
        )
        volumes = [
            CORE.VolumeArgs(name="tmp", empty_dir=CORE.EmptyDirVolumeSourceArgs(size_limit="64Mi")),
            *self._aws_volumes(),
        ]
        if job:
            return CORE.PodSpecArgs(
                service_account_name=account.metadata.apply(_name),
                automount_service_account_token=False,
                enable_service_links=False,
                restart_policy="Never",
                security_context=hardened,
                containers=[container],
                volumes=volumes,
            )
        return CORE.PodSpecArgs(
            service_account_name=account.metadata.apply(_name),
            automount_service_account_token=False,
            enable_service_links=False,
            termination_grace_period_seconds=grace_seconds(self._upstream.drain_seconds),
            security_context=hardened,
            containers=[container],
            volumes=volumes,
            topology_spread_constraints=[
                _spread("topology.kubernetes.io/zone", selector),
                _spread("kubernetes.io/hostname", selector),
            ],
        )

    def _aws_identity(self, namespace: str, creds: SecretCredentials) -> AwsIdentity:
        """Two IAM roles (IRSA), each assumed by one service account: the app's pods read the
        app role's secret, nothing else; the migration's pod reads the roles' secrets and RDS's
        managed master secret. The master password never reaches a role the app can assume."""
        app = self._irsa_role(
            "role",
            APP_NAME,
            namespace,
            [creds.app_secret_arn],
            "the app's pods: their database credentials in Secrets Manager, nothing else",
            creds,
        )
        migration = self._irsa_role(
            "migration-role",
            MIGRATION_NAME,
            namespace,
            _secret_arns(creds),
            "the migration's Job: the database roles' and the master user's secrets, nothing else",
            creds,
        )
        return AwsIdentity(
            role_arn=app[0].arn,
            migration_role_arn=migration[0].arn,
            creds=creds,
            role_policies=(app[1], migration[1]),
        )

    def _irsa_role(
        self,
        part: str,
        account: str,
        namespace: str,
        secrets: Sequence[pulumi.Input[str]],
        description: str,
        creds: SecretCredentials,
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        role = aws.iam.Role(
            f"{self._name}-{part}",
            description=description,
            assume_role_policy=pulumi.Output.all(creds.oidc_provider_arn, creds.oidc_issuer).apply(
                lambda a: irsa_trust(a[0], a[1], namespace, account)
            ),
            opts=self._child,
        )
        policy = aws.iam.RolePolicy(
            f"{self._name}-{part}",
            role=role.id,
            policy=pulumi.Output.all(*secrets).apply(
                lambda arns: iam.document(
                    [
                        {
                            "Sid": "ReadTheDatabaseCredentials",
                            "Effect": "Allow",
                            "Action": "secretsmanager:GetSecretValue",
                            "Resource": list(arns),
                        }
                    ]
                )
            ),
            opts=self._child,
        )
        return role, policy

    def _aws_env(self, migration: bool) -> list[CORE.EnvVarArgs]:
        """What boto3 needs to assume the container's role with the projected token, and the
        secrets it reads: the app its role's (DB_SECRET_ARN); the migration RDS's master secret
        (when RDS manages it) and the roles' secrets their passwords come from."""
        if self._aws is None:
            return []
        creds = self._aws.creds
        env = [
            CORE.EnvVarArgs(name="AWS_REGION", value=creds.region),
            CORE.EnvVarArgs(name="AWS_STS_REGIONAL_ENDPOINTS", value="regional"),
            CORE.EnvVarArgs(
                name="AWS_ROLE_ARN",
                value=self._aws.migration_role_arn if migration else self._aws.role_arn,
            ),
            CORE.EnvVarArgs(name="AWS_WEB_IDENTITY_TOKEN_FILE", value=f"{AWS_TOKEN_DIR}/token"),
        ]
        if not migration:
            return [*env, CORE.EnvVarArgs(name="DB_SECRET_ARN", value=creds.app_secret_arn)]
        if creds.master_secret_arn is not None:
            env.append(CORE.EnvVarArgs(name="DB_SECRET_ARN", value=creds.master_secret_arn))
        env.append(CORE.EnvVarArgs(name="APP_DB_SECRET_ARN", value=creds.app_secret_arn))
        if creds.job_secret_arn is not None:
            env.append(CORE.EnvVarArgs(name="JOB_DB_SECRET_ARN", value=creds.job_secret_arn))
        return env

    def _aws_mounts(self) -> list[CORE.VolumeMountArgs]:
        if self._aws is None:
            return []
        return [CORE.VolumeMountArgs(name="aws-token", mount_path=AWS_TOKEN_DIR, read_only=True)]

    def _aws_volumes(self) -> list[CORE.VolumeArgs]:
        """The service account's token for STS only (audience sts.amazonaws.com, a day at most,
        refreshed by the kubelet); the Kubernetes API token stays unmounted."""
        if self._aws is None:
            return []
        token = CORE.ServiceAccountTokenProjectionArgs(
            audience=AWS_TOKEN_AUDIENCE, expiration_seconds=86400, path="token"
        )
        return [
            CORE.VolumeArgs(
                name="aws-token",
                projected=CORE.ProjectedVolumeSourceArgs(
                    sources=[CORE.VolumeProjectionArgs(service_account_token=token)]
                ),
            )
        ]

    def _service(self) -> CORE.Service:
        return CORE.Service(
            f"{self._name}-service",
            metadata=self._meta(APP_NAME),
            # Type LoadBalancer for its health check node port only: kube-proxy answers
            # /healthz there with 200 while the node holds a ready app pod, 503 otherwise, and the
            # ALB's target group checks it. The class is one no controller implements, so no
            # cloud load balancer is made. Local: a node sends only to its own pods (no second
            # hop, the client's address kept), so a node without a ready pod leaves the ALB.
            spec=CORE.ServiceSpecArgs(
                type="LoadBalancer",
                load_balancer_class=SERVICE_LB_CLASS,
                allocate_load_balancer_node_ports=True,
                external_traffic_policy="Local",
                health_check_node_port=self._cfg.health_check_node_port,
                selector=self._selector,
                ports=[
                    CORE.ServicePortArgs(
                        name="http",
                        protocol="TCP",
                        port=80,
                        target_port="http",
                        node_port=self._cfg.node_port,
                    )
                ],
            ),
            opts=self._child,
        )

    def _autoscaling(self, deployment: k8s.apps.v1.Deployment) -> None:
        """The HorizontalPodAutoscaler (CPU) and the PodDisruptionBudget."""
        hpa = k8s.autoscaling.v2
        hpa.HorizontalPodAutoscaler(
            f"{self._name}-hpa",
            metadata=self._meta(APP_NAME),
            spec=hpa.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=hpa.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=deployment.metadata.apply(_name)
                ),
                min_replicas=self._cfg.min_replicas,
                max_replicas=self._cfg.max_replicas,
                metrics=[
                    hpa.MetricSpecArgs(
                        type="Resource",
                        resource=hpa.ResourceMetricSourceArgs(
                            name="cpu",
                            target=hpa.MetricTargetArgs(
                                type="Utilization",
                                average_utilization=self._cfg.target_cpu_percent,
                            ),
                        ),
                    )
                ],
            ),
            opts=self._child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{self._name}-pdb",
            metadata=self._meta(APP_NAME),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=META.LabelSelectorArgs(match_labels=self._selector),
                # A crash-looping pod must not block a node drain.
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=self._child,
        )

    def _network_policies(
        self, vpc_cidr: str, database_cidrs: Sequence[str], aws_apis: bool = False
    ) -> None:
        net = k8s.networking.v1
        net.NetworkPolicy(
            f"{self._name}-default-deny",
            metadata=self._meta("default-deny"),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=META.LabelSelectorArgs(), policy_types=["Ingress", "Egress"]
            ),
            opts=self._child,
        )
        net.NetworkPolicy(
            f"{self._name}-netpol",
            metadata=self._meta(APP_NAME),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=META.LabelSelectorArgs(match_labels=self._selector),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    net.NetworkPolicyIngressRuleArgs(
                        from_=[net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=vpc_cidr))],
                        ports=[net.NetworkPolicyPortArgs(protocol="TCP", port=CONTAINER_PORT)],
                    ),
                    # The metrics port from inside the VPC only (the managed collector's ENIs in
                    # the private subnets, obs-interface.md); the ALB has no route to it.
                    net.NetworkPolicyIngressRuleArgs(
                        from_=[net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=vpc_cidr))],
                        ports=[net.NetworkPolicyPortArgs(protocol="TCP", port=METRICS_PORT)],
                    ),
                ],
                egress=_egress(database_cidrs, aws_apis),
            ),
            opts=self._child,
        )
        # The migration's pods: nothing in; out to DNS, the database (and STS, Secrets Manager).
        net.NetworkPolicy(
            f"{self._name}-migration-netpol",
            metadata=self._meta(MIGRATION_NAME, labels=self._migration_labels),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=META.LabelSelectorArgs(match_labels=self._migration_selector),
                policy_types=["Ingress", "Egress"],
                egress=_egress(database_cidrs, aws_apis),
            ),
            opts=self._child,
        )
