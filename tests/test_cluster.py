"""The cluster as planned for dev and prod, its node autoscaler, its capacity rule, its node
counts, its upgrades and its access: what a user would see in the plan or in a refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from backbone import cache, mocks
from backbone.manifests import render
from backbone.plan import Plan
from backbone.synth import read_config, resolve, synth
from infra.components import autoscaler as ca
from infra.components.cluster import LiveScaling, kubeconfig, node_count
from infra.config import ConfigError, capacity, parse
from infra.config import catalogues as catalogue
from tests import checkov_cache, k8s_schemas
from tests.network_checks import subnets
from tests.realparts import REPO
from tests.stack_files import dev_settings_plan, stack_variant

k8s_schemas.install()  # its schema files parsed once per process (tests/k8s_schemas.py)

STACKS = ["dev", "prod"]
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ADDON = "aws:eks/addon:Addon"
ENTRY = "aws:eks/accessEntry:AccessEntry"


def cluster_addons(plan: Plan) -> dict[str, Any]:
    """The cluster component's own add-ons (other components may add theirs)."""
    return {a.inputs["addonName"]: a for a in plan.of_type(ADDON) if a.name.startswith("cluster-")}


def admin_entries(plan: Plan) -> list[Any]:
    return [e for e in plan.of_type(ENTRY) if e.name.startswith("cluster-admin-")]


@pytest.fixture(params=STACKS)
def plan(request, plan_of):
    return plan_of(request.param)


def variant(tmp_path: Path, base: str = "dev", name: str | None = None, **changes: Any) -> Path:
    """A stack file: `base`'s with settings changed ("cluster.maxNodes": 2; None deletes)."""
    return stack_variant(tmp_path, base, f"Pulumi.{name or base}.yaml", changes)


def planned(path: Path) -> Plan:
    """The Plan of a stack file, through the kit's Plan cache (backbone.cache): the program runs
    once per distinct file, and `backbone cost` of the same file reads that Plan."""
    return cache.plan(resolve(str(path), REPO))[0]


def problems(path: Path) -> list[str]:
    ref = resolve(str(path), REPO)
    raw, _ = read_config(ref)
    with pytest.raises(ConfigError) as info:
        parse(raw, source=str(path), stack=ref.stack)
    return [str(p) for p in info.value.problems]


def accepted(path: Path) -> None:
    ref = resolve(str(path), REPO)
    raw, _ = read_config(ref)
    parse(raw, source=str(path), stack=ref.stack)


# -- control plane, nodes, add-ons ----------------------------------------------------------------


def test_cluster_version_access_logging_upgrade_policy_and_encryption(plan):
    cluster = plan.one("aws:eks/cluster:Cluster")
    assert cluster.inputs["version"] == "1.35"
    suffix = plan.one("random:index/randomId:RandomId", "cluster-name-suffix").outputs["hex"]
    assert cluster.inputs["name"] == f"backbone-{plan.stack}-{suffix}"
    assert cluster.inputs["accessConfig"] == {
        "authenticationMode": "API",
        "bootstrapClusterCreatorAdminPermissions": False,
    }
    assert cluster.inputs["upgradePolicy"] == {"supportType": "STANDARD"}
    assert {"api", "audit", "authenticator"} <= set(cluster.inputs["enabledClusterLogTypes"])
    group = plan.one("aws:cloudwatch/logGroup:LogGroup", "cluster-logs")
    assert group.inputs["name"] == f"/aws/eks/backbone-{plan.stack}-{suffix}/cluster"
    assert group.urn in cluster.dependencies
    # the control plane's network interfaces: private subnets only
    private = {s.id for s in subnets(plan, "private")}
    assert set(cluster.inputs["vpcConfig"]["subnetIds"]) == private
    # Secrets envelope-encrypted with the cluster's own rotating key, protected with the stack
    key = plan.one("aws:kms/key:Key", "cluster-secrets")
    assert cluster.inputs["encryptionConfig"] == {
        "provider": {"keyArn": key.outputs["arn"]},
        "resources": ["secrets"],
    }
    assert key.inputs["enableKeyRotation"] is True
    assert key.protect is (plan.stack == "prod")


def test_nodes_run_al2023_in_private_subnets_with_only_needed_policies_and_no_ssh(plan):
    ng = plan.one(NODE_GROUP)
    # dev's nodes are Graviton (t4g.medium), prod's x86_64
    arm = plan.stack == "dev"
    assert ng.inputs["amiType"] == ("AL2023_ARM_64_STANDARD" if arm else "AL2023_x86_64_STANDARD")
    assert set(ng.inputs["subnetIds"]) == {s.id for s in subnets(plan, "private")}
    sc = ng.inputs["scalingConfig"]
    assert sc["minSize"] <= sc["desiredSize"] <= sc["maxSize"]
    # the count comes from the live node group (node_count), so nothing is ignored on update
    assert ng.ignore_changes == []
    assert "remoteAccess" not in ng.inputs
    attached = {
        a.inputs["policyArn"].rsplit("/", 1)[1]: a.inputs["role"]
        for a in plan.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    node_role = plan.one("aws:iam/role:Role", "cluster-node-role").id
    assert sorted(p for p, role in attached.items() if role == node_role) == [
        "AmazonEC2ContainerRegistryPullOnly",
        "AmazonEKSWorkerNodePolicy",
        # Session Manager: a shell on a node with no SSH key and no open port
        "AmazonSSMManagedInstanceCore",
    ]
    # the CNI policy goes to the vpc-cni add-on's own role, trusted through the OIDC provider
    cni_role = plan.one("aws:iam/role:Role", "cluster-vpc-cni")
    assert attached["AmazonEKS_CNI_Policy"] == cni_role.id
    trust = json.loads(cni_role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert list(trust["Condition"]["StringEquals"].values()) == [
        "sts.amazonaws.com",
        "system:serviceaccount:kube-system:aws-node",
    ]
    # no SSH anywhere: no key pair, no security group rule on port 22
    assert not plan.of_type("aws:ec2/keyPair:KeyPair")
    rules = plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert all(r.inputs.get("fromPort") != 22 for r in rules)


def test_oidc_addons_and_access_entries(plan):
    oidc = plan.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    assert oidc.inputs["url"].startswith("https://oidc.eks.us-east-1.amazonaws.com/id/")
    addons = cluster_addons(plan)
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "metrics-server"}
    assert json.loads(addons["vpc-cni"].inputs["configurationValues"]) == {
        "enableNetworkPolicy": "true"
    }
    (entry,) = admin_entries(plan)
    assert entry.inputs["principalArn"] == (
        f"arn:aws:iam::123456789012:role/backbone-{plan.stack}-admin"
    )
    grant = plan.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "cluster-admin-1")
    assert grant.inputs["policyArn"].endswith("AmazonEKSClusterAdminPolicy")
    assert grant.inputs["accessScope"] == {"type": "cluster"}


def test_kubeconfig_is_secret_and_the_kubernetes_provider_uses_it(plan):
    assert plan.outputs["kubeconfig"] == "[secret]"
    provider = plan.one("pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == "[secret]"
    assert plan.one(NODE_GROUP).urn in provider.dependencies


def test_kubeconfig_authenticates_as_the_admin_role_with_aws_eks_get_token():
    role = "arn:aws:iam::123456789012:role/admin"
    cfg = json.loads(kubeconfig("backbone-dev", "https://x.eks", "Q0E=", "eu-west-1", role))
    exec_ = cfg["users"][0]["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["args"][:4] == ["eks", "get-token", "--cluster-name", "backbone-dev"]
    assert exec_["args"][exec_["args"].index("--region") + 1] == "eu-west-1"
    # the program talks to Kubernetes as the first admin role, whoever runs it
    assert exec_["args"][exec_["args"].index("--role-arn") + 1] == role


def test_ecr_lifecycle_keeps_every_image_a_rollout_undo_can_need(plan):
    deployment = next(
        r.inputs
        for r in plan.of_type("kubernetes:apps/v1:Deployment")
        if r.inputs["metadata"]["name"] == "shortener"
    )
    history = deployment["spec"]["revisionHistoryLimit"]
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    # the figures the config's rules use are the Deployment's own
    assert (history, surge) == (capacity.APP_REVISION_HISTORY_LIMIT, capacity.APP_MAX_SURGE)
    policy = json.loads(plan.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    (rule,) = policy["rules"]
    assert rule["selection"]["countType"] == "imageCountMoreThan"
    assert rule["selection"]["countNumber"] >= history + 1


def test_keeping_fewer_images_than_the_revision_history_is_refused(tmp_path):
    got = problems(variant(tmp_path, **{"registry.keepImages": 3}))
    assert got == [
        "backbone:registry.keepImages: 3 would expire images the Deployment can still roll back "
        "to (the running one plus a revision history of 5); allowed: 6 to 1000"
    ]


# -- network hygiene --------------------------------------------------------------------------------


def test_interface_endpoints_are_optional_private_and_priced(tmp_path, backbone_cli):
    path = variant(
        tmp_path, "prod", name="endpoints", **{"network.interfaceEndpoints": ["ecr.api", "sts"]}
    )
    plan = planned(path)
    endpoints = {
        e.inputs["serviceName"]: e
        for e in plan.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
        if e.inputs["vpcEndpointType"] == "Interface"
    }
    assert sorted(endpoints) == ["com.amazonaws.us-east-1.ecr.api", "com.amazonaws.us-east-1.sts"]
    private = {s.id for s in subnets(plan, "private")}
    group = plan.one("aws:ec2/securityGroup:SecurityGroup", "network-endpoints")
    for e in endpoints.values():
        assert set(e.inputs["subnetIds"]) == private and e.inputs["privateDnsEnabled"] is True
        assert e.inputs["securityGroupIds"] == [group.id]
    (https,) = [
        r
        for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == group.id
    ]
    assert (https.inputs["fromPort"], https.inputs["cidrIpv4"]) == (443, "10.30.0.0/16")
    # backbone cost: 2 endpoints x 3 zones x 730 h at $0.01, plus 5 GB each at $0.01
    done = backbone_cli("cost", str(path), "--format", "json")
    report = json.loads(done.stdout)
    lines = [line for line in report["lines"] if line["type"] == "aws:ec2/vpcEndpoint:VpcEndpoint"]
    assert round(sum(line["usd"] for line in lines), 2) == round(
        2 * 3 * 730 * 0.01 + 2 * 5 * 0.01, 2
    )
    assert not [u for u in report["unpriced"] if u["type"] == "aws:ec2/vpcEndpoint:VpcEndpoint"]
    # the S3 gateway endpoint has no charge: neither a cost line nor unpriced
    assert sorted(line["resource"] for line in lines) == sorted(
        ["network-ecr-api", "network-sts"] * 2
    )


# -- the node autoscaler -----------------------------------------------------------------------


def _autoscaler_objects(plan: Plan) -> list[dict[str, Any]]:
    return [m.obj for m in render(plan) if m.obj["metadata"].get("name") == ca.NAME]


def test_autoscaler_objects_are_rendered_and_strict_valid_at_the_clusters_version(plan):
    objects = _autoscaler_objects(plan)
    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    for obj in objects:
        for version in catalogue.EKS_RELEASES:
            if version in ("1.34", "1.35", "1.36"):
                kubernetes_validate.validate(obj, version, strict=True)


def test_autoscaler_runs_the_image_of_the_clusters_minor_and_discovers_the_node_group(plan):
    (deployment,) = [o for o in _autoscaler_objects(plan) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.k8s.io/autoscaling/cluster-autoscaler:v1.35.1"
    name = plan.one("aws:eks/cluster:Cluster").inputs["name"]
    assert (
        "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,"
        f"k8s.io/cluster-autoscaler/{name}"
    ) in container["args"]
    assert "--cloud-provider=aws" in container["args"]
    # its own requests are the ones the capacity rule counts
    assert container["resources"]["requests"] == {
        "cpu": f"{catalogue.AUTOSCALER_CPU_M}m",
        "memory": f"{catalogue.AUTOSCALER_MEMORY_MIB}Mi",
    }
    assert pod["serviceAccountName"] == ca.NAME and pod["automountServiceAccountToken"] is False
    assert pod["priorityClassName"] == "system-cluster-critical"


def test_autoscaler_iam_grants_only_what_its_documentation_lists_on_this_clusters_groups(plan):
    role = plan.one("aws:iam/role:Role", "autoscaler-role")
    policy = json.loads(
        plan.one("aws:iam/rolePolicy:RolePolicy", "autoscaler-policy").inputs["policy"]
    )
    name = plan.one("aws:eks/cluster:Cluster").inputs["name"]
    assert policy == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{name}": "owned"}
                },
            },
            {
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",
                ],
                "Resource": "*",
            },
        ],
    }
    # no write action outside the tag condition, no wildcard action
    unconditioned = [s for s in policy["Statement"] if "Condition" not in s]
    assert all(
        a.split(":")[1].startswith(("Describe", "Get")) for s in unconditioned for a in s["Action"]
    )
    assert not any("*" in a for s in policy["Statement"] for a in s["Action"])
    # assumed only by kube-system/cluster-autoscaler through the cluster's OIDC provider
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    oidc = plan.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert trust["Principal"] == {"Federated": oidc.outputs["arn"]}
    assert sorted(trust["Condition"]["StringEquals"].values()) == [
        "sts.amazonaws.com",
        "system:serviceaccount:kube-system:cluster-autoscaler",
    ]
    (account,) = [o for o in _autoscaler_objects(plan) if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role.outputs["arn"]}


@pytest.mark.realpart
def test_autoscaler_objects_pass_checkov(plan, tmp_path, checkov):
    # checkov itself, started once per test run (tests/checkov_cache.py)
    for i, obj in enumerate(_autoscaler_objects(plan)):
        (tmp_path / f"{i:02d}-{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump(obj))
    done = subprocess.run(
        [
            checkov,
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--compact",
            "-o",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **checkov_cache.ENV},
    )
    results = json.loads(done.stdout)["results"]
    assert not results["failed_checks"], [c["check_id"] for c in results["failed_checks"]]
    skipped = {c["check_id"] for c in results["skipped_checks"]}
    assert skipped == {"CKV_K8S_43"}  # the image by release tag (reason on the object)


def test_every_supported_version_has_an_autoscaler_of_its_own_minor():
    assert set(catalogue.AUTOSCALER_VERSIONS) == set(catalogue.EKS_RELEASES)
    for k8s, image in catalogue.AUTOSCALER_VERSIONS.items():
        assert image.startswith(f"v{k8s}."), (k8s, image)


# -- capacity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_the_shipped_stacks_fit_maxreplicas_and_a_surge_in_maxnodes(stack):
    cfg = parse(read_config(resolve(stack, REPO))[0], source=stack, stack=stack)
    instance = catalogue.INSTANCE_TYPES[cfg.cluster.instance_types[0]]
    held = capacity.fit(instance, cfg.cluster.max_nodes, cfg.app.cpu, cfg.app.memory)
    assert held.app_pods >= cfg.app.max_replicas + capacity.APP_MAX_SURGE


def test_forty_replicas_on_two_small_nodes_are_refused_with_the_numbers(tmp_path):
    path = variant(
        tmp_path,
        **{
            "app.maxReplicas": 40,
            "cluster.minNodes": 2,
            "cluster.desiredNodes": 2,
            "cluster.maxNodes": 2,
        },
    )
    # t4g.medium (dev's; t3.medium's figures): 1930m allocatable CPU (2000m less 70m kube-reserved), 125m of DaemonSets, so 7
    # pods of 250m a node; the first node also runs CoreDNS x2, metrics-server x2 and the
    # autoscaler (500m), so 5 there: 12 on two nodes; 40 need 6 nodes, 41 (the surge) 7.
    got = [p for p in problems(path) if p.startswith("backbone:cluster.maxNodes")]
    assert got == [
        "backbone:cluster.maxNodes: 40 app pods (app.maxReplicas) of 250m CPU and 256Mi do not "
        "fit in maxNodes 2 x t4g.medium: they hold 12 beside the system pods (7 a node; cpu runs "
        "out first); change cluster.maxNodes to 6 or more, or app.maxReplicas to 12 or fewer (or "
        "app.cpu/app.memory, or a larger cluster.instanceTypes)",
        "backbone:cluster.maxNodes: a rolling update at maxReplicas runs 41 app pods (maxReplicas "
        "40 + maxSurge 1), which of 250m CPU and 256Mi do not fit in maxNodes 2 x t4g.medium: they "
        "hold 12 beside the system pods (7 a node; cpu runs out first); change cluster.maxNodes "
        "to 7 or more, or app.maxReplicas to 11 or fewer (or app.cpu/app.memory, or a larger "
        "cluster.instanceTypes)",
    ]


def test_a_surge_that_cannot_fit_is_refused_though_maxreplicas_fits(tmp_path):
    path = variant(
        tmp_path,
        **{
            "app.maxReplicas": 12,
            "cluster.minNodes": 2,
            "cluster.desiredNodes": 2,
            "cluster.maxNodes": 2,
        },
    )
    got = [p for p in problems(path) if p.startswith("backbone:cluster.maxNodes")]
    assert len(got) == 1
    assert (
        "a rolling update at maxReplicas runs 13 app pods (maxReplicas 12 + maxSurge 1)" in got[0]
    )
    assert "change cluster.maxNodes to 3 or more, or app.maxReplicas to 11 or fewer" in got[0]
    accepted(
        variant(
            tmp_path,
            name="ok",
            **{
                "app.maxReplicas": 11,
                "cluster.maxNodes": 2,
                "cluster.minNodes": 2,
                "cluster.desiredNodes": 2,
            },
        )
    )


def test_memory_can_be_what_runs_out(tmp_path):
    path = variant(tmp_path, **{"app.memory": "2Gi", "app.maxReplicas": 4})
    got, _surge = [p for p in problems(path) if p.startswith("backbone:cluster.maxNodes")]
    # 3328Mi allocatable on a t3.medium: one 2Gi pod a node (also beside the system pods' 1140Mi)
    assert "they hold 3 beside the system pods (1 a node; memory runs out first)" in got


def test_an_instance_type_without_allocatable_figures_is_refused(tmp_path):
    changes = {"cluster.instanceTypes": ["t3.nano"], "cluster.architecture": "x86_64"}
    got = problems(variant(tmp_path, **changes))
    assert any(
        p.startswith("backbone:cluster.instanceTypes: 't3.nano' has no allocatable figures")
        for p in got
    ), got


# -- node counts -------------------------------------------------------------------------------


def test_node_count_always_satisfies_the_rule_eks_enforces_and_keeps_the_autoscalers_count():
    """EKS refuses min <= desired <= max broken ("Minimum capacity N can't be greater than
    desired size M"): every setting change against every live state must send a valid count."""
    for lo in range(1, 6):
        for want in range(lo, 7):
            for hi in range(want, 8):
                assert lo <= node_count(lo, want, hi, None) == want <= hi
                for live in range(0, 9):
                    for recorded in (str(want), str(want + 1), None):
                        got = node_count(lo, want, hi, LiveScaling(live, recorded))
                        assert lo <= got <= hi, (lo, want, hi, live, recorded)
                        if recorded == str(want) and lo <= live <= hi:
                            assert got == live  # the autoscaler's count is never undone
                        if recorded != str(want):
                            assert got == want  # a changed desiredNodes applies


# -- upgrades ------------------------------------------------------------------------------------


def test_a_version_bump_moves_the_node_group_the_ami_and_the_addons_in_that_order(plan_of):
    before = plan_of("dev")
    after = dev_settings_plan()  # cluster.version: "1.36", cluster.upgradeFrom: "1.35"
    for plan, version in ((before, "1.35"), (after, "1.36")):
        cluster = plan.one("aws:eks/cluster:Cluster")
        nodes = plan.one(NODE_GROUP)
        assert cluster.inputs["version"] == version
        # the node group follows the control plane (its version is the cluster's output)
        assert nodes.inputs["version"] == version and cluster.urn in nodes.dependencies
        # the AMI release AWS recommends for that version (its public SSM parameter)
        assert nodes.inputs["releaseVersion"].startswith(f"{version}.")
        addons = cluster_addons(plan)
        for name, addon in addons.items():
            # each add-on at the version EKS gives it for that Kubernetes version
            assert addon.inputs["addonVersion"] == f"v{version}.0-offline-eksbuild.1", name
            if name != "vpc-cni":  # the CNI comes before the nodes (they need their network)
                assert nodes.urn in addon.dependencies, name
        assert addons["vpc-cni"].urn in nodes.dependencies
        (deployment,) = [o for o in _autoscaler_objects(plan) if o["kind"] == "Deployment"]
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == catalogue.autoscaler_image(version)


def test_an_ami_release_of_another_version_is_refused(tmp_path):
    # a pinned release in the plan: tests/test_component_cluster.py
    got = problems(
        variant(tmp_path, name="bad", **{"cluster.amiReleaseVersion": "1.34.0-20261015"})
    )
    assert any(
        p.startswith(
            "backbone:cluster.amiReleaseVersion: '1.34.0-20261015' is not an AL2023 EKS AMI "
            "release of Kubernetes 1.35"
        )
        for p in got
    ), got


def test_a_skipped_or_reversed_minor_is_refused(tmp_path):
    skipped = problems(
        variant(tmp_path, **{"cluster.version": "1.36", "cluster.upgradeFrom": "1.34"})
    )
    assert (
        "backbone:cluster.version: '1.36' from 1.34 skips or reverses a minor version (EKS "
        "upgrades one minor at a time and never downgrades); allowed: 1.34 or 1.35, then the next "
        "minor in a later change"
    ) in skipped
    back = problems(variant(tmp_path, name="back", **{"cluster.upgradeFrom": "1.36"}))
    assert any("'1.35' from 1.36 skips or reverses a minor" in p for p in back), back


def test_a_version_past_standard_support_needs_an_explicit_setting(tmp_path):
    old = problems(variant(tmp_path, **{"cluster.version": "1.33"}))
    assert any(
        p.startswith(
            "backbone:cluster.version: '1.33' is not under EKS standard support (it ended on "
            "2026-07-29; extended support bills six times the rate); allowed: 1.34, 1.35, 1.36, "
            "or allowExtendedSupport: true"
        )
        for p in old
    ), old
    # allowed, it runs under extended support: tests/test_component_cluster.py
    accepted(
        variant(
            tmp_path,
            name="extended",
            **{"cluster.version": "1.33", "cluster.allowExtendedSupport": True},
        )
    )


# -- access --------------------------------------------------------------------------------------


def test_the_plan_is_the_same_whoever_runs_it(plan_of, monkeypatch):
    # dev's Plan as the suite made it (tests/conftest.py), then the program run again as another
    first = plan_of("dev").dumps()
    monkeypatch.setitem(
        mocks.CALLS,
        "aws:index/getCallerIdentity:getCallerIdentity",
        lambda m, a: {
            "accountId": mocks.ACCOUNT,
            "arn": f"arn:aws:sts::{mocks.ACCOUNT}:assumed-role/ci-deployer/github-actions-42",
            "userId": "AROACIDEPLOYER:github-actions-42",
            "id": mocks.ACCOUNT,
        },
    )
    second = synth("dev", cwd=REPO).dumps()
    assert second == first


def test_an_admin_that_is_not_a_role_is_refused(tmp_path):
    # a duplicated role is merged: tests/test_component_cluster.py
    got = problems(
        variant(
            tmp_path,
            name="user",
            **{
                "cluster.adminRoleArns": [
                    "arn:aws:iam::123456789012:user/alice",
                    "arn:aws:sts::123456789012:assumed-role/admin/alice",
                ]
            },
        )
    )
    assert (
        "backbone:cluster.adminRoleArns: 'arn:aws:iam::123456789012:user/alice' is an IAM user; "
        "a user's access would follow one person; allowed: a role ARN such as "
        "arn:aws:iam::123456789012:role/platform-admin (people and CI assume it)"
    ) in got
    assert any("is a role session (sts assumed-role), not the role" in p for p in got), got
    empty = problems(variant(tmp_path, name="empty", **{"cluster.adminRoleArns": []}))
    assert any(p.startswith("backbone:cluster.adminRoleArns: empty: nobody could") for p in empty)
