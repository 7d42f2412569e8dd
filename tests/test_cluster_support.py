"""The `kms` and `logs` steps against moto: key, alias and policy; log group and retention."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov.engine import Step
from exaprov.errors import InputError
from exaprov.steps.cluster_support import KEY_ADMIN_ACTIONS, KEY_USER_ACTIONS, KMS, LOGS
from tests.conftest import REGION, CallLog
from tests.harness import Stack

CLUSTER = "exafunction-cluster-example"
ALIAS = f"alias/eks/{CLUSTER}"
LOG_GROUP = f"/aws/eks/{CLUSTER}/cluster"
ADMINS = ["arn:aws:iam::123456789012:role/admin", "arn:aws:iam::123456789012:user/alice"]
IDENTITY = {"exaprov:deployment": "example", "exaprov:component": "kms", "exaprov:resource": "key"}
ROOT = "arn:aws:iam::123456789012:root"
CALLER = "arn:aws:sts::123456789012:user/moto"  # moto's GetCallerIdentity Arn for its user
CLUSTER_ROLE = f"arn:aws:iam::123456789012:role/{CLUSTER}-cluster"
# The key's user is the cluster role, from the iam step: here a stand-in (no IAM needed).
FAKE_IAM = Step("iam", (), lambda ctx: {"cluster_role_arn": CLUSTER_ROLE}, lambda ctx: None)
KMS_STEPS = [FAKE_IAM, KMS]


@pytest.fixture(autouse=True)
def _no_managed_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here uses IAM; loading moto's AWS managed policies costs about a second a test."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")


@pytest.fixture
def kms(aws: None) -> Any:
    return boto3.client("kms", region_name=REGION)


@pytest.fixture
def logs(aws: None) -> Any:
    return boto3.client("logs", region_name=REGION)


def key_tags(kms: Any, key_id: str) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id)["Tags"]}


def live_keys(kms: Any) -> list[dict[str, Any]]:
    metas = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"] for k in kms.list_keys()["Keys"]]
    return [m for m in metas if m["KeyState"] != "PendingDeletion"]


def principals(policy: dict[str, Any]) -> list[Any]:
    found = []
    for statement in policy["Statement"]:
        value = statement["Principal"]
        found += [value] if isinstance(value, str) else [
            p for v in value.values() for p in ([v] if isinstance(v, str) else v)]
    return found


# -- kms ------------------------------------------------------------------------------

def test_up_creates_key_alias_and_policy(tmp_path: Path, kms: Any) -> None:
    stack = Stack(tmp_path, KMS_STEPS, {"name": "example", "cluster": {"kms_key_administrators": ADMINS}})
    stack.up()

    meta = kms.describe_key(KeyId=ALIAS)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["Enabled"]
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["Description"] == f"exaprov example: EKS secrets encryption for {CLUSTER}"
    assert [k["KeyId"] for k in live_keys(kms)] == [meta["KeyId"]]
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases[ALIAS] == meta["KeyId"]

    policy = json.loads(kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"])
    root, admins, users = policy["Statement"]
    assert root["Principal"] == {"AWS": ROOT}
    assert root["Action"] == "kms:*"
    assert admins["Principal"] == {"AWS": ADMINS}
    assert set(admins["Action"]) == set(KEY_ADMIN_ACTIONS)
    assert "kms:Decrypt" not in admins["Action"] and "kms:*" not in admins["Action"]
    assert (users["Principal"], set(users["Action"])) == ({"AWS": CLUSTER_ROLE}, set(KEY_USER_ACTIONS))
    assert "*" not in principals(policy)
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"] is True

    tags = key_tags(kms, meta["KeyId"])
    assert tags.items() >= {**IDENTITY, "owner": "exafunction"}.items()
    assert stack.outputs("kms") == {"kms_key_arn": meta["Arn"], "kms_key_id": meta["KeyId"],
                                    "kms_alias": ALIAS}


def test_no_administrators_means_the_caller_administers(tmp_path: Path, kms: Any,
                                                       calls: CallLog) -> None:
    stack = Stack(tmp_path, KMS_STEPS)
    stack.up()
    key_id = stack.outputs("kms")["kms_key_id"]
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert principals(policy) == [ROOT, CALLER, CLUSTER_ROLE]

    calls.clear()
    stack.up()
    assert calls.mutating() == []

    # Administrators added to the config: one policy update, same key.
    admins = Stack(tmp_path, KMS_STEPS, {"name": "example", "cluster": {"kms_key_administrators": ADMINS}})
    assert [(c.action, c.detail) for c in admins.plan().changes] == [("update", "key policy")]
    calls.clear()
    admins.up()
    assert calls.mutating() == [("kms", "PutKeyPolicy")]
    assert admins.outputs("kms")["kms_key_id"] == key_id


def test_key_rotation_turned_off_out_of_band_is_turned_back_on(tmp_path: Path, kms: Any,
                                                               calls: CallLog) -> None:
    stack = Stack(tmp_path, KMS_STEPS)
    stack.up()
    key_id = stack.outputs("kms")["kms_key_id"]
    kms.disable_key_rotation(KeyId=key_id)
    calls.clear()
    result = stack.plan()
    row = next(r for r in result.observed if r.address == "kms.key")
    assert row.drift == ["automatic key rotation off → on"]
    stack.up()
    assert calls.mutating() == [("kms", "EnableKeyRotation")]
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True


def test_a_changed_key_user_or_lost_statement_is_put_back(tmp_path: Path, kms: Any,
                                                         calls: CallLog) -> None:
    stack = Stack(tmp_path, KMS_STEPS)
    stack.up()
    key_id = stack.outputs("kms")["kms_key_id"]
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Sid": "AccountRoot", "Effect": "Allow",
                                                "Principal": {"AWS": ROOT}, "Action": "kms:*",
                                                "Resource": "*"}]}))
    calls.clear()
    assert [c.detail for c in stack.plan().changes] == ["key policy"]
    stack.up()
    assert calls.mutating() == [("kms", "PutKeyPolicy")]
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert principals(policy) == [ROOT, CALLER, CLUSTER_ROLE]


def test_crash_between_key_and_alias_adopts_the_key(tmp_path: Path, kms: Any) -> None:
    orphan = kms.create_key(Description="left by a crash", Tags=[
        {"TagKey": k, "TagValue": v} for k, v in IDENTITY.items()])["KeyMetadata"]["KeyId"]
    kms.create_key(Description="someone else's")  # untagged: never adopted

    stack = Stack(tmp_path, KMS_STEPS)  # the state is empty
    plan = stack.plan()
    assert ("update", f"alias {ALIAS} → {orphan}") in [(c.action, c.detail) for c in plan.changes]
    assert not [c for c in plan.changes if c.action == "create"]
    stack.up()

    assert kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["KeyId"] == orphan
    assert len(live_keys(kms)) == 2  # the orphan and the foreign key: no new one
    assert stack.outputs("kms")["kms_key_id"] == orphan


def test_alias_on_a_foreign_key_is_refused(tmp_path: Path, kms: Any) -> None:
    foreign = kms.create_key(Description="not ours")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=ALIAS, TargetKeyId=foreign)
    with pytest.raises(InputError, match=ALIAS):
        Stack(tmp_path, KMS_STEPS).up()
    Stack(tmp_path, KMS_STEPS).destroy()
    assert kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["KeyState"] == "Enabled"


def test_key_pending_deletion_is_saved(tmp_path: Path, kms: Any) -> None:
    stack = Stack(tmp_path, KMS_STEPS)
    stack.up()
    key_id = stack.outputs("kms")["kms_key_id"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert [c.detail for c in stack.plan().changes] == ["cancel its scheduled deletion and enable it"]
    stack.up()
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_destroy_schedules_deletion_and_removes_alias(tmp_path: Path, kms: Any) -> None:
    stack = Stack(tmp_path, KMS_STEPS)
    stack.up()
    key_id = stack.outputs("kms")["kms_key_id"]
    stack.destroy()

    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    # moto leaves out PendingDeletionWindowInDays; the deletion date shows the window.
    window = meta["DeletionDate"] - datetime.now(meta["DeletionDate"].tzinfo)
    assert timedelta(days=6, hours=23) < window <= timedelta(days=7)
    assert ALIAS not in [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    assert stack.state().resources == {} and "kms" not in stack.state().outputs
    stack.destroy()  # the pending key counts as gone: no error, nothing new
    assert Stack(tmp_path, KMS_STEPS).plan().changes[0].action == "create"


def test_destroy_without_state_finds_key_by_alias_and_tag(tmp_path: Path, kms: Any) -> None:
    Stack(tmp_path / "a", KMS_STEPS).up()
    orphan = kms.create_key(Tags=[{"TagKey": k, "TagValue": v}
                                  for k, v in IDENTITY.items()])["KeyMetadata"]["KeyId"]
    Stack(tmp_path / "b", KMS_STEPS).destroy()
    assert live_keys(kms) == []
    assert kms.describe_key(KeyId=orphan)["KeyMetadata"]["KeyState"] == "PendingDeletion"


# -- logs -----------------------------------------------------------------------------

def log_group(logs: Any) -> dict[str, Any] | None:
    groups = logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
    return next((g for g in groups if g["logGroupName"] == LOG_GROUP), None)


def test_log_group_retention_and_destroy(tmp_path: Path, logs: Any, calls: CallLog) -> None:
    stack = Stack(tmp_path, [LOGS])
    assert [(c.action, c.detail) for c in stack.plan().changes] == [("create", "90 days")]
    assert calls.mutating() == []
    stack.up()
    group = log_group(logs)
    assert group is not None and group["retentionInDays"] == 90
    arn = f"arn:aws:logs:{REGION}:123456789012:log-group:{LOG_GROUP}"
    tags = logs.list_tags_for_resource(resourceArn=arn)["tags"]
    assert tags.items() >= {"exaprov:deployment": "example", "exaprov:component": "logs",
                            "owner": "exafunction"}.items()
    assert stack.outputs("logs") == {"log_group_name": LOG_GROUP, "log_group_arn": arn}

    calls.clear()
    stack.up()
    assert calls.mutating() == []

    thirty = Stack(tmp_path, [LOGS], {"name": "example", "cluster": {"log_retention_in_days": 30}})
    calls.clear()
    thirty.up()
    assert calls.mutating() == [("logs", "PutRetentionPolicy")]
    assert log_group(logs)["retentionInDays"] == 30

    forever = Stack(tmp_path, [LOGS])
    # 0 = never expire; the config's validation does not (yet) accept it, the step does.
    forever.cfg.cluster.log_retention_in_days = 0
    assert [c.detail for c in forever.plan().changes] == ["retention 30 days → never expire"]
    forever.up()
    assert "retentionInDays" not in log_group(logs)

    stack.destroy()
    assert log_group(logs) is None
    assert stack.state().resources == {}
    stack.destroy()


def test_log_group_of_that_name_is_ours_only_by_its_tags(tmp_path: Path, logs: Any,
                                                         calls: CallLog) -> None:
    # An untagged group of that name (EKS's own, left by an earlier cluster of the same name,
    # or a team's): the name is no proof. Refused before any change, and never deleted.
    logs.create_log_group(logGroupName=LOG_GROUP)
    calls.clear()
    with pytest.raises(InputError, match="no exaprov:deployment tag"):
        Stack(tmp_path, [LOGS]).up()
    assert calls.mutating() == []
    Stack(tmp_path / "fresh", [LOGS]).destroy()
    assert log_group(logs) is not None and "retentionInDays" not in log_group(logs)
    logs.delete_log_group(logGroupName=LOG_GROUP)

    stack = Stack(tmp_path / "ours", [LOGS])
    stack.up()
    assert log_group(logs)["retentionInDays"] == 90
    calls.clear()
    Stack(tmp_path / "lost", [LOGS]).up()  # lost state: found by name and tags, nothing to change
    assert calls.mutating() == []
    Stack(tmp_path / "lost", [LOGS]).destroy()
    assert log_group(logs) is None

    logs.create_log_group(logGroupName=LOG_GROUP, tags={"exaprov:deployment": "other"})
    with pytest.raises(InputError, match="other"):
        Stack(tmp_path, [LOGS]).up()
    Stack(tmp_path / "fresh", [LOGS]).destroy()
    assert log_group(logs) is not None  # not ours: left alone
