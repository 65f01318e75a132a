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


def test_the_leak_pattern_would_see_a_leak(plan_of):
    """The check above can fail: the engine does hold such values, masked in the plan."""
    from backbone.mocks import BackboneMocks

    mocks = BackboneMocks("dev", "backbone", "us-east-1")
    args = type(
        "A",
        (),
        {
            "typ": "random:index/randomPassword:RandomPassword",
            "name": "x",
            "inputs": {"length": 32},
            "custom": True,
        },
    )()
    _, state = mocks.new_resource(args)  # type: ignore[arg-type]
    assert LEAK.fullmatch(state["result"])
    assert plan_of("dev").one("random:index/randomPassword:RandomPassword", "app-api-token")
