"""The registry component on its own (backbone.synth.synth_component): the repository, its
lifecycle, and the image built from a build context of the test's own, tagged by content."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from backbone.plan import Plan
from backbone.synth import synth_component
from infra.components.registry import Registry, context_tag
from infra.config import RegistryConfig

REPOSITORY = "aws:ecr/repository:Repository"


def context(folder: Path) -> Path:
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY app.py /\n")
    (folder / "app.py").write_text("print('hello')\n")
    return folder


def registry(
    folder: Path, platform: str = "linux/amd64", protect: bool = False, **settings: Any
) -> Plan:
    cfg = RegistryConfig(**settings)

    def build() -> dict[str, Any]:
        made = Registry("registry", cfg, context=folder, platform=platform, protect=protect)
        return {"imageRef": made.image_ref, "tag": made.tag}

    return synth_component(build)


def test_the_repository_is_immutable_scanned_encrypted_and_pruned(tmp_path):
    plan = registry(context(tmp_path), keep_images=12)
    repo = plan.one(REPOSITORY)
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo.inputs["encryptionConfigurations"] == [{"encryptionType": "AES256"}]
    policy = json.loads(plan.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    (rule,) = policy["rules"]
    assert rule["selection"]["countType"] == "imageCountMoreThan"
    assert rule["selection"]["countNumber"] == 12
    assert rule["action"] == {"type": "expire"}
    unscanned = registry(tmp_path, scan_on_push=False).one(REPOSITORY)
    assert unscanned.inputs["imageScanningConfiguration"] == {"scanOnPush": False}


def test_a_protected_repository_keeps_its_images_an_unprotected_one_goes_with_them(tmp_path):
    kept = registry(context(tmp_path), protect=True).one(REPOSITORY)
    assert kept.protect and kept.inputs["forceDelete"] is False
    gone = registry(tmp_path).one(REPOSITORY)
    assert not gone.protect and gone.inputs["forceDelete"] is True


def test_the_image_is_tagged_by_content_pushed_with_ecr_token_and_run_by_digest(tmp_path):
    folder = context(tmp_path)
    plan = registry(folder, platform="linux/arm64")
    repo_url = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{plan.one(REPOSITORY).id}"
    image = plan.one("docker:index/image:Image")
    name, tag = image.inputs["imageName"].rsplit(":", 1)
    assert name == repo_url
    assert tag == plan.outputs["tag"] == context_tag(folder, "linux/arm64")
    assert re.fullmatch(r"[0-9a-f]{16}-arm64", tag)
    assert image.inputs["build"]["platform"] == "linux/arm64"
    assert image.inputs["build"]["context"] == str(folder)
    assert image.inputs["build"]["dockerfile"] == str(folder / "Dockerfile")
    credentials = image.inputs["registry"]
    assert credentials["server"] == repo_url.split("/")[0]
    assert credentials["username"] == "AWS"
    assert credentials["password"] == "[secret]"
    assert re.fullmatch(re.escape(repo_url) + r"@sha256:[0-9a-f]{64}", plan.outputs["imageRef"])


def test_content_tag_changes_with_the_source(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("__pycache__\n*.pyc\n")
    first = context_tag(tmp_path, "linux/amd64")
    (tmp_path / "x.pyc").write_text("ignored")
    assert context_tag(tmp_path, "linux/amd64") == first
    (tmp_path / "app.py").write_text("print(1)\n")
    assert context_tag(tmp_path, "linux/amd64") != first


def test_content_tag_covers_the_dockerfile_and_file_modes(tmp_path):
    (tmp_path / ".dockerignore").write_text("*\n!shortener/\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.12-slim\n")
    (tmp_path / "shortener").mkdir()
    script = tmp_path / "shortener" / "run.sh"
    script.write_text("echo hi\n")
    first = context_tag(tmp_path, "linux/amd64")
    (tmp_path / "Dockerfile").write_text("FROM python:3.13-slim\n")  # ignored for COPY, counts
    second = context_tag(tmp_path, "linux/amd64")
    assert second != first
    script.chmod(0o755)
    third = context_tag(tmp_path, "linux/amd64")
    assert third != second
    (tmp_path / "notes.txt").write_text("ignored entirely")  # not sent to Docker: same tag
    assert context_tag(tmp_path, "linux/amd64") == third
    # a new architecture is a new tag
    assert context_tag(tmp_path, "linux/arm64") != third
