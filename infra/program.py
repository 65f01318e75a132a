"""The Pulumi program: the engine's config in, the stack's resources and outputs out.

The one place that talks to the engine's settings channel: it reads the config the engine passes
(the stack file's keys, and the engine settings of infra.config.ENGINE_NAMESPACE), turns a
ConfigError into Pulumi's RunError (printed with no traceback, before anything is registered) and
exports what infra.stack.build returns.
"""

from __future__ import annotations

import pulumi
from pulumi.runtime import config as runtime_config

from infra import config, stack


def engine_config() -> dict[str, str]:
    """Every config value the engine handed the program, as strings (objects as JSON)."""
    raw = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return raw


def main() -> None:
    name = pulumi.get_stack()
    raw = engine_config()
    try:
        cfg = config.parse(raw, source=f"stacks/Pulumi.{name}.yaml", stack=name)
    except config.ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    outputs = stack.build(cfg, package=stack.PACKAGERS[config.packager(raw)])
    for key, value in outputs.items():
        pulumi.export(key, value)
