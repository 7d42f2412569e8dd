"""A state file whose outer shape is right but whose inner values are not: every command stops
before any AWS request, exit 2, naming the value by its JSON path, the file untouched.

The states are a real one (an `up` of the whole stack with a peer, run once against moto)
with one value made wrong; each is tried with every command that reads the state.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exaprov.state import State
from tests.conftest import cli
from tests.crashing import CONFIG, isolated_aws, prepare_account_and_state, run_ok

STATE = Path("state") / "example.json"


@functools.cache
def built_state() -> str:
    """The state file of a whole deployment with one peer (as `up` wrote it)."""
    with isolated_aws():
        prepare_account_and_state(count=False)
        run_ok("up", "--yes")
        return STATE.read_text()


def _first(data: dict[str, Any], prefix: str) -> str:
    return next(address for address in data["resources"] if address.startswith(prefix))


def _peer(data: dict[str, Any]) -> str:
    return next(iter(data["peers"]))


Corruption = Callable[[dict[str, Any]], str]  # makes one value wrong; returns its JSON path


def _set(path: str, *keys: Any, value: Any) -> Corruption:
    def corrupt(data: dict[str, Any]) -> str:
        target = data
        resolved = [k(data) if callable(k) else k for k in keys]
        for key in resolved[:-1]:
            target = target[key]
        target[resolved[-1]] = value
        return path.format(*resolved)
    return corrupt


CORRUPTIONS: dict[str, Corruption] = {
    "record-is-a-string": _set('resources["{1}"]', "resources",
                               lambda d: _first(d, "network.vpc"), value="vpc-0123456789abcdef0"),
    "record-id-is-a-number": _set('resources["{1}"].id', "resources",
                                  lambda d: _first(d, "nat.nat"), "id", value=12),
    "record-status-unknown": _set('resources["{1}"].status', "resources",
                                  lambda d: _first(d, "cluster.cluster"), "status", value="gone"),
    "outputs-network-is-5": _set("outputs.network", "outputs", "network", value=5),
    "subnet-ids-is-a-string": _set("outputs.network.private_subnet_ids", "outputs", "network",
                                   "private_subnet_ids", value="subnet-0123456789abcdef0"),
    "rds-port-is-text": _set("outputs.database.rds_port", "outputs", "database", "rds_port",
                             value="5432"),
    "node-groups-is-a-list": _set('outputs["node-groups"].node_groups', "outputs", "node-groups",
                                  "node_groups", value=["default"]),
    "peers-is-x": _set("peers", "peers", value="x"),
    "peer-cidrs-is-a-string": _set('peers["{1}"].cidrs', "peers", _peer, "cidrs",
                                   value="10.50.0.0/16"),
    "format-version-true": _set("format_version", "format_version", value=True),
    "account-id-an-integer": _set("account_id", "account_id", value=123456789012),
    "version-is-a-number": _set("exaprov_version", "exaprov_version", value=1),
    "deleting-record-cidrs-is-text": _set('resources["{1}"].cidrs', "resources",
                                          lambda d: _first(d, "peering.sg-rule"), "cidrs",
                                          value="10.50.0.0/16"),
}
COMMANDS = {"up": ("up", "--yes"), "destroy": ("destroy", "--yes"), "plan": ("plan",),
            "status": ("status",), "outputs": ("outputs",)}


def test_a_whole_state_as_up_writes_it_is_valid() -> None:
    state = State.parse(built_state(), "state")
    assert state.data["peers"] and state.outputs["network"]["vpc_id"]


def test_an_old_state_without_the_later_fields_still_loads() -> None:
    """What the first exaprov of format 1 wrote: no peers, no account ID, no version."""
    old = {"format_version": 1, "lineage": "4c3f6ad8-7f0e-4a53-8c0a-0d3b8e1f2a90", "serial": 3,
           "deployment": "example", "region": "us-west-1",
           "resources": {"network.vpc": {"kind": "ec2:vpc", "id": "vpc-0123456789abcdef0",
                                         "status": "created"}},
           "outputs": {"network": {"vpc_id": "vpc-0123456789abcdef0"}}}
    assert State.parse(json.dumps(old), "old").resources["network.vpc"]["status"] == "created"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_bad_value_stops_every_command_before_any_aws_request(
        corruption: str, command: str, workdir: Path, aws: None, calls: Any) -> None:
    data = json.loads(built_state())
    calls.clear()  # the first test of a worker builds the state: its calls are not the command's
    path = CORRUPTIONS[corruption](data)
    Path("exaprov.yaml").write_text(json.dumps(CONFIG))
    STATE.parent.mkdir(exist_ok=True)
    STATE.write_text(json.dumps(data, indent=2))
    before = STATE.read_bytes()

    result = cli(*COMMANDS[command])

    assert result.exit_code == 2, result.output
    assert f"  {path}: " in result.output, result.output
    assert "Traceback" not in result.output
    assert STATE.read_bytes() == before
    assert calls.calls == []
    assert not STATE.with_name("example.json.backup").exists()
