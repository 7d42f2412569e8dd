"""`plan` lists exactly what `up` then does: the same changes, counted the same way.

A reviewer approves a plan; the run that follows must not report changes the plan did not
show (autoscaler tags and security group rules of resources made in the same run are part
of making them; a replacement is one change, not a create and a delete besides).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from exaprov.deployment import Deployment, Target
from tests.conftest import cli, write_config

BASE: dict[str, Any] = {
    "name": "example",
    "cluster": {"cluster_version": "1.33",
                "runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge",
                                  "min_size": 0, "max_size": 1}]}}


def edited(edit: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    edit(data)
    return data


def pool(data: dict[str, Any]) -> dict[str, Any]:
    return data["cluster"]["runner_pools"][0]


EDITS = {
    "a pool added": lambda d: d["cluster"]["runner_pools"].append(
        {"suffix": "gpu", "node_instance_category": "gpu", "node_instance_type": "g5.xlarge",
         "min_size": 0, "max_size": 1}),
    "a pool removed": lambda d: d["cluster"].update(runner_pools=[]),
    "a resize": lambda d: pool(d).update(max_size=5),
    "a disk size change": lambda d: pool(d).update(disk_size=200),
    "an instance type change": lambda d: pool(d).update(node_instance_type="m5.2xlarge"),
    "a version change": lambda d: d["cluster"].update(cluster_version="1.34"),
}


def rows(changes: list[Any]) -> list[tuple[str, str, str]]:
    return sorted((c.action, c.address, c.kind) for c in changes)


def plan_then_up() -> tuple[list[Any], list[Any]]:
    planned = Deployment(Target()).plan()
    assert not planned.failed, planned.failed
    done = Deployment(Target()).up(confirm=lambda question: True)
    assert not done.failed, done.failed
    return planned.changes, done.changes


def test_a_fresh_build_does_what_its_plan_says(workdir: Path, aws: None) -> None:
    write_config(BASE)
    planned, done = plan_then_up()
    assert rows(planned) == rows(done)
    assert len(done) > 30


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_a_config_change_does_what_its_plan_says(workdir: Path, aws: None, edit: str) -> None:
    write_config(BASE)
    assert cli("up", "--yes").exit_code == 0
    write_config(edited(EDITS[edit]))
    planned, done = plan_then_up()
    assert planned, "the edit changes nothing"
    assert rows(planned) == rows(done)
    # Updates and deletes describe existing things: the same words in both.
    assert sorted((c.address, c.detail) for c in planned if c.action != "create") == \
        sorted((c.address, c.detail) for c in done if c.action != "create")
    assert not [c for c in planned + done if "{" in c.detail or "'" in c.detail]  # no reprs


def test_plan_and_up_print_the_same_counts(workdir: Path, aws: None) -> None:
    write_config(BASE)
    assert cli("up", "--yes").exit_code == 0
    write_config(edited(EDITS["an instance type change"]))
    plan_line = next(line for line in cli("plan").output.splitlines() if line.startswith("Plan:"))
    up_line = next(line for line in cli("up", "--yes").output.splitlines()
                   if line.startswith("up:"))
    assert plan_line == "Plan: 1 to replace." and up_line == "up: 1 replaced.", (plan_line, up_line)
