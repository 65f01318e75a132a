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

APP_PORT = 8000


@dataclass(frozen=True)
class LocalArgs:
    context: Path
    """The app's build context (app/), holding the Dockerfile."""
    app_port: int
    postgres_image: str
    base_image: str | None = None
    db_name: str = "shortener"
    db_user: str = "shortener"


class Local(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: LocalArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:local:Local", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = project_stack()

        network = docker.Network(f"{name}-net", name=prefix, driver="bridge", opts=child)

        # -- PostgreSQL ----------------------------------------------------------------------
        data = docker.Volume(f"{name}-pgdata", name=f"{prefix}-pgdata", opts=child)
        pg_image = docker.RemoteImage(
            f"{name}-postgres-image", name=args.postgres_image, keep_locally=True, opts=child
        )
        password = random.RandomPassword(
            f"{name}-db-password", length=32, special=False, opts=child
        )
        postgres = docker.Container(
            f"{name}-postgres",
            name=f"{prefix}-postgres",
            image=pg_image.image_id,
            envs=[
                pulumi.Output.concat("POSTGRES_PASSWORD=", password.result),
                f"POSTGRES_USER={args.db_user}",
                f"POSTGRES_DB={args.db_name}",
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
                tests=["CMD-SHELL", f"pg_isready -U {args.db_user} -d {args.db_name}"],
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

        # -- the app ---------------------------------------------------------------------------
        image = docker.Image(
            f"{name}-app-image",
            image_name=f"{prefix}-shortener:{context_tag(args.context, 'local')}",
            build=docker.DockerBuildArgs(
                context=str(args.context),
                dockerfile=str(args.context / "Dockerfile"),
                args={"BASE_IMAGE": args.base_image} if args.base_image else None,
            ),
            skip_push=True,
            opts=child,
        )
        token = random.RandomPassword(f"{name}-api-token", length=48, special=False, opts=child)
        database_url = pulumi.Output.concat(
            f"postgresql://{args.db_user}:",
            password.result,
            f"@postgres:5432/{args.db_name}",
        )
        # Secret, so neither state nor a plan holds them in clear.
        url_env: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat("DATABASE_URL=", database_url)
        )
        token_env: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.concat("API_TOKEN=", token.result)
        )
        self.app = docker.Container(
            f"{name}-app",
            name=f"{prefix}-app",
            image=image.image_name,
            envs=[url_env, token_env, f"PORT={APP_PORT}"],
            ports=[
                docker.ContainerPortArgs(internal=APP_PORT, external=args.app_port, ip="127.0.0.1")
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
            opts=pulumi.ResourceOptions(parent=self, depends_on=[postgres]),
        )
        self.url = f"http://localhost:{args.app_port}"
        self.api_token = token.result
        self.register_outputs({"url": self.url, "apiToken": self.api_token})
