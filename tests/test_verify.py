"""`backbone verify`: a dev stack and a free-tier stack "deployed" with boto3 into moto's AWS
emulation (server mode, real HTTP on loopback) and the app's stand-in on loopback; verify passes,
then one thing at a time is broken and each is reported as its own failure.

Each stack is deployed once per module (`account`) and shared: a test that breaks something
registers how to put it back (`undo`), run after the test whatever its outcome; a test that
leaves what cannot be put back (metric data: CloudWatch deletes none) undoes with a fresh
account, and the next test deploys again. Every test starts from the stack as deployed.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.retries.standard import ExponentialBackoff

from backbone import verify as verify_module
from tests.aws_harness import (
    REGION,
    AppState,
    backbone,
    client,
    emulated_account,
    lambda_zip,
    moto_server,
    refusing_aws,
    reset_account,
)
from tests.aws_harness import app_server as app_server
from tests.realparts import free_port

pytestmark = pytest.mark.realpart
_ = (moto_server, refusing_aws)  # fixtures

SECRET_TOKEN = "tok-3f9a-never-shown-anywhere-0042"
SECRET_KUBECONFIG = "kubeconfig-secret-certificate-data-0042"
ALARMS = [
    "backbone-dev-alb-5xx-rate",
    "backbone-dev-alb-unhealthy-hosts",
    "backbone-dev-db-cpu",
    "backbone-dev-fn-canary-errors",
    "backbone-dev-canary-health-availability",
]


# --------------------------------------------------------------------------- deployed stacks


def _network() -> tuple[str, list[str]]:
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    return vpc, subnets


@functools.cache
def _image() -> str:
    """One of the images moto ships (the same after every reset): asked for by name, so that
    moto does not describe all of its images."""
    images = client("ec2").describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}]
    )["Images"]
    return str(images[0]["ImageId"])


def _role(name: str, service: str) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }
    return str(
        client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"
        ]["Arn"]
    )


def _function(name: str, role: str) -> None:
    client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": lambda_zip()},
    )


def _functions(stack: str) -> dict[str, str]:
    role = _role(f"backbone-{stack}-functions", "lambda.amazonaws.com")
    names = {"_role": role}
    for short in ("canary", "housekeeping"):
        name = f"backbone-{stack}-{short}"
        _function(name, role)
        names[short] = name
    return names


def invocations(function: str, count: int, errors: int, minutes_ago: int = 0) -> None:
    """Lambda's own metrics for one 5-minute period, as Lambda publishes them."""
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    dims = [{"Name": "FunctionName", "Value": function}]
    client("cloudwatch").put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": dims, "Value": count, "Timestamp": when},
            {"MetricName": "Errors", "Dimensions": dims, "Value": errors, "Timestamp": when},
        ],
    )


def _alarms(names: list[str], topic: str) -> None:
    cw = client("cloudwatch")
    for name in names:
        cw.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=f"{name}: check the thing it watches and what to do.",
            Namespace="AWS/ApplicationELB",
            MetricName="RequestCount",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=3,
            Threshold=1,
            ComparisonOperator="GreaterThanThreshold",
            AlarmActions=[topic],
            OKActions=[topic],
        )
        cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="fine")


def ok_again(alarm: str) -> None:
    client("cloudwatch").set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="fine")


def deploy_dev(*, multi_az: bool = False) -> dict[str, Any]:
    """What `pulumi up -s dev` leaves, made with boto3: its outputs (as the stack exports them)
    but the app's URL (each test's own stand-in)."""
    vpc, subnets = _network()
    ec2 = client("ec2")
    nodes = ec2.run_instances(ImageId=_image(), MinCount=2, MaxCount=2, InstanceType="t3.medium")
    node_ids = [i["InstanceId"] for i in nodes["Instances"]]

    elb = client("elbv2")
    lb = elb.create_load_balancer(Name="web-alb-1234567", Subnets=subnets, Type="application")[
        "LoadBalancers"
    ][0]
    tg = elb.create_target_group(
        Name="web-tg-1234567",
        Protocol="HTTP",
        Port=30080,
        VpcId=vpc,
        TargetType="instance",
        HealthCheckPath="/readyz",
    )["TargetGroups"][0]
    elb.register_targets(
        TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": i, "Port": 30080} for i in node_ids]
    )

    db = client("rds").create_db_instance(
        DBInstanceIdentifier="database-postgres-1234567",
        Engine="postgres",
        DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20,
        MasterUsername="shortener",
        MasterUserPassword="not-a-real-password-0042",
        StorageEncrypted=True,
        PubliclyAccessible=False,
        BackupRetentionPeriod=1,
        MultiAZ=multi_az,
    )["DBInstance"]

    eks = client("eks")
    cluster_role = _role("backbone-dev-cluster", "eks.amazonaws.com")
    eks.create_cluster(
        name="backbone-dev",
        version="1.35",
        roleArn=cluster_role,
        resourcesVpcConfig={"subnetIds": subnets},
    )
    node_role = _role("backbone-dev-nodes", "ec2.amazonaws.com")
    group = eks.create_nodegroup(
        clusterName="backbone-dev",
        nodegroupName="cluster-nodes-1234abcd",
        nodeRole=node_role,
        subnets=subnets,
    )["nodegroup"]

    functions = _functions("dev")
    invocations(functions["canary"], 1, 0, minutes_ago=3)
    topic = client("sns").create_topic(Name="monitoring-alerts-1234567")["TopicArn"]
    _alarms(ALARMS, topic)
    return {
        "region": REGION,
        "vpcId": vpc,
        "loadBalancerArn": lb["LoadBalancerArn"],
        "targetGroupArn": tg["TargetGroupArn"],
        "databaseAddress": db["Endpoint"]["Address"],
        "databasePort": 5432,
        "databaseName": "shortener",
        "databaseInstanceId": db["DBInstanceIdentifier"],
        "databaseMultiAz": multi_az,
        "clusterName": "backbone-dev",
        "nodeGroupName": group["nodegroupName"],
        "kubeconfig": SECRET_KUBECONFIG,
        "appNamespace": "backbone",
        "appApiToken": SECRET_TOKEN,
        "canaryFunction": functions["canary"],
        "housekeepingFunction": functions["housekeeping"],
        "alertsTopicArn": topic,
        "alarmNames": ALARMS,
        "_nodes": node_ids,  # for the tests, not an output
        "_functionRole": functions["_role"],
    }


def deploy_free_tier() -> dict[str, Any]:
    """The free-tier stack: one host instance serving the app, a billing alarm (its outputs but
    the app's URL). It shares the account with dev: each checks only what its outputs name."""
    _network()
    host = client("ec2").run_instances(
        ImageId=_image(), MinCount=1, MaxCount=1, InstanceType="t3.micro"
    )["Instances"][0]["InstanceId"]
    topic = client("sns").create_topic(Name="monitoring-alerts-7654321")["TopicArn"]
    _alarms(["backbone-free-tier-billing"], topic)
    return {
        "region": REGION,
        "natGatewayCount": 0,
        "hostInstanceId": host,
        "alertsTopicArn": topic,
        "alarmNames": ["backbone-free-tier-billing"],
    }


def write_outputs(tmp_path: Path, outputs: dict[str, Any]) -> str:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({k: v for k, v in outputs.items() if not k.startswith("_")}))
    return str(path)


def verify(endpoint: str, stack: str, outputs: str, *extra: str, **kw: Any) -> Any:
    return backbone("verify", stack, "--outputs", outputs, *extra, endpoint=endpoint, **kw)


def checks(run: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in run.json()["checks"]}


def failing(run: Any) -> dict[str, str]:
    return {c["name"]: c["why"] for c in run.json()["checks"] if c["status"] == "fail"}


class Account:
    """This module's emulated account and the stacks deployed in it (each on first use)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.stacks: dict[str, dict[str, Any]] = {}

    def stack(self, name: str, deploy: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name not in self.stacks:
            self.stacks[name] = deploy()
        return self.stacks[name]

    def reset(self) -> None:
        """An empty account again: the next test deploys what it needs."""
        reset_account(self.endpoint)
        self.stacks.clear()


@pytest.fixture(scope="module")
def account(moto_server: str) -> Iterator[Account]:
    with emulated_account(moto_server):
        yield Account(moto_server)


@pytest.fixture
def aws(account: Account) -> str:
    """The endpoint of this module's account (boto3 in this process talks to it too)."""
    return account.endpoint


@pytest.fixture
def undo(account: Account) -> Iterator[Callable[..., None]]:
    """undo(fn, *args, **kwargs): call it after the test (last registered first). Should one
    fail, the account is reset, so that no later test starts from a broken stack."""
    todo: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
    yield lambda fn, *args, **kwargs: todo.append((fn, args, kwargs))
    try:
        for fn, args, kwargs in reversed(todo):
            fn(*args, **kwargs)
    except BaseException:
        account.reset()
        raise


@pytest.fixture(autouse=True)
def _short_http_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pause before an app check's next attempt (0.25 s, then 0.5 s) made 10 ms: the same
    attempts and findings, without seconds of waiting per failing check."""
    monkeypatch.setattr(verify_module, "RETRY_PAUSE", 0.01)


def _with_app(
    deployed: dict[str, Any], app_server: tuple[str, AppState], tmp_path: Path
) -> dict[str, Any]:
    url, state = app_server
    outputs = {**deployed, "url": url}
    outputs["_file"] = write_outputs(tmp_path, outputs)
    outputs["_app"] = state
    return outputs


@pytest.fixture
def dev(account: Account, app_server: tuple[str, AppState], tmp_path: Path) -> dict[str, Any]:
    return _with_app(account.stack("dev", deploy_dev), app_server, tmp_path)


# --------------------------------------------------------------------------- dev: all is well


def test_deployed_dev_stack_passes_every_check(aws: str, dev: dict[str, Any]) -> None:
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 0, run.stdout + run.stderr
    report = run.json()
    assert report["ok"] is True and report["failed"] == 0
    by_name = checks(run)
    assert list(by_name) == [
        "load balancer",
        "targets",
        "database",
        "cluster",
        "node group",
        "function canary",
        "function housekeeping",
        "canary dry run",
        "alarms",
        "app health",
        "app readiness",
        "app read",
    ]
    assert by_name["targets"]["why"] == "2 targets, all healthy"
    assert by_name["database"]["why"] == (
        "available, encrypted, not public, backups 1 day, Single-AZ"
    )
    assert by_name["function canary"]["why"].endswith("1 invocation(s), no errors")
    assert by_name["function housekeeping"]["why"] == "exists; not invoked in the last 24 h"
    assert by_name["canary dry run"]["why"].startswith("DryRun accepted (204)")
    assert by_name["alarms"]["why"] == "none of 5 alarms in ALARM"
    assert by_name["app read"]["why"] == "HTTP 404"  # the kit creates no link: an answer
    # the app was asked exactly what verify promises
    assert dev["_app"].hits == ["/healthz", "/readyz", "/api/links/backbone-canary"]


def test_checklist_text_and_secrets_never_shown(aws: str, dev: dict[str, Any]) -> None:
    run = verify(aws, "dev", dev["_file"])
    assert run.code == 0, run.stdout + run.stderr
    assert "all 12 checks pass" in run.stdout
    assert run.stdout.count("pass") >= 12
    for secret in (SECRET_TOKEN, SECRET_KUBECONFIG):
        assert secret not in run.stdout + run.stderr
    as_json = verify(aws, "dev", dev["_file"], "--format", "json")
    for secret in (SECRET_TOKEN, SECRET_KUBECONFIG):
        assert secret not in as_json.stdout + as_json.stderr


def test_multi_az_expectation_is_checked(aws: str, dev: dict[str, Any], tmp_path: Path) -> None:
    outputs = {k: v for k, v in dev.items() if not k.startswith("_")}
    outputs["databaseMultiAz"] = True  # prod says Multi-AZ; this instance is Single-AZ
    run = verify(aws, "prod", write_outputs(tmp_path, outputs), "--format", "json")
    assert run.code == 1
    assert failing(run) == {"database": "Single-AZ, the stack says Multi-AZ"}


# --------------------------------------------------------------------------- dev: one thing broken


def test_unhealthy_target(aws: str, dev: dict[str, Any], undo: Any) -> None:
    broken = dev["_nodes"][1]
    client("ec2").stop_instances(InstanceIds=[broken])
    undo(client("ec2").start_instances, InstanceIds=[broken])
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 1
    fails = failing(run)
    assert list(fails) == ["targets"]
    assert fails["targets"].startswith("1 of 2 targets not healthy: ")
    assert f"{broken}:30080 unused (Target.InvalidState" in fails["targets"]
    assert "/readyz" in checks(run)["targets"]["next"]


def test_public_database(aws: str, dev: dict[str, Any], undo: Any) -> None:
    client("rds").modify_db_instance(
        DBInstanceIdentifier=dev["databaseInstanceId"],
        PubliclyAccessible=True,
        ApplyImmediately=True,
    )
    undo(
        client("rds").modify_db_instance,
        DBInstanceIdentifier=dev["databaseInstanceId"],
        PubliclyAccessible=False,
        ApplyImmediately=True,
    )
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 1
    assert failing(run) == {"database": "publicly accessible"}
    assert "pulumi preview --refresh" in checks(run)["database"]["next"]


def test_database_without_backups_or_encryption(
    aws: str, dev: dict[str, Any], tmp_path: Path, undo: Any
) -> None:
    outputs = {k: v for k, v in dev.items() if not k.startswith("_")}
    client("rds").create_db_instance(
        DBInstanceIdentifier="plain-db",
        Engine="postgres",
        DBInstanceClass="db.t4g.micro",
        AllocatedStorage=20,
        MasterUsername="u",
        MasterUserPassword="not-a-real-password-0042",
        StorageEncrypted=False,
        BackupRetentionPeriod=0,
    )
    undo(client("rds").delete_db_instance, DBInstanceIdentifier="plain-db", SkipFinalSnapshot=True)
    outputs["databaseInstanceId"] = "plain-db"
    del outputs["databaseAddress"]
    run = verify(aws, "dev", write_outputs(tmp_path, outputs), "--format", "json")
    assert failing(run) == {
        "database": "storage NOT encrypted; automated backups off (retention 0 days)"
    }


def test_missing_function(aws: str, dev: dict[str, Any], undo: Any) -> None:
    client("lambda").delete_function(FunctionName=dev["canaryFunction"])
    undo(_function, dev["canaryFunction"], dev["_functionRole"])
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 1
    assert failing(run) == {
        "function canary": "no such Lambda function",
        "canary dry run": "no such Lambda function",
    }


def test_function_errors_in_its_last_invocations(
    aws: str, account: Account, dev: dict[str, Any], undo: Any
) -> None:
    undo(account.reset)  # the datapoints stay
    invocations(dev["housekeepingFunction"], 1, 1, minutes_ago=2)
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 1
    fails = failing(run)
    assert list(fails) == ["function housekeeping"]
    assert fails["function housekeeping"].endswith("1 error(s) in 1 invocation(s)")
    assert (
        "aws logs tail /aws/lambda/backbone-dev-housekeeping"
        in (checks(run)["function housekeeping"]["next"])
    )


def test_errors_before_the_last_invocations_do_not_count(
    aws: str, account: Account, dev: dict[str, Any], undo: Any
) -> None:
    undo(account.reset)  # the datapoints stay
    invocations(dev["housekeepingFunction"], 1, 1, minutes_ago=120)  # failed two hours ago
    invocations(dev["housekeepingFunction"], 1, 0, minutes_ago=2)  # fixed since
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 0, failing(run)


def test_alarm_in_alarm(aws: str, dev: dict[str, Any], undo: Any) -> None:
    client("cloudwatch").set_alarm_state(
        AlarmName="backbone-dev-db-cpu",
        StateValue="ALARM",
        StateReason="Threshold Crossed: 3 datapoints were greater than the threshold (80.0)",
    )
    undo(ok_again, "backbone-dev-db-cpu")
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 1
    assert failing(run) == {
        "alarms": "1 of 5 alarms in ALARM: backbone-dev-db-cpu (Threshold Crossed: 3 "
        "datapoints were greater than the threshold (80.0))"
    }
    # what to look at next: the alarm's own description
    assert checks(run)["alarms"]["next"] == (
        "backbone-dev-db-cpu: check the thing it watches and what to do."
    )


def test_alarms_found_by_name_prefix_without_the_names_output(
    aws: str, dev: dict[str, Any], tmp_path: Path, undo: Any
) -> None:
    outputs = {k: v for k, v in dev.items() if not k.startswith("_") and k != "alarmNames"}
    # another stack's alarm in the same account is none of dev's business
    _alarms(["backbone-prod-db-cpu"], outputs["alertsTopicArn"])
    undo(client("cloudwatch").delete_alarms, AlarmNames=["backbone-prod-db-cpu"])
    client("cloudwatch").set_alarm_state(
        AlarmName="backbone-prod-db-cpu", StateValue="ALARM", StateReason="prod is busy"
    )
    path = write_outputs(tmp_path, outputs)
    run = verify(aws, "dev", path, "--format", "json")
    assert run.code == 0, failing(run)
    assert checks(run)["alarms"]["subject"] == "backbone-dev-*"
    assert checks(run)["alarms"]["why"] == "none of 5 alarms in ALARM"
    client("cloudwatch").set_alarm_state(
        AlarmName="backbone-dev-alb-5xx-rate", StateValue="ALARM", StateReason="5xx"
    )
    undo(ok_again, "backbone-dev-alb-5xx-rate")
    assert list(failing(verify(aws, "dev", path, "--format", "json"))) == ["alarms"]


def test_app_returns_500(aws: str, dev: dict[str, Any]) -> None:
    dev["_app"].mode = "error"
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert run.code == 1
    assert failing(run) == {
        "app health": "HTTP 500 on each of 3 attempts: boom",
        "app readiness": "HTTP 500 on each of 3 attempts: boom",
        "app read": "HTTP 500 on each of 3 attempts: boom",
    }
    assert len(dev["_app"].hits) == 9  # three attempts each


def test_app_not_ready(aws: str, dev: dict[str, Any]) -> None:
    dev["_app"].mode = "unready"
    run = verify(aws, "dev", dev["_file"], "--format", "json")
    assert failing(run) == {
        "app readiness": "HTTP 503 on each of 3 attempts: database: connection refused"
    }


def test_app_not_answering(aws: str, dev: dict[str, Any]) -> None:
    dev["_app"].mode = "hang"
    dev["_app"].hang_seconds = 1  # far past the timeout
    run = verify(aws, "dev", dev["_file"], "--format", "json", "--timeout", "100ms")
    assert run.code == 1
    assert failing(run) == {
        "app health": "no answer within 0.1 s (3 attempts)",
        "app readiness": "no answer within 0.1 s (3 attempts)",
        "app read": "no answer within 0.1 s (3 attempts)",
    }


def test_app_refusing_connections(aws: str, dev: dict[str, Any], tmp_path: Path) -> None:
    outputs = {k: v for k, v in dev.items() if not k.startswith("_")}
    outputs["url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = verify(aws, "dev", write_outputs(tmp_path, outputs), "--format", "json")
    assert run.code == 1
    assert failing(run) == {
        "app health": "connection refused (3 attempts)",
        "app readiness": "connection refused (3 attempts)",
        "app read": "connection refused (3 attempts)",
    }


def test_text_checklist_names_the_failure_and_what_to_look_at(
    aws: str, dev: dict[str, Any], undo: Any
) -> None:
    client("ec2").stop_instances(InstanceIds=dev["_nodes"])
    undo(client("ec2").start_instances, InstanceIds=dev["_nodes"])
    run = verify(aws, "dev", dev["_file"])
    assert run.code == 1
    assert "FAIL" in run.stdout and "targets" in run.stdout
    assert "2 of 2 targets not healthy" in run.stdout
    assert "What to look at next:" in run.stdout
    assert "dev: 1 of 12 checks FAIL" in run.stdout
    assert "Traceback" not in run.stderr


def test_missing_cluster_and_resources_gone(aws: str, dev: dict[str, Any], tmp_path: Path) -> None:
    outputs = {k: v for k, v in dev.items() if not k.startswith("_")}
    outputs["clusterName"] = "backbone-gone"
    outputs["targetGroupArn"] = outputs["targetGroupArn"].replace("1234567/", "7654321/")
    run = verify(aws, "dev", write_outputs(tmp_path, outputs), "--format", "json")
    assert failing(run) == {
        "targets": "no such target group",
        "cluster": "no such EKS cluster",
        "node group": "no such node group in backbone-gone",
    }


# --------------------------------------------------------------------------- free tier


@pytest.fixture
def free_tier(account: Account, app_server: tuple[str, AppState], tmp_path: Path) -> dict[str, Any]:
    return _with_app(account.stack("free-tier", deploy_free_tier), app_server, tmp_path)


def test_deployed_free_tier_stack_passes(aws: str, free_tier: dict[str, Any]) -> None:
    run = verify(aws, "free-tier", free_tier["_file"], "--format", "json")
    assert run.code == 0, run.stdout + run.stderr
    by_name = checks(run)
    assert list(by_name) == ["host instance", "alarms", "app health", "app readiness", "app read"]
    assert by_name["host instance"]["why"] == "running, system and instance status checks ok"


def test_free_tier_host_stopped(aws: str, free_tier: dict[str, Any], undo: Any) -> None:
    client("ec2").stop_instances(InstanceIds=[free_tier["hostInstanceId"]])
    undo(client("ec2").start_instances, InstanceIds=[free_tier["hostInstanceId"]])
    run = verify(aws, "free-tier", free_tier["_file"], "--format", "json")
    assert run.code == 1
    assert failing(run) == {"host instance": "state stopped"}
    assert "start-instances" in checks(run)["host instance"]["next"]


def test_free_tier_host_gone(aws: str, free_tier: dict[str, Any], tmp_path: Path) -> None:
    outputs = {k: v for k, v in free_tier.items() if not k.startswith("_")}
    outputs["hostInstanceId"] = "i-0123456789abcdef0"
    run = verify(aws, "free-tier", write_outputs(tmp_path, outputs), "--format", "json")
    assert failing(run) == {"host instance": "no such EC2 instance"}


def test_local_stack_needs_no_aws(app_server: tuple[str, AppState], tmp_path: Path) -> None:
    url, _ = app_server
    path = tmp_path / "local.json"
    path.write_text(json.dumps({"target": "docker", "url": url, "appApiToken": SECRET_TOKEN}))
    run = backbone("verify", "local", "--outputs", str(path), "--format", "json", endpoint=None)
    assert run.code == 0, run.stdout + run.stderr
    assert list(checks(run)) == ["app health", "app readiness", "app read"]


# --------------------------------------------------------------------------- waiting


def test_wait_until_the_stack_comes_up(aws: str, dev: dict[str, Any]) -> None:
    # The app answers 500 to its first 9 requests (3 attempts at each of 3 paths) (a stack still coming up), then serves.
    dev["_app"].mode = "error"
    dev["_app"].ok_after = 9
    run = verify(
        aws, "dev", dev["_file"], "--format", "json", "--wait", "60s", "--interval", "100ms"
    )
    assert run.code == 0, run.stdout + run.stderr
    report = run.json()
    assert report["rounds"] == 2
    assert "round 1: 9 of 12 checks pass; failing: app health, app readiness, app read" in (
        run.stderr
    )


def test_wait_gives_up_at_the_deadline(aws: str, dev: dict[str, Any], undo: Any) -> None:
    client("ec2").stop_instances(InstanceIds=[dev["_nodes"][0]])
    undo(client("ec2").start_instances, InstanceIds=[dev["_nodes"][0]])
    # a deadline round 1 surely ends before (a round takes a fraction of a second), so that
    # round 2 runs; then a round at the deadline itself
    run = verify(
        aws, "dev", dev["_file"], "--format", "json", "--wait", "1500ms", "--interval", "1s"
    )
    assert run.code == 1
    report = run.json()
    assert report["deadlinePassed"] is True
    assert report["rounds"] >= 2
    assert list(failing(run)) == ["targets"]


def test_wait_sees_a_target_recover(aws: str, dev: dict[str, Any], undo: Any) -> None:
    ec2 = client("ec2")
    ec2.stop_instances(InstanceIds=[dev["_nodes"][0]])
    undo(ec2.start_instances, InstanceIds=[dev["_nodes"][0]])  # should the test stop early

    def node_back(requests: int) -> None:  # once round 1 has reached the app
        if requests == 3:
            ec2.start_instances(InstanceIds=[dev["_nodes"][0]])

    dev["_app"].on_hit = node_back
    run = verify(aws, "dev", dev["_file"], "--wait", "60s", "--interval", "100ms")
    assert run.code == 0, run.stdout + run.stderr
    assert "round 1: 11 of 12 checks pass; failing: targets" in run.stderr
    assert "all 12 checks pass after" in run.stdout


# --------------------------------------------------------------------------- where outputs come from


def test_outputs_from_the_pulumi_cli(aws: str, dev: dict[str, Any], tmp_path: Path) -> None:
    """With the pulumi CLI on PATH and no --outputs, verify asks it (with the stack's name)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    outputs = Path(dev["_file"]).read_text()
    fake = bin_dir / "pulumi"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\ncat <<'EOF'\n{outputs}\nEOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run = backbone(
        "verify", "dev", "--format", "json", endpoint=aws, path=f"{bin_dir}:{os.environ['PATH']}"
    )
    assert run.code == 0, run.stdout + run.stderr
    assert record.read_text().split() == [
        "stack", "output", "--json", "--show-secrets", "--stack", "dev"
    ]  # fmt: skip
    assert run.json()["outputsFrom"] == "pulumi stack output --stack dev"


def test_pulumi_cli_failure_is_one_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pulumi"
    fake.write_text("#!/bin/sh\necho 'error: no stack named \"dve\" found' >&2\nexit 255\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run = backbone("verify", "dve", endpoint=None, path=f"{bin_dir}:/usr/bin:/bin")
    assert run.code == 2
    assert run.stderr.strip() == (
        'error: `pulumi stack output --stack dve` failed: error: no stack named "dve" found'
    )


def test_neither_pulumi_nor_outputs_file(tmp_path: Path) -> None:
    run = backbone("verify", "dev", endpoint=None, path=str(tmp_path))
    assert run.code == 2
    assert "the pulumi CLI is not on PATH and no --outputs FILE was given" in run.stderr
    assert "backbone verify dev --outputs outputs.json" in run.stderr
    assert "Traceback" not in run.stderr


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1, column 2"),
        ("[1, 2]", "expected a JSON object of stack outputs"),
        ('{"vpcId": "vpc-1"}', "nothing to verify"),
        ('{"url": "ftp://x"}', "output 'url' must be an http:// or https:// URL"),
        (
            '{"url": "http://x", "databaseMultiAz": "yes"}',
            "'databaseMultiAz' must be true or false",
        ),
        ('{"alarmNames": "backbone-dev-db-cpu"}', "'alarmNames' must be a list of names"),
        ('{"canaryFunction": ""}', "'canaryFunction' must be a non-empty string"),
    ],
)
def test_malformed_outputs_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(content)
    run = backbone("verify", "dev", "--outputs", str(path), endpoint=None)
    assert run.code == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_outputs_file_missing(tmp_path: Path) -> None:
    run = backbone("verify", "dev", "--outputs", str(tmp_path / "nope.json"), endpoint=None)
    assert run.code == 2
    assert "--outputs: no file" in run.stderr


@pytest.mark.parametrize("value", ["10", "ten minutes", "10x", "-5m", "1m30", "48h"])
def test_bad_wait_value(tmp_path: Path, value: str) -> None:
    path = tmp_path / "outputs.json"
    path.write_text('{"url": "http://127.0.0.1:9"}')
    run = backbone("verify", "dev", "--outputs", str(path), "--wait", value, endpoint=None)
    assert run.code == 2
    assert run.stderr.startswith(f"error: --wait: {value!r} is ")
    assert "Traceback" not in run.stderr


def test_interval_too_short(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text('{"url": "http://127.0.0.1:9"}')
    run = backbone("verify", "dev", "--outputs", str(path), "--interval", "0", endpoint=None)
    assert run.code == 2
    assert run.stderr.strip() == "error: --interval: at least 100ms between rounds (e.g. 15s)"


def test_bad_stack_name_and_read_path(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text('{"url": "http://127.0.0.1:9"}')
    run = backbone("verify", "dev stack", "--outputs", str(path), endpoint=None)
    assert run.code == 2 and "is not a stack name" in run.stderr
    run = backbone("verify", "dev", "--outputs", str(path), "--read-path", "api", endpoint=None)
    assert run.code == 2 and "--read-path 'api' must be a path starting with /" in run.stderr


# --------------------------------------------------------------------------- AWS errors


def test_no_credentials_is_one_line(aws: str, dev: dict[str, Any]) -> None:
    run = backbone(
        "verify",
        "dev",
        "--outputs",
        dev["_file"],
        endpoint=None,
        env={
            "AWS_ENDPOINT_URL": aws,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    assert run.code == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no AWS credentials found")


def test_unknown_profile(aws: str, dev: dict[str, Any]) -> None:
    run = verify(aws, "dev", dev["_file"], "--profile", "nobody-has-this")
    assert run.code == 2
    assert "no AWS profile named 'nobody-has-this'" in run.stderr


def test_access_denied_and_throttling_become_one_line_each(
    refusing_aws: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore's backoff between throttled attempts, rand(0, 1) * 1 s * 2**i (about 7 s over
    # four retries), scaled to 10 ms: the same five attempts, without the wait
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.01)
    endpoint, refusal = refusing_aws
    path = tmp_path / "outputs.json"
    path.write_text(
        json.dumps({"region": REGION, "databaseInstanceId": "db-1", "canaryFunction": "fn-1"})
    )
    refusal.code, refusal.status = "AccessDenied", 403
    run = backbone("verify", "dev", "--outputs", str(path), "--format", "json", endpoint=endpoint)
    assert run.code == 1
    denied = (
        "access denied (AccessDenied): User: arn:aws:iam::123456789012:user/ci is not "
        "authorized; the identity in use needs that permission (`aws sts get-caller-identity` "
        "shows who you are)"
    )
    assert failing(run) == {
        "database": f"rds DescribeDbInstances: {denied}",
        "function canary": f"lambda GetFunction: {denied}",
        "canary dry run": f"lambda Invoke: {denied}",
    }
    assert checks(run)["canary dry run"]["next"].startswith("grant the read permission")
    assert len(refusal.calls) == 3  # access denied is not retried
    path.write_text(json.dumps({"region": REGION, "databaseInstanceId": "db-1"}))

    refusal.calls.clear()
    refusal.code, refusal.status = "Throttling", 400
    run = backbone("verify", "dev", "--outputs", str(path), "--format", "json", endpoint=endpoint)
    assert run.code == 1
    assert failing(run) == {
        "database": "rds DescribeDbInstances: throttled by AWS (Throttling) on each of 5 "
        "attempts; wait a minute and run it again"
    }
    assert len(refusal.calls) == 5  # botocore's standard retries, then one line


def test_one_service_denied_fails_only_its_checks(
    aws: str, dev: dict[str, Any], refusing_aws: tuple[str, Any]
) -> None:
    """Everything in moto but CloudWatch, which refuses: the function and alarm checks fail
    with the one line, every other check still runs and passes."""
    endpoint, refusal = refusing_aws
    refusal.code, refusal.status = "AccessDenied", 403
    run = verify(
        aws, "dev", dev["_file"], "--format", "json", env={"AWS_ENDPOINT_URL_CLOUDWATCH": endpoint}
    )
    assert run.code == 1, run.stderr
    denied = (
        "access denied (AccessDenied): User: arn:aws:iam::123456789012:user/ci is not authorized"
    )
    fails = failing(run)
    assert list(fails) == ["function canary", "function housekeeping", "alarms"]
    assert fails["function canary"].startswith(f"cloudwatch GetMetricStatistics: {denied}")
    assert fails["alarms"].startswith(f"cloudwatch DescribeAlarms: {denied}")
    assert len(checks(run)) == 12


# --------------------------------------------------------------------------- the program exports it


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_plans_export_what_verify_reads(plan_of: Any, stack: str) -> None:
    plan = plan_of(stack)
    o = plan.outputs
    alb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    tg = plan.one("aws:lb/targetGroup:TargetGroup")
    db = plan.one("aws:rds/instance:Instance")
    ng = plan.one("aws:eks/nodeGroup:NodeGroup")
    assert o["loadBalancerArn"] == alb.outputs["arn"]
    assert o["targetGroupArn"] == tg.outputs["arn"]
    assert o["databaseInstanceId"] == db.outputs["identifier"]
    assert o["databaseMultiAz"] is (stack == "prod") is db.inputs["multiAz"]
    assert o["nodeGroupName"] == ng.outputs["nodeGroupName"]
    alarms = plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert sorted(o["alarmNames"]) == sorted(a.inputs["name"] for a in alarms)
    assert all(name.startswith(f"backbone-{stack}-") for name in o["alarmNames"])


def test_free_tier_plan_exports_its_alarms(plan_of: Any) -> None:
    plan = plan_of("free-tier")
    alarms = [r.outputs["name"] for r in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")]
    assert sorted(plan.outputs["alarmNames"]) == sorted(alarms)
    assert {"backbone-free-tier-billing", "backbone-free-tier-host-recover"} <= set(alarms)
