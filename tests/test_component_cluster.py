"""The cluster component on its own (backbone.synth.synth_component), in a network of its own:
node counts against a live node group, the AMI release, the support policy, admin access and the
API's private networks, each from its config section alone."""

from __future__ import annotations

from typing import Any

from backbone import mocks
from backbone.plan import Plan
from backbone.synth import synth_component
from infra.components.cluster import DESIRED_TAG, Cluster
from infra.components.network import Network
from infra.config import ClusterConfig, NetworkConfig

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ADMIN = "arn:aws:iam::123456789012:role/platform-admin"


def cluster(**settings: Any) -> Plan:
    """The plan of one Cluster (in a Network) made from `settings` (ClusterConfig's field
    names); one admin role unless given."""
    cfg = ClusterConfig(enabled=True, **{"admin_role_arns": [ADMIN], **settings})

    def build() -> None:
        network = Network("network", NetworkConfig(), region="us-east-1")
        Cluster(
            "cluster",
            cfg,
            name_prefix="backbone-test",
            region="us-east-1",
            network=network,
            protect=False,
        )

    return synth_component(build)


def live_node_group(monkeypatch: Any, desired: int, recorded: str | None) -> None:
    """The engine answers as if the node group existed, at `desired` nodes, last given the
    desiredNodes setting `recorded` (its DESIRED_TAG)."""

    def node_groups(m: Any, a: dict[str, Any]) -> dict[str, Any]:
        return {"clusterName": a["clusterName"], "names": ["cluster-nodes-1a2b3c4"], "id": "x"}

    def node_group(m: Any, a: dict[str, Any]) -> dict[str, Any]:
        assert a["nodeGroupName"] == "cluster-nodes-1a2b3c4"
        return {
            "clusterName": a["clusterName"],
            "nodeGroupName": a["nodeGroupName"],
            "scalingConfigs": [{"desiredSize": desired, "minSize": 2, "maxSize": 3}],
            "tags": {DESIRED_TAG: recorded} if recorded is not None else {},
            "id": "x",
        }

    monkeypatch.setitem(mocks.CALLS, "aws:eks/getNodeGroups:getNodeGroups", node_groups)
    monkeypatch.setitem(mocks.CALLS, "aws:eks/getNodeGroup:getNodeGroup", node_group)


def scaling(**settings: Any) -> dict[str, Any]:
    return cluster(**settings).one(NODE_GROUP).inputs["scalingConfig"]


def test_a_first_deploy_sends_desirednodes_and_records_it():
    ng = cluster(min_nodes=2, desired_nodes=3, max_nodes=4).one(NODE_GROUP).inputs
    assert ng["scalingConfig"] == {"minSize": 2, "desiredSize": 3, "maxSize": 4}
    assert ng["tags"][DESIRED_TAG] == "3"


def test_a_pulumi_up_keeps_the_count_the_autoscaler_set(monkeypatch):
    live_node_group(monkeypatch, desired=3, recorded="2")  # 2..3, scaled out to 3
    assert scaling() == {"minSize": 2, "desiredSize": 3, "maxSize": 3}


def test_raising_minnodes_above_the_live_count_sends_a_count_eks_accepts(monkeypatch):
    live_node_group(monkeypatch, desired=2, recorded="2")
    assert scaling(min_nodes=4, desired_nodes=4, max_nodes=5) == {
        "minSize": 4,
        "desiredSize": 4,
        "maxSize": 5,
    }
    # a new maxNodes below the live count lowers it to the maximum
    live_node_group(monkeypatch, desired=6, recorded="2")
    assert scaling(max_nodes=4) == {"minSize": 2, "desiredSize": 4, "maxSize": 4}


def test_a_pinned_ami_release_is_one_setting():
    pinned = cluster(ami_release_version="1.35.3-20261015").one(NODE_GROUP)
    assert pinned.inputs["releaseVersion"] == "1.35.3-20261015"
    # otherwise the release AWS recommends for the version (its public SSM parameter)
    assert cluster().one(NODE_GROUP).inputs["releaseVersion"].startswith("1.35.")


def test_a_version_past_standard_support_runs_under_extended_support_only_when_allowed():
    plan = cluster(version="1.33", allow_extended_support=True)
    assert plan.one("aws:eks/cluster:Cluster").inputs["upgradePolicy"] == {
        "supportType": "EXTENDED"
    }
    assert cluster().one("aws:eks/cluster:Cluster").inputs["upgradePolicy"] == {
        "supportType": "STANDARD"
    }


def test_a_duplicated_admin_is_merged():
    plan = cluster(admin_role_arns=[ADMIN, ADMIN])
    (entry,) = plan.of_type("aws:eks/accessEntry:AccessEntry")
    assert entry.inputs["principalArn"] == ADMIN
    (grant,) = plan.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert grant.inputs["policyArn"].endswith("AmazonEKSClusterAdminPolicy")


def test_a_private_endpoint_admits_the_listed_private_networks_on_443():
    plan = cluster(public_endpoint=False, private_access_cidrs=["10.99.0.0/16"])
    eks = plan.one("aws:eks/cluster:Cluster")
    vpc = eks.inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is False and vpc["endpointPrivateAccess"] is True
    assert "publicAccessCidrs" not in vpc
    (rule,) = plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.name == "cluster-api-from-0"
    assert rule.inputs["securityGroupId"] == eks.outputs["vpcConfig"]["clusterSecurityGroupId"]
    assert (rule.inputs["cidrIpv4"], rule.inputs["fromPort"], rule.inputs["toPort"]) == (
        "10.99.0.0/16",
        443,
        443,
    )
    # a public endpoint admits only its listed public ranges, and no private rule by default
    public = cluster(public_access_cidrs=["203.0.113.0/24"])
    assert public.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]["publicAccessCidrs"] == [
        "203.0.113.0/24"
    ]
    assert not public.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
