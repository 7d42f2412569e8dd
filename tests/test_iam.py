"""The `iam` step against moto: the two roles it owns, idempotence, drift, adoption, destroy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov.aws import tag_dict
from exaprov.errors import InputError
from exaprov.steps.iam import DENY_LOG_GROUP_POLICY, IAM, normalise_policy, partition
from tests.conftest import REGION, CallLog
from tests.harness import Stack

CLUSTER = "exafunction-cluster-example"
POLICY = "arn:aws:iam::aws:policy/"
EXPECTED = {
    f"{CLUSTER}-cluster": ("eks.amazonaws.com", ["sts:AssumeRole", "sts:TagSession"],
                           {POLICY + "AmazonEKSClusterPolicy", POLICY + "AmazonEKSVPCResourceController"}),
    f"{CLUSTER}-node": ("ec2.amazonaws.com", ["sts:AssumeRole"],
                        {POLICY + "AmazonEKSWorkerNodePolicy", POLICY + "AmazonEKS_CNI_Policy",
                         POLICY + "AmazonEC2ContainerRegistryReadOnly"}),
}


@pytest.fixture
def iam(aws: None) -> Any:
    return boto3.client("iam", region_name=REGION)


def attached(iam: Any, name: str) -> set[str]:
    return {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}


def role_names(iam: Any) -> list[str]:
    return sorted(r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(CLUSTER))


def test_up_creates_both_roles(tmp_path: Path, iam: Any, calls: CallLog) -> None:
    stack = Stack(tmp_path, [IAM])
    plan = stack.plan()
    assert sorted((c.action, c.address) for c in plan.changes) == [
        ("create", "iam.cluster-role"), ("create", "iam.node-role")]
    assert calls.mutating() == []
    stack.up()

    assert role_names(iam) == sorted(EXPECTED)
    for name, (service, actions, policies) in EXPECTED.items():
        role = iam.get_role(RoleName=name)["Role"]
        assert role["AssumeRolePolicyDocument"] == {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": actions}]}
        assert attached(iam, name) == policies
        tags = tag_dict(role["Tags"])
        assert tags["exaprov:deployment"] == "example"
        assert tags["exaprov:component"] == "iam"
        assert tags["owner"] == "exafunction"
        assert tags["Name"] == name

    # As the eks module: EKS may not create log groups (the logs step makes the cluster's).
    deny = iam.get_role_policy(RoleName=f"{CLUSTER}-cluster", PolicyName=DENY_LOG_GROUP_POLICY)
    assert deny["PolicyDocument"]["Statement"] == [{
        "Sid": "DenyCreateLogGroup", "Effect": "Deny", "Action": ["logs:CreateLogGroup"],
        "Resource": "*"}]
    assert iam.list_role_policies(RoleName=f"{CLUSTER}-node")["PolicyNames"] == []

    out = stack.outputs("iam")
    assert out == {
        "cluster_role_arn": iam.get_role(RoleName=f"{CLUSTER}-cluster")["Role"]["Arn"],
        "cluster_role_name": f"{CLUSTER}-cluster",
        "node_role_arn": iam.get_role(RoleName=f"{CLUSTER}-node")["Role"]["Arn"],
        "node_role_name": f"{CLUSTER}-node",
    }


def test_second_up_changes_nothing(tmp_path: Path, iam: Any, calls: CallLog) -> None:
    stack = Stack(tmp_path, [IAM])
    stack.up()
    first = stack.outputs("iam")
    calls.clear()
    result = stack.up()
    assert calls.mutating() == []
    assert result.changes == []
    assert stack.outputs("iam") == first
    assert stack.plan().changes == []


def test_plan_shows_drift_and_up_repairs_it(tmp_path: Path, iam: Any, calls: CallLog) -> None:
    stack = Stack(tmp_path, [IAM])
    stack.up()
    node, cluster = f"{CLUSTER}-node", f"{CLUSTER}-cluster"
    iam.detach_role_policy(RoleName=node, PolicyArn=POLICY + "AmazonEKS_CNI_Policy")
    iam.attach_role_policy(RoleName=node, PolicyArn=POLICY + "AmazonS3ReadOnlyAccess")
    iam.update_assume_role_policy(RoleName=cluster, PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}))
    iam.untag_role(RoleName=cluster, TagKeys=["owner"])
    iam.delete_role_policy(RoleName=cluster, PolicyName=DENY_LOG_GROUP_POLICY)

    calls.clear()
    plan = stack.plan()
    assert calls.mutating() == []
    details = sorted((c.action, c.address, c.detail) for c in plan.changes)
    assert details == [
        ("update", "iam.cluster-role", f"inline policy {DENY_LOG_GROUP_POLICY} (missing)"),
        ("update", "iam.cluster-role", "tags owner=exafunction"),
        ("update", "iam.cluster-role", "trust policy → eks only"),
        ("update", "iam.node-role", f"attach {POLICY}AmazonEKS_CNI_Policy"),
        ("update", "iam.node-role", f"detach {POLICY}AmazonS3ReadOnlyAccess"),
    ]

    stack.up()
    for name, (service, _, policies) in EXPECTED.items():
        role = iam.get_role(RoleName=name)["Role"]
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": service}
        assert attached(iam, name) == policies
        assert tag_dict(role["Tags"])["owner"] == "exafunction"
    assert iam.list_role_policies(RoleName=cluster)["PolicyNames"] == [DENY_LOG_GROUP_POLICY]
    calls.clear()
    stack.up()
    assert calls.mutating() == []


def test_lost_state_adopts_the_roles(tmp_path: Path, iam: Any, calls: CallLog) -> None:
    Stack(tmp_path / "a", [IAM]).up()
    arns = {n: iam.get_role(RoleName=n)["Role"]["Arn"] for n in EXPECTED}

    stack = Stack(tmp_path / "b", [IAM])  # an empty state file
    plan = stack.plan()
    assert plan.changes == []
    assert all("not in state" in " ".join(o.drift) for o in plan.observed)
    calls.clear()
    stack.up()
    assert calls.mutating() == []
    assert role_names(iam) == sorted(EXPECTED)
    assert stack.outputs("iam")["cluster_role_arn"] == arns[f"{CLUSTER}-cluster"]
    assert stack.state().resources["iam.node-role"]["id"] == arns[f"{CLUSTER}-node"]


def test_a_foreign_role_of_the_same_name_is_refused_and_untouched(tmp_path: Path, iam: Any) -> None:
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    iam.create_role(RoleName=f"{CLUSTER}-cluster", AssumeRolePolicyDocument=trust,
                    Tags=[{"Key": "team", "Value": "other"}])
    stack = Stack(tmp_path, [IAM])
    with pytest.raises(InputError, match=f"{CLUSTER}-cluster") as info:
        stack.up()
    assert info.value.exit_code == 2

    role = iam.get_role(RoleName=f"{CLUSTER}-cluster")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "lambda.amazonaws.com"}
    assert attached(iam, f"{CLUSTER}-cluster") == set()
    assert tag_dict(role["Tags"]) == {"team": "other"}

    # A destroy leaves it alone as well.
    stack.destroy()
    assert iam.get_role(RoleName=f"{CLUSTER}-cluster")["Role"]["RoleId"] == role["RoleId"]


def test_another_deployments_role_is_refused(tmp_path: Path, iam: Any) -> None:
    Stack(tmp_path / "a", [IAM], {"name": "other", "cluster": {"cluster_name": CLUSTER}}).up()
    with pytest.raises(InputError, match="does not belong"):
        Stack(tmp_path / "b", [IAM]).up()


def test_destroy_removes_roles_and_is_repeatable(tmp_path: Path, iam: Any) -> None:
    stack = Stack(tmp_path, [IAM])
    stack.up()
    node = f"{CLUSTER}-node"
    # What EKS managed node groups and hand edits leave: an instance profile and an inline policy.
    iam.create_instance_profile(InstanceProfileName="eks-nodes")
    iam.add_role_to_instance_profile(InstanceProfileName="eks-nodes", RoleName=node)
    iam.put_role_policy(RoleName=node, PolicyName="extra", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket",
                                                "Resource": "*"}]}))

    stack.destroy()
    assert role_names(iam) == []
    assert stack.state().resources == {}
    assert "iam" not in stack.state().outputs
    assert iam.get_instance_profile(InstanceProfileName="eks-nodes")["InstanceProfile"]["Roles"] == []
    stack.destroy()  # nothing left: no error
    assert role_names(iam) == []


def test_destroy_without_state_finds_roles_by_name(tmp_path: Path, iam: Any) -> None:
    Stack(tmp_path / "a", [IAM]).up()
    Stack(tmp_path / "b", [IAM]).destroy()
    assert role_names(iam) == []


def test_recorded_role_with_stripped_tags_is_still_ours(tmp_path: Path, iam: Any) -> None:
    stack = Stack(tmp_path, [IAM])
    stack.up()
    name = f"{CLUSTER}-cluster"
    iam.untag_role(RoleName=name, TagKeys=["exaprov:deployment"])
    stack.up()  # the state records this very role (same RoleId): re-tagged, not refused
    assert tag_dict(iam.get_role(RoleName=name)["Role"]["Tags"])["exaprov:deployment"] == "example"


def test_policy_normalisation_and_partition() -> None:
    a = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                 "Principal": {"Service": "eks.amazonaws.com"}}]}
    b = {"Version": "2012-10-17", "Statement": {"Sid": "", "Effect": "Allow",
                                                "Action": ["sts:AssumeRole"],
                                                "Principal": {"Service": ["eks.amazonaws.com"]}}}
    assert normalise_policy(a) == normalise_policy(b) == normalise_policy(json.dumps(b))
    assert normalise_policy(a) != normalise_policy({**a, "Statement": [
        {**a["Statement"][0], "Action": ["sts:AssumeRole", "sts:TagSession"]}]})
    assert [partition(r) for r in ("us-west-1", "cn-north-1", "us-gov-west-1")] == [
        "aws", "aws-cn", "aws-us-gov"]
