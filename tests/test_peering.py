"""The peering step against moto: peer, converge, check, unpeer, repair, destroy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov.errors import ExaprovError, InputError
from exaprov.steps.network import NETWORK
from exaprov.steps.peering import PEERING, check_peer
from exaprov.steps.security_groups import SECURITY_GROUPS
from tests.conftest import REGION, CallLog
from tests.harness import Stack

DEPLOYMENT_CIDR = "10.255.0.0/16"
OTHER_REGION = "eu-west-1"


@pytest.fixture
def stack(aws: None, tmp_path: Path, calls: CallLog) -> Stack:
    # After `calls`: BUILTIN_HANDLERS only reach sessions created after they are appended.
    stack = Stack(tmp_path, [NETWORK, SECURITY_GROUPS, PEERING])
    stack.up()
    return stack


@pytest.fixture
def ec2(stack: Stack) -> Any:
    return boto3.client("ec2", region_name=REGION)


def client_vpc(ec2: Any, cidr: str) -> tuple[str, list[str]]:
    """A client VPC with its main route table and one custom table (with a route of its own)."""
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    custom = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.create_route(RouteTableId=custom, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
    return vpc, sorted(t["RouteTableId"] for t in tables)


def set_peers(stack: Stack, peers: dict[str, dict[str, Any]]) -> None:
    """What `exaprov peer`/`unpeer` do to the state document before running the step."""
    state = stack.state()
    state.data["peers"] = {vpc: {"route_table_ids": None, "region": None, "profile": None, **spec}
                           for vpc, spec in peers.items()}
    stack.store.write(state)


def routes_to(ec2: Any, table: str, cidr: str) -> str | None:
    routes = ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0]["Routes"]
    return next((r.get("VpcPeeringConnectionId") or r.get("GatewayId") for r in routes
                 if r.get("DestinationCidrBlock") == cidr), None)


def active_peerings(ec2: Any) -> dict[str, str]:
    """Accepter VPC → peering ID of the active peerings."""
    return {p["AccepterVpcInfo"]["VpcId"]: p["VpcPeeringConnectionId"]
            for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]
            if p["Status"]["Code"] == "active"}


def admits(ec2: Any, group: str, cidr: str) -> bool:
    perms = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    return any(p.get("IpProtocol") == "tcp" and p.get("FromPort") == 0 and p.get("ToPort") == 65535
               and any(r["CidrIp"] == cidr for r in p.get("IpRanges", [])) for p in perms)


def private_tables(stack: Stack) -> list[str]:
    return stack.outputs("network")["private_route_table_ids"]


def node_sg(stack: Stack) -> str:
    return stack.outputs("security-groups")["node_security_group_id"]


def test_one_peer_routes_both_ways_admits_the_client_then_converges(
        stack: Stack, ec2: Any, calls: CallLog) -> None:
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    set_peers(stack, {vpc: {}})
    stack.up()
    pcx = active_peerings(ec2)[vpc]
    for table in private_tables(stack):
        assert routes_to(ec2, table, "10.0.0.0/16") == pcx
    assert len(tables) == 2
    for table in tables:
        assert routes_to(ec2, table, DEPLOYMENT_CIDR) == pcx
    assert admits(ec2, node_sg(stack), "10.0.0.0/16")
    assert stack.outputs("peering") == {"peerings": {vpc: {
        "pcx_id": pcx, "cidrs": ["10.0.0.0/16"], "client_route_table_ids": sorted(tables)}}}
    assert stack.state().resources[f"peering.pcx:{vpc}"]["id"] == pcx

    calls.clear()
    assert stack.up().changes == []
    assert calls.mutating() == []
    assert stack.plan().changes == []


def test_check_peer_names_overlapping_ranges_before_any_change(stack: Stack, ec2: Any,
                                                               calls: CallLog) -> None:
    inside, _ = client_vpc(ec2, "10.255.0.0/20")
    first, _ = client_vpc(ec2, "10.0.0.0/16")
    second, _ = client_vpc(ec2, "10.0.128.0/20")
    calls.clear()
    with pytest.raises(InputError) as err:
        check_peer(stack.aws, DEPLOYMENT_CIDR, {}, inside)
    assert f"10.255.0.0/16 (the deployment) overlaps 10.255.0.0/20 ({inside})" in err.value.message
    with pytest.raises(InputError) as err:
        check_peer(stack.aws, DEPLOYMENT_CIDR, {first: ["10.0.0.0/16"]}, second)
    assert f"10.0.0.0/16 ({first}) overlaps 10.0.128.0/20 ({second})" in err.value.message
    with pytest.raises(InputError, match="no VPC vpc-0123456789abcdef0 in us-west-1"):
        check_peer(stack.aws, DEPLOYMENT_CIDR, {}, "vpc-0123456789abcdef0")
    with pytest.raises(InputError, match="deployment's own VPC"):
        check_peer(stack.aws, DEPLOYMENT_CIDR, {}, stack.outputs("network")["vpc_id"],
                   deployment_vpc_id=stack.outputs("network")["vpc_id"])
    # A peer's own earlier entry is no conflict.
    assert check_peer(stack.aws, DEPLOYMENT_CIDR, {first: ["10.0.0.0/16"]}, first) == ["10.0.0.0/16"]
    assert calls.mutating() == []


def test_a_secondary_cidr_block_is_checked_too(stack: Stack, ec2: Any, calls: CallLog) -> None:
    vpc, _ = client_vpc(ec2, "10.0.0.0/16")
    ec2.associate_vpc_cidr_block(VpcId=vpc, CidrBlock="10.255.8.0/24")
    calls.clear()
    with pytest.raises(InputError) as err:
        check_peer(stack.aws, DEPLOYMENT_CIDR, {}, vpc)
    assert f"10.255.0.0/16 (the deployment) overlaps 10.255.8.0/24 ({vpc})" in err.value.message
    assert "10.0.0.0/16 (the deployment)" not in err.value.message
    assert check_peer(stack.aws, "10.254.0.0/16", {}, vpc) == ["10.0.0.0/16", "10.255.8.0/24"]
    assert calls.mutating() == []


def test_unpeering_the_second_of_three_removes_exactly_its_parts(stack: Stack, ec2: Any) -> None:
    clients = {cidr: client_vpc(ec2, cidr) for cidr in ("10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16")}
    set_peers(stack, {vpc: {} for vpc, _ in clients.values()})
    stack.up()
    before = active_peerings(ec2)
    gone_vpc, gone_tables = clients["10.1.0.0/16"]
    set_peers(stack, {vpc: {} for cidr, (vpc, _) in clients.items() if cidr != "10.1.0.0/16"})
    planned = stack.plan().changes
    assert {c.action for c in planned} == {"delete"}
    assert f"peering.pcx:{gone_vpc}" in {c.address for c in planned}
    stack.up()

    after = active_peerings(ec2)
    assert set(after) == set(before) - {gone_vpc}
    for table in private_tables(stack):
        assert routes_to(ec2, table, "10.1.0.0/16") is None
    for table in gone_tables:
        assert routes_to(ec2, table, DEPLOYMENT_CIDR) is None
    assert not admits(ec2, node_sg(stack), "10.1.0.0/16")
    for cidr in ("10.0.0.0/16", "10.2.0.0/16"):
        vpc, tables = clients[cidr]
        assert admits(ec2, node_sg(stack), cidr)
        for table in private_tables(stack):
            assert routes_to(ec2, table, cidr) == after[vpc]
        for table in tables:
            assert routes_to(ec2, table, DEPLOYMENT_CIDR) == after[vpc]
    assert not any(gone_vpc in address for address in stack.state().resources)
    assert set(stack.outputs("peering")["peerings"]) == set(after)


def test_a_route_deleted_by_hand_is_planned_and_restored(stack: Stack, ec2: Any, calls: CallLog) -> None:
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    set_peers(stack, {vpc: {}})
    stack.up()
    pcx = active_peerings(ec2)[vpc]
    ec2.delete_route(RouteTableId=tables[0], DestinationCidrBlock=DEPLOYMENT_CIDR)
    planned = stack.plan().changes
    assert [(c.action, c.address) for c in planned] == \
        [("create", f"peering.route:{tables[0]}:{DEPLOYMENT_CIDR}")]
    stack.up()
    assert routes_to(ec2, tables[0], DEPLOYMENT_CIDR) == pcx
    calls.clear()
    stack.up()
    assert calls.mutating() == []


def test_a_client_table_routing_the_deployment_elsewhere_is_refused(stack: Stack, ec2: Any,
                                                                    calls: CallLog) -> None:
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.create_route(RouteTableId=tables[1], DestinationCidrBlock=DEPLOYMENT_CIDR, GatewayId=igw)
    set_peers(stack, {vpc: {}})
    calls.clear()
    with pytest.raises(InputError) as err:
        stack.up()
    assert tables[1] in err.value.message and igw in err.value.message
    assert calls.mutating() == []
    assert active_peerings(ec2) == {}


def test_given_route_tables_only(stack: Stack, ec2: Any) -> None:
    vpc, tables = client_vpc(ec2, "10.0.0.0/16")
    set_peers(stack, {vpc: {"route_table_ids": [tables[0]]}})
    stack.up()
    assert routes_to(ec2, tables[0], DEPLOYMENT_CIDR) == active_peerings(ec2)[vpc]
    assert routes_to(ec2, tables[1], DEPLOYMENT_CIDR) is None


def test_a_peering_deleted_on_the_client_side_shows_as_broken(stack: Stack, ec2: Any) -> None:
    vpc, _ = client_vpc(ec2, "10.0.0.0/16")
    set_peers(stack, {vpc: {}})
    stack.up()
    ec2.delete_vpc_peering_connection(VpcPeeringConnectionId=active_peerings(ec2)[vpc])
    planned = stack.plan()
    assert any(c.action == "update" and "peering deleted" in c.detail and "unpeer" in c.detail
               for c in planned.changes)
    assert any(row.address == f"peering.pcx:{vpc}" and row.live == "deleted" for row in planned.observed)
    with pytest.raises(ExaprovError, match="is deleted"):
        stack.up()
    stack.up()  # `exaprov peer` again: a new peering, the routes re-pointed
    pcx = active_peerings(ec2)[vpc]
    for table in private_tables(stack):
        assert routes_to(ec2, table, "10.0.0.0/16") == pcx


def test_destroy_removes_the_peerings_and_leaves_client_vpcs_otherwise_alone(stack: Stack,
                                                                           ec2: Any) -> None:
    clients = [client_vpc(ec2, cidr) for cidr in ("10.0.0.0/16", "10.1.0.0/16")]
    set_peers(stack, {vpc: {} for vpc, _ in clients})
    stack.up()
    stack.destroy()
    assert active_peerings(ec2) == {}
    for vpc, tables in clients:
        live = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
        assert sorted(t["RouteTableId"] for t in live) == tables
        for table in tables:
            assert routes_to(ec2, table, DEPLOYMENT_CIDR) is None
        assert routes_to(ec2, tables[0], "0.0.0.0/0") or routes_to(ec2, tables[1], "0.0.0.0/0")
    assert not ec2.describe_vpcs(Filters=[{"Name": "tag:exaprov:deployment", "Values": ["example"]}])["Vpcs"]


def test_a_client_vpc_in_another_region_is_peered_and_accepted_there(stack: Stack, ec2: Any) -> None:
    there = boto3.client("ec2", region_name=OTHER_REGION)
    vpc, tables = client_vpc(there, "10.0.0.0/16")
    check_peer(stack.aws, DEPLOYMENT_CIDR, {}, vpc, region=OTHER_REGION)
    set_peers(stack, {vpc: {"region": OTHER_REGION}})
    stack.up()
    pcx = active_peerings(ec2)[vpc]
    assert active_peerings(there)[vpc] == pcx
    for table in tables:
        assert routes_to(there, table, DEPLOYMENT_CIDR) == pcx
    set_peers(stack, {})
    stack.up()
    assert active_peerings(ec2) == {}
    for table in tables:
        assert routes_to(there, table, DEPLOYMENT_CIDR) is None
