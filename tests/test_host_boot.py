"""The free-tier host's user data, run: its script against the local Docker engine.

`infra.components.host.user_data` renders the boot script EC2 runs once. Here the same script
runs under bash with stand-ins for what only EC2 has (`dnf`, `systemctl`, the `aws` CLI answering
the ECR token and the Parameter Store value; `docker login`/`pull` without a registry), and the
real Docker engine for everything else: the migration container, then the app container, with
the image the container tests build, against a real PostgreSQL. What is checked is what the host
would do: files, containers, their hardening and restart policy, and the app answering through
the published port.

Not reproduced here: pulling by digest (no registry: the test image has a local tag), IMDS and
the instance role, Amazon Linux's package repositories.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from backbone.plan import Plan
from infra.components.host import APP_UID, Boot, user_data
from tests.app.conftest import TOKEN, PgCluster
from tests.app.test_container import docker, image  # noqa: F401  (the module's image fixture)
from tests.realparts import free_port

pytestmark = [pytest.mark.realpart, pytest.mark.slow]

PARAMETER = "/backbone-test/host/env"


def free_tier_migration_settings(plan_of: Callable[[str], Plan]) -> dict[str, str]:
    from tests.test_stack_free_tier import INSTANCE, _migration_settings

    return _migration_settings(plan_of("free-tier").one(INSTANCE).inputs["userData"])


def bridge_gateway() -> str:
    out = docker("network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}")
    return out.stdout.strip()


class BridgePg(PgCluster):
    """The test PostgreSQL, also listening on Docker's bridge: the host's containers run on the
    bridge network (published ports), as on EC2, so 127.0.0.1 is not theirs to reach."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        super().__init__()

    def start(self) -> None:
        hba = self.data / "pg_hba.conf"
        # Containers reach it from Docker's networks: the default address pools are
        # 172.17.0.0/16-172.31.0.0/16, then 192.168.0.0/16 in /20s once those are in use.
        for line in ("host all all 172.16.0.0/12 trust\n", "host all all 192.168.0.0/16 trust\n"):
            if line not in hba.read_text():
                with hba.open("a") as f:
                    f.write(line)
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1,{self.gateway} "
            "-c fsync=off -c max_connections=100"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")


@pytest.fixture(scope="module")
def bridge_pg(image: str) -> Iterator[BridgePg]:  # noqa: F811  (the image first: skips cleanly)
    cluster = BridgePg(bridge_gateway())
    yield cluster
    cluster.destroy()


STUBS = {
    # Amazon Linux's package manager: "installs" Docker by putting the docker stand-in on PATH
    "dnf": """#!/bin/bash
echo "dnf $*" >>"$HOST_TEST_LOG"
[ "$*" = "install -y -q docker" ] || exit 9
cp "$HOST_TEST_BIN/docker-shim" "$HOST_TEST_BIN/docker"
""",
    "systemctl": """#!/bin/bash
echo "systemctl $*" >>"$HOST_TEST_LOG"
""",
    # the AWS CLI with the instance role: an ECR token, the decrypted parameter
    "aws": """#!/bin/bash
echo "aws $*" >>"$HOST_TEST_LOG"
case "$1 $2" in
  "ecr get-login-password") echo offline-ecr-token ;;
  "ssm get-parameter")
    [[ " $* " == *" --name $HOST_TEST_PARAMETER "* && " $* " == *" --with-decryption "* ]] || exit 8
    cat "$HOST_TEST_VALUE" ;;
  *) exit 7 ;;
esac
""",
    # docker: the real engine, except a registry login and a pull (the image is local)
    "docker-shim": """#!/bin/bash
case "$1" in
  login) echo "docker login $* password=$(cat)" >>"$HOST_TEST_LOG" ;;
  pull) exec "$HOST_TEST_DOCKER" image inspect "$2" >/dev/null ;;
  *) exec "$HOST_TEST_DOCKER" "$@" ;;
esac
""",
}


@pytest.fixture(scope="module")
def booted(
    image: str,  # noqa: F811
    bridge_pg: BridgePg,
    tmp_path_factory: pytest.TempPathFactory,
    plan_of: Callable[[str], Plan],
) -> Iterator[dict]:
    """The host booted once for the module: the tests read what the boot left, and leave the
    app container running (the restart test has Docker restart it; the canary test stops it and
    starts it again)."""
    tmp_path = tmp_path_factory.mktemp("host")
    name = f"backbone-host-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    bin_dir, tools, state = tmp_path / "bin", tmp_path / "tools", tmp_path / "state"
    bin_dir.mkdir()
    tools.mkdir()
    # PATH holds the stand-ins and only these tools of the machine (Amazon Linux has them all):
    # the machine's own docker stays out of reach until `dnf install docker` brings the shim.
    for tool in ("bash", "cat", "cp", "install", "python3", "rm", "sleep"):
        found = shutil.which(tool, path="/usr/bin:/bin")
        assert found, tool
        (tools / tool).symlink_to(found)
    for stub, text in STUBS.items():
        (bin_dir / stub).write_text(text)
        (bin_dir / stub).chmod(0o755)
    db = bridge_pg.new_database().rsplit("/", 1)[1]
    gw, pg_port = bridge_pg.gateway, bridge_pg.port
    value = {
        "app": {
            "DATABASE_URL": f"postgresql://shortener_app:app-pass-0123456789@{gw}:{pg_port}/{db}",
            "API_TOKEN": TOKEN,
        },
        "migration": {
            "DATABASE_URL": f"postgresql://postgres:master-secret-xyz@{gw}:{pg_port}/{db}",
            "APP_DB_USER": "shortener_app",
            "APP_DB_PASSWORD": "app-pass-0123456789",
            "JOB_DB_USER": "shortener_job",
            "JOB_DB_PASSWORD": "job-pass-0123456789",
        },
    }
    (tmp_path / "value.json").write_text(json.dumps(value))
    script = tmp_path / "user-data.sh"
    script.write_text(
        user_data(
            Boot(
                region="us-east-1",
                image=image,
                parameter=PARAMETER,
                http_port=port,
                state_dir=str(state),
                name=name,
                # the free-tier stack's own: the canary's known link, for the migration
                migration_settings=free_tier_migration_settings(plan_of),
            )
        )
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{tools}",
        "HOST_TEST_LOG": str(tmp_path / "calls.log"),
        "HOST_TEST_BIN": str(bin_dir),
        "HOST_TEST_PARAMETER": PARAMETER,
        "HOST_TEST_VALUE": str(tmp_path / "value.json"),
        "HOST_TEST_DOCKER": shutil.which("docker") or "/usr/bin/docker",
    }
    try:
        done = subprocess.run(
            [str(tools / "bash"), str(script)], env=env, capture_output=True, text=True, timeout=300
        )
        yield {
            "done": done,
            "name": name,
            "port": port,
            "state": state,
            "calls": (tmp_path / "calls.log").read_text(),
            "value": value,
            "db": bridge_pg.url(db),
        }
    finally:
        for container in (name, f"{name}-migrate"):
            docker("rm", "-f", container, check=False)


def wait_healthy(base: str, name: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            logs = docker("logs", name, check=False)
            raise AssertionError(f"the app did not become ready:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.2)


def test_user_data_installs_docker_migrates_then_serves(booted: dict) -> None:
    done = booted["done"]
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    calls = booted["calls"].splitlines()
    # the runtime installed and started; the token from ECR given to docker login on stdin
    assert calls[0] == "dnf install -y -q docker"
    assert "systemctl enable --now docker" in calls
    assert any(c.startswith("aws ecr get-login-password --region us-east-1") for c in calls)
    login = next(c for c in calls if c.startswith("docker login"))
    assert "--password-stdin" in login and login.endswith("password=offline-ecr-token")
    # the environment: decrypted into root-only files, the parameter's JSON removed
    state: Path = booted["state"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not (state / "env.json").exists()
    for part in ("app", "migration"):
        path = state / f"{part}.env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        expected = "".join(f"{k}={v}\n" for k, v in booted["value"][part].items())
        assert path.read_text() == expected
    assert "master-secret-xyz" not in (state / "app.env").read_text()

    # the migration ran first: the app's and the job's roles exist, the schema is there
    with psycopg.connect(booted["db"]) as conn:
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        assert {"shortener_app", "shortener_job"} <= roles
        assert conn.execute("SELECT to_regclass('links')").fetchone() == ("links",)
    # and is gone (--rm)
    migrate = docker("inspect", f"{booted['name']}-migrate", check=False)
    assert migrate.returncode != 0


def test_the_app_container_is_hardened_restarted_and_serves_on_the_port(booted: dict) -> None:
    assert booted["done"].returncode == 0, booted["done"].stderr
    name = booted["name"]
    info = json.loads(docker("inspect", name).stdout)[0]
    hc, config = info["HostConfig"], info["Config"]
    assert hc["RestartPolicy"]["Name"] == "unless-stopped"
    assert hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert "/tmp" in hc["Tmpfs"]
    assert hc["PortBindings"] == {"8000/tcp": [{"HostIp": "", "HostPort": str(booted["port"])}]}
    assert hc["LogConfig"]["Config"] == {"max-file": "3", "max-size": "10m"}
    # the app's own role, never the master's
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["DATABASE_URL"].startswith("postgresql://shortener_app:")
    assert env["MIGRATE_ON_STARTUP"] == "false"
    assert docker("exec", name, "id", "-u").stdout.strip() == str(APP_UID)

    base = f"http://127.0.0.1:{booted['port']}"
    wait_healthy(base, name)
    made = httpx.post(
        f"{base}/api/links",
        json={"url": "https://example.org/from-the-host", "code": "on-host"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert made.status_code == 201, made.text
    assert httpx.get(f"{base}/on-host").headers["location"] == "https://example.org/from-the-host"

    # the restart policy: the app stops (SIGTERM to its PID 1), Docker starts it again
    docker("exec", name, "python", "-c", "import os, signal; os.kill(1, signal.SIGTERM)")
    deadline = time.monotonic() + 30
    while json.loads(docker("inspect", name).stdout)[0]["RestartCount"] < 1:
        assert time.monotonic() < deadline, "Docker did not restart the app"
        time.sleep(0.2)
    wait_healthy(base, name)
    assert httpx.get(f"{base}/on-host").status_code == 307


class PublishedMetrics:
    """Where the canary's one PutMetricData call lands (CloudWatch is not what is tested here)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def put_metric_data(self, **call: object) -> None:
        self.calls.append(call)

    def availability(self) -> dict[str, float]:
        (call,) = self.calls
        return {
            next(d["Value"] for d in m["Dimensions"] if d["Name"] == "Probe"): m["Value"]
            for m in call["MetricData"]  # type: ignore[attr-defined]
            if m["MetricName"] == "Availability"
        }


def test_the_canary_probes_the_host_and_follows_the_link_its_migration_made(
    booted: dict, plan_of: Callable[[str], Plan]
) -> None:
    """The free-tier stack's canary, with its own settings from the plan, against the booted
    host (its port standing for the Elastic IP): the migration made the known link, so all three
    probes are up; with the app stopped, they are down (connection refused)."""
    from tests.functions.conftest import load_function

    assert booted["done"].returncode == 0, booted["done"].stderr
    canary = load_function("canary")
    (fn,) = plan_of("free-tier").of_type("aws:lambda/function:Function")
    env = dict(fn.inputs["environment"]["variables"])
    base = f"http://127.0.0.1:{booted['port']}"
    env["CANARY_BASE_URL"] = base
    settings = canary.Settings.from_env(env)
    wait_healthy(base, booted["name"])

    up = PublishedMetrics()
    result = canary.run(settings, cloudwatch=up)
    by_probe = {p["probe"]: p for p in result["probes"]}
    assert result["ok"] is True, by_probe
    assert {k: p["status"] for k, p in by_probe.items()} == {
        "health": 200,
        "read": 200,
        "redirect": 307,
    }
    assert up.availability() == {"health": 1.0, "read": 1.0, "redirect": 1.0}
    assert up.calls[0]["Namespace"] == "Backbone/Canary"

    docker("stop", "-t", "30", booted["name"])  # stopped by hand: the restart policy leaves it
    try:
        down = PublishedMetrics()
        result = canary.run(settings, cloudwatch=down)
        assert result["ok"] is False
        assert down.availability() == {"health": 0.0, "read": 0.0, "redirect": 0.0}
        assert {p["error"] for p in result["probes"]} == {"connection refused"}
    finally:
        docker("start", booted["name"])  # as the boot left it, for any test after this one
