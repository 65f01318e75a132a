"""The cluster autoscaler: adds nodes when pods are Pending, removes idle ones, within the managed
node group's minNodes..maxNodes.

Rendered by the kit (no Helm chart): a service account whose IAM role (IRSA, through the cluster's
OIDC provider) may change only the Auto Scaling groups tagged as this cluster's (EKS tags a managed
node group's group `k8s.io/cluster-autoscaler/<cluster name>: owned`), the RBAC the autoscaler's
AWS example manifest lists, and a Deployment running the image of the cluster's Kubernetes minor
(infra.config.catalogues.AUTOSCALER_VERSIONS) with auto-discovery of the node groups by those tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components import iam
from infra.components.cluster import Cluster
from infra.config import catalogues as catalogue

NAMESPACE = "kube-system"
NAME = "cluster-autoscaler"
PORT = 8085
META = k8s.meta.v1
RBAC = k8s.rbac.v1
CORE = k8s.core.v1

# What the autoscaler's AWS documentation (cluster-autoscaler/cloudprovider/aws/README.md, "Full
# Cluster Autoscaler Features Policy (Recommended)") lists: changes only on this cluster's groups,
# reads everywhere (Describe* calls cannot be scoped to resources).
SCALING_ACTIONS = (
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
)
DESCRIBE_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:DescribeTags",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetInstanceTypesFromInstanceRequirements",
    "eks:DescribeNodegroup",
)

# checkov findings accepted on the Deployment, each with its reason (checkov.io/skipN).
CHECKOV_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_43=pinned by its release tag from infra/config/catalogues.py (one per "
    "Kubernetes minor); the digests are not in any source this kit can read offline",
}
# The API token, mounted explicitly (automountServiceAccountToken stays off): a bound token that
# expires, the cluster's CA and the namespace, where client-go looks for them.
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def policy(cluster_name: str) -> str:
    """The autoscaler's IAM policy: scaling only on groups tagged as this cluster's."""
    return iam.document(
        [
            {
                "Effect": "Allow",
                "Action": list(SCALING_ACTIONS),
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"
                    }
                },
            },
            {"Effect": "Allow", "Action": list(DESCRIBE_ACTIONS), "Resource": "*"},
        ]
    )


def _rule(groups: list[str], resources: list[str], verbs: list[str], **kw: Any) -> Any:
    return RBAC.PolicyRuleArgs(api_groups=groups, resources=resources, verbs=verbs, **kw)


CLUSTER_RULES = [
    _rule([""], ["events", "endpoints"], ["create", "patch"]),
    _rule([""], ["pods/eviction"], ["create"]),
    _rule([""], ["pods/status"], ["update"]),
    _rule([""], ["endpoints"], ["get", "update"], resource_names=[NAME]),
    _rule([""], ["nodes"], ["watch", "list", "get", "update"]),
    _rule(
        [""],
        [
            "namespaces",
            "pods",
            "services",
            "replicationcontrollers",
            "persistentvolumeclaims",
            "persistentvolumes",
        ],
        ["watch", "list", "get"],
    ),
    _rule(["extensions"], ["replicasets", "daemonsets"], ["watch", "list", "get"]),
    _rule(["policy"], ["poddisruptionbudgets"], ["watch", "list"]),
    _rule(["apps"], ["statefulsets", "replicasets", "daemonsets"], ["watch", "list", "get"]),
    _rule(
        ["storage.k8s.io"],
        ["storageclasses", "csinodes", "csidrivers", "csistoragecapacities"],
        ["watch", "list", "get"],
    ),
    _rule(["batch", "extensions"], ["jobs"], ["get", "list", "watch", "patch"]),
    _rule(["coordination.k8s.io"], ["leases"], ["create"]),
    _rule(["coordination.k8s.io"], ["leases"], ["get", "update"], resource_names=[NAME]),
]
NAMESPACE_RULES = [
    _rule([""], ["configmaps"], ["create", "list", "watch"]),
    _rule(
        [""],
        ["configmaps"],
        ["delete", "get", "update", "watch"],
        resource_names=["cluster-autoscaler-status", "cluster-autoscaler-priority-expander"],
    ),
]


def args(cluster_name: str) -> list[str]:
    return [
        "./cluster-autoscaler",
        "--cloud-provider=aws",
        "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,"
        f"k8s.io/cluster-autoscaler/{cluster_name}",
        "--expander=least-waste",
        "--balance-similar-node-groups",
        "--skip-nodes-with-system-pods=false",
        "--skip-nodes-with-local-storage=false",
        "--stderrthreshold=info",
        "--v=2",
    ]


def _token_volume() -> CORE.VolumeArgs:
    return CORE.VolumeArgs(
        name="api-token",
        projected=CORE.ProjectedVolumeSourceArgs(
            default_mode=0o444,
            sources=[
                CORE.VolumeProjectionArgs(
                    service_account_token=CORE.ServiceAccountTokenProjectionArgs(
                        path="token", expiration_seconds=3607
                    )
                ),
                CORE.VolumeProjectionArgs(
                    config_map=CORE.ConfigMapProjectionArgs(
                        name="kube-root-ca.crt",
                        items=[CORE.KeyToPathArgs(key="ca.crt", path="ca.crt")],
                    )
                ),
                CORE.VolumeProjectionArgs(
                    downward_api=CORE.DownwardAPIProjectionArgs(
                        items=[
                            CORE.DownwardAPIVolumeFileArgs(
                                path="namespace",
                                field_ref=CORE.ObjectFieldSelectorArgs(
                                    field_path="metadata.namespace"
                                ),
                            )
                        ]
                    )
                ),
            ],
        ),
    )


@dataclass(frozen=True)
class Access:
    role: aws.iam.Role
    account: k8s.core.v1.ServiceAccount


class Autoscaler(pulumi.ComponentResource):
    """`cluster` is the Cluster it scales (its OIDC provider, name, version and region);
    `opts.providers` carries the aws and kubernetes providers."""

    def __init__(
        self,
        name: str,
        cluster: Cluster,
        *,
        region: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:autoscaler:Autoscaler", name, None, opts)
        self._name, self._cluster = name, cluster
        self.image = catalogue.autoscaler_image(cluster.version)
        access = self._access()
        self.role = access.role
        self._rbac(access.account)
        self.deployment = self._deployment(access.account, region)
        self._network_policy()
        self.register_outputs({"roleArn": self.role.arn, "image": self.image})

    def _child(self, **kw: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **kw)

    def _meta(self, **kw: Any) -> META.ObjectMetaArgs:
        labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "backbone"}
        return META.ObjectMetaArgs(name=NAME, namespace=NAMESPACE, labels=labels, **kw)

    def _access(self) -> Access:
        """The IRSA role, its scoped policy, and the service account that assumes it."""
        cluster = self._cluster
        role = cluster.irsa_role(f"{self._name}-role", NAMESPACE, NAME, parent=self)
        aws.iam.RolePolicy(
            f"{self._name}-policy",
            role=role.id,
            policy=cluster.cluster_name.apply(policy),
            opts=self._child(),
        )
        account = CORE.ServiceAccount(
            f"{self._name}-account",
            metadata=self._meta(annotations={"eks.amazonaws.com/role-arn": role.arn}),
            opts=self._child(),
        )
        return Access(role=role, account=account)

    def _rbac(self, account: CORE.ServiceAccount) -> None:
        subject = [RBAC.SubjectArgs(kind="ServiceAccount", name=NAME, namespace=NAMESPACE)]
        labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "backbone"}
        cluster_role = RBAC.ClusterRole(
            f"{self._name}-clusterrole",
            metadata=META.ObjectMetaArgs(name=NAME, labels=labels),
            rules=CLUSTER_RULES,
            opts=self._child(),
        )
        RBAC.ClusterRoleBinding(
            f"{self._name}-clusterrolebinding",
            metadata=META.ObjectMetaArgs(name=NAME, labels=labels),
            role_ref=RBAC.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=NAME
            ),
            subjects=subject,
            opts=self._child(depends_on=[cluster_role, account]),
        )
        role = RBAC.Role(
            f"{self._name}-role-k8s", metadata=self._meta(), rules=NAMESPACE_RULES,
            opts=self._child(),
        )  # fmt: skip
        RBAC.RoleBinding(
            f"{self._name}-rolebinding",
            metadata=self._meta(),
            role_ref=RBAC.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="Role", name=NAME
            ),
            subjects=subject,
            opts=self._child(depends_on=[role, account]),
        )

    def _network_policy(self) -> None:
        """Nothing in; out only to DNS and to HTTPS (the Kubernetes API and AWS's APIs, whose
        addresses are public and change)."""
        net = k8s.networking.v1
        dns = [net.NetworkPolicyPortArgs(protocol=p, port=53) for p in ("UDP", "TCP")]
        net.NetworkPolicy(
            f"{self._name}-network-policy",
            metadata=self._meta(),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=META.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": NAME}),
                policy_types=["Ingress", "Egress"],
                ingress=[],
                egress=[
                    net.NetworkPolicyEgressRuleArgs(
                        to=[
                            net.NetworkPolicyPeerArgs(
                                pod_selector=META.LabelSelectorArgs(
                                    match_labels={"k8s-app": "kube-dns"}
                                )
                            )
                        ],
                        ports=dns,
                    ),
                    net.NetworkPolicyEgressRuleArgs(
                        ports=[net.NetworkPolicyPortArgs(protocol="TCP", port=443)]
                    ),
                ],
            ),
            opts=self._child(),
        )

    def _container(self, region: str) -> CORE.ContainerArgs:
        probe = CORE.ProbeArgs(
            http_get=CORE.HTTPGetActionArgs(path="/health-check", port=PORT),
            period_seconds=10,
            timeout_seconds=5,
            failure_threshold=3,
        )
        memory = f"{catalogue.AUTOSCALER_MEMORY_MIB}Mi"
        return CORE.ContainerArgs(
            name=NAME,
            image=self.image,
            image_pull_policy="Always",
            args=self._cluster.cluster_name.apply(args),
            env=[CORE.EnvVarArgs(name="AWS_REGION", value=region)],
            ports=[CORE.ContainerPortArgs(name="http", container_port=PORT)],
            resources=CORE.ResourceRequirementsArgs(
                requests={"cpu": f"{catalogue.AUTOSCALER_CPU_M}m", "memory": memory},
                limits={"cpu": f"{catalogue.AUTOSCALER_CPU_M * 5}m", "memory": memory},
            ),
            liveness_probe=probe,
            readiness_probe=probe,
            volume_mounts=[
                CORE.VolumeMountArgs(name="api-token", mount_path=TOKEN_PATH, read_only=True)
            ],
            security_context=CORE.SecurityContextArgs(
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                run_as_non_root=True,
                run_as_user=65534,
                run_as_group=65534,
                capabilities=CORE.CapabilitiesArgs(drop=["ALL"]),
                seccomp_profile=CORE.SeccompProfileArgs(type="RuntimeDefault"),
            ),
        )

    def _deployment(self, account: CORE.ServiceAccount, region: str) -> k8s.apps.v1.Deployment:
        selector = {"app.kubernetes.io/name": NAME}
        return k8s.apps.v1.Deployment(
            f"{self._name}-deployment",
            metadata=self._meta(annotations=CHECKOV_SKIPS),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=META.LabelSelectorArgs(match_labels=selector),
                template=CORE.PodTemplateSpecArgs(
                    metadata=META.ObjectMetaArgs(
                        labels={**selector, "app.kubernetes.io/part-of": "backbone"},
                        # Never evicted by its own scale-down.
                        annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
                    ),
                    spec=CORE.PodSpecArgs(
                        service_account_name=NAME,
                        automount_service_account_token=False,
                        volumes=[_token_volume()],
                        priority_class_name="system-cluster-critical",
                        security_context=CORE.PodSecurityContextArgs(
                            run_as_non_root=True,
                            run_as_user=65534,
                            fs_group=65534,
                            seccomp_profile=CORE.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        containers=[self._container(region)],
                    ),
                ),
            ),
            opts=self._child(depends_on=[account]),
        )
