"""Stack files for tests: a shipped stack's settings with some changed, written under a new name."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from backbone import cache
from backbone.plan import Plan
from backbone.synth import resolve
from tests import procs, realparts

REPO = Path(__file__).resolve().parent.parent


def stack_variant(tmp_path: Path, base: str, filename: str, changes: dict[str, Any]) -> Path:
    """stacks/Pulumi.<base>.yaml with `changes` applied ("cluster.maxNodes": 2; None deletes the
    key), written to tmp_path/filename."""
    data = yaml.safe_load((REPO / "stacks" / f"Pulumi.{base}.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        target = data["config"].setdefault(f"backbone:{section}", {})
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(data))
    return path


_PLANS: dict[tuple[str, str], Plan] = {}


def variant_plan(base: str, filename: str, changes: dict[str, Any]) -> Plan:
    """The Plan of stack_variant(base, filename, changes), made once: tests (of any module) that
    read the same variant share it within a test process, and across processes (xdist workers,
    the next run) through the kit's Plan cache (backbone.cache: keyed by the content of the
    stack file, the program, app/, the engine and the SDKs), as tests/conftest.py's plan_of
    shares the shipped stacks. The Plan is shared: copy it before changing it."""
    data = yaml.safe_load((REPO / "stacks" / f"Pulumi.{base}.yaml").read_text())
    key = (filename, yaml.safe_dump(data) + repr(sorted(changes.items(), key=repr)))
    if key not in _PLANS:
        # one synthesis per variant per run: a worker that asks while another makes it waits
        # for it, then reads it from the Plan cache
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        lock_path = realparts.run_path("variant", procs.run_owner(), f"{digest}.lock")
        folder = Path(tempfile.mkdtemp(prefix="backbone-variant-"))
        try:
            with open(lock_path, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                path = stack_variant(folder, base, filename, changes)
                _PLANS[key] = cache.plan(resolve(str(path), cwd=REPO))[0]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return _PLANS[key]


# One dev variant for settings whose tests each read their own resources: the database's
# monitoring role, backup window and the job's schedule, the purge settings, the password
# rotation's schedule and window (tests/test_database_ops.py, test_password_rotation.py), a
# cluster version upgrade (test_observability.py, test_cluster.py), Amazon Managed Grafana
# (test_managed_grafana.py) and the master password managed by RDS (test_credentials.py).
# Synthesised once per run, read by each.
DEV_SETTINGS: dict[str, Any] = {
    "database.enhancedMonitoringSeconds": 30,
    "functions.housekeepingSchedule": "cron(30 3 * * ? *)",
    "database.backupWindow": "01:00-02:00",
    "functions.purgeUnusedAfterDays": 180,
    "functions.purgeMaxBatches": 20,
    "database.appPasswordRotationDays": 1,
    "cluster.version": "1.36",
    "cluster.upgradeFrom": "1.35",
    "observability.managedGrafana": True,
    "database.managePassword": True,
}

# Likewise for prod: a restore from a snapshot (test_database_ops.py), alerts to an HTTPS
# subscriber instead of routed elsewhere (test_observability.py), plain HTTP by the explicit
# opt-out (test_deploy_truth.py).
ALERT_URL = "https://events.example.net/integration/0123456789abcdef/enqueue"
PROD_SETTINGS: dict[str, Any] = {
    "database.restoreSnapshot": "backbone-prod-before-import",
    "monitoring.alertsRoutedElsewhere": None,
    "monitoring.alertHttpsUrl": ALERT_URL,
    "loadbalancer.domainName": None,
    "loadbalancer.allowPlainHttp": True,
}


DEV_SETTINGS_FILE = "Pulumi.dev-copy.yaml"


def dev_settings_plan() -> Plan:
    return variant_plan("dev", DEV_SETTINGS_FILE, DEV_SETTINGS)


def prod_settings_plan() -> Plan:
    return variant_plan("prod", "Pulumi.prod-copy.yaml", PROD_SETTINGS)
