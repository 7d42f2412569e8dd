"""The network steps against moto: what `up` leaves in EC2/RDS, idempotence, adoption, destroy."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov.aws import tag_dict
from exaprov.steps.network import subnet_layout
from tests.conftest import REGION, cli, tagged, write_config

EXPECTED_SUBNETS = {
    "private": ["10.255.16.0/20", "10.255.32.0/20", "10.255.48.0/20"],
    "public": ["10.255.64.0/20", "10.255.80.0/20", "10.255.96.0/20"],
    "database": ["10.255.112.0/20", "10.255.128.0/20", "10.255.144.0/20"],
}


def census(ec2: Any) -> dict[str, int]:
    """How many of each resource type carry the deployment tag."""
    return {
        "vpc": len(tagged(ec2, "describe_vpcs", "Vpcs")),
        "subnet": len(tagged(ec2, "describe_subnets", "Subnets")),
        "igw": len(tagged(ec2, "describe_internet_gateways", "InternetGateways")),
        "rtb": len(tagged(ec2, "describe_route_tables", "RouteTables")),
        "eip": len(tagged(ec2, "describe_addresses", "Addresses")),
        "nat": len(tagged(ec2, "describe_nat_gateways", "NatGateways", filter_param="Filter")),
        "dbsg": len(boto3.client("rds", region_name=REGION).describe_db_subnet_groups()
                    ["DBSubnetGroups"]),
    }


ONE_OF_EACH = {"vpc": 1, "subnet": 9, "igw": 1, "rtb": 2, "eip": 1, "nat": 1, "dbsg": 1}
NONE = dict.fromkeys(ONE_OF_EACH, 0)


def test_subnet_layout_matches_spec() -> None:
    layout = subnet_layout("10.255.0.0/16", ["us-west-1a", "us-west-1b"])
    assert [s.cidr for s in layout] == [c for t in ("private", "public", "database")
                                        for c in EXPECTED_SUBNETS[t]]
    # subnet n of a tier in zone n, wrapping round when there are fewer zones
    assert [s.zone for s in layout[:3]] == ["us-west-1a", "us-west-1b", "us-west-1a"]
    assert subnet_layout("10.0.0.0/24", ["a"])[0].cidr == "10.0.0.16/28"


def test_up_creates_the_network_of_spec(workdir: Path, ec2: Any) -> None:
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output

    vpcs = tagged(ec2, "describe_vpcs", "Vpcs")
    assert len(vpcs) == 1
    vpc = vpcs[0]
    assert vpc["CidrBlock"] == "10.255.0.0/16"
    assert tag_dict(vpc["Tags"])["Name"] == "exafunction-vpc-example"
    for attribute in ("enableDnsHostnames", "enableDnsSupport"):
        key = attribute[0].upper() + attribute[1:]
        assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute=attribute)[key]["Value"]

    subnets = tagged(ec2, "describe_subnets", "Subnets")
    assert len(subnets) == 9
    by_cidr = {s["CidrBlock"]: s for s in subnets}
    assert set(by_cidr) == {c for cidrs in EXPECTED_SUBNETS.values() for c in cidrs}
    zones = sorted(z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"])
    for tier, cidrs in EXPECTED_SUBNETS.items():
        for n, cidr in enumerate(cidrs):
            subnet = by_cidr[cidr]
            tags = tag_dict(subnet["Tags"])
            assert subnet["VpcId"] == vpc["VpcId"]
            assert subnet["AvailabilityZone"] == zones[n % len(zones)]
            assert tags.get("kubernetes.io/role/elb") == ("1" if tier == "public" else None)
            assert tags.get("kubernetes.io/role/internal-elb") == (
                "1" if tier == "private" else None)

    igws = tagged(ec2, "describe_internet_gateways", "InternetGateways")
    assert len(igws) == 1
    assert [a["VpcId"] for a in igws[0]["Attachments"]] == [vpc["VpcId"]]

    eips = tagged(ec2, "describe_addresses", "Addresses")
    nats = tagged(ec2, "describe_nat_gateways", "NatGateways", filter_param="Filter")
    assert len(eips) == 1 and len(nats) == 1
    nat = nats[0]
    assert nat["State"] == "available"
    assert nat["SubnetId"] == by_cidr[EXPECTED_SUBNETS["public"][0]]["SubnetId"]
    assert nat["NatGatewayAddresses"][0]["AllocationId"] == eips[0]["AllocationId"]

    # Default routes: public subnets → IGW; private and database subnets → NAT.
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["RouteTables"]
    default_target = {}
    for table in tables:
        route = next((r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"),
                     {})
        for assoc in table["Associations"]:
            if assoc.get("SubnetId"):
                default_target[assoc["SubnetId"]] = route.get("GatewayId") or route.get(
                    "NatGatewayId")
    for tier, cidrs in EXPECTED_SUBNETS.items():
        want = igws[0]["InternetGatewayId"] if tier == "public" else nat["NatGatewayId"]
        for cidr in cidrs:
            assert default_target[by_cidr[cidr]["SubnetId"]] == want, (tier, cidr)

    rds = boto3.client("rds", region_name=REGION)
    groups = rds.describe_db_subnet_groups()["DBSubnetGroups"]
    assert len(groups) == 1
    assert {s["SubnetIdentifier"] for s in groups[0]["Subnets"]} == {
        by_cidr[c]["SubnetId"] for c in EXPECTED_SUBNETS["database"]}
    arn = groups[0]["DBSubnetGroupArn"]
    assert tag_dict(rds.list_tags_for_resource(ResourceName=arn)["TagList"])[
        "exaprov:deployment"] == "example"

    # Every EC2 resource carries the identity tags and the user's tags.
    for item in [vpc, *subnets, *igws, *eips, *nats]:
        tags = tag_dict(item["Tags"])
        assert tags["exaprov:deployment"] == "example"
        assert tags["exaprov:component"] in ("network", "nat")
        assert tags["owner"] == "exafunction"
    assert census(ec2) == ONE_OF_EACH


def test_state_records_every_resource_privately(workdir: Path, ec2: Any) -> None:
    os.umask(0)
    try:
        assert cli("up", "--yes").exit_code == 0
    finally:
        os.umask(0o022)
    path = Path("state/example.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) in (0o700, 0o755)  # repo's state/ may exist
    state = json.loads(path.read_text())
    assert state["format_version"] == 1 and state["lineage"] and state["serial"] > 20
    resources = {k: v for k, v in state["resources"].items() if k.startswith(("network.", "nat."))}
    assert len(resources) == 16  # vpc, 9 subnets, igw, 2 route tables, dbsg, eip, nat
    assert all(r["status"] == "created" and r["id"] for r in state["resources"].values())
    vpc_id = tagged(ec2, "describe_vpcs", "Vpcs")[0]["VpcId"]
    assert resources["network.vpc"]["id"] == vpc_id
    assert state["outputs"]["network"]["vpc_id"] == vpc_id
    assert Path("state/example.json.backup").exists()


def test_second_up_and_plan_make_no_mutating_call(workdir: Path, ec2: Any, calls: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    serial = json.loads(Path("state/example.json").read_text())["serial"]
    calls.clear()
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert calls.mutating() == [], calls.mutating()
    assert calls.calls  # it did look
    assert json.loads(Path("state/example.json").read_text())["serial"] == serial

    calls.clear()
    result = cli("plan")
    assert result.exit_code == 0
    assert "No changes" in result.output
    assert calls.mutating() == []


def test_plan_before_up_lists_every_create_and_changes_nothing(
        workdir: Path, ec2: Any, calls: Any) -> None:
    result = cli("plan", "--output", "json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    network = [c for c in plan["changes"] if c["address"].startswith(("network.", "nat."))]
    assert len(network) == 16
    assert {c["action"] for c in plan["changes"]} == {"create"}
    assert calls.mutating() == []
    assert census(ec2) == NONE
    assert not Path("state/example.json").exists()


def test_lost_state_is_adopted_by_tags(workdir: Path, ec2: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    first = json.loads(Path("state/example.json").read_text())["resources"]
    for leftover in Path("state").glob("example.json*"):
        leftover.unlink()
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert census(ec2) == ONE_OF_EACH
    second = json.loads(Path("state/example.json").read_text())["resources"]
    assert {k: v["id"] for k, v in second.items()} == {k: v["id"] for k, v in first.items()}


def test_destroy_leaves_nothing_and_twice_is_fine(workdir: Path, ec2: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    assert census(ec2) == NONE
    assert json.loads(Path("state/example.json").read_text())["resources"] == {}
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output


def test_destroy_without_state_finds_everything_by_tag(workdir: Path, ec2: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    for leftover in Path("state").glob("example.json*"):
        leftover.unlink()
    assert cli("destroy", "--yes", "--disable-deletion-protection").exit_code == 0
    assert census(ec2) == NONE


def test_deleted_out_of_band_shows_missing_and_up_recreates(workdir: Path, ec2: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    igw = tagged(ec2, "describe_internet_gateways", "InternetGateways")[0]
    ec2.detach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"],
                                VpcId=igw["Attachments"][0]["VpcId"])
    ec2.delete_internet_gateway(InternetGatewayId=igw["InternetGatewayId"])

    status = json.loads(cli("status", "--output", "json").stdout)
    row = next(r for r in status["resources"] if r["address"] == "network.igw")
    assert row["live"] == "missing" and row["recorded_id"] == igw["InternetGatewayId"]
    assert status["in_sync"] is False

    assert cli("up", "--yes").exit_code == 0
    igws = tagged(ec2, "describe_internet_gateways", "InternetGateways")
    assert len(igws) == 1 and igws[0]["InternetGatewayId"] != igw["InternetGatewayId"]
    public = [t for t in tagged(ec2, "describe_route_tables", "RouteTables")
              if tag_dict(t["Tags"])["exaprov:resource"] == "public-rt"][0]
    route = next(r for r in public["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0")
    assert route["GatewayId"] == igws[0]["InternetGatewayId"]


def test_drift_in_dns_and_tags_is_reported_and_repaired(workdir: Path, ec2: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    vpc = tagged(ec2, "describe_vpcs", "Vpcs")[0]
    ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsHostnames={"Value": False})
    ec2.delete_tags(Resources=[vpc["VpcId"]], Tags=[{"Key": "owner"}])

    status = json.loads(cli("status", "--output", "json").stdout)
    row = next(r for r in status["resources"] if r["address"] == "network.vpc")
    assert any("enableDnsHostnames" in d for d in row["drift"])
    assert any("owner=exafunction" in d for d in row["drift"])

    assert cli("up", "--yes").exit_code == 0
    assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsHostnames")[
        "EnableDnsHostnames"]["Value"] is True
    assert tag_dict(tagged(ec2, "describe_vpcs", "Vpcs")[0]["Tags"])["owner"] == "exafunction"


def test_custom_cidr_and_tags(workdir: Path, ec2: Any) -> None:
    write_config({"name": "custom", "tags": {"team": "ml"},
                  "network": {"vpc_cidr_block": "10.8.0.0/20"}})
    assert cli("up", "--yes").exit_code == 0
    subnets = tagged(ec2, "describe_subnets", "Subnets", name="custom")
    assert sorted(s["CidrBlock"] for s in subnets)[0] == "10.8.1.0/24"
    assert all(tag_dict(s["Tags"])["team"] == "ml" for s in subnets)


def test_changed_vpc_cidr_is_refused_before_any_change(workdir: Path, ec2: Any,
                                                        calls: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    write_config({"name": "example", "network": {"vpc_cidr_block": "10.9.0.0/16"}})
    calls.clear()
    result = cli("up", "--yes")
    assert result.exit_code == 2
    assert "network.vpc_cidr_block" in result.output and "10.255.0.0/16" in result.output
    assert calls.mutating() == []


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_other_regions(workdir: Path, aws: None, region: str) -> None:
    write_config({"name": "example", "region": region})
    assert cli("up", "--yes").exit_code == 0
    ec2 = boto3.client("ec2", region_name=region)
    assert len(tagged(ec2, "describe_subnets", "Subnets")) == 9
