"""The web ACL's monthly cost (issue 17, part 4): priced by `backbone cost` from prices.yaml, each
figure with its source and date: $5 for the ACL, $1 per rule, $0.60 per million requests."""

from __future__ import annotations

import json
from typing import Any


def test_the_web_acl_is_priced_in_prod_and_absent_elsewhere(backbone_cli: Any) -> None:
    result = backbone_cli("cost", "prod", "--format", "json")
    assert result.returncode in (0, 1), result.stderr  # 1: over a budget, still a report
    lines = {
        line["item"]: line
        for line in json.loads(result.stdout)["lines"]
        if line["resource"] == "web-waf"
    }
    assert {k: v["quantity"] for k, v in lines.items()} == {
        "waf/web-acl": 1,
        "waf/rule": 3,  # the rate rule and the two AWS managed groups
        "waf/requests": 1_000_000,  # usage.yaml
    }
    assert round(sum(line["usd"] for line in lines.values()), 2) == 8.60
    for line in lines.values():
        assert line["price"]["source"].startswith("aws.amazon.com/waf/pricing")
        assert line["price"]["date"]
    dev = json.loads(backbone_cli("cost", "dev", "--format", "json").stdout)
    assert not [line for line in dev["lines"] if line["resource"] == "web-waf"]
