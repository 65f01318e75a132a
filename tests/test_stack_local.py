"""local: the app on the user's own Docker engine: no AWS resource, no AWS provider."""


def test_registers_no_aws_resource(plan_of):
    plan = plan_of("local")
    assert [r for r in plan if r.package == "aws"] == []
    assert plan.outputs["target"] == "docker"


def test_needs_no_region(backbone_cli):
    result = backbone_cli("plan", "local")
    assert result.returncode == 0, result.stderr
    assert "backbone stack local" in result.stdout
