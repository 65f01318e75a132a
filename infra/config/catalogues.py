"""Dated AWS (and Kubernetes) facts the config's rules and the components read: each list with
its source and the date it was taken, in this one module. Pulumi-free.

Refresh a list by re-reading its source (and moving its date); tests keep the lists consistent
with each other and with what they describe (tests/test_cluster.py: every supported Kubernetes
version has an autoscaler image, every instance type its allocatable figures;
tests/test_deploy_truth.py: the regions and the RDS CA bundle).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# -- Regions --------------------------------------------------------------------------------------
# AWS commercial regions (aws ec2 describe-regions, 2026). An unknown region is refused by config,
# before the provider would fail on its first call.
AWS_REGIONS = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "af-south-1", "ap-east-1",
        "ap-east-2", "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2",
        "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7",
        "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ca-central-1", "ca-west-1",
        "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3", "eu-south-1",
        "eu-south-2", "eu-north-1", "il-central-1", "me-south-1", "me-central-1", "mx-central-1",
        "sa-east-1",
    }
)  # fmt: skip

# Regions whose Amazon RDS root CAs app/certs/rds-global-bundle.pem does not hold (see its README;
# tests/test_deploy_truth.py reads the bundle and keeps this list true): a database there would
# fail sslmode=verify-full until the bundle is refreshed.
RDS_CA_MISSING_REGIONS = frozenset({"ap-east-2"})

# -- CloudWatch Logs ------------------------------------------------------------------------------
# The only retention periods PutRetentionPolicy accepts (botocore logs 2014-03-28 service model,
# shape Days, botocore 1.44).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                      2192, 2557, 2922, 3288, 3653)  # fmt: skip

# -- AWS Lambda -----------------------------------------------------------------------------------
# A function name is at most 64 characters (botocore lambda CreateFunction FunctionName).
LAMBDA_NAME_MAX = 64

# Python runtimes the functions run on: supported by Lambda (its runtime deprecation calendar,
# 2026-11) and by the function code (3.12+). Older ones are deprecated or too old for the code.
LAMBDA_PYTHON_RUNTIMES = ("python3.12", "python3.13")

# -- Amazon RDS for PostgreSQL --------------------------------------------------------------------
# PostgreSQL majors RDS supports under standard support, with its end (RDS release calendar,
# 2026-11): 13 left standard support on 2026-02-28 and would be billed as Extended Support.
POSTGRES_MAJORS = {"14": "2027-02-28", "15": "2028-02-29", "16": "2029-02-28", "17": "2030-02-28",
                   "18": "2031-02-28"}  # fmt: skip

# Instance classes PostgreSQL 14+ runs on (RDS "supported DB engines for DB instance classes",
# 2026-11). Older generations (RDS_RETIRED_FAMILIES) exist but PostgreSQL 14+ refuses them.
_RDS_SIZES = {
    "t3": ("micro", "small", "medium", "large", "xlarge", "2xlarge"),
    "t4g": ("micro", "small", "medium", "large", "xlarge", "2xlarge"),
    "m5": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"),
    "m6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "m6i": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "32xlarge"),
    "m7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r5": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"),
    "r6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r6i": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge",
            "32xlarge"),
    "r7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
}  # fmt: skip
RDS_CLASSES = frozenset(f"db.{fam}.{size}" for fam, sizes in _RDS_SIZES.items() for size in sizes)
RDS_RETIRED_FAMILIES = ("db.t2.", "db.m4.", "db.r4.", "db.m3.", "db.r3.")

# -- The free tier --------------------------------------------------------------------------------
# The free tier's EC2 and RDS sizes (12-month offers, accounts opened before 2025-07-15; AWS free
# tier page, 2025-07): 750 hours of t2.micro or t3.micro (t2.micro only where a region has no t3),
# 30 GB of EBS; RDS 750 hours of a Single-AZ micro class with 20 GB of gp2; ECR 500 MB of storage.
FREE_TIER_HOST_TYPES = ("t3.micro", "t2.micro")
FREE_TIER_EBS_GB = 30
FREE_TIER_DB_CLASSES = ("db.t4g.micro", "db.t3.micro")
FREE_TIER_DB_GB = 20
FREE_TIER_ECR_MB = 500
# The app's image as ECR stores it (gzip layers): 97 MB measured (docker save | gzip, 2026-12).
APP_IMAGE_MB = 100

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


def _rds_families() -> str:
    """`db.t3, db.t4g, db.m5/m6g/...`: the families of RDS_CLASSES as rules name them (the
    burstable ones each by name, the others grouped by class letter)."""
    groups: dict[str, list[str]] = {}
    for family in _RDS_SIZES:
        groups.setdefault(family[0], []).append(family)
    parts: list[str] = []
    for letter, families in groups.items():
        parts += [f"db.{f}" for f in families] if letter == "t" else ["db." + "/".join(families)]
    return ", ".join(parts)


RDS_FAMILIES_TEXT = _rds_families()
