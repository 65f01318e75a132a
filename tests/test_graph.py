"""backbone plan --format mermaid|dot: components as boxes, key resources, dependencies."""

from __future__ import annotations

import re
from pathlib import Path

from backbone import graph

REPO = Path(__file__).resolve().parent.parent


def _nodes(text: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*(n\d+)\["([^"]*)"\]', text, re.M))


def _edges(text: str) -> set[tuple[str, str]]:
    return set(re.findall(r"^\s*(n\d+) --> (n\d+)$", text, re.M))


def _node(nodes: dict[str, str], label_start: str) -> str:
    found = [n for n, label in nodes.items() if label.startswith(label_start)]
    assert len(found) == 1, (label_start, found)
    return found[0]


def test_dev_picture_has_components_key_resources_and_dependencies(plan_of):
    dev = plan_of("dev")
    text = graph.mermaid(dev)
    assert text.startswith("flowchart LR\n")
    boxes = re.findall(r'subgraph c\d+\["([^"]+)"\]', text)
    components = sorted(r.name for r in dev.resources if not r.custom and r.parent)
    assert sorted(boxes) == components
    nodes, edges = _nodes(text), _edges(text)
    rds = _node(nodes, "database-postgres<br/>")
    subnets = _node(nodes, "database-subnets<br/>")
    eks = _node(nodes, "cluster-eks<br/>")
    vpc = _node(nodes, "network-vpc<br/>")
    assert (subnets, rds) in edges  # the instance depends on its subnet group
    assert (eks, _node(nodes, "cluster-nodes<br/>")) in edges
    assert any(a == vpc for a, _ in edges)
    # plumbing left out; many of one type folded into one node
    assert "RouteTableAssociation" not in text and "SecurityGroupIngressRule" not in text
    alarms = len(dev.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"))
    assert f"cloudwatch MetricAlarm x{alarms}" in nodes.values()


def test_all_shows_every_resource(plan_of):
    dev = plan_of("dev")
    text = graph.mermaid(dev, everything=True)
    nodes = _nodes(text)
    shown = [r for r in dev.resources if r.custom and not r.is_provider]
    assert len(nodes) == len(shown)
    assert any("RouteTableAssociation" in label for label in nodes.values())


def test_dot_is_the_same_graph(plan_of):
    dev = plan_of("dev")
    dot = graph.dot(dev)
    assert dot.startswith('digraph "backbone dev" {')
    mermaid_edges = _edges(graph.mermaid(dev))
    dot_edges = set(re.findall(r"^\s*(n\d+) -> (n\d+);$", dot, re.M))
    assert dot_edges == mermaid_edges
    assert dot.count("subgraph cluster_") == graph.mermaid(dev).count("subgraph c")


def test_readme_shows_the_dev_diagram_the_command_prints(backbone_cli):
    done = backbone_cli("plan", "dev", "--format", "mermaid")
    assert done.returncode == 0, done.stderr
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- graph:dev:begin -->\n```mermaid\n")[1].split(
        "```\n<!-- graph:dev:end -->"
    )[0]
    assert block == done.stdout, (
        "README's dev diagram is stale: replace the block between <!-- graph:dev:begin --> and "
        "<!-- graph:dev:end --> with the output of `backbone plan dev --format mermaid`"
    )
