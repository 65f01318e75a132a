"""backbone:local: the local stack on your own Docker (target docker)."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import Problem, Section, bounded

_IMAGE = r"^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$"


class LocalConfig(Section):
    """The local stack (target docker): the whole shape on your own Docker: PostgreSQL, the app's
    replicas behind a reverse proxy (HAProxy, the load balancer), Prometheus with the kit's
    alert rules."""

    SECTION = "local"

    app_port: int = Field(default=8000, ge=1024, le=65535)
    """The port on 127.0.0.1 where the app answers, through the proxy (http://localhost:<appPort>)."""

    replicas: int = bounded(
        2, 1, 9, "How many app containers the proxy balances over ({low} to {high})."
    )

    prometheus_port: int = Field(default=9090, ge=1024, le=65535)
    """The port on 127.0.0.1 of the Prometheus UI (http://localhost:<prometheusPort>)."""

    alertmanager_port: int = Field(default=9093, ge=1024, le=65535)
    """The port on 127.0.0.1 of the local Alertmanager (http://localhost:<alertmanagerPort>): the
    kit's routing, with a receiver that sends nowhere (alerts are shown, not delivered)."""

    grafana_port: int = Field(default=3000, ge=1024, le=65535)
    """The port on 127.0.0.1 of the local Grafana (http://localhost:<grafanaPort>), provisioned
    with the local Prometheus as data source and the kit's dashboards."""

    postgres_image: str = Field(default="postgres:17-bookworm", pattern=_IMAGE)
    """The PostgreSQL image, pinned by tag or digest (never `latest`)."""

    proxy_image: str = Field(default="haproxy:3.0-bookworm", pattern=_IMAGE)
    """The reverse proxy's image (HAProxy: active health checks of every replica), pinned."""

    prometheus_image: str = Field(default="prom/prometheus:v2.53.0", pattern=_IMAGE)
    """The Prometheus image, pinned by tag or digest."""

    alertmanager_image: str = Field(default="prom/alertmanager:v0.27.0", pattern=_IMAGE)
    """The Alertmanager image, pinned by tag or digest."""

    grafana_image: str = Field(default="grafana/grafana:11.6.0", pattern=_IMAGE)
    """The Grafana image, pinned by tag or digest (11.6: the dashboards' schema, the version of
    grafana-foundation-sdk that builds them)."""

    base_image: str | None = None
    """Build argument BASE_IMAGE for app/Dockerfile; unset keeps the Dockerfile's default
    (python:3.12-slim). Set it when Docker Hub is out of reach and you built a base yourself."""

    def problems(self) -> list[Problem]:
        """The images pinned, the ports apart."""
        out = list[Problem]()
        images = (
            ("postgresImage", self.postgres_image),
            ("proxyImage", self.proxy_image),
            ("prometheusImage", self.prometheus_image),
            ("alertmanagerImage", self.alertmanager_image),
            ("grafanaImage", self.grafana_image),
        )
        for key, image in images:
            tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
            if "@" not in image and tag in ("", "latest"):
                out.append(
                    Problem(
                        self.key(key),
                        f"{image!r} is not pinned; allowed: a tag such as postgres:17-bookworm "
                        "or a digest (latest changes under you)",
                    )
                )
        ports = {
            "appPort": self.app_port,
            "prometheusPort": self.prometheus_port,
            "alertmanagerPort": self.alertmanager_port,
            "grafanaPort": self.grafana_port,
        }
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                out.append(
                    Problem(self.key(key), f"{port} is also {seen[port]}; allowed: another port")
                )
            seen.setdefault(port, key)
        return out
