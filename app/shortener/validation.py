"""What a valid link and a valid code are. Pure functions: no I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, StrictStr, field_validator

CODE_RE = re.compile(r"^[A-Za-z0-9_-]{3,32}$")
CODE_RULE = "3 to 32 characters from A-Z, a-z, 0-9, '_' and '-'"
# codes that would shadow the app's own paths, or read as if they did
RESERVED_CODES = frozenset({"api", "healthz", "readyz", "metrics", "docs", "redoc", "static"})
MAX_URL_LENGTH = 2048
EXPIRY_RULE = "an RFC 3339 date-time with a time zone, e.g. 2030-01-31T12:00:00Z"


def code_problem(code: str) -> str | None:
    """Why this code is not acceptable, or None."""
    if not CODE_RE.fullmatch(code):
        return f"code must be {CODE_RULE}"
    if code.lower() in RESERVED_CODES:
        return f"code {code!r} is reserved"
    return None


def url_problem(url: str) -> str | None:
    """Why this URL is not acceptable as a redirect target, or None."""
    if not url:
        return "url must not be empty"
    if len(url) > MAX_URL_LENGTH:
        return f"url must be at most {MAX_URL_LENGTH} characters"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "url must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        return "url is not a valid URL"
    if parts.scheme.lower() not in {"http", "https"}:
        return "url must start with http:// or https://"
    if not parts.hostname:
        return "url must have a host"
    if parts.username is not None or parts.password is not None:
        return "url must not contain credentials (user:password@)"
    if port == 0:
        return "url has an invalid port"
    return None


def parse_expiry(
    value: str, *, max_days: int, now: datetime | None = None
) -> tuple[datetime | None, str | None]:
    """(the instant, None) or (None, why it is not acceptable) for a link's expires_at."""
    text = value.strip()
    if not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:\d{2})", text
    ):
        return None, f"expires_at must be {EXPIRY_RULE}"
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None, f"expires_at is not a valid date-time ({EXPIRY_RULE})"
    now = now or datetime.now(UTC)
    if when <= now:
        return None, "expires_at must be in the future"
    if when - now > timedelta(days=max_days):
        return None, f"expires_at must be at most {max_days} days ahead"
    return when.astimezone(UTC), None


class CreateLink(BaseModel):
    """The body of POST /api/links."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: StrictStr
    code: StrictStr | None = None
    # checked against the clock and MAX_LINK_LIFETIME_DAYS by parse_expiry() in the route
    expires_at: StrictStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("code")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = code_problem(value)
        if problem:
            raise ValueError(problem)
        return value
