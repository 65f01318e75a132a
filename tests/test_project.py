"""The project as the Pulumi CLI sees it: Pulumi.yaml, requirements.txt, stack files."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_pulumi_yaml_runs_infra_with_a_virtualenv_and_stacks_folder():
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["name"] == "backbone"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }
    assert project["main"] == "infra/"
    assert (REPO / project["main"] / "__main__.py").is_file()
    assert project["stackConfigDir"] == "stacks"
    assert sorted(p.name for p in (REPO / "stacks").glob("Pulumi.*.yaml")) == [
        "Pulumi.dev.yaml",
        "Pulumi.free-tier.yaml",
        "Pulumi.local.yaml",
        "Pulumi.prod.yaml",
    ]


def test_requirements_txt_matches_pyproject_dependencies():
    """The pip toolchain installs requirements.txt: it must be the project's own dependencies."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [
        line.strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(lines) == sorted(deps)


def test_infra_never_imports_the_tool():
    for path in (REPO / "infra").rglob("*.py"):
        text = path.read_text()
        assert "import backbone" not in text and "from backbone" not in text, path


def test_readme_documents_every_setting(backbone_cli):
    """`backbone settings` is the table in the README: the code and the docs agree."""
    result = backbone_cli("settings")
    assert result.returncode == 0, result.stderr
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- settings:begin -->\n")[1].split("<!-- settings:end -->")[0]
    assert block == result.stdout


def test_readme_example_error_is_what_users_get(backbone_cli, tmp_path):
    bad = tmp_path / "Pulumi.typo.yaml"
    bad.write_text("config:\n  aws:region: us-east-7\n  backbone:netwrok: {}\n")
    result = backbone_cli("plan", str(bad))
    assert result.returncode == 2
    readme = (REPO / "README.md").read_text()
    first_problem = result.stderr.splitlines()[1]
    assert first_problem in readme


def _house_map() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("| path | what it is |")
    return readme[start : readme.index("\n\n", start)]


def test_the_readme_house_map_names_every_module():
    """The README's map of the house matches the layout: every module of infra/, its config
    package and its components, of the tool and of the pack is named in it (a module added,
    moved or renamed without the map fails), and every name in it exists."""
    table = _house_map()
    folders = {
        "infra": ("__main__.py", "program.py", "stack.py", "packaging.py"),
        "infra/config": None,
        "infra/components": None,
        "backbone": None,
        "policies": ("rules.py",),
    }
    missing = []
    for folder, only in folders.items():
        names = only or sorted(
            p.name for p in (REPO / folder).glob("*.py") if p.name not in ("__init__.py",)
        )
        for name in names:
            stem = name.removesuffix(".py")
            spelled = (f"`{name}`", f"`{stem}`", f"`{folder}/{name}`")
            if not any(form in table for form in spelled):
                missing.append(f"{folder}/{name}")
    assert not missing, f"the README's map of the house does not name: {', '.join(missing)}"
    for folder in ("infra/config", "infra/components"):
        assert f"`{folder}/`" in table
    for named in re.findall(r"`((?:infra|backbone|policies|tests|app|stacks|bench)/[^`]*)`", table):
        assert (REPO / named.split(" ")[0].rstrip("/")).exists(), named
