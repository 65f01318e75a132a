"""The Lambda functions as planned for dev and prod: packaging, logs, least-privilege roles,
schedules, async failure handling, and the job's network path to the database."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest

from backbone.mocks import MAKERS
from backbone.synth import load_config, resolve
from infra import config, packaging
from tests.stack_files import variant_plan

REPO = Path(__file__).resolve().parent.parent
FN = "aws:lambda/function:Function"
STACKS = ["dev", "prod"]
NAMESPACES = {"canary": "Backbone/Canary", "housekeeping": "Backbone/Jobs"}
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


@pytest.fixture(params=STACKS)
def plan(request, plan_of):
    return plan_of(request.param)


def cfg(plan):
    return load_config(resolve(plan.stack, REPO))


def mocked(plan, resource):
    """The outputs the offline engine gave a resource (its ARN, name...)."""
    urn = f"{plan.project}::{plan.stack}::{resource.type}::{resource.name}"
    return MAKERS[resource.type](resource.name, urn, resource.inputs, "us-east-1")[1]


def functions(plan):
    """The Functions component's own (the password rotation's are tests/test_password_rotation.py)."""
    (component,) = plan.of_type("backbone:functions:Functions")
    return {
        r.inputs["handler"].split(".")[0]: r for r in plan.of_type(FN) if r.parent == component.urn
    }


def as_list(value):
    return value if isinstance(value, list) else [value]


def test_two_functions_with_the_configured_runtime_and_sizes(plan):
    f = cfg(plan).functions
    fns = functions(plan)
    assert set(fns) == {"canary", "housekeeping"}
    for part, fn in fns.items():
        i = fn.inputs
        assert i["name"] == f"backbone-{plan.stack}-{part}"
        assert i["handler"] == f"{part}.handler"
        assert i["runtime"] == f.runtime and i["architectures"] == [f.architecture]
        assert i["memorySize"] == f.memory_mb
        # unset in dev (a new account cannot reserve any), set in prod
        assert i.get("reservedConcurrentExecutions") == f.reserved_concurrency
        timeout = f.canary_timeout_seconds if part == "canary" else f.housekeeping_timeout_seconds
        assert i["timeout"] == timeout
        # Offline: the archive the build would make, by name; no pip ran.
        spec = packaging.describe(
            REPO / "app" / "functions" / part,
            architecture=f.architecture,
            python_version=f.runtime.removeprefix("python"),
        )
        assert i["code"] == {"archive": f".backbone/build/{spec.archive_name}"}


def test_log_group_first_named_after_the_function_with_retention(plan):
    f = cfg(plan).functions
    groups = {g.inputs.get("name"): g for g in plan.of_type("aws:cloudwatch/logGroup:LogGroup")}
    for fn in functions(plan).values():
        group = groups[f"/aws/lambda/{fn.inputs['name']}"]
        assert group.inputs["retentionInDays"] == f.log_retention_days
        assert group.urn in fn.dependencies
        assert fn.inputs["loggingConfig"]["logGroup"] == group.inputs["name"]


def _role_policy(plan, fn):
    roles = {mocked(plan, r)["arn"]: r for r in plan.of_type("aws:iam/role:Role")}
    role = roles[fn.inputs["role"]]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    (policy,) = [
        p for p in plan.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id
    ]
    # No managed policy: every grant is in the one inline policy checked here.
    attachments = plan.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert not [a for a in attachments if a.inputs["role"] == role.id]
    return json.loads(policy.inputs["policy"])


def test_roles_grant_only_what_each_function_needs(plan):
    queue = mocked(plan, plan.one("aws:sqs/queue:Queue"))["arn"]
    groups = {
        g.inputs.get("name"): mocked(plan, g)["arn"]
        for g in plan.of_type("aws:cloudwatch/logGroup:LogGroup")
    }
    for part, fn in functions(plan).items():
        doc = _role_policy(plan, fn)
        granted: dict[str, list[str]] = {}
        for st in doc["Statement"]:
            assert st["Effect"] == "Allow"
            actions = as_list(st["Action"])
            assert not [a for a in actions if "*" in a], (part, actions)
            for action in actions:
                granted.setdefault(action, []).extend(as_list(st["Resource"]))
            if st["Resource"] == "*":
                # Only where AWS offers no resource-level scoping, and then narrowed.
                if actions == ["cloudwatch:PutMetricData"]:
                    assert st["Condition"] == {
                        "StringEquals": {"cloudwatch:namespace": NAMESPACES[part]}
                    }
                else:
                    assert set(actions) == ENI_ACTIONS and part == "housekeeping"
            else:
                assert "Condition" not in st
        log_group = groups[f"/aws/lambda/{fn.inputs['name']}"]
        expected = {
            "logs:CreateLogStream": [f"{log_group}:log-stream:*"],
            "logs:PutLogEvents": [f"{log_group}:log-stream:*"],
            "cloudwatch:PutMetricData": ["*"],
            "sqs:SendMessage": [queue],
        }
        if part == "housekeeping":
            secret = fn.inputs["environment"]["variables"]["DB_SECRET_ARN"]
            assert secret.startswith("arn:aws:secretsmanager:us-east-1:123456789012:secret:")
            expected["secretsmanager:GetSecretValue"] = [secret]
            expected |= {a: ["*"] for a in ENI_ACTIONS}
        assert granted == expected, part


def test_each_function_runs_on_its_schedule(plan):
    f = cfg(plan).functions
    schedules = {"canary": f.canary_schedule, "housekeeping": f.housekeeping_schedule}
    rules = {r.name: r for r in plan.of_type("aws:cloudwatch/eventRule:EventRule")}
    for part, fn in functions(plan).items():
        rule = rules[f"functions-{part}-schedule"]
        assert rule.inputs["scheduleExpression"] == schedules[part]
        arn = mocked(plan, fn)["arn"]
        (target,) = [
            t
            for t in plan.of_type("aws:cloudwatch/eventTarget:EventTarget")
            if t.inputs["arn"] == arn
        ]
        assert target.inputs["rule"] == rule.id
        assert target.inputs["retryPolicy"]["maximumRetryAttempts"] <= 2
        (perm,) = [
            p
            for p in plan.of_type("aws:lambda/permission:Permission")
            if p.inputs["function"] == fn.inputs["name"]
        ]
        assert perm.inputs["action"] == "lambda:InvokeFunction"
        assert perm.inputs["principal"] == "events.amazonaws.com"
        assert perm.inputs["sourceArn"] == mocked(plan, rule)["arn"]
        assert perm.urn in target.dependencies


def test_failed_async_events_go_to_an_encrypted_queue_after_bounded_retries(plan):
    queue = plan.one("aws:sqs/queue:Queue")
    assert queue.inputs["sqsManagedSseEnabled"] is True
    assert queue.inputs["messageRetentionSeconds"] == 14 * 86400
    configs = {
        c.inputs["functionName"]: c
        for c in plan.of_type("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
    }
    for fn in functions(plan).values():
        c = configs[fn.inputs["name"]].inputs
        assert 0 <= c["maximumRetryAttempts"] <= 2
        assert 60 <= c["maximumEventAgeInSeconds"] <= 21600
        assert c["destinationConfig"] == {"onFailure": {"destination": mocked(plan, queue)["arn"]}}


def test_canary_probes_the_load_balancer_from_outside_the_vpc(plan):
    canary = functions(plan)["canary"].inputs
    assert "vpcConfig" not in canary
    c = cfg(plan)
    assert canary["environment"]["variables"] == {
        "CANARY_BASE_URL": plan.outputs["url"],
        "CANARY_HEALTH_PATH": "/readyz",
        "CANARY_READ_PATH": c.functions.canary_read_path,
        # the known link the migration creates: its lookup answers 200 (no 404 accepted), and the
        # redirect probe follows it to exactly this URL
        "CANARY_REDIRECT_CODE": c.app.canary_link_code,
        "CANARY_REDIRECT_URL": c.app.canary_link_url,
        "CANARY_CERT_WARN_DAYS": str(c.functions.canary_cert_warn_days),
        "STACK_NAME": plan.stack,
        "METRICS_NAMESPACE": "Backbone/Canary",
    }


def test_the_canary_follows_the_link_the_migration_creates(plan):
    job = plan.one("kubernetes:batch/v1:Job", "app-migration").inputs
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    made = {e["name"]: e["value"] for e in migrate["env"] if e["name"].startswith("CANARY_")}
    env = functions(plan)["canary"].inputs["environment"]["variables"]
    assert made == {
        "CANARY_LINK_CODE": env["CANARY_REDIRECT_CODE"],
        "CANARY_LINK_URL": env["CANARY_REDIRECT_URL"],
    }
    assert env["CANARY_READ_PATH"] == f"/api/links/{made['CANARY_LINK_CODE']}"
    # only the migration makes it: the app's container does not carry it
    deployment = plan.one("kubernetes:apps/v1:Deployment", "app-deployment").inputs
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "env" not in app or not [e for e in app["env"] if e["name"].startswith("CANARY")]


def test_prod_serves_https_so_the_canary_reads_the_certificate(plan):
    env = functions(plan)["canary"].inputs["environment"]["variables"]
    https = env["CANARY_BASE_URL"].startswith("https://")
    assert https == (plan.stack == "prod")
    assert int(env["CANARY_CERT_WARN_DAYS"]) == 21


def test_the_job_purges_with_its_configured_settings(plan, tmp_path):
    env = functions(plan)["housekeeping"].inputs["environment"]["variables"]
    assert {k: v for k, v in env.items() if k.startswith("PURGE_")} == {
        "PURGE_GRACE_DAYS": "0",
        "PURGE_UNUSED_AFTER_DAYS": "0",  # unused links kept unless the owner says otherwise
        "PURGE_BATCH_SIZE": "1000",
        "PURGE_MAX_BATCHES": "100",
    }


def test_job_runs_in_the_private_subnets_and_reaches_only_the_database_and_https(plan):
    job = functions(plan)["housekeeping"].inputs
    assert job["vpcConfig"]["subnetIds"] == plan.outputs["privateSubnetIds"]
    (sg_id,) = job["vpcConfig"]["securityGroupIds"]
    sg = plan.one("aws:ec2/securityGroup:SecurityGroup", "functions-housekeeping-sg")
    assert sg.id == sg_id and "ingress" not in sg.inputs and "egress" not in sg.inputs
    db_sg = plan.one("aws:ec2/securityGroup:SecurityGroup", "database-sg")

    def rules(kind, group):
        token = f"aws:vpc/securityGroup{kind}Rule:SecurityGroup{kind}Rule"
        return [
            (
                r.inputs["ipProtocol"],
                r.inputs["fromPort"],
                r.inputs["toPort"],
                r.inputs.get("referencedSecurityGroupId") or r.inputs.get("cidrIpv4"),
            )
            for r in plan.of_type(token)
            if r.inputs["securityGroupId"] == group
        ]

    assert sorted(rules("Egress", sg_id)) == sorted(
        [("tcp", 5432, 5432, db_sg.id), ("tcp", 443, 443, "0.0.0.0/0")]
    )
    assert rules("Ingress", sg_id) == []
    assert ("tcp", 5432, 5432, sg_id) in rules("Ingress", db_sg.id)


def test_job_reads_its_credentials_at_run_time_never_from_env_or_plan(plan):
    job = functions(plan)["housekeeping"].inputs
    env = job["environment"]["variables"]
    db = plan.one("aws:rds/instance:Instance")
    assert env["DB_HOST"] == mocked(plan, db)["address"]
    assert env["DB_NAME"] == db.inputs["dbName"] and env["DB_PORT"] == "5432"
    assert not [k for k in env if "PASS" in k.upper() or "URL" in k.upper()]
    version = plan.one("aws:secretsmanager/secretVersion:SecretVersion", "functions-db-credentials")
    secret = plan.one("aws:secretsmanager/secret:Secret", "functions-db-credentials")
    assert version.inputs["secretString"] == "[secret]"
    assert version.inputs["secretId"] == secret.id == env["DB_SECRET_ARN"]


def test_offline_plan_never_builds_an_archive(monkeypatch):
    """`backbone plan` stays offline and fast: packaging.build is never called under mocks."""
    from backbone.synth import synth

    def refuse(*a, **k):
        raise AssertionError("packaging.build ran under the offline engine")

    monkeypatch.setattr(packaging, "build", refuse)
    plan = synth("dev", cwd=REPO)
    # the canary, the job and the two password rotation functions
    assert len(plan.of_type(FN)) == 4


def test_a_real_engine_gets_the_built_archive(monkeypatch, tmp_path):
    from infra import stack

    built = tmp_path / "canary.zip"
    calls = []

    def build(source_dir, *, architecture, python_version):
        calls.append((Path(source_dir).name, architecture, python_version))
        return built

    monkeypatch.setattr(packaging, "build", build)
    # The Pulumi CLI sets no engine packager: the program builds the archive.
    package = stack.PACKAGERS[config.packager({"aws:region": "us-east-1"})]
    archive = package(REPO / "app/functions/canary", "arm64", "3.13")
    assert isinstance(archive, pulumi.FileArchive) and archive.path == str(built)
    assert calls == [("canary", "arm64", "3.13")]


def test_the_engine_packager_is_the_engines_to_set_never_a_stack_files(tmp_path):
    from backbone.synth import synth

    path = tmp_path / "Pulumi.sneaky.yaml"
    text = (REPO / "stacks/Pulumi.dev.yaml").read_text()
    path.write_text(
        text.replace("config:\n", "config:\n  backbone-engine:packager: placeholder\n", 1)
    )
    with pytest.raises(config.ConfigError, match="backbone-engine:packager: set by the engine"):
        synth(str(path), cwd=REPO)
    with pytest.raises(config.ConfigError, match="'zip'; allowed: build, placeholder"):
        config.parse({"aws:region": "us-east-1", config.PACKAGER_KEY: "zip"}, source="s", stack="s")


def _dev_with(**functions_settings):
    """dev with these backbone:functions settings (synthesised once per test process)."""
    changes = {f"functions.{k}": v for k, v in functions_settings.items()}
    return variant_plan("dev", "Pulumi.dev.yaml", changes)


def test_without_the_job_only_the_canary_is_made():
    plan = _dev_with(housekeeping=False)
    assert set(functions(plan)) == {"canary"}
    # the job's secret goes with it (dev's database keeps the app's own)
    assert not [r for r in plan.managed() if r.name.startswith("functions-db-credentials")]
    assert not [r for r in plan.managed() if "housekeeping" in r.name]
    assert "housekeepingFunction" not in plan.outputs
    alarms = {a.name for a in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert "monitoring-job-housekeeping" not in alarms
    # the canary's alarms stay whole (`alarms: all`)
    assert {
        "monitoring-fn-canary-errors",
        "monitoring-canary-health-availability",
        "monitoring-canary-read-latency",
        "monitoring-fn-failures-queue",
    } <= alarms


def test_one_availability_alarm_when_the_stack_counts_its_alarms():
    full = _dev_with(housekeeping=False)
    one = _dev_with(housekeeping=False, alarms="availability")
    of_functions = ("monitoring-fn-", "monitoring-canary-", "monitoring-job-")
    names = {
        label: {
            a.name
            for a in p.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
            if a.name.startswith(of_functions)
        }
        for label, p in (("full", full), ("one", one))
    }
    assert names["one"] == {"monitoring-canary-read-availability"}
    assert len(names["full"]) == 9  # errors, throttles, 3 x (availability, latency), the queue
    # the other alarms of the stack are untouched
    rest = {a.name for a in one.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert (
        rest - names["one"]
        == {a.name for a in full.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")} - names["full"]
    )
