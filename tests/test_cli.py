"""The `backbone` command as a user runs it: output, formats, help, and errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("stack", ["local", "free-tier", "dev", "prod"])
def test_plan_prints_tree_counts_and_outputs(backbone_cli, backbone_process, stack):
    # prod in a process of its own: nothing on stderr at the interpreter's exit either
    result = (backbone_process if stack == "prod" else backbone_cli)("plan", stack)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing on stderr: no warnings, no noise at exit
    assert f"backbone stack {stack}" in result.stdout
    if stack != "local":
        assert "backbone:network:Network network" in result.stdout
        assert "aws:ec2/subnet:Subnet" in result.stdout
        assert "stack outputs" in result.stdout and "vpcId" in result.stdout


def test_plan_json_is_the_plan(backbone_cli):
    result = backbone_cli("plan", "dev", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["stack"] == "dev" and data["project"] == "backbone"
    subnet = next(
        r
        for r in data["resources"]
        if r["name"] == "network-public-a" and r["type"] == "aws:ec2/subnet:Subnet"
    )
    assert subnet["urn"] == (
        "urn:pulumi:dev::backbone::backbone:network:Network$aws:ec2/subnet:Subnet::network-public-a"
    )
    assert subnet["parent"] == "urn:pulumi:dev::backbone::backbone:network:Network::network"
    assert subnet["provider"] == "urn:pulumi:dev::backbone::pulumi:providers:aws::aws"
    assert subnet["inputs"]["availabilityZone"] == "us-east-1a"
    assert subnet["protect"] is False
    assert any(d.endswith("aws:ec2/vpc:Vpc::network-vpc") for d in subnet["dependencies"])
    assert data["outputs"]["natGatewayCount"] == 1


def test_plan_by_path_and_from_a_subfolder(backbone_cli, tmp_path):
    by_path = backbone_cli("plan", "stacks/Pulumi.free-tier.yaml", "-f", "json")
    assert by_path.returncode == 0, by_path.stderr
    assert json.loads(by_path.stdout)["stack"] == "free-tier"
    inside = backbone_cli("plan", "dev", "-f", "json", cwd=REPO / "infra" / "components")
    assert inside.returncode == 0, inside.stderr
    assert json.loads(inside.stdout)["stack"] == "dev"


def test_plan_is_deterministic(backbone_cli):
    first = backbone_cli("plan", "prod", "-f", "json").stdout
    assert first and first == backbone_cli("plan", "prod", "-f", "json").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "staging"], "no stack named 'staging'"),
        (["plan", "missing/Pulumi.x.yaml"], "missing/Pulumi.x.yaml: no such stack settings file"),
    ],
)
def test_unknown_stack(backbone_cli, args, message):
    # in-process (tests/cli_harness.py: an escaping exception is a traceback on stderr, status
    # 1); the entry point's own process is test_bad_stack_file_exit_2_no_traceback's
    result = backbone_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_stack_file_exit_2_no_traceback(backbone_process, tmp_path):
    bad = tmp_path / "Pulumi.broken.yaml"
    bad.write_text(
        "config:\n  aws:region: mars-1\n  backbone:network: {cidr: 1.2.3.0/24, nat: yes}\n"
    )
    result = backbone_process("plan", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert f"{bad}: 3 problems in the stack config:" in result.stderr
    assert "aws:region: 'mars-1' is not an AWS region" in result.stderr
    assert "backbone:network.cidr: '1.2.3.0/24' is not a private network" in result.stderr
    # YAML 1.1 reads `yes` as true: the message shows the value as the program received it.
    assert (
        "backbone:network.nat: true is not allowed: allowed: 'none', 'single' or 'per-az'"
        in result.stderr
    )


def test_outside_a_project_a_name_is_an_error(backbone_cli, tmp_path):
    result = backbone_cli("plan", "dev", cwd=tmp_path)
    assert result.returncode == 2
    assert "no Pulumi.yaml in" in result.stderr and "Traceback" not in result.stderr


def test_help_teaches(backbone_cli):
    top = backbone_cli("--help")
    assert (
        top.returncode == 0 and "plan" in top.stdout and "Example: backbone plan dev" in top.stdout
    )
    sub = backbone_cli("plan", "--help")
    assert sub.returncode == 0
    for text in ("--format", "backbone plan prod --format json", "stacks/ folder", "[secret]"):
        assert text in sub.stdout, text
