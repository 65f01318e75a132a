"""A stack planned at a git revision: the revision checked out in a temporary worktree, its
program run by this tool's offline engine in a fresh interpreter (two versions of infra/ cannot
share one process), the worktree removed afterwards. The working tree is never touched."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from backbone import cache
from backbone.plan import Plan

# Run in the child: this tool's backbone (the child's path has no worktree yet), which imports
# this tool's infra.config; then every infra module forgotten and the worktree first on sys.path,
# so that the program run (infra/__main__.py and all it imports) is the revision's.
_WORKER = """
import sys
from pathlib import Path
from backbone import cache
from backbone.synth import StackNotFound, resolve
from infra.config import ConfigError as ToolConfigError
project, location, stack = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
use = sys.argv[4] == "1"
for name in [m for m in sys.modules if m == "infra" or m.startswith("infra.")]:
    del sys.modules[name]
sys.path.insert(0, str(project))
from infra.config import ConfigError
try:
    plan, _ = cache.plan(resolve(stack, cwd=project), use_cache=use, location=location)
except (ConfigError, ToolConfigError, StackNotFound) as exc:
    sys.stderr.write(str(exc) + "\\n")
    raise SystemExit(2)
sys.stdout.write(cache.dumps(plan))
"""


class RevisionError(Exception):
    """The revision cannot be planned (not a commit, not a git checkout, the program failed)."""


def _git(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
        )
    except FileNotFoundError:
        raise RevisionError("git is not installed: --base needs it") from None
    if done.returncode != 0:
        raise RevisionError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def plan_at(rev: str, stack: str, project_dir: Path, *, use_cache: bool = True) -> Plan:
    """The Plan of `stack` (a name, or a stack file path inside the project) at revision `rev`."""
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], project_dir))
    except RevisionError:
        raise RevisionError(f"{project_dir} is not in a git checkout: --base needs one") from None
    try:
        sha = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], project_dir)
    except RevisionError:
        raise RevisionError(
            f"{rev!r} is not a commit here (allowed: a branch, tag, sha, or HEAD~N)"
        ) from None
    rel_project = project_dir.resolve().relative_to(top.resolve())
    as_path = Path(stack)
    if os.sep in stack or stack.endswith((".yaml", ".yml")):
        absolute = as_path if as_path.is_absolute() else Path.cwd() / as_path
        try:
            stack = str(absolute.resolve().relative_to(project_dir.resolve()))
        except ValueError:
            raise RevisionError(
                f"{stack}: with --base the stack must be a name or a file inside the project"
            ) from None
    with tempfile.TemporaryDirectory(prefix="backbone-base-") as tmp:
        tree = Path(tmp) / "tree"
        _git(["worktree", "add", "--detach", "--quiet", str(tree), sha], top)
        try:
            project = tree / rel_project
            env = dict(
                os.environ, PYTHONSAFEPATH="1", BACKBONE_CACHE_DIR=str(cache.cache_dir(project_dir))
            )
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _WORKER,
                    str(project),
                    str(project_dir),
                    stack,
                    "1" if use_cache else "0",
                ],
                cwd=project,
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
        finally:
            _git(["worktree", "remove", "--force", str(tree)], top)
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise RevisionError(
            f"stack {stack!r} at {rev} ({sha[:12]}) could not be planned: "
            + ("\n".join(detail[-15:]) if detail else f"exit status {done.returncode}")
        )
    return cache.loads(done.stdout)
