"""Renderers of a Review: the terminal (rich, coloured), Markdown for a pull-request comment
(trimmed to GitHub's 65,536 characters, the summary and the DANGER block always kept), JSON."""

from __future__ import annotations

import json

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from backbone.review import Change, PropertyDiff, Review, describe

GITHUB_LIMIT = 65_536
MARKER = "<!-- backbone-review -->"  # CI finds its own comment by this and edits it in place

SYMBOL = {
    "create": "+",
    "update": "~",
    "replace": "+-",
    "delete": "-",
    "import": "=",
    "read": ">",
    "refresh": "~",
    "discard": "<",
    "other": "?",
}
STYLE = {
    "create": "green",
    "update": "yellow",
    "replace": "bold magenta",
    "delete": "bold red",
    "import": "cyan",
    "read": "cyan",
    "refresh": "cyan",
    "discard": "dim",
    "other": "bold yellow",
}


def to_json(review: Review) -> str:
    return json.dumps(review.to_json(), indent=2, default=str) + "\n"


# --------------------------------------------------------------------------------------------
# terminal


def _label(c: Change) -> str:
    op = c.action if c.action != "other" else "/".join(c.ops)
    flags = " [yellow](protected)[/]" if c.protect else ""
    return (
        f"[{STYLE[c.action]}]{SYMBOL[c.action]} {op:<7}[/] {escape(c.type)} "
        f"[bold]{escape(c.name)}[/]{flags}"
    )


def _prop_line(p: PropertyDiff) -> Text:
    style = "magenta" if p.forces_replace else "dim"
    return Text("      " + describe(p).replace("`", ""), style=style)


def terminal(review: Review, console: Console) -> None:
    title = "backbone review" + (f": {review.stack}" if review.stack else "")
    if review.title:
        title += f" ({review.title})"
    console.print(Text(title, style="bold"))
    console.print(Text(f"{review.source}: {review.summary()}"))
    danger = review.danger()
    if danger:
        items = []
        for c in danger:
            items.append(Text.from_markup(_label(c) + f"  [dim]in {escape(c.component_label)}[/]"))
            for reason in c.danger_reasons():
                items.append(Text("      " + reason, style="red"))
            for why in c.why():
                items.append(Text("      why: " + why.replace("`", ""), style="magenta"))
        console.print(
            Panel(
                Group(*items),
                title=f"DANGER: {len(danger)} stateful or protected resource(s) deleted or replaced",
                border_style="red",
                title_align="left",
            )
        )
    if review.violations:
        console.print(Text(f"policy violations ({len(review.violations)})", style="bold red"))
        for v in review.violations:
            console.print(
                Text(f"  [{v.enforcement or '?'}] {v.policy} on {v.resource}: {v.message}")
            )
    for d in review.diagnostics:
        console.print(Text("  " + d, style="red" if d.startswith("error") else "yellow"))
    if review.cost:
        console.print(Text(f"cost: {review.cost.line()}", style="bold"))
    for label, changes in review.groups():
        console.print(Text(f"\n{label}", style="bold underline"))
        for c in changes:
            console.print(Text.from_markup("  " + _label(c)))
            for p in c.properties:
                console.print(_prop_line(p))
    for note in review.notes:
        console.print(Text(f"\nnote: {note}", style="dim"))


# --------------------------------------------------------------------------------------------
# markdown


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _md(text: str) -> str:
    """Backticked names from describe() kept, HTML-ish characters made inert."""
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("-&gt;", "→")


def _danger_item(c: Change, compact: bool) -> str:
    head = f"- **{c.action}** {_code(c.name)} ({_code(c.type)}, in {c.component_label})"
    if compact:
        why = c.why()
        return head + (f": {_md(why[0])}" if why else "") + "\n"
    lines = [head + "  "]
    lines += [f"  - {_md(r)}" for r in c.danger_reasons()]
    lines += [f"  - why: {_md(w)}" for w in c.why()]
    return "\n".join(lines) + "\n"


def _header(review: Review, budget: int) -> str:
    title = "### backbone review" + (f": {_code(review.stack)}" if review.stack else "")
    if review.title:
        title += f" ({review.title})"
    parts = [MARKER, title, "", f"**{review.summary()}** ({review.source})", ""]
    danger = review.danger()
    if danger:
        parts.append(
            f"#### ⛔ DANGER: {len(danger)} stateful or protected resource(s) deleted or replaced"
        )
        full = [_danger_item(c, False) for c in danger]
        if sum(map(len, full)) > budget // 2:
            full = [_danger_item(c, True) for c in danger]
        used, kept = 0, list[str]()
        for item in full:
            if used + len(item) > budget // 2:
                kept.append(
                    f"- … and {len(danger) - len(kept)} more (the JSON report lists them all)\n"
                )
                break
            kept.append(item)
            used += len(item)
        parts.append("".join(kept))
    if review.violations:
        parts.append(f"#### Policy violations ({len(review.violations)})")
        parts += [
            f"- **{v.enforcement or '?'}** {_code(v.policy)} on {_code(v.resource)}: {_md(v.message)}"
            for v in review.violations[:50]
        ]
        if len(review.violations) > 50:
            parts.append(f"- … and {len(review.violations) - 50} more")
        parts.append("")
    if review.diagnostics:
        parts.append("#### Diagnostics")
        parts += [f"- {_md(d[:500])}" for d in review.diagnostics[:20]] + [""]
    if review.cost:
        parts += [f"**Cost**: {review.cost.line()}", ""]
    return "\n".join(parts) + "\n"


def _change_lines(c: Change) -> list[str]:
    op = c.action if c.action != "other" else "/".join(c.ops)
    flag = " (protected)" if c.protect else ""
    marker = {"create": "+", "delete": "-", "replace": "-", "update": "!"}.get(c.action, "#")
    lines = [f"{marker} {op:<7} {c.type} {c.name}{flag}"]
    lines += ["    " + describe(p).replace("`", "") for p in c.properties]
    return lines


def _group_block(label: str, changes: list[Change], budget: int) -> tuple[str, int]:
    """A collapsible block of one component; as many changes as fit `budget`."""
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in counts.items())
    head = f"<details><summary><b>{_md(label)}</b>: {summary}</summary>\n\n```diff\n"
    tail = "```\n</details>\n\n"
    body: list[str] = []
    size = len(head) + len(tail)
    shown = 0
    for c in changes:
        lines = "\n".join(_change_lines(c)).replace("```", "'''") + "\n"
        if size + len(lines) > budget:
            break
        body.append(lines)
        size += len(lines)
        shown += 1
    if shown < len(changes):
        more = f"# … {len(changes) - shown} more change(s) in {label} not shown\n"
        body.append(more)
    return head + "".join(body) + tail, shown


def markdown(review: Review, limit: int = GITHUB_LIMIT) -> str:
    """The review as a pull-request comment of at most `limit` characters. The summary, the
    DANGER block, policy violations and cost always come first and stay; the per-component
    detail is trimmed from the end to fit."""
    header = _header(review, limit - 2_000)
    notes = "".join(f"<sub>{_md(n)}</sub>\n\n" for n in review.notes)
    trim_note_reserve = 300
    budget = limit - len(header) - len(notes) - trim_note_reserve
    blocks: list[str] = []
    shown = 0
    total = len(review.changes)
    for label, changes in review.groups():
        if budget <= 200:
            break
        block, n = _group_block(label, changes, budget)
        if n == 0:
            break
        blocks.append(block)
        budget -= len(block)
        shown += n
    trimmed = ""
    if shown < total:
        trimmed = (
            f"**Trimmed to fit a GitHub comment**: {total - shown} of {total} changes are not "
            "shown here; `backbone report FILE` prints them all.\n\n"
        )
    details = "#### Changes by component\n\n" if review.changes else ""
    text = header + details + "".join(blocks) + trimmed + notes
    if len(text) > limit:  # only if the header alone is over: never cut the summary
        text = text[: limit - 1] + "…"
    return text
