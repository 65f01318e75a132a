"""`backbone verify STACK`: does the deployed stack really work?

Reads the stack's outputs (from `pulumi stack output --json --show-secrets`, or a JSON file of
them) and checks the live deployment with boto3 and HTTP. Each check runs when the outputs name
what it checks, so the same command verifies dev, prod, free-tier and local:

| output(s)                                  | check                                               |
|--------------------------------------------|-----------------------------------------------------|
| loadBalancerArn                            | the load balancer is active                         |
| targetGroupArn                             | every registered target is healthy (at least one)   |
| databaseInstanceId (+ databaseMultiAz)     | available, encrypted, private, backups on, Multi-AZ |
| clusterName (+ nodeGroupName)              | EKS cluster ACTIVE; node group(s) ACTIVE            |
| hostInstanceId                             | the instance is running, status checks ok           |
| canaryFunction, housekeepingFunction       | exists; its last invocations had no errors          |
| canaryFunction                             | a dry invocation (InvocationType DryRun) succeeds   |
| alarmNames (or alertsTopicArn: by prefix)  | no alarm of the stack is in ALARM                   |
| url                                        | /healthz, /readyz and one read answer               |

Only the outputs above are kept once read: secret outputs (kubeconfig, appApiToken) are dropped
before any check runs, so no secret can reach the report.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backbone.awsapi import Aws, AwsError, error_code, explain

# -------------------------------------------------------------------------------------- inputs


class BadInput(Exception):
    """Bad input to `backbone verify`: exit status 2, the message, no traceback."""


STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")

# The outputs verify reads, and the type each must have.
STRING_OUTPUTS = (
    "region",
    "url",
    "loadBalancerArn",
    "targetGroupArn",
    "databaseInstanceId",
    "databaseAddress",
    "clusterName",
    "nodeGroupName",
    "hostInstanceId",
    "canaryFunction",
    "housekeepingFunction",
    "alertsTopicArn",
)
BOOL_OUTPUTS = ("databaseMultiAz",)
LIST_OUTPUTS = ("alarmNames",)
KNOWN_OUTPUTS = frozenset((*STRING_OUTPUTS, *BOOL_OUTPUTS, *LIST_OUTPUTS))

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str) -> float:
    """'10m', '90s', '1m30s', '500ms', '1h', '0' -> seconds; BadInput otherwise."""
    raw = text.strip().lower()
    if raw == "0":
        return 0.0
    parts = _DURATION.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise BadInput(
            f"{option}: {text!r} is not a duration; use a number with a unit: 500ms, 90s, 10m, "
            "1h or 1m30s (0 for none)"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds > 24 * 3600:
        raise BadInput(f"{option}: {text!r} is more than 24h")
    return seconds


def check_stack_name(stack: str) -> str:
    if not STACK_NAME.match(stack):
        raise BadInput(
            f"{stack!r} is not a stack name: letters, digits, '-', '_' and '.', optionally "
            "qualified as org/project/stack"
        )
    return stack


def clean_outputs(data: Any, source: str) -> dict[str, Any]:
    """The outputs verify reads, type-checked; everything else (secrets too) dropped."""
    if not isinstance(data, dict):
        raise BadInput(
            f"{source}: expected a JSON object of stack outputs (what `pulumi stack output "
            f"--json` prints), got {type(data).__name__}"
        )
    kept: dict[str, Any] = {}
    for key in sorted(KNOWN_OUTPUTS & data.keys()):
        value = data[key]
        if value is None:
            continue
        if key in STRING_OUTPUTS and not (isinstance(value, str) and value.strip()):
            raise BadInput(f"{source}: output {key!r} must be a non-empty string, got {value!r}")
        if key in BOOL_OUTPUTS and not isinstance(value, bool):
            raise BadInput(f"{source}: output {key!r} must be true or false, got {value!r}")
        if key in LIST_OUTPUTS and not (
            isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        ):
            raise BadInput(f"{source}: output {key!r} must be a list of names, got {value!r}")
        kept[key] = value
    url = kept.get("url")
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        raise BadInput(f"{source}: output 'url' must be an http:// or https:// URL, got {url!r}")
    if not kept.keys() - {"region", "databaseMultiAz", "databaseAddress"}:
        raise BadInput(
            f"{source}: nothing to verify: none of the outputs "
            f"{', '.join(sorted(KNOWN_OUTPUTS))} is there"
        )
    return kept


def outputs_from_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"--outputs: no file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--outputs: cannot read {str(path)!r}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"--outputs: {str(path)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); write it with `pulumi stack output --json -s STACK > FILE`"
        ) from None
    return clean_outputs(data, str(path))


def outputs_from_pulumi(stack: str, pulumi: str, cwd: Path | None = None) -> dict[str, Any]:
    command = [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack]
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        raise BadInput("`pulumi stack output` did not answer within 120 s") from None
    except OSError as exc:
        raise BadInput(f"cannot run {pulumi}: {exc}") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise BadInput(f"`pulumi stack output --stack {stack}` failed: {why}")
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise BadInput(f"`pulumi stack output --json --stack {stack}` printed no JSON") from None
    return clean_outputs(data, f"pulumi stack output --stack {stack}")


def read_outputs(stack: str, outputs_file: Path | None) -> tuple[dict[str, Any], str]:
    """(outputs, where they came from). A file wins; else the pulumi CLI on PATH; else BadInput."""
    if outputs_file is not None:
        return outputs_from_file(outputs_file), str(outputs_file)
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise BadInput(
            "no stack outputs to read: the pulumi CLI is not on PATH and no --outputs FILE was "
            f"given. Where the CLI is, run `pulumi stack output --json --show-secrets -s {stack} "
            f"> outputs.json`, then `backbone verify {stack} --outputs outputs.json`"
        )
    return outputs_from_pulumi(stack, pulumi), f"pulumi stack output --stack {stack}"


# -------------------------------------------------------------------------------------- checks


@dataclass
class Check:
    name: str  # what is checked: "load balancer", "app readiness", ...
    subject: str  # which resource or URL
    ok: bool
    why: str  # the finding, one line
    next: str = ""  # what to look at next (failures)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = "pass" if self.ok else "fail"
        return data


@dataclass
class Settings:
    stack: str
    read_path: str = "/api/links/backbone-canary"
    http_timeout: float = 10.0
    http_attempts: int = 3
    # How far back "the last invocations" of a function are looked for.
    invocation_window: dt.timedelta = dt.timedelta(hours=24)


# Seconds before an HTTP check's second attempt; the pause doubles before each next attempt.
RETRY_PAUSE = 0.25


@functools.cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> Any:
    """The TLS context httpx.Client() would make (it reads SSL_CERT_FILE / SSL_CERT_DIR, the
    arguments here only key the cache), made once: loading the CA bundle costs more CPU than a
    check's requests, and every HTTP check of every round used to load it again."""
    import httpx

    return httpx.create_ssl_context()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Verifier:
    """One round of checks over the outputs. `aws` is made on first use (the local stack needs
    none), so a stack with only a URL needs no AWS credentials."""

    def __init__(
        self,
        outputs: dict[str, Any],
        settings: Settings,
        aws: Callable[[], Aws],
    ) -> None:
        self.o = outputs
        self.s = settings
        self._make_aws = aws
        self._aws: Aws | None = None
        self._missing_functions: set[str] = set()  # this round's, from the function checks

    def client(self, service: str) -> Any:
        if self._aws is None:
            self._aws = self._make_aws()
        return self._aws.client(service)

    # -- the round ---------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, str, Callable[[], Check]]]:
        """(name, subject, run) of every check the outputs call for, in checklist order."""
        o = self.o
        todo: list[tuple[str, str, Callable[[], Check]]] = []

        def add(name: str, subject: str, fn: Callable[[str, str], Check]) -> None:
            todo.append((name, subject, lambda: fn(name, subject)))

        if "loadBalancerArn" in o:
            add("load balancer", o["loadBalancerArn"], self.load_balancer)
        if "targetGroupArn" in o:
            add("targets", o["targetGroupArn"], self.targets)
        if "databaseInstanceId" in o:
            add("database", o["databaseInstanceId"], self.database)
        if "clusterName" in o:
            add("cluster", o["clusterName"], self.cluster)
            add("node group", o.get("nodeGroupName") or o["clusterName"], self.node_groups)
        if "hostInstanceId" in o:
            add("host instance", o["hostInstanceId"], self.host)
        for key, short in (("canaryFunction", "canary"), ("housekeepingFunction", "housekeeping")):
            if key in o:
                add(f"function {short}", o[key], self.function)
        if "canaryFunction" in o:
            add("canary dry run", o["canaryFunction"], self.canary_dry_run)
        if "alarmNames" in o or "alertsTopicArn" in o:
            subject = (
                _plural(len(o["alarmNames"]), "alarm")
                if "alarmNames" in o
                else f"{self.alarm_prefix()}*"
            )
            add("alarms", subject, self.alarms)
        if "url" in o:
            base = o["url"].rstrip("/")
            add("app health", f"{base}/healthz", self.http_health)
            add("app readiness", f"{base}/readyz", self.http_ready)
            add("app read", f"{base}{self.s.read_path}", self.http_read)
        return todo

    def run(self) -> list[Check]:
        results = []
        self._missing_functions.clear()
        for name, subject, fn in self.plan():
            try:
                results.append(fn())
            except (AwsError, _Failed) as failure:
                exc = failure.error if isinstance(failure, _Failed) else failure
                if exc.setup:
                    raise exc from None  # no credentials, no region...: the same for every check
                results.append(Check(name, subject, False, str(exc), _aws_next(exc)))
        return results

    # -- AWS checks --------------------------------------------------------------------------

    def _call(self, service: str, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client(service), operation)(**kwargs)
        except Exception as exc:
            if isinstance(exc, AwsError):
                raise
            import botocore.exceptions as bex

            if isinstance(exc, bex.BotoCoreError | bex.ClientError):
                raise _Failed(exc, f"{service} {_camel(operation)}") from None
            raise

    def load_balancer(self, name: str, arn: str) -> Check:
        try:
            found = self._call("elbv2", "describe_load_balancers", LoadBalancerArns=[arn])
        except _Failed as f:
            if f.code in ("LoadBalancerNotFound", "ValidationError"):
                return Check(name, arn, False, "no such load balancer", _REFRESH)
            raise f.error from None
        lb = found["LoadBalancers"][0]
        state = lb.get("State", {})
        code = state.get("Code", "unknown")
        if code == "active":
            return Check(name, arn, True, f"active ({lb.get('DNSName', '')})")
        why = f"state {code}" + (f": {state['Reason']}" if state.get("Reason") else "")
        hint = (
            "it is still being created: run again with --wait 10m"
            if code == "provisioning"
            else "the load balancer's state in the EC2 console (Load Balancers)"
        )
        return Check(name, arn, False, why, hint)

    def targets(self, name: str, arn: str) -> Check:
        try:
            health = self._call("elbv2", "describe_target_health", TargetGroupArn=arn)
        except _Failed as f:
            if f.code in ("TargetGroupNotFound", "ValidationError"):
                return Check(name, arn, False, "no such target group", _REFRESH)
            raise f.error from None
        described = health.get("TargetHealthDescriptions", [])
        if not described:
            return Check(
                name,
                arn,
                False,
                "no targets registered",
                "the node group's Auto Scaling group must be attached to the target group "
                "(`aws autoscaling describe-traffic-sources`); a host must be registered",
            )
        bad = []
        for d in described:
            h = d.get("TargetHealth", {})
            if h.get("State") != "healthy":
                target = d.get("Target", {})
                what = f"{target.get('Id')}:{target.get('Port')} {h.get('State')}"
                reason = ", ".join(x for x in (h.get("Reason"), h.get("Description")) if x)
                bad.append(f"{what} ({reason})" if reason else what)
        if not bad:
            return Check(name, arn, True, f"{_plural(len(described), 'target')}, all healthy")
        return Check(
            name,
            arn,
            False,
            f"{len(bad)} of {_plural(len(described), 'target')} not healthy: {'; '.join(bad)}",
            "the health check is GET /readyz on the node port: `kubectl -n backbone get pods`, "
            "the pods' logs, and the node security group's rule from the load balancer",
        )

    def database(self, name: str, ident: str) -> Check:
        try:
            found = self._call("rds", "describe_db_instances", DBInstanceIdentifier=ident)
        except _Failed as f:
            if f.code == "DBInstanceNotFound":
                return Check(name, ident, False, "no such DB instance", _REFRESH)
            raise f.error from None
        db = found["DBInstances"][0]
        problems = []
        status = db.get("DBInstanceStatus", "unknown")
        if status != "available":
            problems.append(f"status {status}")
        if not db.get("StorageEncrypted"):
            problems.append("storage NOT encrypted")
        if db.get("PubliclyAccessible"):
            problems.append("publicly accessible")
        backups = int(db.get("BackupRetentionPeriod") or 0)
        if backups == 0:
            problems.append("automated backups off (retention 0 days)")
        multi_az = bool(db.get("MultiAZ"))
        want = self.o.get("databaseMultiAz")
        if want is not None and multi_az != want:
            problems.append(
                f"{'Multi-AZ' if multi_az else 'Single-AZ'}, the stack says "
                f"{'Multi-AZ' if want else 'Single-AZ'}"
            )
        address = db.get("Endpoint", {}).get("Address")
        if "databaseAddress" in self.o and address and address != self.o["databaseAddress"]:
            problems.append(f"endpoint {address}, the stack says {self.o['databaseAddress']}")
        if problems:
            hint = (
                "it is still changing: run again with --wait 10m"
                if problems == [f"status {status}"]
                and status in ("creating", "modifying", "backing-up", "rebooting", "upgrading")
                else "someone changed it outside Pulumi: `pulumi preview --refresh` shows the "
                "drift; `pulumi up` puts the stack's settings back"
            )
            return Check(name, ident, False, "; ".join(problems), hint)
        az = "Multi-AZ" if multi_az else "Single-AZ"
        return Check(
            name,
            ident,
            True,
            f"available, encrypted, not public, backups {_plural(backups, 'day')}, {az}",
        )

    def cluster(self, name: str, cluster: str) -> Check:
        try:
            found = self._call("eks", "describe_cluster", name=cluster)
        except _Failed as f:
            if f.code == "ResourceNotFoundException":
                return Check(name, cluster, False, "no such EKS cluster", _REFRESH)
            raise f.error from None
        status = found["cluster"].get("status", "UNKNOWN")
        if status == "ACTIVE":
            return Check(
                name, cluster, True, f"ACTIVE, Kubernetes {found['cluster'].get('version')}"
            )
        return Check(
            name,
            cluster,
            False,
            f"status {status}",
            "run again with --wait 20m while it is CREATING or UPDATING; otherwise the "
            "cluster's health in the EKS console",
        )

    def node_groups(self, name: str, subject: str) -> Check:
        cluster = self.o["clusterName"]
        wanted = self.o.get("nodeGroupName")
        try:
            if wanted:
                names = [wanted]
            else:
                pages = self._call("eks", "list_nodegroups", clusterName=cluster)
                names = list(pages.get("nodegroups", []))
            groups = [
                self._call("eks", "describe_nodegroup", clusterName=cluster, nodegroupName=n)[
                    "nodegroup"
                ]
                for n in names
            ]
        except _Failed as f:
            if f.code == "ResourceNotFoundException":
                return Check(name, subject, False, f"no such node group in {cluster}", _REFRESH)
            raise f.error from None
        if not groups:
            return Check(name, subject, False, f"the cluster {cluster} has no node group", _REFRESH)
        bad = []
        for g in groups:
            issues = g.get("health", {}).get("issues", [])
            if g.get("status") != "ACTIVE" or issues:
                text = f"{g.get('nodegroupName')} {g.get('status')}"
                if issues:
                    text += (
                        " ("
                        + "; ".join(f"{i.get('code')}: {i.get('message')}" for i in issues)
                        + ")"
                    )
                bad.append(text)
        if bad:
            return Check(
                name,
                subject,
                False,
                "; ".join(bad),
                "the node group's health issues (`aws eks describe-nodegroup`) and its Auto "
                "Scaling group's activity",
            )
        return Check(name, subject, True, f"{_plural(len(groups), 'node group')} ACTIVE")

    def host(self, name: str, instance: str) -> Check:
        try:
            found = self._call("ec2", "describe_instances", InstanceIds=[instance])
            statuses = self._call(
                "ec2", "describe_instance_status", InstanceIds=[instance], IncludeAllInstances=True
            )
        except _Failed as f:
            if f.code.startswith("InvalidInstanceID"):
                return Check(name, instance, False, "no such EC2 instance", _REFRESH)
            raise f.error from None
        reservations = found.get("Reservations", [])
        if not reservations or not reservations[0].get("Instances"):
            return Check(name, instance, False, "no such EC2 instance", _REFRESH)
        state = reservations[0]["Instances"][0].get("State", {}).get("Name", "unknown")
        if state != "running":
            return Check(
                name,
                instance,
                False,
                f"state {state}",
                "start it (`aws ec2 start-instances`) or `pulumi up` to replace it"
                if state in ("stopped", "stopping")
                else "run again with --wait 10m while it is pending",
            )
        found_status = statuses.get("InstanceStatuses", [])
        s = found_status[0] if found_status else {}
        system = s.get("SystemStatus", {}).get("Status", "unknown")
        inst = s.get("InstanceStatus", {}).get("Status", "unknown")
        if system == "ok" and inst == "ok":
            return Check(name, instance, True, "running, system and instance status checks ok")
        return Check(
            name,
            instance,
            False,
            f"running, status checks: system {system}, instance {inst}",
            "checks are 'initializing' for a few minutes after a start (--wait 10m); "
            "'impaired' means reboot it or read its console output (`aws ec2 get-console-output`)",
        )

    def function(self, name: str, fn: str) -> Check:
        try:
            conf = self._call("lambda", "get_function", FunctionName=fn)["Configuration"]
        except _Failed as f:
            if f.code == "ResourceNotFoundException":
                self._missing_functions.add(fn)
                return Check(name, fn, False, "no such Lambda function", _REFRESH)
            raise f.error from None
        state = conf.get("State") or "Active"
        update = conf.get("LastUpdateStatus") or "Successful"
        if state != "Active" or update == "Failed":
            reason = conf.get("StateReason") or conf.get("LastUpdateStatusReason") or ""
            return Check(
                name,
                fn,
                False,
                f"state {state}, last update {update}" + (f": {reason}" if reason else ""),
                "`aws lambda get-function` shows why; `pulumi up` redeploys the code",
            )
        last = self._last_invocations(fn)
        if last is None:
            hours = int(self.s.invocation_window.total_seconds() // 3600)
            return Check(name, fn, True, f"exists; not invoked in the last {hours} h")
        when, invocations, errors = last
        ago = _ago(when)
        if errors:
            return Check(
                name,
                fn,
                False,
                f"last invoked {ago}: {int(errors)} error(s) in {int(invocations)} invocation(s)",
                f"`aws logs tail /aws/lambda/{fn} --since 1h` for the 'failed' line; failed "
                "events wait in the functions' failures queue",
            )
        return Check(
            name, fn, True, f"last invoked {ago}: {int(invocations)} invocation(s), no errors"
        )

    def _last_invocations(self, fn: str) -> tuple[dt.datetime, float, float] | None:
        """(period start, invocations, errors) of the latest 5-minute period with any."""
        now = dt.datetime.now(dt.UTC)
        series: dict[str, dict[dt.datetime, float]] = {}
        for metric in ("Invocations", "Errors"):
            got = self._call(
                "cloudwatch",
                "get_metric_statistics",
                Namespace="AWS/Lambda",
                MetricName=metric,
                Dimensions=[{"Name": "FunctionName", "Value": fn}],
                StartTime=now - self.s.invocation_window,
                EndTime=now + dt.timedelta(minutes=5),
                Period=300,
                Statistics=["Sum"],
            )
            series[metric] = {p["Timestamp"]: float(p.get("Sum", 0)) for p in got["Datapoints"]}
        active = [
            t
            for t in set(series["Invocations"]) | set(series["Errors"])
            if series["Invocations"].get(t, 0) > 0 or series["Errors"].get(t, 0) > 0
        ]
        if not active:
            return None
        latest = max(active)
        return latest, series["Invocations"].get(latest, 0.0), series["Errors"].get(latest, 0.0)

    def canary_dry_run(self, name: str, fn: str) -> Check:
        if fn in self._missing_functions:  # the function check just found none: no call
            return Check(name, fn, False, "no such Lambda function", _REFRESH)
        try:
            answer = self._call("lambda", "invoke", FunctionName=fn, InvocationType="DryRun")
        except _Failed as f:
            if f.code == "ResourceNotFoundException":
                return Check(name, fn, False, "no such Lambda function", _REFRESH)
            raise f.error from None
        status = answer.get("StatusCode")
        if status == 204:
            return Check(name, fn, True, "DryRun accepted (204): it may be invoked")
        return Check(
            name,
            fn,
            False,
            f"DryRun answered {status}"
            + (f" ({answer['FunctionError']})" if answer.get("FunctionError") else ""),
            "`aws lambda get-function` and the function's resource policy",
        )

    def alarm_prefix(self) -> str:
        stack = self.s.stack.rsplit("/", 1)[-1]
        return f"backbone-{stack}-"

    def alarms(self, name: str, subject: str) -> Check:
        found: list[dict[str, Any]] = []
        wanted: list[str] = list(self.o.get("alarmNames", []))
        try:
            if wanted:
                for i in range(0, len(wanted), 100):
                    page = self._call(
                        "cloudwatch", "describe_alarms", AlarmNames=wanted[i : i + 100]
                    )
                    found += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
            else:
                token = None
                while True:
                    extra: dict[str, str] = {"NextToken": token} if token else {}
                    page = self._call(
                        "cloudwatch",
                        "describe_alarms",
                        AlarmNamePrefix=self.alarm_prefix(),
                        **extra,
                    )
                    found += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
                    token = page.get("NextToken")
                    if not token:
                        break
        except _Failed as f:
            raise f.error from None
        names = {a["AlarmName"] for a in found}
        missing = [n for n in wanted if n not in names]
        firing = sorted(
            (a for a in found if a.get("StateValue") == "ALARM"), key=lambda a: a["AlarmName"]
        )
        if not found:
            return Check(
                name,
                subject,
                False,
                f"no alarm named {self.alarm_prefix()}*",
                "the stack's monitoring was not deployed here: `pulumi up`",
            )
        problems = []
        if firing:
            problems.append(
                f"{len(firing)} of {_plural(len(found), 'alarm')} in ALARM: "
                + "; ".join(
                    f"{a['AlarmName']} ({_short(a.get('StateReason', ''))})" for a in firing
                )
            )
        if missing:
            problems.append(f"{len(missing)} missing: {', '.join(missing)}")
        if problems:
            first = firing[0].get("AlarmDescription", "") if firing else ""
            return Check(name, subject, False, "; ".join(problems), first or _REFRESH)
        waiting = sum(1 for a in found if a.get("StateValue") == "INSUFFICIENT_DATA")
        tail = f" ({waiting} with insufficient data yet)" if waiting else ""
        return Check(name, subject, True, f"none of {_plural(len(found), 'alarm')} in ALARM{tail}")

    # -- HTTP checks -------------------------------------------------------------------------

    def _get(self, url: str) -> tuple[int | None, str, str]:
        """(status, body head, error) of the last of up to http_attempts GETs. Retries a
        connection error, a timeout and a 5xx; the first other answer is final."""
        import httpx

        status: int | None = None
        body = ""
        error = ""
        timeout = httpx.Timeout(self.s.http_timeout)
        with httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            headers={"user-agent": "backbone-verify"},
            verify=_tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        ) as client:
            for attempt in range(self.s.http_attempts):
                if attempt:
                    time.sleep(RETRY_PAUSE * 2 ** (attempt - 1))
                try:
                    response = client.get(url)
                except httpx.TimeoutException:
                    status, body = None, ""
                    error = f"no answer within {self.s.http_timeout:g} s"
                    continue
                except httpx.TransportError as exc:
                    status, body = None, ""
                    error = _transport(exc)
                    continue
                status, body, error = response.status_code, response.text[:300], ""
                if status < 500:
                    break
        return status, body, error

    def _http(
        self,
        name: str,
        url: str,
        accept: Callable[[int], bool],
        next_hint: str,
    ) -> Check:
        status, body, error = self._get(url)
        tries = _plural(self.s.http_attempts, "attempt")
        if status is None:
            return Check(name, url, False, f"{error} ({tries})", next_hint)
        if accept(status):
            return Check(name, url, True, f"HTTP {status}")
        detail = _detail(body)
        why = f"HTTP {status}" + (f" on each of {tries}" if status >= 500 else "")
        return Check(name, url, False, why + (f": {detail}" if detail else ""), next_hint)

    def http_health(self, name: str, url: str) -> Check:
        return self._http(
            name,
            url,
            lambda s: s == 200,
            "is anything listening? the load balancer and targets checks above; "
            "`kubectl -n backbone get pods` and the pods' logs",
        )

    def http_ready(self, name: str, url: str) -> Check:
        return self._http(
            name,
            url,
            lambda s: s == 200,
            "readiness no longer follows the database: a 503 means the pod is starting (its "
            "schema not seen yet) or stopping; `kubectl -n backbone get pods` and the app's logs",
        )

    def http_read(self, name: str, url: str) -> Check:
        # 404 is still the app's answer after a lookup in the database (a read path naming no link).
        return self._http(
            name,
            url,
            lambda s: 200 <= s < 300 or s == 404,
            "a read goes through the app to the database: the app's logs for status >= 500 "
            "and the database check above",
        )


class _Failed(Exception):
    def __init__(self, exc: BaseException, doing: str) -> None:
        super().__init__(str(exc))
        self.code = error_code(exc)
        self.error = explain(exc, doing)


_REFRESH = (
    "the outputs do not match what is deployed: `pulumi refresh` then `pulumi up`, or check "
    "the region (--region) and account (--profile)"
)


def _aws_next(exc: AwsError) -> str:
    if "access denied" in str(exc):
        return "grant the read permission (see the README's IAM list for verify), or use --profile"
    if "throttled" in str(exc):
        return "run again in a minute"
    return "the AWS endpoint, region and credentials in use (`aws sts get-caller-identity`)"


def _camel(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _detail(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return _short(body, 120)
    if isinstance(data, dict):
        for key in ("detail", "message", "error", "status"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return _short(value, 120)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return _short(value["message"], 120)
    return _short(body, 120)


def _transport(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "the host name does not resolve"
    return _short(text, 120)


def _ago(when: dt.datetime) -> str:
    minutes = max(0, int((dt.datetime.now(dt.UTC) - when).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min ago" if minutes >= 5 else "under 5 min ago"
    return f"{minutes // 60} h {minutes % 60} min ago"


# -------------------------------------------------------------------------------------- rounds


@dataclass
class Report:
    stack: str
    source: str
    checks: list[Check]
    rounds: int = 1
    elapsed_seconds: float = 0.0
    deadline_passed: bool = False
    failed: list[Check] = field(init=False)

    def __post_init__(self) -> None:
        self.failed = [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "outputsFrom": self.source,
            "ok": self.ok,
            "passed": len(self.checks) - len(self.failed),
            "failed": len(self.failed),
            "rounds": self.rounds,
            "elapsedSeconds": round(self.elapsed_seconds, 1),
            "deadlinePassed": self.deadline_passed,
            "checks": [c.to_json() for c in self.checks],
        }


def rounds(
    verifier: Verifier,
    *,
    wait: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[int, list[Check], float]]:
    """Run rounds of checks until all pass or the deadline (`wait` seconds from now) has passed:
    yields (round number, checks, seconds left). No round starts after the deadline; the pause
    between rounds is `interval`, cut short at the deadline."""
    deadline = clock() + wait
    n = 0
    while True:
        n += 1
        checks = verifier.run()
        left = max(0.0, deadline - clock())
        yield n, checks, left
        if all(c.ok for c in checks) or left <= 0:
            return
        # The next round may run at the deadline itself: the stack may just have come up.
        sleep(min(interval, left))


# -------------------------------------------------------------------------------------- output


def _fmt_seconds(seconds: float) -> str:
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _short_subject(subject: str) -> str:
    """An ARN's resource name for the table (the JSON keeps the whole ARN): a load balancer's
    or target group's name, else the part after the service."""
    if not subject.startswith("arn:"):
        return subject
    resource = subject.split(":", 5)[-1]
    parts = resource.split("/")
    if parts[0] == "loadbalancer" and len(parts) >= 3:
        return parts[2]
    if parts[0] == "targetgroup" and len(parts) >= 2:
        return parts[1]
    return resource


def render_text(report: Report, console: Any) -> None:
    """The checklist: one row per check (pass/FAIL, what, which, why), then what to look at."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"backbone verify {report.stack}", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("resource", overflow="fold")
    table.add_column("why", overflow="fold")
    for c in report.checks:
        mark = Text("pass", style="green") if c.ok else Text("FAIL", style="bold red")
        table.add_row(mark, c.name, Text(_short_subject(c.subject)), Text(c.why))
    console.print(table)
    if report.failed:
        console.print(Text("What to look at next:", style="bold"))
        for c in report.failed:
            console.print(Text(f"  {c.name}: {c.next or c.why}"))
    total = len(report.checks)
    rounds = f" after {_plural(report.rounds, 'round')}" if report.rounds > 1 else ""
    if report.ok:
        console.print(Text(f"{report.stack}: all {total} checks pass{rounds}", style="green"))
    else:
        deadline = ", the deadline passed" if report.deadline_passed else ""
        console.print(
            Text(
                f"{report.stack}: {len(report.failed)} of {total} checks FAIL{rounds}{deadline}",
                style="bold red",
            )
        )


def verify(
    stack: str,
    *,
    outputs_file: Path | None,
    wait: float,
    interval: float,
    settings: Settings,
    region: str | None,
    profile: str | None,
    progress_console: Any,
) -> Report:
    """Read the outputs, run rounds of checks until all pass or `wait` is up; the last round's
    report. Raises BadInput, or AwsError(setup=True) for a configuration problem."""
    from backbone.awsapi import connect

    if interval < 0.1:
        raise BadInput("--interval: at least 100ms between rounds (e.g. 15s)")
    outputs, source = read_outputs(stack, outputs_file)
    verifier = Verifier(
        outputs, settings, lambda: connect(profile, region or outputs.get("region"))
    )
    started = time.monotonic()
    progress = _Progress(progress_console, wait) if wait > 0 else None
    last: tuple[int, list[Check], float] = (0, [], 0.0)
    try:
        for n, checks, left in rounds(
            verifier,
            wait=wait,
            interval=interval,
            sleep=progress.sleep if progress else time.sleep,
        ):
            last = (n, checks, left)
            if progress:
                progress.round(n, checks, left)
    finally:
        if progress:
            progress.stop()
    n, checks, left = last
    report = Report(stack, source, checks, rounds=n, elapsed_seconds=time.monotonic() - started)
    report.deadline_passed = wait > 0 and not report.ok
    return report


class _Progress:
    """Between rounds: a live line on a terminal (spinner, bar to the deadline, what fails),
    else one plain line per round on stderr."""

    def __init__(self, console: Any, wait: float) -> None:
        self.console = console
        self.wait = wait
        self.started = time.monotonic()
        self.live = None
        self.task: Any = None
        if console.is_terminal:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            self.live = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[left]} left"),
                console=console,
                transient=True,
            )
            self.live.start()
            self.task = self.live.add_task("checking", total=wait, left=_fmt_seconds(wait))

    def round(self, n: int, checks: list[Check], left: float) -> None:
        failing = [c.name for c in checks if not c.ok]
        passing = len(checks) - len(failing)
        text = f"round {n}: {passing} of {len(checks)} checks pass"
        if failing:
            text += f"; failing: {', '.join(dict.fromkeys(failing))}"
        if self.live is not None:
            self.live.update(self.task, description=text, completed=self.wait - left)
        elif failing and left > 0:
            self.console.print(f"{text}; {_fmt_seconds(left)} left", markup=False, highlight=False)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            if self.live is not None:
                left = max(0.0, self.wait - (now - self.started))
                self.live.update(self.task, completed=self.wait - left, left=_fmt_seconds(left))
            time.sleep(min(0.2, end - now))

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
