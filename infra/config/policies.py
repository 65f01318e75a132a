"""backbone:policies: each policy rule's enforcement level, by the rule's name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from infra.config.base import NAMESPACE, Problem, suggest

Level = Literal["mandatory", "advisory", "disabled"]

# The names of the policy rules (policies/rules.py; the program never imports the pack, a test
# keeps the two lists equal), for `backbone:policies`.
POLICY_RULES = (
    "aws-published-constraints", "required-tags", "rds-encrypted", "rds-private", "rds-backups",
    "rds-deletion-protection", "rds-multi-az", "rds-tls-enforced", "s3-public-access-blocked",
    "s3-encrypted", "kms-key-rotation", "sg-no-public-ingress", "sg-no-ssh-rdp-from-internet",
    "db-ingress-named-groups", "vpc-flow-logs", "ec2-imdsv2", "ebs-encrypted",
    "eks-control-plane-logging", "eks-endpoint-restricted", "eks-secrets-encryption",
    "ecr-scan-on-push", "ecr-immutable-tags", "lambda-supported-runtime", "lambda-log-retention",
    "iam-no-wildcard-actions", "iam-no-passrole-star", "iam-no-inline-admin", "iam-trust-services",
    "tls-public-listeners", "db-connections-verified", "cost-no-nat-gateway", "cost-no-eks",
    "cost-free-tier-sizes", "cost-max-alarms", "cost-budget",
)  # fmt: skip


def policy_problems(levels: Mapping[str, str]) -> list[Problem]:
    """A level set for a rule the pack does not have."""
    return [
        Problem(
            f"{NAMESPACE}:policies.{name}",
            f"unknown rule{suggest(name, list(POLICY_RULES))}; allowed: {', '.join(POLICY_RULES)}",
        )
        for name in levels
        if name not in POLICY_RULES
    ]
