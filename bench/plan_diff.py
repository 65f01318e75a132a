"""Diff two Plans (`backbone plan STACK --format json` files) resource by resource.

    python bench/plan_diff.py before/dev.json after/dev.json   # exit 0: equal, 1: differences

For refactors that must not change what a stack deploys: every resource is matched by URN and
compared field by field (type, inputs, parent, provider, dependencies, options, outputs), then the
stack outputs. Prints one line per difference; nothing when the plans are the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    """{dotted.path: leaf} of a JSON value, so a difference names its exact place."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flat(v, f"{path}.{k}" if path else str(k))
        return out or {path: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out |= _flat(v, f"{path}[{i}]")
        return out or {path: []}
    return {path: value}


def _diff(label: str, a: Any, b: Any) -> list[str]:
    fa, fb = _flat(a), _flat(b)
    lines = []
    for key in sorted(set(fa) | set(fb)):
        if key not in fb:
            lines.append(f"{label} {key}: {fa[key]!r} -> (absent)")
        elif key not in fa:
            lines.append(f"{label} {key}: (absent) -> {fb[key]!r}")
        elif fa[key] != fb[key]:
            lines.append(f"{label} {key}: {fa[key]!r} -> {fb[key]!r}")
    return lines


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Every difference between two Plans, one line each."""
    old = {r["urn"]: r for r in before.get("resources", [])}
    new = {r["urn"]: r for r in after.get("resources", [])}
    lines = [f"- {urn}" for urn in sorted(set(old) - set(new))]
    lines += [f"+ {urn}" for urn in sorted(set(new) - set(old))]
    for urn in sorted(set(old) & set(new)):
        lines += _diff(f"~ {urn}", old[urn], new[urn])
    lines += _diff("outputs", before.get("outputs", {}), after.get("outputs", {}))
    lines += _diff("settings", before.get("settings", {}), after.get("settings", {}))
    order_old = [u for u in old if u in new]
    order_new = [u for u in new if u in old]
    if order_old != order_new:
        lines.append("order: resources are registered in a different order")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text()) for p in argv)
    lines = diff(before, after)
    for line in lines:
        print(line)
    return 1 if lines else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
