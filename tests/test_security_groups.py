"""The security-groups step against moto: groups and rules it owns, drift, adoption, destroy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from exaprov.aws import tag_dict
from exaprov.ownership import NameClash
from exaprov.steps.network import NETWORK
from exaprov.steps.security_groups import SECURITY_GROUPS, Rule, live_rule
from tests.conftest import CallLog
from tests.harness import Stack

CLUSTER = "exafunction-cluster-example"
WEBHOOKS = (443, 10250, 4443, 6443, 8443, 9443)


@pytest.fixture
def stack(aws: None, tmp_path: Path, calls: CallLog) -> Stack:
    # After `calls`: BUILTIN_HANDLERS only reach sessions created after they are appended.
    stack = Stack(tmp_path, [NETWORK, SECURITY_GROUPS])
    stack.up()
    return stack


def ids(stack: Stack) -> tuple[str, str]:
    out = stack.outputs("security-groups")
    return out["cluster_security_group_id"], out["node_security_group_id"]


def rules(ec2: Any, group_id: str) -> dict[Rule, dict[str, Any]]:
    items = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    found = {live_rule(i): i for i in items}
    assert len(found) == len(items), "duplicate rules"
    return found


def expected_node_rules(cluster_sg: str, node_sg: str) -> set[Rule]:
    return ({Rule("ingress", "-1", source=node_sg),
             Rule("egress", "-1", source="0.0.0.0/0"), Rule("egress", "-1", source="::/0")}
            | {Rule("ingress", "tcp", p, p, cluster_sg) for p in WEBHOOKS})


def tagged_groups(ec2: Any) -> list[dict[str, Any]]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "tag:exaprov:deployment", "Values": ["example"]}])["SecurityGroups"]


def test_plan_then_up_creates_both_groups_with_their_rules_then_converges(
        aws: None, tmp_path: Path, ec2: Any, calls: CallLog) -> None:
    stack = Stack(tmp_path, [NETWORK, SECURITY_GROUPS])
    planned = stack.plan().changes
    assert calls.mutating() == []
    assert [(c.action, c.address) for c in planned if c.address.startswith("security-groups")] \
        == [("create", "security-groups.cluster-sg"), ("create", "security-groups.node-sg")]
    assert not any(op == "DescribeSecurityGroups" for _, op in calls.calls)  # the VPC is new

    stack.up()
    cluster_sg, node_sg = ids(stack)
    vpc_id = stack.outputs("network")["vpc_id"]
    groups = {g["GroupId"]: g for g in tagged_groups(ec2)}
    assert set(groups) == {cluster_sg, node_sg}
    for group_id, name in ((cluster_sg, f"{CLUSTER}-cluster"), (node_sg, f"{CLUSTER}-node")):
        group = groups[group_id]
        tags = tag_dict(group["Tags"])
        assert group["VpcId"] == vpc_id and group["GroupName"] == name
        assert tags["Name"] == name and tags["exaprov:component"] == "security-groups"
    assert tag_dict(groups[node_sg]["Tags"])[f"kubernetes.io/cluster/{CLUSTER}"] == "owned"
    assert f"kubernetes.io/cluster/{CLUSTER}" not in tag_dict(groups[cluster_sg]["Tags"])
    assert set(rules(ec2, cluster_sg)) == {Rule("ingress", "tcp", 443, 443, node_sg)}  # no egress
    assert set(rules(ec2, node_sg)) == expected_node_rules(cluster_sg, node_sg)

    calls.clear()
    assert stack.up().changes == []
    assert calls.mutating() == []
    assert ids(stack) == (cluster_sg, node_sg)


def test_rules_drifted_by_hand_are_planned_and_repaired_one_by_one(stack: Stack, ec2: Any,
                                                                    calls: CallLog) -> None:
    cluster_sg, node_sg = ids(stack)
    kubelet = rules(ec2, node_sg)[Rule("ingress", "tcp", 10250, 10250, cluster_sg)]
    ec2.revoke_security_group_ingress(GroupId=node_sg,
                                      SecurityGroupRuleIds=[kubelet["SecurityGroupRuleId"]])
    calls.clear()
    planned = stack.plan().changes
    assert calls.mutating() == []
    assert [(c.action, c.address) for c in planned] == [("update", "security-groups.node-sg")]
    assert f"ingress tcp 10250 from {cluster_sg}" in planned[0].detail
    stack.up()
    assert calls.mutating() == [("ec2", "AuthorizeSecurityGroupIngress")]
    assert set(rules(ec2, node_sg)) == expected_node_rules(cluster_sg, node_sg)

    # Added by hand: SSH from anywhere, and egress on the cluster group → revoked.
    # A peering rule (a later step's, by its description) → left alone.
    ec2.authorize_security_group_ingress(GroupId=node_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    peering = Rule("ingress", "tcp", 0, 65535, "10.1.0.0/16")
    ec2.authorize_security_group_ingress(GroupId=node_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
         "IpRanges": [{"CidrIp": "10.1.0.0/16", "Description": "exaprov peering pcx-1234"}]}])
    ec2.authorize_security_group_egress(GroupId=cluster_sg, IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    calls.clear()
    result = stack.up()
    assert sorted(calls.mutating()) == [("ec2", "RevokeSecurityGroupEgress"),
                                        ("ec2", "RevokeSecurityGroupIngress")]
    assert {c.detail for c in result.changes} == {"revoke ingress tcp 22 from 0.0.0.0/0",
                                                  "revoke egress all to 0.0.0.0/0"}
    assert set(rules(ec2, node_sg)) == expected_node_rules(cluster_sg, node_sg) | {peering}
    assert set(rules(ec2, cluster_sg)) == {Rule("ingress", "tcp", 443, 443, node_sg)}


def test_lost_state_adopts_the_groups_by_tag_never_by_name(stack: Stack, ec2: Any,
                                                           calls: CallLog) -> None:
    before = ids(stack)
    state = stack.state()
    for address in [a for a in state.resources if a.startswith("security-groups.")]:
        del state.resources[address]
    state.outputs.pop("security-groups", None)
    stack.store.write(state)
    calls.clear()
    stack.up()
    assert calls.mutating() == []
    assert ids(stack) == before
    assert {stack.state().resources[f"security-groups.{lg}"]["id"]
            for lg in ("cluster-sg", "node-sg")} == set(before)
    assert len(tagged_groups(ec2)) == 2

    # Neither recorded nor tagged: its name in the VPC is no proof. A name clash, refused
    # before any change (exit 2), the group left as it is.
    ec2.delete_tags(Resources=[before[1]], Tags=[{"Key": "exaprov:deployment"}])
    state = stack.state()
    del state.resources["security-groups.node-sg"]
    stack.store.write(state)
    calls.clear()
    with pytest.raises(NameClash, match="exafunction-cluster-example-node") as refused:
        stack.up()
    assert refused.value.exit_code == 2
    assert calls.mutating() == []
    assert ids(stack) == before
    assert len(tagged_groups(ec2)) == 1


@pytest.fixture
def dependency_violations(hooks: Any) -> list[str]:
    """DeleteSecurityGroup answers DependencyViolation twice (lingering ENIs), then works."""
    seen: list[str] = []

    def fail(model: Any, **_: Any) -> None:
        if model.name == "DeleteSecurityGroup" and len(seen) < 2:
            seen.append(model.name)
            raise ClientError({"Error": {"Code": "DependencyViolation",
                                         "Message": "resource has a dependent object"}},
                              "DeleteSecurityGroup")

    hooks(fail)
    return seen


def test_destroy_removes_groups_and_detached_enis_despite_dependency_violations(
        stack: Stack, tmp_path: Path, ec2: Any, dependency_violations: list[str]) -> None:
    _, node_sg = ids(stack)
    subnet = stack.outputs("network")["private_subnet_ids"][0]
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[node_sg])["NetworkInterface"]
    assert eni["Status"] == "available"  # detached, as the VPC CNI leaves them
    # A new Stack: BUILTIN_HANDLERS only reach sessions created after the append.
    again = Stack(tmp_path, [NETWORK, SECURITY_GROUPS])
    again.destroy()
    assert len(dependency_violations) == 2
    assert tagged_groups(ec2) == []
    assert ec2.describe_network_interfaces()["NetworkInterfaces"] == []
    assert not any(a.startswith("security-groups.") for a in again.state().resources)
    again.destroy()  # a second destroy finds nothing and is fine
