"""The `backbone` command: plan and inspect the kit's stacks offline.

Every command reads a Plan made by the offline engine (backbone.synth): the real Pulumi program,
run in-process under mocks. No cloud account, no credentials, no Pulumi CLI, no network.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from backbone.plan import SECRET, Plan, Resource

STACK_HELP = (
    "A stack name (local, free-tier, dev, prod: read from the stacks/ folder of the project found "
    "from the current directory upward, as the pulumi CLI finds Pulumi.yaml) or the path of a "
    "stack settings file such as stacks/Pulumi.dev.yaml."
)

app = typer.Typer(
    name="backbone",
    help=(
        "Plan and review the backbone Pulumi stacks offline, and write their Kubernetes manifests: no cloud account, "
        "no credentials, no Pulumi CLI.\n\n"
        "Example: backbone plan dev"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Plan and review the backbone Pulumi stacks offline, and write their Kubernetes manifests:
    no cloud account, no credentials, no Pulumi CLI.

    Example: backbone plan dev
    """


# Piped or redirected output is not cut to 80 columns: a plan in a file keeps every name whole.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 240
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(enum.StrEnum):
    text = "text"
    json = "json"


def fail(message: str, code: int = 2) -> NoReturn:
    """A user error: the message on stderr, no traceback, exit status 2."""
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def load_plan(stack: str) -> Plan:
    """Synthesise a stack, turning every user error into a clear message and exit status 2."""
    import pulumi

    from backbone.synth import StackNotFound, synth
    from infra.config import ConfigError

    try:
        return synth(stack)
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


@app.command()
def plan(
    stack: Annotated[str, typer.Argument(help=STACK_HELP, show_default=False)],
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="text: a tree of components and resources, counts by type and the stack "
            "outputs. json: the whole Plan ({stack, project, resources[{urn, type, name, parent, "
            "provider, inputs, dependencies, protect, ...}], outputs}) for tools and diffs.",
        ),
    ] = Format.text,
) -> None:
    """Show what a stack would deploy, offline.

    Runs the real Pulumi program (infra/) under the offline engine with the stack's settings and
    prints every resource it registers: types and input names exactly as `pulumi preview --json`
    writes them, secrets masked as \\[secret].

    Examples:

      backbone plan dev

      backbone plan prod --format json > prod.plan.json

      backbone plan ./stacks/Pulumi.free-tier.yaml
    """
    result = load_plan(stack)
    if fmt is Format.json:
        sys.stdout.write(result.dumps() + "\n")
        # stdout stays the Plan alone: the verdicts go to stderr
        verdicts(result, err)
        return
    out.print(render_tree(result))
    counts = result.counts()
    table = Table(title=f"{sum(counts.values())} resources by type", title_justify="left")
    table.add_column("type")
    table.add_column("count", justify="right")
    for type_token, n in sorted(counts.items()):
        table.add_row(type_token, str(n))
    out.print(table)
    if result.outputs:
        outputs = Table(
            title="stack outputs (offline: ids, ARNs and endpoints are the offline engine's "
            "placeholders, account 123456789012)",
            title_justify="left",
        )
        outputs.add_column("name")
        outputs.add_column("value", overflow="fold")
        for name, value in sorted(result.outputs.items()):
            outputs.add_row(name, Text(_value(value)))
        out.print(outputs)
    try:
        verdicts(result, out)
    finally:
        # The last line, whatever the verdicts: what the stack costs a month (backbone cost).
        from backbone.cost import summary

        out.print(summary(result), markup=False, highlight=False)


def verdicts(result: Plan, console: Console) -> None:
    """The end of `backbone plan`: AWS's published constraints over every value, one line, and
    one line per violation; exit status 1 when any is broken."""
    from backbone.awsrules import check_plan

    report = check_plan(result)
    console.print(report.summary(), markup=False)
    for finding in report.findings:
        console.print(f"  {finding.level}: {finding.line()}", markup=False)
    if report.violations:
        raise typer.Exit(1)


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
    from pathlib import Path

    from backbone.cost import CostError, estimate, render_markdown, render_text

    result = load_plan(stack)
    try:
        est = estimate(
            result,
            free_tier=free_tier.value if free_tier else None,
            usage=Path(usage) if usage else None,
        )
    except CostError as exc:
        fail(str(exc))
    if fmt is CostFormat.json:
        sys.stdout.write(est.dumps() + "\n")
    elif fmt is CostFormat.markdown:
        sys.stdout.write(render_markdown(est))
    else:
        render_text(est, out)
    if est.over_budget:
        err.print(
            f"over budget: {est.total_usd:,.2f} USD a month is more than stack {result.stack!r}'s "
            f"backbone:budget of {est.budget:,.2f} USD",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
