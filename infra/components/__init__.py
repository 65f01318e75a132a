"""The stack's components. What several of them share is defined here, once."""

from __future__ import annotations

import pulumi

# The app's image (app/Dockerfile) runs as this user and group, on Kubernetes and on Docker alike.
APP_UID = 10001


def project_stack(stack: str | None = None) -> str:
    """`<project>-<stack>`: the prefix of every name the kit gives AWS (cluster, functions, alarms,
    containers), so two stacks in one account never collide."""
    return f"{pulumi.get_project()}-{stack or pulumi.get_stack()}"
