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

from tests.stack_files import prod_settings_plan, stack_variant

REPO = Path(__file__).resolve().parent.parent
AWS_STACKS = ["free-tier", "dev", "prod"]
EKS_STACKS = ["dev", "prod"]
REQ = ["-r", "requirements.txt"]

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
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps", *REQ],
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
    deployment = plan.one("kubernetes:apps/v1:Deployment", "app-deployment")
    assert deployment.provider and deployment.provider.startswith(provider.urn)


def test_image_tag_names_the_platform(tmp_path, plan_of):
    from infra.components.registry import context_tag

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    amd, arm = context_tag(tmp_path, "linux/amd64"), context_tag(tmp_path, "linux/arm64")
    assert amd != arm and amd.endswith("-amd64") and arm.endswith("-arm64")
    assert amd[:16] != arm[:16]  # the digest itself differs, not only the suffix
    for stack, arch in (("dev", "arm64"), ("prod", "amd64")):
        image = plan_of(stack).one("docker:index/image:Image")
        assert image.inputs["imageName"].endswith(f"-{arch}")
        assert image.inputs["build"]["platform"] == f"linux/{arch}"


# -- prod: TLS, the API endpoint, reserved concurrency -------------------------------------------


def _prod_variant(tmp_path, name="Pulumi.copy.yaml", **changes):
    """prod's stack file under another name with some settings changed (None deletes a key)."""
    return stack_variant(tmp_path, "prod", name, changes)


def _refusal(backbone_cli, path):
    result = backbone_cli("plan", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_production_stack_without_tls_is_refused_with_what_to_set(tmp_path, backbone_cli):
    path = _prod_variant(tmp_path, **{"loadbalancer.domainName": None})
    text = _refusal(backbone_cli, path)
    assert "backbone:loadbalancer.certificateArn: missing: a production stack" in text
    assert "domainName" in text and "allowPlainHttp: true" in text
    assert str(path) in text


def test_plain_http_in_production_needs_the_explicit_opt_out():
    # prod with loadbalancer.domainName removed and loadbalancer.allowPlainHttp: true
    plan = prod_settings_plan()
    assert [r.inputs["port"] for r in plan.of_type("aws:lb/listener:Listener")] == [80]
    assert plan.outputs["url"].startswith("http://")


def test_prod_serves_https_with_the_certificate_looked_up_by_domain(plan_of):
    plan = plan_of("prod")
    listeners = {r.inputs["port"]: r.inputs for r in plan.of_type("aws:lb/listener:Listener")}
    assert listeners[80]["defaultActions"][0]["type"] == "redirect"
    assert listeners[443]["protocol"] == "HTTPS"
    assert re.fullmatch(
        r"arn:aws:acm:us-east-1:\d{12}:certificate/[0-9a-f-]{36}", listeners[443]["certificateArn"]
    )
    domain = yaml.safe_load((REPO / "stacks" / "Pulumi.prod.yaml").read_text())["config"][
        "backbone:loadbalancer"
    ]["domainName"]
    assert plan.outputs["url"] == f"https://{domain}"


def test_a_certificate_from_another_region_is_refused(tmp_path, backbone_cli):
    cert = "arn:aws:acm:eu-west-1:123456789012:certificate/0f0e0d0c-0b0a-0908-0706-050403020100"
    path = _prod_variant(
        tmp_path, **{"loadbalancer.domainName": None, "loadbalancer.certificateArn": cert}
    )
    text = _refusal(backbone_cli, path)
    assert "the certificate is in eu-west-1, the load balancer in us-east-1" in text


def test_a_production_api_endpoint_open_to_the_internet_is_refused(tmp_path, backbone_cli):
    path = _prod_variant(
        tmp_path, **{"cluster.publicEndpoint": True, "cluster.publicAccessCidrs": ["0.0.0.0/0"]}
    )
    text = _refusal(backbone_cli, path)
    assert "backbone:cluster.publicAccessCidrs: 0.0.0.0/0 opens the Kubernetes API" in text
    assert "publicEndpoint: false" in text


def test_prod_api_endpoint_is_private(plan_of):
    # the listed private networks it admits: tests/test_component_cluster.py
    vpc = plan_of("prod").one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is False and vpc["endpointPrivateAccess"] is True
    assert "publicAccessCidrs" not in vpc


def test_a_public_network_is_not_a_private_access_cidr(tmp_path, backbone_cli):
    path = _prod_variant(tmp_path, **{"cluster.privateAccessCidrs": ["8.8.8.0/24"]})
    assert "'8.8.8.0/24' is not a private network" in _refusal(backbone_cli, path)


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_no_function_reserves_concurrency_a_new_account_does_not_have(plan_of, stack):
    for fn in plan_of(stack).of_type("aws:lambda/function:Function"):
        assert fn.inputs.get("reservedConcurrentExecutions", -1) == -1, fn.name


# -- destroy: a function in the VPC --------------------------------------------------------------


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_destroy_parks_the_jobs_interfaces_and_waits_for_lambda_to_release_them(plan_of, stack):
    plan = plan_of(stack)
    job = plan.one("aws:lambda/function:Function", "functions-housekeeping")
    vpc = plan.one("aws:ec2/vpc:Vpc")
    assert job.inputs["vpcConfig"]["subnetIds"]
    assert job.inputs["replaceSecurityGroupsOnDestroy"] is True
    assert job.inputs["replacementSecurityGroupIds"] == [vpc.outputs["defaultSecurityGroupId"]]
    canary = plan.one("aws:lambda/function:Function", "functions-canary")
    assert "replaceSecurityGroupsOnDestroy" not in canary.inputs  # not in the VPC
    private = [s for s in plan.of_type("aws:ec2/subnet:Subnet") if "-private-" in s.name]
    assert private and all(s.custom_timeouts == {"delete": "60m"} for s in private)


# -- the database: least-privilege roles, verified TLS, its logs ---------------------------------


def _deps_names(plan, resource):
    by_urn = {r.urn: r.name for r in plan.resources}
    return {by_urn.get(u) for u in resource.dependencies}


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_the_app_and_the_job_log_in_as_their_own_roles_never_the_master(plan_of, stack):
    plan = plan_of(stack)
    # the app's credentials: its own role's, in the secret the pods read (not in their URL)
    app_secret = plan.one(
        "aws:secretsmanager/secretVersion:SecretVersion", "database-app-credentials"
    )
    assert "database-app-password" in _deps_names(plan, app_secret)
    assert "database-password" not in _deps_names(plan, app_secret)
    pods = plan.one("kubernetes:core/v1:Secret", "app-secret")
    assert not {"database-password", "database-app-password"} & _deps_names(plan, pods)
    # only the migration's Secret (read by its Job alone) holds the master password; the roles'
    # passwords the migration reads from their secrets (they rotate)
    migration = plan.one("kubernetes:core/v1:Secret", "app-migration-secret")
    assert "database-password" in _deps_names(plan, migration)
    assert not {"database-app-password", "database-job-password"} & _deps_names(plan, migration)
    job_secret = plan.one(
        "aws:secretsmanager/secretVersion:SecretVersion", "functions-db-credentials"
    )
    assert "database-job-password" in _deps_names(plan, job_secret)
    assert "database-password" not in _deps_names(plan, job_secret)
    for part in ("app", "job"):
        pw = plan.one("random:index/randomPassword:RandomPassword", f"database-{part}-password")
        assert pw.inputs["length"] >= 32 and pw.inputs["special"] is False


def test_connection_strings_verify_the_server_with_the_bundle_in_the_image():
    from infra.components.database import CA_BUNDLE, connection_url

    url = connection_url(
        "shortener_app", "pw", "db.example.us-east-1.rds.amazonaws.com", 5432, "app"
    )
    assert url.endswith(f"?sslmode=verify-full&sslrootcert={CA_BUNDLE}")
    assert "sslmode=require" not in url
    # the image puts the bundle at that path (app/Dockerfile copies app/certs to /opt/app/certs)
    dockerfile = (REPO / "app" / "Dockerfile").read_text()
    assert CA_BUNDLE.startswith("/opt/app/certs/")
    assert (REPO / "app" / "certs" / CA_BUNDLE.rsplit("/", 1)[1]).is_file()
    assert "certs" in dockerfile


def test_a_master_user_named_like_an_app_role_is_refused(tmp_path, backbone_cli):
    path = _prod_variant(tmp_path, **{"database.username": "shortener_app"})
    assert "'shortener_app' is the name of a role the migration creates" in _refusal(
        backbone_cli, path
    )


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_rds_log_groups_are_ours_with_retention_and_made_first(plan_of, stack):
    plan = plan_of(stack)
    db = plan.one("aws:rds/instance:Instance")
    ident = db.inputs["identifier"]
    # RDS: 1-63 letters, digits, hyphens; a letter first; no "--"; no hyphen at the end
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,62}", ident) and "--" not in ident
    assert not ident.endswith("-")
    suffix = plan.one("random:index/randomId:RandomId", "database-snapshot-suffix")
    assert ident == f"backbone-{stack}-database-{suffix.outputs['hex']}"
    groups = {
        g.name: g
        for g in plan.of_type("aws:cloudwatch/logGroup:LogGroup")
        if g.name.startswith("database-logs-")
    }
    assert sorted(groups) == ["database-logs-postgresql", "database-logs-upgrade"]
    assert sorted(db.inputs["enabledCloudwatchLogsExports"]) == ["postgresql", "upgrade"]
    days = 30
    for log, group in groups.items():
        assert group.inputs["name"] == f"/aws/rds/instance/{ident}/{log.rsplit('-', 1)[1]}"
        assert group.inputs["retentionInDays"] == days
        assert group.urn in db.dependencies
    # automated backups outlive the instance only where data is protected (prod)
    assert db.inputs["deleteAutomatedBackups"] is (stack != "prod")


# -- names and regions AWS would refuse ------------------------------------------------------------


def test_the_regions_the_rds_ca_bundle_lacks_are_the_ones_config_refuses():
    from cryptography import x509

    from infra.config import AWS_REGIONS, RDS_CA_MISSING_REGIONS

    pem = (REPO / "app" / "certs" / "rds-global-bundle.pem").read_bytes()
    names = [
        c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        for c in x509.load_pem_x509_certificates(pem)
    ]
    covered = {
        m["region"]
        for n in names
        if (m := re.match(r"^Amazon RDS (?P<region>[a-z]+-[a-z]+-\d) Root CA ", str(n)))
    }
    assert set(AWS_REGIONS) - covered == set(RDS_CA_MISSING_REGIONS)


def test_a_database_where_the_bundle_has_no_ca_is_refused(tmp_path, backbone_cli):
    data = yaml.safe_load((REPO / "stacks" / "Pulumi.dev.yaml").read_text())
    data["config"]["aws:region"] = "ap-east-2"
    path = tmp_path / "Pulumi.taipei.yaml"
    path.write_text(yaml.safe_dump(data))
    text = _refusal(backbone_cli, path)
    assert "aws:region: 'ap-east-2': the kit's RDS CA bundle" in text


def test_a_stack_name_too_long_for_lambda_is_refused(tmp_path, backbone_cli):
    name = "a-copy-of-dev-for-the-quarterly-load-test-x"  # 43 characters
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text((REPO / "stacks" / "Pulumi.dev.yaml").read_text())
    text = _refusal(backbone_cli, path)
    assert f"'backbone-{name}-housekeeping' (65 characters)" in text
    assert "a stack name of at most 42 characters" in text
    ok = tmp_path / f"Pulumi.{name[:-2]}.yaml"
    ok.write_text((REPO / "stacks" / "Pulumi.dev.yaml").read_text())
    done = backbone_cli("plan", str(ok))
    assert done.returncode == 0, done.stderr  # 42 characters: every name fits, 0 violations
    assert "0 violations" in done.stdout
