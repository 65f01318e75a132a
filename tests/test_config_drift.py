"""Config drift: every setting is declared once (in its section of infra/config/) and read where it
feeds something, and nothing reads a setting that is not declared.

The code is read, not run: an AST walk over the program (infra/), the tool (backbone/) and the
policy pack (policies/) follows every name bound to a config section (a parameter annotated with
the section's class, `cfg.<section>` of a StackConfig, `self` in a section's own methods, and
what those are assigned to: locals, tuples, `self._cfg`) and records each attribute read on it.

- A field that no component, no infra/stack.py and no tool reads fails (a setting that changes
  nothing is a lie in the settings table). Reads inside infra/config/ count only through a public
  method that one of those calls (NetworkConfig.subnets, StackConfig.web_acl, ...); a section's own
  rules do not, except for GUARDS, settings whose meaning is a rule.
- A read of an attribute the section does not declare fails (a component reading a setting that
  is not there).
- A component (or infra/stack.py) giving a parameter or a dataclass field named like a setting of a
  section it reads a literal default of its own fails: the setting's default lives in the config
  only, so the two can never disagree (as the p99 latency defaults once did).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import BaseModel

from infra.config import Section, StackConfig

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("infra", "backbone", "policies")
COMPONENTS = ("infra/components", "infra/stack.py")
CONFIG = "infra/config/"

# Settings whose whole meaning is a config rule: they accept or refuse other settings and feed no
# resource themselves.
GUARDS = {
    "ClusterConfig.upgrade_from": "the minor the cluster runs now: refuses a version skip",
    "LoadBalancerConfig.allow_plain_http": "the production stack's opt-out of the HTTPS rule",
}

STACK = "StackConfig"


def section_models() -> dict[str, type[BaseModel]]:
    """Class name -> model, for StackConfig and every section it holds."""
    models: dict[str, type[BaseModel]] = {STACK: StackConfig}
    for f in StackConfig.model_fields.values():
        if isinstance(f.annotation, type) and issubclass(f.annotation, Section):
            models[f.annotation.__name__] = f.annotation
    return models


def stack_sections() -> dict[str, str]:
    """StackConfig attribute -> section class name (`cluster` -> `ClusterConfig`)."""
    return {
        name: f.annotation.__name__
        for name, f in StackConfig.model_fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, Section)
    }


@dataclass
class Reads:
    """(model, attribute) -> where it is read: `path:line`."""

    at: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    # path -> model names whose attributes the module reads
    models_by_file: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # (model, attribute) -> the functions (`Class.method`, `function`) of infra/config/ reading it
    inside: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))


def _annotation_name(node: ast.expr | None) -> str | None:
    """`ClusterConfig`, `"ClusterConfig"`, `ClusterConfig | None`, `config.ClusterConfig`."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return _annotation_name(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation_name(node.left) or _annotation_name(node.right)
    return None


class _Walker:
    """Follows names bound to config models through one module and records attribute reads."""

    def __init__(
        self,
        path: str,
        tree: ast.Module,
        models: dict[str, type[BaseModel]],
        returns: dict[str, str] | None = None,
    ):
        self.path, self.tree, self.models = path, tree, models
        self.sections = stack_sections()
        self.reads = Reads()
        self.returns = returns or {}  # function name -> the model it returns (`load_config`)
        self.holders: dict[str, dict[str, str]] = {}

    def run(self, reads: Reads) -> None:
        self.reads = reads
        # records holding a model in a field (infra/stack.py's Parts: `p.cfg`): Class -> field -> model
        self.holders = {
            node.name: {
                f.target.id: name
                for f in node.body
                if isinstance(f, ast.AnnAssign)
                and isinstance(f.target, ast.Name)
                and (name := _annotation_name(f.annotation) or "") in self.models
            }
            for node in self.tree.body
            if isinstance(node, ast.ClassDef) and node.name not in self.models
        }
        self.holders = {k: v for k, v in self.holders.items() if v}
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef):
                self._class(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._function(node, {}, {}, owner=node.name, record=True)

    def _class(self, cls: ast.ClassDef) -> None:
        own = cls.name if cls.name in self.models else None
        # attributes of `self` bound to a model (self._cfg = cfg), from every method
        attrs: dict[str, str] = {}
        methods = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        env = {"self": own} if own else {}
        for record in (False, True):  # bind first: a method may read what a later one binds
            for method in methods:
                owner = f"{cls.name}.{method.name}"
                self._function(method, env, attrs, owner=owner, record=record)

    def _function(
        self,
        fn: ast.FunctionDef | ast.AsyncFunctionDef,
        outer: dict[str, str],
        self_attrs: dict[str, str],
        *,
        owner: str,
        record: bool,
    ) -> None:
        env = dict(outer)
        args = fn.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            name = _annotation_name(a.annotation)
            if name in self.models or name in self.holders:
                env[a.arg] = name or ""
        for node in ast.walk(fn):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                and node is not fn
            ):
                inner = node.args
                for a in [*inner.posonlyargs, *inner.args, *inner.kwonlyargs]:
                    name = _annotation_name(a.annotation)
                    if name in self.models:
                        env[a.arg] = name
            elif isinstance(node, ast.Assign):
                self._bind(node.targets, node.value, env, self_attrs)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                self._bind([node.target], node.value, env, self_attrs)
        if not record:
            return
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                model = self._resolve(node.value, env, self_attrs)
                if model in self.models:
                    self.reads.at[(model, node.attr)].append(f"{self.path}:{node.lineno}")
                    self.reads.models_by_file[self.path].add(model)
                    if self.path.startswith(CONFIG):
                        self.reads.inside[(model, node.attr)].add(owner)

    def _bind(
        self,
        targets: list[ast.expr],
        value: ast.expr,
        env: dict[str, str],
        self_attrs: dict[str, str],
    ) -> None:
        for target in targets:
            pairs: list[tuple[ast.expr, ast.expr]] = [(target, value)]
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                pairs = list(zip(target.elts, value.elts, strict=False))
            for t, v in pairs:
                model = self._resolve(v, env, self_attrs)
                if not model:
                    continue
                if isinstance(t, ast.Name):
                    env[t.id] = model
                elif (
                    isinstance(t, ast.Attribute)
                    and isinstance(t.value, ast.Name)
                    and t.value.id == "self"
                ):
                    self_attrs[t.attr] = model

    def _resolve(self, node: ast.expr, env: dict[str, str], self_attrs: dict[str, str]) -> str:
        """The model a expression evaluates to, or ''."""
        if isinstance(node, ast.Name):
            return env.get(node.id, "")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.returns.get(node.func.id, "")  # `load_config(ref)`, not `ast.parse(s)`
        if isinstance(node, ast.Attribute):
            value = node.value
            if isinstance(value, ast.Name) and value.id == "self" and node.attr in self_attrs:
                return self_attrs[node.attr]
            base = self._resolve(node.value, env, self_attrs)
            if base == STACK and node.attr in self.sections:
                return self.sections[node.attr]
            if base in self.holders:
                return self.holders[base].get(node.attr, "")
        return ""


def returned_models(
    trees: dict[str, ast.Module], models: dict[str, type[BaseModel]]
) -> dict[str, str]:
    """Functions annotated to return a model (`load_config -> StackConfig`), by name."""
    return {
        node.name: name
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (name := _annotation_name(node.returns) or "") in models
    }


def read_everywhere() -> Reads:
    models, reads = section_models(), Reads()
    trees = {
        str(path.relative_to(REPO)): ast.parse(path.read_text())
        for top in SCANNED
        for path in sorted((REPO / top).rglob("*.py"))
    }
    returns = returned_models(trees, models)
    for rel, tree in trees.items():
        _Walker(rel, tree, models, returns).run(reads)
    return reads


@pytest.fixture(scope="module")
def reads() -> Reads:
    return read_everywhere()


def _outside_config(where: list[str]) -> bool:
    return any(not w.startswith(CONFIG) for w in where)


def _feeds(reads: Reads, owner: str) -> bool:
    """Whether a function of infra/config/ reading a setting hands it on: a public method of a
    model (not its rules) that a component, infra/stack.py or the tool calls."""
    cls, _, method = owner.partition(".")
    if not method or method.startswith("_") or method == "problems":
        return False
    return _outside_config(reads.at.get((cls, method), []))


def unfed_fields(reads: Reads, models: dict[str, type[BaseModel]]) -> list[str]:
    """Fields no component, no infra/stack.py and no tool reads, directly or through a public
    method of the config (NetworkConfig.subnets, StackConfig.web_acl, ...); GUARDS excepted."""
    out = []
    for cls, model in models.items():
        for name in model.model_fields:
            if f"{cls}.{name}" in GUARDS or _outside_config(reads.at.get((cls, name), [])):
                continue
            if not any(_feeds(reads, owner) for owner in reads.inside.get((cls, name), ())):
                out.append(f"{cls}.{name}")
    return out


def undeclared_reads(reads: Reads, models: dict[str, type[BaseModel]]) -> list[str]:
    return [
        f"{cls}.{attr} read at {', '.join(where)}"
        for (cls, attr), where in sorted(reads.at.items())
        if attr not in models[cls].model_fields and not hasattr(models[cls], attr)
    ]


def test_the_walk_sees_the_components_read_their_sections(reads):
    """The walk itself works: known reads in each place are found (else the tests below could
    pass by seeing nothing)."""
    assert any(
        w.startswith("infra/components/network.py") for w in reads.at[("NetworkConfig", "cidr")]
    )
    seen = {cls for (cls, _) in reads.at}
    assert seen == set(section_models())
    for component, model in (
        ("infra/components/cluster.py", "ClusterConfig"),
        ("infra/components/database.py", "DatabaseConfig"),
        ("infra/components/functions.py", "FunctionsConfig"),
        ("infra/components/monitoring.py", "MonitoringConfig"),
        ("infra/components/local.py", "LocalConfig"),
    ):
        assert model in reads.models_by_file[component], (component, model)
    assert any(w.startswith("infra/stack.py") for w in reads.at[("AppConfig", "node_port")])


def test_every_setting_is_read_by_what_it_feeds(reads):
    unread = unfed_fields(reads, section_models())
    assert not unread, (
        "settings declared in infra/config/ that no component, infra/stack.py or tool reads (a "
        "section's own rules do not count; remove them, or make them do what their meaning "
        f"says): {', '.join(unread)}"
    )


def test_nothing_reads_a_setting_that_is_not_declared(reads):
    bad = undeclared_reads(reads, section_models())
    assert not bad, "attributes read on config sections that they do not declare:\n" + "\n".join(
        bad
    )


def _literal(node: ast.expr | None) -> bool:
    """A literal default other than None (None says "not given": the value comes from elsewhere,
    such as the engine's stack name)."""
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
        return False
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def repeated_defaults(reads: Reads) -> list[str]:
    """Parameters and dataclass fields in the components named like a setting of a section the
    module reads (or a stack-wide setting such as `protect`, which infra/stack.py passes them),
    with a literal default of their own."""
    models, out = section_models(), []
    stack_wide = {name: STACK for name in StackConfig.model_fields if name not in stack_sections()}
    for top in COMPONENTS:
        paths = [REPO / top] if top.endswith(".py") else sorted((REPO / top).glob("*.py"))
        for path in paths:
            rel = str(path.relative_to(REPO))
            settings = stack_wide | {
                name: cls
                for cls in reads.models_by_file.get(rel, set())
                for name in models[cls].model_fields
            }
            out += _defaults_named_like(rel, ast.parse(path.read_text()), settings)
    return out


def _defaults_named_like(rel: str, tree: ast.Module, settings: dict[str, str]) -> list[str]:
    """`path: name = default (Model.name)` for each literal default of a name in `settings` (no
    line number: lines move)."""
    out = []
    for node in ast.walk(tree):
        pairs: list[tuple[str, ast.expr | None]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            defaulted = [p.arg for p in positional[len(positional) - len(a.defaults) :]]
            pairs += list(zip(defaulted, a.defaults, strict=True))
            pairs += [(arg.arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
        elif isinstance(node, ast.ClassDef):
            pairs += [
                (s.target.id, s.value)
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            ]
        out += [
            f"{rel}: {name} = {ast.unparse(default)} ({settings[name]}.{name})"
            for name, default in pairs
            if default is not None and name in settings and _literal(default)
        ]
    return out


# Found by this test when it was written (2026-12-01): protect=False in five components and
# web_acl=False in the load balancer, all gone the same day (the components take the setting).
# None is known now, and a new one is never added here.
KNOWN_REPEATED: set[str] = set()


def test_no_component_repeats_a_settings_default(reads):
    found = set(repeated_defaults(reads))
    new, gone = sorted(found - KNOWN_REPEATED), sorted(KNOWN_REPEATED - found)
    assert not new, "defaults declared twice (keep the config's, pass the setting):\n" + (
        "\n".join(new)
    )
    assert not gone, "fixed, so remove from KNOWN_REPEATED:\n" + "\n".join(gone)


# -- The checks can fail ------------------------------------------------------------------------


class _Planted(Section):
    SECTION = "planted"
    read_one: int = 1
    unread_one: int = 2


def test_a_planted_unread_field_and_an_undeclared_read_are_found():
    """The same walk over a small planted program: a field nobody reads and an attribute that is
    not declared are both reported; a literal default named like a setting too."""
    source = (
        "from infra.config import _Planted\n"
        "from dataclasses import dataclass\n"
        "class Thing:\n"
        "    def __init__(self, cfg: _Planted) -> None:\n"
        "        self._cfg = cfg\n"
        "    def use(self) -> int:\n"
        "        return self._cfg.read_one + self._cfg.not_declared\n"
        "@dataclass\n"
        "class Args:\n"
        "    read_one: int = 1\n"
    )
    models: dict[str, type[BaseModel]] = {"_Planted": _Planted}
    reads = Reads()
    _Walker("planted.py", ast.parse(source), models).run(reads)
    assert unfed_fields(reads, models) == ["_Planted.unread_one"]
    assert undeclared_reads(reads, models) == ["_Planted.not_declared read at planted.py:7"]
    settings = {name: "_Planted" for name in _Planted.model_fields}
    assert _defaults_named_like("planted.py", ast.parse(source), settings) == [
        "planted.py: read_one = 1 (_Planted.read_one)"
    ]


def test_the_config_is_pulumi_free():
    """The tool imports infra.config at its top: the schema must not drag the Pulumi SDK in."""
    code = (
        "import sys, infra.config\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0].startswith('pulumi')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
