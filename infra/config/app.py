"""backbone:app: the sample app on Kubernetes (the workload)."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import Problem, Section

# The known link the migration creates and the canary follows (app.canaryLinkCode's default; the
# canary's read path, functions.canaryReadPath, looks it up by default).
CANARY_LINK_CODE = "backbone-canary"


class AppConfig(Section):
    """The sample app on Kubernetes."""

    SECTION = "app"

    replicas: int = Field(default=2, ge=1, le=100)
    """Pods at creation (the autoscaler owns the count afterwards)."""

    min_replicas: int = Field(default=2, ge=1, le=100)
    """Fewest pods the HorizontalPodAutoscaler keeps."""

    max_replicas: int = Field(default=4, ge=1, le=100)
    """Most pods the HorizontalPodAutoscaler runs."""

    target_cpu_percent: int = Field(default=70, ge=10, le=100)
    """Average CPU use (of the request) the autoscaler aims for."""

    cpu: str = Field(default="250m", pattern=r"^[0-9]+m?$")
    """CPU request per pod (the limit is twice it)."""

    memory: str = Field(default="256Mi", pattern=r"^[0-9]+(Mi|Gi)$")
    """Memory request and limit per pod."""

    node_port: int = Field(default=30080, ge=30000, le=32767)
    """The Service's node port: the load balancer's target port."""

    health_check_node_port: int = Field(default=30081, ge=30000, le=32767)
    """The Service's health check node port (externalTrafficPolicy Local): kube-proxy answers
    200 there while the node holds a ready app pod; the load balancer's health check."""

    canary_link_code: str = Field(default=CANARY_LINK_CODE, pattern=r"^[A-Za-z0-9_-]{3,32}$")
    """The known link the migration creates (no expiry) on every run, and the canary follows
    through the load balancer: a cached redirect, exercised every canary run."""

    canary_link_url: str = Field(
        default=f"https://example.org/{CANARY_LINK_CODE}", pattern=r"^https?://[^\s]+$"
    )
    """Where the canary link redirects to (the canary checks the 3xx points exactly here)."""

    def problems(self) -> list[Problem]:
        if self.min_replicas <= self.replicas <= self.max_replicas:
            return []
        return [
            Problem(
                self.key("replicas"),
                f"minReplicas {self.min_replicas} <= replicas {self.replicas} <= maxReplicas "
                f"{self.max_replicas} does not hold; allowed: counts in that order",
            )
        ]
