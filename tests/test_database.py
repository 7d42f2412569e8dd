"""The database steps against moto: the RDS instance and its security group."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import pytest

from exaprov.engine import Step, StepContext
from exaprov.errors import ExaprovError, InputError
from exaprov.state import FAILED
from exaprov.steps.database import DATABASE, DATABASE_CLUSTER_RULE, DATABASE_SG
from exaprov.steps.network import NETWORK
from exaprov.steps.security_groups import SECURITY_GROUPS, Rule, live_rule
from tests.conftest import REGION, CallLog
from tests.harness import Stack

IDENT = "exafunction-mrbe-example-rds"
STEPS = [NETWORK, SECURITY_GROUPS, DATABASE_SG, DATABASE]


def config(**backend: Any) -> dict[str, Any]:
    return {"name": "example", "module_repo_backend": backend}


@pytest.fixture
def rds(aws: None) -> Any:
    return boto3.client("rds", region_name=REGION)


@pytest.fixture
def stack(aws: None, tmp_path: Path, calls: CallLog) -> Stack:
    # After `calls`: BUILTIN_HANDLERS only reach sessions created after they are appended.
    stack = Stack(tmp_path, STEPS)
    stack.up()
    return stack


def instance(rds: Any) -> dict[str, Any]:
    found = rds.describe_db_instances()["DBInstances"]
    assert [d["DBInstanceIdentifier"] for d in found] == [IDENT]
    return found[0]


def rules(ec2: Any, group_id: str) -> set[Rule]:
    items = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    return {live_rule(i) for i in items}


def db_groups(ec2: Any) -> list[dict[str, Any]]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [IDENT]}])["SecurityGroups"]


def test_plan_then_up_creates_the_database_as_configured_then_converges(
        aws: None, tmp_path: Path, ec2: Any, rds: Any, calls: CallLog) -> None:
    stack = Stack(tmp_path, STEPS)
    planned = stack.plan().changes
    assert calls.mutating() == []
    assert [(c.action, c.address) for c in planned if c.address.startswith("database")] \
        == [("create", "database-sg.db-sg"), ("create", "database.instance")]

    stack.up()
    out = stack.outputs("database")
    sgs = stack.outputs("security-groups")
    db_sg = stack.outputs("database-sg")["db_security_group_id"]
    db = instance(rds)
    assert (db["Engine"], db["EngineVersion"].split(".")[0]) == ("postgres", "16")
    assert (db["DBInstanceClass"], db["AllocatedStorage"], db["StorageType"]) == ("db.t4g.micro", 20, "gp3")
    assert (db["DBName"], db["MasterUsername"], db["Endpoint"]["Port"]) == ("postgres", "exafunction", 5432)
    assert db["DBSubnetGroup"]["DBSubnetGroupName"] == stack.outputs("network")["db_subnet_group_name"]
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [db_sg]
    assert db["PubliclyAccessible"] is False and db["StorageEncrypted"] is True
    assert db["AutoMinorVersionUpgrade"] is True and db["DeletionProtection"] is True
    assert (db["MaxAllocatedStorage"], db["BackupRetentionPeriod"], db["CopyTagsToSnapshot"]) \
        == (100, 7, True)
    assert db["EngineLifecycleSupport"] == "open-source-rds-extended-support-disabled"
    assert {t["Key"]: t["Value"] for t in db["TagList"]}["exaprov:deployment"] == "example"
    secret = boto3.client("secretsmanager", region_name=REGION).describe_secret(
        SecretId=db["MasterUserSecret"]["SecretArn"])
    assert secret["OwningService"] == "rds" and secret["RotationEnabled"] is False  # RDS's 7 days: off
    assert out == {
        "rds_identifier": IDENT, "rds_arn": db["DBInstanceArn"], "rds_address": db["Endpoint"]["Address"],
        "rds_port": 5432, "rds_username": "exafunction", "rds_password_secret_arn": secret["ARN"],
        "rds_engine_version": db["EngineVersion"]}
    assert stack.state().resources["database.instance"]["id"] == IDENT

    group, = db_groups(ec2)
    assert group["GroupId"] == db_sg and group["VpcId"] == stack.outputs("network")["vpc_id"]
    # Exactly Postgres from the two cluster groups: no other ingress, no egress.
    assert rules(ec2, db_sg) == {Rule("ingress", "tcp", 5432, 5432, sgs["node_security_group_id"]),
                                 Rule("ingress", "tcp", 5432, 5432, sgs["cluster_security_group_id"])}

    calls.clear()
    assert stack.up().changes == []
    assert calls.mutating() == []
    assert stack.outputs("database") == out


def test_storage_and_class_grow_in_place_with_one_modify(stack: Stack, tmp_path: Path, rds: Any,
                                                         calls: CallLog) -> None:
    grown = Stack(tmp_path, STEPS, config(db_storage=30))
    calls.clear()
    planned = grown.plan().changes
    assert calls.mutating() == []
    assert [(c.action, c.address, c.detail) for c in planned] \
        == [("update", "database.instance", "storage 20 → 30 GiB")]
    grown.up()
    assert calls.mutating() == [("rds", "ModifyDBInstance")]
    assert instance(rds)["AllocatedStorage"] == 30

    bigger = Stack(tmp_path, STEPS, config(db_storage=30, db_instance_class="db.t4g.small"))
    calls.clear()
    bigger.up()
    assert calls.mutating() == [("rds", "ModifyDBInstance")]
    assert instance(rds)["DBInstanceClass"] == "db.t4g.small"
    calls.clear()
    bigger.up()
    assert calls.mutating() == []

    # Without storage autoscaling (with it, a live size above db_storage is RDS's growth),
    # a smaller db_storage is a shrink RDS cannot make.
    shrunk = Stack(tmp_path, STEPS, config(db_storage=25, db_max_allocated_storage=0))
    calls.clear()
    with pytest.raises(InputError) as err:
        shrunk.up()
    assert "30 GiB" in err.value.message and "says 25" in err.value.message
    assert calls.mutating() == [] and instance(rds)["AllocatedStorage"] == 30


@pytest.mark.parametrize(("backend", "key", "values"), [
    ({"db_storage": 21}, "module_repo_backend.db_storage", ("at least 10%", "22 GiB")),
    ({"postgres_version": "17"}, "module_repo_backend.postgres_version", ("16", "says 17")),
])
def test_what_rds_cannot_change_in_place_is_an_input_error_before_any_change(
        stack: Stack, tmp_path: Path, rds: Any, calls: CallLog, backend: dict[str, Any], key: str,
        values: tuple[str, ...]) -> None:
    changed = Stack(tmp_path, STEPS, config(**backend))
    calls.clear()
    with pytest.raises(InputError) as err:
        changed.up()
    assert err.value.exit_code == 2
    assert key in err.value.message and all(v in err.value.message for v in values)
    assert calls.mutating() == []
    assert instance(rds)["AllocatedStorage"] == 20


def test_drift_is_repaired_and_the_port_change_planned(stack: Stack, tmp_path: Path, ec2: Any,
                                                       rds: Any, calls: CallLog) -> None:
    vpc_id = stack.outputs("network")["vpc_id"]
    other = ec2.create_security_group(GroupName="other", Description="x", VpcId=vpc_id)["GroupId"]
    rds.modify_db_instance(DBInstanceIdentifier=IDENT, PubliclyAccessible=True,
                           VpcSecurityGroupIds=[other], ApplyImmediately=True)
    calls.clear()
    result = stack.up()
    assert calls.mutating() == [("rds", "ModifyDBInstance")]
    assert "publicly accessible → not" in result.changes[0].detail
    db = instance(rds)
    assert db["PubliclyAccessible"] is False
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] \
        == [stack.outputs("database-sg")["db_security_group_id"]]

    planned = Stack(tmp_path, STEPS, config(db_port=5433)).plan().changes
    assert {(c.address, c.detail) for c in planned} >= {("database.instance", "port 5432 → 5433")}
    assert any(c.address == "database-sg.db-sg" and "5433" in c.detail for c in planned)


def test_lost_state_adopts_the_instance_and_a_foreign_one_is_refused(
        stack: Stack, tmp_path: Path, rds: Any, calls: CallLog) -> None:
    state = stack.state()
    for address in [a for a in state.resources if a.startswith("database")]:
        del state.resources[address]
    state.outputs.pop("database", None)
    state.outputs.pop("database-sg", None)
    stack.store.write(state)
    calls.clear()
    stack.up()
    assert calls.mutating() == []
    assert instance(rds)["DBInstanceIdentifier"] == IDENT
    assert stack.state().resources["database.instance"]["id"] == IDENT
    assert stack.outputs("database")["rds_identifier"] == IDENT

    # Another deployment's stack wanting the same identifier.
    other = Stack(tmp_path, STEPS, {"name": "other", "module_repo_backend": {"exadeploy_id":
                                                                             "exafunction-mrbe-example"}})
    calls.clear()
    with pytest.raises(InputError, match="not this deployment's"):
        other.up()
    assert ("rds", "CreateDBInstance") not in calls.mutating()
    assert ("rds", "ModifyDBInstance") not in calls.mutating()
    assert instance(rds)["DBInstanceIdentifier"] == IDENT
    other.destroy()  # leaves it alone
    assert instance(rds)["DBInstanceIdentifier"] == IDENT


def test_destroy_deletes_instance_and_group_and_twice_is_fine(stack: Stack, ec2: Any, rds: Any) -> None:
    stack.destroy(disable_deletion_protection=True)
    assert rds.describe_db_instances()["DBInstances"] == []
    assert db_groups(ec2) == []
    assert not any(a.startswith("database") for a in stack.state().resources)
    # The final snapshot stays, for the user: named after the backend and the UTC time.
    snapshot, = rds.describe_db_snapshots()["DBSnapshots"]
    assert re.fullmatch(r"exafunction-mrbe-example-final-\d{8}-\d{6}", snapshot["DBSnapshotIdentifier"])
    assert snapshot["DBInstanceIdentifier"] == IDENT
    tags = {t["Key"]: t["Value"] for t in rds.list_tags_for_resource(
        ResourceName=snapshot["DBSnapshotArn"])["TagList"]}
    assert tags["owner"] == "exafunction"  # CopyTagsToSnapshot: the instance's tags, to find it by
    assert [k for k in stack.kept if snapshot["DBSnapshotIdentifier"] in k]
    stack.destroy()
    assert len(rds.describe_db_snapshots()["DBSnapshots"]) == 1  # never deleted by exaprov


def test_destroy_without_a_final_snapshot(stack: Stack, rds: Any) -> None:
    stack.destroy(disable_deletion_protection=True, final_snapshot=False)
    assert rds.describe_db_instances()["DBInstances"] == []
    assert rds.describe_db_snapshots()["DBSnapshots"] == []
    assert stack.kept == []


def test_deletion_protection_stops_destroy_before_anything_is_deleted(stack: Stack, ec2: Any,
                                                                      rds: Any) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=IDENT, DeletionProtection=True, ApplyImmediately=True)
    with pytest.raises(ExaprovError) as err:
        stack.destroy()
    assert "DeletionProtection" in err.value.message and IDENT in err.value.message
    assert instance(rds)["DeletionProtection"] is True
    assert len(db_groups(ec2)) == 1
    assert stack.state().resources["database.instance"]["id"] == IDENT


def test_dropping_the_backend_plans_data_loss_and_deletes_only_when_confirmed(
        stack: Stack, tmp_path: Path, ec2: Any, rds: Any, calls: CallLog) -> None:
    Stack(tmp_path, STEPS, config(db_deletion_protection=False)).up()
    local = Stack(tmp_path, STEPS, {"name": "example", "module_repo_backend": None})
    calls.clear()
    planned = local.plan().changes
    assert calls.mutating() == []
    assert {(c.action, c.address, c.detail) for c in planned} >= {
        ("delete", "database.instance", f"DATA LOSS: database {IDENT} and its data")}
    with pytest.raises(InputError):
        local.up(confirm=False)
    assert calls.mutating() == []
    local.up(confirm=True)
    assert rds.describe_db_instances()["DBInstances"] == []
    assert db_groups(ec2) == []
    assert "database" not in local.state().outputs


class StatusRewrite:
    """DescribeDBInstances reports `status` for the first `times` answers (RDS taking minutes)."""

    def __init__(self) -> None:
        self.status, self.times, self.rewritten = "creating", 0, 0

    def __call__(self, parsed: dict[str, Any], **_: Any) -> None:
        if self.rewritten < self.times and parsed.get("DBInstances"):
            self.rewritten += 1
            for db in parsed["DBInstances"]:
                db["DBInstanceStatus"] = self.status


@pytest.fixture
def rewrite() -> Iterator[StatusRewrite]:
    handler = ("after-call.rds.DescribeDBInstances", StatusRewrite())
    botocore.handlers.BUILTIN_HANDLERS.append(handler)
    try:
        yield handler[1]
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(handler)


def test_up_waits_while_the_instance_is_creating_also_on_the_next_run(
        aws: None, tmp_path: Path, rds: Any, calls: CallLog, rewrite: StatusRewrite) -> None:
    rewrite.times = 3
    stack = Stack(tmp_path, STEPS)
    stack.up()
    assert rewrite.rewritten == 3
    assert calls.mutating().count(("rds", "CreateDBInstance")) == 1
    assert stack.outputs("database")["rds_identifier"] == IDENT

    # A later run finds the recorded instance still creating: it waits, it does not create.
    rewrite.times, rewrite.rewritten = 2, 0
    calls.clear()
    Stack(tmp_path, STEPS).up()
    assert rewrite.rewritten == 2
    assert calls.mutating() == []
    assert instance(rds)["DBInstanceIdentifier"] == IDENT


def test_a_failed_instance_is_an_error_and_recorded_failed(
        aws: None, tmp_path: Path, calls: CallLog, rewrite: StatusRewrite) -> None:
    rewrite.status, rewrite.times = "failed", 100
    stack = Stack(tmp_path, STEPS)
    with pytest.raises(ExaprovError, match=f"{IDENT} is failed"):
        stack.up()
    assert stack.state().resources["database.instance"]["status"] == FAILED
    assert calls.mutating().count(("rds", "CreateDBInstance")) == 1


# -- database-cluster-rule, with a stand-in for the cluster step -----------------------

def _find_primary(ctx: StepContext) -> str | None:
    vpc_id = ctx.upstream["network"]["vpc_id"]
    groups = ctx.aws.ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": ["eks-cluster-sg"]}])
    return next((g["GroupId"] for g in groups["SecurityGroups"]), None)


def _primary_group(ctx: StepContext) -> dict[str, Any]:
    """What EKS makes: a security group of its own in the VPC (untagged by exaprov)."""
    group_id = _find_primary(ctx) or ctx.aws.ec2.create_security_group(
        GroupName="eks-cluster-sg", Description="EKS created security group",
        VpcId=ctx.upstream["network"]["vpc_id"])["GroupId"]
    return {"cluster_primary_security_group_id": group_id}


def _delete_primary_group(ctx: StepContext) -> None:
    if group_id := _find_primary(ctx):
        ctx.aws.ec2.delete_security_group(GroupId=group_id)


FAKE_CLUSTER = Step("cluster", ("network",), _primary_group, _delete_primary_group)


def test_the_cluster_rule_admits_the_primary_group_and_database_sg_keeps_it(
        aws: None, tmp_path: Path, ec2: Any, calls: CallLog) -> None:
    steps = [NETWORK, SECURITY_GROUPS, DATABASE_SG, FAKE_CLUSTER, DATABASE_CLUSTER_RULE]
    stack = Stack(tmp_path, steps)
    stack.up()
    db_sg = stack.outputs("database-sg")["db_security_group_id"]
    primary = stack.outputs("cluster")["cluster_primary_security_group_id"]
    sgs = stack.outputs("security-groups")
    assert rules(ec2, db_sg) == {Rule("ingress", "tcp", 5432, 5432, sgs["node_security_group_id"]),
                                 Rule("ingress", "tcp", 5432, 5432, sgs["cluster_security_group_id"]),
                                 Rule("ingress", "tcp", 5432, 5432, primary)}
    assert stack.outputs("database-cluster-rule") == {}
    calls.clear()
    assert stack.up().changes == []  # database-sg leaves the primary group's rule alone
    assert calls.mutating() == []

    # Another port: both steps move their rules; none is left behind.
    moved = Stack(tmp_path, steps, config(db_port=5433))
    moved.up()
    assert rules(ec2, db_sg) == {Rule("ingress", "tcp", 5433, 5433, g) for g in
                                 (sgs["node_security_group_id"], sgs["cluster_security_group_id"], primary)}

    calls.clear()
    moved.destroy()  # the rule goes before the (fake) cluster deletes the primary group
    done = calls.mutating()
    assert done.index(("ec2", "RevokeSecurityGroupIngress")) < done.index(("ec2", "DeleteSecurityGroup"))
    assert db_groups(ec2) == []
    assert ec2.describe_security_groups(
        Filters=[{"Name": "group-id", "Values": [primary]}])["SecurityGroups"] == []
