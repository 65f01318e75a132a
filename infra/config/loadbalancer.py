"""backbone:loadbalancer: the public Application Load Balancer and its web ACL."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import Problem, Section


class LoadBalancerConfig(Section):
    """The public Application Load Balancer in front of the app."""

    SECTION = "loadbalancer"

    enabled: bool = False
    """Create the load balancer. It needs a network with at least two availability zones."""

    certificate_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]{36}$",
    )
    """An ACM certificate for HTTPS, in the stack's region. With one (or domainName), port 80
    redirects to 443; without, the load balancer serves plain HTTP on port 80 (fine for a trial,
    never for real users; refused in a production stack unless allowPlainHttp)."""

    domain_name: str | None = Field(
        default=None,
        pattern=r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
        max_length=253,
    )
    """Instead of certificateArn: the domain of an ISSUED ACM certificate in the stack's region,
    looked up at deploy time (the newest one wins). `pulumi preview` stops at once, before
    anything is created, when there is none."""

    allow_plain_http: bool = False
    """The explicit opt-out a production stack needs to serve plain HTTP without a certificate.
    Every request and token then crosses the internet unencrypted."""

    deletion_protection: bool = False
    """AWS refuses to delete the load balancer until this is lifted."""

    access_logs: bool = False
    """Write access logs to an S3 bucket the kit creates."""

    idle_timeout_seconds: int = Field(default=60, ge=1, le=4000)
    """Seconds a connection may idle. The one keep-alive setting: the app keeps its connections
    5 s longer (LB_IDLE_TIMEOUT_SECONDS), so the ALB never reuses one the app has closed."""

    web_acl: bool | None = None
    """A WAFv2 web ACL on the load balancer (AWS managed common and known-bad-inputs rule groups,
    a rate-based rule): about $8 a month plus $0.60 per million requests. Unset: on in a
    production stack (backbone:tier: production), off elsewhere."""

    waf_rate_limit: int = Field(default=1000, ge=10, le=2_000_000_000)
    """Requests one client address may send in 5 minutes before the web ACL blocks it."""

    @property
    def tls(self) -> bool:
        """Whether the load balancer serves HTTPS (a certificate by ARN or by domain)."""
        return bool(self.certificate_arn or self.domain_name)

    @property
    def certificate_region(self) -> str | None:
        return self.certificate_arn.split(":")[3] if self.certificate_arn else None

    def problems(self) -> list[Problem]:
        if not self.enabled:
            return []
        out = list[Problem]()
        if self.certificate_arn and self.domain_name:
            out.append(
                Problem(
                    self.key("domainName"),
                    "set together with certificateArn; allowed: one of the two (the certificate "
                    "by its ARN, or looked up by its domain)",
                )
            )
        if self.tls and self.allow_plain_http:
            out.append(
                Problem(
                    self.key("allowPlainHttp"),
                    "true has no meaning with a certificate (port 80 redirects to HTTPS); "
                    "allowed: false",
                )
            )
        return out
