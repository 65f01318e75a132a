"""A picture of a stack: its components and key resources, with the dependencies between them.

`backbone plan STACK --format mermaid` (or `dot`). Each component is a box (nested components are
nested boxes); inside it, its key resources. Plumbing (route table associations, security group
rules, policy attachments, permissions, ...) is left out unless `--all`, and several resources of
one type in one component are one node ("MetricAlarm x15"), so the picture reads at a glance.
An edge A --> B says B depends on A (A is made first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from backbone.plan import STACK_TYPE, Plan, Resource

# Types that only connect other resources: left out of the picture unless --all.
PLUMBING = frozenset(
    {
        "aws:ec2/routeTableAssociation:RouteTableAssociation",
        "aws:ec2/route:Route",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        "aws:ec2/securityGroupRule:SecurityGroupRule",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:eks/accessPolicyAssociation:AccessPolicyAssociation",
        "aws:eks/accessEntry:AccessEntry",
        "aws:lambda/permission:Permission",
        "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig",
        "aws:cloudwatch/eventTarget:EventTarget",
        "aws:ecr/lifecyclePolicy:LifecyclePolicy",
        "aws:kms/alias:Alias",
        "aws:secretsmanager/secretVersion:SecretVersion",
        "aws:autoscaling/attachment:Attachment",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:sns/topicPolicy:TopicPolicy",
        "aws:sqs/queuePolicy:QueuePolicy",
        "random:index/randomPassword:RandomPassword",
        "random:index/randomId:RandomId",
        "random:index/randomString:RandomString",
    }
)
GROUP_AT = 3  # this many resources of one type in one component become one node


@dataclass
class Node:
    id: str
    label: str
    urns: list[str]


@dataclass
class Box:
    urn: str | None
    label: str
    nodes: list[Node] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)


def _short_type(type_token: str) -> str:
    """`aws:rds/instance:Instance` -> `rds Instance`; `kubernetes:apps/v1:Deployment` -> `Deployment`."""
    package, _, rest = type_token.partition(":")
    module, _, kind = rest.partition(":")
    if package == "kubernetes":
        return kind
    service = module.split("/")[0]
    return f"{service} {kind}" if service and service != "index" else kind


@dataclass
class Graph:
    root: Box
    edges: list[tuple[str, str]]


def build(plan: Plan, *, everything: bool = False) -> Graph:
    shown = [
        r
        for r in plan.resources
        if not r.is_provider and r.type != STACK_TYPE and (everything or r.type not in PLUMBING)
    ]
    box_of = _boxes(plan, {r.urn: r for r in shown if not r.custom})
    owner = _place(shown, box_of, everything)
    return Graph(box_of(None), _edges(shown, owner))


def _boxes(plan: Plan, components: dict[str, Resource]) -> Callable[[str | None], Box]:
    """A box per shown component, nested as the components are; the lookup of the box a
    parent URN draws into (a parent not shown: its nearest shown ancestor; None: the stack)."""
    root = Box(None, f"{plan.project} {plan.stack}")
    boxes: dict[str | None, Box] = {None: root, plan.root(): root}

    def box_of(urn: str | None) -> Box:
        if urn in boxes:
            return boxes[urn]
        comp = components.get(urn or "")
        if comp is None:  # parent not shown (a plumbing or unknown parent): the nearest shown one
            parent = next((r.parent for r in plan.resources if r.urn == urn), None)
            return box_of(parent) if parent != urn else root
        box = Box(comp.urn, comp.name)
        boxes[comp.urn] = box
        box_of(comp.parent).boxes.append(box)
        return box

    for comp in components.values():
        box_of(comp.urn)
    return box_of


def _place(
    shown: list[Resource], box_of: Callable[[str | None], Box], everything: bool
) -> dict[str, str]:
    """The cloud resources as nodes of their parent's box (GROUP_AT or more of one type in a
    box as one node, unless everything); the node id of each resource URN."""
    owner: dict[str, str] = {}
    counter = 0
    by_box: dict[int, dict[str, list[Resource]]] = {}
    box_by_id: dict[int, Box] = {}
    for r in shown:
        if not r.custom:
            continue
        box = box_of(r.parent)
        box_by_id[id(box)] = box
        by_box.setdefault(id(box), {}).setdefault(r.type, []).append(r)
    for bid, types in by_box.items():
        box = box_by_id[bid]
        for type_token, members in types.items():
            if not everything and len(members) >= GROUP_AT:
                groups: Iterable[list[Resource]] = [members]
            else:
                groups = [[m] for m in members]
            for group in groups:
                counter += 1
                node_id = f"n{counter}"
                if len(group) == 1:
                    label = f"{group[0].name}<br/>{_short_type(type_token)}"
                else:
                    label = f"{_short_type(type_token)} x{len(group)}"
                box.nodes.append(Node(node_id, label, [m.urn for m in group]))
                for m in group:
                    owner[m.urn] = node_id
    return owner


def _edges(shown: list[Resource], owner: dict[str, str]) -> list[tuple[str, str]]:
    """The dependencies between nodes, each once, in the order the resources are shown."""
    edges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for r in shown:
        target = owner.get(r.urn)
        if target is None:
            continue
        for dep in r.dependencies:
            source = owner.get(dep)
            if source and source != target and (source, target) not in seen:
                seen.add((source, target))
                edges.append((source, target))
    return edges


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(plan: Plan, *, everything: bool = False) -> str:
    graph = build(plan, everything=everything)
    lines = ["flowchart LR"]
    counter = 0

    def emit(box: Box, depth: int) -> None:
        nonlocal counter
        pad = "  " * depth
        for node in box.nodes:
            lines.append(f'{pad}{node.id}["{_mermaid_text(node.label)}"]')
        for sub in box.boxes:
            counter += 1
            lines.append(f'{pad}subgraph c{counter}["{_mermaid_text(sub.label)}"]')
            emit(sub, depth + 1)
            lines.append(f"{pad}end")

    emit(graph.root, 1)
    lines += [f"  {a} --> {b}" for a, b in graph.edges]
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("<br/>", "\\n")


def dot(plan: Plan, *, everything: bool = False) -> str:
    graph = build(plan, everything=everything)
    lines = [
        f'digraph "{_dot_text(graph.root.label)}" {{',
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
    ]
    counter = 0

    def emit(box: Box, depth: int) -> None:
        nonlocal counter
        pad = "  " * depth
        for node in box.nodes:
            lines.append(f'{pad}{node.id} [label="{_dot_text(node.label)}"];')
        for sub in box.boxes:
            counter += 1
            lines.append(f"{pad}subgraph cluster_{counter} {{")
            lines.append(f'{pad}  label="{_dot_text(sub.label)}";')
            emit(sub, depth + 1)
            lines.append(f"{pad}}}")

    emit(graph.root, 1)
    lines += [f"  {a} -> {b};" for a, b in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"
