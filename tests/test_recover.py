"""`exaprov state recover`: the state rebuilt from tags."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, cli, tagged, write_config
from tests.test_peer_cli import client_vpc

STATE = Path("state/example.json")


def ids(state: dict[str, Any]) -> dict[str, str]:
    return {address: record.get("id") for address, record in state["resources"].items()}


def secret_values(state: dict[str, Any]) -> list[str]:
    """The RDS master password and the backend user's secret access key, from Secrets Manager."""
    sm = boto3.client("secretsmanager", region_name=REGION)
    db = boto3.client("rds", region_name=REGION).describe_db_instances()["DBInstances"][0]
    password = json.loads(sm.get_secret_value(
        SecretId=db["MasterUserSecret"]["SecretArn"])["SecretString"])["password"]
    key = json.loads(sm.get_secret_value(
        SecretId=state["outputs"]["backend-user"]["secret_access_key_secret_arn"])["SecretString"])
    return [password, key["secret_access_key"]]


@pytest.fixture
def full_stack(workdir: Path, ec2: Any) -> dict[str, Any]:
    """the example config (backend on, two runner pools) up, with one client VPC peered."""
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
    for secret in secret_values(recovered):
        assert secret not in STATE.read_text()  # recovery reads the key's secret, never keeps it

    calls.clear()
    up = cli("up", "--yes")
    assert up.exit_code == 0, up.output
    assert calls.mutating() == []  # recovered state + AWS = a converged deployment

    assert cli("destroy", "--yes", "--disable-deletion-protection").exit_code == 0
    for operation, key in (("describe_vpcs", "Vpcs"), ("describe_subnets", "Subnets"),
                           ("describe_security_groups", "SecurityGroups"),
                           ("describe_launch_templates", "LaunchTemplates")):
        assert tagged(ec2, operation, key) == [], operation
    peerings = tagged(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections")
    assert {p["Status"]["Code"] for p in peerings} <= {"deleted"}  # EC2 shows deleted ones a while
    assert boto3.client("eks", region_name=REGION).list_clusters()["clusters"] == []
    assert boto3.client("rds", region_name=REGION).describe_db_instances()["DBInstances"] == []
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []


SMALL = {"name": "example", "module_repo_backend": None,
         "cluster": {"runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge",
                                       "min_size": 0, "max_size": 1}]}}


@pytest.fixture
def small_stack(workdir: Path, ec2: Any) -> dict[str, Any]:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    return json.loads(STATE.read_text())


def test_a_damaged_state_is_kept_aside_then_replaced(small_stack: dict[str, Any], calls: Any) -> None:
    damaged = STATE.read_bytes()[: len(STATE.read_bytes()) // 2]  # truncated mid-write
    STATE.write_bytes(damaged)
    refused = cli("up", "--yes")
    assert refused.exit_code == 2 and "exaprov state recover" in refused.output

    dry = cli("state", "recover")
    assert dry.exit_code == 0, dry.output
    assert "damaged" in dry.output and "nothing written" in dry.output
    assert "network.vpc" in dry.output and small_stack["resources"]["network.vpc"]["id"] in dry.output
    assert STATE.read_bytes() == damaged

    result = cli("state", "recover", "--yes")
    assert result.exit_code == 0, result.output
    kept = list(STATE.parent.glob("example.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # never lost
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert str(kept[0]) in result.output
    recovered = json.loads(STATE.read_text())
    assert ids(recovered) == ids(small_stack)
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []


def test_a_readable_state_is_replaced_only_with_force(small_stack: dict[str, Any], calls: Any) -> None:
    before = STATE.read_text()
    calls.clear()
    refused = cli("state", "recover", "--yes")
    assert refused.exit_code == 2 and "--force" in refused.output
    assert calls.calls == []  # refused before any AWS call
    assert STATE.read_text() == before

    result = cli("state", "recover", "--yes", "--force")
    assert result.exit_code == 0, result.output
    kept = list(STATE.parent.glob("example.json.replaced-*"))
    assert len(kept) == 1 and kept[0].read_text() == before
    recovered = json.loads(STATE.read_text())
    assert recovered["lineage"] == small_stack["lineage"]  # the same deployment's history
    assert recovered["serial"] > small_stack["serial"]
    assert ids(recovered) == ids(small_stack)


def test_a_newer_exaprovs_state_is_never_replaced(workdir: Path, aws: None, calls: Any) -> None:
    STATE.parent.mkdir()
    STATE.write_text(json.dumps({"format_version": 99, "resources": {}}))
    before = STATE.read_text()
    result = cli("state", "recover", "--yes", "--force")
    assert result.exit_code == 2 and "newer exaprov" in result.output
    assert STATE.read_text() == before and calls.calls == []
    assert sorted(p.name for p in STATE.parent.iterdir()) == ["example.json", "example.json.lock"]


def test_what_is_gone_is_reported_missing_and_left_to_up(small_stack: dict[str, Any]) -> None:
    logs = boto3.client("logs", region_name=REGION)
    group = small_stack["resources"]["logs.log-group"]["id"]
    logs.delete_log_group(logGroupName=group)
    STATE.unlink()

    report = json.loads(cli("state", "recover", "--output", "json").stdout)
    assert [m["address"] for m in report["missing"]] == ["logs.log-group"]
    assert "logs.log-group" not in {row["address"] for row in report["found"]}

    assert cli("state", "recover", "--yes").exit_code == 0
    recovered = json.loads(STATE.read_text())
    assert "logs.log-group" not in recovered["resources"]  # the state never claims it
    assert "logs" not in recovered["outputs"]
    assert cli("up", "--yes").exit_code == 0
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]


def test_a_damaged_s3_state_is_kept_aside_in_the_bucket(workdir: Path, ec2: Any) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="team-state", CreateBucketConfiguration={"LocationConstraint": REGION})
    url = "s3://team-state/exaprov/example.json"
    write_config({**SMALL, "state": url})
    assert cli("up", "--yes").exit_code == 0
    original = json.loads(s3.get_object(Bucket="team-state", Key="exaprov/example.json")["Body"].read())
    s3.put_object(Bucket="team-state", Key="exaprov/example.json", Body=b"{\"format_vers")

    result = cli("state", "recover", "--yes")
    assert result.exit_code == 0, result.output
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="team-state")["Contents"]}
    aside = [k for k in keys if k.startswith("exaprov/example.json.damaged-")]
    assert len(aside) == 1
    assert s3.get_object(Bucket="team-state", Key=aside[0])["Body"].read() == b"{\"format_vers"
    recovered = json.loads(s3.get_object(Bucket="team-state", Key="exaprov/example.json")["Body"].read())
    assert ids(recovered) == ids(original)


def test_after_a_failed_state_write_recover_catches_the_state_up(
        workdir: Path, ec2: Any, calls: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """the disk fills mid-`up` (ENOSPC on the state's replace): exaprov stops with
    the newest state in the errored file; the state on disk lags behind AWS. Recovery brings
    it level, and the next `up` creates only what was never made: no duplicate."""
    import errno
    import os

    import exaprov.state

    write_config(SMALL)
    real_write = exaprov.state._atomic_write

    def disk_fills(path: Path, text: str | bytes) -> None:
        """The disk is full from the save that would record a second subnet's ID."""
        if Path(path).name == "example.json" and str(text).count('"id": "subnet-') >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, text)

    monkeypatch.setattr(exaprov.state, "_atomic_write", disk_fills)
    failed = cli("up", "--yes")
    assert failed.exit_code == 1 and "example.errored.json" in failed.output
    monkeypatch.setattr(exaprov.state, "_atomic_write", real_write)
    lagging = json.loads(STATE.read_text())
    vpc = tagged(ec2, "describe_vpcs", "Vpcs")
    assert len(vpc) == 1

    result = cli("state", "recover", "--yes", "--force")
    assert result.exit_code == 0, result.output
    recovered = json.loads(STATE.read_text())
    assert recovered["resources"]["network.vpc"]["id"] == vpc[0]["VpcId"]
    subnets = {s["SubnetId"] for s in tagged(ec2, "describe_subnets", "Subnets")}
    assert subnets  # some were made before the disk filled...
    recorded = {r["id"] for r in recovered["resources"].values() if r["kind"] == "ec2:subnet"}
    assert recorded == subnets  # ...and now every one is recorded, those the lagging
    assert {r["id"] for r in lagging["resources"].values()  # state missed or held as intents too
            if r.get("kind") == "ec2:subnet" and r.get("status") == "created"} < subnets
    assert all(r["status"] == "created" for r in recovered["resources"].values())

    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert len(tagged(ec2, "describe_vpcs", "Vpcs")) == 1
    assert len(tagged(ec2, "describe_subnets", "Subnets")) == 9  # nine subnets, once each


def test_a_peer_limited_to_some_route_tables_is_recovered_as_such(
        small_stack: dict[str, Any], ec2: Any, calls: Any) -> None:
    """`peer --route-table-ids` is kept in the state only: recovery reads it back from which
    of the client's tables route through the peering."""
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    assert len(tables) == 2
    assert cli("peer", "--vpc-id", vpc, "--route-table-ids", tables[1]).exit_code == 0
    original = json.loads(STATE.read_text())
    assert original["peers"][vpc]["route_table_ids"] == [tables[1]]
    STATE.unlink()

    assert cli("state", "recover", "--yes").exit_code == 0
    recovered = json.loads(STATE.read_text())
    assert recovered["peers"] == original["peers"]
    assert ids(recovered) == ids(original)
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []  # the other client table is left alone, as before
