"""A throwaway Pulumi project that runs only the Workload component, under the offline engine.

It pins what the component does with inputs we know exactly (a known image digest, known secret
values), independent of how infra/stack.py wires it: tests can then grep for the real secret
values and be sure they never reach a plan or a manifest.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from tests.realparts import REPO

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/backbone-app@sha256:" + "0123abcd" * 8
DATABASE_URL = "postgresql://app_admin:Harness-Db-Pa55word@db.internal:5432/app?sslmode=require"
API_TOKEN = "harness-api-token-0123456789abcdef"
VPC_CIDR = "10.20.0.0/16"
DATABASE_CIDRS = ["10.20.64.0/20", "10.20.80.0/20"]
NODE_PORT = 31080
HEALTH_CHECK_NODE_PORT = 31081
IDLE_TIMEOUT = 75
UPSTREAM_DRAIN_SECONDS = 25
NAMESPACE = "shortener"
K8S_VERSION = "1.35"

# Stack name -> how the provider is given to the component.
STACKS = {"providers": "providers={'kubernetes': k8s}", "provider": "provider=k8s"}

MAIN = """
import sys
sys.path.insert(0, {repo!r})

import pulumi
import pulumi_kubernetes

from infra.components.workload import Upstream, Workload
from infra.config import AppConfig

k8s = pulumi_kubernetes.Provider("k8s", kubeconfig="{{}}")
option = {{"providers": dict(providers={{"kubernetes": k8s}}), "provider": dict(provider=k8s)}}
workload = Workload(
    "app",
    AppConfig(
        node_port={node_port},
        health_check_node_port={health_check_node_port},
        replicas=3,
        min_replicas=2,
        max_replicas=6,
        target_cpu_percent=65,
        cpu="300m",
        memory="384Mi",
    ),
    namespace={namespace!r},
    image=pulumi.Output.from_input({image!r}),
    database_url=pulumi.Output.secret({database_url!r}),
    api_token=pulumi.Output.secret({api_token!r}),
    vpc_cidr={vpc_cidr!r},
    database_cidrs={database_cidrs!r},
    upstream=Upstream(
        idle_timeout_seconds={idle_timeout},
        drain_seconds={upstream_drain},
        forwarded_allow_cidrs=[{vpc_cidr!r}],
    ),
    opts=pulumi.ResourceOptions(**option[pulumi.get_stack()]),
)
pulumi.export("namespace", workload.namespace)
pulumi.export("serviceName", workload.service_name)
pulumi.export("nodePort", workload.node_port)
"""


def make_project(root: Path) -> Path:
    """Write the project into `root`; return its folder (stacks: see STACKS)."""
    (root / "stacks").mkdir(parents=True, exist_ok=True)
    (root / "infra").mkdir(exist_ok=True)
    (root / "Pulumi.yaml").write_text(
        "name: backbone\nruntime: python\nmain: infra/\nstackConfigDir: stacks\n"
    )
    for stack in STACKS:
        (root / "stacks" / f"Pulumi.{stack}.yaml").write_text("config:\n  aws:region: us-east-1\n")
    (root / "infra" / "__main__.py").write_text(
        dedent(MAIN).format(
            repo=str(REPO),
            namespace=NAMESPACE,
            image=IMAGE,
            node_port=NODE_PORT,
            health_check_node_port=HEALTH_CHECK_NODE_PORT,
            idle_timeout=IDLE_TIMEOUT,
            upstream_drain=UPSTREAM_DRAIN_SECONDS,
            database_url=DATABASE_URL,
            api_token=API_TOKEN,
            vpc_cidr=VPC_CIDR,
            database_cidrs=DATABASE_CIDRS,
        )
    )
    return root
