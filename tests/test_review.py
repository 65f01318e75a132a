"""backbone report: a review of real previews (../shared/fixtures/pulumi) and of preview files
written here (tests/fixtures): every op and diff kind, secrets, unknowns, null detailedDiff,
protected resources, components three deep, a database replacement, a cluster deletion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backbone import render
from backbone.review import AFTER_APPLY, DIFF_KINDS, OP_ACTION, Review, ReviewError, load
from tests.fixtures.big_preview import make
from tests.realparts import shared_fixture

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EVERY_OP = FIXTURES / "preview-every-op.json"
EVENTS = FIXTURES / "preview-events.jsonl"
SUMMARY = FIXTURES / "preview-summary.json"
CIPHERTEXT = "AAAA"  # the secret's ciphertext in the every-op fixture


def review_of(path: Path) -> Review:
    return load(path.read_text(), path.name)


def change(review: Review, name: str):
    found = [c for c in review.changes if c.name == name]
    assert len(found) == 1, [c.name for c in review.changes]
    return found[0]


# -- real previews written by the Pulumi CLI ---------------------------------------------------


def test_real_replacement_of_a_security_group_says_why():
    review = review_of(shared_fixture("pulumi", "drift-adopter__aws_tags_and_sets.preview.json"))
    assert review.summary() == "4 changes: 1 replace, 3 update, 1 unchanged"
    sg = change(review, "test-sg")
    assert sg.action == "replace"
    assert sg.why() == [
        '`description`: "Updated security group for testing" -> "Security group for '
        'drift-adopter testing" (forces replacement)'
    ]
    kinds = {p.path: p.kind for p in sg.properties}
    assert kinds == {"description": "update-replace", "ingress[0]": "add", "ingress[1]": "delete"}
    bucket = change(review, "test-bucket")
    tags = {p.path: (p.old, p.new) for p in bucket.properties}
    assert tags["tags.Environment"] == ("staging", "production")
    assert tags["tags.CostCenter"] == (None, "cc-100")
    # a security group is not stateful: no danger
    assert review.danger() == []


def test_real_creates_deletes_and_update_with_sames():
    creates = review_of(shared_fixture("pulumi", "stratify__sample-preview-creates.json"))
    assert creates.counts() == {"create": 16}
    deletes = review_of(shared_fixture("pulumi", "stratify__sample-preview-deletes.json"))
    assert deletes.counts() == {"delete": 14, "same": 2}
    update = review_of(shared_fixture("pulumi", "stratify__sample-preview-update.json"))
    assert update.counts() == {"update": 1, "same": 15}
    (lam,) = update.changes
    assert lam.type == "aws:lambda/function:Function"
    # the parent chain from the URN's parents: bucket -> event subscription -> function
    assert lam.component == ["docs", "docsHandler"]
    (code,) = lam.properties
    assert code.path == "code" and str(code.old).startswith("[archive") and code.old != code.new


def test_a_stack_export_is_refused_with_what_to_run(backbone_cli):
    path = shared_fixture("pulumi", "stratify__sample-export.json")
    done = backbone_cli("report", str(path))
    assert done.returncode == 2
    assert "pulumi stack export" in done.stderr and "pulumi preview --json" in done.stderr
    assert "Traceback" not in done.stderr


# -- every op and diff kind --------------------------------------------------------------------


def test_every_op_pulumi_writes_is_read_and_an_unknown_one_is_a_change():
    data = json.loads(EVERY_OP.read_text())
    assert set(OP_ACTION) | {"frobnicate"} <= {s["op"] for s in data["steps"]}
    review = review_of(EVERY_OP)
    future = change(review, "future-vpc")
    assert future.action == "other" and future.ops == ["frobnicate"]
    assert any("frobnicate" in n for n in review.notes)
    assert change(review, "shared-vpc").action == "read"
    assert change(review, "adopted-vpc").action == "import"
    assert change(review, "forgotten-vpc").action == "discard"
    assert change(review, "legacy-vpc").action == "refresh"
    for replaced in ("adopted-vpc-2", "old-vpc", "pending-vpc"):
        assert change(review, replaced).action == "replace"
    assert "quiet-vpc" not in {c.name for c in review.changes}
    assert review.counts()["same"] == 8


def test_replacement_steps_of_one_resource_are_one_change():
    review = review_of(EVERY_OP)
    db = change(review, "db-postgres")
    assert db.ops == ["create-replacement", "replace", "delete-replaced"]
    assert db.action == "replace"


def test_every_diff_kind_is_shown_with_old_and_new_values():
    review = review_of(EVERY_OP)
    subnet = change(review, "network-private-a")
    kinds = {p.path: p.kind for p in subnet.properties}
    assert set(kinds.values()) == set(DIFF_KINDS)
    by_path = {p.path: p for p in subnet.properties}
    assert (by_path["availabilityZone"].old, by_path["availabilityZone"].new) == (
        "us-east-1a",
        "us-east-1b",
    )
    assert by_path["tags.Old"].has_old and not by_path["tags.Old"].has_new
    assert by_path["tags.New"].new == "yes" and not by_path["tags.New"].has_old
    assert sorted(p.path for p in subnet.properties if p.forces_replace) == [
        "availabilityZone",
        "ipv6CidrBlock",
        "mapPublicIpOnLaunch",
    ]


def test_unknown_values_read_known_after_apply():
    review = review_of(EVERY_OP)
    route = change(review, "network-private-default")
    (nat,) = route.properties
    assert (nat.old, nat.new) == ("nat-0aaa", AFTER_APPLY)
    subnet = change(review, "network-private-a")
    assert {p.path: p.new for p in subnet.properties}["ipv6CidrBlock"] == AFTER_APPLY


def test_null_detailed_diff_falls_back_to_replace_then_diff_reasons():
    review = review_of(EVERY_OP)
    token = change(review, "app-api-token")
    assert [(p.path, p.kind, p.old, p.new) for p in token.properties] == [
        ("length", "update-replace", 32, 48)
    ]
    assert token.why() == ["`length`: 32 -> 48 (forces replacement)"]
    cert = change(review, "app-cert")
    assert [(p.path, p.kind, p.old, p.new) for p in cert.properties] == [
        ("validityPeriodHours", "update", 720, 2160)
    ]


def test_danger_block_holds_stateful_and_protected_deletes_and_replaces_only():
    review = review_of(EVERY_OP)
    assert {c.name: c.action for c in review.danger()} == {
        "db-postgres": "replace",
        "compute-eks": "delete",
        "app-namespace": "delete",
        "app-data": "replace",
        "web-alb": "delete",
    }
    db = change(review, "db-postgres")
    assert db.why() == ['`engine`: "postgres" -> "mysql" (forces replacement)']
    assert "every row" in db.danger_reasons()[0]
    alb = change(review, "web-alb")
    assert alb.stateful is None and alb.protect and "protected" in alb.danger_reasons()[0]
    # a protected bucket updated in place, a replaced subnet and random token: not in DANGER
    assert not change(review, "logs").danger and change(review, "logs").protect
    assert not change(review, "network-private-a").danger


def test_changes_are_grouped_by_the_parent_chain_three_deep():
    review = review_of(EVERY_OP)
    assert change(review, "db-postgres").component == ["platform", "data", "db"]
    assert change(review, "compute-eks").component == ["platform", "compute"]
    labels = [label for label, _ in review.groups()]
    assert labels[:3] == ["platform / data / db", "platform / compute", "network"]
    assert "(stack)" in labels


def test_secrets_never_reach_any_format():
    review = review_of(EVERY_OP)
    creds = change(review, "db-credentials")
    (secret,) = creds.properties
    assert (secret.old, secret.new) == ("[secret]", "[secret]")
    texts = [render.markdown(review), render.to_json(review)]
    for text in texts:
        assert CIPHERTEXT not in text and "1b47061264138c4ac30d75fd1eb44270" not in text
        assert "[secret]" in text


def test_diagnostics_are_reported():
    review = review_of(EVERY_OP)
    assert review.diagnostics == [
        "warning (web-alb): deleting a protected resource needs `protect` lifted first"
    ]


# -- the event log and the one-line summary ---------------------------------------------------


def test_event_log_gives_policy_violations_and_diff_kinds():
    review = review_of(EVENTS)
    assert [(v.policy, v.enforcement, v.resource) for v in review.violations] == [
        ("rds-storage-encrypted", "mandatory", "db-postgres"),
        ("billing-alarm", "advisory", "(stack)"),
    ]
    (db,) = review.changes
    assert db.component == ["platform", "data", "db"]
    assert db.protect and db.danger
    assert [(p.path, p.kind, p.old, p.new) for p in db.properties] == [
        ("engine", "update-replace", "postgres", "mysql")
    ]
    assert review.diagnostics == ["warning (db-postgres): engine change replaces the instance"]
    md = render.markdown(review)
    assert "#### Policy violations (2)" in md and "`rds-storage-encrypted`" in md


def test_one_line_summary_format():
    review = review_of(SUMMARY)
    assert review.source == "pulumi preview --output json"
    assert {c.name: c.action for c in review.changes} == {
        "network-nat-b": "create",
        "network-private-default": "update",
        "compute-eks": "delete",
    }
    assert [c.name for c in review.danger()] == ["compute-eks"]
    assert change(review, "compute-eks").component == ["platform", "compute"]
    assert [p.path for p in change(review, "network-private-default").properties] == [
        "natGatewayId"
    ]


# -- renderers and the command ----------------------------------------------------------------


def test_markdown_of_2000_steps_fits_github_and_keeps_summary_and_danger():
    review = load(json.dumps(make(2000)), "big")
    md = render.markdown(review)
    assert len(md) <= render.GITHUB_LIMIT
    assert review.summary() in md
    danger = review.danger()
    assert len(danger) == 40
    block = md.split("#### ⛔ DANGER: 40 ")[1].split("#### Changes by component")[0]
    assert all(f"`{c.name}`" in block for c in danger)
    assert "**Trimmed to fit a GitHub comment**" in md
    assert md.count("<details>") == md.count("</details>")
    assert md.count("```diff") * 2 == md.count("```")


def test_markdown_of_a_small_preview_is_whole():
    review = review_of(EVERY_OP)
    md = render.markdown(review)
    assert "Trimmed" not in md
    assert md.startswith(render.MARKER)
    for c in review.changes:
        assert c.name in md


def test_json_format_has_the_danger_list_as_its_own_field(backbone_cli):
    done = backbone_cli("report", str(EVERY_OP), "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [d["name"] for d in data["danger"]] == [
        "db-postgres",
        "compute-eks",
        "app-namespace",
        "app-data",
        "web-alb",
    ]
    assert data["counts"]["replace"] == 7 and data["counts"]["same"] == 8
    assert data["danger"][0]["why"] == ['`engine`: "postgres" -> "mysql" (forces replacement)']


def test_terminal_report_shows_danger_and_groups(backbone_cli):
    done = backbone_cli("report", str(EVERY_OP))
    assert done.returncode == 0, done.stderr
    assert "DANGER: 5 stateful or protected resource(s) deleted or replaced" in done.stdout
    assert "platform / data / db" in done.stdout
    assert 'natGatewayId: "nat-0aaa" -> known after apply' in done.stdout


@pytest.mark.parametrize(
    ("fixture", "level", "status"),
    [
        (EVERY_OP, "danger", 1),
        (EVERY_OP, "delete", 1),
        (SUMMARY, "replace", 1),  # a delete destroys too
        (SUMMARY, "danger", 1),
        (EVENTS, "delete", 0),
        (EVENTS, "replace", 1),
        (EVENTS, "any", 1),
    ],
)
def test_fail_on_sets_exit_status_one(backbone_cli, fixture, level, status):
    done = backbone_cli("report", str(fixture), "--fail-on", level, "--format", "json")
    assert done.returncode == status, done.stderr
    json.loads(done.stdout)  # the report is still printed


def test_fail_on_danger_passes_a_preview_without_danger(backbone_cli):
    path = shared_fixture("pulumi", "stratify__sample-preview-update.json")
    done = backbone_cli("report", str(path), "--fail-on", "danger")
    assert done.returncode == 0, done.stderr


def test_report_reads_stdin(backbone_cli, tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "backbone.cli", "report", "-", "--format", "json"],
        input=SUMMARY.read_text(),
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["source"] == "pulumi preview --output json"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty; expected `pulumi preview --json` output"),
        ("{not json", "not JSON (line 1, column 2"),
        ("[1, 2]", "expected a JSON object, found list"),
        ('{"steps": {"op": "create"}}', "`steps` must be a list"),
        (
            '{"steps": [{"urn": "urn:pulumi:a::b::aws:s3/bucket:Bucket::x"}]}',
            "steps[0]: missing `op`",
        ),
        ('{"steps": [{"op": "create", "urn": "bucket-x"}]}', "'bucket-x' is not a Pulumi URN"),
        (
            '{"steps": [{"op": "update", "urn": "urn:pulumi:a::b::t:m:T::x", "detailedDiff": 3}]}',
            "steps[0].detailedDiff: expected an object or null",
        ),
        ('{"sequence": 1, "cancelEvent": {}}\n{broken', "line 2: not JSON"),
        ('{"stack": "dev", "project": "backbone", "resources": []}', "this is a backbone Plan"),
        ('{"hello": 1}', "not a Pulumi preview: found keys hello"),
    ],
)
def test_malformed_input_is_a_clear_error_with_status_2(backbone_cli, tmp_path, content, message):
    path = tmp_path / "preview.json"
    path.write_text(content)
    with pytest.raises(ReviewError, match=None) as info:
        load(content, "preview.json")
    assert message in str(info.value)
    done = backbone_cli("report", str(path))
    assert done.returncode == 2
    assert message in done.stderr.replace("\n", " ") or message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_missing_file_is_status_2(backbone_cli, tmp_path):
    done = backbone_cli("report", str(tmp_path / "nope.json"))
    assert done.returncode == 2
    assert "cannot read it" in done.stderr and "Traceback" not in done.stderr
