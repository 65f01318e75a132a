"""What every config section shares: the stack files' namespace, a Problem (one refused setting),
the section base class (camelCase keys, unknown keys refused, each section checking itself), and
the helpers rules use to say what is allowed from the field's own bounds."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from infra.config.catalogues import LOG_RETENTION_DAYS

NAMESPACE = "backbone"


@dataclass(frozen=True)
class Problem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class Section(BaseModel):
    """Base for every config section: camelCase keys in the stack file, unknown keys refused.

    `SECTION` is the section's key under `backbone:`; `problems()` is what AWS (or sound practice)
    would refuse in the section on its own. Rules that read two sections live on StackConfig. A
    field's meaning is the docstring under it (or its Field's description); docs.py reads them
    when it makes the settings table, not at import."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        # The schema is built at the first validation, not at import: `backbone --help` and
        # every command that loads no stack do not pay for it (nor for reading the fields'
        # docstrings, which only the settings table needs: docs.meanings).
        defer_build=True,
    )

    SECTION: ClassVar[str] = ""

    @classmethod
    def key(cls, field: str = "") -> str:
        """`backbone:<section>.<field>`, the key a problem names."""
        section = f"{NAMESPACE}:{cls.SECTION}"
        return f"{section}.{field}" if field else section

    @classmethod
    def bounds(cls, field: str) -> tuple[Any, Any]:
        """A field's declared (minimum, maximum) from its Field(ge=..., le=...)."""
        low = high = None
        for rule in cls.model_fields[field].metadata:
            low = getattr(rule, "ge", low)
            high = getattr(rule, "le", high)
        return low, high

    @classmethod
    def low(cls, field: str) -> Any:
        return cls.bounds(field)[0]

    @classmethod
    def high(cls, field: str) -> Any:
        return cls.bounds(field)[1]

    def problems(self) -> list[Problem]:
        """What AWS (or sound practice) would refuse in this section on its own."""
        return []


def bounded(default: Any, low: Any, high: Any, meaning: str) -> Any:
    """A Field from `low` to `high` whose meaning may name its bounds as `{low}` and `{high}`:
    the bound is declared once, and the settings table says it from there."""
    return Field(default=default, ge=low, le=high, description=meaning.format(low=low, high=high))


def suggest(key: str, choices: list[str]) -> str:
    """` (did you mean 'x'?)` for a near miss among `choices`, else an empty string."""
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower().replace("-", "").replace("_", ""): c for c in choices}
        match = lowered.get(key.lower().replace("-", "").replace("_", ""))
        close = [match] if match else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def retention_problems(key: str, days: int) -> list[Problem]:
    """A CloudWatch Logs retention setting that PutRetentionPolicy would refuse."""
    if days in LOG_RETENTION_DAYS:
        return []
    allowed = ", ".join(map(str, LOG_RETENTION_DAYS))
    return [Problem(key, f"{days} is not a CloudWatch retention period; allowed: {allowed}")]
