"""How many app pods the node group holds at its maximum: the arithmetic behind the capacity rule
(infra.config.stack) and the figures `tests/test_cluster.py` reports. Pulumi-free.

The Deployment's rollout facts (infra/components/workload.py) are named here because the rule
needs them: a rolling update runs `maxReplicas + APP_MAX_SURGE` pods at peak, and the registry
must keep the images of the `APP_REVISION_HISTORY_LIMIT` ReplicaSets `kubectl rollout undo` can
return to. tests/test_cluster.py reads both from the rendered Deployment, so a drift fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.config.catalogues import SYSTEM_PODS, InstanceType

APP_MAX_SURGE = 1
APP_REVISION_HISTORY_LIMIT = 5


def cpu_millicores(quantity: str) -> int:
    """`250m` -> 250, `2` -> 2000 (AppConfig's pattern: digits with an optional m)."""
    return int(quantity[:-1]) if quantity.endswith("m") else int(quantity) * 1000


def memory_mib(quantity: str) -> int:
    """`256Mi` -> 256, `1Gi` -> 1024 (AppConfig's pattern)."""
    match = re.fullmatch(r"([0-9]+)(Mi|Gi)", quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity in Mi or Gi")
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


@dataclass(frozen=True)
class Fit:
    instance: InstanceType
    nodes: int
    app_pods: int
    """App pods that fit on `nodes` nodes after the system pods."""
    per_node: int
    """App pods on a node that runs only the DaemonSets beside them."""
    limit: str
    """What runs out first on such a node: cpu, memory or pods."""


def fit(instance: InstanceType, nodes: int, cpu: str, memory: str) -> Fit:
    """App pods of (cpu, memory) requests on `nodes` nodes of `instance`, the cluster-wide system
    pods placed first-fit on the first nodes, the DaemonSets on every node."""
    want_cpu, want_mem = cpu_millicores(cpu), memory_mib(memory)
    daemons = [p for p in SYSTEM_PODS if p.per_node]
    singles = [p for p in SYSTEM_PODS if not p.per_node for _ in range(p.replicas)]
    free = [
        [
            instance.allocatable_cpu_m - sum(p.cpu_m for p in daemons),
            instance.allocatable_memory_mib - sum(p.memory_mib for p in daemons),
            instance.max_pods - len(daemons),
        ]
        for _ in range(nodes)
    ]
    for pod in singles:
        for node in free:
            if node[0] >= pod.cpu_m and node[1] >= pod.memory_mib and node[2] >= 1:
                node[0] -= pod.cpu_m
                node[1] -= pod.memory_mib
                node[2] -= 1
                break

    def pods_on(node: list[int]) -> int:
        return max(0, min(node[0] // want_cpu, node[1] // want_mem, node[2]))

    empty = [
        instance.allocatable_cpu_m - sum(p.cpu_m for p in daemons),
        instance.allocatable_memory_mib - sum(p.memory_mib for p in daemons),
        instance.max_pods - len(daemons),
    ]
    by = {"cpu": empty[0] // want_cpu, "memory": empty[1] // want_mem, "pods": empty[2]}
    return Fit(
        instance=instance,
        nodes=nodes,
        app_pods=sum(pods_on(n) for n in free),
        per_node=pods_on(empty),
        limit=min(by, key=lambda k: by[k]),
    )


def nodes_needed(instance: InstanceType, pods: int, cpu: str, memory: str, ceiling: int) -> int:
    """The fewest nodes (up to `ceiling`) that hold `pods` app pods; ceiling + 1 if none does."""
    for n in range(1, ceiling + 1):
        if fit(instance, n, cpu, memory).app_pods >= pods:
            return n
    return ceiling + 1
