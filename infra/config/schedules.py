"""Time expressions the config reads, each parsed once: EventBridge schedules (`rate(...)`,
`cron(...)`; EventBridge user guide, "Schedule expressions for rules") and RDS's daily backup and
weekly maintenance windows, as minutes, with the overlap arithmetic the rules need."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_RATE = re.compile(r"^rate\((?P<n>[1-9][0-9]*) (?P<unit>minute|minutes|hour|hours|day|days)\)$")
_CRON_FIELD = r"[0-9A-Za-z*?/,#L-]+"
_CRON = re.compile(rf"^cron\((?P<fields>{_CRON_FIELD}(?: {_CRON_FIELD}){{5}})\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM = "([01][0-9]|2[0-3]):[0-5][0-9]"
DDD = "(mon|tue|wed|thu|fri|sat|sun)"
DAY = 1440
WEEK = 7 * DAY


@dataclass(frozen=True)
class Schedule:
    """One EventBridge schedule expression, parsed: a rate's period, or a cron's six fields."""

    expression: str
    seconds: int | None = None
    """Seconds between runs of `rate(N unit)`; None for a cron or a bad expression."""
    fields: tuple[str, ...] | None = None
    """minute hour day-of-month month day-of-week year of `cron(...)`; None otherwise."""

    @property
    def problem(self) -> str | None:
        """Why EventBridge would refuse the expression, or None."""
        if self.seconds is not None:
            return None
        if self.fields is None:
            return (
                f"{self.expression!r} is not an EventBridge schedule; allowed: rate(1 minute), "
                "rate(N minutes|hours|days), or cron(min hour day-of-month month day-of-week "
                "year) such as cron(30 3 * * ? *)"
            )
        day_of_month, day_of_week = self.fields[2], self.fields[4]
        if "?" not in (day_of_month, day_of_week) or day_of_month == day_of_week == "?":
            return (
                f"{self.expression!r}: exactly one of day-of-month (3rd field) and day-of-week "
                "(5th field) must be '?'; allowed: e.g. cron(30 3 * * ? *)"
            )
        return None

    @property
    def daily(self) -> bool:
        """Runs at least once a day: a rate up to a day, or a cron on every day of every month."""
        if self.seconds is not None:
            return self.seconds <= 86400
        f = self.fields or ("", "", "", "", "")
        return f[2] in "*?" and f[3] == "*" and f[4] in "*?"

    @property
    def runs(self) -> list[tuple[int, int]] | None:
        """Minutes of the day (start, start + 1) a cron runs, or None if it is not a cron with
        numeric minute and hour lists."""
        if self.fields is None:
            return None
        try:
            minutes = [int(m) for m in self.fields[0].split(",")]
            hours = [int(h) for h in self.fields[1].split(",")]
        except ValueError:
            return None
        return [(h * 60 + m, h * 60 + m + 1) for h in hours for m in minutes]


@functools.cache
def schedule(expression: str) -> Schedule:
    """Parse an EventBridge schedule expression (once per expression)."""
    rate = _RATE.match(expression)
    if rate:
        n, unit = int(rate["n"]), rate["unit"]
        if (n == 1) == (not unit.endswith("s")):  # EventBridge refuses `rate(1 minutes)`
            return Schedule(expression, seconds=n * _UNIT_SECONDS[unit.rstrip("s")])
        return Schedule(expression)
    cron = _CRON.match(expression)
    return Schedule(expression, fields=tuple(cron["fields"].split()) if cron else None)


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of `rate(N unit)`, or None for anything else."""
    return schedule(expression).seconds


def schedule_problem(expression: str) -> str | None:
    """Why EventBridge would refuse a schedule expression, or None."""
    return schedule(expression).problem


def _minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def daily_window(window: str) -> tuple[int, int]:
    """A daily `hh:mm-hh:mm` window as [start, end) minutes of the day (end may pass midnight)."""
    start, end = (_minute(part) for part in window.split("-"))
    return start, end if end > start else end + DAY


def weekly_window(window: str) -> tuple[int, int]:
    """A weekly `ddd:hh:mm-ddd:hh:mm` window as [start, end) minutes of the week."""
    a, b = window.split("-")
    start = DAYS.index(a[:3]) * DAY + _minute(a[4:])
    end = DAYS.index(b[:3]) * DAY + _minute(b[4:])
    return start, end if end > start else end + WEEK


def overlaps_daily_weekly(daily: tuple[int, int], weekly: tuple[int, int]) -> bool:
    """Whether a daily window meets a weekly one on any day of the week."""
    for day in range(-1, 8):
        s, e = daily[0] + day * DAY, daily[1] + day * DAY
        for shift in (-WEEK, 0, WEEK):
            if s < weekly[1] + shift and weekly[0] + shift < e:
                return True
    return False


def overlaps_daily_daily(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two daily windows meet (either may pass midnight)."""
    return any(a[0] + d < b[1] and b[0] < a[1] + d for d in (-DAY, 0, DAY))
