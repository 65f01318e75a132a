"""backbone diff: the review offline, from two Plans; the replace-on-change data; the Plan cache;
a stack at a git revision (a throwaway repository copy, never this checkout's history)."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from backbone import cache
from backbone.plan import Plan, Resource
from backbone.review import from_plans, replacement_data, stateful_types
from backbone.synth import resolve

REPO = Path(__file__).resolve().parent.parent
DB = "aws:rds/instance:Instance"


def _edit(plan: Plan, type_token: str, **inputs: object) -> Plan:
    out = copy.deepcopy(plan)
    (r,) = [r for r in out.resources if r.type == type_token]
    r.inputs.update(inputs)
    return out


def _review(base: Plan, head: Plan):
    return from_plans(base, head, base_label="base", head_label="head")


def _db(review):
    (c,) = [c for c in review.changes if c.type == DB]
    return c


def test_engine_version_upgrade_is_an_update(plan_of):
    dev = plan_of("dev")
    old = dev.one(DB).inputs["engineVersion"]
    review = _review(dev, _edit(dev, DB, engineVersion=str(int(old) + 1)))
    db = _db(review)
    assert db.action == "update"
    assert [(p.path, p.old, p.new) for p in db.properties] == [
        ("engineVersion", old, str(int(old) + 1))
    ]
    assert review.danger() == []


def test_engine_version_downgrade_is_a_replace_in_danger(plan_of):
    dev = plan_of("dev")
    old = dev.one(DB).inputs["engineVersion"]
    review = _review(dev, _edit(dev, DB, engineVersion=str(int(old) - 1)))
    db = _db(review)
    assert db.action == "replace" and db in review.danger()
    assert "a downgrade" in db.why()[0]


def test_identifier_change_is_a_replace_in_danger_with_the_source(plan_of):
    dev = plan_of("dev")
    review = _review(dev, _edit(dev, DB, identifier="backbone-dev-renamed"))
    db = _db(review)
    assert db.action == "replace"
    assert [c.name for c in review.danger()] == [db.name]
    assert db.why()[0].startswith('`identifier`: "')
    assert "tf-rds-instance" in db.why()[0]
    assert db.component == ["database"]


def test_replacement_cascades_to_inputs_that_hold_its_ids():
    """A replaced subnet gets a new id: the NAT gateway's subnetId is unknown, and since a NAT
    gateway cannot move subnets, it is replaced too; the route only updates."""
    root = "urn:pulumi:s::p::pulumi:pulumi:Stack::p-s"

    def res(type_token: str, name: str, inputs: dict, deps=(), outputs=None, id=None) -> Resource:
        return Resource(
            urn=f"urn:pulumi:s::p::{type_token}::{name}",
            type=type_token,
            name=name,
            custom=True,
            parent=root,
            inputs=inputs,
            outputs=outputs or {},
            dependencies=list(deps),
            id=id,
        )

    subnet = "urn:pulumi:s::p::aws:ec2/subnet:Subnet::sub"
    nat = "urn:pulumi:s::p::aws:ec2/natGateway:NatGateway::nat"

    def plan(cidr: str) -> Plan:
        return Plan(
            "s",
            "p",
            [
                res("aws:ec2/subnet:Subnet", "sub", {"cidrBlock": cidr}, id="subnet-0123456789"),
                res(
                    "aws:ec2/natGateway:NatGateway",
                    "nat",
                    {"subnetId": "subnet-0123456789"},
                    [subnet],
                    id="nat-0123456789",
                ),
                res("aws:ec2/route:Route", "r", {"natGatewayId": "nat-0123456789"}, [nat]),
            ],
        )

    review = _review(plan("10.0.0.0/20"), plan("10.0.16.0/20"))
    actions = {c.name: c.action for c in review.changes}
    assert actions == {"sub": "replace", "nat": "replace", "r": "update"}
    (route_change,) = [c for c in review.changes if c.name == "r"]
    assert [(p.path, p.new) for p in route_change.properties] == [
        ("natGatewayId", "known after apply")
    ]


def test_dev_against_prod_shows_how_they_differ(backbone_cli):
    done = backbone_cli("diff", "dev", "prod", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["stack"] == "dev -> prod"
    changes = {c["name"]: c for c in data["changes"]}
    db = changes["database-postgres"]
    props = {p["path"]: p for p in db["properties"]}
    assert props["multiAz"]["old"] is False and props["multiAz"]["new"] is True
    assert db["protect"] is True  # prod protects its data
    # prod has a NAT gateway per zone: created; flow logs only in prod
    assert any(c["action"] == "create" and "nat" in c["name"] for c in data["changes"])
    assert data["cost"]["deltaUsd"] > 0


def test_two_stacks_and_base_together_is_an_error(backbone_cli):
    done = backbone_cli("diff", "dev", "prod", "--base", "HEAD")
    assert done.returncode == 2 and "not both" in done.stderr


def test_a_bad_revision_is_status_2(backbone_cli):
    done = backbone_cli("diff", "dev", "--base", "no-such-branch-xyz")
    assert done.returncode == 2
    assert "'no-such-branch-xyz' is not a commit" in done.stderr
    assert "Traceback" not in done.stderr


# -- the replace-on-change and stateful data ---------------------------------------------------


def _sdk_inputs(type_token: str) -> set[str]:
    """Wire names of a resource's inputs, from the installed SDK's Args class."""
    package, module, kind = type_token.split(":")
    sdk = {"aws": "pulumi_aws", "kubernetes": "pulumi_kubernetes", "random": "pulumi_random"}
    mod_path = module.split("/")[0].replace("lambda", "lambda_")
    if package == "kubernetes":
        mod_path = ".".join(module.split("/")).replace("networking.k8s.io", "networking")
    name = sdk[package] if mod_path == "index" else f"{sdk[package]}.{mod_path}"
    mod = importlib.import_module(name)
    args = getattr(mod, f"{kind}Args")
    names = set()
    for attr in dir(args):
        getter = getattr(args, attr)
        fget = getattr(getter, "fget", None)
        if fget is not None:
            names.add(getattr(fget, "_pulumi_name", attr))
    return names


@pytest.mark.parametrize("type_token", sorted(replacement_data()["types"]))
def test_every_replace_rule_names_a_real_input_of_the_installed_sdk(type_token):
    entry = replacement_data()["types"][type_token]
    assert entry["source"] in replacement_data()["sources"]
    inputs = _sdk_inputs(type_token)
    for prop in entry.get("replace", []) + entry.get("downgrade", []):
        assert prop.split(".")[0] in inputs, f"{type_token}: no input {prop!r} in the SDK"


def test_every_stateful_type_is_a_real_type_with_a_reason():
    import pulumi_aws
    import pulumi_kubernetes

    assert pulumi_aws and pulumi_kubernetes
    for type_token, reason in stateful_types().items():
        assert len(reason) > 20, type_token
        if type_token.startswith(("aws:", "kubernetes:")):
            assert _sdk_inputs(type_token), type_token


# -- the cache ---------------------------------------------------------------------------------


def test_cached_plan_is_the_fresh_plan_and_any_edit_misses(tmp_path, monkeypatch):
    project = tmp_path / "project"
    for part in ("Pulumi.yaml", "infra", "app", "stacks"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, project / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            project.mkdir(exist_ok=True)
            shutil.copy(src, project / part)
    monkeypatch.setenv("BACKBONE_CACHE_DIR", str(tmp_path / "cache"))
    ref = resolve("free-tier", cwd=project)
    fresh, hit = cache.plan(ref)
    assert not hit
    again, hit = cache.plan(ref)
    assert hit
    assert again.dumps() == fresh.dumps()
    assert [r.outputs for r in again.resources] == [r.outputs for r in fresh.resources]
    key = cache.key(ref)
    for path in (ref.file, project / "app" / "Dockerfile", project / "infra" / "stack.py"):
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        assert cache.key(ref) != key, path
        path.write_bytes(original)
    assert cache.key(ref) == key
    assert any("pulumi-aws==" in v for v in cache.sdk_versions())


def test_no_cache_option_runs_the_program(backbone_cli, tmp_path, monkeypatch):
    env_dir = tmp_path / "cache"
    monkeypatch.setenv("BACKBONE_CACHE_DIR", str(env_dir))
    done = backbone_cli("--no-cache", "plan", "free-tier", "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    assert not env_dir.exists() or not list(env_dir.glob("*.json"))
    done = backbone_cli("plan", "free-tier", "--format", "json")
    assert len(list(env_dir.glob("*.json"))) == 1


# -- a stack at a git revision -----------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=test@example.org", "-c", "user.name=test", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture(scope="module")
def history(tmp_path_factory, plan_of):
    """This project's files in a throwaway git repository of its own, with two revisions to
    plan as bases (tags): `stack-change`, whose free-tier stack file asks for PostgreSQL 16, and
    `program-change`, whose infra/ names the database instance itself; each change was reverted
    after it, so the working tree is the project as shipped. The head (the working tree's
    free-tier) is the shipped stack's Plan, put in the repository's Plan cache as the CLI would
    have made it there: each test runs the engine only for its base revision."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("repo") / "backbone"
    root.mkdir()
    for part in ("Pulumi.yaml", "pyproject.toml", "infra", "app", "stacks", "backbone"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / part)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "base")
    _commit_change(
        root,
        "stacks/Pulumi.free-tier.yaml",
        "  backbone:database:\n",
        '  backbone:database:\n    engineVersion: "16"\n',
    )
    _git(root, "tag", "stack-change")
    _git(root, "revert", "--no-edit", "HEAD")
    path = root / "infra/components/database.py"
    text = path.read_text()
    line = re.search(r"\bidentifier=[^\n]+,\n", text)
    assert line, "infra/components/database.py sets no identifier=: update this test"
    path.write_text(text.replace(line.group(0), 'identifier="backbone-at-base",\n', 1))
    _git(root, "commit", "-q", "-am", "the base's own identifier")
    _git(root, "tag", "program-change")
    _git(root, "revert", "--no-edit", "HEAD")  # the working tree is the original again
    assert _git(root, "status", "--porcelain") == ""
    shipped = copy.deepcopy(plan_of("free-tier"))
    cache_dir = root.parent / "cache"
    saved = os.environ.get("BACKBONE_CACHE_DIR")
    os.environ["BACKBONE_CACHE_DIR"] = str(cache_dir)
    try:
        head = resolve("free-tier", cwd=root)
        cache.store(head, cache.key(head), cache.relocate(shipped, REPO, root))
    finally:
        if saved is None:
            del os.environ["BACKBONE_CACHE_DIR"]
        else:
            os.environ["BACKBONE_CACHE_DIR"] = saved
    return root, cache_dir


def _diff_in(
    backbone_cli, monkeypatch, history, base: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`backbone diff free-tier --base BASE ARGS` in the throwaway history."""
    root, cache_dir = history
    monkeypatch.setenv("BACKBONE_CACHE_DIR", str(cache_dir))
    return backbone_cli("diff", "free-tier", "--base", base, *args, cwd=root)


def _commit_change(root: Path, path: str, old: str, new: str) -> None:
    file = root / path
    text = file.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update this test"
    file.write_text(text.replace(old, new, 1))
    _git(root, "commit", "-q", "-am", f"change {path}")


def test_base_revision_engine_version_change_is_an_update(backbone_cli, monkeypatch, history):
    """A stack file changed since the base: the base is planned with the base's stack file."""
    done = _diff_in(backbone_cli, monkeypatch, history, "stack-change", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    db = next(c for c in data["changes"] if c["type"] == DB)
    assert db["action"] == "update"
    assert {"path": "engineVersion", "kind": "update", "old": "16", "new": "17"} in db["properties"]
    assert all(d["type"] != DB for d in data["danger"])
    assert data["title"] == "stack-change -> working tree"


def test_base_revision_runs_the_revisions_own_program_and_its_identifier_change_is_a_replace_in_danger(
    backbone_cli, monkeypatch, history
):
    """The base is planned with the revision's infra/, not the code this tool was installed from:
    a revision whose program names the instance differently shows that difference, and it is a
    replace in danger (a new database)."""
    done = _diff_in(backbone_cli, monkeypatch, history, "program-change", "--fail-on", "danger")
    assert done.returncode == 1, done.stderr
    assert "DANGER" in done.stdout
    danger = done.stdout.split("DANGER")[1].split("╰")[0]
    assert "replace aws:rds/instance:Instance database-postgres" in danger
    # old -> new: the base's value is the one its own program set
    assert 'identifier: "backbone-at-base" -> "backbone-free-tier-database-' in danger
