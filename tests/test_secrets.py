"""Secrets never reach a plan, a rendered manifest or the command's output.

Under the offline engine every generated secret has a known shape: random passwords and tokens are
`offline-<hex>`, ECR's token `offline-token`, an RDS-managed password `offline-managed-password`
(backbone/mocks.py). None of them may appear in anything the tool prints or writes.
"""

from __future__ import annotations

import re

import pytest

LEAK = re.compile(r"offline-(?:[0-9a-f]{8,}|token|managed-password)")


@pytest.mark.parametrize("stack", ["local", "free-tier", "dev", "prod"])
def test_no_secret_value_in_the_plan(backbone_cli, stack):
    for fmt in ("json", "text"):
        result = backbone_cli("plan", stack, "-f", fmt)
        assert result.returncode == 0, result.stderr
        assert not LEAK.search(result.stdout + result.stderr), LEAK.search(result.stdout).group(0)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_secret_value_in_the_manifests(backbone_cli, stack, tmp_path):
    result = backbone_cli("manifests", stack, "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    files = list(tmp_path.glob("*.yaml"))
    assert files
    for f in files:
        assert not LEAK.search(f.read_text()), f.name


def test_the_real_token_value_is_nowhere(backbone_cli, tmp_path):
    """The exact value the engine generated for the app's API token (the offline engine's is
    deterministic) is in no plan and no manifest, and the leak pattern above would match it."""
    from backbone.mocks import MAKERS, BackboneMocks

    typ = "random:index/randomPassword:RandomPassword"
    urn = BackboneMocks("dev", "backbone", "us-east-1")._urn(typ, "app-api-token")
    _, outputs = MAKERS[typ]("app-api-token", urn, {"length": 48}, "us-east-1")
    token = outputs["result"]
    assert LEAK.fullmatch(token)
    plan = backbone_cli("plan", "dev", "-f", "json")
    assert plan.returncode == 0 and "app-api-token" in plan.stdout
    assert token not in plan.stdout
    assert backbone_cli("manifests", "dev", "-o", str(tmp_path)).returncode == 0
    assert all(token not in f.read_text() for f in tmp_path.glob("*.yaml"))
