"""Benchmark: how much of each plan AWS's published constraints reach (backbone.awsrules).

Per stack: the literal input values of AWS resources, how many have a mapping to a CloudFormation
schema property (the coverage), how many values were checked (and how many of those have more
than a type to check: a pattern, length, enum or range), how many were skipped as known only at
deploy (outputs of other resources) or secret, the violations and warnings, and the time the
check takes on a Plan already made. Then every input left unmapped, every input listed as having
no CloudFormation counterpart (with its reason), and the types with no AWS schema.

Run on demand (`python bench/awsrules_coverage.py [stack ...]`); it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backbone import awsrules  # noqa: E402
from backbone.synth import synth  # noqa: E402

STACKS = ["local", "free-tier", "dev", "prod"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*", default=STACKS)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of the check per stack")
    args = parser.parse_args()

    total = awsrules.Report()
    print(
        f"constraints: cfn-lint {awsrules.cfnlint_version()} schemas ({awsrules.SCHEMA_REGION}) "
        f"+ {sum(len(v) for m in awsrules.mapping().types.values() for v in m.extra.values())} "
        "botocore-stated extras; "
        f"{len(awsrules.mapping().types)} Pulumi types mapped"
    )
    header = (
        f"{'stack':<10} {'literal':>7} {'mapped':>7} {'coverage':>8} {'checked':>7} "
        f"{'constr.':>7} {'deploy':>6} {'secret':>6} {'viol.':>5} {'warn.':>5} {'ms':>6}"
    )
    print(header)
    for stack in args.stacks:
        plan = synth(stack, cwd=REPO)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            report = awsrules.check_plan(plan)
            times.append((time.perf_counter() - start) * 1000)
        total.merge(report)
        print(
            f"{stack:<10} {report.literal:>7} {report.mapped:>7} {report.coverage:>8.1%} "
            f"{report.checked:>7} {report.constrained:>7} {report.unknown:>6} {report.secret:>6} "
            f"{len(report.violations):>5} {len(report.warnings):>5} "
            f"{statistics.median(times):>6.0f}"
        )
        for finding in report.findings:
            print(f"    {finding.level}: {finding.line()}")

    print(
        f"\nall stacks: {total.mapped} of {total.literal} literal values mapped "
        f"({total.coverage:.1%}), {total.checked} checked"
    )
    print("\nunmapped (literal inputs with no CloudFormation property and no reason):")
    for (type_token, path), n in sorted(total.unmapped.items()) or [(("(none)", ""), 0)]:
        print(f"  {type_token} {path}" + (f"  x{n}" if n else ""))
    print("\nno CloudFormation counterpart (listed in backbone/data/cfn_map.yaml with a reason):")
    table = awsrules.mapping()
    for (type_token, path), n in sorted(total.unchecked.items()):
        entry = table.types[type_token]
        reason = next(
            (
                r
                for k, r in entry.unchecked.items()
                if path == k or path.startswith((k + ".", k + "["))
            ),
            "",
        )
        print(f"  {type_token} {path}  x{n}: {reason}")
    print("\ntypes with no AWS schema:")
    for type_token in sorted(total.no_schema):
        print(f"  {type_token}: {table.no_schema_reason(type_token)}")
    if total.unlisted_types:
        print("\nUNLISTED types (a test fails on these):")
        for type_token in sorted(total.unlisted_types):
            print(f"  {type_token}")


if __name__ == "__main__":
    main()
