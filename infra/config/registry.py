"""backbone:registry: the app image's ECR repository."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import Section
from infra.config.capacity import APP_REVISION_HISTORY_LIMIT

# With a cluster the registry keeps the running image plus the Deployment's revision history, so
# `kubectl rollout undo` finds its image (a rule on StackConfig: it reads the cluster's section).
KEEP_WITH_CLUSTER = APP_REVISION_HISTORY_LIMIT + 1


class RegistryConfig(Section):
    """The ECR repository the app's image is pushed to."""

    SECTION = "registry"

    keep_images: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="How many images the lifecycle policy keeps; older ones are expired. With a "
        "cluster, at least the running image plus the Deployment's revision history "
        f"({KEEP_WITH_CLUSTER}), so `kubectl rollout undo` finds its image; a stack without one "
        "(free-tier) may keep fewer.",
    )

    scan_on_push: bool = True
    """Scan every pushed image for known vulnerabilities (ECR basic scanning)."""
