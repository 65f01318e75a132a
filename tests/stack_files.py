"""Stack files for tests: a shipped stack's settings with some changed, written under a new name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def stack_variant(tmp_path: Path, base: str, filename: str, changes: dict[str, Any]) -> Path:
    """stacks/Pulumi.<base>.yaml with `changes` applied ("cluster.maxNodes": 2; None deletes the
    key), written to tmp_path/filename."""
    data = yaml.safe_load((REPO / "stacks" / f"Pulumi.{base}.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        target = data["config"].setdefault(f"backbone:{section}", {})
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(data))
    return path
