"""What a real `pulumi up` would hit, each found by a pre-deployment review (issue 8, part 1).

Each test fails on the code as it was before the fix: values AWS refuses, files the Pulumi CLI
looks for where they were not, names that collide after a destroy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
AWS_STACKS = ["free-tier", "dev", "prod"]
EKS_STACKS = ["dev", "prod"]

# EC2 CreateSecurityGroup / AuthorizeSecurityGroupIngress: "Constraints: Up to 255 characters in
# length. Valid characters: a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*" (botocore ec2
# service-2.json, CreateSecurityGroupRequest.Description and IpRange.Description).
EC2_DESCRIPTION = re.compile(r"^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{0,255}$")
SG_TYPES = (
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:ec2/securityGroupRule:SecurityGroupRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
)


def test_the_ec2_description_rule_is_the_one_botocore_documents():
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    doc = model.operation_model("CreateSecurityGroup").input_shape.members["Description"]
    text = doc.documentation
    assert "a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&amp;;{}!$*" in text
    assert EC2_DESCRIPTION.match("PostgreSQL: 5432 from the app nodes only; no egress")
    assert not EC2_DESCRIPTION.match("from the app's nodes")


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_security_group_descriptions_use_only_what_ec2_accepts(plan_of, stack):
    plan = plan_of(stack)
    checked = 0
    for type_token in SG_TYPES:
        for r in plan.of_type(type_token):
            description = r.inputs.get("description")
            if description is None:
                continue
            checked += 1
            assert EC2_DESCRIPTION.match(description), (r.name, description)
    if stack in EKS_STACKS:  # the database's, the balancer's, the job's groups and their rules
        assert checked >= 8


def test_pulumi_up_from_a_fresh_clone_installs_from_the_program_folder():
    """Mirror the pip toolchain's lookup: `<root>/<main>/requirements.txt`, installed with pip
    from that folder into `<root>/<virtualenv>` (pulumi sdk/python/toolchain/pip.go
    InstallDependencies; toolchain.go resolves the virtualenv against the project root)."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    program_dir = REPO / project["main"]
    assert (program_dir / "requirements.txt").is_file()
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    # pip itself resolves the file from that folder (as the language host runs it): every
    # requirement of the root list is found, nothing is missing.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps"]
        + ["-r", "requirements.txt"],
        cwd=program_dir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, result.stderr
    wanted = [
        re.split(r"[<>=!~\[ ]", line.strip(), maxsplit=1)[0].lower()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    satisfied = {
        m.group(1).lower().replace("_", "-")
        for m in re.finditer(r"Requirement already satisfied: ([A-Za-z0-9_.\-]+)", result.stdout)
    }
    assert wanted and set(wanted) <= satisfied, result.stdout


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_cluster_name_is_new_for_each_cluster_so_its_log_group_never_collides(plan_of, stack):
    plan = plan_of(stack)
    suffix = plan.one("random:index/randomId:RandomId", "cluster-name-suffix")
    cluster = plan.one("aws:eks/cluster:Cluster")
    assert suffix.urn in cluster.dependencies
    assert cluster.inputs["name"] == f"backbone-{stack}-{suffix.outputs['hex']}"
    group = plan.one("aws:cloudwatch/logGroup:LogGroup", "cluster-logs")
    assert group.inputs["name"] == f"/aws/eks/{cluster.inputs['name']}/cluster"
    # made before the cluster (retention is ours), so deleted after it
    assert group.urn in cluster.dependencies
    assert plan.outputs["clusterName"] == cluster.outputs["name"]


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_kubernetes_objects_wait_for_coredns(plan_of, stack):
    plan = plan_of(stack)
    coredns = next(
        a for a in plan.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "coredns"
    )
    provider = plan.one("pulumi:providers:kubernetes")
    assert coredns.urn in provider.dependencies
    deployment = plan.one("kubernetes:apps/v1:Deployment")
    assert deployment.provider and deployment.provider.startswith(provider.urn)


def test_image_tag_names_the_platform(tmp_path, plan_of):
    from infra.components.registry import context_tag

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    amd, arm = context_tag(tmp_path, "linux/amd64"), context_tag(tmp_path, "linux/arm64")
    assert amd != arm and amd.endswith("-amd64") and arm.endswith("-arm64")
    assert amd[:16] != arm[:16]  # the digest itself differs, not only the suffix
    for stack, arch in (("dev", "amd64"), ("prod", "amd64")):
        image = plan_of(stack).one("docker:index/image:Image")
        assert image.inputs["imageName"].endswith(f"-{arch}")
        assert image.inputs["build"]["platform"] == f"linux/{arch}"
