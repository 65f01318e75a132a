"""The cluster: EKS with a managed node group, add-ons, IAM access entries and a kubeconfig.

- The control plane runs a Kubernetes version under standard support (upgrade policy STANDARD,
  EXTENDED only when the stack accepts it), its network interfaces in the private subnets only,
  and Kubernetes Secrets envelope-encrypted with its own rotating KMS key.
- Authentication mode API: access entries (not the aws-auth ConfigMap) grant the configured admin
  roles cluster-admin, whoever runs `pulumi up`.
- Nodes: a managed node group of AL2023 in the private subnets at the control plane's version and
  a pinned (or recommended) AMI release; its role has the AWS managed policies nodes need (worker,
  ECR pull-only, Session Manager). No SSH. The VPC CNI's policy goes to the add-on's own role
  through the cluster's OIDC provider (IRSA), not to every node. The node count is the
  autoscaler's after creation (node_count).
- Add-ons at the default version for the cluster's Kubernetes version; after the nodes, except
  the VPC CNI, which the nodes need.
- The kubeconfig (a secret output) authenticates with `aws eks get-token --role-arn <first admin
  role>`, and one pulumi-kubernetes Provider built from it serves every Kubernetes resource.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components import iam, sg
from infra.components.network import Network
from infra.config import ClusterConfig
from infra.config import catalogues as catalogue

CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
AMI_TYPES = {"x86_64": "AL2023_x86_64_STANDARD", "arm64": "AL2023_ARM_64_STANDARD"}


def _managed(policy: str) -> str:
    return f"arn:aws:iam::aws:policy/{policy}"


def kubeconfig(
    cluster_name: str, endpoint: str, ca_data: str, region: str, role_arn: str | None = None
) -> str:
    """A kubeconfig that authenticates with the AWS CLI (`aws eks get-token`), as `role_arn` when
    given (the first admin role: the same identity whoever runs the program)."""
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
                                *(["--role-arn", role_arn] if role_arn else []),
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
class Addons:
    """The add-ons made after the node group."""

    kube_proxy: aws.eks.Addon
    coredns: aws.eks.Addon
    metrics_server: aws.eks.Addon


@dataclass(frozen=True)
class NodeRole:
    role: aws.iam.Role
    attachments: list[aws.iam.RolePolicyAttachment]


# The node group's tag recording the desiredNodes setting it was last given (see node_count).
DESIRED_TAG = "backbone:desired-nodes"


@dataclass(frozen=True)
class LiveScaling:
    desired: int
    """The node group's desired size now (the autoscaler's count)."""
    desired_setting: str | None
    """The desiredNodes setting recorded on it (DESIRED_TAG) when last applied."""


def node_count(min_nodes: int, desired_nodes: int, max_nodes: int, live: LiveScaling | None) -> int:
    """The desired size to send EKS. EKS refuses a scaling config outside min <= desired <= max:
    CreateNodegroup/UpdateNodegroupConfig answer InvalidParameterException "Minimum capacity N
    can't be greater than desired size M" (as reported in terraform-aws-modules/terraform-aws-eks
    #835 and #3306), and botocore's NodegroupScalingConfig.desiredSize says the cluster
    autoscaler alters desiredSize but never below minSize or above maxSize. So:
    - no node group yet: desiredNodes;
    - desiredNodes changed since it was last applied (DESIRED_TAG): the new setting, once;
    - otherwise the live count (the autoscaler's: a `pulumi up` never undoes it),
    each raised to minNodes or lowered to maxNodes."""
    if live is None or live.desired_setting != str(desired_nodes):
        wanted = desired_nodes
    else:
        wanted = live.desired
    return max(min_nodes, min(wanted, max_nodes))


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
        protect: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:cluster:Cluster", name, None, opts)
        self._name, self._cfg, self._network = name, cfg, network
        self.version = cfg.version
        self.admin_role_arns = list(dict.fromkeys(cfg.admin_role_arns))
        self.secrets_key = self._secrets_key(protect)
        self.cluster = self._control_plane(name_prefix).cluster
        self.cluster_name = self.cluster.name
        # Managed nodes carry the cluster security group: the one to open to the ALB and the DB.
        self.node_security_group_id = self.cluster.vpc_config.cluster_security_group_id
        self._api_ingress()
        self.issuer, self.oidc_provider = self._oidc()
        self.node_group = self._node_group(self._node_role(), self._vpc_cni())
        addons = self._addons_after_nodes()
        self.kube_proxy, self.coredns = addons.kube_proxy, addons.coredns
        self.metrics_server = addons.metrics_server
        self.autoscaling_group_name = self.node_group.resources.apply(
            lambda rs: rs[0].autoscaling_groups[0].name  # type: ignore[index]
        )
        grants = self._access()
        self.kubeconfig = self._kubeconfig(region)
        self.provider = self._kubernetes(grants)
        self.register_outputs(
            {
                "clusterName": self.cluster.name,
                "endpoint": self.cluster.endpoint,
                "nodeSecurityGroupId": self.node_security_group_id,
                "oidcProviderArn": self.oidc_provider.arn,
                "kubeconfig": self.kubeconfig,
            }
        )

    def _oidc(self) -> tuple[pulumi.Output[str], aws.iam.OpenIdConnectProvider]:
        """The cluster's OIDC issuer and its IAM provider: what IRSA roles trust."""
        issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)  # type: ignore[index]
        provider = aws.iam.OpenIdConnectProvider(
            f"{self._name}-oidc",
            url=issuer,
            client_id_lists=["sts.amazonaws.com"],
            opts=self._child(),
        )
        return issuer, provider

    def _addons_after_nodes(self) -> Addons:
        """After the nodes: a version bump upgrades the control plane, then the node group, then
        these (kube-proxy must not be newer than the nodes' kubelet). CoreDNS and metrics-server
        run as pods, so they wait for nodes anyway; the HorizontalPodAutoscaler reads pod CPU
        from the metrics API, which EKS serves once metrics-server runs."""
        after: list[pulumi.Resource] = [self.node_group]
        return Addons(
            kube_proxy=self._addon("kube-proxy", after),
            coredns=self._addon("coredns", after),
            metrics_server=self._addon("metrics-server", after),
        )

    def _kubeconfig(self, region: str) -> pulumi.Output[str]:
        """The kubeconfig (a secret): `aws eks get-token` as the first admin role."""
        return pulumi.Output.secret(
            pulumi.Output.all(
                self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data
            ).apply(lambda a: kubeconfig(a[0], a[1], a[2], region, self.admin_role_arns[0]))
        )

    def _kubernetes(self, grants: list[aws.eks.AccessPolicyAssociation]) -> k8s.Provider:
        """The one Kubernetes provider. Every Kubernetes object waits for the nodes, the access
        grants and CoreDNS (the add-on is created once its pods are ACTIVE): the app's migration
        Job resolves the database's DNS name first thing, and would crash-loop
        without it."""
        return k8s.Provider(
            f"{self._name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=self._child(depends_on=[self.node_group, self.coredns, self.kube_proxy, *grants]),
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
        role, policy = self._cluster_role()
        network = self._network
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=cfg.version,
            role_arn=role.arn,
            # The control plane's network interfaces go in the private subnets only.
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=network.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=cfg.public_endpoint,
                public_access_cidrs=cfg.public_access_cidrs if cfg.public_endpoint else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            enabled_cluster_log_types=list(cfg.log_types),
            # Kubernetes Secrets are envelope-encrypted with the cluster's own KMS key.
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=self.secrets_key.arn),
                resources=["secrets"],
            ),
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(
                support_type="EXTENDED" if cfg.allow_extended_support else "STANDARD"
            ),
            opts=self._child(depends_on=[log_group, policy]),
        )
        return ControlPlane(cluster=cluster, log_group=log_group)

    def _cluster_role(self) -> tuple[aws.iam.Role, aws.iam.RolePolicyAttachment]:
        """The role the control plane runs as, with AWS's managed cluster policy."""
        role = aws.iam.Role(
            f"{self._name}-cluster-role",
            assume_role_policy=iam.trust("eks.amazonaws.com", ["sts:AssumeRole", "sts:TagSession"]),
            opts=self._child(),
        )
        policy = aws.iam.RolePolicyAttachment(
            f"{self._name}-cluster-policy",
            role=role.name,
            policy_arn=_managed("AmazonEKSClusterPolicy"),
            opts=self._child(),
        )
        return role, policy

    def _secrets_key(self, protect: bool) -> aws.kms.Key:
        """The KMS key EKS envelope-encrypts Kubernetes Secrets with: rotated yearly, and
        protected with the stack (losing it loses every Secret)."""
        return aws.kms.Key(
            f"{self._name}-secrets",
            description="EKS envelope encryption of Kubernetes Secrets",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=pulumi.ResourceOptions(parent=self, protect=protect),
        )

    def _api_ingress(self) -> None:
        """Private networks admitted on 443 to the API endpoint through the cluster SG."""
        for i, cidr in enumerate(self._cfg.private_access_cidrs):
            sg.allow_in(
                f"{self._name}-api-from-{i}",
                self.node_security_group_id,
                443,
                f"Kubernetes API from {cidr}",
                cidr=cidr,
                opts=self._child(),
            )

    def irsa_role(
        self,
        resource_name: str,
        namespace: str,
        service_account: str,
        parent: pulumi.Resource | None = None,
    ) -> aws.iam.Role:
        """A role one Kubernetes service account assumes through the cluster's OIDC provider."""
        return aws.iam.Role(
            resource_name,
            assume_role_policy=pulumi.Output.all(self.oidc_provider.arn, self.issuer).apply(
                lambda a: irsa_trust(a[0], a[1], namespace, service_account)
            ),
            opts=pulumi.ResourceOptions(parent=parent or self),
        )

    def _addon(self, addon_name: str, after: list[pulumi.Resource], **extra: Any) -> aws.eks.Addon:
        """An EKS add-on at the default version EKS gives it for the cluster's Kubernetes version
        (so a version bump moves it too), looked up at deploy time."""
        version = aws.eks.get_addon_version_output(
            addon_name=addon_name,
            kubernetes_version=self.cluster.version,
            most_recent=False,
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).version
        return aws.eks.Addon(
            f"{self._name}-{addon_name}",
            cluster_name=self.cluster.name,
            addon_name=addon_name,
            addon_version=version,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=self._child(depends_on=after),
            **extra,
        )

    def _vpc_cni(self) -> aws.eks.Addon:
        """The VPC CNI, before the nodes (they need their network; its versions span every
        supported minor), its policy on its own IRSA role, not on every node."""
        cni_role = self.irsa_role(f"{self._name}-vpc-cni", "kube-system", "aws-node")
        cni_policy = aws.iam.RolePolicyAttachment(
            f"{self._name}-vpc-cni",
            role=cni_role.name,
            policy_arn=_managed("AmazonEKS_CNI_Policy"),
            opts=self._child(),
        )
        return self._addon(
            "vpc-cni",
            [cni_policy],
            service_account_role_arn=cni_role.arn,
            # NetworkPolicy objects are enforced only with the CNI's network policy agent on.
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
        )

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
                # Session Manager: a shell on a node without SSH, keys or an open port.
                ("ssm", "AmazonSSMManagedInstanceCore"),
            )
        ]
        return NodeRole(role=role, attachments=attachments)

    def _node_group(self, node_role: NodeRole, vpc_cni: aws.eks.Addon) -> aws.eks.NodeGroup:
        """Follows the control plane's version (an Output of the cluster, so a bump upgrades the
        control plane first), on a pinned or recommended AMI release; no SSH (no remoteAccess)."""
        cfg = self._cfg
        return aws.eks.NodeGroup(
            f"{self._name}-nodes",
            cluster_name=self.cluster.name,
            version=self.cluster.version,
            release_version=self._ami_release(),
            node_role_arn=node_role.role.arn,
            subnet_ids=self._network.private_subnet_ids,
            instance_types=cfg.instance_types,
            ami_type=AMI_TYPES[cfg.architecture],
            capacity_type="ON_DEMAND",
            disk_size=cfg.disk_size_gb,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=cfg.min_nodes, desired_size=self._desired_size(), max_size=cfg.max_nodes
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels={"backbone/pool": "app"},
            tags={DESIRED_TAG: str(cfg.desired_nodes)},
            opts=self._child(depends_on=[*node_role.attachments, vpc_cni]),
        )

    def _ami_release(self) -> pulumi.Input[str]:
        """The pinned release, or the one AWS recommends for the version (public SSM parameter)."""
        cfg = self._cfg
        if cfg.ami_release_version:
            return cfg.ami_release_version
        return aws.ssm.get_parameter_output(
            name=catalogue.ami_release_parameter(cfg.version, cfg.architecture),
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).value

    def _desired_size(self) -> pulumi.Output[int]:
        """The count to send EKS (node_count), from the live node group when there is one."""
        cfg, prefix = self._cfg, f"{self._name}-nodes-"
        listed = aws.eks.get_node_groups_output(
            cluster_name=self.cluster.name, opts=pulumi.InvokeOutputOptions(parent=self)
        )

        def from_live(a: list[Any]) -> Any:
            cluster_name, names = a
            ours = sorted(n for n in names or [] if n.startswith(prefix))
            if not ours:
                return node_count(cfg.min_nodes, cfg.desired_nodes, cfg.max_nodes, None)
            live = aws.eks.get_node_group_output(
                cluster_name=cluster_name,
                node_group_name=ours[-1],
                opts=pulumi.InvokeOutputOptions(parent=self),
            )
            return pulumi.Output.all(live.scaling_configs, live.tags).apply(
                lambda b: node_count(
                    cfg.min_nodes,
                    cfg.desired_nodes,
                    cfg.max_nodes,
                    LiveScaling(
                        desired=_desired_of(b[0][0]),
                        desired_setting=(b[1] or {}).get(DESIRED_TAG),
                    ),
                )
            )

        return pulumi.Output.all(self.cluster.name, listed.names).apply(from_live)

    def _access(self) -> list[aws.eks.AccessPolicyAssociation]:
        """The configured admin roles get cluster-admin through access entries: the same entries
        whoever runs `pulumi up` (no caller lookup), one per role (duplicates merged)."""
        grants = []
        for i, principal in enumerate(self.admin_role_arns):
            part = f"admin-{i + 1}"
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


def _desired_of(scaling: Any) -> int:
    """desiredSize of a node group's scaling config, as the SDK's typed result or as the plain
    mapping an engine may hand back for an invoke's nested object."""
    if isinstance(scaling, dict):
        value = scaling.get("desired_size", scaling.get("desiredSize"))
    else:
        value = scaling.desired_size
    return int(value or 0)


# The audience EKS's pod identity webhook mints projected service account tokens for (IRSA).
STS_AUDIENCE = "sts.amazonaws.com"


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
                        f"{host}:aud": STS_AUDIENCE,
                        f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                    }
                },
            }
        ]
    )
