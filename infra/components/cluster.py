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
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
AMI_TYPES = {"x86_64": "AL2023_x86_64_STANDARD", "arm64": "AL2023_ARM_64_STANDARD"}


def _managed(policy: str) -> str:
    return f"arn:aws:iam::aws:policy/{policy}"


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": ["sts:AssumeRole", "sts:TagSession"]
                    if service == "eks.amazonaws.com"
                    else "sts:AssumeRole",
                }
            ],
        }
    )


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
class ClusterArgs:
    cluster_name: str
    """The name's prefix (project-stack); the cluster's name adds a suffix kept in the state."""
    region: str
    version: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: list[Any]
    private_subnet_ids: list[Any]
    instance_types: list[str]
    architecture: str
    min_nodes: int
    desired_nodes: int
    max_nodes: int
    disk_size_gb: int
    log_types: list[str]
    log_retention_days: int
    public_endpoint: bool
    public_access_cidrs: list[str]
    admin_principal_arns: list[str] = field(default_factory=list)
    private_access_cidrs: list[str] = field(default_factory=list)
    """Private networks admitted on 443 to the API endpoint through the cluster security group."""


class Cluster(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # The cluster's name is the stack's plus a suffix drawn once and kept in the state. EKS
        # writes its control-plane log group /aws/eks/<name>/cluster itself, and keeps writing it
        # while a cluster is being deleted: after a `pulumi destroy` the group can exist again,
        # and a fixed name would make the next `pulumi up` fail with ResourceAlreadyExists. A new
        # cluster gets a new suffix, so its log group is always a new name.
        suffix = random.RandomId(f"{name}-name-suffix", byte_length=3, opts=child)
        cluster_name = pulumi.Output.concat(args.cluster_name, "-", suffix.hex)
        # EKS writes control-plane logs here; made first so retention is ours, not "never expire".
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=cluster_name.apply(lambda n: f"/aws/eks/{n}/cluster"),
            retention_in_days=args.log_retention_days,
            opts=child,
        )

        cluster_role = aws.iam.Role(
            f"{name}-cluster-role", assume_role_policy=_trust("eks.amazonaws.com"), opts=child
        )
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=cluster_role.name,
            policy_arn=_managed("AmazonEKSClusterPolicy"),
            opts=child,
        )

        self.cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=args.version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=[*args.private_subnet_ids, *args.public_subnet_ids],
                endpoint_private_access=True,
                endpoint_public_access=args.public_endpoint,
                public_access_cidrs=args.public_access_cidrs if args.public_endpoint else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            enabled_cluster_log_types=args.log_types,
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, cluster_policy]),
        )
        self.cluster_name = self.cluster.name
        # Managed nodes carry the cluster security group: the one to open to the ALB and the DB.
        self.node_security_group_id = self.cluster.vpc_config.cluster_security_group_id
        for i, cidr in enumerate(args.private_access_cidrs):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-from-{i}",
                security_group_id=self.node_security_group_id,
                cidr_ipv4=cidr,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                description=f"Kubernetes API from {cidr}",
                opts=child,
            )

        issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)  # type: ignore[index]
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], opts=child
        )

        # Nodes: only what a node needs (no CNI policy: that goes to the add-on's own role).
        node_role = aws.iam.Role(
            f"{name}-node-role", assume_role_policy=_trust("ec2.amazonaws.com"), opts=child
        )
        node_policies = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{short}",
                role=node_role.name,
                policy_arn=_managed(policy),
                opts=child,
            )
            for short, policy in (
                ("worker", "AmazonEKSWorkerNodePolicy"),
                ("ecr-pull", "AmazonEC2ContainerRegistryPullOnly"),
            )
        ]

        cni_role = aws.iam.Role(
            f"{name}-vpc-cni",
            assume_role_policy=pulumi.Output.all(self.oidc_provider.arn, issuer).apply(
                lambda a: _irsa_trust(a[0], a[1], "kube-system", "aws-node")
            ),
            opts=child,
        )
        cni_policy = aws.iam.RolePolicyAttachment(
            f"{name}-vpc-cni",
            role=cni_role.name,
            policy_arn=_managed("AmazonEKS_CNI_Policy"),
            opts=child,
        )

        def addon(addon_name: str, after: list[pulumi.Resource], **extra: Any) -> aws.eks.Addon:
            return aws.eks.Addon(
                f"{name}-{addon_name}",
                cluster_name=self.cluster.name,
                addon_name=addon_name,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
                **extra,
            )

        vpc_cni = addon(
            "vpc-cni",
            [cni_policy],
            service_account_role_arn=cni_role.arn,
            # NetworkPolicy objects are enforced only with the CNI's network policy agent on.
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
        )
        kube_proxy = addon("kube-proxy", [])

        self.node_group = aws.eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=self.cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=args.private_subnet_ids,
            instance_types=args.instance_types,
            ami_type=AMI_TYPES[args.architecture],
            capacity_type="ON_DEMAND",
            disk_size=args.disk_size_gb,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.min_nodes, desired_size=args.desired_nodes, max_size=args.max_nodes
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels={"backbone/pool": "app"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*node_policies, vpc_cni, kube_proxy],
                # Scaling changes the live count; a later `pulumi up` must not undo it.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )
        # These run as pods, so they wait for nodes. The HorizontalPodAutoscaler reads pod CPU
        # from the metrics API, which EKS does not serve until metrics-server (an EKS community
        # add-on) runs.
        self.coredns = addon("coredns", [self.node_group])
        addon("metrics-server", [self.node_group])
        self.autoscaling_group_name = self.node_group.resources.apply(
            lambda rs: rs[0].autoscaling_groups[0].name  # type: ignore[index]
        )

        # Access: the identity running `pulumi up` (an assumed role's session resolved to the
        # role itself) and any configured admins get cluster-admin through access entries.
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        deployer = aws.iam.get_session_context_output(
            arn=caller.arn, opts=pulumi.InvokeOutputOptions(parent=self)
        ).issuer_arn
        grants = []
        principals: list[pulumi.Input[str]] = [deployer, *args.admin_principal_arns]
        for i, principal in enumerate(principals):
            part = "deployer" if i == 0 else f"admin-{i}"
            entry = aws.eks.AccessEntry(
                f"{name}-{part}",
                cluster_name=self.cluster.name,
                principal_arn=principal,
                type="STANDARD",
                opts=child,
            )
            grants.append(
                aws.eks.AccessPolicyAssociation(
                    f"{name}-{part}",
                    cluster_name=self.cluster.name,
                    principal_arn=entry.principal_arn,
                    policy_arn=CLUSTER_ADMIN_POLICY,
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    opts=child,
                )
            )

        self.kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(
                self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data
            ).apply(lambda a: kubeconfig(a[0], a[1], a[2], args.region))
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            # Every Kubernetes object waits for the nodes, the access grants and CoreDNS (the add-on
            # is created once its pods are ACTIVE): the app's migration init container resolves
            # the database's DNS name first thing, and would crash-loop without it.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.node_group, self.coredns, *grants]
            ),
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


def _irsa_trust(provider_arn: str, issuer: str, namespace: str, service_account: str) -> str:
    """Trust for a role assumed by one Kubernetes service account through the OIDC provider."""
    host = issuer.removeprefix("https://")
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
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
            ],
        }
    )
