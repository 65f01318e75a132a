"""A Review: what a change really does, from a real preview or from two offline Plans.

One model, four ways in:
- ``pulumi preview --json`` (steps with oldState/newState, detailedDiff, replaceReasons, diffReasons),
- the one-line ``pulumi preview --output json`` summary ({result, summary, resources[{urn, op, diff}]}),
- an ``--event-log`` stream (one engine event a line; policy violations live only here),
- two Plans from the offline engine (``backbone diff``), where the replace-on-change data
  (replacements.yaml) stands in for the provider.

The renderers (terminal, Markdown for a pull-request comment, JSON) live in backbone.render.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from backbone.plan import SECRET, STACK_TYPE, Plan, Resource

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
AFTER_APPLY = "known after apply"
SIG_KEY = "4dabf18193072939515e22adb298388d"
SIG_SECRET = "1b47061264138c4ac30d75fd1eb44270"
SIG_ASSET = "c44067f5952c0a294b673a41bacd8c17"
SIG_ARCHIVE = "0def7320c3a5731c473e5ecbe6d01bc7"

# What a step does, from the ops Pulumi writes (research/pulumi-formats.md). Steps of one URN are
# folded into one change; the strongest action wins.
ACTIONS = (
    "replace",
    "delete",
    "create",
    "update",
    "import",
    "read",
    "refresh",
    "discard",
    "other",
    "same",
)
OP_ACTION = {
    "same": "same",
    "create": "create",
    "update": "update",
    "delete": "delete",
    "replace": "replace",
    "create-replacement": "replace",
    "delete-replaced": "replace",
    "discard-replaced": "replace",
    "remove-pending-replace": "replace",
    "import-replacement": "replace",
    "read": "read",
    "read-replacement": "read",
    "refresh": "refresh",
    "discard": "discard",
    "import": "import",
}
DIFF_KINDS = ("add", "add-replace", "delete", "delete-replace", "update", "update-replace")
FAIL_ON = ("danger", "replace", "delete", "any")
DATA = Path(__file__).resolve().parent


class ReviewError(Exception):
    """Input that is not a Pulumi preview, summary or event log (exit status 2)."""


# --------------------------------------------------------------------------------------------
# data files


@cache
def stateful_types() -> dict[str, str]:
    """Type token -> why losing it hurts (backbone/stateful.yaml)."""
    data = yaml.safe_load((DATA / "stateful.yaml").read_text())
    return {str(k): str(v) for k, v in data["types"].items()}


@dataclass(frozen=True)
class ReplaceRule:
    replace: tuple[str, ...] = ()
    downgrade: tuple[str, ...] = ()
    any: bool = False
    source: str = ""
    downgrade_source: str = ""


@cache
def replacement_data() -> dict[str, Any]:
    return dict(yaml.safe_load((DATA / "replacements.yaml").read_text()))


def replace_rules(type_token: str) -> list[ReplaceRule]:
    """The replace-on-change rules for a type: its own entry and its package's (Kubernetes)."""
    data = replacement_data()
    rules = []
    for entry in (
        data.get("types", {}).get(type_token),
        data.get("packages", {}).get(type_token.split(":", 1)[0]),
    ):
        if entry:
            rules.append(
                ReplaceRule(
                    replace=tuple(entry.get("replace", ())),
                    downgrade=tuple(entry.get("downgrade", ())),
                    any=bool(entry.get("any", False)),
                    source=str(entry.get("source", "")),
                    downgrade_source=str(entry.get("downgradeSource", entry.get("source", ""))),
                )
            )
    return rules


# --------------------------------------------------------------------------------------------
# the model


@dataclass
class PropertyDiff:
    path: str
    kind: str
    old: Any = None
    new: Any = None
    has_old: bool = False
    has_new: bool = False
    note: str = ""

    @property
    def forces_replace(self) -> bool:
        return self.kind.endswith("-replace")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind}
        if self.has_old:
            out["old"] = self.old
        if self.has_new:
            out["new"] = self.new
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Change:
    urn: str
    type: str
    name: str
    action: str
    ops: list[str] = field(default_factory=list)
    component: list[str] = field(default_factory=list)
    properties: list[PropertyDiff] = field(default_factory=list)
    replace_reasons: list[str] = field(default_factory=list)
    diff_reasons: list[str] = field(default_factory=list)
    protect: bool = False
    retain_on_delete: bool = False
    custom: bool = True

    @property
    def stateful(self) -> str | None:
        return stateful_types().get(self.type)

    @property
    def danger(self) -> bool:
        """A delete or replace of something stateful or protected."""
        return self.action in ("delete", "replace") and bool(self.stateful or self.protect)

    def danger_reasons(self) -> list[str]:
        reasons = []
        if self.stateful:
            reasons.append(self.stateful)
        if self.protect:
            reasons.append(
                "it is protected: the engine refuses to delete it until `protect` is lifted, "
                "so this update fails"
            )
        if self.retain_on_delete and self.action in ("delete", "replace"):
            reasons.append("retainOnDelete: the old one is left in the account, no longer managed")
        return reasons

    def why(self) -> list[str]:
        """Why it is replaced: the property changes that force it, else the replace reasons."""
        if self.action != "replace":
            return []
        forcing = [p for p in self.properties if p.forces_replace]
        if forcing:
            return [describe(p) for p in forcing]
        if self.replace_reasons:
            return [f"`{r}` changed" for r in self.replace_reasons]
        return ["the provider replaces it (no reason given in the input)"]

    @property
    def component_label(self) -> str:
        return " / ".join(self.component) if self.component else "(stack)"

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "action": self.action,
            "ops": self.ops,
            "component": self.component,
            "protect": self.protect,
            "retainOnDelete": self.retain_on_delete,
            "stateful": self.stateful,
            "danger": self.danger,
            "why": self.why(),
            "replaceReasons": self.replace_reasons,
            "diffReasons": self.diff_reasons,
            "properties": [p.to_json() for p in self.properties],
        }


@dataclass
class Violation:
    policy: str
    message: str
    enforcement: str = ""
    pack: str = ""
    urn: str | None = None

    @property
    def resource(self) -> str:
        return _urn_name(self.urn) if self.urn else "(stack)"

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "pack": self.pack,
            "enforcement": self.enforcement,
            "urn": self.urn,
            "message": self.message,
        }


@dataclass
class CostChange:
    base_usd: float | None
    head_usd: float

    @property
    def delta_usd(self) -> float | None:
        return None if self.base_usd is None else self.head_usd - self.base_usd

    def line(self) -> str:
        if self.base_usd is None:
            return f"estimated ${self.head_usd:,.2f}/month after this change"
        delta = self.head_usd - self.base_usd
        if abs(delta) < 0.005:
            return f"unchanged, ${self.head_usd:,.2f}/month (estimated)"
        sign = "+" if delta >= 0 else "-"
        return (
            f"{sign}${abs(delta):,.2f}/month (${self.base_usd:,.2f} -> ${self.head_usd:,.2f}, "
            "estimated)"
        )

    def to_json(self) -> dict[str, Any]:
        return {"baseUsd": self.base_usd, "headUsd": self.head_usd, "deltaUsd": self.delta_usd}


@dataclass
class Review:
    source: str
    stack: str | None
    changes: list[Change]
    unchanged: int = 0
    violations: list[Violation] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)
    cost: CostChange | None = None
    notes: list[str] = field(default_factory=list)
    title: str = ""

    def counts(self) -> Counter[str]:
        counts = Counter(c.action for c in self.changes)
        if self.unchanged:
            counts["same"] = self.unchanged
        return counts

    def danger(self) -> list[Change]:
        return [c for c in self.changes if c.danger]

    def summary(self) -> str:
        counts = self.counts()
        parts = [f"{counts[a]} {'unchanged' if a == 'same' else a}" for a in ACTIONS if counts[a]]
        changed = len(self.changes)
        head = f"{changed} change{'s' if changed != 1 else ''}" if changed else "no changes"
        return head + (": " + ", ".join(parts) if parts else "")

    def fails(self, level: str) -> bool:
        """Whether a change of this level is present (`--fail-on`)."""
        if level == "danger":
            return bool(self.danger())
        if level == "replace":
            return any(c.action in ("replace", "delete") for c in self.changes)
        if level == "delete":
            return any(c.action == "delete" for c in self.changes)
        if level == "any":
            return bool(self.changes)
        raise ValueError(level)

    def groups(self) -> list[tuple[str, list[Change]]]:
        """Changes grouped by component (the parent chain), in input order."""
        out: dict[str, list[Change]] = {}
        for c in self.changes:
            out.setdefault(c.component_label, []).append(c)
        return list(out.items())

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "stack": self.stack,
            "title": self.title,
            "summary": self.summary(),
            "counts": {a: self.counts()[a] for a in ACTIONS if self.counts()[a]},
            "danger": [c.to_json() for c in self.danger()],
            "changes": [c.to_json() for c in self.changes],
            "violations": [v.to_json() for v in self.violations],
            "diagnostics": self.diagnostics,
            "cost": self.cost.to_json() if self.cost else None,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# values and paths


def shown(value: Any) -> Any:
    """A value fit to print: secrets as [secret], unknowns as "known after apply", assets named."""
    if isinstance(value, str):
        if value == UNKNOWN:
            return AFTER_APPLY
        return value.replace(UNKNOWN, f"<{AFTER_APPLY}>") if UNKNOWN in value else value
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SIG_SECRET:
            return SECRET
        if sig == SIG_ASSET:
            return "[asset " + str(value.get("hash") or value.get("path") or "")[:12] + "]"
        if sig == SIG_ARCHIVE:
            return "[archive " + str(value.get("hash") or value.get("path") or "")[:12] + "]"
        return {k: shown(v) for k, v in value.items() if k != "__defaults"}
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


def short(value: Any, limit: int = 100) -> str:
    if isinstance(value, str):
        text = value if value in (SECRET, AFTER_APPLY) else json.dumps(value, ensure_ascii=False)
    else:
        text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _around_difference(old: str, new: str, limit: int = 100) -> tuple[str, str]:
    """Two long strings cut to the part where they differ (a policy document, a script)."""
    if len(json.dumps(old)) <= limit and len(json.dumps(new)) <= limit:
        return short(old, limit), short(new, limit)
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    start = max(0, start - 20)
    cut = "…" if start else ""
    return short(cut + old[start:], limit), short(cut + new[start:], limit)


def describe(p: PropertyDiff) -> str:
    """`engine`: "postgres" -> "mysql" (forces replacement)."""
    if p.has_old and p.has_new and isinstance(p.old, str) and isinstance(p.new, str):
        old, new = _around_difference(p.old, p.new)
        text = f"`{p.path}`: {old} -> {new}"
    elif p.has_old and p.has_new:
        text = f"`{p.path}`: {short(p.old)} -> {short(p.new)}"
    elif p.has_new:
        text = f"`{p.path}`: added {short(p.new)}"
    elif p.has_old:
        text = f"`{p.path}`: removed (was {short(p.old)})"
    else:
        text = f"`{p.path}` {p.kind.split('-')[0]}d" if p.kind != "add" else f"`{p.path}` added"
    if p.forces_replace:
        text += " (forces replacement)"
    if p.note:
        text += f" ({p.note})"
    return text


_TOKEN = re.compile(r'([^.\[\]"]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|\.')
_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")


def parse_path(path: str) -> list[str | int]:
    """`a.b[0]["x.y"]` -> ["a", "b", 0, "x.y"] (Pulumi's property path syntax)."""
    parts: list[str | int] = []
    for m in _TOKEN.finditer(path):
        if m.group(1) is not None:
            parts.append(m.group(1))
        elif m.group(2) is not None:
            parts.append(int(m.group(2)))
        elif m.group(3) is not None:
            parts.append(m.group(3).replace('\\"', '"'))
    return parts


def join_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    if _IDENT.match(key):
        return f"{base}.{key}" if base else key
    return f"{base}[{json.dumps(key)}]"


_MISSING = object()


def lookup(obj: Any, path: str) -> Any:
    cur = obj
    for part in parse_path(path):
        in_list = isinstance(part, int) and isinstance(cur, list) and 0 <= part < len(cur)
        if in_list or (isinstance(part, str) and isinstance(cur, dict) and part in cur):
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _urn_parts(urn: str) -> tuple[str, str, str]:
    """(stack, type, name) of a URN `urn:pulumi:stack::project::parent$type::name`."""
    parts = urn.split("::", 3)
    if len(parts) < 4 or not parts[0].startswith("urn:pulumi:"):
        raise ValueError(urn)
    return parts[0][len("urn:pulumi:") :], parts[2].rsplit("$", 1)[-1], parts[3]


def _urn_name(urn: str) -> str:
    try:
        return _urn_parts(urn)[2]
    except ValueError:
        return urn


# --------------------------------------------------------------------------------------------
# from Pulumi's formats


@dataclass
class _Step:
    op: str
    urn: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    detailed: dict[str, Any] | None
    replace_reasons: list[str]
    diff_reasons: list[str]
    parent: str | None = None
    type: str | None = None


def _state(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReviewError(f"{where}: expected an object, found {type(value).__name__}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReviewError(f"{where}: expected a list of property names")
    return list(value)


def _step(raw: Any, where: str, *, event: bool = False) -> _Step:
    if not isinstance(raw, dict):
        raise ReviewError(f"{where}: a step must be an object, found {type(raw).__name__}")
    op, urn = raw.get("op"), raw.get("urn")
    if not isinstance(op, str) or not op:
        raise ReviewError(f"{where}: missing `op` (allowed: {', '.join(OP_ACTION)})")
    if not isinstance(urn, str):
        raise ReviewError(f"{where}: missing `urn`")
    try:
        _urn_parts(urn)
    except ValueError:
        raise ReviewError(
            f"{where}: {urn!r} is not a Pulumi URN (urn:pulumi:STACK::PROJECT::TYPE::NAME)"
        ) from None
    old = _state(raw.get("old" if event else "oldState"), f"{where}.oldState")
    new = _state(raw.get("new" if event else "newState"), f"{where}.newState")
    detailed = raw.get("detailedDiff")
    if detailed is not None and not isinstance(detailed, dict):
        raise ReviewError(f"{where}.detailedDiff: expected an object or null")
    reasons = raw.get("keys") if event else raw.get("replaceReasons")
    diffs = raw.get("diffs") if event else raw.get("diffReasons")
    return _Step(
        op=op,
        urn=urn,
        old=old,
        new=new,
        detailed=detailed,
        replace_reasons=_str_list(reasons, f"{where}.replaceReasons"),
        diff_reasons=_str_list(diffs, f"{where}.diffReasons"),
        type=raw.get("type") if isinstance(raw.get("type"), str) else None,
    )


def _properties(step: _Step) -> list[PropertyDiff]:
    old_in = (step.old or {}).get("inputs") or {}
    old_out = (step.old or {}).get("outputs") or {}
    new_in = (step.new or {}).get("inputs") or {}
    out: list[PropertyDiff] = []

    def prop(path: str, kind: str) -> PropertyDiff:
        old = lookup(old_in, path)
        if old is _MISSING:
            old = lookup(old_out, path)
        new = lookup(new_in, path)
        return PropertyDiff(
            path=path,
            kind=kind,
            old=shown(old) if old is not _MISSING else None,
            new=shown(new) if new is not _MISSING else None,
            has_old=old is not _MISSING and not kind.startswith("add"),
            has_new=new is not _MISSING and not kind.startswith("delete"),
        )

    if step.detailed:
        for path, entry in step.detailed.items():
            kind = "update"
            if isinstance(entry, dict):
                kind = str(entry.get("kind") or entry.get("diffKind") or "update")
            elif isinstance(entry, str):
                kind = entry
            out.append(prop(str(path), kind))
        return out
    # detailedDiff is null for some providers: replaceReasons, then diffReasons.
    seen = set()
    for path in step.replace_reasons:
        seen.add(path)
        out.append(prop(path, "update-replace"))
    for path in step.diff_reasons:
        if path not in seen:
            out.append(prop(path, "update"))
    return out


def _fold(steps: list[_Step], source: str, notes: list[str] | None = None) -> Review:
    """The steps of a preview folded into one Change per resource (a resource may have several
    steps: a replace is create-replacement, replace and delete-replaced)."""
    parents = _parents(steps)
    by_urn: dict[str, list[_Step]] = {}
    for s in steps:
        by_urn.setdefault(s.urn, []).append(s)
    changes: list[Change] = []
    unchanged = 0
    stack = None
    for urn, group in by_urn.items():
        stack = stack or _urn_parts(urn)[0]
        change = _folded(urn, group, parents)
        if change is None:
            unchanged += 1
        else:
            changes.append(change)
    unknown_ops = sorted({s.op for s in steps if s.op not in OP_ACTION})
    notes = list(notes or [])
    if unknown_ops:
        notes.append(f"ops this version does not know, shown as changes: {', '.join(unknown_ops)}")
    return Review(source=source, stack=stack, changes=changes, unchanged=unchanged, notes=notes)


def _parents(steps: list[_Step]) -> dict[str, str | None]:
    """Each resource's parent URN: the step's own, else its new or old state's."""
    parents: dict[str, str | None] = {}
    for s in steps:
        parent = s.parent
        for state in (s.new, s.old):
            if state and isinstance(state.get("parent"), str):
                parent = parent or state["parent"]
        parents.setdefault(s.urn, parent)
        if parent and not parents.get(s.urn):
            parents[s.urn] = parent
    return parents


def _components(parents: dict[str, str | None], urn: str) -> list[str]:
    """The names of the components a resource sits in, outermost first (the stack left out)."""
    names: list[str] = []
    cur = parents.get(urn)
    guard = 0
    while cur and guard < 64:
        guard += 1
        try:
            _, type_, name = _urn_parts(cur)
        except ValueError:
            break
        if type_ == STACK_TYPE:
            break
        names.append(name)
        cur = parents.get(cur)
    return list(reversed(names))


def _folded(urn: str, group: list[_Step], parents: dict[str, str | None]) -> Change | None:
    """One resource's steps as one Change; None when they change nothing."""
    _, type_, name = _urn_parts(urn)
    actions = [OP_ACTION.get(s.op, "other") for s in group]
    action = min(actions, key=ACTIONS.index)
    if action == "same":
        return None
    main = next((s for s in group if s.op in ("replace", "update")), group[0])
    props, reasons, diffs = _merged_diffs(group)
    if action in ("create", "delete", "read", "import", "discard", "refresh"):
        props = [] if action != "refresh" else props
    states = [st for s in group for st in (s.new, s.old) if st]
    custom = any(bool(st.get("custom", True)) for st in states) if states else True
    return Change(
        urn=urn,
        type=main.type or type_,
        name=name,
        action=action,
        ops=[s.op for s in group],
        component=_components(parents, urn),
        properties=props,
        replace_reasons=reasons,
        diff_reasons=diffs,
        protect=any(bool(st.get("protect")) for st in states),
        retain_on_delete=any(bool(st.get("retainOnDelete")) for st in states),
        custom=custom,
    )


def _merged_diffs(group: list[_Step]) -> tuple[list[PropertyDiff], list[str], list[str]]:
    """The property diffs, replace reasons and diff reasons of a resource's steps, each once."""
    props: list[PropertyDiff] = []
    reasons: list[str] = []
    diffs: list[str] = []
    for s in group:
        for p in _properties(s):
            if all(p.path != q.path for q in props):
                props.append(p)
        reasons += [r for r in s.replace_reasons if r not in reasons]
        diffs += [r for r in s.diff_reasons if r not in diffs]
    return props, reasons, diffs


def _diagnostics(items: Any) -> list[str]:
    out = []
    for d in items or []:
        if isinstance(d, dict) and d.get("severity") in ("error", "warning"):
            where = f" ({_urn_name(d['urn'])})" if isinstance(d.get("urn"), str) else ""
            message = str(d.get("message", "")).strip()
            out.append(f"{d['severity']}{where}: {message}")
    return out


def from_preview(data: dict[str, Any], name: str = "preview") -> Review:
    """`pulumi preview --json`."""
    raw_steps = data.get("steps") or []
    if not isinstance(raw_steps, list):
        raise ReviewError(f"{name}: `steps` must be a list")
    steps = [_step(s, f"{name}: steps[{i}]") for i, s in enumerate(raw_steps)]
    review = _fold(steps, "pulumi preview --json")
    review.diagnostics = _diagnostics(data.get("diagnostics"))
    if data.get("maybeCorrupt"):
        review.notes.append("the engine says the stack's state may be corrupt (maybeCorrupt)")
    return review


def from_summary(data: dict[str, Any], name: str = "preview") -> Review:
    """The one-line `pulumi preview --output json` summary."""
    rows = data.get("resources") or []
    if not isinstance(rows, list):
        raise ReviewError(f"{name}: `resources` must be a list")
    steps = []
    for i, row in enumerate(rows):
        where = f"{name}: resources[{i}]"
        step = _step(
            {k: v for k, v in row.items() if k != "diff"} if isinstance(row, dict) else row, where
        )
        diff = row.get("diff")
        if isinstance(diff, dict):
            step.detailed = diff
        elif isinstance(diff, list):
            step.diff_reasons = [str(d) for d in diff]
        step.parent = row.get("parent") if isinstance(row.get("parent"), str) else None
        steps.append(step)
    notes = []
    if data.get("result") not in (None, "succeeded", "success"):
        notes.append(f"the preview's result: {data.get('result')}")
    return _fold(steps, "pulumi preview --output json", notes)


EVENT_KINDS = (
    "cancelEvent",
    "stdoutEvent",
    "diagnosticEvent",
    "preludeEvent",
    "summaryEvent",
    "resourcePreEvent",
    "resOutputsEvent",
    "resOpFailedEvent",
    "policyEvent",
    "policyRemediationEvent",
    "policyLoadEvent",
    "policyAnalyzeSummaryEvent",
    "policyRemediateSummaryEvent",
    "policyAnalyzeStackSummaryEvent",
    "startDebuggingEvent",
    "progressEvent",
    "errorEvent",
)


def from_events(lines: list[str], name: str = "event log") -> Review:
    """An `--event-log` stream: one engine event a line."""
    steps: dict[tuple[str, str], _Step] = {}
    violations: list[Violation] = []
    diagnostics: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReviewError(f"{name}: line {n}: not JSON ({exc.msg})") from None
        if not isinstance(event, dict):
            raise ReviewError(f"{name}: line {n}: an event must be an object")
        kind = next((k for k in EVENT_KINDS if k in event), None)
        if kind is None:
            if "sequence" in event or "timestamp" in event:
                continue  # an event kind newer than this list: skip it
            raise ReviewError(
                f"{name}: line {n}: not an engine event (no sequence and none of "
                f"{', '.join(EVENT_KINDS[:6])}, ...)"
            )
        body = event[kind] or {}
        if kind in ("resourcePreEvent", "resOutputsEvent"):
            meta = body.get("metadata")
            if not isinstance(meta, dict):
                raise ReviewError(f"{name}: line {n}: {kind} without metadata")
            step = _step(meta, f"{name}: line {n}: {kind}.metadata", event=True)
            key = (step.urn, step.op)
            if kind == "resourcePreEvent" or key not in steps:
                steps[key] = step
        elif kind == "policyEvent":
            violations.append(
                Violation(
                    policy=str(body.get("policyName", "")),
                    pack=str(body.get("policyPackName", "")),
                    enforcement=str(body.get("enforcementLevel", "")),
                    urn=body.get("resourceUrn") or None,
                    message=str(body.get("message", "")).strip(),
                )
            )
        elif kind == "diagnosticEvent":
            diagnostics += _diagnostics([body])
    review = _fold(list(steps.values()), "pulumi preview --event-log")
    review.violations = violations
    review.diagnostics = diagnostics
    return review


def load(text: str, name: str = "preview") -> Review:
    """A Review from any of Pulumi's three formats, told apart by their shape."""
    if not text.strip():
        raise ReviewError(
            f"{name}: empty; expected `pulumi preview --json` output, the "
            "`--output json` summary or an `--event-log` file"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        if len(lines) > 1 and lines[0].lstrip().startswith("{"):
            return from_events(lines, name)
        raise ReviewError(
            f"{name}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); expected "
            "`pulumi preview --json` output, the `--output json` summary or an `--event-log` file"
        ) from None
    if not isinstance(data, dict):
        raise ReviewError(f"{name}: expected a JSON object, found {type(data).__name__}")
    if any(k in data for k in EVENT_KINDS):
        return from_events([text], name)
    if "steps" in data or "changeSummary" in data or not data:
        return from_preview(data, name)
    if isinstance(data.get("resources"), list) and (
        "summary" in data or "result" in data or any("op" in r for r in data["resources"][:1])
    ):
        return from_summary(data, name)
    if "resources" in data and "stack" in data and "project" in data:
        raise ReviewError(
            f"{name}: this is a backbone Plan, not a preview; compare two plans with "
            "`backbone diff STACK --base REV` or `backbone diff STACK_A STACK_B`"
        )
    if data.get("version") == 3 and "deployment" in data:
        raise ReviewError(
            f"{name}: this is a `pulumi stack export` (the state), not a preview; run "
            "`pulumi preview --json > preview.json` and report that"
        )
    raise ReviewError(
        f"{name}: not a Pulumi preview: found keys {', '.join(sorted(data)[:8])}; expected "
        "`steps` (pulumi preview --json), `resources` with ops (--output json) or engine events"
    )


# --------------------------------------------------------------------------------------------
# from two Plans


def _key(urn: str) -> str:
    """A URN without its stack and project: the same resource in two stacks has one key."""
    return urn.split("::", 2)[2] if urn.count("::") >= 2 else urn


def _leaves(old: Any, new: Any, path: str, out: list[PropertyDiff]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            sub = join_path(path, k)
            if k not in new:
                out.append(PropertyDiff(sub, "delete", old=old[k], has_old=True))
            elif k not in old:
                out.append(PropertyDiff(sub, "add", new=new[k], has_new=True))
            else:
                _leaves(old[k], new[k], sub, out)
        return
    if isinstance(old, list) and isinstance(new, list) and path:
        for i in range(max(len(old), len(new))):
            sub = join_path(path, i)
            if i >= len(new):
                out.append(PropertyDiff(sub, "delete", old=old[i], has_old=True))
            elif i >= len(old):
                out.append(PropertyDiff(sub, "add", new=new[i], has_new=True))
            else:
                _leaves(old[i], new[i], sub, out)
        return
    out.append(PropertyDiff(path, "update", old=old, new=new, has_old=True, has_new=True))


def _covers(rule: str, path: str) -> bool:
    return path == rule or path.startswith(rule + ".") or path.startswith(rule + "[")


def _version(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, (str, int, float)):
        return None
    parts = str(value).split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def _mark_replacements(type_token: str, props: list[PropertyDiff]) -> None:
    rules = replace_rules(type_token)
    for p in props:
        for rule in rules:
            if rule.any or any(_covers(r, p.path) for r in rule.replace):
                p.kind = p.kind.split("-")[0] + "-replace"
                p.note = p.note or f"source: {rule.source}"
                break
            if any(_covers(r, p.path) for r in rule.downgrade) and p.has_old and p.has_new:
                old, new = _version(p.old), _version(p.new)
                if old is not None and new is not None and new < old:
                    p.kind = "update-replace"
                    p.note = (
                        "a downgrade: the service only moves versions forward, so only a new "
                        f"resource has the lower one; source: {rule.downgrade_source}"
                    )
                    break


def _computed(r: Resource) -> set[str]:
    """Output values the engine computes (ids, ARNs, endpoints): not copied from the inputs."""
    inputs: set[str] = set()

    def walk(v: Any, into: set[str]) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x, into)
        elif isinstance(v, list):
            for x in v:
                walk(x, into)
        elif isinstance(v, str) and len(v) >= 8 and v != SECRET:
            into.add(v)

    walk(r.inputs, inputs)
    outs: set[str] = set()
    walk(r.outputs, outs)
    if r.id:
        outs.add(r.id)
    return outs - inputs


def _chain(plan: Plan, r: Resource, index: dict[str, Resource]) -> list[str]:
    names: list[str] = []
    cur = r.parent
    while cur and cur in index and cur != plan.root():
        names.append(index[cur].name)
        cur = index[cur].parent
    return list(reversed(names))


def from_plans(base: Plan, head: Plan, *, base_label: str, head_label: str) -> Review:
    """What changes from `base` to `head`, offline: property diffs, and replacements where the
    replace-on-change data (or a downgrade) says the cloud can only replace."""
    base_by, head_by = _paired(base, head)
    base_index = {r.urn: r for r in base.resources}
    head_index = {r.urn: r for r in head.resources}

    def in_head(r: Resource) -> list[str]:
        return _chain(head, r, head_index)

    changes: dict[str, Change] = {}
    for key, new in head_by.items():
        old = base_by.get(key)
        change = _created(new, in_head) if old is None else _updated(old, new, in_head)
        if change is not None:
            changes[key] = change
    for key, old in base_by.items():
        if key not in head_by:
            changes[key] = _deleted(old, _chain(base, old, base_index))
    _cascade(base_by, head_by, changes, in_head)
    unchanged = sum(1 for k in head_by if k in base_by and k not in changes)
    same_stack = base.stack == head.stack
    return Review(
        source="backbone diff (offline plans)",
        stack=head.stack if same_stack else f"{base.stack} -> {head.stack}",
        changes=_in_plan_order(changes, base, head),
        unchanged=unchanged,
        title=f"{base_label} -> {head_label}",
        notes=[
            "offline: both sides are plans of the offline engine; a secret that changed shows "
            "no diff (both sides are [secret]), and replacements are the kit's replace-on-change "
            "data (backbone/replacements.yaml), not the provider's own answer",
        ],
    )


def _paired(base: Plan, head: Plan) -> tuple[dict[str, Resource], dict[str, Resource]]:
    """Both plans' resources by key; a rename declared with an alias is the same resource."""
    base_by = {_key(r.urn): r for r in base.resources}
    head_by = {_key(r.urn): r for r in head.resources}
    for r in head.resources:
        for alias in r.aliases:
            if _key(alias) in base_by and _key(alias) not in head_by and _key(r.urn) not in base_by:
                base_by[_key(r.urn)] = base_by.pop(_key(alias))
    return base_by, head_by


def _created(new: Resource, component_of: Callable[[Resource], list[str]]) -> Change:
    return Change(
        urn=new.urn,
        type=new.type,
        name=new.name,
        action="create",
        ops=["create"],
        component=component_of(new),
        protect=new.protect,
        retain_on_delete=new.retain_on_delete,
        custom=new.custom,
    )


def _updated(
    old: Resource, new: Resource, component_of: Callable[[Resource], list[str]]
) -> Change | None:
    """The inputs' differences as an update, or a replace where one forces it; None if none."""
    props: list[PropertyDiff] = []
    _leaves(old.inputs, new.inputs, "", props)
    if not props:
        return None
    _mark_replacements(new.type, props)
    replace = any(p.forces_replace for p in props)
    return Change(
        urn=new.urn,
        type=new.type,
        name=new.name,
        action="replace" if replace else "update",
        ops=["replace" if replace else "update"],
        component=component_of(new),
        properties=props,
        replace_reasons=[p.path for p in props if p.forces_replace],
        diff_reasons=sorted({str(parse_path(p.path)[0]) for p in props if p.path}),
        protect=old.protect or new.protect,
        retain_on_delete=old.retain_on_delete or new.retain_on_delete,
        custom=new.custom,
    )


def _deleted(old: Resource, component: list[str]) -> Change:
    return Change(
        urn=old.urn,
        type=old.type,
        name=old.name,
        action="delete",
        ops=["delete"],
        component=component,
        protect=old.protect,
        retain_on_delete=old.retain_on_delete,
        custom=old.custom,
    )


def _in_plan_order(changes: dict[str, Change], base: Plan, head: Plan) -> list[Change]:
    """The changes in the head plan's order, deleted resources after, in the base's order."""
    order = {_key(r.urn): i for i, r in enumerate(head.resources)}
    tail = len(order)
    for r in base.resources:
        tail += 1
        order.setdefault(_key(r.urn), tail)
    ordered = sorted(changes.items(), key=lambda kv: order.get(kv[0], 0))
    return [c for _, c in ordered]


def _holding(v: Any, path: str, values: set[str]) -> list[tuple[str, str]]:
    """(path, value) of every string in `v` that holds one of `values`."""
    if isinstance(v, dict):
        return [hit for k, x in v.items() for hit in _holding(x, join_path(path, k), values)]
    if isinstance(v, list):
        return [hit for i, x in enumerate(v) for hit in _holding(x, join_path(path, i), values)]
    if isinstance(v, str) and any(val in v for val in values):
        return [(path, v)]
    return []


def _cascade(
    base_by: dict[str, Resource],
    head_by: dict[str, Resource],
    changes: dict[str, Change],
    component_of: Callable[[Resource], list[str]],
) -> None:
    """A replaced resource gets new ids and ARNs: inputs of its dependents that hold them are
    "known after apply", and replace the dependent too where that input forces it."""
    done: set[str] = set()
    dependents = _dependents(head_by)
    queue = [k for k, c in changes.items() if c.action == "replace"]
    while queue:
        key = queue.pop(0)
        if key in done or key not in base_by:
            continue
        done.add(key)
        values = _computed(base_by[key])
        if not values:
            continue
        for dkey in dependents.get(key, []):
            d_old = base_by.get(dkey)
            if d_old is None:
                continue
            if _knock_on(base_by[key], values, dkey, (d_old, head_by[dkey]), changes, component_of):
                queue.append(dkey)


def _dependents(head_by: dict[str, Resource]) -> dict[str, list[str]]:
    """The keys of the resources that depend on each resource of the head plan."""
    dependents: dict[str, list[str]] = {}
    urn_key = {r.urn: k for k, r in head_by.items()}
    for k, r in head_by.items():
        for dep in r.dependencies:
            if dep in urn_key:
                dependents.setdefault(urn_key[dep], []).append(k)
    return dependents


def _knock_on(
    replaced: Resource,
    values: set[str],
    key: str,
    dependent: tuple[Resource, Resource],
    changes: dict[str, Change],
    component_of: Callable[[Resource], list[str]],
) -> bool:
    """The inputs of the dependent (`key`, its base and head Resource) holding the replaced
    resource's computed `values` become "known after apply" in its Change (made if it had
    none); True when that newly replaces it."""
    d_old, d_new = dependent
    found = [
        PropertyDiff(
            path,
            "update",
            old=value,
            new=AFTER_APPLY,
            has_old=True,
            has_new=True,
            note=f"from the replaced {replaced.name}",
        )
        for path, value in _holding(d_new.inputs, "", values)
    ]
    if not found:
        return False
    _mark_replacements(d_new.type, found)
    change = changes.get(key)
    if change is None:
        change = Change(
            urn=d_new.urn,
            type=d_new.type,
            name=d_new.name,
            action="update",
            ops=["update"],
            component=component_of(d_new),
            protect=d_old.protect or d_new.protect,
            retain_on_delete=d_old.retain_on_delete or d_new.retain_on_delete,
            custom=d_new.custom,
        )
        changes[key] = change
    known = {p.path for p in change.properties}
    change.properties += [p for p in found if p.path not in known]
    if any(p.forces_replace for p in found) and change.action != "replace":
        change.action = "replace"
        change.ops = ["replace"]
        change.replace_reasons += [p.path for p in found if p.forces_replace]
        return True
    return False
