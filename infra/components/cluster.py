"""The cluster: EKS with a managed node group, add-ons, IAM access entries and a kubeconfig.

- The control plane runs a Kubernetes version under standard support, and its upgrade policy is
  STANDARD, so AWS upgrades it rather than billing extended support.
- Authentication mode API: access entries (not the aws-auth ConfigMap) grant the deploying
  identity, and any extra admin principals, cluster-admin.
- Nodes: a managed node group of AL2023 in the private subnets; its role has the AWS managed
  policies nodes need (worker, ECR pull-only). The VPC CNI's policy goes to the add-on's own role
  through the cluster's OIDC provider (IRSA), not to every node.
- The kubeconfig (a secret output) authenticates with `aws eks get-token --cluster-name`, and one
  pulumi-kubernetes Provider built from it serves every Kubernetes resource.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components import iam
from infra.components.network import Network
from infra.config import ClusterConfig

CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
AMI_TYPES = {"x86_64": "AL2023_x86_64_STANDARD", "arm64": "AL2023_ARM_64_STANDARD"}


def _managed(policy: str) -> str:
    return f"arn:aws:iam::aws:policy/{policy}"


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with the AWS CLI (`aws eks get-token`)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {"server": endpoint, "certificate-authority-data": ca_data},
                }
            ],
            "contexts": [
                {"name": cluster_name, "context": {"cluster": cluster_name, "user": "aws"}}
            ],
            "current-context": cluster_name,
            "users": [
                {
                    "name": "aws",
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                cluster_name,
                                "--region",
                                region,
                                "--output",
                                "json",
                            ],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class ControlPlane:
    cluster: aws.eks.Cluster
    log_group: aws.cloudwatch.LogGroup


@dataclass(frozen=True)
class NodeRole:
    role: aws.iam.Role
    attachments: list[aws.iam.RolePolicyAttachment]


@dataclass(frozen=True)
class Addons:
    vpc_cni: aws.eks.Addon
    kube_proxy: aws.eks.Addon


class Cluster(pulumi.ComponentResource):
    """`cfg` is the cluster section; `name_prefix` the stack's (project-stack), to which the
    cluster's name adds a suffix kept in the state; `network` the VPC it runs in."""

    def __init__(
        self,
        name: str,
        cfg: ClusterConfig,
        *,
        name_prefix: str,
        region: str,
        network: Network,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:cluster:Cluster", name, None, opts)
        self._name, self._cfg, self._network = name, cfg, network
        plane = self._control_plane(name_prefix)
        self.cluster = plane.cluster
        self.cluster_name = self.cluster.name
        # Managed nodes carry the cluster security group: the one to open to the ALB and the DB.
        self.node_security_group_id = self.cluster.vpc_config.cluster_security_group_id
        self._api_ingress()
        self.issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)  # type: ignore[index]
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=self.issuer,
            client_id_lists=["sts.amazonaws.com"],
            opts=self._child(),
        )
        addons = self._network_addons()
        self.node_group = self._node_group(self._node_role(), addons)
        # These run as pods, so they wait for nodes. The HorizontalPodAutoscaler reads pod CPU
        # from the metrics API, which EKS does not serve until metrics-server (an EKS community
        # add-on) runs.
        self.coredns = self._addon("coredns", [self.node_group])
        self._addon("metrics-server", [self.node_group])
        self.autoscaling_group_name = self.node_group.resources.apply(
            lambda rs: rs[0].autoscaling_groups[0].name  # type: ignore[index]
        )
        grants = self._access()
        self.kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(
                self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data
            ).apply(lambda a: kubeconfig(a[0], a[1], a[2], region))
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            # Every Kubernetes object waits for the nodes, the access grants and CoreDNS (the add-on
            # is created once its pods are ACTIVE): the app's migration init container resolves
            # the database's DNS name first thing, and would crash-loop without it.
            opts=self._child(depends_on=[self.node_group, self.coredns, *grants]),
        )
        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "endpoint": self.cluster.endpoint,
                "nodeSecurityGroupId": self.node_security_group_id,
                "oidcProviderArn": self.oidc_provider.arn,
                "kubeconfig": self.kubeconfig,
            }
        )

    def _child(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on)

    def _control_plane(self, name_prefix: str) -> ControlPlane:
        """The EKS control plane, its role and its log group."""
        name, cfg = self._name, self._cfg
        # The cluster's name is the stack's plus a suffix drawn once and kept in the state. EKS
        # writes its control-plane log group /aws/eks/<name>/cluster itself, and keeps writing it
        # while a cluster is being deleted: after a `pulumi destroy` the group can exist again,
        # and a fixed name would make the next `pulumi up` fail with ResourceAlreadyExists. A new
        # cluster gets a new suffix, so its log group is always a new name.
        suffix = random.RandomId(f"{name}-name-suffix", byte_length=3, opts=self._child())
        cluster_name = pulumi.Output.concat(name_prefix, "-", suffix.hex)
        # EKS writes control-plane logs here; made first so retention is ours, not "never expire".
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=cluster_name.apply(lambda n: f"/aws/eks/{n}/cluster"),
            retention_in_days=cfg.log_retention_days,
            opts=self._child(),
        )
        role = aws.iam.Role(
            f"{name}-cluster-role",
            assume_role_policy=iam.trust("eks.amazonaws.com", ["sts:AssumeRole", "sts:TagSession"]),
            opts=self._child(),
        )
        policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=role.name,
            policy_arn=_managed("AmazonEKSClusterPolicy"),
            opts=self._child(),
        )
        network = self._network
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=cfg.version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=[*network.private_subnet_ids, *network.public_subnet_ids],
                endpoint_private_access=True,
                endpoint_public_access=cfg.public_endpoint,
                public_access_cidrs=cfg.public_access_cidrs if cfg.public_endpoint else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            enabled_cluster_log_types=list(cfg.log_types),
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            opts=self._child(depends_on=[log_group, policy]),
        )
        return ControlPlane(cluster=cluster, log_group=log_group)

    def _api_ingress(self) -> None:
        """Private networks admitted on 443 to the API endpoint through the cluster SG."""
        for i, cidr in enumerate(self._cfg.private_access_cidrs):
            aws.vpc.SecurityGroupIngressRule(
                f"{self._name}-api-from-{i}",
                security_group_id=self.node_security_group_id,
                cidr_ipv4=cidr,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                description=f"Kubernetes API from {cidr}",
                opts=self._child(),
            )

    def _irsa_role(self, part: str, namespace: str, service_account: str) -> aws.iam.Role:
        """A role one Kubernetes service account assumes through the cluster's OIDC provider."""
        return aws.iam.Role(
            f"{self._name}-{part}",
            assume_role_policy=pulumi.Output.all(self.oidc_provider.arn, self.issuer).apply(
                lambda a: irsa_trust(a[0], a[1], namespace, service_account)
            ),
            opts=self._child(),
        )

    def _addon(self, addon_name: str, after: list[pulumi.Resource], **extra: Any) -> aws.eks.Addon:
        return aws.eks.Addon(
            f"{self._name}-{addon_name}",
            cluster_name=self.cluster.name,
            addon_name=addon_name,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=self._child(depends_on=after),
            **extra,
        )

    def _network_addons(self) -> Addons:
        """The VPC CNI (its policy on its own IRSA role, not on every node) and kube-proxy."""
        cni_role = self._irsa_role("vpc-cni", "kube-system", "aws-node")
        cni_policy = aws.iam.RolePolicyAttachment(
            f"{self._name}-vpc-cni",
            role=cni_role.name,
            policy_arn=_managed("AmazonEKS_CNI_Policy"),
            opts=self._child(),
        )
        vpc_cni = self._addon(
            "vpc-cni",
            [cni_policy],
            service_account_role_arn=cni_role.arn,
            # NetworkPolicy objects are enforced only with the CNI's network policy agent on.
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
        )
        return Addons(vpc_cni=vpc_cni, kube_proxy=self._addon("kube-proxy", []))

    def _node_role(self) -> NodeRole:
        """Only what a node needs (no CNI policy: that goes to the add-on's own role)."""
        role = aws.iam.Role(
            f"{self._name}-node-role",
            assume_role_policy=iam.trust("ec2.amazonaws.com"),
            opts=self._child(),
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{self._name}-node-{short}",
                role=role.name,
                policy_arn=_managed(policy),
                opts=self._child(),
            )
            for short, policy in (
                ("worker", "AmazonEKSWorkerNodePolicy"),
                ("ecr-pull", "AmazonEC2ContainerRegistryPullOnly"),
            )
        ]
        return NodeRole(role=role, attachments=attachments)

    def _node_group(self, node_role: NodeRole, addons: Addons) -> aws.eks.NodeGroup:
        cfg = self._cfg
        return aws.eks.NodeGroup(
            f"{self._name}-nodes",
            cluster_name=self.cluster.name,
            node_role_arn=node_role.role.arn,
            subnet_ids=self._network.private_subnet_ids,
            instance_types=cfg.instance_types,
            ami_type=AMI_TYPES[cfg.architecture],
            capacity_type="ON_DEMAND",
            disk_size=cfg.disk_size_gb,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=cfg.min_nodes, desired_size=cfg.desired_nodes, max_size=cfg.max_nodes
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels={"backbone/pool": "app"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*node_role.attachments, addons.vpc_cni, addons.kube_proxy],
                # Scaling changes the live count; a later `pulumi up` must not undo it.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

    def _access(self) -> list[aws.eks.AccessPolicyAssociation]:
        """The identity running `pulumi up` (an assumed role's session resolved to the role
        itself) and any configured admins get cluster-admin through access entries."""
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        deployer = aws.iam.get_session_context_output(
            arn=caller.arn, opts=pulumi.InvokeOutputOptions(parent=self)
        ).issuer_arn
        grants = []
        principals: list[pulumi.Input[str]] = [deployer, *self._cfg.admin_principal_arns]
        for i, principal in enumerate(principals):
            part = "deployer" if i == 0 else f"admin-{i}"
            entry = aws.eks.AccessEntry(
                f"{self._name}-{part}",
                cluster_name=self.cluster.name,
                principal_arn=principal,
                type="STANDARD",
                opts=self._child(),
            )
            grants.append(
                aws.eks.AccessPolicyAssociation(
                    f"{self._name}-{part}",
                    cluster_name=self.cluster.name,
                    principal_arn=entry.principal_arn,
                    policy_arn=CLUSTER_ADMIN_POLICY,
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    opts=self._child(),
                )
            )
        return grants


def irsa_trust(provider_arn: str, issuer: str, namespace: str, service_account: str) -> str:
    """Trust for a role assumed by one Kubernetes service account through the OIDC provider."""
    host = issuer.removeprefix("https://")
    return iam.document(
        [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{host}:aud": "sts.amazonaws.com",
                        f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                    }
                },
            }
        ]
    )
