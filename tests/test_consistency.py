"""Eventual consistency: every "not yet" AWS answers is waited out within a
bound scaled by EXAPROV_TIME_SCALE; past the bound the error names the resource and what to
do, and the state still matches AWS, so the next run finishes.

Real AWS behaviour stood for: EC2 does not know a new ID everywhere at once (calls naming it
answer `Invalid*.NotFound`; describes filtered by it leave it out); a new IAM role cannot be
assumed by EKS for a few seconds (CreateCluster/CreateNodegroup answer
InvalidParameterException), nor a new user be named in a bucket policy (MalformedPolicy); the
ENIs of deleted NAT gateways, load balancers and nodes linger for minutes, so deleting what
they sit in answers `DependencyViolation`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest

from exaprov.errors import AwsError, WaitTimeout
from exaprov.steps.backend_storage import BACKEND_USER, BUCKET
from exaprov.steps.cluster import CLUSTER
from exaprov.steps.cluster_support import KMS, LOGS
from exaprov.steps.iam import IAM
from exaprov.steps.network import NAT, NETWORK
from exaprov.steps.security_groups import SECURITY_GROUPS
from tests.conftest import cli
from tests.faults import NOT_LISTED, Faults, faults_fixture, inventory, recorded  # noqa: F401
from tests.harness import Stack

STATE = "state/example.json"
# Enough for a few calls on a busy machine within every "not yet" bound (2 min -> 1.2 s).
CLEARING_SCALE = "0.01"


def resources() -> dict[str, dict[str, str]]:
    return json.loads(Path(STATE).read_text())["resources"]


def test_new_ids_are_waited_for_across_the_full_stack(
        workdir: Path, aws: None, faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call naming an ID made in this run meets NotFound twice (or does not list it),
    and EKS cannot assume the new roles twice: `up` of the full example config still finishes,
    with nothing created twice."""
    monkeypatch.setenv("EXAPROV_TIME_SCALE", CLEARING_SCALE)
    assert cli("init", "--example", "full", "--force").exit_code == 0
    faults.not_found_after_create(times=2)
    faults.role_not_assumable(times=2)
    faults.principal_not_known(times=2)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    met = {(r.operation, r.code) for r in faults.refused}
    assert {("CreateSubnet", "InvalidVpcID.NotFound"),
            ("CreateRouteTable", "InvalidVpcID.NotFound"),
            ("CreateSecurityGroup", "InvalidVpcID.NotFound"),
            ("ModifyVpcAttribute", "InvalidVpcID.NotFound"),
            ("AttachInternetGateway", "InvalidInternetGatewayID.NotFound"),
            ("AssociateRouteTable", "InvalidSubnetID.NotFound"),
            ("CreateRoute", "InvalidNatGatewayID.NotFound"),
            ("CreateNatGateway", "InvalidAllocationID.NotFound"),
            ("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound"),
            ("CreateCluster", "InvalidParameterException"),
            ("CreateNodegroup", "InvalidParameterException"),
            ("PutBucketPolicy", "MalformedPolicy")} <= met, met
    held = inventory()
    assert held == recorded(STATE)
    assert [len(held[k]) for k in ("ec2:vpc", "ec2:subnet", "ec2:natgateway", "eks:cluster")] \
        == [1, 9, 1, 1]

    faults.clear()
    assert cli("destroy", "--yes", "--disable-deletion-protection").exit_code == 0
    assert inventory() == {}


# The steps each never-clearing case needs (the Stack harness runs them without the CLI).
EC2_STEPS = [NETWORK, NAT, SECURITY_GROUPS]
CLUSTER_STEPS = [NETWORK, SECURITY_GROUPS, IAM, KMS, LOGS, CLUSTER]


@pytest.mark.parametrize(("operation", "code"), [
    ("CreateSubnet", "InvalidVpcID.NotFound"),
    ("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound"),
    ("CreateNatGateway", "InvalidSubnetID.NotFound"),
])
def test_an_id_that_never_becomes_known_is_reported_and_the_next_up_finishes(
        tmp_path: Path, aws: None, faults: Faults, operation: str, code: str) -> None:
    """Past the bound: the step fails naming the operation, the code and the ID, says what to
    do; every resource made so far is recorded (no orphan, no dangling record)."""
    stack = Stack(tmp_path, EC2_STEPS)
    faults.not_found_after_create(times=None, operations={operation})
    with pytest.raises(AwsError) as raised:
        stack.up()
    error = raised.value
    assert (error.operation, error.code) == (operation, code)
    unknown = re.search(r"The ID '([a-z]+-[0-9a-f]+)' does not exist", error.message)
    assert unknown and "still failing after" in error.message
    assert any(r.get("id") == unknown.group(1) for r in stack.state().resources.values())
    assert error.hint and error.hint.startswith("EC2 does not know this ID yet")
    assert inventory() == recorded(stack.store.path)

    faults.clear()
    stack.up()
    held = inventory()
    assert held == recorded(stack.store.path) and len(held["ec2:subnet"]) == 9


def test_a_route_table_never_listed_is_reported_and_the_next_up_finishes(
        tmp_path: Path, aws: None, faults: Faults) -> None:
    """The NAT step reads the private route table the network step just made: not listed
    means not listed yet, waited for within the bound, then reported by name."""
    stack = Stack(tmp_path, [NETWORK, NAT])
    faults.not_found_after_create(times=None, operations={"DescribeRouteTables"})
    with pytest.raises(WaitTimeout) as raised:
        stack.up()
    table = stack.state().resources["network.private-rt"]["id"]
    assert f"private route table {table} to be listed still not listed" in raised.value.message
    assert raised.value.hint == "run the command again to keep waiting"
    assert inventory() == recorded(stack.store.path)

    faults.clear()
    stack.up()
    assert inventory() == recorded(stack.store.path)
    assert len(inventory()["ec2:natgateway"]) == 1


def test_a_role_eks_never_can_assume_is_reported_and_the_next_up_finishes(
        tmp_path: Path, aws: None, faults: Faults) -> None:
    """IAM propagation past the window: the cluster step names the role and what to check; no cluster
    exists and only its intent is recorded."""
    stack = Stack(tmp_path, CLUSTER_STEPS)
    faults.role_not_assumable(times=None)
    with pytest.raises(AwsError) as raised:
        stack.up()
    role = stack.state().resources["iam.cluster-role"]["id"]
    assert (raised.value.step, raised.value.operation) == ("cluster", "CreateCluster")
    assert f"check that the role {role} exists and trusts eks.amazonaws.com" in raised.value.message
    assert stack.state().resources["cluster.cluster"]["status"] == "intent"
    assert "eks:cluster" not in inventory() and inventory() == recorded(stack.store.path)

    faults.clear()
    stack.up()
    assert inventory() == recorded(stack.store.path)
    assert len(inventory()["eks:cluster"]) == 1


LINGERING = ("DeleteSecurityGroup", "DeleteSubnet", "DeleteVpc", "DetachInternetGateway")


def test_lingering_dependencies_are_waited_out_across_the_full_stack(
        workdir: Path, aws: None, faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every delete that ENIs can block answers DependencyViolation three times first."""
    monkeypatch.setenv("EXAPROV_TIME_SCALE", CLEARING_SCALE)
    assert cli("init", "--example", "full", "--force").exit_code == 0
    assert cli("up", "--yes").exit_code == 0
    for operation in LINGERING:
        faults.refuse(operation, "DependencyViolation", times=3)
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    assert faults.codes() == {"DependencyViolation": 3 * len(LINGERING)}
    assert {r.operation for r in faults.refused} == set(LINGERING)
    assert inventory() == {}


@pytest.mark.parametrize(("operation", "what"), [
    ("DeleteSecurityGroup", "delete security group"), ("DeleteSubnet", "delete subnet"),
    ("DetachInternetGateway", "detach")])
def test_a_dependency_that_never_clears_is_reported_and_the_next_destroy_finishes(
        tmp_path: Path, aws: None, faults: Faults, operation: str, what: str) -> None:
    """DependencyViolation past the bound: destroy stops naming the operation and the blocked resource, with
    what to do; what is left is exactly what the state records."""
    stack = Stack(tmp_path, EC2_STEPS)
    stack.up()
    faults.refuse(operation, "DependencyViolation")
    with pytest.raises(AwsError) as raised:
        stack.destroy()
    error = raised.value
    assert (error.operation, error.code) == (operation, "DependencyViolation")
    blocked = re.search(rf"still failing after .* \({what} ((?:sg|subnet|igw)-[0-9a-f]+)\)",
                        error.message)
    assert blocked, error.message
    assert any(r.get("id") == blocked.group(1) for r in stack.state().resources.values())
    assert error.hint and error.hint.startswith("something else still uses it")
    assert inventory() == recorded(stack.store.path) != {}

    faults.clear()
    stack.destroy()
    assert inventory() == {} and stack.state().resources == {}


def test_a_principal_s3_never_accepts_is_reported_and_the_next_up_finishes(
        tmp_path: Path, aws: None, faults: Faults) -> None:
    """IAM propagation past the bound, for S3: the bucket step names the bucket policy and the
    user; the bucket and the user stay recorded; the next `up` puts the policy."""
    stack = Stack(tmp_path, [BACKEND_USER, BUCKET])
    faults.principal_not_known(times=None)
    with pytest.raises(AwsError) as raised:
        stack.up()
    assert (raised.value.step, raised.value.operation, raised.value.code) == (
        "bucket", "PutBucketPolicy", "MalformedPolicy")
    assert "(bucket policy); the backend IAM user is not yet known to S3" in raised.value.message
    records = stack.state().resources
    assert records["bucket.bucket"]["status"] == "created"
    assert inventory() == recorded(stack.store.path)

    faults.clear()
    stack.up()
    bucket = stack.state().resources["bucket.bucket"]["id"]
    user = stack.state().resources["backend-user.user"]["id"]
    policy = boto3.client("s3").get_bucket_policy(Bucket=bucket)["Policy"]
    assert user in policy
    assert inventory() == recorded(stack.store.path)
