"""The Workload component (infra/components/workload.py), read from the Plan.

Every assertion reads the Plan the offline engine records (the objects as the Kubernetes provider
would receive them), never the component's Python objects. Each property is checked over four
plans: dev and prod as infra/stack.py wires them, and a throwaway project that runs only the
component (tests/workload_harness.py) once with `providers={"kubernetes": ...}` and once with
`provider=...`. The harness stays because it knows the real secret values (so it can prove they
never reach a plan), pins the component's own outputs, and covers both ways of passing a provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backbone.plan import SECRET, Plan, Resource
from backbone.synth import load_config, resolve, synth
from infra.components.workload import (
    APP_DRAIN_SECONDS,
    DRAIN_SECONDS,
    ENDPOINT_PROPAGATION_SECONDS,
    METRICS_PORT,
    MIGRATION_BACKOFF_LIMIT,
    MIGRATION_DEADLINE_SECONDS,
    check_image,
    cpu_limit,
)
from tests import workload_harness as H
from tests.realparts import REPO

WORKLOAD = "backbone:workload:Workload"
OBJECTS = {
    ("ConfigMap", "shortener-config"),
    ("Secret", "shortener-secrets"),
    ("ServiceAccount", "shortener"),
    ("ServiceAccount", "shortener-migrate"),
    ("Deployment", "shortener"),
    ("Service", "shortener"),
    ("HorizontalPodAutoscaler", "shortener"),
    ("PodDisruptionBudget", "shortener"),
    ("NetworkPolicy", "default-deny"),
    ("NetworkPolicy", "shortener"),
    ("NetworkPolicy", "shortener-migrate"),
}


@dataclass(frozen=True)
class Case:
    """A plan holding one Workload and what it was given."""

    plan: Plan
    namespace: str
    image: str
    node_port: int
    health_check_node_port: int
    replicas: int
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int
    cpu: str
    memory: str
    vpc_cidr: str
    database_cidrs: list[str]
    provider: str
    secrets: tuple[str, ...] = ()
    harness: bool = False

    def k8s(self) -> list[Resource]:
        # The workload's objects (its component's children), not other components' (the
        # monitoring rules ConfigMap, the node autoscaler's objects, the observability
        # collector's ClusterRole and binding: their own tests check those).
        (workload,) = self.plan.of_type(WORKLOAD)
        return [
            r
            for r in self.plan
            if r.package == "kubernetes" and not r.is_provider and r.parent == workload.urn
        ]

    def obj(self, kind: str, name: str = "shortener") -> dict[str, Any]:
        found = [
            r.inputs
            for r in self.k8s()
            if r.inputs.get("kind") == kind and r.inputs["metadata"].get("name") == name
        ]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.obj("Deployment")["spec"]["template"]["spec"]
        return spec

    def job(self) -> Resource:
        (job,) = [r for r in self.k8s() if r.inputs.get("kind") == "Job"]
        return job

    def job_pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.job().inputs["spec"]["template"]["spec"]
        return spec

    def containers(self) -> list[dict[str, Any]]:
        """The app's container and the migration's."""
        return [*self.pod()["containers"], *self.job_pod()["containers"]]


@pytest.fixture(scope="session")
def harness_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.make_project(tmp_path_factory.mktemp("workload-harness"))


def harness_case(project: Path, stack: str) -> Case:
    plan = synth(str(project / "stacks" / f"Pulumi.{stack}.yaml"))
    return Case(
        plan=plan,
        namespace=H.NAMESPACE,
        image=H.IMAGE,
        node_port=H.NODE_PORT,
        health_check_node_port=H.HEALTH_CHECK_NODE_PORT,
        replicas=3,
        min_replicas=2,
        max_replicas=6,
        target_cpu_percent=65,
        cpu="300m",
        memory="384Mi",
        vpc_cidr=H.VPC_CIDR,
        database_cidrs=H.DATABASE_CIDRS,
        provider=plan.one("pulumi:providers:kubernetes").urn,
        secrets=(H.DATABASE_URL, H.API_TOKEN, "Harness-Db-Pa55word"),
        harness=True,
    )


def stack_case(plan: Plan) -> Case:
    """A project stack (dev, prod): what infra/stack.py gives the Workload, from the stack file."""
    cfg = load_config(resolve(plan.stack, REPO))
    (namespace,) = [r for r in plan.of_type("kubernetes:core/v1:Namespace")]
    (provider,) = plan.of_type("pulumi:providers:kubernetes")
    return Case(
        plan=plan,
        namespace=namespace.inputs["metadata"]["name"],
        # The image the Deployment runs is the one the registry pushed, by digest.
        image=plan.outputs["imageRef"],
        node_port=cfg.app.node_port,
        health_check_node_port=cfg.app.health_check_node_port,
        replicas=cfg.app.replicas,
        min_replicas=cfg.app.min_replicas,
        max_replicas=cfg.app.max_replicas,
        target_cpu_percent=cfg.app.target_cpu_percent,
        cpu=cfg.app.cpu,
        memory=cfg.app.memory,
        vpc_cidr=cfg.network.cidr,
        database_cidrs=cfg.network.subnets()[1],
        provider=provider.urn,
    )


_CASES: dict[str, Case] = {}


@pytest.fixture(scope="session", params=[*sorted(H.STACKS), "dev", "prod"])
def case(request: pytest.FixtureRequest, harness_project: Path, plan_of: Any) -> Case:
    key = str(request.param)
    if key not in _CASES:
        if key in H.STACKS:
            _CASES[key] = harness_case(harness_project, key)
        else:
            _CASES[key] = stack_case(plan_of(key))
    return _CASES[key]


# ------------------------------------------------------------------------------------------------
# Objects, provider, parent


def test_objects(case: Case) -> None:
    got = {(r.inputs["kind"], r.inputs["metadata"]["name"]) for r in case.k8s()}
    # The project's stacks give the migration its own Secret (the master user's URL and the
    # roles it creates); the harness gives none, and the migration reads the app's.
    extra = set() if case.harness else {("Secret", "shortener-migration")}
    # the migration's Job, named by a hash of what it runs (tests below)
    (job,) = [k for k in got if k[0] == "Job"]
    assert job[1].startswith("shortener-migrate-") and len(job[1]) == len("shortener-migrate-") + 10
    assert got - {job} == {("Namespace", case.namespace), *OBJECTS, *extra}
    assert len(case.k8s()) == len(OBJECTS) + 2 + len(extra)


def test_every_kubernetes_resource_uses_the_given_provider(case: Case) -> None:
    workload = case.plan.one(WORKLOAD)
    for r in case.k8s():
        assert r.provider == case.provider, r.name
        assert r.parent == workload.urn, r.name
        assert r.name.startswith(f"{workload.name}-"), r.name


def test_namespaced_objects_live_in_the_namespace(case: Case) -> None:
    ns = case.obj("Namespace", case.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for r in case.k8s():
        if r.inputs["kind"] != "Namespace":
            assert r.inputs["metadata"]["namespace"] == case.namespace, r.name


def test_outputs(case: Case) -> None:
    if not case.harness:
        # in a stack, the app's namespace is what the stack reports (and the API token, secret)
        assert case.plan.outputs["appNamespace"] == case.namespace
        assert case.plan.outputs["appApiToken"] == "[secret]"
        return
    assert case.plan.outputs == {
        "namespace": case.namespace,
        "serviceName": "shortener",
        "nodePort": case.node_port,
    }


# ------------------------------------------------------------------------------------------------
# Deployment


def test_deployment_replicas_strategy_and_hpa_ownership(case: Case) -> None:
    r = next(r for r in case.k8s() if r.inputs["kind"] == "Deployment")
    spec = r.inputs["spec"]
    assert spec["replicas"] == case.replicas
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    # The autoscaler owns the count after creation: a later `pulumi up` must not reset it.
    assert r.ignore_changes == ["spec.replicas"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_containers_image_by_digest(case: Case) -> None:
    containers = case.containers()
    assert [c["name"] for c in containers] == ["shortener", "migrate"]
    assert "initContainers" not in case.pod()
    for c in containers:
        assert c["image"] == case.image
        assert "@sha256:" in c["image"] and not c["image"].endswith(":latest")
        assert c["imagePullPolicy"] in {"IfNotPresent", "Always"}


def test_migration_runs_in_its_own_job_before_the_pods_roll(case: Case) -> None:
    job = case.job()
    spec = job.inputs["spec"]
    pod = case.job_pod()
    (migrate,) = pod["containers"]
    assert job.inputs["apiVersion"] == "batch/v1"
    assert migrate["command"] == ["python", "-m", "shortener.migrate"]
    # runs once: the Job retries a failed pod (twice), within a deadline Pulumi waits out
    assert pod["restartPolicy"] == "Never"
    assert spec["backoffLimit"] == MIGRATION_BACKOFF_LIMIT
    assert spec["activeDeadlineSeconds"] == MIGRATION_DEADLINE_SECONDS
    assert job.custom_timeouts and job.custom_timeouts["create"] == "11m"
    # kept after it completes (no TTL: a Job deleted behind Pulumi's back would be re-created
    # and re-run by the next refresh and up); a failed one is replaced at the next `pulumi up`
    assert "ttlSecondsAfterFinished" not in spec
    assert job.inputs["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true"
    # the Deployment waits for it: Pulumi creates the Deployment's new revision only after the
    # Job's Complete condition (pulumi-kubernetes' Job await)
    deployment = next(r for r in case.k8s() if r.inputs["kind"] == "Deployment")
    assert job.urn in deployment.dependencies
    # its pods are not the app's: no Service, PDB or app NetworkPolicy selects them
    labels = job.inputs["spec"]["template"]["metadata"]["labels"]
    app_selector = case.obj("Deployment")["spec"]["selector"]["matchLabels"]
    assert not app_selector.items() <= labels.items()
    assert labels["app.kubernetes.io/name"] == "shortener-migrate"
    if case.harness:
        # no migration Secret given: the migration reads the app's
        assert migrate["envFrom"] == case.pod()["containers"][0]["envFrom"]
    else:
        # The master user's URL reaches the migration only, never the app's container.
        assert migrate["envFrom"] == [
            {"configMapRef": {"name": "shortener-config"}},
            {"secretRef": {"name": "shortener-migration"}},
        ]
        secret = case.obj("Secret", "shortener-migration")
        assert secret["stringData"] == SECRET
        # the roles' passwords come from their secrets (JOB_DB_SECRET_ARN, APP_DB_SECRET_ARN)
        assert (
            secret["metadata"]["annotations"]["backbone.dev/secret-keys"]
            == "APP_DB_USER,DATABASE_URL,JOB_DB_USER"
        )
    assert case.obj("ConfigMap", "shortener-config")["data"]["MIGRATE_ON_STARTUP"] == "false"


def test_a_new_image_or_migration_makes_a_new_job() -> None:
    from infra.components.workload import migration_job_name
    from infra.config import AppConfig

    cfg = AppConfig()
    image = "r@sha256:" + "a" * 64
    base = migration_job_name(image, {"PORT": "8000"}, cfg, ["arn:s"])
    assert base == migration_job_name(image, {"PORT": "8000"}, cfg, ["arn:s"])
    changed = {
        migration_job_name("r@sha256:" + "b" * 64, {"PORT": "8000"}, cfg, ["arn:s"]),
        migration_job_name(image, {"PORT": "8001"}, cfg, ["arn:s"]),
        migration_job_name(image, {"PORT": "8000"}, cfg, ["arn:t"]),
        # the database's address (a restore: a new instance) is one of the inputs stack.py gives
        migration_job_name(image, {"PORT": "8000"}, cfg, ["arn:s", "db2.example"]),
        migration_job_name(
            image, {"PORT": "8000"}, cfg.model_copy(update={"canary_link_code": "other"}), ["arn:s"]
        ),
    }
    assert base not in changed and len(changed) == 5
    assert all(n.startswith("shortener-migrate-") and len(n) <= 63 for n in {base, *changed})


def test_probes(case: Case) -> None:
    (app,) = case.pod()["containers"]
    # the metrics port is declared (the scraper selects the port named `metrics`) and is in no
    # Service: the load balancer cannot reach it
    assert app["ports"] == [
        {"containerPort": 8000, "name": "http", "protocol": "TCP"},
        {"containerPort": METRICS_PORT, "name": "metrics", "protocol": "TCP"},
    ]
    assert all(p["targetPort"] != "metrics" for p in case.obj("Service")["spec"]["ports"])
    # readiness is the app's /readyz (no longer following the database), liveness shallow
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert app["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = app["startupProbe"]
    # The app waits up to STARTUP_DB_TIMEOUT_SECONDS for its database before it listens.
    assert startup["periodSeconds"] * startup["failureThreshold"] > 30


def test_resources(case: Case) -> None:
    expected = {
        "requests": {"cpu": case.cpu, "memory": case.memory},
        "limits": {"cpu": cpu_limit(case.cpu), "memory": case.memory},
    }
    for c in case.containers():
        assert c["resources"] == expected, c["name"]


def test_security_context(case: Case) -> None:
    pod = case.pod()
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "shortener"
    assert case.obj("ServiceAccount")["automountServiceAccountToken"] is False
    job = case.job_pod()
    assert job["automountServiceAccountToken"] is False
    assert job["serviceAccountName"] == "shortener-migrate"
    assert case.obj("ServiceAccount", "shortener-migrate")["automountServiceAccountToken"] is False
    for spec in (pod, job):
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
        assert not any(k in spec for k in ("hostNetwork", "hostPID", "hostIPC"))
    for c in case.containers():
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, c["name"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC"))


def test_spread_over_zones_and_nodes(case: Case) -> None:
    pod = case.pod()
    selector = case.obj("Deployment")["spec"]["selector"]
    keys = [t["topologyKey"] for t in pod["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for t in pod["topologySpreadConstraints"]:
        assert t["maxSkew"] == 1
        assert t["labelSelector"] == selector


def _drain_seconds(case: Case) -> int:
    """How long the load balancer of the case takes to stop sending to a pod being stopped: the
    target group's health check (interval x unhealthy threshold) plus its deregistration delay."""
    if case.harness:
        return H.UPSTREAM_DRAIN_SECONDS
    tg = case.plan.one("aws:lb/targetGroup:TargetGroup").inputs
    check = tg["healthCheck"]
    return int(check["interval"]) * int(check["unhealthyThreshold"]) + int(
        tg["deregistrationDelay"]
    )


def test_graceful_shutdown(case: Case) -> None:
    pod = case.pod()
    (app,) = pod["containers"]
    pause = app["lifecycle"]["preStop"]["sleep"]["seconds"]
    # No new request after SIGTERM: the pause outlasts the load balancer's drain plus the
    # endpoint's removal reaching every node.
    assert pause >= _drain_seconds(case) + ENDPOINT_PROPAGATION_SECONDS
    data = case.obj("ConfigMap", "shortener-config")["data"]
    assert data["SHUTDOWN_TIMEOUT_SECONDS"] == str(DRAIN_SECONDS)
    assert data["SHUTDOWN_DRAIN_SECONDS"] == str(APP_DRAIN_SECONDS)
    # The grace period (which counts the hook) covers the pause, the drain phase, the in-flight
    # timeout and the click flush, or the kubelet kills mid-drain.
    assert pod["terminationGracePeriodSeconds"] >= pause + APP_DRAIN_SECONDS + DRAIN_SECONDS + 5


def test_keep_alive_forwarded_headers_metrics_and_docs_settings(case: Case) -> None:
    data = case.obj("ConfigMap", "shortener-config")["data"]
    idle = (
        H.IDLE_TIMEOUT
        if case.harness
        else case.plan.one("aws:lb/loadBalancer:LoadBalancer").inputs["idleTimeout"]
    )
    # one setting: the app derives its keep-alive (idle + 5 s) from the ALB's idle timeout
    assert data["LB_IDLE_TIMEOUT_SECONDS"] == str(idle)
    assert "KEEPALIVE_TIMEOUT_SECONDS" not in data
    assert data["FORWARDED_ALLOW_IPS"] == case.vpc_cidr
    assert data["METRICS_PORT"] == str(METRICS_PORT)
    assert data["DOCS_ENABLED"] == "false"


def test_config_map_holds_no_secret(case: Case) -> None:
    data = case.obj("ConfigMap", "shortener-config")["data"]
    assert data["PORT"] == "8000"
    assert data["LOG_LEVEL"] == "INFO"
    assert not {"DATABASE_URL", "API_TOKEN"} & set(data)
    pod_env = case.pod()["containers"][0]["envFrom"]
    assert pod_env == [
        {"configMapRef": {"name": "shortener-config"}},
        {"secretRef": {"name": "shortener-secrets"}},
    ]


def test_secret_values_are_masked_in_the_plan(case: Case) -> None:
    secret = case.obj("Secret", "shortener-secrets")
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == SECRET
    assert "data" not in secret
    assert secret["metadata"]["annotations"]["backbone.dev/secret-keys"] == "API_TOKEN,DATABASE_URL"
    dumped = case.plan.dumps()
    for value in case.secrets:
        assert value not in dumped


# ------------------------------------------------------------------------------------------------
# Service, HPA, PDB, NetworkPolicy


def test_service_node_port(case: Case) -> None:
    spec = case.obj("Service")["spec"]
    # LoadBalancer for its health check node port only; a class no controller serves, so no
    # cloud load balancer appears; Local, so a node sends only to its own ready pods
    assert spec["type"] == "LoadBalancer"
    assert spec["loadBalancerClass"] == "backbone.dev/pulumi-alb"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["healthCheckNodePort"] == case.health_check_node_port
    assert spec["ports"] == [
        {
            "name": "http",
            "protocol": "TCP",
            "port": 80,
            "targetPort": "http",
            "nodePort": case.node_port,
        }
    ]
    assert spec["selector"] == case.obj("Deployment")["spec"]["selector"]["matchLabels"]


def test_hpa(case: Case) -> None:
    spec = case.obj("HorizontalPodAutoscaler")["spec"]
    assert case.obj("HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shortener",
    }
    assert spec["minReplicas"] == case.min_replicas
    assert spec["maxReplicas"] == case.max_replicas
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": case.target_cpu_percent},
            },
        }
    ]


def test_pdb_lets_a_drain_proceed_and_keeps_the_app_up(case: Case) -> None:
    pdb = case.obj("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    spec = pdb["spec"]
    assert spec["selector"] == case.obj("Deployment")["spec"]["selector"]
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # maxUnavailable 1: one eviction at a time is always allowed (never a stuck drain, even at
    # one replica); with min_replicas >= 2 at least one pod serves throughout.
    assert spec == {**spec, "maxUnavailable": 1}
    assert "minAvailable" not in spec
    hpa = case.obj("HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] - spec["maxUnavailable"] >= 1


def test_network_policies(case: Case) -> None:
    deny = case.obj("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    allow = case.obj("NetworkPolicy", "shortener")["spec"]
    assert allow["podSelector"] == case.obj("Deployment")["spec"]["selector"]
    assert allow["policyTypes"] == ["Ingress", "Egress"]
    assert allow["ingress"] == [
        {
            "from": [{"ipBlock": {"cidr": case.vpc_cidr}}],
            "ports": [{"port": 8000, "protocol": "TCP"}],
        },
        # the metrics port from inside the VPC (the managed collector's interfaces)
        {
            "from": [{"ipBlock": {"cidr": case.vpc_cidr}}],
            "ports": [{"port": METRICS_PORT, "protocol": "TCP"}],
        },
    ]
    # the migration's pods: nothing in; out only where the app's pods may go
    migration = case.obj("NetworkPolicy", "shortener-migrate")["spec"]
    assert migration["podSelector"] == {
        "matchLabels": {
            k: v
            for k, v in case.job().inputs["spec"]["template"]["metadata"]["labels"].items()
            if k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")
        }
    }
    assert migration["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in migration and migration["egress"] == allow["egress"]
    dns, database, *aws_apis = allow["egress"]
    # HTTPS out only where the pods read their credentials from Secrets Manager (the stacks; the
    # harness gives none): STS and Secrets Manager have no fixed addresses to name
    assert aws_apis == (
        []
        if case.harness
        else [
            {
                "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                "ports": [{"port": 443, "protocol": "TCP"}],
            }
        ]
    )
    assert dns == {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }
    assert database == {
        "to": [{"ipBlock": {"cidr": c}} for c in case.database_cidrs],
        "ports": [{"port": 5432, "protocol": "TCP"}],
    }


# ------------------------------------------------------------------------------------------------
# The wiring in dev and prod (infra/stack.py)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_wiring(plan_of: Any, stack: str) -> None:
    plan = plan_of(stack)
    case = stack_case(plan)
    assert len(plan.of_type(WORKLOAD)) == 1
    # The Kubernetes provider is the cluster's, built from its kubeconfig.
    provider = plan.by_urn(case.provider)
    assert plan.by_urn(str(provider.parent)).type == "backbone:cluster:Cluster"
    # The ALB's targets are the nodes on the Service's node port.
    service = case.obj("Service")
    target_group = plan.one("aws:lb/targetGroup:TargetGroup")
    assert target_group.inputs["port"] == service["spec"]["ports"][0]["nodePort"]
    # The pods run the image the registry pushed (imageRef is registry.image_ref), by digest.
    assert case.pod()["containers"][0]["image"] == case.image
    assert "@sha256:" in case.image
    # The Secret's values come from the database and a generated token, both secret.
    secret = next(r for r in case.k8s() if r.inputs["kind"] == "Secret")
    sources = {plan.by_urn(urn).type for urn in secret.dependencies}
    assert "aws:rds/instance:Instance" in sources, sources
    assert "random:index/randomPassword:RandomPassword" in sources, sources
    assert secret.inputs["stringData"] == SECRET
    # The PDB and HPA keep the app up through a node drain: at least two pods at all times,
    # of which one may be evicted (as planned, not as configured).
    hpa = next(r for r in case.k8s() if r.inputs["kind"] == "HorizontalPodAutoscaler")
    assert hpa.inputs["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("stack", ["local", "free-tier"])
def test_no_workload_without_a_cluster(plan_of: Any, stack: str) -> None:
    plan = plan_of(stack)
    assert not plan.of_type(WORKLOAD)
    assert not [r for r in plan if r.package == "kubernetes"]


# ------------------------------------------------------------------------------------------------
# The pure parts


def test_check_image_accepts_only_digests() -> None:
    assert check_image(H.IMAGE) == H.IMAGE
    for bad in ("repo:latest", "repo", "repo:1.2", "repo@sha256:abc", f"{H.IMAGE} "):
        with pytest.raises(ValueError, match="immutable"):
            check_image(bad)


def test_cpu_limit_is_twice_the_request() -> None:
    assert cpu_limit("250m") == "500m"
    assert cpu_limit("1") == "2"
    with pytest.raises(ValueError):
        cpu_limit("0.5")


def test_bad_replica_counts_and_node_ports_are_config_errors_before_any_object() -> None:
    """The component no longer re-checks its settings: the config section does, once."""
    from infra.config import ConfigError, parse

    for section, match in (
        ({"replicas": 1, "minReplicas": 2}, "replicas"),
        ({"maxReplicas": 1}, "replicas"),
        ({"nodePort": 8080}, "nodePort"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse({"aws:region": "us-east-1", "backbone:app": section}, "Pulumi.t.yaml", "t")
