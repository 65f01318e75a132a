"""IAM policy documents, written one way everywhere (statements in, JSON out).

Every policy and trust document the kit sends to IAM goes through `document`, so the version, the
shape and the serialisation are the same in every component (and in every plan).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

VERSION = "2012-10-17"


def document(statements: Sequence[Mapping[str, Any]]) -> str:
    """A policy document: {"Version": "2012-10-17", "Statement": [...]} as JSON."""
    return json.dumps({"Version": VERSION, "Statement": [dict(s) for s in statements]})


def trust(service: str, actions: str | Sequence[str] = "sts:AssumeRole") -> str:
    """A role trust policy: only this AWS service may assume the role."""
    action: str | list[str] = actions if isinstance(actions, str) else list(actions)
    return document([{"Effect": "Allow", "Principal": {"Service": service}, "Action": action}])
