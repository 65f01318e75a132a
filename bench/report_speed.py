"""Benchmark: `backbone report` of a generated 2,000-step preview, and `backbone plan prod` cold
and warm (the Plan cache).

- "start-up": `backbone --help`, the tool's own floor (Python, typer, rich).
- "report 2000 steps (markdown|text|json)": `backbone report big.json` of the preview made by
  tests/fixtures/big_preview.py (2,000 steps, 40 database replacements, long values); the
  report's own cost is its time minus start-up. The Markdown's size is printed too.
- "plan prod cold": an empty cache directory each run (the program runs);
  "plan prod warm": the same directory again (a cache hit).
Each figure is the median of --runs fresh processes. Run on demand; not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.big_preview import make  # noqa: E402

CLI = [sys.executable, "-m", "backbone.cli"]


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
    return elapsed, done.stdout


def median(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    run(cmd, env)  # warm the file cache and .pyc files
    return statistics.median(run(cmd, env)[0] for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.json"
        big.write_text(json.dumps(make(args.steps)))
        rows["start-up (backbone --help)"] = median([*CLI, "--help"], args.runs)
        for fmt in ("markdown", "text", "json"):
            cmd = [*CLI, "report", str(big), "--format", fmt]
            rows[f"report {args.steps} steps ({fmt})"] = median(cmd, args.runs)
        _, markdown = run([*CLI, "report", str(big), "--format", "markdown"])
        cold, warm = [], []
        for i in range(args.runs):
            cache = Path(tmp) / f"cache-{i}"
            env = {**os.environ, "BACKBONE_CACHE_DIR": str(cache)}
            cold.append(run([*CLI, "plan", "prod", "--format", "json"], env)[0])
            warm.append(run([*CLI, "plan", "prod", "--format", "json"], env)[0])
        rows["plan prod cold (cache miss)"] = statistics.median(cold)
        rows["plan prod warm (cache hit)"] = statistics.median(warm)
    if args.json:
        print(json.dumps({"seconds": rows, "markdown_chars": len(markdown)}, indent=2))
        return
    width = max(map(len, rows))
    for label, seconds in rows.items():
        print(f"{label:<{width}}  {seconds:6.3f} s")
    floor = rows["start-up (backbone --help)"]
    print(
        f"report's own time (markdown, beyond start-up): "
        f"{rows[f'report {args.steps} steps (markdown)'] - floor:.3f} s"
    )
    print(f"markdown comment: {len(markdown):,} characters (GitHub's limit: 65,536)")


if __name__ == "__main__":
    main()
