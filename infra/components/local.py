"""The local stack: the app and PostgreSQL as containers on your own Docker engine. No cloud.

- A private bridge network; PostgreSQL is reachable on it as `postgres` and never published.
- PostgreSQL from a pinned image, its data in a named volume, a generated password, and a
  health check the app container waits for.
- The app image built from app/Dockerfile (tagged by the content of app/, never pushed) and run
  the way the cluster runs it: non-root UID 10001, read-only root filesystem with a tmpfs /tmp, all
  capabilities dropped, no new privileges; published on 127.0.0.1 only.
- The database URL and the API token reach the container as secret environment values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from infra.components import APP_UID, project_stack
from infra.components.registry import context_tag
from infra.config import LocalConfig

APP_PORT = 8000
DB_NAME = DB_USER = "shortener"


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
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`context`: the app's build context (app/), holding the Dockerfile."""
        super().__init__("backbone:local:Local", name, None, opts)
        self._name, self._prefix = name, project_stack()
        self._child = pulumi.ResourceOptions(parent=self)
        network = docker.Network(
            f"{name}-net", name=self._prefix, driver="bridge", opts=self._child
        )
        postgres = self._postgres(config, network)
        image = self._app_image(config, context)
        token = random.RandomPassword(
            f"{name}-api-token", length=48, special=False, opts=self._child
        )
        self.app = self._app(config, network, postgres, image, token.result)
        self.url = f"http://localhost:{config.app_port}"
        self.api_token = token.result
        self.register_outputs({"url": self.url, "apiToken": self.api_token})

    def _postgres(self, config: LocalConfig, network: docker.Network) -> Postgres:
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
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=["postgres"])
            ],
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

    def _app(
        self,
        config: LocalConfig,
        network: docker.Network,
        postgres: Postgres,
        image: docker.Image,
        token: pulumi.Output[str],
    ) -> docker.Container:
        # Secret, so neither state nor a plan holds them in clear.
        url_env: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat("DATABASE_URL=", postgres.database_url)
        )
        token_env: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat("API_TOKEN=", token)
        )
        return docker.Container(
            f"{self._name}-app",
            name=f"{self._prefix}-app",
            image=image.image_name,
            envs=[url_env, token_env, f"PORT={APP_PORT}"],
            ports=[
                docker.ContainerPortArgs(
                    internal=APP_PORT, external=config.app_port, ip="127.0.0.1"
                )
            ],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name)],
            user=f"{APP_UID}:{APP_UID}",
            read_only=True,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
            capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"]),
            security_opts=["no-new-privileges:true"],
            restart="unless-stopped",
            wait=True,
            wait_timeout=120,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[postgres.container]),
        )
