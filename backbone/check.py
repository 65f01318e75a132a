"""`backbone check`: the policy pack's rules over a Plan, and checkov over what the kit renders.

The rules are policies/rules.py, the same functions the CrossGuard pack runs under
`pulumi preview --policy-pack policies`. The stack's settings (infra.config, loaded as
backbone.synth loads them) say whether it is a production stack (`tier`), whether the cost rules
are mandatory (`freeTier`), its budget, and each rule's level (`policies`).

checkov scans the stack's Kubernetes manifests (as `backbone manifests` writes them) and
app/Dockerfile; its failed checks are reported in the same shape as the rules' violations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backbone.plan import Plan
from infra.config import StackConfig
from policies import rules

if TYPE_CHECKING:
    from backbone.awsrules import Report

REPO = Path(__file__).resolve().parent.parent
CHECKOV_TIMEOUT = 600


def resources_of(plan: Plan) -> list[rules.Res]:
    """The Plan's cloud resources as the rules see them (providers and components left out)."""
    from backbone.awsrules import default_tags

    tags = default_tags(plan)
    return [
        rules.Res(
            type=r.type,
            name=r.name,
            urn=r.urn,
            props=r.inputs,
            id=r.id,
            outputs=r.outputs,
            provider_tags=tags.get(r.provider or "", {}),
        )
        for r in plan.resources
        if r.custom and not r.is_provider
    ]


def context(plan: Plan, cfg: StackConfig) -> rules.Context:
    """The rules' context for a Plan and its stack's StackConfig."""
    from backbone.awsrules import unknown_in

    def monthly_cost() -> float:
        from backbone.cost import estimate

        return estimate(plan).total_usd

    return rules.Context.from_config(cfg, unknown=unknown_in(plan), monthly_cost=monthly_cost)


def evaluate(plan: Plan, cfg: StackConfig, aws: Report | None = None) -> list[rules.Violation]:
    """Every rule of the pack over the Plan. `aws`, the Plan's check against AWS's published
    constraints (awsrules.check_plan) when the caller has already made it, is read by the
    aws-published-constraints rule instead of checking every value a second time."""
    pack = rules.RULES if aws is None else [_reading(rule, aws) for rule in rules.RULES]
    return rules.evaluate(resources_of(plan), context(plan, cfg), pack)


def _reading(rule: rules.Rule, aws: Report) -> rules.Rule:
    """The aws-published-constraints rule answering from a check of the whole Plan: the same
    findings (check_plan checks each resource as the rule does: its provider's default tags
    merged into taggable ones, the values the engine computes skipped), the rule's own message."""
    from backbone.awsrules import RULE_GROUP

    if rule.name != RULE_GROUP:
        return rule
    by_urn: dict[str, list[str]] = {}
    for f in aws.violations:
        by_urn.setdefault(f.urn, []).append(f.what)

    def found(r: rules.Res, ctx: rules.Context) -> Iterator[str]:
        yield from by_urn.get(r.urn, [])

    return replace(rule, resource=found)


@dataclass
class Verdict:
    stack: str
    violations: list[rules.Violation] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)  # what checkov scanned
    notes: list[str] = field(default_factory=list)

    @property
    def mandatory(self) -> list[rules.Violation]:
        return [v for v in self.violations if v.level == rules.MANDATORY]

    @property
    def advisory(self) -> list[rules.Violation]:
        return [v for v in self.violations if v.level == rules.ADVISORY]

    @property
    def passed(self) -> bool:
        return not self.mandatory

    def line(self) -> str:
        m, a = len(self.mandatory), len(self.advisory)
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"policies: {verdict}, {len(rules.RULES)} rules, {m} mandatory violation"
            f"{'s' if m != 1 else ''}, {a} advisory"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "passed": self.passed,
            "rules": len(rules.RULES),
            "violations": [v.to_json() for v in self.violations],
            "scanned": self.scanned,
            "notes": self.notes,
        }


def policy_verdict(plan: Plan, cfg: StackConfig, aws: Report | None = None) -> Verdict:
    return Verdict(plan.stack, evaluate(plan, cfg, aws))


# --------------------------------------------------------------------------------------------
# checkov


def find_checkov() -> str | None:
    for candidate in (
        REPO / ".tools" / "bin" / "checkov",
        REPO / ".tools" / "venv" / "bin" / "checkov",
    ):
        if candidate.exists():
            return str(candidate)
    return shutil.which("checkov")


def _checkov(checkov: str, args: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [checkov, *args, "--compact", "--quiet", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"checkov exited {done.returncode}: {done.stderr.strip()[-400:]}")
    data = json.loads(done.stdout)
    reports = data if isinstance(data, list) else [data]
    failed: list[dict[str, Any]] = []
    for report in reports:
        if isinstance(report, dict):
            failed.extend((report.get("results") or {}).get("failed_checks") or [])
    return failed


def _as_violation(check: dict[str, Any], where: str) -> rules.Violation:
    guideline = check.get("guideline") or ""
    return rules.Violation(
        rule=str(check.get("check_id")),
        level=rules.MANDATORY,
        resource=str(check.get("resource") or where),
        urn=where,
        type="checkov:" + str(check.get("check_type") or where),
        message=str(check.get("check_name")),
        fix=f"see {guideline}" if guideline else "see checkov's documentation of the check",
    )


def checkov_violations(plan: Plan, verdict: Verdict, dockerfile: Path | None = None) -> None:
    """checkov over the stack's Kubernetes manifests and app/Dockerfile, into the verdict."""
    from backbone.manifests import render, write

    checkov = find_checkov()
    if checkov is None:
        verdict.notes.append(
            "checkov not found (.tools/venv/bin/checkov or PATH): the manifests and the "
            "Dockerfile were not scanned; install it with `python3 -m venv .tools/venv && "
            ".tools/venv/bin/pip install 'checkov>=3.2,<4'`"
        )
        return
    if render(plan):
        with tempfile.TemporaryDirectory(prefix="backbone-manifests-") as tmp:
            write(plan, Path(tmp))
            for check in _checkov(checkov, ["-d", tmp, "--framework", "kubernetes"]):
                path = str(check.get("file_path") or "").lstrip("/")
                verdict.violations.append(_as_violation(check, f"manifests/{path}"))
        verdict.scanned.append(f"Kubernetes manifests of {plan.stack}")
    dockerfile = dockerfile or REPO / "app" / "Dockerfile"
    if dockerfile.is_file():
        for check in _checkov(checkov, ["-f", str(dockerfile), "--framework", "dockerfile"]):
            verdict.violations.append(
                _as_violation(
                    check,
                    str(dockerfile.relative_to(REPO))
                    if dockerfile.is_relative_to(REPO)
                    else str(dockerfile),
                )
            )
        verdict.scanned.append("app/Dockerfile")
