"""A cache of Plans, keyed by the content of everything that decides a Plan.

A stack's Plan is a pure function of: the program (Pulumi.yaml and its `main` folder, infra/), the
stack settings file, the app's build context (app/: the image tag is its content digest), the
offline engine itself (backbone/synth.py, mocks.py, plan.py, yamlio.py, this file) and the installed
Python and Pulumi SDK versions. The key is a SHA-256 over all of them, so `plan`, `diff`, `cost`
and `check` of an unchanged stack run the program once, and any edit (a setting, a line of infra/,
a file of app/, an SDK upgrade) is a miss. Entries live in `<project>/.backbone/cache/plans/`
(`$BACKBONE_CACHE_DIR` overrides it); `--no-cache` skips reading and writing.

A cached Plan is the whole Plan (resource outputs and ids included), so a hit is the same Plan a
fresh run returns.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from backbone.plan import Plan, Resource
from backbone.synth import StackRef, program_dir, synth

FORMAT = 1
KEEP = 64  # entries kept; older ones are removed
_TOOL_FILES = ("synth.py", "mocks.py", "plan.py", "cache.py", "yamlio.py")
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "node_modules"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def cache_dir(project_dir: Path) -> Path:
    env = os.environ.get("BACKBONE_CACHE_DIR")
    return Path(env) if env else project_dir / ".backbone" / "cache" / "plans"


def _tree(digest: Any, root: Path, label: str) -> None:
    if not root.exists():
        digest.update(f"{label}: absent\n".encode())
        return
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".backbone"))
        files += [Path(folder) / n for n in names if not n.endswith(_SKIP_SUFFIXES)]
    for path in sorted(files):
        rel = path.relative_to(root).as_posix()
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{label}/{rel} {mode}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())


@functools.cache
def sdk_versions() -> tuple[str, ...]:
    """Python and every installed Pulumi package (the SDK and its providers), name==version.

    Read once per process (what is installed does not change under a running command). Only
    the distributions whose folder names a Pulumi package have their metadata read: reading
    every installed distribution's took most of the time of a cache key."""
    found = {}
    for dist in metadata.distributions():
        # a PathDistribution's folder: site-packages/<name>-<version>.dist-info
        folder = getattr(dist, "_path", None)
        if folder is not None and not Path(folder).name.lower().startswith("pulumi"):
            continue
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")  # PEP 503 spelling
        if name.startswith("pulumi"):
            found[name] = dist.version
    python = f"python=={sys.version.split()[0]}"
    return (python, *(f"{n}=={v}" for n, v in sorted(found.items())))


def key(ref: StackRef, location: Path | None = None) -> str:
    """The content key of a stack's Plan (planned as if the project were at `location`)."""
    digest = hashlib.sha256(f"backbone plan cache {FORMAT}\n".encode())
    digest.update(f"stack {ref.stack} project {ref.project}\n".encode())
    # Absolute paths (the image's build context, archives) are part of a Plan.
    digest.update(f"at {(location or ref.project_dir).resolve()}\n".encode())
    digest.update(b"stack file\n" + ref.file.read_bytes())
    pulumi_yaml = ref.project_dir / "Pulumi.yaml"
    digest.update(b"Pulumi.yaml\n" + (pulumi_yaml.read_bytes() if pulumi_yaml.is_file() else b""))
    _tree(digest, program_dir(ref.project_dir), "program")
    _tree(digest, ref.project_dir / "app", "app")
    tool = Path(__file__).resolve().parent
    for name in _TOOL_FILES:
        digest.update(f"tool {name}\n".encode() + (tool / name).read_bytes())
    digest.update("\n".join(sdk_versions()).encode())
    return digest.hexdigest()


def dumps(plan: Plan) -> str:
    """The whole Plan as JSON (resource outputs and ids included, unlike Plan.dumps)."""
    return json.dumps(
        {"format": FORMAT, "plan": dataclasses.asdict(plan)}, separators=(",", ":"), default=str
    )


def loads(text: str) -> Plan:
    data = json.loads(text)
    if data.get("format") != FORMAT:
        raise ValueError(f"cache format {data.get('format')!r}, expected {FORMAT}")
    raw = dict(data["plan"])
    resources = [Resource(**r) for r in raw.pop("resources")]
    return Plan(resources=resources, **raw)  # every field, whatever Plan holds


def load(ref: StackRef, digest: str) -> Plan | None:
    path = cache_dir(ref.project_dir) / f"{digest}.json"
    try:
        return loads(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, or written by another version: a miss


def store(ref: StackRef, digest: str, plan: Plan) -> None:
    folder = cache_dir(ref.project_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".plan-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as fh:
            fh.write(dumps(plan))
        os.replace(tmp, folder / f"{digest}.json")  # atomic: readers see a whole file or none
        entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only checkout still plans, only without the cache


def relocate(plan: Plan, old: Path, new: Path) -> Plan:
    """The Plan with every path under `old` moved under `new` (a revision checked out in a
    temporary worktree, planned as if it were the project itself)."""
    before, after = str(old.resolve()), str(new.resolve())
    if before == after:
        return plan

    def move(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(before, after) if before in value else value
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    for r in plan.resources:
        r.inputs = move(r.inputs)
        r.outputs = move(r.outputs)
    plan.outputs = move(plan.outputs)
    return plan


def plan(
    ref: StackRef, *, use_cache: bool = True, location: Path | None = None
) -> tuple[Plan, bool]:
    """The stack's Plan and whether it came from the cache. With `location`, paths in the Plan
    read as if the project were there."""
    if not use_cache:
        fresh = synth(ref)
        return (relocate(fresh, ref.project_dir, location) if location else fresh), False
    digest = key(ref, location)
    hit = load(ref, digest)
    if hit is not None:
        return hit, True
    fresh = synth(ref)
    if location is not None:
        fresh = relocate(fresh, ref.project_dir, location)
    store(ref, digest, fresh)
    return fresh, False
