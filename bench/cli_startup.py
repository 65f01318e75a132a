"""Benchmark: wall time and CPU (user + sys) of short `backbone` commands, best of --runs.

    python bench/cli_startup.py [--runs 5] [--stack dev]

- `backbone --help`: the CLI's import floor (typer, rich, backbone.plan; not the config);
- `backbone plan STACK --nope`: a bad argument (exit 2; typer validates parameters through
  pydantic, so this pays pydantic's import but not the config's);
- `backbone plan STACK`: a cached plan (run once first, so the Plan comes from the cache), with
  the checks against AWS's published constraints, the policy pack and the cost line.
Each figure is the best of --runs fresh processes (CPU from wait4); on a loaded machine the CPU
figure is the steadier one. Run on demand; it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def measure(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one `python -m backbone.cli ARGS` process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "backbone.cli", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    return (
        time.perf_counter() - start,
        usage.ru_utime + usage.ru_stime,
        os.waitstatus_to_exitcode(status),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stack", default="dev")
    opts = parser.parse_args()
    commands = [["--help"], ["plan", opts.stack, "--nope"], ["plan", opts.stack]]
    measure(commands[-1])  # the plan into the cache
    for args in commands:
        runs = [measure(args) for _ in range(opts.runs)]
        wall = min(r[0] for r in runs) * 1000
        cpu = min(r[1] for r in runs) * 1000
        codes = sorted({r[2] for r in runs})
        print(
            f"backbone {' '.join(args):<22} wall {wall:6.0f} ms  CPU {cpu:6.0f} ms  "
            f"(best of {opts.runs}, exit {', '.join(map(str, codes))})"
        )


if __name__ == "__main__":
    main()
