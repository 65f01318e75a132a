"""The settings table: every setting, its default and its meaning, from the models themselves
(`backbone settings` prints it; a test keeps README.md's copy equal to it)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from infra.config.base import NAMESPACE
from infra.config.stack import StackConfig


def docs() -> str:
    """Every setting, its type, default and meaning, as Markdown (for README and `--help`)."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            key = field.alias or name
            full = key if ":" in key else f"{prefix}{key}"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{full}.")
                continue
            default = field.get_default(call_default_factory=True)
            text = " ".join((field.description or "").split())
            lines.append(f"| `{full}` | `{json.dumps(default)}` | {text} |")

    walk(StackConfig, f"{NAMESPACE}:")
    return "| key | default | meaning |\n|---|---|---|\n" + "\n".join(lines)
