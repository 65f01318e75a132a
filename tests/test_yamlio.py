"""backbone.yamlio: libyaml's speed, PyYAML's data and PyYAML's errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backbone import yamlio

REPO = Path(__file__).resolve().parent.parent
KIT_FILES = sorted(
    [
        *(REPO / "backbone" / "data").glob("*.yaml"),
        *(REPO / "stacks").glob("Pulumi.*.yaml"),
        REPO / "Pulumi.yaml",
        REPO / "backbone" / "stateful.yaml",
    ]
)


@pytest.mark.parametrize("path", KIT_FILES, ids=lambda p: p.name)
def test_the_kits_files_read_as_the_pure_loader_reads_them(path):
    assert yamlio.safe_load(path.read_text()) == yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    "text",
    ["a: b: c\n", "config:\n  - x\n y: 1\n", "key: [unclosed\n", "\tindent: tab\n", "a: 'x\n"],
)
def test_an_error_is_the_pure_loaders_error(text):
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError) as ours:
        yamlio.safe_load(text)
    assert type(ours.value) is type(pure.value)
    assert str(ours.value) == str(pure.value)


def test_a_file_is_parsed_once_and_each_caller_gets_its_own_copy(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("regions:\n  us-east-1: {nat: 0.045}\n")
    first = yamlio.load_file(path)
    first["regions"]["us-east-1"]["nat"] = 99
    assert yamlio.load_file(path) == {"regions": {"us-east-1": {"nat": 0.045}}}
    path.write_text("regions:\n  us-east-1: {nat: 0.05}\n")  # new content: read again
    assert yamlio.load_file(path)["regions"]["us-east-1"]["nat"] == 0.05
