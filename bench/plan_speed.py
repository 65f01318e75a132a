"""Benchmark: wall time and peak memory of `backbone plan` per stack, beside the import floor.

Two floors:
- "import floor": start Python and import pulumi, pulumi_aws and pulumi_kubernetes. The provider
  SDKs import their service packages lazily, so this loads almost none of the resource classes.
- "sdk floor <stack>": the same, plus loading every provider service package the stack's program
  really uses (pulumi_aws.ec2, .iam, ...). Loading a package such as pulumi_aws.ec2 executes its
  ~180 modules and thousands of typed classes; no program that uses it can start faster.
The program's own cost is the plan's time minus its sdk floor.
Each figure is the median of --runs fresh processes (peak RSS from wait4).
Run on demand (`make bench` or `python bench/plan_speed.py`); it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOOR = [sys.executable, "-c", "import pulumi, pulumi_aws, pulumi_kubernetes"]


def measure(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed: {proc.stderr.read().decode() if proc.stderr else ''}"
        )
    return elapsed, usage.ru_maxrss / 1024


def sdk_packages(stack: str) -> list[str]:
    """The provider SDK packages (pulumi_aws.ec2, pulumi_kubernetes.core.v1, ...) that the
    stack's program really loads: every non-lazy package module under the provider SDKs."""
    code = (
        "import sys; from backbone.synth import synth; synth(sys.argv[1]); "
        "print(' '.join(sorted(n for n, m in list(sys.modules.items()) if n.count('.') >= 1 "
        "and n.startswith(('pulumi_aws.', 'pulumi_kubernetes.', 'pulumi_docker.', 'pulumi_random.')) "
        "and hasattr(m, '__path__') and type(m).__name__ != '_LazyModule')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, stack], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def sdk_floor(packages: list[str]) -> list[str]:
    # Attribute access (not just import) is what makes a lazy package load its modules.
    code = "import importlib, pulumi, pulumi_aws, pulumi_kubernetes\n" + "".join(
        f"getattr(importlib.import_module({p!r}), '__all__', None)\n" for p in packages
    )
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stacks", nargs="*", default=["local", "free-tier", "dev", "prod"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    rows: dict[str, dict[str, float]] = {}
    cases = {"import floor": FLOOR}
    for stack in args.stacks:
        cases[f"sdk floor {stack}"] = sdk_floor(sdk_packages(stack))
        cases[f"plan {stack}"] = [sys.executable, "-m", "backbone.cli", "plan", stack, "-f", "json"]
    for label, cmd in cases.items():
        measure(cmd)  # warm the file cache and .pyc files
        samples = [measure(cmd) for _ in range(args.runs)]
        rows[label] = {
            "seconds": statistics.median(s for s, _ in samples),
            "peak_mb": max(m for _, m in samples),
        }
    floor = rows["import floor"]["seconds"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'case':<20} {'median s':>9} {'x floor':>8} {'peak MB':>8}   ({args.runs} runs each)")
    for label, row in rows.items():
        print(
            f"{label:<20} {row['seconds']:>9.3f} {row['seconds'] / floor:>8.2f} {row['peak_mb']:>8.1f}"
        )


if __name__ == "__main__":
    main()
