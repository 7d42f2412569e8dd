"""The emulator answers EC2 Describe filters as AWS does: one case per filtered call exaprov sends.

Every `tag:`, `tag-key` and `vpc-id` filter exaprov puts on a Describe call (grep exaprov for
`Filters=` / `Filter=`) is asked of an account that holds two of everything: one carrying the
filtered tag or in the filtered VPC, one not. The answer must hold exactly the first. moto
ignores the tag filters of DescribeNatGateways and every filter of
DescribeVpcPeeringConnections; the emulator applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from exaprov import emulator

REGION = "us-west-1"
DEPLOYMENT = "mine"
CLUSTER = "mine-cluster"


def _tags(kind: str, **tags: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


OURS = {"exaprov:deployment": DEPLOYMENT, "exaprov:component": "peering",
        f"kubernetes.io/cluster/{CLUSTER}": "owned", "elbv2.k8s.aws/cluster": CLUSTER}
THEIRS = {"exaprov:deployment": "other", "exaprov:component": "peering",
          f"kubernetes.io/cluster/{CLUSTER}-2": "owned", "elbv2.k8s.aws/cluster": CLUSTER + "-2"}


@pytest.fixture(scope="module")
def account() -> Iterator[dict[str, Any]]:
    """Two of each EC2 thing exaprov describes: `mine` (tagged OURS, in VPC `mine`) and
    `theirs` (tagged THEIRS, in VPC `theirs`)."""
    emulator.install_extensions()
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        ids: dict[str, dict[str, str]] = {}
        for side, tags, cidr in (("mine", OURS, "10.0"), ("theirs", THEIRS, "10.1")):
            t = {**tags, "Name": "same-name"}  # the same Name on both: never what is filtered
            vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16",
                                 TagSpecifications=_tags("vpc", **t))["Vpc"]["VpcId"]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{cidr}.1.0/24",
                                       TagSpecifications=_tags("subnet", **t))["Subnet"]["SubnetId"]
            igw = ec2.create_internet_gateway(TagSpecifications=_tags("internet-gateway", **t))[
                "InternetGateway"]["InternetGatewayId"]
            rtb = ec2.create_route_table(VpcId=vpc, TagSpecifications=_tags("route-table", **t))[
                "RouteTable"]["RouteTableId"]
            eip = ec2.allocate_address(Domain="vpc", TagSpecifications=_tags("elastic-ip", **t))[
                "AllocationId"]
            nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip,
                                         TagSpecifications=_tags("natgateway", **t))[
                "NatGateway"]["NatGatewayId"]
            sg = ec2.create_security_group(GroupName="same-name", Description="d", VpcId=vpc,
                                           TagSpecifications=_tags("security-group", **t))["GroupId"]
            ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                 "UserIdGroupPairs": [{"GroupId": sg}]}])
            lt = ec2.create_launch_template(LaunchTemplateName=f"lt-{side}", LaunchTemplateData={},
                                            TagSpecifications=_tags("launch-template", **t))[
                "LaunchTemplate"]["LaunchTemplateId"]
            eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg])[
                "NetworkInterface"]["NetworkInterfaceId"]
            ids[side] = {"vpc": vpc, "subnet": subnet, "igw": igw, "rtb": rtb, "eip": eip,
                         "nat": nat, "sg": sg, "lt": lt, "eni": eni}
        client = ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
        for side, tags in (("mine", OURS), ("theirs", THEIRS)):
            ids[side]["pcx"] = ec2.create_vpc_peering_connection(
                VpcId=ids[side]["vpc"], PeerVpcId=client,
                TagSpecifications=_tags("vpc-peering-connection", **tags))[
                "VpcPeeringConnection"]["VpcPeeringConnectionId"]
        yield {"ec2": ec2, "ids": ids}


def by_tag(name: str = "exaprov:deployment", value: str = DEPLOYMENT) -> Callable[[Any], Any]:
    return lambda ids: [{"Name": f"tag:{name}", "Values": [value]}]


# (operation, filter parameter, result key, ID key, what mine is, the filters)
CASES: list[tuple[str, str, str, str, str, Callable[[dict[str, str]], Any]]] = [
    # exaprov/steps/ec2_lookup.py: the shared describe by the deployment tag, per type
    ("describe_vpcs", "Filters", "Vpcs", "VpcId", "vpc", by_tag()),
    ("describe_subnets", "Filters", "Subnets", "SubnetId", "subnet", by_tag()),
    ("describe_internet_gateways", "Filters", "InternetGateways", "InternetGatewayId", "igw",
     by_tag()),
    ("describe_route_tables", "Filters", "RouteTables", "RouteTableId", "rtb", by_tag()),
    ("describe_addresses", "Filters", "Addresses", "AllocationId", "eip", by_tag()),
    ("describe_nat_gateways", "Filter", "NatGateways", "NatGatewayId", "nat", by_tag()),
    ("describe_security_groups", "Filters", "SecurityGroups", "GroupId", "sg", by_tag()),
    ("describe_launch_templates", "Filters", "LaunchTemplates", "LaunchTemplateId", "lt", by_tag()),
    ("describe_vpc_peering_connections", "Filters", "VpcPeeringConnections",
     "VpcPeeringConnectionId", "pcx", by_tag()),
    # exaprov/steps/peering.py our_peerings, exaprov/recover.py find_peers: deployment + component
    ("describe_vpc_peering_connections", "Filters", "VpcPeeringConnections",
     "VpcPeeringConnectionId", "pcx",
     lambda ids: by_tag()(ids) + by_tag("exaprov:component", "peering")(ids)),
    # exaprov/steps/peering.py describe_pcx and the recorded-ID lookups: by ID
    ("describe_vpc_peering_connections", "Filters", "VpcPeeringConnections",
     "VpcPeeringConnectionId", "pcx",
     lambda ids: [{"Name": "vpc-peering-connection-id", "Values": [ids["pcx"]]}]),
    # exaprov/steps/kubernetes_leftovers.py: load balancer groups of the cluster, in its VPC
    ("describe_security_groups", "Filters", "SecurityGroups", "GroupId", "sg",
     lambda ids: [{"Name": "vpc-id", "Values": [ids["vpc"]]},
                  {"Name": "tag-key", "Values": [f"kubernetes.io/cluster/{CLUSTER}"]}]),
    ("describe_security_groups", "Filters", "SecurityGroups", "GroupId", "sg",
     lambda ids: [{"Name": "vpc-id", "Values": [ids["vpc"]]},
                  {"Name": "tag:elbv2.k8s.aws/cluster", "Values": [CLUSTER]}]),
    ("describe_security_groups", "Filters", "SecurityGroups", "GroupId", "sg",
     lambda ids: [{"Name": "vpc-id", "Values": [ids["vpc"]]},
                  {"Name": "ip-permission.group-id", "Values": [ids["sg"]]}]),
    # exaprov/steps/security_groups.py find_group_by_name, exaprov/ownership.py pre-flight
    ("describe_security_groups", "Filters", "SecurityGroups", "GroupId", "sg",
     lambda ids: [{"Name": "vpc-id", "Values": [ids["vpc"]]},
                  {"Name": "group-name", "Values": ["same-name"]}]),
    # exaprov/steps/peering.py describe_tables, exaprov/recover.py: every table of a VPC
    ("describe_route_tables", "Filters", "RouteTables", "RouteTableId", "rtb",
     lambda ids: [{"Name": "vpc-id", "Values": [ids["vpc"]]},
                  {"Name": "association.main", "Values": ["false"]}]),
    # exaprov/steps/security_groups.py delete_detached_interfaces
    ("describe_network_interfaces", "Filters", "NetworkInterfaces", "NetworkInterfaceId", "eni",
     lambda ids: [{"Name": "group-id", "Values": [ids["sg"]]},
                  {"Name": "vpc-id", "Values": [ids["vpc"]]}]),
]


@pytest.mark.parametrize(("operation", "param", "key", "id_key", "mine", "filters"), CASES,
                         ids=[f"{c[0]}[{i}]" for i, c in enumerate(CASES)])
def test_filter_answers_only_what_matches(account: dict[str, Any], operation: str, param: str,
                                          key: str, id_key: str, mine: str,
                                          filters: Callable[[dict[str, str]], Any]) -> None:
    ids = account["ids"]
    answer = getattr(account["ec2"], operation)(**{param: filters(ids["mine"])})[key]
    assert [item[id_key] for item in answer] == [ids["mine"][mine]]


def test_vpc_id_filter_of_route_tables_includes_the_main_table(account: dict[str, Any]) -> None:
    """The one case above narrows to non-main tables; unnarrowed, a VPC's tables are its own."""
    ec2, ids = account["ec2"], account["ids"]
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [ids["mine"]["vpc"]]}])["RouteTables"]
    assert {t["VpcId"] for t in tables} == {ids["mine"]["vpc"]}
    assert ids["mine"]["rtb"] in {t["RouteTableId"] for t in tables}
    assert len(tables) == 2  # ours and the VPC's main table
