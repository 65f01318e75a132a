"""backbone:functions: the Lambda canary and the nightly housekeeping job."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infra.config.app import CANARY_LINK_CODE
from infra.config.base import Problem, Section, bounded, retention_problems
from infra.config.catalogues import LAMBDA_PYTHON_RUNTIMES
from infra.config.schedules import Schedule, schedule

# The kit names its functions <project>-<stack>-<function>.
FUNCTION_NAMES = ("canary", "housekeeping")
# The canary's two probes: 2 attempts of 5 s each, 0.5 s between, 3 s to publish.
CANARY_MIN_TIMEOUT = 25
# The canary's rate bounds, in seconds: its alarms take the rate as their period.
CANARY_PERIOD = (60, 3600)


def _either(items: tuple[str, ...]) -> str:
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


class FunctionsConfig(Section):
    """The Lambda functions (app/functions/): a synthetic canary that probes the app through the
    load balancer or on the free-tier host, and a nightly housekeeping job on the app's database."""

    SECTION = "functions"

    enabled: bool = False
    """Create the functions. They need the load balancer or the host (the canary's URL), the
    database (the job's data) and, for the job, a NAT gateway (inside the VPC, it reaches Secrets
    Manager and CloudWatch through it)."""

    housekeeping: bool = True
    """Create the housekeeping job besides the canary. false: the canary only (the free-tier
    stack: the job reads its credentials from a Secrets Manager secret through a NAT gateway or
    an interface endpoint, and none of the three is free)."""

    alarms: Literal["all", "availability"] = "all"
    """The functions' alarms: `all` (per probe availability and latency, per function errors and
    throttles, the job's run, the failures queue), or `availability`: one alarm, the canary's read
    probe (missing data breaching, so a canary that fails or stops running fires it too), for a
    stack within the 10 free alarm metrics (free-tier)."""

    canary_schedule: str = Field(
        default="rate(5 minutes)",
        description="How often the canary probes the app: `rate(1 minute)` to "
        f"`rate({CANARY_PERIOD[1] // 60} minutes)`. Its alarms use this as their period, so a "
        "missing run is seen at once.",
    )

    housekeeping_schedule: str = "cron(15 6 * * ? *)"
    """When the housekeeping job runs (UTC), as an EventBridge schedule: every day at least, since
    its alarm expects a run in every 24 hours; a daily cron whose run (up to its timeout) keeps out
    of the database's backup and maintenance windows."""

    architecture: Literal["x86_64", "arm64"] = "arm64"
    """CPU architecture of both functions (arm64, Graviton, costs about 20% less per GB-second);
    dependencies are packaged for it."""

    runtime: str = Field(
        default="python3.12",
        description=f"Lambda Python runtime: {_either(LAMBDA_PYTHON_RUNTIMES)}.",
    )

    memory_mb: int = bounded(
        256, 128, 10240, "Memory of each function, in MB ({low} to {high}); CPU grows with it."
    )

    canary_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=900,
        description=f"The canary's timeout: at least {CANARY_MIN_TIMEOUT} s (two probes, two "
        "attempts of 5 s each, retry delays, 3 s kept for publishing).",
    )

    housekeeping_timeout_seconds: int = bounded(
        300,
        1,
        900,
        "The job's timeout (up to {high} s); it stops purging 10 s before and carries on next "
        "night.",
    )

    reserved_concurrency: int | None = Field(default=None, ge=1, le=1000)
    """Concurrent executions reserved for (and capping) each function; 1 keeps runs from
    overlapping. Unset (the default) reserves none: a new account whose concurrency quota is
    still 10 cannot reserve any (Lambda keeps 10 unreserved), and the first `pulumi up` would fail."""

    log_retention_days: int = 30
    """How long the functions' logs are kept (a CloudWatch Logs retention value)."""

    canary_read_path: str = Field(default=f"/api/links/{CANARY_LINK_CODE}", pattern=r"^/[^\s]*$")
    """The read path the canary requests besides /readyz: by default the canary link's lookup
    (app.canaryLinkCode, created by the migration), so it answers 200 through the database."""

    canary_cert_warn_days: int = Field(default=21, ge=0, le=365)
    """Where the stack serves HTTPS: the canary's CertificateExpiring metric turns 1 (and a warning
    is logged) when the certificate has fewer days left than this."""

    purge_grace_days: int = Field(default=0, ge=0, le=3650)
    """The job keeps expired links this many days past their expiry before deleting them."""

    purge_unused_after_days: int = Field(default=0, ge=0, le=36500)
    """The job deletes links not clicked for this many days (never clicked: since created);
    0 (the default) keeps unused links."""

    purge_batch_size: int = Field(default=1000, ge=1, le=100_000)
    """Rows the job deletes per transaction."""

    purge_max_batches: int = Field(default=100, ge=1, le=100_000)
    """Batches per run at most; a run that stops there reports PurgeComplete 0 and the next run
    carries on."""

    @property
    def canary_runs(self) -> Schedule:
        """The canary's schedule, parsed (once per expression: schedules.schedule caches)."""
        return schedule(self.canary_schedule)

    @property
    def housekeeping_runs(self) -> Schedule:
        """The housekeeping job's schedule, parsed."""
        return schedule(self.housekeeping_schedule)

    @property
    def housekeeping_minutes(self) -> int:
        """How long a run may last, in whole minutes (its timeout, rounded up)."""
        return -(-self.housekeeping_timeout_seconds // 60)

    def problems(self) -> list[Problem]:
        if not self.enabled:
            return []
        out = list[Problem]()
        if self.runtime not in LAMBDA_PYTHON_RUNTIMES:
            out.append(
                Problem(
                    self.key("runtime"),
                    f"{self.runtime!r} is not a supported Lambda Python runtime for these "
                    f"functions; allowed: {', '.join(LAMBDA_PYTHON_RUNTIMES)} (the code needs "
                    "Python 3.12 or newer; older runtimes are deprecated by Lambda)",
                )
            )
        every = self.canary_runs.seconds
        if every is None or not CANARY_PERIOD[0] <= every <= CANARY_PERIOD[1]:
            out.append(
                Problem(
                    self.key("canarySchedule"),
                    f"{self.canary_schedule!r} is not a rate between one minute and one hour; "
                    f"allowed: rate(1 minute) to rate({CANARY_PERIOD[1] // 60} minutes) or "
                    "rate(1 hour) (its alarms take the rate as their period)",
                )
            )
        out += self._housekeeping_problems()
        if self.canary_timeout_seconds < CANARY_MIN_TIMEOUT:
            out.append(
                Problem(
                    self.key("canaryTimeoutSeconds"),
                    f"{self.canary_timeout_seconds} s is too short for the canary's two probes "
                    "(2 attempts of 5 s each, 0.5 s between, 3 s to publish); allowed: "
                    f"{CANARY_MIN_TIMEOUT} to {self.high('canary_timeout_seconds')}",
                )
            )
        return out + retention_problems(self.key("logRetentionDays"), self.log_retention_days)

    def _housekeeping_problems(self) -> list[Problem]:
        problem = self.housekeeping_runs.problem
        if problem is None and not self.housekeeping_runs.daily:
            problem = (
                f"{self.housekeeping_schedule!r} does not run every day, and the job's alarm "
                "expects a run in every 24 hours; allowed: a daily cron such as "
                "cron(30 3 * * ? *), or rate(N hours) up to rate(1 day)"
            )
        return [Problem(self.key("housekeepingSchedule"), problem)] if problem else []
