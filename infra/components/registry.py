"""The registry: an ECR repository and the app's image, built from app/Dockerfile and pushed.

Tags are `repository_url:<content tag>`, a digest of the build context (never `latest`), and the
repository refuses to overwrite a tag (IMMUTABLE): the same source gives the same tag, a changed
source a new one. Consumers use `image_ref`, the pushed image by digest (`repo@sha256:...`).
Pushing uses credentials from ECR's authorization token, fetched at deploy time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra.config import RegistryConfig


def _ignored(rel: str, patterns: list[str]) -> bool:
    """A (simplified) .dockerignore match: glob patterns, `!` re-includes, folders match below."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if (
            fnmatch.fnmatch(rel, pat)
            or fnmatch.fnmatch(rel, f"{pat}/*")
            or rel.startswith(f"{pat}/")
        ):
            ignored = not negate
    return ignored


def context_tag(context: Path, platform: str) -> str:
    """A content tag for a build: sha256 over the target platform and the paths, modes and bytes
    of every file Docker would send (the .dockerignore applied) plus the Dockerfile and
    .dockerignore themselves; the first 16 hex digits, then the architecture (`-amd64`). Same
    source and platform, same tag; a new architecture is a new tag, never a second image pushed
    under a tag the IMMUTABLE repository already holds."""
    ignore_file = context / ".dockerignore"
    patterns = []
    if ignore_file.is_file():
        patterns = [
            line.strip()
            for line in ignore_file.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    digest = hashlib.sha256(b"platform\0" + platform.encode() + b"\0")
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        rel = path.relative_to(context).as_posix()
        # The Dockerfile and .dockerignore shape the image even when ignored for COPY (the docker
        # provider hashes the Dockerfile always): a change to either must give a new tag, or the
        # push would hit an existing tag in the IMMUTABLE repository.
        if _ignored(rel, patterns) and rel not in ("Dockerfile", ".dockerignore"):
            continue
        executable = b"x" if path.stat().st_mode & 0o111 else b"-"
        digest.update(rel.encode() + b"\0" + executable)
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{digest.hexdigest()[:16]}-{platform.rsplit('/', 1)[-1]}"


class Registry(pulumi.ComponentResource):
    """`cfg` is the registry section; `context` the build context (app/, holding the Dockerfile);
    `platform` linux/amd64 or linux/arm64 (the nodes' architecture); `protect` the stack's."""

    def __init__(
        self,
        name: str,
        cfg: RegistryConfig,
        *,
        context: Path,
        platform: str,
        protect: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:registry:Registry", name, None, opts)
        self.repository = aws.ecr.Repository(
            f"{name}-repo",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=cfg.scan_on_push
            ),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")
            ],
            # An unprotected (dev) stack can be destroyed with its images; a protected one cannot.
            force_delete=not protect,
            opts=pulumi.ResourceOptions(parent=self, protect=protect),
        )
        self.lifecycle = aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(cfg.keep_images),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.tag = context_tag(context, platform)
        self.image = self._image(name, context, platform)
        # The image as pushed, by digest: what the cluster runs.
        self.image_ref = self.image.repo_digest
        self.register_outputs(
            {
                "repositoryUrl": self.repository.repository_url,
                "imageRef": self.image_ref,
                "tag": self.tag,
            }
        )

    def _image(self, name: str, context: Path, platform: str) -> docker.Image:
        """Built from the context and pushed with ECR's authorization token (fetched at deploy)."""
        token = aws.ecr.get_authorization_token_output(
            registry_id=self.repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return docker.Image(
            f"{name}-image",
            image_name=self.repository.repository_url.apply(lambda url: f"{url}:{self.tag}"),
            build=docker.DockerBuildArgs(
                context=str(context),
                dockerfile=str(context / "Dockerfile"),
                platform=platform,
            ),
            registry=docker.RegistryArgs(
                server=self.repository.repository_url.apply(lambda url: url.split("/")[0]),
                username=token.user_name,
                password=pulumi.Output.secret(token.password),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )


def lifecycle_policy(keep_images: int) -> str:
    """ECR lifecycle: expire images beyond the newest `keep_images`."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"keep the last {keep_images} images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": keep_images,
                    },
                    "action": {"type": "expire"},
                }
            ]
        }
    )
