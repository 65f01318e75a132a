"""Database operations (issue 17, part 6) and the housekeeping job's schedule (part 5), read from
the Plan or from the config's refusal: Database Insights, Enhanced Monitoring as a setting, the
backup and maintenance windows, a restore from a snapshot or to a point in time as a new instance
the app is pointed at (the old one kept), and a job that never runs inside a database window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backbone.plan import Plan
from backbone.synth import synth_component
from infra.components.database import Database
from infra.config import DatabaseConfig
from tests.stack_files import dev_settings_plan, prod_settings_plan, stack_variant

REPO = Path(__file__).resolve().parent.parent
INSTANCE = "aws:rds/instance:Instance"


def _variant(tmp_path: Path, stack: str = "dev", /, **changes: Any) -> Path:
    """A shipped stack file under another name with some settings changed (None deletes a key)."""
    return stack_variant(tmp_path, stack, f"Pulumi.{stack}-copy.yaml", changes)


def _refusal(backbone_cli: Any, path: Path) -> str:
    result = backbone_cli("plan", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return str(result.stderr)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_database_insights_standard_is_on_and_backups_keep_a_week(plan_of: Any, stack: str) -> None:
    (db,) = plan_of(stack).of_type(INSTANCE)
    assert db.inputs["databaseInsightsMode"] == "standard"
    assert db.inputs["performanceInsightsEnabled"] is True
    assert db.inputs["performanceInsightsRetentionPeriod"] == 7  # the free 7 days
    assert db.inputs["backupRetentionPeriod"] >= 7
    # Enhanced Monitoring is a setting, off in the shipped stacks: no role, interval 0
    assert db.inputs["monitoringInterval"] == 0 and "monitoringRoleArn" not in db.inputs
    assert (db.inputs["backupWindow"], db.inputs["maintenanceWindow"]) == (
        "03:00-04:00",
        "sun:04:30-sun:05:30",
    )
    # the parameter group that forces TLS and logs slow statements stays
    params = plan_of(stack).one("aws:rds/parameterGroup:ParameterGroup").inputs["parameters"]
    assert {p["name"]: p["value"] for p in params} == {
        "rds.force_ssl": "1",
        "log_min_duration_statement": "500",
    }


def test_enhanced_monitoring_uses_a_role_with_the_aws_managed_policy() -> None:
    plan = dev_settings_plan()  # database.enhancedMonitoringSeconds: 30
    (db,) = plan.of_type(INSTANCE)
    assert db.inputs["monitoringInterval"] == 30
    role = plan.one("aws:iam/role:Role", "database-monitoring")
    assert '"Service": "monitoring.rds.amazonaws.com"' in role.inputs["assumeRolePolicy"]
    attachment = plan.one(
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "database-monitoring"
    )
    assert attachment.inputs["policyArn"] == (
        "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
    )
    assert role.urn in db.dependencies


def _restored(plan: Plan) -> tuple[Any, Any]:
    instances = {r.name: r for r in plan.of_type(INSTANCE)}
    assert set(instances) == {"database-postgres", "database-restored"}
    return instances["database-postgres"], instances["database-restored"]


def test_restore_from_a_snapshot_is_a_new_instance_the_app_is_pointed_at(tmp_path: Path) -> None:
    plan = prod_settings_plan()  # database.restoreSnapshot: backbone-prod-before-import
    old, new = _restored(plan)
    assert new.inputs["snapshotIdentifier"] == "backbone-prod-before-import"
    assert "dbName" not in new.inputs and "username" not in new.inputs  # from the snapshot
    assert "snapshotIdentifier" not in old.inputs
    # data kept: the old instance stays protected and retained; the new one is protected too
    assert old.protect and old.retain_on_delete and new.protect
    assert new.inputs["identifier"] != old.inputs["identifier"]
    # the app is pointed at the new one: the stack output, and the job's DB_HOST
    assert plan.outputs["databaseInstanceId"] == new.outputs["identifier"]
    job = plan.one("aws:lambda/function:Function", "functions-housekeeping")
    assert job.inputs["environment"]["variables"]["DB_HOST"] == new.outputs["address"]
    # same network, parameters and windows as the old one
    for key in ("dbSubnetGroupName", "parameterGroupName", "vpcSecurityGroupIds", "backupWindow"):
        assert new.inputs[key] == old.inputs[key], key


def _database(**settings: Any) -> Plan:
    """The plan of one Database component made from `settings` (DatabaseConfig's field names),
    in a VPC's two private subnets (backbone.synth.synth_component)."""
    cfg = DatabaseConfig(**settings)
    return synth_component(
        lambda: Database(
            "database", cfg, vpc_id="vpc-0a1b", subnet_ids=["subnet-a", "subnet-b"], protect=True
        )
    )


def test_restore_to_a_point_in_time() -> None:
    source = "backbone-dev-database-1a2b3c4d"
    _, new = _restored(
        _database(restore_source_instance=source, restore_time="2026-11-30T21:15:00Z")
    )
    assert new.inputs["restoreToPointInTime"] == {
        "sourceDbInstanceIdentifier": source,
        "restoreTime": "2026-11-30T21:15:00Z",
    }
    assert "snapshotIdentifier" not in new.inputs
    _, new = _restored(_database(restore_source_instance=source))
    assert new.inputs["restoreToPointInTime"] == {
        "sourceDbInstanceIdentifier": source,
        "useLatestRestorableTime": True,
    }


@pytest.mark.parametrize(
    "changes, key, words",
    [
        (
            {"database.restoreSnapshot": "snap-a", "database.restoreSourceInstance": "db-a"},
            "database.restoreSnapshot",
            "one restore at a time",
        ),
        ({"database.restoreTime": "2026-11-30T21:15:00Z"}, "database.restoreTime", "without"),
        ({"database.backupWindow": "03:00-03:20"}, "database.backupWindow", "30 minutes"),
        (
            {"database.maintenanceWindow": "mon:03:30-mon:04:30"},
            "database.maintenanceWindow",
            "overlaps the backup window",
        ),
    ],
)
def test_restore_and_window_settings_aws_would_refuse_are_refused(
    tmp_path: Path, backbone_cli: Any, changes: dict[str, Any], key: str, words: str
) -> None:
    text = _refusal(backbone_cli, _variant(tmp_path, **changes))
    assert f"backbone:{key}" in text and words in text


@pytest.mark.parametrize(
    "schedule, words",
    [
        ("cron(30 3 * * ? *)", "inside the backup window 03:00-04:00"),
        # 02:58 plus the job's 5-minute timeout reaches into the backup window
        ("cron(58 2 * * ? *)", "inside the backup window"),
        # every day at 05:00, so on Sundays inside the maintenance window
        ("cron(0 5 * * ? *)", "inside the maintenance window sun:04:30-sun:05:30"),
        ("rate(1 day)", "no fixed time of day"),
    ],
)
def test_a_housekeeping_schedule_in_a_database_window_is_refused(
    tmp_path: Path, backbone_cli: Any, schedule: str, words: str
) -> None:
    text = _refusal(
        backbone_cli, _variant(tmp_path, **{"functions.housekeepingSchedule": schedule})
    )
    assert "backbone:functions.housekeepingSchedule" in text and words in text


def test_moving_the_backup_window_admits_the_old_schedule() -> None:
    # housekeepingSchedule cron(30 3 * * ? *) with the backup window moved to 01:00-02:00
    plan = dev_settings_plan()
    assert plan.one(INSTANCE).inputs["backupWindow"] == "01:00-02:00"
    rule = plan.one("aws:cloudwatch/eventRule:EventRule", "functions-housekeeping-schedule")
    assert rule.inputs["scheduleExpression"] == "cron(30 3 * * ? *)"


def test_the_purge_settings_reach_the_job() -> None:
    # functions.purgeUnusedAfterDays: 180, functions.purgeMaxBatches: 20
    job = dev_settings_plan().one("aws:lambda/function:Function", "functions-housekeeping")
    env = job.inputs["environment"]["variables"]
    assert (env["PURGE_UNUSED_AFTER_DAYS"], env["PURGE_MAX_BATCHES"]) == ("180", "20")
