"""Ownership: exaprov touches only what is the deployment's (exaprov/ownership.py).

A neighbour in the account (tests/neighbour.py: a second deployment and untagged resources
whose names collide with ours) is exactly as it was after every command; a foreign resource
holding a name the deployment needs stops `up` before its first change (exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov.aws import tag_dict
from exaprov.ownership import is_ours
from exaprov.state import LocalStateStore
from tests.census import census
from tests.census import difference as difference_of
from tests.conftest import REGION, CallLog, cli, write_config
from tests.crashing import CONFIG, prepare_account_and_state, run_ok
from tests.neighbour import difference, foreign_census


def test_up_status_destroy_leave_the_neighbour_exactly_as_it_was(workdir: Path, aws: None) -> None:
    prepare_account_and_state(count=False)
    before = foreign_census(CONFIG)
    assert any(k.startswith("nat ") for k in before) and any(k.startswith("rtb ") for k in before)
    run_ok("up", "--yes")
    assert foreign_census(CONFIG) == before, difference(before, foreign_census(CONFIG))
    run_ok("status")
    run_ok("up", "--yes")
    run_ok("destroy", "--yes", "--disable-deletion-protection")
    assert foreign_census(CONFIG) == before, difference(before, foreign_census(CONFIG))


def test_an_endpoint_that_ignores_tag_filters_does_not_make_the_neighbours_nat_ours(
        workdir: Path, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto alone answers DescribeNatGateways without its tag filters (the sandbox once did):
    a lookup by tag must read the tags back, or the second deployment adopts, retags and
    later deletes the first one's NAT gateway."""
    from moto.ec2.models.nat_gateways import NatGatewayBackend

    monkeypatch.setattr(NatGatewayBackend, "describe_nat_gateways",
                        NatGatewayBackend._exaprov_unfiltered)
    prepare_account_and_state(count=False)
    before = foreign_census(CONFIG)
    run_ok("up", "--yes")
    ec2 = boto3.client("ec2", region_name=REGION)
    nats = ec2.describe_nat_gateways()["NatGateways"]
    assert len([n for n in nats if tag_dict(n.get("Tags")).get("exaprov:deployment") == "example"]) == 1
    assert foreign_census(CONFIG) == before, difference(before, foreign_census(CONFIG))
    run_ok("destroy", "--yes", "--disable-deletion-protection")
    assert foreign_census(CONFIG) == before, difference(before, foreign_census(CONFIG))


# -- name clashes: refused before the first change --------------------------------------------

VPC_NAME = "exafunction-vpc-example"
CLUSTER = "exafunction-cluster-example"
BACKEND = "exafunction-mrbe-example"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "eks.amazonaws.com"}}]})


def _subnets() -> list[str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.70.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    return [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.70.{i}.0/24", AvailabilityZone=zones[i])[
        "Subnet"]["SubnetId"] for i in range(2)]


def _db_subnet_group(name: str = VPC_NAME.lower()) -> None:
    boto3.client("rds", region_name=REGION).create_db_subnet_group(
        DBSubnetGroupName=name, DBSubnetGroupDescription="hand-made", SubnetIds=_subnets())


def _role() -> None:
    boto3.client("iam", region_name=REGION).create_role(
        RoleName=f"{CLUSTER}-node", Path="/team/", AssumeRolePolicyDocument=TRUST)


def _log_group() -> None:
    boto3.client("logs", region_name=REGION).create_log_group(
        logGroupName=f"/aws/eks/{CLUSTER}/cluster", tags={"exaprov:deployment": "other"})


def _kms_alias() -> None:
    kms = boto3.client("kms", region_name=REGION)
    kms.create_alias(AliasName=f"alias/eks/{CLUSTER}",
                     TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])


def _cluster() -> None:
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="team-eks", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    boto3.client("eks", region_name=REGION).create_cluster(
        name=CLUSTER, roleArn=role, resourcesVpcConfig={"subnetIds": _subnets()},
        accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"})


def _database() -> None:
    boto3.client("rds", region_name=REGION).create_db_instance(
        DBInstanceIdentifier=f"{BACKEND}-rds", Engine="postgres", DBInstanceClass="db.t4g.micro",
        MasterUsername="team", MasterUserPassword="not-a-secret-1", AllocatedStorage=20)


def _launch_template() -> None:
    boto3.client("ec2", region_name=REGION).create_launch_template(
        LaunchTemplateName=f"{CLUSTER}-default", LaunchTemplateData={})


def _backend_user() -> None:
    boto3.client("iam", region_name=REGION).create_user(UserName=f"{BACKEND}-user")


CLASHES = [
    (_db_subnet_group, f"RDS DB subnet group {VPC_NAME.lower()}", "network.vpc_name"),
    (_role, f"IAM role {CLUSTER}-node", "cluster.cluster_name"),
    (_log_group, f"CloudWatch log group /aws/eks/{CLUSTER}/cluster", "exaprov deployment 'other'"),
    (_kms_alias, f"KMS alias alias/eks/{CLUSTER}", "cluster.cluster_name"),
    (_cluster, f"EKS cluster {CLUSTER}", "cluster.cluster_name"),
    (_database, f"RDS instance {BACKEND}-rds", "module_repo_backend.exadeploy_id"),
    (_launch_template, f"EC2 launch template {CLUSTER}-default", "cluster.cluster_name"),
    (_backend_user, f"IAM user {BACKEND}-user", "module_repo_backend.exadeploy_id"),
]


@pytest.mark.parametrize(("make", "named", "field"), CLASHES, ids=[c[0].__name__ for c in CLASHES])
def test_a_name_clash_stops_up_before_any_change(workdir: Path, aws: None, calls: CallLog,
                                                  make: Callable[[], None], named: str,
                                                  field: str) -> None:
    make()
    before = census()
    calls.clear()
    for command in (("up", "--yes"), ("plan",)):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert named in result.output and field in result.output, result.output
        assert "nothing was changed" in result.output
    assert calls.mutating() == []
    assert census() == before
    assert not Path("state/example.json").exists()


def test_a_second_deployment_with_the_same_vpc_name_is_refused_and_its_destroy_spares_the_first(
        workdir: Path, aws: None, calls: CallLog) -> None:
    """Two configs naming the same VPC: the DB subnet group (named after vpc_name) is the
    first deployment's, so the second `up` is a clash before any change, and the second's
    `destroy` leaves the first whole."""
    write_config({"name": "first", "module_repo_backend": None,
                  "network": {"vpc_name": "shared-vpc"}})
    run_ok("up", "--yes")
    first = census()
    write_config({"name": "second", "module_repo_backend": None,
                  "network": {"vpc_name": "shared-vpc", "vpc_cidr_block": "10.1.0.0/16"}})
    calls.clear()
    result = cli("up", "--yes")
    assert result.exit_code == 2 and "RDS DB subnet group shared-vpc" in result.output
    assert "exaprov deployment 'first'" in result.output
    assert calls.mutating() == []
    run_ok("destroy", "--yes", "--disable-deletion-protection")
    assert census() == first, difference_of(first, census())


def test_destroy_of_a_deployment_never_built_leaves_a_hand_made_group_of_its_name(
        workdir: Path, aws: None, calls: CallLog) -> None:
    _db_subnet_group()
    before = census()
    calls.clear()
    run_ok("destroy", "--yes", "--disable-deletion-protection")
    assert calls.mutating() == []
    assert census() == before


# -- records of user-named things ------------------------------------------------------------

GROUP = {"node_instance_type": "m5.large", "min_size": 0, "max_size": 1}


def test_a_node_group_named_like_an_exaprov_record_keeps_its_own_record(
        workdir: Path, aws: None, calls: CallLog) -> None:
    """A group named `lt-default` once overwrote the record of group `default`'s launch
    template (and `asg-tags` the autoscaler tags' record): drift on every run."""
    write_config({"name": "example", "module_repo_backend": None,
                  "cluster": {"runner_pools": [], "additional_node_groups": {
                      "lt-default": GROUP, "asg-tags": GROUP}}})
    run_ok("up", "--yes")
    resources = json.loads(Path("state/example.json").read_text())["resources"]
    assert resources["node-groups.lt:default"]["kind"] == "ec2:launch-template"
    assert resources["node-groups.group:lt-default"]["kind"] == "eks:nodegroup"
    assert resources["node-groups.lt:lt-default"]["kind"] == "ec2:launch-template"
    assert resources["node-groups.group:asg-tags"]["kind"] == "eks:nodegroup"
    serial = json.loads(Path("state/example.json").read_text())["serial"]
    calls.clear()
    run_ok("up", "--yes")
    assert calls.mutating() == []
    assert json.loads(Path("state/example.json").read_text())["serial"] == serial  # no drift
    status = json.loads(cli("status", "--output", "json").stdout)
    assert status["in_sync"] is True


def test_an_old_state_s_node_group_records_are_migrated_on_load(
        workdir: Path, aws: None, calls: CallLog) -> None:
    """A state written before the namespaces: `default` and `lt-default` are renamed by
    kind; the next `up` finds everything and changes nothing."""
    write_config({"name": "example", "module_repo_backend": None,
                  "cluster": {"runner_pools": []}})
    run_ok("up", "--yes")
    path = Path("state/example.json")
    data = json.loads(path.read_text())
    old = {}
    for address, record in data["resources"].items():
        if address.startswith("node-groups.group:"):
            address = "node-groups." + address.removeprefix("node-groups.group:")
        elif address.startswith("node-groups.lt:"):
            address = "node-groups.lt-" + address.removeprefix("node-groups.lt:")
        old[address] = record
    data["resources"] = old
    path.write_text(json.dumps(data))
    assert "node-groups.default" in old and "node-groups.lt-default" in old
    calls.clear()
    run_ok("up", "--yes")
    assert calls.mutating() == []
    resources = LocalStateStore(path).read().resources  # as exaprov reads it
    assert "node-groups.default" not in resources and "node-groups.lt-default" not in resources
    assert resources["node-groups.group:default"]["kind"] == "eks:nodegroup"
    assert resources["node-groups.lt:default"]["kind"] == "ec2:launch-template"
    status = json.loads(cli("status", "--output", "json").stdout)
    assert status["in_sync"] is True
    assert "node-groups.group:default" in {r["address"] for r in status["resources"]}


# -- the rule itself ---------------------------------------------------------------------------

@pytest.mark.parametrize(("tags", "recorded_id", "ours"), [
    ([{"Key": "exaprov:deployment", "Value": "example"}], False, True),  # EC2, RDS, IAM
    ({"exaprov:deployment": "example"}, False, True),  # EKS, logs
    ([{"TagKey": "exaprov:deployment", "TagValue": "example"}], False, True),  # KMS
    ([{"Key": "exaprov:deployment", "Value": "other"}], False, False),
    ([{"Key": "exaprov:deployment", "Value": "other"}], True, False),  # recorded, but theirs
    ([{"Key": "Name", "Value": "example"}], False, False),  # a name is no proof
    ([], True, True),  # its unique ID recorded, its tags stripped by hand
    (None, False, False),
])
def test_the_rule(tags: Any, recorded_id: bool, ours: bool) -> None:
    assert is_ours("example", tags, recorded_id=recorded_id) is ours


def test_a_recorded_id_carrying_another_deployments_tag_is_not_adopted(
        workdir: Path, aws: None, calls: CallLog) -> None:
    """The state records a VPC ID that now carries another deployment's tag (a state copied
    from elsewhere, a retag by hand): it is not this deployment's, never changed or deleted."""
    from exaprov.steps import NETWORK
    from tests.harness import Stack

    ec2 = boto3.client("ec2", region_name=REGION)
    theirs = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=[{
        "ResourceType": "vpc", "Tags": [{"Key": "exaprov:deployment", "Value": "other"},
                                        {"Key": "exaprov:component", "Value": "network"},
                                        {"Key": "exaprov:resource", "Value": "vpc"}]}])["Vpc"]["VpcId"]
    stack = Stack(workdir, [NETWORK], {"name": "example", "module_repo_backend": None})
    state = stack.state()
    state.resources["network.vpc"] = {"kind": "ec2:vpc", "id": theirs, "status": "created"}
    stack.store.write(state)
    stack.up()
    assert stack.state().resources["network.vpc"]["id"] != theirs
    tags = tag_dict(ec2.describe_vpcs(VpcIds=[theirs])["Vpcs"][0]["Tags"])
    assert tags["exaprov:deployment"] == "other"
    stack.destroy()
    assert ec2.describe_vpcs(VpcIds=[theirs])["Vpcs"][0]["VpcId"] == theirs
