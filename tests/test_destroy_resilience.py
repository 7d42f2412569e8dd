"""Destroy resilience, on the whole stack of
tests/crashing.py (network, cluster, node groups, backend, one peering):

- a crash after a mutating call of `destroy` → the next `destroy` finishes, and the
  account holds exactly what it held before `up` (the calls come from one uninterrupted
  destroy at collection, like tests/test_crash.py's; one case per operation and kind of
  resource, see tests/crashing.py's `sample` (69 calls → 40 cases), or every call with
  EXAPROV_FULL_CRASH_MATRIX=1);
- resources already deleted by hand are no obstacle;
- what Kubernetes made in the VPC (a load balancer, its security group, a detached CNI
  network interface) goes before the network;
- a database with DeletionProtection on stops destroy before anything is deleted.

Every test runs beside a neighbour (tests/neighbour.py: a second deployment, untagged
resources named like ours): each of its resources — exact IDs, tags, routes, rules — is
the same after `destroy` as before `up`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.census import Census, after_destroy, census, difference
from tests.conftest import REGION, cli
from tests.crashing import (
    CONFIG,
    crash_then_rerun,
    isolated_aws,
    matrix_cases,
    prepare_account_and_state,
    recorded_calls,
    run_ok,
)
from tests.neighbour import difference as changed
from tests.neighbour import foreign_census

CLUSTER = "exafunction-cluster-example"
DATABASE = "exafunction-mrbe-example-rds"


@functools.cache
def reference() -> tuple[list[str], Census]:
    """The successful mutating calls of one uninterrupted destroy of the stack, and the
    census of the account before `up` (the same in every test: prepared the same way)."""
    with isolated_aws():
        before = prepare_account_and_state()
        run_ok("up", "--yes")
        return recorded_calls("destroy", "--yes", "--disable-deletion-protection"), before


def destroy_calls() -> list[str]:
    return reference()[0]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "destroy_call" in metafunc.fixturenames:
        calls = matrix_cases(destroy_calls())
        metafunc.parametrize("destroy_call", calls, ids=calls)


def state_outputs() -> dict[str, Any]:
    return json.loads(Path("state/example.json").read_text())["outputs"]


def test_the_destroy_matrix_covers_every_step() -> None:
    operations = {call.split("(")[0] for call in destroy_calls()}
    assert {"ec2.DeleteVpc", "ec2.DeleteNatGateway", "ec2.ReleaseAddress", "iam.DeleteRole",
            "kms.ScheduleKeyDeletion", "logs.DeleteLogGroup", "ec2.DeleteSecurityGroup",
            "eks.DeleteCluster", "eks.DeleteNodegroup", "ec2.DeleteLaunchTemplate",
            "rds.DeleteDBInstance", "rds.DeleteDBSubnetGroup", "s3.DeleteBucket", "iam.DeleteUser",
            "iam.DeleteAccessKey", "secretsmanager.DeleteSecret",
            "ec2.DeleteVpcPeeringConnection"} <= operations
    assert len(destroy_calls()) == len(set(destroy_calls()))


def test_a_crash_after_any_call_of_destroy_is_finished_by_the_next_destroy(
        destroy_call: str, workdir: Path, aws: None) -> None:
    """`destroy` is killed right after AWS carried out `destroy_call`; the state file
    is what was on disk then (the resource may still be recorded although it is gone, or
    recorded as `deleting`). The next `destroy` counts "already gone" as done, finishes,
    and the account is as it was before `up`."""
    prepare_account_and_state(count=False)
    before, neighbour = reference()[1], foreign_census(CONFIG)
    run_ok("up", "--yes")
    crash_then_rerun(("destroy", "--yes", "--disable-deletion-protection"), destroy_call)
    kept = after_destroy(before)  # and the database's final snapshot, the user's
    assert census() == kept, difference(kept, census())
    assert foreign_census(CONFIG) == neighbour, changed(neighbour, foreign_census(CONFIG))


def test_resources_deleted_by_hand_do_not_stop_destroy(workdir: Path, aws: None) -> None:
    """Someone cleaned up part of the deployment in the console before `destroy`: the NAT
    gateway, a node group, the bucket and the backend user's access key are gone, though
    the state still records them."""
    before = prepare_account_and_state()
    neighbour = foreign_census(CONFIG)
    run_ok("up", "--yes")
    outputs = state_outputs()
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.delete_nat_gateway(NatGatewayId=outputs["nat"]["nat_gateway_id"])
    boto3.client("eks", region_name=REGION).delete_nodegroup(clusterName=CLUSTER,
                                                            nodegroupName="runner-cpu")
    s3 = boto3.client("s3", region_name=REGION)
    s3.delete_bucket(Bucket=outputs["bucket"]["s3_bucket_id"])
    iam = boto3.client("iam", region_name=REGION)
    user = outputs["backend-user"]["iam_user_name"]
    iam.delete_access_key(UserName=user, AccessKeyId=outputs["backend-user"]["access_key_id"])

    run_ok("destroy", "--yes", "--disable-deletion-protection")
    kept = after_destroy(before)  # and the database's final snapshot, the user's
    assert census() == kept, difference(kept, census())
    assert foreign_census(CONFIG) == neighbour, changed(neighbour, foreign_census(CONFIG))
    assert json.loads(Path("state/example.json").read_text())["resources"] == {}


def test_kubernetes_leftovers_in_the_vpc_go_before_the_network(workdir: Path, aws: None) -> None:
    """Kubernetes leftovers on the whole stack: a LoadBalancer Service made a load balancer with its
    own security group, and the VPC CNI left a detached network interface carrying the node
    security group; no tool recorded them, and each would block deleting the VPC on AWS."""
    before = prepare_account_and_state()
    neighbour = foreign_census(CONFIG)
    run_ok("up", "--yes")
    outputs = state_outputs()
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = outputs["network"]["vpc_id"]
    k8s_tags = [{"Key": f"kubernetes.io/cluster/{CLUSTER}", "Value": "owned"},
                {"Key": "elbv2.k8s.aws/cluster", "Value": CLUSTER}]
    lb_sg = ec2.create_security_group(
        GroupName="k8s-elb-grafana", Description="k8s", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": k8s_tags}])["GroupId"]
    elbv2 = boto3.client("elbv2", region_name=REGION)
    elbv2.create_load_balancer(Name="k8s-grafana", Subnets=outputs["network"]["public_subnet_ids"][:2],
                               SecurityGroups=[lb_sg], Tags=k8s_tags)
    ec2.create_network_interface(
        SubnetId=outputs["network"]["private_subnet_ids"][0], Description="aws-K8S-i-0123456789",
        Groups=[outputs["security-groups"]["node_security_group_id"]])
    assert census()["elbv2:load-balancer", "k8s-grafana"] == 1

    run_ok("destroy", "--yes", "--disable-deletion-protection")
    kept = after_destroy(before)  # and the database's final snapshot, the user's
    assert census() == kept, difference(kept, census())
    assert foreign_census(CONFIG) == neighbour, changed(neighbour, foreign_census(CONFIG))


def test_a_protected_database_stops_destroy_before_anything_is_deleted(
        workdir: Path, aws: None) -> None:
    """DeletionProtection was turned on out of band. `destroy` must say so, name the
    instance and the way on, and delete nothing at all (not the rest of the stack around a
    database that stays); `--disable-deletion-protection` then deletes everything."""
    before = prepare_account_and_state()
    neighbour = foreign_census(CONFIG)
    run_ok("up", "--yes")
    rds = boto3.client("rds", region_name=REGION)
    rds.modify_db_instance(DBInstanceIdentifier=DATABASE, DeletionProtection=True,
                           ApplyImmediately=True)
    built = census()
    state = Path("state/example.json").read_text()

    result = cli("destroy", "--yes")
    assert result.exit_code == 2, result.output
    assert DATABASE in result.output and "DeletionProtection" in result.output
    assert "--disable-deletion-protection" in result.output
    assert "modify-db-instance" in result.output
    assert census() == built, difference(built, census())  # nothing deleted, nothing else
    assert json.loads(Path("state/example.json").read_text())["resources"] == \
        json.loads(state)["resources"]

    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    kept = after_destroy(before)  # and the database's final snapshot, the user's
    assert census() == kept, difference(kept, census())
    assert foreign_census(CONFIG) == neighbour, changed(neighbour, foreign_census(CONFIG))


def test_without_the_backend_there_is_no_database_to_protect(
        workdir: Path, aws: None, calls: Any) -> None:
    """The pre-flight reads only what the deployment has: no backend, no database read."""
    before = prepare_account_and_state()
    neighbour = foreign_census(CONFIG)
    Path("exaprov.yaml").write_text(json.dumps({**CONFIG, "module_repo_backend": None}))
    run_ok("up", "--yes")
    calls.clear()
    run_ok("destroy", "--yes", "--disable-deletion-protection")
    assert ("rds", "DescribeDBInstances") not in calls.calls
    assert census() == before, difference(before, census())
    assert foreign_census(CONFIG) == neighbour, changed(neighbour, foreign_census(CONFIG))
