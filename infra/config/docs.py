"""The settings table: every setting, its default and its meaning, from the models themselves
(`backbone settings` prints it; a test keeps README.md's copy equal to it)."""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import json
import textwrap

from pydantic import BaseModel

from infra.config.base import NAMESPACE
from infra.config.stack import StackConfig


@functools.cache
def meanings(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the docstring written under its declaration in the model's class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(model)))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    return {
        field.target.id: inspect.cleandoc(doc.value.value)
        for field, doc in itertools.pairwise(body)
        if isinstance(field, ast.AnnAssign)
        and isinstance(field.target, ast.Name)
        and isinstance(doc, ast.Expr)
        and isinstance(doc.value, ast.Constant)
        and isinstance(doc.value.value, str)
    }


def meaning(model: type[BaseModel], name: str) -> str:
    """A field's meaning: its Field's description, else the docstring under it."""
    return model.model_fields[name].description or meanings(model).get(name, "")


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
            text = " ".join(meaning(model, name).split())
            lines.append(f"| `{full}` | `{json.dumps(default)}` | {text} |")

    walk(StackConfig, f"{NAMESPACE}:")
    return "| key | default | meaning |\n|---|---|---|\n" + "\n".join(lines)
