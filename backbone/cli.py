"""The `backbone` command: plan, price, check and review the kit's stacks offline; verify a
deployed stack and bootstrap a state backend on AWS.

The offline commands read a Plan made by the offline engine (backbone.synth): the real Pulumi
program, run in-process under mocks, with no cloud account, credentials, Pulumi CLI or network.
`verify` and `bootstrap` are the two that call AWS (boto3's standard configuration).
"""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from backbone.plan import SECRET, Plan, Resource

if TYPE_CHECKING:
    # Real types for the annotations; the modules themselves (the config and its pydantic
    # among them) are imported where they are used, so --help does not pay for them.
    from backbone.bootstrap import Result as BootstrapResult
    from backbone.check import Verdict
    from backbone.cost import Estimate
    from backbone.review import CostChange, Review
    from backbone.verify import Report as VerifyReport
    from infra.config import StackConfig
    from policies.rules import Violation

STACK_HELP = (
    "A stack name (local, free-tier, dev, prod: read from the stacks/ folder of the project found "
    "from the current directory upward, as the pulumi CLI finds Pulumi.yaml) or the path of a "
    "stack settings file such as stacks/Pulumi.dev.yaml."
)

app = typer.Typer(
    name="backbone",
    help=(
        "Plan, price, check and review the backbone Pulumi stacks offline (no cloud account, no "
        "credentials, no Pulumi CLI), and write their Kubernetes manifests; verify a deployed "
        "stack and bootstrap a state backend on AWS (verify, bootstrap).\n\n"
        "Example: backbone plan dev"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


_CACHE = {"use": True}


@app.callback()
def _root(
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Run the program for every plan instead of reusing a cached Plan (the cache is "
            "keyed by the content of the program, the stack file, app/ and the SDK versions).",
        ),
    ] = False,
) -> None:
    """Plan, price, check and review the backbone Pulumi stacks offline (no cloud account, no
    credentials, no Pulumi CLI), and write their Kubernetes manifests; verify a deployed stack
    and bootstrap a state backend on AWS (verify, bootstrap).

    Example: backbone plan dev
    """
    _CACHE["use"] = not no_cache


# Piped or redirected output is not cut to 80 columns: a plan in a file keeps every name whole.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 240
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(enum.StrEnum):
    text = "text"
    json = "json"


class PlanFormat(enum.StrEnum):
    text = "text"
    json = "json"
    mermaid = "mermaid"
    dot = "dot"


def fail(message: str, code: int = 2) -> NoReturn:
    """A user error: the message on stderr, no traceback, exit status 2."""
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def load_plan(stack: str, use_cache: bool | None = None) -> Plan:
    """Synthesise a stack (or take its Plan from the cache, backbone.cache), turning every user
    error into a clear message and exit status 2."""
    import pulumi

    from backbone import cache
    from backbone.synth import StackNotFound, resolve
    from infra.config import ConfigError

    try:
        use = _CACHE["use"] if use_cache is None else use_cache
        return cache.plan(resolve(stack), use_cache=use)[0]
    except ConfigError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    except StackNotFound as exc:
        fail(str(exc))
    except pulumi.RunError as exc:
        fail(str(exc))


# --------------------------------------------------------------------------------------------
# plan


def _label(r: Resource) -> str:
    flags = []
    if r.protect:
        flags.append("protect")
    if r.retain_on_delete:
        flags.append("retain")
    if r.delete_before_replace:
        flags.append("delete-before-replace")
    tail = f" [yellow]({', '.join(flags)})[/]" if flags else ""
    kind = "[magenta]" if not r.custom else "[cyan]"
    return f"{kind}{r.type}[/] [bold]{r.name}[/]{tail}"


def render_tree(plan: Plan) -> Tree:
    tree = Tree(f"[bold]{plan.project}[/] stack [bold green]{plan.stack}[/]")
    nodes = {plan.root(): tree}
    for r in plan.resources:
        parent = nodes.get(r.parent or plan.root(), tree)
        nodes[r.urn] = parent.add(_label(r))
    return tree


def _value(v: object) -> str:
    if v == SECRET:
        return SECRET
    return v if isinstance(v, str) else json.dumps(v)


NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Run the program even if a cached Plan fits.")
]


@app.command()
def plan(
    stack: Annotated[str, typer.Argument(help=STACK_HELP, show_default=False)],
    fmt: Annotated[
        PlanFormat,
        typer.Option(
            "--format",
            "-f",
            help="text: a tree of components and resources, counts by type and the stack "
            "outputs. json: the whole Plan ({stack, project, resources[{urn, type, name, parent, "
            "provider, inputs, dependencies, protect, ...}], outputs}) for tools and diffs. "
            "mermaid, dot: a picture of the components and key resources with their dependencies.",
        ),
    ] = PlanFormat.text,
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="With mermaid or dot: every resource, plumbing (routes, rules, attachments) too.",
        ),
    ] = False,
    no_cache: NoCache = False,
) -> None:
    """Show what a stack would deploy, offline.

    Runs the real Pulumi program (infra/) under the offline engine with the stack's settings and
    prints every resource it registers: types and input names exactly as `pulumi preview --json`
    writes them, secrets masked as \\[secret].

    Examples:

      backbone plan dev

      backbone plan prod --format json > prod.plan.json

      backbone plan ./stacks/Pulumi.free-tier.yaml

      backbone plan dev --format mermaid > dev.mmd
    """
    result = load_plan(stack, use_cache=False if no_cache else None)
    if fmt in (PlanFormat.mermaid, PlanFormat.dot):
        from backbone import graph

        draw = graph.mermaid if fmt is PlanFormat.mermaid else graph.dot
        sys.stdout.write(draw(result, everything=everything))
        return
    if fmt is PlanFormat.json:
        sys.stdout.write(result.dumps() + "\n")
        # stdout stays the Plan alone: the verdicts go to stderr
        verdicts(result, err, stack)
        return
    _print_plan(result, stack)


def _print_plan(result: Plan, stack: str) -> None:
    """`backbone plan`'s text: the tree, the counts by type, the outputs, the verdicts and, last
    whatever the verdicts, what the stack costs a month (backbone cost)."""
    out.print(render_tree(result))
    out.print(_counts_table(result))
    if result.outputs:
        out.print(_outputs_table(result))
    try:
        verdicts(result, out, stack)
    finally:
        from backbone.cost import summary

        out.print(summary(result), markup=False, highlight=False)


def _counts_table(plan: Plan) -> Table:
    counts = plan.counts()
    table = Table(title=f"{sum(counts.values())} resources by type", title_justify="left")
    table.add_column("type")
    table.add_column("count", justify="right")
    for type_token, n in sorted(counts.items()):
        table.add_row(type_token, str(n))
    return table


def _outputs_table(plan: Plan) -> Table:
    outputs = Table(
        title="stack outputs (offline: ids, ARNs and endpoints are the offline engine's "
        "placeholders, account 123456789012)",
        title_justify="left",
    )
    outputs.add_column("name")
    outputs.add_column("value", overflow="fold")
    for name, value in sorted(plan.outputs.items()):
        outputs.add_row(name, Text(_value(value)))
    return outputs


def verdicts(result: Plan, console: Console, stack: str) -> None:
    """The end of `backbone plan`: AWS's published constraints over every value, one line, and
    one line per violation (exit status 1 when any is broken); then the policy pack's verdict in
    one line (`backbone check` has the details)."""
    from backbone.awsrules import check_plan
    from backbone.check import policy_verdict

    report = check_plan(result)
    console.print(report.summary(), markup=False)
    for finding in report.findings:
        console.print(f"  {finding.level}: {finding.line()}", markup=False)
    cfg = stack_config(stack)
    verdict = policy_verdict(result, cfg, aws=report)  # AWS's constraints checked once
    console.print(f"{verdict.line()} (details: backbone check {stack})", markup=False)
    for warning in cfg.monitoring.warnings():
        console.print(f"warning: {warning}", markup=False)
    if report.violations:
        raise typer.Exit(1)


def stack_config(stack: str) -> StackConfig:
    """The stack's validated settings (infra.config.StackConfig), loaded as synth loads them."""
    from backbone.synth import load_config, resolve

    return load_config(resolve(stack))


# --------------------------------------------------------------------------------------------
# check


@app.command()
def check(
    stack: Annotated[str, typer.Argument(help=STACK_HELP, show_default=False)],
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="text: violations grouped by resource, with rule, level and fix. json: "
            "{stack, passed, rules, violations[{rule, level, resource, urn, type, message, fix}], "
            "scanned, notes}.",
        ),
    ] = Format.text,
    scan: Annotated[
        bool,
        typer.Option(
            "--scan/--no-scan",
            help="Also run checkov over the stack's Kubernetes manifests and app/Dockerfile.",
        ),
    ] = True,
) -> None:
    """Check a stack against the policy pack, offline; exit status 1 on a mandatory violation.

    Runs every rule of policies/rules.py (the pack `pulumi preview --policy-pack policies`
    loads) over the Plan: data, network, compute, identity, hygiene (AWS's published
    constraints first), transport and cost. A stack with `backbone:tier: production` is held to
    the production rules; `backbone:policies` sets a rule mandatory, advisory or disabled. With
    --scan (the default) checkov scans the rendered Kubernetes manifests and app/Dockerfile and
    its failed checks are reported the same way.

    Examples:

      backbone check prod

      backbone check dev --format json --no-scan
    """
    from backbone.check import checkov_violations, policy_verdict

    result = load_plan(stack)
    verdict = policy_verdict(result, stack_config(stack))
    if scan:
        try:
            checkov_violations(result, verdict)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
            verdict.notes.append(f"checkov could not run: {exc}")
    if fmt is Format.json:
        sys.stdout.write(json.dumps(verdict.to_json(), indent=2) + "\n")
    else:
        _print_verdict(verdict)
    if not verdict.passed:
        raise typer.Exit(1)


def _print_verdict(verdict: Verdict) -> None:
    """`backbone check`'s text: violations grouped by resource, notes on stderr, the verdict."""
    by_resource: dict[str, list[Violation]] = {}
    for v in verdict.violations:
        by_resource.setdefault(f"{v.resource} ({v.type})", []).append(v)
    for where, found in by_resource.items():
        out.print(where, markup=False)
        for v in found:
            out.print(f"  [{v.level}] {v.rule}: {v.message}", markup=False)
            out.print(f"      fix: {v.fix}", markup=False)
    for note in verdict.notes:
        err.print(f"note: {note}", markup=False)
    scanned = f"; checkov scanned {', '.join(verdict.scanned)}" if verdict.scanned else ""
    out.print(verdict.line() + scanned, markup=False)


@app.command()
def settings() -> None:
    """List every stack setting: its key, default and meaning (Markdown).

    Settings live under `backbone:` in stacks/Pulumi.<stack>.yaml, plus the provider's own
    `aws:region`. Unknown keys are errors.

    Example:

      backbone settings
    """
    from infra.config import docs

    sys.stdout.write(docs() + "\n")


# --------------------------------------------------------------------------------------------
# cost


class CostFormat(enum.StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


class FreeTier(enum.StrEnum):
    twelve_month = "12-month"
    free_plan = "free-plan"
    none = "none"


@app.command()
def cost(
    stack: Annotated[str, typer.Argument(help=STACK_HELP, show_default=False)],
    fmt: Annotated[
        CostFormat,
        typer.Option(
            "--format",
            "-f",
            help="text: a table per component, the total, what is not priced. json: every line "
            "with its price, source and date. markdown: the same for a pull request or a note.",
        ),
    ] = CostFormat.text,
    free_tier: Annotated[
        FreeTier | None,
        typer.Option(
            "--free-tier",
            help="12-month: the 12-month offers (accounts opened before 2025-07-15). free-plan: "
            "the credit-based Free plan (how many months the credits last). none: no free tier. "
            "Always-free allowances apply in every case. Default: the stack's backbone:freeTier.",
            show_default=False,
        ),
    ] = None,
    usage: Annotated[
        str | None,
        typer.Option(
            "--usage",
            help="A YAML file replacing default usage assumptions (backbone/data/usage.yaml: "
            "NAT data, load balancer capacity, run times, log volume...), key by key.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Estimate what a stack costs a month on AWS, offline.

    Prices every resource of the stack's Plan from the price table (backbone/data/prices.yaml,
    us-east-1, a source and date per figure): hourly resources by their hours (730 a month),
    storage by its size, every public IPv4 address, request-priced resources from documented
    usage. The free tier is applied once for the account. Anything it cannot price is listed,
    never counted as zero. Exit status 1 when the estimate is over the stack's backbone:budget.

    Examples:

      backbone cost dev

      backbone cost free-tier --free-tier free-plan

      backbone cost prod --format markdown --usage my-usage.yaml
    """
    result = load_plan(stack)
    _emit_estimate(_priced(result, free_tier, usage), fmt, result.stack)


def _emit_estimate(est: Estimate, fmt: CostFormat, stack: str) -> None:
    """The estimate in the format asked for; exit status 1 when it is over the budget."""
    from backbone.cost import render_markdown, render_text

    if fmt is CostFormat.json:
        sys.stdout.write(est.dumps() + "\n")
    elif fmt is CostFormat.markdown:
        sys.stdout.write(render_markdown(est))
    else:
        render_text(est, out)
    if est.over_budget:
        err.print(
            f"over budget: {est.total_usd:,.2f} USD a month is more than stack {stack!r}'s "
            f"backbone:budget of {est.budget:,.2f} USD",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)


def _priced(plan: Plan, free_tier: FreeTier | None, usage: str | None) -> Estimate:
    """The Plan's monthly estimate (backbone.cost) under the options; a CostError is bad input."""
    from pathlib import Path

    from backbone.cost import CostError, estimate

    try:
        return estimate(
            plan,
            free_tier=free_tier.value if free_tier else None,
            usage=Path(usage) if usage else None,
        )
    except CostError as exc:
        fail(str(exc))


@app.command()
def manifests(
    stack: Annotated[str, typer.Argument(help=STACK_HELP, show_default=False)],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Folder to write into (created if missing), or - for one multi-document YAML "
            "stream on stdout.",
            show_default=False,
        ),
    ],
) -> None:
    """Write every Kubernetes object of a stack as YAML, Secret values redacted.

    One file per object, NN-<kind>-<name>.yaml, numbered in apply order (Namespace first), for
    GitOps repositories and scanners. Secret data is written as \\[redacted], never as a value.
    Exit status 2 when the stack has no Kubernetes objects or the folder cannot be written.

    Examples:

      backbone manifests dev -o build/manifests/dev

      checkov -d build/manifests/dev --framework kubernetes

      backbone manifests prod -o - | less
    """
    from pathlib import Path

    from backbone.manifests import ManifestError, nothing_to_write, render, stream, write

    result = load_plan(stack)
    if output == "-":
        objects = render(result)
        if not objects:
            fail(nothing_to_write(result))
        sys.stdout.write(stream(result, objects))
        return
    try:
        written, stale = write(result, Path(output))
    except ManifestError as exc:
        fail(str(exc))
    for path in written:
        out.print(str(path), markup=False)
    err.print(f"{len(written)} objects of stack {result.stack!r} written to {output}", markup=False)
    if stale:
        err.print(
            f"warning: {len(stale)} older file(s) in {output} were not written now and may be "
            f"stale: {', '.join(p.name for p in stale)}",
            markup=False,
        )


@app.command()
def dashboards(
    stack: Annotated[str, typer.Argument(help=STACK_HELP, show_default=False)],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Folder to write into (created if missing).", show_default=False
        ),
    ],
) -> None:
    """Write the Grafana dashboards and the Prometheus and Alertmanager files of a stack.

    dashboards/*.json (Grafana dashboards built with grafana-foundation-sdk; a `datasource`
    variable picks the Prometheus: Amazon Managed Grafana's workspace data source or a local
    one), prometheus/backbone.rules.yml (the kit's rules at the stack's thresholds),
    prometheus/scrape.yml, alertmanager/alertmanager.yml (AWS stacks) and a Grafana dashboard
    provider. Exit status 2 when the folder cannot be written.

    Examples:

      backbone dashboards dev -o build/observability/dev

      promtool check rules build/observability/dev/prometheus/backbone.rules.yml
    """
    from pathlib import Path

    from backbone.dashboards import write as write_dashboards
    from backbone.synth import StackNotFound, load_config, resolve
    from infra.config import ConfigError

    try:
        cfg = load_config(resolve(stack))
    except ConfigError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    except StackNotFound as exc:
        fail(str(exc))
    try:
        written = write_dashboards(cfg, Path(output))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    for path in written:
        out.print(str(path), markup=False)
    err.print(f"{len(written)} files of stack {stack!r} written to {output}", markup=False)


# --------------------------------------------------------------------------------------------
# day two: verify a deployed stack, bootstrap a state backend (boto3; AWS_ENDPOINT_URL works)

PROFILE_HELP = "AWS profile from ~/.aws/config (default: AWS_PROFILE, or boto3's default chain)."
Profile = Annotated[str | None, typer.Option(help=PROFILE_HELP, show_default=False)]

# verify's arguments
DeployedStack = Annotated[
    str, typer.Argument(help="The deployed stack's name, as `pulumi stack` knows it.")
]
OutputsFile = Annotated[
    str | None,
    typer.Option(
        "--outputs",
        help="A JSON file of the stack's outputs (`pulumi stack output --json "
        "--show-secrets -s STACK > FILE`). Without it the pulumi CLI on PATH is asked.",
        show_default=False,
    ),
]
Wait = Annotated[
    str,
    typer.Option(
        help="Keep checking until every check passes or this much time has passed "
        "(e.g. 10m, 90s, 1h); 0 checks once."
    ),
]
Interval = Annotated[str, typer.Option(help="Pause between rounds of checks while waiting.")]
Timeout = Annotated[
    str, typer.Option(help="Timeout of each HTTP request to the app (3 attempts each).")
]
ReadPath = Annotated[
    str, typer.Option(help="The app's read request (2xx or 404 count as an answer).")
]
StackRegion = Annotated[
    str | None,
    typer.Option(help="AWS region (default: the stack's `region` output).", show_default=False),
]


@app.command()
def verify(
    stack: DeployedStack,
    outputs: OutputsFile = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="text: a checklist. json: for tools.")
    ] = Format.text,
    wait: Wait = "0",
    interval: Interval = "15s",
    timeout: Timeout = "10s",
    read_path: ReadPath = "/api/links/backbone-canary",
    region: StackRegion = None,
    profile: Profile = None,
) -> None:
    """Check that a deployed stack really works, with boto3 and HTTP.

    The load balancer is active and its targets healthy; the database available, encrypted,
    private, backed up (and Multi-AZ where the stack says so); the cluster and node group
    ACTIVE, or the free-tier host running with status checks ok; each function there with no
    errors in its last invocations, and a dry invocation of the canary accepted; no alarm of
    the stack in ALARM; the app's /healthz, /readyz and one read answer through the load
    balancer. Exit status 1 when a check fails, 2 for bad input.

    Examples:

      backbone verify dev

      backbone verify prod --wait 15m

      backbone verify dev --outputs dev.outputs.json --format json
    """
    from backbone.verify import render_text

    report = _verified(
        stack,
        outputs,
        wait=wait,
        interval=interval,
        timeout=timeout,
        read_path=read_path,
        region=region,
        profile=profile,
    )
    if fmt is Format.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        render_text(report, out)
    raise typer.Exit(0 if report.ok else 1)


def _verified(
    stack: str,
    outputs: str | None,
    *,
    wait: str,
    interval: str,
    timeout: str,
    read_path: str,
    region: str | None,
    profile: str | None,
) -> VerifyReport:
    """verify's checks (backbone.verify) with the options as given; bad input, and the caller's
    AWS setup (no credentials, unknown profile, no region), are exit status 2."""
    from pathlib import Path

    from backbone.awsapi import AwsError
    from backbone.verify import BadInput, Settings, check_stack_name, parse_duration
    from backbone.verify import verify as run_verify

    try:
        check_stack_name(stack)
        if not read_path.startswith("/") or any(ch.isspace() for ch in read_path):
            raise BadInput(f"--read-path {read_path!r} must be a path starting with /")
        settings = Settings(
            stack=stack,
            read_path=read_path,
            http_timeout=parse_duration(timeout, "--timeout") or 10.0,
        )
        return run_verify(
            stack,
            outputs_file=Path(outputs) if outputs is not None else None,
            wait=parse_duration(wait, "--wait"),
            interval=parse_duration(interval, "--interval"),
            settings=settings,
            region=region,
            profile=profile,
            progress_console=err,
        )
    except (BadInput, AwsError) as exc:
        fail(str(exc))


@app.command()
def bootstrap(
    bucket: Annotated[
        str,
        typer.Option(
            help="The state bucket's name (S3's rules: 3-63 lowercase letters, digits, dots, "
            "hyphens; unique across AWS).",
            show_default=False,
        ),
    ],
    region: Annotated[
        str | None,
        typer.Option(help="AWS region (default: AWS_REGION or the profile's).", show_default=False),
    ] = None,
    profile: Profile = None,
    key_alias: Annotated[
        str | None,
        typer.Option(
            help="Alias of the KMS key for the bucket and Pulumi's secrets "
            "(default: alias/backbone-state-BUCKET).",
            show_default=False,
        ),
    ] = None,
    adopt: Annotated[
        bool,
        typer.Option(
            "--adopt", help="Take over a bucket or key that backbone bootstrap did not create."
        ),
    ] = False,
    stack: Annotated[
        str, typer.Option(help="Stack name for the printed `pulumi stack init` line.")
    ] = "dev",
) -> None:
    """Create a self-managed Pulumi state backend: an S3 bucket and a KMS key.

    The bucket gets versioning, default encryption with the KMS key (SSE-KMS), all public
    access blocked and a policy refusing requests without TLS; the key has rotation on and an
    alias for Pulumi's secrets provider. Both are tagged as the kit's. A second run changes
    nothing and says so; a bucket or key the kit did not create is refused unless --adopt;
    nothing is ever deleted. Prints the `pulumi login` and `pulumi stack init` lines to use.
    Exit status 1 when AWS refuses or the bucket is not the kit's, 2 for bad input.

    Examples:

      backbone bootstrap --bucket acme-pulumi-state --region eu-west-1

      AWS_PROFILE=admin backbone bootstrap --bucket acme-pulumi-state --stack prod
    """
    from backbone.bootstrap import render

    result = _bootstrapped(bucket, key_alias, stack, region=region, profile=profile, adopt=adopt)
    render(result, stack, out)


def _bootstrapped(
    bucket: str,
    key_alias: str | None,
    stack: str,
    *,
    region: str | None,
    profile: str | None,
    adopt: bool,
) -> BootstrapResult:
    """The names checked, then the backend made or put right (backbone.bootstrap): bad input
    is exit status 2, a refusal 1, AWS's error 2 when it is the caller's setup and 1 otherwise."""
    from backbone import bootstrap as bs
    from backbone.awsapi import AwsError, connect
    from backbone.verify import BadInput as VerifyBadInput
    from backbone.verify import check_stack_name

    try:
        bs.check_bucket_name(bucket)
        alias = bs.check_alias(key_alias) if key_alias is not None else bs.default_alias(bucket)
        check_stack_name(stack)
        return bs.bootstrap(connect(profile, region), bucket, alias, adopt=adopt)
    except (bs.BadInput, VerifyBadInput) as exc:
        fail(str(exc))
    except bs.Refused as exc:
        fail(str(exc), code=1)
    except AwsError as exc:
        fail(str(exc), code=2 if exc.setup else 1)


# --------------------------------------------------------------------------------------------
# report and diff: what a change does, from a real preview or from two offline plans


class ReviewFormat(enum.StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


class FailOn(enum.StrEnum):
    danger = "danger"
    replace_ = "replace"
    delete = "delete"
    any = "any"


FAIL_ON_HELP = (
    "Exit status 1 when the change holds: danger (a stateful or protected resource deleted or "
    "replaced), replace (a replace or a delete), delete (a delete), any (any change at all)."
)
REVIEW_FORMAT_HELP = (
    "text: coloured, for a terminal. markdown: a pull-request comment (collapsible detail, "
    "trimmed to GitHub's 65,536 characters, the summary and the DANGER block always kept). "
    "json: the Review as data, the danger list its own field."
)
MAX_CHARS_HELP = "With markdown: the most characters the comment may have (GitHub's limit)."
ReviewFormatOption = Annotated[
    ReviewFormat, typer.Option("--format", "-f", help=REVIEW_FORMAT_HELP)
]
FailOnOption = Annotated[
    FailOn | None, typer.Option("--fail-on", help=FAIL_ON_HELP, show_default=False)
]
MaxChars = Annotated[int, typer.Option("--max-chars", min=4_000, help=MAX_CHARS_HELP)]


def _cost_change(base: Plan | None, head: Plan) -> CostChange | None:
    """The monthly estimate's change (backbone.cost), or None when it cannot be priced."""
    from backbone.cost import CostError, estimate
    from backbone.review import CostChange

    try:
        after = estimate(head).total_usd
        before = estimate(base).total_usd if base is not None else None
    except CostError as exc:
        err.print(f"note: no cost line: {exc}", markup=False, highlight=False)
        return None
    return CostChange(base_usd=before, head_usd=after)


def _emit_review(
    review: Review, fmt: ReviewFormat, fail_on: FailOn | None, max_chars: int = 65_536
) -> None:
    from backbone import render

    if fmt is ReviewFormat.json:
        sys.stdout.write(render.to_json(review))
    elif fmt is ReviewFormat.markdown:
        sys.stdout.write(render.markdown(review, limit=max_chars))
    else:
        render.terminal(review, out)
    if fail_on is not None and review.fails(fail_on.value):
        err.print(
            f"--fail-on {fail_on.value}: the change holds {fail_on.value}"
            + (
                f" ({len(review.danger())} in the DANGER block)"
                if fail_on.value == "danger"
                else ""
            ),
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)


@app.command()
def report(
    file: Annotated[
        str,
        typer.Argument(
            help="`pulumi preview --json` output, the one-line `--output json` summary, or an "
            "`--event-log` file (policy violations are only there); - for stdin.",
            show_default=False,
        ),
    ],
    fmt: ReviewFormatOption = ReviewFormat.text,
    fail_on: FailOnOption = None,
    stack: Annotated[
        str | None,
        typer.Option(
            "--stack",
            help="Add the stack's estimated monthly cost (its offline Plan priced by backbone "
            "cost) to the report.",
            show_default=False,
        ),
    ] = None,
    max_chars: MaxChars = 65_536,
) -> None:
    """Review a real preview: a summary, the DANGER block, changes by component.

    The summary counts changes by operation; the DANGER block lists every delete or replace of a
    stateful resource (databases, clusters, volumes, buckets, registries, keys, secrets, log
    groups, Kubernetes Namespaces and volume claims) or of anything protected, each with why it
    is replaced; then each component's changes with their property diffs (secrets as \\[secret],
    unknown values as "known after apply").

    Examples:

      pulumi preview --json -s dev > preview.json && backbone report preview.json

      backbone report preview.json --format markdown --fail-on danger > comment.md

      pulumi preview -s prod --event-log events.jsonl && backbone report events.jsonl
    """
    from pathlib import Path

    from backbone.review import ReviewError, load

    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        fail(f"{file}: cannot read it ({exc.strerror})")
    except UnicodeDecodeError:
        fail(f"{file}: not a text file; expected a JSON preview or event log")
    try:
        review = load(text, "stdin" if file == "-" else file)
    except ReviewError as exc:
        fail(str(exc))
    if stack is not None:
        review.cost = _cost_change(None, load_plan(stack))
    _emit_review(review, fmt, fail_on, max_chars)


@app.command()
def diff(
    stack: Annotated[str, typer.Argument(help=STACK_HELP, show_default=False)],
    other: Annotated[
        str | None,
        typer.Argument(
            help="A second stack: show how STACK_B differs from STACK (dev vs prod).",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="A git revision (branch, tag, sha, HEAD~1): plan the stack there, in a "
            "temporary worktree, and compare it with the working tree. Default: HEAD.",
            show_default=False,
        ),
    ] = None,
    fmt: ReviewFormatOption = ReviewFormat.text,
    fail_on: FailOnOption = None,
    no_cache: NoCache = False,
    max_chars: MaxChars = 65_536,
) -> None:
    """The same review as `report`, offline: a stack at a git revision against the working
    tree, or two stacks against each other.

    A change the cloud can only make by replacing the resource (a database identifier or
    engine, an EKS cluster's name or subnets, a lower version, ...) is shown as a replace; the
    list is data with a source per entry (backbone/replacements.yaml).

    Examples:

      backbone diff dev --base main

      backbone diff dev --base HEAD~1 --format markdown

      backbone diff dev prod
    """
    from backbone.review import from_plans

    if other is not None and base is not None:
        fail("give either a second stack (backbone diff dev prod) or --base REV, not both")
    before, after, labels = _diff_sides(stack, other, base, False if no_cache else None)
    review = from_plans(before, after, base_label=labels[0], head_label=labels[1])
    review.cost = _cost_change(before, after)
    _emit_review(review, fmt, fail_on, max_chars)


def _diff_sides(
    stack: str, other: str | None, base: str | None, use: bool | None
) -> tuple[Plan, Plan, tuple[str, str]]:
    """The two plans diff compares and their labels: STACK and STACK_B, or STACK at the
    revision (default HEAD) and in the working tree."""
    from backbone.synth import StackNotFound, find_project
    from backbone.worktree import RevisionError, plan_at

    if other is not None:
        before, after = load_plan(stack, use), load_plan(other, use)
        return before, after, (f"stack {before.stack}", f"stack {after.stack}")
    rev = base or "HEAD"
    after = load_plan(stack, use)
    try:
        before = plan_at(
            rev, stack, find_project(), use_cache=_CACHE["use"] if use is None else use
        )
    except (RevisionError, StackNotFound) as exc:
        fail(str(exc))
    return before, after, (f"{rev}", "working tree")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
