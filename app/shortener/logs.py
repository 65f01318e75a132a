"""Structured JSON logs, one object per line, with the request id of the request being served."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
# secrets learnt after setup() (a password read from Secrets Manager): redacted by every filter
_LATE_SECRETS: list[str] = []


def add_secret(value: str) -> None:
    """Redact this value from every log line from now on (a rotated password, once read)."""
    if len(value) >= 4 and value not in _LATE_SECRETS:
        _LATE_SECRETS.append(value)


# LogRecord attributes that are not "extra" fields
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    """Defence in depth: replace any secret value that reaches a log record with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in (*self.secrets, *_LATE_SECRETS):
                value = value.replace(secret, "***")
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets and not _LATE_SECRETS:
            return True
        record.msg = self._clean(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, self._clean(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._clean(self.format_exception(record.exc_info))
            record.exc_info = None
        return True

    def format_exception(self, exc_info: Any) -> str:
        return logging.Formatter().formatException(exc_info)


def setup(level: str, secrets: list[str], stream: Any = None) -> None:
    """Route every logger (ours, uvicorn's, psycopg's) through one JSON handler on stdout."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # our middleware writes one access line per request; uvicorn's own would duplicate it
    logging.getLogger("uvicorn.access").disabled = True
