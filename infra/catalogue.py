"""Dated AWS and Kubernetes facts the cluster's config rules and components read: each list with
its source and the date it was taken. Pulumi-free (infra.config imports it).

Refresh a list by re-reading its source; a test (tests/test_cluster.py) keeps the lists
consistent with each other (every supported Kubernetes version has an autoscaler image, every
instance type its allocatable figures).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# -- Kubernetes versions on EKS -------------------------------------------------------------------
# Source: the Amazon EKS Kubernetes release calendar (docs.aws.amazon.com/eks/latest/userguide/
# kubernetes-versions.html), taken 2026-11-24. Extended support lasts 12 months after the end of
# standard support and bills $0.60 instead of $0.10 per cluster-hour.
EKS_CALENDAR_DATE = dt.date(2026, 11, 24)


@dataclass(frozen=True)
class EksRelease:
    version: str
    standard_support_end: dt.date
    extended_support_end: dt.date


EKS_RELEASES = {
    r.version: r
    for r in (
        EksRelease("1.33", dt.date(2026, 7, 29), dt.date(2027, 7, 29)),
        EksRelease("1.34", dt.date(2026, 12, 2), dt.date(2027, 12, 2)),
        EksRelease("1.35", dt.date(2027, 3, 27), dt.date(2028, 3, 27)),
        EksRelease("1.36", dt.date(2027, 8, 1), dt.date(2028, 8, 1)),
    )
}


def minor(version: str) -> int:
    """1.35 -> 35 (EKS versions are all 1.x)."""
    return int(version.split(".")[1])


# -- Cluster autoscaler image per Kubernetes minor ------------------------------------------------
# The autoscaler is released per Kubernetes minor and must match the control plane's (its README:
# "use the Cluster Autoscaler release matching your Kubernetes minor"). Sources, taken 2026-11-30:
# kubernetes/autoscaler releases as cited in aws-ia/terraform-aws-eks-blueprints-addons#516
# (2026-07-17: 1.33 -> v1.33.5, 1.34 -> v1.34.4, 1.35 -> v1.35.1) and kubernetes/autoscaler#10280
# (2026-09-12: the release-1.36 branch's AWS example manifest at v1.36.1).
AUTOSCALER_IMAGE_REPOSITORY = "registry.k8s.io/autoscaling/cluster-autoscaler"
AUTOSCALER_CATALOGUE_DATE = dt.date(2026, 11, 30)
AUTOSCALER_VERSIONS = {"1.33": "v1.33.5", "1.34": "v1.34.4", "1.35": "v1.35.1", "1.36": "v1.36.1"}


def autoscaler_image(kubernetes_version: str) -> str:
    return f"{AUTOSCALER_IMAGE_REPOSITORY}:{AUTOSCALER_VERSIONS[kubernetes_version]}"


# -- EKS managed AMI ------------------------------------------------------------------------------
# The public SSM parameter AWS keeps the recommended AL2023 EKS AMI's release version in (EKS user
# guide, "Retrieve recommended Amazon Linux AMI IDs"); read at deploy time when no release is pinned.
AMI_RELEASE_PARAMETER = (
    "/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/{arch}/standard/recommended/"
    "release_version"
)
AMI_ARCH = {"x86_64": "x86_64", "arm64": "arm64"}


def ami_release_parameter(kubernetes_version: str, architecture: str) -> str:
    return AMI_RELEASE_PARAMETER.format(version=kubernetes_version, arch=AMI_ARCH[architecture])


# -- Instance types: what a node offers pods ------------------------------------------------------
# vCPUs and memory: the EC2 instance types pages (aws.amazon.com/ec2/instance-types), taken
# 2026-11-30. Max pods: amazon-eks-ami's eni-max-pods.txt (ENIs x (IPv4 per ENI - 1) + 2; the VPC
# CNI without prefix delegation). Allocatable: nodeadm's kubelet defaults on the AL2023 EKS AMI
# (amazon-eks-ami nodeadm/internal/kubelet/config.go): kube-reserved CPU 6% of the first core, 1%
# of the second, 0.5% of cores 3-4, 0.25% above; kube-reserved memory 11 MiB x maxPods + 255 MiB;
# eviction at memory.available < 100Mi. Memory capacity as the kubelet reports it is below the
# nominal figure (firmware and kernel); KERNEL_RESERVED_FRACTION is the share we take off, from
# nodes' reported capacity (a t3.medium reports about 3870Mi of its 4096). An estimate: a real
# node's `kubectl describe node` is the last word.
INSTANCE_CATALOGUE_DATE = dt.date(2026, 11, 30)
KERNEL_RESERVED_FRACTION = 0.055
EVICTION_MEMORY_MIB = 100


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int
    max_pods: int

    @property
    def allocatable_cpu_m(self) -> int:
        reserved = 0.0
        for core in range(self.vcpus):
            reserved += 60 if core == 0 else 10 if core == 1 else 5 if core < 4 else 2.5
        return self.vcpus * 1000 - round(reserved)

    @property
    def allocatable_memory_mib(self) -> int:
        capacity = int(self.memory_mib * (1 - KERNEL_RESERVED_FRACTION))
        return capacity - (11 * self.max_pods + 255) - EVICTION_MEMORY_MIB


INSTANCE_TYPES = {
    t.name: t
    for t in (
        InstanceType("t3.medium", 2, 4096, 17),
        InstanceType("t3.large", 2, 8192, 35),
        InstanceType("t3.xlarge", 4, 16384, 58),
        InstanceType("t4g.medium", 2, 4096, 17),
        InstanceType("t4g.large", 2, 8192, 35),
        InstanceType("m5.large", 2, 8192, 29),
        InstanceType("m6i.large", 2, 8192, 29),
        InstanceType("m6i.xlarge", 4, 16384, 58),
        InstanceType("m7i.large", 2, 8192, 29),
        InstanceType("m7i.xlarge", 4, 16384, 58),
        InstanceType("m7g.large", 2, 8192, 29),
        InstanceType("m7g.xlarge", 4, 16384, 58),
        InstanceType("c7i.large", 2, 4096, 29),
        InstanceType("r7i.large", 2, 16384, 29),
    )
}


# -- System pods: what runs beside the app ---------------------------------------------------------
# Requests of the pods every cluster runs, from the EKS add-ons' default manifests (describe the
# add-on's DaemonSet/Deployment; taken 2026-11-30) and the autoscaler this kit renders.
@dataclass(frozen=True)
class SystemPod:
    name: str
    cpu_m: int
    memory_mib: int
    replicas: int = 1
    """Per cluster; a DaemonSet's pods are per node (per_node)."""
    per_node: bool = False


AUTOSCALER_CPU_M = 100
AUTOSCALER_MEMORY_MIB = 600
SYSTEM_PODS = (
    SystemPod("aws-node (vpc-cni)", 25, 0, per_node=True),
    SystemPod("kube-proxy", 100, 0, per_node=True),
    SystemPod("coredns", 100, 70, replicas=2),
    SystemPod("metrics-server", 100, 200, replicas=2),
    SystemPod("cluster-autoscaler", AUTOSCALER_CPU_M, AUTOSCALER_MEMORY_MIB),
)
