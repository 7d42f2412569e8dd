"""Exit codes tell the truth: exit 2 ("bad input, nothing changed") only when nothing in AWS
changed. Every question comes before the first change; without a terminal and without
`--yes`, a command that would need one refuses before its first change and names the flag.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from exaprov.errors import InputError
from tests.census import census, difference
from tests.conftest import cli
from tests.crashing import CONFIG

EXTRA = {"batch": {"node_instance_type": "m5.large", "min_size": 0, "max_size": 2}}


def _config(data: dict[str, Any]) -> None:
    Path("exaprov.yaml").write_text(json.dumps(data))


def test_up_without_yes_and_without_a_terminal_refuses_before_any_change(
        workdir: Path, aws: None, calls: Any) -> None:
    """The config drops a node group (a question) and changes the tags (many updates that
    come first in the run): nothing is tagged before the refusal."""
    grown = copy.deepcopy(CONFIG)
    grown["cluster"]["additional_node_groups"] = EXTRA
    _config(grown)
    assert cli("up", "--yes").exit_code == 0
    built = census()
    state = Path("state/example.json").read_bytes()

    shrunk = copy.deepcopy(CONFIG)
    shrunk["tags"] = {"team": "ml-platform"}
    _config(shrunk)
    calls.clear()
    result = cli("up")  # CliRunner's stdin is no terminal

    assert result.exit_code == 2, result.output
    assert "Delete node group batch" in result.output and "--yes" in result.output
    assert "nothing was changed" in result.output
    assert calls.mutating() == []
    assert census() == built, difference(built, census())
    assert json.loads(Path("state/example.json").read_bytes())["resources"] == \
        json.loads(state)["resources"]

    assert cli("up", "--yes").exit_code == 0  # with the flag it goes ahead
    assert ("eks", "DeleteNodegroup") in calls.mutating()


def test_up_without_yes_and_nothing_to_ask_needs_no_terminal(workdir: Path, aws: None) -> None:
    _config(CONFIG)
    result = cli("up")
    assert result.exit_code == 0, result.output


def test_destroy_without_yes_and_without_a_terminal_changes_nothing(
        workdir: Path, aws: None, calls: Any) -> None:
    _config(CONFIG)
    assert cli("up", "--yes").exit_code == 0
    calls.clear()
    result = cli("destroy")
    assert result.exit_code == 2, result.output
    assert "--yes" in result.output
    assert calls.mutating() == []


def test_bad_input_found_after_a_change_is_exit_1(workdir: Path, aws: None, hooks: Any) -> None:
    """An error of bad input raised mid-run, once AWS was changed, does not exit 2."""
    _config(CONFIG)

    def clash(model: Any, **_: Any) -> None:
        if model.name == "CreateNodegroup":
            raise InputError("node-groups: a name clash found late")

    hooks(clash)
    result = cli("up", "--yes")
    assert result.exit_code == 1, result.output
    assert "a name clash found late" in result.output
    assert "Exit 1, not 2" in result.output


@pytest.mark.parametrize("flag", [[], ["--yes"]])
def test_bad_input_before_any_change_stays_exit_2(workdir: Path, aws: None, calls: Any,
                                                  flag: list[str]) -> None:
    _config({**CONFIG, "region": "mars-north-1"})
    result = cli("up", *flag)
    assert result.exit_code == 2, result.output
    assert "Exit 1, not 2" not in result.output
    assert calls.mutating() == []
