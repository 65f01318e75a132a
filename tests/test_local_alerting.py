"""The local stack's alerting path with real parts: Debian's Prometheus and Alertmanager binaries on
loopback, each run with the configuration file the local stack uploads into its container.

Only what cannot be the same outside Docker changes: the Alertmanager target (the container's
name on the stack's network) becomes its loopback address, the rule file's path is absolute, the
intervals are a second instead of 15 s (and the resend delay: a first notification sent before the
notifier has discovered its Alertmanager is dropped, and resent only after it, a minute by
default), and a planted rule that always fires is added beside the kit's rules. The kit's rules load, Prometheus discovers the Alertmanager, and the planted alert
reaches Alertmanager's API through the kit's route to its receiver.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.realparts import free_port, require_tool, wait_until

pytestmark = pytest.mark.realpart
CONTAINER = "docker:index/container:Container"
HOW = "apt-get install prometheus prometheus-alertmanager (.ci/run does)"
PLANTED = "BackboneLocalPlantedAlways"


def uploaded(plan: Any, name: str) -> dict[str, str]:
    container = plan.one(CONTAINER, name)
    return {u["file"].rsplit("/", 1)[1]: u["content"] for u in container.inputs["uploads"]}


def _until(what: str, probe: Any, timeout: float = 30.0) -> Any:
    return wait_until(what, probe, timeout, every=0.25, tolerate=(httpx.HTTPError,))


def _run(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def stack(plan_of, tmp_path_factory) -> Iterator[dict[str, Any]]:
    prometheus, alertmanager = (
        require_tool("prometheus", HOW),
        require_tool("prometheus-alertmanager", HOW),
    )
    folder = tmp_path_factory.mktemp("local-alerting")
    plan = plan_of("local")
    am_files, prom_files = uploaded(plan, "local-alertmanager"), uploaded(plan, "local-prometheus")
    (folder / "alertmanager.yml").write_text(am_files["alertmanager.yml"])
    (folder / "rules.yml").write_text(prom_files["rules.yml"])
    planted = {
        "groups": [
            {
                "name": "planted",
                "rules": [
                    {
                        "alert": PLANTED,
                        "expr": "vector(1)",
                        "labels": {"severity": "warning", "stack": "local"},
                        "annotations": {"summary": "always firing (test)"},
                    }
                ],
            }
        ]
    }
    (folder / "planted.yml").write_text(yaml.safe_dump(planted))
    config = yaml.safe_load(prom_files["prometheus.yml"])
    am_name = plan.one(CONTAINER, "local-alertmanager").inputs["name"]
    ((target,),) = [
        s["targets"] for a in config["alerting"]["alertmanagers"] for s in a["static_configs"]
    ]
    assert target == f"{am_name}:9093"  # what the container gets
    am_port, prom_port = free_port(), free_port()
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        f"127.0.0.1:{am_port}"
    ]
    assert config["rule_files"] == ["rules.yml"]
    config["rule_files"] = [str(folder / "rules.yml"), str(folder / "planted.yml")]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    am = _run(
        [
            alertmanager,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        folder / "alertmanager.log",
    )
    prom: subprocess.Popen[bytes] | None = None
    try:
        # started alongside Alertmanager: alerts sent before it answers are sent again after
        # the resend delay
        prom = _run(
            [
                prometheus,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--rules.alert.resend-delay=1s",
            ],
            folder / "prometheus.log",
        )
        _until(
            "Alertmanager ready",
            lambda: httpx.get(f"http://127.0.0.1:{am_port}/-/ready").is_success,
        )
        yield {
            "prometheus": f"http://127.0.0.1:{prom_port}",
            "alertmanager": f"http://127.0.0.1:{am_port}",
            "am_port": am_port,
            "folder": folder,
            "rules": yaml.safe_load(prom_files["rules.yml"]),
            "am_config": yaml.safe_load(am_files["alertmanager.yml"]),
        }
    finally:
        if prom is not None:
            _stop(prom)
        _stop(am)


def _logs(stack: dict[str, Any]) -> str:
    folder = stack["folder"]
    return "\n".join(
        f"--- {n}\n{(folder / n).read_text()[-3000:]}"
        for n in ("prometheus.log", "alertmanager.log")
    )


def test_prometheus_loads_the_kits_rules(stack) -> None:
    def groups() -> Any:
        r = httpx.get(f"{stack['prometheus']}/api/v1/rules", timeout=5)
        return r.json()["data"]["groups"] if r.status_code == 200 else None

    loaded = _until("Prometheus's rules", groups)
    names = {r["name"] for g in loaded for r in g["rules"]}
    kit = {r["alert"] for g in stack["rules"]["groups"] for r in g["rules"] if "alert" in r}
    assert kit and kit <= names, _logs(stack)
    assert PLANTED in names


def test_prometheus_discovers_the_local_alertmanager(stack) -> None:
    def active() -> Any:
        r = httpx.get(f"{stack['prometheus']}/api/v1/alertmanagers", timeout=5)
        return r.json()["data"]["activeAlertmanagers"] if r.status_code == 200 else None

    (found,) = _until("an active Alertmanager", active)
    assert found["url"] == f"http://127.0.0.1:{stack['am_port']}/api/v2/alerts"


def test_a_firing_alert_reaches_alertmanager_by_the_kits_route(stack) -> None:
    def received() -> Any:
        r = httpx.get(f"{stack['alertmanager']}/api/v2/alerts", timeout=5)
        if r.status_code != 200:
            return None
        return [a for a in r.json() if a["labels"].get("alertname") == PLANTED]

    try:
        (alert,) = _until("the planted alert in Alertmanager", received, timeout=45)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_logs(stack)}") from None
    assert alert["status"]["state"] == "active"
    assert alert["labels"]["stack"] == "local"
    receiver = stack["am_config"]["route"]["receiver"]
    assert [r["name"] for r in alert["receivers"]] == [receiver]
    # grouped as the kit's route says (alertname, stack, namespace)
    groups = httpx.get(f"{stack['alertmanager']}/api/v2/alerts/groups", timeout=5).json()
    (group,) = [g for g in groups if g["labels"].get("alertname") == PLANTED]
    assert group["labels"] == {"alertname": PLANTED, "stack": "local"}
    assert group["receiver"]["name"] == receiver
