"""The local stack's proxy, running: the haproxy.cfg the stack writes, in front of two app replicas.

The public haproxy image is out of reach here (no Docker Hub), so a stand-in image is built from
the local Debian base with this machine's HAProxy (Debian's, the one `.ci/run` installs) and the
libraries it links. The replicas are the app's image (the container tests build it), on a Docker
network of their own, against a real PostgreSQL; the proxy resolves them through Docker's DNS as
in the stack. What is checked: requests through the proxy reach both replicas, and a stopped
replica is taken out by the health checks while the other keeps answering.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.components.local import APP_PORT, PROXY_PORT, haproxy_config
from tests.app.conftest import TOKEN
from tests.app.test_container import BASE_IMAGE, docker, image  # noqa: F401
from tests.realparts import free_port, require_tool
from tests.test_host_boot import BridgePg, bridge_gateway

pytestmark = [pytest.mark.realpart, pytest.mark.slow]

STANDIN = "backbone/haproxy-standin:test"
# The image's own health check, run every second rather than every 10 s (Docker 20.10 has no
# --health-start-interval): the replicas are "healthy" by the same check, seconds sooner.
HEALTH_EVERY_SECOND = ["--health-interval", "1s"]
HOW = "install HAProxy (Debian: apt-get install haproxy; .ci/run does)"


def standin_image(tmp: Path) -> str:
    """FROM the local base: /usr/sbin/haproxy and every library `ldd` lists for it."""
    haproxy = require_tool("haproxy", HOW)
    context = tmp / "haproxy-standin"
    libs = context / "libs"
    libs.mkdir(parents=True)
    shutil.copy(haproxy, context / "haproxy")
    ldd = subprocess.run(["ldd", haproxy], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].split():
            shutil.copy(parts[1].split()[0], libs)
    (context / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        "COPY libs/ /opt/haproxy/lib/\n"
        "COPY haproxy /usr/local/bin/haproxy\n"
        "ENV LD_LIBRARY_PATH=/opt/haproxy/lib\n"
        "USER 65534:65534\n"
    )
    # built again only when what it is built from changed: its files and the base image
    digest = hashlib.sha256(docker("image", "inspect", "-f", "{{.Id}}", BASE_IMAGE).stdout.encode())
    for path in sorted(context.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(context).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    inputs = digest.hexdigest()
    label = '{{index .Config.Labels "backbone.inputs"}}'
    have = docker("image", "inspect", "-f", label, STANDIN, check=False)
    if have.returncode == 0 and have.stdout.strip() == inputs:
        return STANDIN
    built = docker(
        "build", "--label", f"backbone.inputs={inputs}", "-t", STANDIN, str(context),
        timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return STANDIN


@pytest.fixture
def balanced(image: str, tmp_path: Path) -> Iterator[dict]:  # noqa: F811
    proxy_image = standin_image(tmp_path)
    pg = BridgePg(bridge_gateway())
    run = uuid.uuid4().hex[:8]
    network = f"backbone-proxy-test-{run}"
    replicas = [f"proxy-test-{run}-app-{n}" for n in (1, 2)]
    proxy = f"proxy-test-{run}-proxy"
    port = free_port()
    db = pg.new_database().rsplit("/", 1)[1]
    url = f"postgresql://postgres@{pg.gateway}:{pg.port}/{db}"
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(replicas))
    config.chmod(0o644)
    hardening = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    try:
        docker("network", "create", network)
        for n, name in enumerate(replicas):
            docker(
                "run", "-d", "--name", name, "--network", network, *hardening,
                "--user", "10001:10001", "--tmpfs", "/tmp", *HEALTH_EVERY_SECOND,
                "-e", f"DATABASE_URL={url}", "-e", f"API_TOKEN={TOKEN}",
                "-e", f"PORT={APP_PORT}", "-e", f"MIGRATE_ON_STARTUP={'true' if n == 0 else 'false'}",
                image,
            )  # fmt: skip
        # started side by side; the first migrates, and the proxy starts once both are healthy
        for name in replicas:
            wait_for(lambda name=name: healthy(name), f"{name} healthy", container=name)
        docker(
            "run", "-d", "--name", proxy, "--network", network, *hardening,
            "-v", f"{config}:/etc/backbone/haproxy.cfg:ro",
            "-p", f"127.0.0.1:{port}:{PROXY_PORT}", proxy_image,
            "haproxy", "-W", "-db", "-f", "/etc/backbone/haproxy.cfg",
        )  # fmt: skip
        yield {"base": f"http://127.0.0.1:{port}", "replicas": replicas, "proxy": proxy}
    finally:
        for name in [proxy, *replicas]:
            docker("rm", "-f", name, check=False)
        docker("network", "rm", network, check=False)
        pg.destroy()


def healthy(name: str) -> bool:
    state = docker("inspect", "-f", "{{.State.Health.Status}}", name, check=False)
    return state.stdout.strip() == "healthy"


def wait_for(check, what: str, seconds: float = 60, container: str | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() >= deadline:
            why = ""
            if container:  # say what the container said: its state, health log and output
                state = docker("inspect", "-f", "{{json .State}}", container, check=False)
                logs = docker("logs", "--tail", "30", container, check=False)
                why = f"\nstate: {state.stdout.strip()}\nlogs:\n{logs.stdout}{logs.stderr}"
            raise AssertionError(f"timed out waiting for {what}{why}")
        time.sleep(0.2)


def answered(base: str) -> int | None:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base}/readyz", timeout=2).status_code
    return None


def test_the_proxy_balances_and_drops_a_stopped_replica(balanced: dict) -> None:
    base, replicas = balanced["base"], balanced["replicas"]
    logs = lambda name: docker("logs", name, check=False)  # noqa: E731
    wait_for(lambda: answered(base) == 200, "the proxy to answer")
    # a read of a missing link: logged by the replica that serves it (probes are not)
    statuses = [httpx.get(f"{base}/api/links/balance-probe").status_code for _ in range(20)]
    assert statuses == [404] * 20
    served = {
        name: logs(name).stdout.count('"path": "/api/links/balance-probe"') for name in replicas
    }
    # round robin: each replica served about half
    assert sum(served.values()) == 20 and all(n >= 5 for n in served.values()), served

    docker("stop", "-t", "5", replicas[1])
    # the checks (2 s, fall 2) take it out; meanwhile a refused connection is retried elsewhere.
    # Requests go on until the proxy has marked it DOWN and more than 30 were sent (at most 30 s).
    started, outcomes, proxy_said = time.monotonic(), [], ""
    down = f"{replicas[1]} is DOWN"
    while time.monotonic() - started < 30:
        try:
            outcomes.append(httpx.get(f"{base}/api/links/balance-probe", timeout=5).status_code)
        except httpx.HTTPError as exc:
            outcomes.append(type(exc).__name__)
        if len(outcomes) % 10 == 0 and down not in proxy_said:
            proxy_log = logs(balanced["proxy"])
            proxy_said = proxy_log.stdout + proxy_log.stderr
        if len(outcomes) > 30 and down in proxy_said:
            break
        time.sleep(0.05)
    failed = [o for o in outcomes if o != 404]
    assert len(outcomes) > 30 and failed == [], f"{len(failed)} of {len(outcomes)}: {failed}"
    proxy_log = logs(balanced["proxy"])
    assert down in proxy_log.stdout + proxy_log.stderr
