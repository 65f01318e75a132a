"""backbone:host: the app on one EC2 instance (the free-tier stack's way, instead of a cluster)."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import Problem, Section, bounded
from infra.config.catalogues import FREE_TIER_EBS_GB, FREE_TIER_HOST_TYPES
from infra.config.cluster import is_graviton


class HostConfig(Section):
    """One EC2 instance that runs the app as a container (the free-tier stack's way, instead of a
    cluster): Amazon Linux 2023, Docker, the image from the stack's ECR repository by digest."""

    SECTION = "host"

    enabled: bool = False
    """Create the host. It needs the database (the app's); not with a cluster."""

    instance_type: str = Field(
        default=FREE_TIER_HOST_TYPES[0],
        pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$",
        description=f"The EC2 instance type (x86_64): {FREE_TIER_HOST_TYPES[0]}, or "
        f"{FREE_TIER_HOST_TYPES[1]} in a region without t3 (check with `aws ec2 "
        "describe-instance-type-offerings --filters "
        f"Name=instance-type,Values={FREE_TIER_HOST_TYPES[0]}`). A stack with a free tier "
        "(`backbone:freeTier`) allows only these two.",
    )

    root_volume_gb: int = bounded(
        16,
        8,
        1000,
        "The root volume (gp3, encrypted), in GiB: at least the AMI's {low}; the free tier covers "
        f"{FREE_TIER_EBS_GB} (shared by every volume of the account).",
    )

    def problems(self) -> list[Problem]:
        if not self.enabled or not is_graviton(self.instance_type):
            return []
        return [
            Problem(
                self.key("instanceType"),
                f"{self.instance_type!r} is a Graviton (arm64) type; the host runs the x86_64 "
                "Amazon Linux AMI and a linux/amd64 image; allowed: an x86_64 type such as "
                f"{FREE_TIER_HOST_TYPES[0]}",
            )
        ]
