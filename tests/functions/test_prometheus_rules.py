"""infra/components/prometheus.py: the rules pass `promtool check rules`, and `promtool test rules` fires
each alert on a series that should fire it and not on one that should not. The unit tests are
generated from the same thresholds as the rules, so a threshold change moves the test series."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.components.prometheus import (
    ALERTS,
    CLUSTER_ALERTS,
    HPA_AT_MAX_MINUTES,
    KSM_JOB,
    render_rules,
    thresholds,
)
from infra.config import MonitoringConfig
from tests.realparts import require_tool

APP_ROUTE = "/api/links/{code}"
INSTANCE = "10.0.0.7:9464"
# The rules' thresholds when a stack sets none: the monitoring config's defaults (its p99 is 1 s,
# the one default; the rules once had their own 0.5 s).
DEFAULTS = thresholds(MonitoringConfig())


# infra/components/prometheus.py's contract: the severity each alert pages with.
SEVERITY = {
    "BackboneAppHighErrorRatio": "critical",
    "BackboneAppHighLatency": "warning",
    "BackboneAppNotReady": "warning",
    "BackboneAppDatabaseDown": "critical",
    "BackboneAppTargetDown": "critical",
    "BackboneAppAbsent": "critical",
    **dict.fromkeys(CLUSTER_ALERTS, "warning"),
}


def app_buckets() -> tuple[float, ...]:
    """The app's real histogram buckets: the latency series use exactly these `le` values."""
    from app.shortener.metrics import LATENCY_BUCKETS

    return tuple(LATENCY_BUCKETS)


def promtool() -> str:
    return require_tool("promtool", "apt-get install prometheus (Debian ships promtool in it)")


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


# ------------------------------------------------------------------ the test generator


def render_annotations(annotations: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    """Expand {{ $labels.x }}: the only template construct the rules use (asserted here)."""
    out = {}
    for key, text in annotations.items():
        expanded = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
        assert "{{" not in expanded, f"annotation {key} uses a template this test cannot expand"
        out[key] = expanded
    return out


def series(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def unit_tests(rules: dict[str, Any], **thresholds: Any) -> dict[str, Any]:
    """promtool unit tests for ``rules``, from the thresholds they were rendered with."""
    error_ratio: float = thresholds["error_ratio"]
    latency: float = thresholds["latency_p99_seconds"]
    for_minutes: int = thresholds["for_minutes"]
    job: str = thresholds.get("job", "backbone-app")
    namespace: str | None = thresholds.get("namespace")
    extra: dict[str, str] = dict(thresholds.get("labels") or {})

    by_name = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    cluster_ns: str | None = thresholds.get("cluster_namespace")
    base = {"job": job, **({"namespace": namespace} if namespace else {})}
    target = {**base, "instance": INSTANCE}
    eval_minutes = for_minutes + 8  # a 5m rate window fills, then `for` elapses
    length = eval_minutes + 5

    def expect(alert: str, labels: dict[str, str]) -> dict[str, Any]:
        rule = by_name[alert]
        # labels from what the rules promise (severity per alert, the caller's extra labels),
        # not copied from the rendered rule: a dropped or changed label fails promtool's test
        all_labels = {"severity": SEVERITY[alert], **extra, **labels}
        return {
            "exp_labels": all_labels,
            "exp_annotations": render_annotations(rule["annotations"], {**labels}),
        }

    def case(
        inputs: list[tuple[str, str]],
        alert: str,
        fires: dict[str, str] | None,
        at: int | None = None,
    ) -> dict[str, Any]:
        at = eval_minutes if at is None else at
        return {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in inputs],
            "alert_rule_test": [
                {
                    "eval_time": f"{at}m",
                    "alertname": alert,
                    "exp_alerts": [expect(alert, fires)] if fires is not None else [],
                }
            ],
        }

    def counter(labels: dict[str, str], per_minute: float) -> tuple[str, str]:
        return series("http_requests_total", labels), f"0+{per_minute:g}x{length}"

    def requests(status: str, route: str = APP_ROUTE) -> dict[str, str]:
        return {**base, "route": route, "method": "GET", "status": status}

    total = 1000.0
    bad_fraction = min(2 * error_ratio, (1 + error_ratio) / 2)
    good_fraction = error_ratio / 2
    tests = [
        case(
            [
                counter(requests("200"), total * (1 - bad_fraction)),
                counter(requests("500"), total * bad_fraction),
            ],
            "BackboneAppHighErrorRatio",
            base,
        ),
        case(
            [
                counter(requests("200"), total * (1 - good_fraction)),
                counter(requests("500"), total * good_fraction),
                # a failing readiness endpoint is the readiness alert's business, not this one's
                counter(requests("503", "/readyz"), total * 10),
            ],
            "BackboneAppHighErrorRatio",
            None,
        ),
    ]

    # latency: every observation in one bucket. (lo, hi] with lo >= threshold gives a quantile
    # above it; hi <= threshold gives one at or below it (histogram_quantile interpolates inside).
    bounds = (0.0, *app_buckets())
    slow = next(i for i in range(1, len(bounds)) if bounds[i - 1] >= latency)
    fast = max(i for i in range(1, len(bounds)) if bounds[i] <= latency)

    def histogram(bucket: int) -> list[tuple[str, str]]:
        out = []
        for i, le in enumerate([*bounds[1:], math.inf], start=1):
            labels = {**requests("200"), "le": "+Inf" if le == math.inf else f"{le:g}"}
            name = "http_request_duration_seconds_bucket"
            out.append((series(name, labels), f"0+{total if i >= bucket else 0:g}x{length}"))
        return out

    tests += [
        case(histogram(slow), "BackboneAppHighLatency", base),
        case(histogram(fast), "BackboneAppHighLatency", None),
    ]

    ready = series("app_ready", target)
    up = series("up", target)
    tests += [
        case([(ready, f"1x3 0x{length}")], "BackboneAppNotReady", target),
        case([(ready, f"1x{length}")], "BackboneAppNotReady", None),
        case([(up, f"1x3 0x{length}")], "BackboneAppTargetDown", target),
        case([(up, f"1x{length}")], "BackboneAppTargetDown", None),
        case(
            [(series("up", {**target, "job": "someone-else"}), f"1x{length}")],
            "BackboneAppAbsent",
            base,
        ),
        case([(up, f"1x{length}")], "BackboneAppAbsent", None),
    ]
    db = series("app_db_up", target)
    tests += [
        # two minutes of failed checks page at once (the 2m window is the wait)
        case([(db, f"1x3 0x{length}")], "BackboneAppDatabaseDown", target),
        case([(db, f"1x{length}")], "BackboneAppDatabaseDown", None),
        # one failed check in a minute: not an outage
        case([(db, f"1x3 0x1 1x{length}")], "BackboneAppDatabaseDown", None),
    ]
    if cluster_ns:
        tests += cluster_cases(case, cluster_ns, length)
    if for_minutes >= 2:
        # a blip shorter than `for` must not page anyone
        blip = f"1x3 0x{for_minutes - 2} 1x{length}"
        tests.append(case([(ready, blip)], "BackboneAppNotReady", None))
        tests.append(case([(up, blip)], "BackboneAppTargetDown", None))
    return {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}


def cluster_cases(case: Any, namespace: str, length: int) -> list[dict[str, Any]]:
    """kube-state-metrics series that should and should not fire the cluster alerts."""
    ksm = {"job": KSM_JOB, "instance": "10.0.1.9:8080"}
    long = HPA_AT_MAX_MINUTES + 30
    node = {**ksm, "node": "ip-10-0-1-5", "condition": "Ready", "status": "true"}
    pod = {**ksm, "namespace": namespace, "pod": "shortener-abc"}
    other = {**pod, "namespace": "someone-else"}
    restarts = {**pod, "container": "app"}
    hpa = {**ksm, "namespace": namespace, "horizontalpodautoscaler": "shortener"}
    cur = "kube_horizontalpodautoscaler_status_current_replicas"
    top = "kube_horizontalpodautoscaler_spec_max_replicas"
    phase = "kube_pod_status_phase"
    return [
        case([(series("kube_node_status_condition", node), f"1x3 0x{length}")],
             "BackboneNodeNotReady", node),
        case([(series("kube_node_status_condition", node), f"1x{length}")],
             "BackboneNodeNotReady", None),
        case([(series(phase, {**pod, "phase": "Pending"}), f"1x{length}")],
             "BackbonePodPending", {"namespace": namespace, "pod": "shortener-abc"}),
        case([(series(phase, {**pod, "phase": "Pending"}), f"0x{length}"),
              (series(phase, {**other, "phase": "Pending"}), f"1x{length}")],
             "BackbonePodPending", None),
        case([(series("kube_pod_container_status_restarts_total", restarts), f"0+1x{length}")],
             "BackbonePodRestarting", restarts),
        case([(series("kube_pod_container_status_restarts_total", restarts), f"0+0x{length}")],
             "BackbonePodRestarting", None),
        # at the maximum for longer than 15 minutes pages; for 10 minutes does not
        case([(series(cur, hpa), f"4x{long}"), (series(top, hpa), f"4x{long}")],
             "BackboneHpaAtMax", hpa, at=HPA_AT_MAX_MINUTES + 5),
        case([(series(cur, hpa), f"2x10 4x{long}"), (series(top, hpa), f"4x{long}")],
             "BackboneHpaAtMax", None, at=20),
        case([(series(cur, hpa), f"3x{long}"), (series(top, hpa), f"4x{long}")],
             "BackboneHpaAtMax", None, at=HPA_AT_MAX_MINUTES + 5),
    ]  # fmt: skip


def write(tmp_path: Path, rules: dict[str, Any], tests: dict[str, Any]) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))


# ------------------------------------------------------------------ the tests

CUSTOM = {
    "error_ratio": 0.2,
    "latency_p99_seconds": 0.1,
    "for_minutes": 2,
    "job": "shortener",
    "namespace": "backbone",
    "labels": {"stack": "prod", "team": "web"},
    "cluster_namespace": "backbone",
    "log_group": "/aws/containerinsights/backbone-prod-1a2b3c/application",
}


@pytest.mark.realpart
@pytest.mark.parametrize("given", [DEFAULTS, CUSTOM], ids=["defaults", "custom"])
def test_promtool_checks_and_unit_tests_pass(tmp_path: Path, given: dict[str, Any]) -> None:
    rules = render_rules(**given)
    write(tmp_path, rules, unit_tests(rules, **given))

    checked = run_promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = len(ALERTS) + (len(CLUSTER_ALERTS) if given.get("cluster_namespace") else 0)
    assert f"SUCCESS: {count} rules found" in checked.stdout

    tested = run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.realpart
def test_the_unit_tests_catch_a_threshold_that_does_not_match(tmp_path: Path) -> None:
    # rules with a looser error ratio and a slower latency bound than the tests expect: the
    # "should fire" cases must fail, proving the generated series sit on the thresholds
    expected = {**DEFAULTS, "error_ratio": 0.05, "latency_p99_seconds": 0.5}
    rules = render_rules(**{**expected, "error_ratio": 0.5, "latency_p99_seconds": 5.0})
    write(tmp_path, rules, unit_tests(rules, **expected))
    tested = run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "BackboneAppHighErrorRatio" in tested.stdout + tested.stderr
    assert "BackboneAppHighLatency" in tested.stdout + tested.stderr

    # and rules stricter than the tests expect fire on the "should not fire" series
    rules = render_rules(**{**expected, "error_ratio": 0.01, "latency_p99_seconds": 0.01})
    write(tmp_path, rules, unit_tests(rules, **expected))
    tested = run_promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "BackboneAppHighErrorRatio" in tested.stdout + tested.stderr
    assert "BackboneAppHighLatency" in tested.stdout + tested.stderr


def test_rendered_shape() -> None:
    rules = render_rules(
        **DEFAULTS, labels={"stack": "dev"}, runbook_url="https://example.org/runbook"
    )
    [group] = rules["groups"]
    assert [r["alert"] for r in group["rules"]] == list(ALERTS)
    for rule in group["rules"]:
        # 3 periods of 60 s, as the alarms; the database check's own 2-minute window is its wait
        assert rule["for"] == ("0m" if rule["alert"] == "BackboneAppDatabaseDown" else "3m")
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["labels"]["stack"] == "dev"
        assert set(rule["annotations"]) == {"summary", "description", "runbook", "runbook_url"}
        assert rule["annotations"]["runbook"].startswith("1. ")
    exprs = {r["alert"]: r["expr"] for r in group["rules"]}
    assert "> 0.05" in exprs["BackboneAppHighErrorRatio"]
    assert 'status=~"5.."' in exprs["BackboneAppHighErrorRatio"]
    assert "histogram_quantile(0.99," in exprs["BackboneAppHighLatency"]
    assert exprs["BackboneAppHighLatency"].endswith("> 1")  # the config's 1.0 s
    assert exprs["BackboneAppNotReady"] == 'app_ready{job="backbone-app"} == 0'
    # the rule file round-trips through YAML unchanged
    assert yaml.safe_load(yaml.safe_dump(rules)) == rules


def test_thresholds_move_the_rules() -> None:
    rules = render_rules(error_ratio=0.1, latency_p99_seconds=1.5, for_minutes=10)
    exprs = {r["alert"]: r for r in rules["groups"][0]["rules"]}
    assert exprs["BackboneAppHighErrorRatio"]["expr"].endswith("> 0.1")
    assert exprs["BackboneAppHighLatency"]["expr"].endswith("> 1.5")
    assert "1.5s" in exprs["BackboneAppHighLatency"]["annotations"]["summary"]
    assert {r["for"] for n, r in exprs.items() if n != "BackboneAppDatabaseDown"} == {"10m"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_ratio": 0}, "error_ratio"),
        ({"error_ratio": 1.5}, "error_ratio"),
        ({"latency_p99_seconds": 0}, "latency_p99_seconds"),
        ({"for_minutes": -1}, "for_minutes"),
        ({"rate_window": "5 minutes"}, "rate_window"),
        ({"labels": {"bad-name": "x"}}, "label name"),
        ({"labels": {"severity": "page"}}, "severity"),
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_rules(**{**DEFAULTS, **kwargs})


def test_label_values_are_quoted() -> None:
    rules = render_rules(**DEFAULTS, job='we"ird\\job')
    expr = rules["groups"][0]["rules"][2]["expr"]  # BackboneAppNotReady
    assert expr == 'app_ready{job="we\\"ird\\\\job"} == 0'


def test_runbooks_name_the_log_group_and_a_logs_insights_query() -> None:
    group = "/aws/containerinsights/backbone-dev-1a2b3c/application"
    rules = render_rules(**DEFAULTS, log_group=group, cluster_namespace="backbone")
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert [r["alert"] for r in alerts] == [*ALERTS, *CLUSTER_ALERTS]
    for rule in alerts:
        runbook = rule["annotations"]["runbook"]
        assert f"CloudWatch Logs group {group}" in runbook, rule["alert"]
        assert 'filter kubernetes.namespace_name = "backbone"' in runbook
        assert 'log_processed.level = "error"' in runbook
    # without container logs (a Prometheus of one's own), no promise of a log group
    plain = render_rules(**DEFAULTS)
    assert all("Logs:" not in r["annotations"]["runbook"] for r in plain["groups"][0]["rules"])
    assert len(plain["groups"]) == 1
