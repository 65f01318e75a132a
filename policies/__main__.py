"""The CrossGuard policy pack: `pulumi preview --policy-pack policies`.

Built from policies/rules.py and nothing else: one policy per rule, at the level the stack's
settings give it (`backbone:tier`, `backbone:freeTier`, `backbone:policies`, read from the config
the Pulumi CLI hands the pack, validated by infra.config as for the program). Building the
PolicyPack starts the analyzer's gRPC server, so tests never import this module: they run it in
a subprocess.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pulumi.runtime.config import get_config_env  # noqa: E402
from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from infra.config import parse  # noqa: E402
from policies import rules  # noqa: E402

LEVELS = {
    rules.MANDATORY: EnforcementLevel.MANDATORY,
    rules.ADVISORY: EnforcementLevel.ADVISORY,
    rules.DISABLED: EnforcementLevel.DISABLED,
}


def stack_context() -> rules.Context:
    """The stack's settings as the rules read them; defaults when the CLI passes no config."""
    stack = os.environ.get("PULUMI_STACK", "")
    raw = dict(get_config_env())
    if not raw:
        return rules.Context(stack=stack)
    return rules.Context.from_config(parse(raw, source=f"stacks/Pulumi.{stack}.yaml", stack=stack))


def policy(
    rule: rules.Rule, ctx: rules.Context
) -> ResourceValidationPolicy | StackValidationPolicy:
    level = LEVELS[rule.level(ctx)]
    if rule.resource is not None:
        return ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            enforcement_level=level,
            validate=rules.resource_validation(rule, ctx),
        )
    return StackValidationPolicy(
        name=rule.name,
        description=rule.description,
        enforcement_level=level,
        validate=rules.stack_validation(rule, ctx),
    )


CONTEXT = stack_context()
PolicyPack(
    name="backbone",
    policies=[policy(rule, CONTEXT) for rule in rules.RULES],
    enforcement_level=EnforcementLevel.MANDATORY,
)
