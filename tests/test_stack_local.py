"""local: the app and PostgreSQL as containers on the user's own Docker engine; nothing on AWS."""

from __future__ import annotations

import json
import re

import pytest

CONTAINER = "docker:index/container:Container"


def test_registers_no_aws_resource(plan_of):
    plan = plan_of("local")
    assert [r for r in plan if r.package == "aws"] == []
    assert plan.outputs["target"] == "docker"
    assert plan.outputs["url"] == "http://localhost:8000"
    assert plan.outputs["appApiToken"] == "[secret]"


def test_needs_no_region(backbone_cli):
    result = backbone_cli("plan", "local")
    assert result.returncode == 0, result.stderr
    assert "backbone stack local" in result.stdout


def test_postgres_is_pinned_persistent_private_and_waited_for(plan_of):
    plan = plan_of("local")
    pg = plan.one(CONTAINER, "local-postgres").inputs
    image = plan.one("docker:index/remoteImage:RemoteImage")
    assert image.inputs["name"] == "postgres:17-bookworm" and image.inputs["keepLocally"] is True
    assert pg["image"] == image.outputs["imageId"]
    assert pg["volumes"] == [
        {"containerPath": "/var/lib/postgresql/data", "volumeName": "backbone-local-pgdata"}
    ]
    assert "ports" not in pg  # reachable only on the stack's network
    assert pg["networksAdvanced"] == [{"aliases": ["postgres"], "name": "backbone-local"}]
    assert pg["healthcheck"]["tests"] == ["CMD-SHELL", "pg_isready -U shortener -d shortener"]
    assert pg["wait"] is True
    # the password is generated and never in clear
    assert pg["envs"][0] == "[secret]" and not any("PASSWORD=" in e for e in pg["envs"])


def test_app_runs_hardened_on_loopback_after_postgres(plan_of):
    plan = plan_of("local")
    app = plan.one(CONTAINER, "local-app")
    i = app.inputs
    image = plan.one("docker:index/image:Image")
    assert i["image"] == image.inputs["imageName"]
    name, tag = image.inputs["imageName"].rsplit(":", 1)
    assert name == "backbone-local-shortener" and re.fullmatch(r"[0-9a-f]{16}-local", tag)
    assert image.inputs["skipPush"] is True
    assert image.inputs["build"]["dockerfile"].endswith("app/Dockerfile")
    assert i["ports"] == [{"external": 8000, "internal": 8000, "ip": "127.0.0.1"}]
    assert i["user"] == "10001:10001" and i["readOnly"] is True
    assert i["capabilities"] == {"drops": ["ALL"]}
    assert i["securityOpts"] == ["no-new-privileges:true"]
    assert "/tmp" in i["tmpfs"]
    assert i["envs"] == ["[secret]", "[secret]", "PORT=8000"]  # DATABASE_URL, API_TOKEN
    assert plan.one(CONTAINER, "local-postgres").urn in app.dependencies


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"backbone:cluster": {"enabled": True}},
            "backbone:cluster.enabled: true has no meaning when target is docker",
        ),
        (
            {"backbone:local": {"postgresImage": "postgres:latest"}},
            "backbone:local.postgresImage: 'postgres:latest' is not pinned",
        ),
        ({"backbone:local": {"appPort": 80}}, "backbone:local.appPort: 80 is not allowed"),
    ],
)
def test_local_settings_are_checked(backbone_cli, tmp_path, settings, expected):
    config = {"backbone:target": "docker", **settings}
    bad = tmp_path / "Pulumi.local.yaml"
    bad.write_text(json.dumps({"config": config}))
    result = backbone_cli("plan", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr


def test_base_image_build_argument(backbone_cli, tmp_path):
    file = tmp_path / "Pulumi.local.yaml"
    file.write_text(
        json.dumps(
            {
                "config": {
                    "backbone:target": "docker",
                    "backbone:local": {"baseImage": "backbone/python-base:3.11"},
                }
            }
        )
    )
    result = backbone_cli("plan", str(file), "-f", "json")
    assert result.returncode == 0, result.stderr
    image = next(
        r for r in json.loads(result.stdout)["resources"] if r["type"] == "docker:index/image:Image"
    )
    assert image["inputs"]["build"]["args"] == {"BASE_IMAGE": "backbone/python-base:3.11"}


def test_docker_inputs_are_wire_names(plan_of):
    from tests.test_wire_format import sdk_input_names

    for r in plan_of("local").managed():
        assert set(r.inputs) <= sdk_input_names(r.type), r.type
