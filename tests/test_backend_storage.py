"""The backend-user and bucket steps against moto."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from exaprov.aws import tag_dict
from exaprov.errors import InputError
from exaprov.state import INTENT
from exaprov.steps.backend_storage import BACKEND_USER, BUCKET
from tests.conftest import REGION, CallLog
from tests.harness import Stack

USER = "exafunction-mrbe-example-user"
SECRET = "exaprov/example/s3-user-secret-access-key"
BUCKET_RE = re.compile(r"^module-repo-exafunction-mrbe-example-[a-z0-9]{8}$")
BLOCKS = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
          "RestrictPublicBuckets": True}


@pytest.fixture
def clients(aws: None) -> dict[str, Any]:
    return {s: boto3.client(s, region_name=REGION) for s in ("iam", "s3", "secretsmanager")}


def new_stack(tmp_path: Path, config: dict[str, Any] | None = None) -> Stack:
    # Build after `calls`: BUILTIN_HANDLERS only reach sessions created after they are appended.
    return Stack(tmp_path, [BACKEND_USER, BUCKET], config or {"name": "example"})


def keys(iam: Any) -> list[str]:
    return [k["AccessKeyId"] for k in iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]]


def stored(sm: Any) -> dict[str, str]:
    value: dict[str, str] = json.loads(sm.get_secret_value(SecretId=SECRET)["SecretString"])
    return value


def buckets(s3: Any) -> list[str]:
    return [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("module-repo-")]


def assert_one_key_stored(clients: dict[str, Any], stack: Stack) -> str:
    live = keys(clients["iam"])
    assert len(live) == 1
    assert stored(clients["secretsmanager"])["access_key_id"] == live[0]
    assert stack.outputs("backend-user")["access_key_id"] == live[0]
    return live[0]


def test_up_builds_user_key_secret_and_a_locked_down_bucket(
        tmp_path: Path, clients: dict[str, Any], calls: CallLog, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exaprov")
    iam, s3, sm = clients["iam"], clients["s3"], clients["secretsmanager"]
    stack = new_stack(tmp_path)
    plan = stack.plan()
    assert calls.mutating() == []
    assert sorted((c.action, c.address) for c in plan.changes) == [
        ("create", "backend-user.access-key"), ("create", "backend-user.secret"),
        ("create", "backend-user.user"), ("create", "bucket.bucket")]
    stack.up()

    user = iam.get_user(UserName=USER)["User"]
    assert user["Path"] == "/exafunction/"
    assert tag_dict(user["Tags"])["exaprov:deployment"] == "example"
    key_id = assert_one_key_stored(clients, stack)
    secret = sm.describe_secret(SecretId=SECRET)
    assert tag_dict(secret["Tags"])["exaprov:component"] == "backend-user"
    secret_key = stored(sm)["secret_access_key"]
    assert len(secret_key) >= 20

    # the secret access key is in Secrets Manager and nowhere else.
    state_text = stack.store.path.read_text()
    assert secret_key not in state_text
    assert stack.store.backup_path.exists() and secret_key not in stack.store.backup_path.read_text()
    assert secret_key not in caplog.text
    assert key_id in state_text and secret["ARN"] in state_text

    [name] = buckets(s3)
    assert BUCKET_RE.match(name)
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == REGION
    assert s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == BLOCKS
    assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    assert s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"] == [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]
    tags = tag_dict(s3.get_bucket_tagging(Bucket=name)["TagSet"])
    assert tags["exaprov:deployment"] == "example" and tags["exaprov:resource"] == "bucket"
    assert tags["owner"] == "exafunction"
    arn = f"arn:aws:s3:::{name}"
    assert json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])["Statement"] == [
        {"Sid": "BackendUserObjects", "Effect": "Allow", "Principal": {"AWS": user["Arn"]},
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": f"{arn}/*"},
        {"Sid": "BackendUserList", "Effect": "Allow", "Principal": {"AWS": user["Arn"]},
         "Action": "s3:ListBucket", "Resource": arn},
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]

    assert stack.outputs("backend-user") == {
        "iam_user_name": USER, "iam_user_arn": user["Arn"], "access_key_id": key_id,
        "secret_access_key_secret_arn": secret["ARN"]}
    assert stack.outputs("bucket") == {"s3_bucket_id": name, "s3_bucket_arn": arn,
                                       "s3_bucket_region": REGION}

    # a converged run changes nothing.
    calls.clear()
    assert stack.up().changes == []
    assert calls.mutating() == []
    assert stack.plan().changes == []
    assert stored(sm)["secret_access_key"] == secret_key


def test_lost_state_adopts_everything_without_rotating(
        tmp_path: Path, clients: dict[str, Any], calls: CallLog) -> None:
    first = new_stack(tmp_path / "a")
    first.up()
    key_id = keys(clients["iam"])[0]
    stack = new_stack(tmp_path / "b")  # an empty state file
    assert stack.plan().changes == []
    calls.clear()
    stack.up()
    assert calls.mutating() == []
    assert buckets(clients["s3"]) == [first.outputs("bucket")["s3_bucket_id"]]
    assert assert_one_key_stored(clients, stack) == key_id
    assert stack.outputs("bucket") == first.outputs("bucket")


def test_secret_deleted_by_hand_rotates_the_key(
        tmp_path: Path, clients: dict[str, Any], calls: CallLog) -> None:
    iam, sm = clients["iam"], clients["secretsmanager"]
    stack = new_stack(tmp_path)
    stack.up()
    old = keys(iam)[0]
    sm.delete_secret(SecretId=SECRET, ForceDeleteWithoutRecovery=True)
    plan = stack.plan()
    assert sorted((c.action, c.address) for c in plan.changes) == [
        ("create", "backend-user.access-key"), ("create", "backend-user.secret"),
        ("delete", "backend-user.stale-access-key")]
    stack.up()
    new = assert_one_key_stored(clients, stack)
    assert new != old
    calls.clear()
    stack.up()
    assert calls.mutating() == []


def test_leftover_keys_of_a_crash_are_deleted_before_a_new_one(
        tmp_path: Path, clients: dict[str, Any]) -> None:
    iam = clients["iam"]
    stack = new_stack(tmp_path)
    stack.up()
    kept = keys(iam)[0]
    # A key made after the stored one (as a crash after CreateAccessKey leaves it): deleted.
    leftover = iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
    [change] = stack.plan().changes
    assert (change.action, change.address) == ("delete", "backend-user.stale-access-key")
    assert leftover in change.detail and "crash" in change.detail
    stack.up()
    assert assert_one_key_stored(clients, stack) == kept

    # Two unstored keys and an emptied secret: both go before the new one (the limit is two).
    iam.create_access_key(UserName=USER)
    clients["secretsmanager"].put_secret_value(SecretId=SECRET, SecretString="{}")
    stack.up()
    assert assert_one_key_stored(clients, stack) not in (kept, leftover)
    assert "backend-user.stale-access-key" not in stack.state().resources


def test_drifted_bucket_settings_are_reported_and_put_back(
        tmp_path: Path, clients: dict[str, Any], calls: CallLog) -> None:
    s3 = clients["s3"]
    stack = new_stack(tmp_path)
    stack.up()
    name = stack.outputs("bucket")["s3_bucket_id"]
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={k: False for k in BLOCKS})
    s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={
        "Rules": [{"ObjectOwnership": "ObjectWriter"}]})
    s3.delete_bucket_encryption(Bucket=name)
    s3.delete_bucket_policy(Bucket=name)
    s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [
        {"Key": "exaprov:deployment", "Value": "example"}, {"Key": "exaprov:component", "Value": "bucket"},
        {"Key": "exaprov:resource", "Value": "bucket"}, {"Key": "team", "Value": "data"}]})

    calls.clear()
    plan = stack.plan()
    assert calls.mutating() == []
    assert sorted(c.detail for c in plan.changes) == [
        "bucket policy (missing)", "default encryption none → SSE-S3",
        "object ownership ObjectWriter → BucketOwnerEnforced",
        "public access blocks on: BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, "
        "RestrictPublicBuckets",
        f"tags Name={name}, owner=exafunction"]
    [row] = [o for o in plan.observed if o.address == "bucket.bucket"]
    assert len(row.drift) == 5

    stack.up()
    assert s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == BLOCKS
    assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    assert "Policy" in s3.get_bucket_policy(Bucket=name)
    assert tag_dict(s3.get_bucket_tagging(Bucket=name)["TagSet"])["team"] == "data"  # kept
    calls.clear()
    stack.up()
    assert calls.mutating() == []


@pytest.mark.parametrize("region,constraint", [("us-east-1", None), ("eu-west-1", "eu-west-1")])
def test_bucket_region_and_location_constraint(
        tmp_path: Path, aws: None, region: str, constraint: str | None) -> None:
    stack = new_stack(tmp_path, {"name": "example", "region": region})
    stack.up()
    s3 = boto3.client("s3", region_name=region)
    name = stack.outputs("bucket")["s3_bucket_id"]
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == constraint
    assert stack.outputs("bucket")["s3_bucket_region"] == region
    assert new_stack(tmp_path, {"name": "example", "region": region}).plan().changes == []


def test_a_failed_create_keeps_the_drawn_bucket_name(tmp_path: Path, clients: dict[str, Any]) -> None:
    stack = new_stack(tmp_path)

    def refuse(**_: Any) -> None:
        raise RuntimeError("connection lost")  # dies before CreateBucket reaches S3

    events = stack.aws.client("s3").meta.events
    events.register("before-call.s3.CreateBucket", refuse)
    with pytest.raises(Exception, match="connection lost"):
        stack.up()
    events.unregister("before-call.s3.CreateBucket", refuse)
    record = stack.state().resources["bucket.bucket"]
    assert record["status"] == INTENT and BUCKET_RE.match(record["name"])
    assert buckets(clients["s3"]) == []

    stack.up()
    assert buckets(clients["s3"]) == [record["name"]]
    assert stack.state().resources["bucket.bucket"]["id"] == record["name"]


def test_destroy_empties_every_version_then_deletes_everything(
        tmp_path: Path, clients: dict[str, Any]) -> None:
    iam, s3, sm = clients["iam"], clients["s3"], clients["secretsmanager"]
    stack = new_stack(tmp_path)
    stack.up()
    name = stack.outputs("bucket")["s3_bucket_id"]
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    # moto reads the TLS Deny as matching every object request (it knows no aws:SecureTransport):
    # write the objects without the policy, then put it back (destroy then has to remove it).
    policy = s3.get_bucket_policy(Bucket=name)["Policy"]
    s3.delete_bucket_policy(Bucket=name)
    for body in (b"one", b"two"):
        s3.put_object(Bucket=name, Key="modules/a", Body=body)
    s3.put_object(Bucket=name, Key="modules/b", Body=b"b")
    s3.delete_object(Bucket=name, Key="modules/b")  # a delete marker
    s3.put_bucket_policy(Bucket=name, Policy=policy)

    result = stack.destroy()
    [bucket_change] = [c for c in result.changes if c.address == "bucket.bucket"]
    assert bucket_change.detail == f"DATA LOSS: bucket {name} and its 2 objects (3 versions)"
    [secret_change] = [c for c in result.changes if c.address == "backend-user.secret"]
    assert "recoverable for 7 days" in secret_change.detail
    assert buckets(s3) == []
    with pytest.raises(ClientError, match="NoSuchEntity"):
        iam.get_user(UserName=USER)
    assert sm.describe_secret(SecretId=SECRET).get("DeletedDate")  # scheduled, not yet gone
    assert stack.state().resources == {} and stack.state().outputs == {}
    assert stack.destroy().changes == []  # nothing left: no error, nothing to do

    # `up` again: the scheduled secret is restored and gets the new user's key.
    stack.up()
    assert not sm.describe_secret(SecretId=SECRET).get("DeletedDate")
    assert_one_key_stored(clients, stack)
    assert BUCKET_RE.match(stack.outputs("bucket")["s3_bucket_id"])


def test_destroy_against_a_local_endpoint_deletes_the_secret_at_once(
        tmp_path: Path, clients: dict[str, Any]) -> None:
    stack = new_stack(tmp_path)
    stack.up()
    stack.aws.endpoint_url = "http://127.0.0.1:4566"  # clients are built: only the choice changes
    result = stack.destroy()
    [change] = [c for c in result.changes if c.address == "backend-user.secret"]
    assert "deleted at once" in change.detail
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        clients["secretsmanager"].describe_secret(SecretId=SECRET)


def test_destroy_without_state_finds_user_secret_and_bucket(tmp_path: Path, clients: dict[str, Any]) -> None:
    new_stack(tmp_path / "a").up()
    new_stack(tmp_path / "b").destroy()
    assert buckets(clients["s3"]) == []
    assert [u for u in clients["iam"].list_users()["Users"] if u["UserName"] == USER] == []


def test_a_foreign_user_of_the_same_name_is_refused_and_untouched(
        tmp_path: Path, clients: dict[str, Any]) -> None:
    iam = clients["iam"]
    iam.create_user(UserName=USER, Tags=[{"Key": "team", "Value": "other"}])
    stack = new_stack(tmp_path)
    with pytest.raises(InputError, match=USER) as info:
        stack.up()
    assert info.value.exit_code == 2
    assert keys(iam) == []
    assert tag_dict(iam.get_user(UserName=USER)["User"]["Tags"]) == {"team": "other"}
    assert buckets(clients["s3"]) == []
    stack.destroy()
    assert iam.get_user(UserName=USER)["User"]["Path"] == "/"


def test_no_backend_means_no_steps(tmp_path: Path, aws: None, calls: CallLog) -> None:
    stack = new_stack(tmp_path, {"name": "example", "module_repo_backend": None})
    result = stack.up()
    assert result.changes == [] and calls.calls == []
