"""`exaprov state recover`: the state rebuilt from tags (FAULTS F11-F13, issue #6 part 7)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, cli, tagged
from tests.test_peer_cli import client_vpc

STATE = Path("state/example.json")


def ids(state: dict[str, Any]) -> dict[str, str]:
    return {address: record.get("id") for address, record in state["resources"].items()}


@pytest.fixture
def full_stack(workdir: Path, ec2: Any) -> dict[str, Any]:
    """SPEC's example config (backend on, two runner pools) up, with one client VPC peered."""
    assert cli("init", "--example", "full", "--force").exit_code == 0
    assert cli("up", "--yes").exit_code == 0
    vpc, _ = client_vpc(ec2, "10.0.0.0/16")
    result = cli("peer", "--vpc-id", vpc)
    assert result.exit_code == 0, result.output
    state = json.loads(STATE.read_text())
    assert vpc in state["peers"]
    return state


def test_recover_rebuilds_a_lost_state_that_up_and_destroy_trust(
        full_stack: dict[str, Any], ec2: Any, calls: Any) -> None:
    original = full_stack
    STATE.unlink()

    calls.clear()
    dry = cli("state", "recover", "--output", "json")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert calls.mutating() == []  # the dry run reads AWS only...
    assert not STATE.exists()  # ...and writes nothing
    assert report["written"] is False and report["missing"] == []
    assert {row["address"]: row["id"] for row in report["found"]}.items() >= {
        a: i for a, i in ids(original).items() if not a.startswith("peering.sg-rule")}.items()
    assert report["peers"] == sorted(original["peers"])

    result = cli("state", "recover", "--yes")
    assert result.exit_code == 0, result.output
    recovered = json.loads(STATE.read_text())
    assert ids(recovered) == ids(original)
    assert recovered["outputs"] == original["outputs"]
    assert recovered["peers"] == original["peers"]
    assert recovered["account_id"] == original["account_id"]
    assert stat.S_IMODE(STATE.stat().st_mode) == 0o600

    calls.clear()
    up = cli("up", "--yes")
    assert up.exit_code == 0, up.output
    assert calls.mutating() == []  # recovered state + AWS = a converged deployment

    assert cli("destroy", "--yes").exit_code == 0
    for operation, key in (("describe_vpcs", "Vpcs"), ("describe_subnets", "Subnets"),
                           ("describe_security_groups", "SecurityGroups"),
                           ("describe_launch_templates", "LaunchTemplates")):
        assert tagged(ec2, operation, key) == [], operation
    peerings = tagged(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections")
    assert {p["Status"]["Code"] for p in peerings} <= {"deleted"}  # EC2 shows deleted ones a while
    assert boto3.client("eks", region_name=REGION).list_clusters()["clusters"] == []
    assert boto3.client("rds", region_name=REGION).describe_db_instances()["DBInstances"] == []
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
