"""`exaprov peer` / `unpeer` as a user runs them, against moto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, tagged, write_config

DEPLOYMENT_CIDR = "10.255.0.0/16"
SMALL = {"name": "example", "module_repo_backend": None,
         "cluster": {"runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge",
                                       "min_size": 0, "max_size": 1}]}}


def client_vpc(ec2: Any, cidr: str) -> tuple[str, list[str]]:
    """A client VPC with its main route table and one custom table."""
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    ec2.create_route_table(VpcId=vpc)
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    return vpc, [t["RouteTableId"] for t in tables]


def routes_to(ec2: Any, table: str, cidr: str) -> str | None:
    routes = ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]["Routes"]
    return next((r.get("VpcPeeringConnectionId") or r.get("GatewayId") for r in routes
                 if r.get("DestinationCidrBlock") == cidr), None)


@pytest.fixture
def deployed(workdir: Path, ec2: Any) -> Any:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    return ec2


def test_peer_routes_both_ways_and_admits_the_client(deployed: Any, calls: Any) -> None:
    ec2 = deployed
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    result = cli("peer", "--vpc-id", vpc)
    assert result.exit_code == 0, result.output
    pcxs = [p for p in tagged(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections")
            if p["Status"]["Code"] == "active"]
    assert len(pcxs) == 1 and pcxs[0]["AccepterVpcInfo"]["VpcId"] == vpc
    pcx = pcxs[0]["VpcPeeringConnectionId"]
    outputs = json.loads(Path("state/example.json").read_text())["outputs"]
    for table in outputs["network"]["private_route_table_ids"]:
        assert routes_to(ec2, table, "10.0.0.0/16") == pcx
    for table in tables:
        assert routes_to(ec2, table, DEPLOYMENT_CIDR) == pcx
    node_sg = outputs["security-groups"]["node_security_group_id"]
    perms = ec2.describe_security_groups(GroupIds=[node_sg])["SecurityGroups"][0]["IpPermissions"]
    assert any(p.get("FromPort") == 0 and p.get("ToPort") == 65535 and
               any(r["CidrIp"] == "10.0.0.0/16" for r in p.get("IpRanges", [])) for p in perms)

    calls.clear()
    assert cli("peer", "--vpc-id", vpc).exit_code == 0
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []


def test_overlaps_and_unknown_vpcs_exit_2_changing_nothing(deployed: Any, calls: Any) -> None:
    ec2 = deployed
    first, _ = client_vpc(ec2, "10.0.0.0/16")
    assert cli("peer", "--vpc-id", first).exit_code == 0
    inside, _ = client_vpc(ec2, "10.255.8.0/24")
    again, _ = client_vpc(ec2, "10.0.128.0/17")
    calls.clear()
    result = cli("peer", "--vpc-id", inside)
    assert result.exit_code == 2 and DEPLOYMENT_CIDR in result.output
    assert "10.255.8.0/24" in result.output
    result = cli("peer", "--vpc-id", again)
    assert result.exit_code == 2
    assert "10.0.0.0/16" in result.output and "10.0.128.0/17" in result.output
    result = cli("peer", "--vpc-id", "vpc-0123456789abcdef0")
    assert result.exit_code == 2 and "vpc-0123456789abcdef0" in result.output
    assert cli("peer", "--vpc-id", "not-a-vpc").exit_code == 2
    assert calls.mutating() == []


def test_unpeer_the_second_of_three_leaves_the_others(deployed: Any) -> None:
    ec2 = deployed
    peers = [client_vpc(ec2, f"10.{n}.0.0/16") for n in (1, 2, 3)]
    for vpc, _ in peers:
        assert cli("peer", "--vpc-id", vpc).exit_code == 0
    result = cli("unpeer", "--vpc-id", peers[1][0])
    assert result.exit_code == 0, result.output
    private = json.loads(Path("state/example.json").read_text())["outputs"]["network"][
        "private_route_table_ids"]
    for n, (_vpc, tables) in zip((1, 2, 3), peers, strict=True):
        expect = n != 2
        assert all((routes_to(ec2, t, DEPLOYMENT_CIDR) is not None) is expect for t in tables)
        assert all((routes_to(ec2, t, f"10.{n}.0.0/16") is not None) is expect for t in private)
    assert cli("unpeer", "--vpc-id", peers[1][0]).exit_code == 2  # not peered any more


def test_a_route_deleted_by_hand_is_drift_and_up_restores_it(deployed: Any) -> None:
    ec2 = deployed
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    assert cli("peer", "--vpc-id", vpc).exit_code == 0
    ec2.delete_route(RouteTableId=tables[0], DestinationCidrBlock=DEPLOYMENT_CIDR)
    status = json.loads(cli("status", "--output", "json").stdout)
    assert status["in_sync"] is False
    assert any(c["address"].startswith("peering.") for c in status["changes"])
    assert cli("up", "--yes").exit_code == 0
    assert routes_to(ec2, tables[0], DEPLOYMENT_CIDR) is not None


def test_destroy_unpeers_and_leaves_client_vpcs_otherwise_untouched(deployed: Any) -> None:
    ec2 = deployed
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    assert cli("peer", "--vpc-id", vpc).exit_code == 0
    assert cli("destroy", "--yes", "--disable-deletion-protection").exit_code == 0
    active = [p for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]
              if p["Status"]["Code"] == "active"]
    assert active == []
    for table in tables:
        assert routes_to(ec2, table, DEPLOYMENT_CIDR) is None
        assert routes_to(ec2, table, "10.0.0.0/16") == "local"
    assert ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"]


def test_peer_profile_accepts_and_routes_with_the_client_accounts_credentials(
        deployed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--peer-profile: the accept and the client-side routes are signed with that profile's
    keys (moto answers both accounts as one; the signer shows whose credentials acted)."""
    import botocore.handlers

    config = tmp_path / "aws-config"
    config.write_text("[profile client]\naws_access_key_id = AKIDCLIENTACCOUNT\n"
                      "aws_secret_access_key = client-secret\nregion = us-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    signed_by: dict[str, set[str]] = {}

    def who(model: Any, request_signer: Any, **_: Any) -> None:
        key = request_signer._credentials.access_key
        signed_by.setdefault(model.name, set()).add(
            "client" if key == "AKIDCLIENTACCOUNT" else "deployment")

    entry = ("before-call", who)
    botocore.handlers.BUILTIN_HANDLERS.append(entry)
    try:
        vpc, tables = client_vpc(deployed, "10.0.0.0/16")
        result = cli("peer", "--vpc-id", vpc, "--peer-profile", "client")
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(entry)
    assert result.exit_code == 0, result.output
    assert signed_by["AcceptVpcPeeringConnection"] == {"client"}
    assert signed_by["CreateVpcPeeringConnection"] == {"deployment"}
    assert "client" in signed_by["CreateRoute"] and "deployment" in signed_by["CreateRoute"]
    for table in tables:
        assert routes_to(deployed, table, DEPLOYMENT_CIDR) is not None


def _state() -> dict[str, Any]:
    return json.loads(Path("state/example.json").read_text())


def test_route_tables_of_another_vpc_are_refused_before_any_change(deployed: Any,
                                                                   calls: Any) -> None:
    ec2 = deployed
    vpc, _ = client_vpc(ec2, "10.0.0.0/16")
    other, other_tables = client_vpc(ec2, "10.1.0.0/16")
    before = ec2.describe_route_tables(RouteTableIds=other_tables)["RouteTables"]
    calls.clear()
    result = cli("peer", "--vpc-id", vpc, "--route-table-ids", other_tables[1])
    assert result.exit_code == 2, result.output
    assert other_tables[1] in result.output and other in result.output
    assert calls.mutating() == []
    assert "peers" not in _state() or vpc not in _state()["peers"]
    assert ec2.describe_route_tables(RouteTableIds=other_tables)["RouteTables"] == before
    assert ec2.describe_vpc_peering_connections()["VpcPeeringConnections"] == []


def test_unpeer_removes_every_recorded_route_even_outside_the_client_vpc(deployed: Any) -> None:
    """A route an older exaprov put into another VPC's table (it did not check where a table
    was) is found from its record and removed with the peering."""
    ec2 = deployed
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    _, stray_tables = client_vpc(ec2, "10.1.0.0/16")
    stray = stray_tables[1]
    assert cli("peer", "--vpc-id", vpc, "--route-table-ids", tables[1]).exit_code == 0
    state = _state()
    pcx = state["resources"][f"peering.pcx:{vpc}"]["id"]
    ec2.create_route(RouteTableId=stray, DestinationCidrBlock=DEPLOYMENT_CIDR,
                     VpcPeeringConnectionId=pcx)
    state["resources"][f"peering.route:{stray}:{DEPLOYMENT_CIDR}"] = {
        "kind": "ec2:route", "id": f"{stray}|{DEPLOYMENT_CIDR}", "peer_vpc": vpc, "side": "client",
        "status": "created"}
    Path("state/example.json").write_text(json.dumps(state))
    assert cli("unpeer", "--vpc-id", vpc).exit_code == 0
    assert routes_to(ec2, stray, DEPLOYMENT_CIDR) is None
    assert routes_to(ec2, tables[1], DEPLOYMENT_CIDR) is None
    assert not any(k.startswith("peering.route:") for k in _state()["resources"])
