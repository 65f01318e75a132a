"""backbone:database: RDS PostgreSQL for the app."""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import Field

from infra.config.base import Problem, Section, bounded, retention_problems, suggest
from infra.config.catalogues import (
    POSTGRES_MAJORS,
    RDS_CLASSES,
    RDS_FAMILIES_TEXT,
    RDS_RETIRED_FAMILIES,
)
from infra.config.schedules import (
    DAY,
    DDD,
    HHMM,
    daily_window,
    overlaps_daily_daily,
    overlaps_daily_weekly,
    weekly_window,
)

# The least-privilege login roles the app's migration creates (app/shortener/db.py grants them):
# the app's and the housekeeping job's. The master user is for migrations only.
DB_APP_ROLE = "shortener_app"
DB_JOB_ROLE = "shortener_job"
DB_ROLES = (DB_APP_ROLE, DB_JOB_ROLE)
# Master user names RDS PostgreSQL reserves.
RESERVED_USERNAMES = frozenset({"admin", "postgres", "rdsadmin", "user", "root"})
MIN_WINDOW_MINUTES = 30  # RDS's shortest backup window
# The password rotations' window from 00:00 UTC when not set: cut shorter by an earlier window.
ROTATION_WINDOW_HOURS = 2

EnhancedMonitoring = Literal[0, 1, 5, 10, 15, 30, 60]
_MONITORING_INTERVALS = ", ".join(str(s) for s in typing.get_args(EnhancedMonitoring) if s)
_MAJORS = list(POSTGRES_MAJORS)


class DatabaseConfig(Section):
    """RDS PostgreSQL for the app."""

    SECTION = "database"

    enabled: bool = False
    """Create the database. It needs a network with at least two availability zones."""

    engine_version: str = Field(
        default="17",
        description=f"PostgreSQL major version under RDS standard support ({_MAJORS[0]} to "
        f"{_MAJORS[-1]}); RDS picks the minor and keeps it patched. Paid Extended Support is "
        "switched off.",
    )

    instance_class: str = "db.t4g.micro"
    """RDS instance class, e.g. db.t4g.micro (free-tier eligible) or db.m7g.large."""

    allocated_storage_gb: int = bounded(
        20, 20, 65536, "Storage at creation, in GiB (PostgreSQL's minimum is {low})."
    )

    max_allocated_storage_gb: int = Field(default=100, ge=0, le=65536)
    """Storage autoscaling ceiling, in GiB (0 turns autoscaling off)."""

    storage_type: Literal["gp3", "gp2"] = "gp3"
    """EBS volume type (the free tier covers gp2 only)."""

    multi_az: bool = False
    """A standby in a second zone with automatic failover (doubles the instance cost)."""

    deletion_protection: bool = False
    """RDS refuses to delete the instance until this is lifted."""

    backup_retention_days: int = bounded(
        7, 1, 35, "Days of automated backups (the point-in-time recovery window), {low} to {high}."
    )

    name: str = Field(default="app", pattern=r"^[a-zA-Z][a-zA-Z0-9_]{0,62}$")
    """Name of the app's database."""

    username: str = Field(default="app_admin", pattern=r"^[a-zA-Z][a-zA-Z0-9_]{0,15}$")
    """Master user name (not a word RDS reserves, such as admin or postgres)."""

    manage_password: bool = False
    """Let RDS keep the master password in Secrets Manager (and rotate it every 7 days): the
    migration reads it from there at every run; otherwise the kit generates one (pulumi-random)
    and keeps it as a Pulumi secret."""

    app_password_rotation_days: int = bounded(
        30,
        1,
        999,
        "With the cluster: days between rotations of the app's and the housekeeping job's "
        "database role passwords (a Secrets Manager rotation function, on the schedule "
        "rate(N days); Secrets Manager accepts {low} to {high}).",
    )

    password_rotation_window_hours: int | None = Field(
        default=None,
        ge=1,
        le=24,
        description="With the cluster: the rotations' window, in hours from 00:00 UTC (a "
        "rate(N days) schedule's window opens at midnight; Secrets Manager accepts 1 to 24 "
        "hours, within the UTC day). It must end before the backup window and keep out of the "
        "maintenance window, so a rotation never meets a snapshot or a patch reboot. Unset: "
        f"{ROTATION_WINDOW_HOURS} hours, or fewer when a window starts earlier.",
    )

    log_retention_days: int = 30
    """How long the exported PostgreSQL and upgrade logs are kept (a CloudWatch Logs retention
    value); the kit makes their log groups, so nothing is kept forever."""

    backup_window: str = Field(
        default="03:00-04:00",
        pattern=rf"^{HHMM}-{HHMM}$",
        description=f"Daily window (UTC, hh:mm-hh:mm, at least {MIN_WINDOW_MINUTES} minutes) in "
        "which RDS takes the automated backup. The housekeeping job may not run inside it.",
    )

    maintenance_window: str = Field(
        default="sun:04:30-sun:05:30",
        pattern=rf"^{DDD}:{HHMM}-{DDD}:{HHMM}$",
        description="Weekly window (UTC, ddd:hh:mm-ddd:hh:mm, at least "
        f"{MIN_WINDOW_MINUTES} minutes) for RDS's patches; it may not overlap the backup window, "
        "nor the housekeeping job's run.",
    )

    enhanced_monitoring_seconds: EnhancedMonitoring = Field(
        default=0,
        description=f"Enhanced Monitoring: OS metrics every N seconds ({_MONITORING_INTERVALS}) "
        "through a role with the AWS managed policy AmazonRDSEnhancedMonitoringRole; 0 turns it "
        "off. Billed as CloudWatch Logs ingestion. (Database Insights standard mode is always "
        "on: 7 days free.)",
    )

    restore_snapshot: str | None = Field(
        default=None,
        pattern=r"^(arn:aws[a-z-]*:rds:[a-z0-9-]+:[0-9]{12}:snapshot:)?[a-zA-Z][a-zA-Z0-9:-]{0,254}$",
    )
    """Restore: create a new instance from this DB snapshot (identifier or ARN) and point the app
    at it. The current instance is kept (its data and its protection); see the README runbook."""

    restore_source_instance: str | None = Field(
        default=None, pattern=r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$"
    )
    """Restore to a point in time: the instance (identifier) whose automated backups to use. A new
    instance is created and the app pointed at it; the source is kept."""

    restore_time: str | None = Field(
        default=None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
    )
    """With restoreSourceInstance: the moment to restore to (UTC, 2026-11-30T21:15:00Z). Unset:
    the latest restorable time."""

    def problems(self) -> list[Problem]:
        if not self.enabled:
            return []
        out = self._engine_problems()
        if self.max_allocated_storage_gb and (
            self.max_allocated_storage_gb <= self.allocated_storage_gb
        ):
            out.append(
                Problem(
                    self.key("maxAllocatedStorageGb"),
                    f"{self.max_allocated_storage_gb} is not above allocatedStorageGb "
                    f"{self.allocated_storage_gb}; allowed: 0 (no autoscaling) or a larger ceiling",
                )
            )
        out += self._restore_problems() + self._window_problems()
        # managePassword works with the cluster: the migration reads RDS's secret at every run (and
        # again after a refused login), so a rotation every 7 days breaks nothing.
        out += self._username_problems()
        return out + retention_problems(self.key("logRetentionDays"), self.log_retention_days)

    def _engine_problems(self) -> list[Problem]:
        out = list[Problem]()
        if self.engine_version not in POSTGRES_MAJORS:
            out.append(
                Problem(
                    self.key("engineVersion"),
                    f"{self.engine_version!r} is not a PostgreSQL major under RDS standard "
                    f"support; allowed: {', '.join(POSTGRES_MAJORS)}",
                )
            )
        cls = self.instance_class
        if cls.startswith(RDS_RETIRED_FAMILIES):
            why = (
                "is a previous generation that RDS PostgreSQL 14+ does not support; allowed: "
                f"{RDS_FAMILIES_TEXT} classes"
            )
        elif cls not in RDS_CLASSES:
            why = (
                f"is not an RDS instance class for PostgreSQL{suggest(cls, sorted(RDS_CLASSES))}; "
                f"allowed: db.<family>.<size> of {RDS_FAMILIES_TEXT}"
            )
        else:
            return out
        return [*out, Problem(self.key("instanceClass"), f"{cls!r} {why}")]

    def _restore_problems(self) -> list[Problem]:
        out = list[Problem]()
        if self.restore_snapshot and self.restore_source_instance:
            out.append(
                Problem(
                    self.key("restoreSnapshot"),
                    "set together with restoreSourceInstance; allowed: one restore at a time (a "
                    "snapshot, or a point in time of an instance)",
                )
            )
        if self.restore_time and not self.restore_source_instance:
            out.append(
                Problem(
                    self.key("restoreTime"),
                    "set without restoreSourceInstance; allowed: restoreSourceInstance (the "
                    "instance whose backups to restore) with it, or leave restoreTime out",
                )
            )
        return out

    def _window_problems(self) -> list[Problem]:
        out = list[Problem]()
        backup = daily_window(self.backup_window)
        if backup[1] - backup[0] < MIN_WINDOW_MINUTES:
            out.append(
                Problem(
                    self.key("backupWindow"),
                    f"{self.backup_window!r} is shorter than {MIN_WINDOW_MINUTES} minutes (RDS "
                    f"refuses it); allowed: hh:mm-hh:mm of {MIN_WINDOW_MINUTES} minutes or more",
                )
            )
        if overlaps_daily_weekly(backup, weekly_window(self.maintenance_window)):
            out.append(
                Problem(
                    self.key("maintenanceWindow"),
                    f"{self.maintenance_window!r} overlaps the backup window "
                    f"{self.backup_window!r} (RDS refuses it); allowed: windows apart",
                )
            )
        return out

    def _rotation_clear(self, hours: int) -> bool:
        """Whether 00:00-hh:00 UTC keeps out of the backup window and, on every weekday (N days
        drift over the week), the maintenance window."""
        window = (0, hours * 60)
        backup, maintenance = (
            daily_window(self.backup_window),
            weekly_window(self.maintenance_window),
        )
        return not (
            overlaps_daily_daily(window, backup) or overlaps_daily_weekly(window, maintenance)
        )

    def rotation_window_hours(self) -> int | None:
        """The rotations' window in hours from 00:00 UTC: the setting, else the default cut to
        end before the first database window; None when not even the first hour is free."""
        if self.password_rotation_window_hours is not None:
            return self.password_rotation_window_hours
        fits = [h for h in range(1, ROTATION_WINDOW_HOURS + 1) if self._rotation_clear(h)]
        return max(fits) if fits else None

    def rotation_problems(self) -> list[Problem]:
        """With the cluster (the roles' passwords rotate): the rotation window keeps out of the
        backup and maintenance windows."""
        hours = self.rotation_window_hours()
        if not self.enabled or (hours is not None and self._rotation_clear(hours)):
            return []
        key = self.key("passwordRotationWindowHours")
        fits = [h for h in range(1, DAY // 60 + 1) if self._rotation_clear(h)]
        if not fits:
            return [
                Problem(
                    key,
                    "no hour from 00:00 UTC is free of the backup window "
                    f"{self.backup_window!r} and the maintenance window "
                    f"{self.maintenance_window!r}, so the password rotations would meet a "
                    "snapshot or a patch; allowed: move database.backupWindow and "
                    "database.maintenanceWindow so that 00:00-01:00 UTC is free of both",
                )
            ]
        assert hours is not None  # set: the derived window is always clear
        hit = (
            f"the backup window {self.backup_window!r}"
            if overlaps_daily_daily((0, hours * 60), daily_window(self.backup_window))
            else f"the maintenance window {self.maintenance_window!r}"
        )
        most = max(fits)
        return [
            Problem(
                key,
                f"{hours} makes the password rotation window 00:00-{hours:02d}:00 UTC, inside "
                f"{hit} (Secrets Manager would rotate during a snapshot or a patch); allowed: "
                f"{'1 to ' if most > 1 else ''}{most} (the window ends by {most:02d}:00 UTC), "
                "or leave it unset",
            )
        ]

    def _username_problems(self) -> list[Problem]:
        out = list[Problem]()
        if self.username.lower() in RESERVED_USERNAMES:
            out.append(
                Problem(
                    self.key("username"),
                    f"{self.username!r} is reserved by RDS PostgreSQL; allowed: another name "
                    "such as app_admin",
                )
            )
        if self.username.lower() in DB_ROLES:
            out.append(
                Problem(
                    self.key("username"),
                    f"{self.username!r} is the name of a role the migration creates for the app "
                    "or the housekeeping job; allowed: another name such as app_admin",
                )
            )
        return out
