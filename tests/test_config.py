"""Stack config: every problem at once, naming the file, the key, the bad value and what is allowed.

The same errors come from `backbone plan` (exit 2, no traceback) and from the program itself under
the engine, before any resource is registered.
"""

from __future__ import annotations

import contextvars
import textwrap
from pathlib import Path

import pulumi
import pytest
from pydantic import ValidationError

from backbone.mocks import BackboneMocks
from backbone.synth import RecordingMonitor, StackRef, read_config, run_program
from infra.config import ConfigError, StackConfig, docs, parse

REPO = Path(__file__).resolve().parent.parent


def problems(yaml_text: str, tmp_path: Path, name: str = "Pulumi.bad.yaml") -> list[str]:
    file = tmp_path / name
    file.write_text(textwrap.dedent(yaml_text))
    ref = StackRef(REPO, "backbone", "bad", file)
    with pytest.raises(ConfigError) as info:
        raw, _ = read_config(ref)
        parse(raw, source=str(file), stack="bad")
    assert str(file) in str(info.value)
    return [str(p) for p in info.value.problems]


def test_defaults_are_valid_and_documented():
    cfg = parse({"aws:region": "eu-west-1"}, "x", "s")
    assert cfg.network.cidr == "10.0.0.0/16" and cfg.network.nat == "single"
    table = docs()
    for key in (
        "backbone:network.cidr",
        "backbone:network.azCount",
        "backbone:network.nat",
        "aws:region",
        "backbone:protect",
    ):
        assert f"`{key}`" in table
    # every documented key has a meaning
    assert "|  |" not in table


def test_unknown_key_is_refused_with_did_you_mean(tmp_path):
    got = problems(
        """
        config:
          aws:region: us-east-1
          backbone:netwrok: {cidr: 10.0.0.0/16}
          backbone:network: {azcount: 2}
        """,
        tmp_path,
    )
    assert any(p.startswith("backbone:netwrok: unknown key (did you mean 'network'?)") for p in got)
    assert any(
        p.startswith("backbone:network.azcount: unknown key (did you mean 'azCount'?)") for p in got
    )


def test_every_problem_is_reported_at_once(tmp_path):
    got = problems(
        """
        config:
          aws:region: us-east-1
          backbone:network:
            nat: sometimes
            azCount: 9
            flowLogs: maybe
        """,
        tmp_path,
    )
    text = "\n".join(got)
    assert (
        "backbone:network.nat: 'sometimes' is not allowed: allowed: 'none', 'single' or 'per-az'"
        in text
    )
    assert (
        "backbone:network.azCount: 9 is not allowed: input should be less than or equal to 6"
        in text
    )
    assert "backbone:network.flowLogs: 'maybe' is not allowed: allowed: a true or false" in text
    assert len(got) == 3


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("10.0.0.1/16", "is not an IPv4 network"),
        ("banana", "is not an IPv4 network"),
        ("8.8.0.0/16", "is not a private network"),
        ("fd00::/48", "is IPv6"),
        ("10.0.0.0/8", "has prefix /8; allowed: /16 to /24"),
    ],
)
def test_bad_vpc_cidr(tmp_path, cidr, expected):
    got = problems(
        f"config:\n  aws:region: us-east-1\n  backbone:network: {{cidr: '{cidr}'}}\n", tmp_path
    )
    assert len(got) == 1 and got[0].startswith(f"backbone:network.cidr: '{cidr}' {expected}")


def test_subnets_that_do_not_fit_the_vpc(tmp_path):
    got = problems(
        """
        config:
          aws:region: us-east-1
          backbone:network: {cidr: 10.0.0.0/22, azCount: 3, subnetPrefixLength: 24}
        """,
        tmp_path,
    )
    assert got == [
        "backbone:network.subnetPrefixLength: 6 subnets of /24 (a public and a private one in "
        "each of 3 zones) do not fit in 10.0.0.0/22, which holds 4; allowed: /25 or longer, or a "
        "larger VPC"
    ]


def test_one_zone_is_too_few_for_a_database(tmp_path):
    got = problems(
        """
        config:
          aws:region: us-east-1
          backbone:network: {azCount: 1}
          backbone:database: {enabled: true}
        """,
        tmp_path,
    )
    assert got == [
        "backbone:network.azCount: 1 zone is too few for the database (AWS needs subnets in at "
        "least two availability zones); allowed: 2 to 6, or backbone:database.enabled: false"
    ]


def test_region_typo_and_missing_region(tmp_path):
    got = problems("config:\n  aws:region: us-east-7\n", tmp_path)
    assert got[0].startswith("aws:region: 'us-east-7' is not an AWS region (did you mean 'us-east-")
    got = problems("config:\n  backbone:protect: true\n", tmp_path)
    assert got == [
        "aws:region: missing; allowed: an AWS region such as us-east-1 or eu-west-1 (target is aws)"
    ]


def test_unknown_namespace_and_keys_without_namespace(tmp_path):
    got = problems(
        "config:\n  aws:region: us-east-1\n  backbon:protect: true\n  protect: true\n", tmp_path
    )
    assert any(
        p.startswith("backbon:protect: unknown namespace 'backbon' (did you mean 'backbone'?)")
        for p in got
    )
    assert "protect: a config key needs a namespace; did you mean 'backbone:protect'?" in got


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("config: [1, 2\n", "line 2, column 1: not valid YAML"),
        ("- just\n- a list\n", "the file holds a list; allowed: a mapping with a `config:` key"),
        ("configs:\n  aws:region: us-east-1\n", "configs: unknown top-level key"),
        ("config: 3\n", "config: must be a mapping"),
    ],
)
def test_malformed_files(tmp_path, text, expected):
    got = problems(text, tmp_path)
    assert any(expected in p for p in got), got


def test_secure_values_never_reach_the_program_in_clear(tmp_path):
    file = tmp_path / "Pulumi.s.yaml"
    file.write_text("config:\n  aws:region: us-east-1\n  aws:secretKey:\n    secure: v1:abcdef\n")
    raw, secret_keys = read_config(StackRef(REPO, "backbone", "s", file))
    assert raw["aws:secretKey"] == "[secret]" and secret_keys == ["aws:secretKey"]


def test_the_program_refuses_bad_config_before_registering_anything(tmp_path):
    """What `pulumi up` does: the program's own config check stops it, nothing is registered."""
    ref = StackRef(REPO, "backbone", "dev", tmp_path / "unused.yaml")
    raw = {"aws:region": "us-east-1", "backbone:network": '{"nat": "always"}'}
    monitor = RecordingMonitor(BackboneMocks("dev", "backbone", "us-east-1"))
    # A RunError: the engine prints its message with no traceback.
    with pytest.raises(pulumi.RunError) as info:
        contextvars.Context().run(run_program, ref, raw, [], monitor)
    assert not isinstance(info.value, ConfigError)  # the schema knows nothing of Pulumi
    assert str(info.value).startswith("stacks/Pulumi.dev.yaml: 1 problem in the stack config:")
    assert "backbone:network.nat: 'always' is not allowed" in str(info.value)
    assert monitor.records == []


def test_config_model_is_frozen():
    cfg = StackConfig(region="us-east-1")
    with pytest.raises(ValidationError):
        cfg.protect = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "backbone:database: {enabled: true, instanceClass: db.t4g.mikro}",
            "backbone:database.instanceClass: 'db.t4g.mikro' is not an RDS instance class for PostgreSQL (did you mean 'db.t4g.micro'?)",
        ),
        (
            "backbone:database: {enabled: true, instanceClass: db.t2.micro}",
            "backbone:database.instanceClass: 'db.t2.micro' is a previous generation that RDS PostgreSQL 14+ does not support",
        ),
        (
            "backbone:database: {enabled: true, engineVersion: '13'}",
            "backbone:database.engineVersion: '13' is not a PostgreSQL major under RDS standard support; allowed: 14, 15, 16, 17, 18",
        ),
        (
            "backbone:database: {enabled: true, allocatedStorageGb: 10}",
            "backbone:database.allocatedStorageGb: 10 is not allowed: input should be greater than or equal to 20",
        ),
        (
            "backbone:database: {enabled: true, username: postgres}",
            "backbone:database.username: 'postgres' is reserved by RDS PostgreSQL",
        ),
        (
            "backbone:cluster: {enabled: true, version: '1.29'}",
            "backbone:cluster.version: '1.29' is not under EKS standard support; allowed: 1.34, 1.35, 1.36",
        ),
        (
            "backbone:cluster: {enabled: true, minNodes: 3, desiredNodes: 2, maxNodes: 4}",
            "backbone:cluster.desiredNodes: minNodes 3 <= desiredNodes 2 <= maxNodes 4 does not hold",
        ),
        (
            "backbone:cluster: {enabled: true, architecture: arm64, instanceTypes: [t3.medium]}",
            "backbone:cluster.instanceTypes: 't3.medium' does not run arm64 nodes",
        ),
        (
            "backbone:app: {replicas: 1, minReplicas: 2}",
            "backbone:app.replicas: minReplicas 2 <= replicas 1 <= maxReplicas 4 does not hold",
        ),
    ],
)
def test_what_aws_would_refuse_is_refused_first(tmp_path, section, expected):
    got = problems(f"config:\n  aws:region: us-east-1\n  {section}\n", tmp_path)
    assert any(p.startswith(expected) for p in got), got


def test_cluster_needs_a_nat_and_two_zones_and_so_does_the_load_balancer(tmp_path):
    got = problems(
        """
        config:
          aws:region: us-east-1
          backbone:network: {azCount: 1, nat: none}
          backbone:cluster: {enabled: true}
          backbone:loadbalancer: {enabled: true}
        """,
        tmp_path,
    )
    text = "\n".join(got)
    assert "backbone:network.nat: 'none' leaves the cluster's nodes in private subnets" in text
    assert "backbone:network.azCount: 1 zone is too few for EKS" in text
    assert "backbone:network.azCount: 1 zone is too few for the loadbalancer" in text


# -- functions and monitoring ----------------------------------------------------------------

_PLATFORM = """
config:
  aws:region: us-east-1
  backbone:network: {azCount: 2, nat: single}
  backbone:database: {enabled: true}
  backbone:loadbalancer: {enabled: true}
"""


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "backbone:functions: {enabled: true, canarySchedule: every 5 minutes}",
            "backbone:functions.canarySchedule: 'every 5 minutes' is not a rate between one "
            "minute and one hour",
        ),
        (
            "backbone:functions: {enabled: true, canarySchedule: rate(5 minute)}",
            "backbone:functions.canarySchedule: 'rate(5 minute)' is not a rate",
        ),
        (
            "backbone:functions: {enabled: true, canarySchedule: rate(2 hours)}",
            "allowed: rate(1 minute) to rate(60 minutes)",
        ),
        (
            "backbone:functions: {enabled: true, housekeepingSchedule: cron(30 3 * * *)}",
            "backbone:functions.housekeepingSchedule: 'cron(30 3 * * *)' is not an EventBridge "
            "schedule",
        ),
        (
            "backbone:functions: {enabled: true, housekeepingSchedule: cron(30 3 * * * *)}",
            "exactly one of day-of-month (3rd field) and day-of-week (5th field) must be '?'",
        ),
        (
            "backbone:functions: {enabled: true, housekeepingSchedule: 'cron(0 3 ? * MON *)'}",
            "does not run every day",
        ),
        (
            "backbone:functions: {enabled: true, runtime: python3.9}",
            "backbone:functions.runtime: 'python3.9' is not a supported Lambda Python runtime "
            "for these functions; allowed: python3.12, python3.13",
        ),
        (
            "backbone:functions: {enabled: true, architecture: aarch64}",
            "backbone:functions.architecture: 'aarch64' is not allowed: allowed: 'x86_64' or "
            "'arm64'",
        ),
        (
            "backbone:functions: {enabled: true, logRetentionDays: 10}",
            "backbone:functions.logRetentionDays: 10 is not a CloudWatch retention period",
        ),
        (
            "backbone:functions: {enabled: true, canaryTimeoutSeconds: 10}",
            "backbone:functions.canaryTimeoutSeconds: 10 s is too short",
        ),
        (
            "backbone:functions: {enabled: true, memoryMb: 64}",
            "backbone:functions.memoryMb: 64 is not allowed: input should be greater than or "
            "equal to 128",
        ),
        (
            "backbone:monitoring: {enabled: true, alertEmail: ops-at-example.com}",
            "backbone:monitoring.alertEmail: 'ops-at-example.com' is not an email address",
        ),
        (
            "backbone:monitoring: {enabled: true, dbCpuPercent: 150}",
            "backbone:monitoring.dbCpuPercent: 150 is not allowed: input should be less than "
            "or equal to 100",
        ),
        (
            "backbone:monitoring: {enabled: true, albErrorRatePercent: 0}",
            "backbone:monitoring.albErrorRatePercent: 0 is not allowed: input should be greater "
            "than 0",
        ),
        (
            "backbone:monitoring: {enabled: true, periodSeconds: 90}",
            "backbone:monitoring.periodSeconds: 90 is not a CloudWatch alarm period",
        ),
        (
            "backbone:monitoring: {enabled: true, periodSeconds: 3600, evaluationPeriods: 30}",
            "backbone:monitoring.evaluationPeriods: 30 periods of 3600 s span more than a day",
        ),
        (
            "backbone:monitoring: {enabled: true, evaluationPeriods: 0}",
            "backbone:monitoring.evaluationPeriods: 0 is not allowed",
        ),
    ],
)
def test_functions_and_monitoring_refusals(tmp_path, section, expected):
    got = problems(_PLATFORM + "  " + section + "\n", tmp_path)
    assert any(expected in p for p in got), got


def test_functions_need_the_load_balancer_the_database_and_a_nat(tmp_path):
    got = problems(
        """
        config:
          aws:region: us-east-1
          backbone:network: {azCount: 2, nat: none}
          backbone:functions: {enabled: true}
        """,
        tmp_path,
    )
    assert any(
        p.startswith(
            "backbone:loadbalancer.enabled: false, but functions.enabled is true and "
            "the canary probes the app through it"
        )
        for p in got
    ), got
    assert any(p.startswith("backbone:database.enabled: false, but functions.enabled") for p in got)
    assert any(
        p.startswith("backbone:network.nat: 'none' leaves the housekeeping job") for p in got
    )


def test_billing_alarm_only_where_aws_publishes_billing_metrics(tmp_path):
    got = problems(
        """
        config:
          aws:region: eu-west-1
          backbone:monitoring: {enabled: true, billingAlarmUsd: 5}
        """,
        tmp_path,
    )
    assert got == [
        "backbone:monitoring.billingAlarmUsd: set, but AWS publishes billing metrics only in "
        "us-east-1 and this stack runs in eu-west-1; allowed: leave it out here"
    ]


def test_functions_and_monitoring_defaults_are_sound_and_documented():
    from infra.config import LAMBDA_PYTHON_RUNTIMES, rate_seconds, schedule_problem

    cfg = parse({"aws:region": "us-east-1"}, "x", "s")
    assert not cfg.functions.enabled and not cfg.monitoring.enabled
    assert cfg.functions.runtime in LAMBDA_PYTHON_RUNTIMES
    assert rate_seconds(cfg.functions.canary_schedule) == 300
    assert schedule_problem(cfg.functions.housekeeping_schedule) is None
    assert rate_seconds("rate(1 minute)") == 60 and rate_seconds("rate(1 minutes)") is None
    table = docs()
    for key in (
        "backbone:functions.canarySchedule",
        "backbone:functions.runtime",
        "backbone:monitoring.alertEmail",
        "backbone:monitoring.albErrorRatePercent",
        "backbone:monitoring.prometheusRules",
    ):
        assert f"`{key}`" in table


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "backbone:monitoring: {enabled: true, periodSeconds: 30}",
            "backbone:monitoring.periodSeconds: 30 is not a CloudWatch alarm period",
        ),
    ],
)
def test_review_findings_are_refused(tmp_path, section, expected):
    got = problems(f"config:\n  aws:region: us-east-1\n  {section}\n", tmp_path)
    assert any(p.startswith(expected) for p in got), got


def test_a_cluster_without_its_database_is_refused_not_trimmed(tmp_path):
    """The cluster runs the app, and the app needs its database: config says so, instead of the
    program planning a cluster with nothing on it."""
    got = problems(
        """
        config:
          aws:region: us-east-1
          backbone:network: {azCount: 2, nat: single}
          backbone:cluster: {enabled: true}
        """,
        tmp_path,
    )
    assert (
        "backbone:database.enabled: false, but cluster.enabled is true and the app the cluster "
        "runs needs its database; allowed: backbone:database.enabled: true, or "
        "backbone:cluster.enabled: false"
    ) in got
