"""The local stack: the whole shape on your own Docker engine, no cloud.

- A private bridge network; nothing on it is published except through 127.0.0.1.
- PostgreSQL from a pinned image, its data in a named volume, a generated password, and a
  health check the app containers wait for. Reachable on the network only, as `postgres`.
- The app image built from app/Dockerfile (tagged by the content of app/, never pushed), run as
  `replicas` containers the way the cluster runs its pods: non-root UID 10001, read-only root
  filesystem with a tmpfs /tmp, all capabilities dropped, no new privileges; no port published.
  The first replica migrates on start (as the master user of this local database); the others
  wait for it to be healthy.
- HAProxy, the load balancer: round robin over the replicas, each checked every 2 s on /readyz
  (out after 2 failures, back after 2 successes), a failed connection retried on another
  replica; published on 127.0.0.1:<appPort>.
- Prometheus scraping every replica's metrics port (METRICS_PORT) as the kit's app job (APP_JOB)
  with the kit's own alert rules (infra/components/prometheus.py, from the monitoring section's
  thresholds), sending its alerts to the local Alertmanager; its UI on 127.0.0.1:<prometheusPort>.
- Alertmanager with the kit's routing and grouping (the workspace's, `alert_route`) and a receiver
  that sends nowhere: alerts are grouped and shown on 127.0.0.1:<alertmanagerPort>, not delivered
  (add a webhook_configs entry to `local_alertmanager_config` to deliver them).
- Grafana provisioned with the local Prometheus (and Alertmanager) as data sources and the kit's
  dashboards (infra/components/dashboards.py, the ones `backbone dashboards` writes); admin
  password generated (output `grafanaAdminPassword`, secret), on 127.0.0.1:<grafanaPort>.
- The configuration files (`haproxy_config`, `prometheus_config`, `alert_rules`,
  `alertmanager_config`, `grafana_files`) are uploaded into a config volume of each container, so
  their root stays read-only; tests check them with `haproxy -c`, `promtool`, `amtool` and
  Grafana's documented provisioning schema, and run Prometheus and Alertmanager on them.
- The database URL and the API token reach the app as secret environment values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random
import yaml

from infra.components import APP_UID, project_stack
from infra.components.dashboards import dashboard_provider, dashboards, datasources
from infra.components.prometheus import (
    APP_JOB,
    local_alertmanager_config,
    render_rules,
    thresholds,
)
from infra.components.registry import context_tag
from infra.config import LocalConfig, MonitoringConfig

APP_PORT = 8000
METRICS_PORT = 9464
PROXY_PORT = 8080
"""HAProxy's port inside its container (unprivileged; published as appPort)."""
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
GRAFANA_PORT = 3000
DB_NAME = DB_USER = "shortener"
CONFIG_DIR = "/etc/backbone"
"""Where each container's config volume is mounted."""
GRAFANA_DASHBOARDS = f"{CONFIG_DIR}/dashboards"
"""Where the local Grafana's dashboard provider reads the kit's dashboards."""
HEALTH_PATH = "/readyz"
# Every container but PostgreSQL's (whose image needs its root): what the pods are held to.
HARDENED: dict[str, Any] = {
    "read_only": True,
    "capabilities": docker.ContainerCapabilitiesArgs(drops=["ALL"]),
    "security_opts": ["no-new-privileges:true"],
    "restart": "unless-stopped",
}


def haproxy_config(replicas: Sequence[str]) -> str:
    """The proxy's haproxy.cfg: the replicas by their names on the stack's network, resolved
    through Docker's DNS at run time (a replica not up yet starts out of rotation)."""
    servers = "\n".join(f"    server {name} {name}:{APP_PORT}" for name in replicas)
    return f"""# written by the backbone local stack (infra/components/local.py)
global
    log stdout format raw local0
    maxconn 1000

defaults
    mode http
    log global
    option httplog
    # a connection a replica refuses (or that times out) is retried on another one at once
    option redispatch 1
    retries 3
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s

resolvers docker
    nameserver dns 127.0.0.11:53
    timeout resolve 1s
    timeout retry 1s
    hold valid 10s
    hold nx 2s

frontend web
    bind :{PROXY_PORT}
    option forwardfor
    default_backend app

backend app
    balance roundrobin
    option httpchk
    http-check send meth GET uri {HEALTH_PATH}
    http-check expect status 200
    # checked every 2 s (out after 2 failures, back after 2 successes); a failed connection
    # takes a replica out at once; names resolved through Docker's DNS, absent ones start out
    default-server check inter 2s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down resolvers docker init-addr last,libc,none
{servers}
"""


def prometheus_config(
    replicas: Sequence[str], alertmanager: str, rules_file: str = "rules.yml"
) -> str:
    """prometheus.yml: every replica's metrics port, as the app job (APP_JOB, the rules' job);
    alerts to the Alertmanager at `alertmanager` (host:port)."""
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [rules_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {
                "job_name": APP_JOB,
                "static_configs": [{"targets": [f"{n}:{METRICS_PORT}" for n in replicas]}],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}],
            },
        ],
    }
    return "# written by the backbone local stack\n" + yaml.safe_dump(config, sort_keys=False)


def alert_rules(monitoring: MonitoringConfig) -> str:
    """The kit's alert rules for the app, from the same thresholds as the cloud's alarms."""
    rules = render_rules(**thresholds(monitoring), job=APP_JOB, group_by=("job",))
    return yaml.safe_dump(rules, sort_keys=False)


def alertmanager_config() -> str:
    """alertmanager.yml: the kit's routing and grouping, to a receiver that sends nowhere."""
    return "# written by the backbone local stack: alerts are shown, not delivered\n" + (
        yaml.safe_dump(local_alertmanager_config(), sort_keys=False)
    )


def grafana_files(prometheus_url: str, alertmanager_url: str) -> dict[str, str]:
    """The local Grafana's files, by path under CONFIG_DIR: its provisioning (data sources, a
    dashboard provider reading GRAFANA_DASHBOARDS) and the kit's dashboards."""
    files = {
        "provisioning/datasources/backbone.yaml": datasources(prometheus_url, alertmanager_url),
        "provisioning/dashboards/backbone.yaml": dashboard_provider(GRAFANA_DASHBOARDS),
    }
    out = {path: yaml.safe_dump(data, sort_keys=False) for path, data in files.items()}
    for name, text in dashboards().items():
        out[f"dashboards/{name}"] = text
    return out


@dataclass(frozen=True)
class Postgres:
    """What the PostgreSQL step made: its container and the app's URL to it (secret)."""

    container: docker.Container
    database_url: pulumi.Output[str]


class Local(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        config: LocalConfig,
        *,
        context: Path,
        monitoring: MonitoringConfig,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`context`: the app's build context (app/), holding the Dockerfile; `monitoring`: the
        thresholds of the alert rules."""
        super().__init__("backbone:local:Local", name, None, opts)
        self._name, self._prefix = name, project_stack()
        self._child = pulumi.ResourceOptions(parent=self)
        self._network = docker.Network(
            f"{name}-net", name=self._prefix, driver="bridge", opts=self._child
        )
        postgres = self._postgres(config)
        image = self._app_image(config, context)
        token = random.RandomPassword(
            f"{name}-api-token", length=48, special=False, opts=self._child
        )
        self.apps = self._apps(config, postgres, image, token.result)
        replicas = [f"{self._prefix}-app-{i + 1}" for i in range(config.replicas)]
        self.proxy = self._proxy(config, replicas)
        self.alertmanager = self._alertmanager(config)
        self.prometheus = self._prometheus(config, replicas, monitoring)
        grafana_password = random.RandomPassword(
            f"{name}-grafana-password", length=32, special=False, opts=self._child
        )
        self.grafana = self._grafana(config, grafana_password.result)
        self.url = f"http://localhost:{config.app_port}"
        self.prometheus_url = f"http://localhost:{config.prometheus_port}"
        self.alertmanager_url = f"http://localhost:{config.alertmanager_port}"
        self.grafana_url = f"http://localhost:{config.grafana_port}"
        self.api_token = token.result
        self.grafana_password = grafana_password.result
        self.register_outputs(
            {
                "url": self.url,
                "prometheusUrl": self.prometheus_url,
                "alertmanagerUrl": self.alertmanager_url,
                "grafanaUrl": self.grafana_url,
                "apiToken": self.api_token,
                "grafanaAdminPassword": self.grafana_password,
            }
        )

    def _on_network(self, *aliases: str) -> list[docker.ContainerNetworksAdvancedArgs]:
        return [
            docker.ContainerNetworksAdvancedArgs(
                name=self._network.name, aliases=list(aliases) or None
            )
        ]

    def _postgres(self, config: LocalConfig) -> Postgres:
        name, prefix, child = self._name, self._prefix, self._child
        data = docker.Volume(f"{name}-pgdata", name=f"{prefix}-pgdata", opts=child)
        pg_image = docker.RemoteImage(
            f"{name}-postgres-image", name=config.postgres_image, keep_locally=True, opts=child
        )
        password = random.RandomPassword(
            f"{name}-db-password", length=32, special=False, opts=child
        )
        container = docker.Container(
            f"{name}-postgres",
            name=f"{prefix}-postgres",
            image=pg_image.image_id,
            envs=[
                pulumi.Output.concat("POSTGRES_PASSWORD=", password.result),
                f"POSTGRES_USER={DB_USER}",
                f"POSTGRES_DB={DB_NAME}",
            ],
            volumes=[
                docker.ContainerVolumeArgs(
                    volume_name=data.name, container_path="/var/lib/postgresql/data"
                )
            ],
            networks_advanced=self._on_network("postgres"),
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD-SHELL", f"pg_isready -U {DB_USER} -d {DB_NAME}"],
                interval="5s",
                timeout="3s",
                retries=10,
                start_period="10s",
            ),
            restart="unless-stopped",
            # `pulumi up` goes on only once PostgreSQL is healthy.
            wait=True,
            wait_timeout=120,
            opts=child,
        )
        url = pulumi.Output.concat(
            f"postgresql://{DB_USER}:", password.result, f"@postgres:5432/{DB_NAME}"
        )
        return Postgres(container, url)

    def _app_image(self, config: LocalConfig, context: Path) -> docker.Image:
        """Built from app/Dockerfile, tagged by the content of app/, never pushed."""
        return docker.Image(
            f"{self._name}-app-image",
            image_name=f"{self._prefix}-shortener:{context_tag(context, 'local')}",
            build=docker.DockerBuildArgs(
                context=str(context),
                dockerfile=str(context / "Dockerfile"),
                args={"BASE_IMAGE": config.base_image} if config.base_image else None,
            ),
            skip_push=True,
            opts=self._child,
        )

    def _apps(
        self,
        config: LocalConfig,
        postgres: Postgres,
        image: docker.Image,
        token: pulumi.Output[str],
    ) -> list[docker.Container]:
        """The replicas, one after the other: the first migrates (MIGRATE_ON_STARTUP), the next
        starts once the one before is healthy (the image's HEALTHCHECK), so only one migrates."""
        # Secret, so neither state nor a plan holds them in clear.
        url_env: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat("DATABASE_URL=", postgres.database_url)
        )
        token_env: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat("API_TOKEN=", token)
        )
        apps: list[docker.Container] = []
        after: docker.Container = postgres.container
        for i in range(config.replicas):
            app = docker.Container(
                f"{self._name}-app-{i + 1}",
                name=f"{self._prefix}-app-{i + 1}",
                image=image.image_name,
                envs=[
                    url_env,
                    token_env,
                    f"PORT={APP_PORT}",
                    f"METRICS_PORT={METRICS_PORT}",
                    f"MIGRATE_ON_STARTUP={'true' if i == 0 else 'false'}",
                ],
                networks_advanced=self._on_network(),
                user=f"{APP_UID}:{APP_UID}",
                tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
                wait=True,
                wait_timeout=120,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[after]),
                **HARDENED,
            )
            apps.append(app)
            after = app
        return apps

    def _config_volume(
        self, what: str, files: dict[str, str]
    ) -> tuple[docker.ContainerVolumeArgs, list[docker.ContainerUploadArgs]]:
        """A named volume at CONFIG_DIR and the files uploaded into it before the container
        starts (the container's root filesystem stays read-only)."""
        volume = docker.Volume(
            f"{self._name}-{what}-config", name=f"{self._prefix}-{what}-config", opts=self._child
        )
        mount = docker.ContainerVolumeArgs(
            volume_name=volume.name, container_path=CONFIG_DIR, read_only=False
        )
        uploads = [
            docker.ContainerUploadArgs(file=f"{CONFIG_DIR}/{f}", content=text, permissions="0644")
            for f, text in files.items()
        ]
        return mount, uploads

    def _proxy(self, config: LocalConfig, replicas: list[str]) -> docker.Container:
        image = docker.RemoteImage(
            f"{self._name}-proxy-image",
            name=config.proxy_image,
            keep_locally=True,
            opts=self._child,
        )
        mount, uploads = self._config_volume("proxy", {"haproxy.cfg": haproxy_config(replicas)})
        return docker.Container(
            f"{self._name}-proxy",
            name=f"{self._prefix}-proxy",
            image=image.image_id,
            command=["haproxy", "-W", "-db", "-f", f"{CONFIG_DIR}/haproxy.cfg"],
            ports=[
                docker.ContainerPortArgs(
                    internal=PROXY_PORT, external=config.app_port, ip="127.0.0.1"
                )
            ],
            networks_advanced=self._on_network(),
            volumes=[mount],
            uploads=uploads,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=16m"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.apps),
            **HARDENED,
        )

    def _service(
        self,
        part: str,
        image: str,
        ports: tuple[int, int],
        data_path: str,
        files: dict[str, str],
        opts: pulumi.ResourceOptions,
        **container: Any,
    ) -> docker.Container:
        """One of the monitoring containers: its pinned image, a data volume at `data_path`, its
        configuration `files` in a volume, `ports` (inside, on 127.0.0.1) and the hardening."""
        name, child = self._name, self._child
        pulled = docker.RemoteImage(
            f"{name}-{part}-image", name=image, keep_locally=True, opts=child
        )
        data = docker.Volume(f"{name}-{part}-data", name=f"{self._prefix}-{part}-data", opts=child)
        mount, uploads = self._config_volume(part, files)
        return docker.Container(
            f"{name}-{part}",
            name=f"{self._prefix}-{part}",
            image=pulled.image_id,
            ports=[docker.ContainerPortArgs(internal=ports[0], external=ports[1], ip="127.0.0.1")],
            networks_advanced=self._on_network(),
            volumes=[
                mount,
                docker.ContainerVolumeArgs(volume_name=data.name, container_path=data_path),
            ],
            uploads=uploads,
            opts=opts,
            **container,
            **HARDENED,
        )

    def _prometheus(
        self, config: LocalConfig, replicas: list[str], monitoring: MonitoringConfig
    ) -> docker.Container:
        files = {
            "prometheus.yml": prometheus_config(
                replicas, f"{self._prefix}-alertmanager:{ALERTMANAGER_PORT}"
            ),
            "rules.yml": alert_rules(monitoring),
        }
        return self._service(
            "prometheus",
            config.prometheus_image,
            (PROMETHEUS_PORT, config.prometheus_port),
            "/prometheus",
            files,
            pulumi.ResourceOptions(parent=self, depends_on=[*self.apps, self.alertmanager]),
            command=[
                f"--config.file={CONFIG_DIR}/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                "--storage.tsdb.retention.time=7d",
                f"--web.listen-address=:{PROMETHEUS_PORT}",
            ],
        )

    def _alertmanager(self, config: LocalConfig) -> docker.Container:
        return self._service(
            "alertmanager",
            config.alertmanager_image,
            (ALERTMANAGER_PORT, config.alertmanager_port),
            "/alertmanager",
            {"alertmanager.yml": alertmanager_config()},
            self._child,
            command=[
                f"--config.file={CONFIG_DIR}/alertmanager.yml",
                "--storage.path=/alertmanager",
                f"--web.listen-address=:{ALERTMANAGER_PORT}",
                # one instance: no high-availability gossip port
                "--cluster.listen-address=",
            ],
        )

    def _grafana(self, config: LocalConfig, password: pulumi.Output[str]) -> docker.Container:
        files = grafana_files(
            f"http://{self._prefix}-prometheus:{PROMETHEUS_PORT}",
            f"http://{self._prefix}-alertmanager:{ALERTMANAGER_PORT}",
        )
        secret_env: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat("GF_SECURITY_ADMIN_PASSWORD=", password)
        )
        return self._service(
            "grafana",
            config.grafana_image,
            (GRAFANA_PORT, config.grafana_port),
            "/var/lib/grafana",
            files,
            pulumi.ResourceOptions(parent=self, depends_on=[self.prometheus]),
            envs=[
                secret_env,
                f"GF_PATHS_PROVISIONING={CONFIG_DIR}/provisioning",
                f"GF_SERVER_HTTP_PORT={GRAFANA_PORT}",
                "GF_USERS_ALLOW_SIGN_UP=false",
                "GF_AUTH_ANONYMOUS_ENABLED=false",
                # the root is read-only: logs to the container's output only
                "GF_LOG_MODE=console",
                # nothing leaves the machine
                "GF_ANALYTICS_REPORTING_ENABLED=false",
                "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
                "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES=false",
                "GF_NEWS_NEWS_FEED_ENABLED=false",
            ],
            tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
        )
