"""Security promises as tests: one full-stack `up`
(the example config, under umask 000) shared by the module, then each promise checked
against what AWS (moto) holds and what exaprov wrote to disk or printed."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.iam.models import AWSManagedPolicy, IAMBackend

from tests.conftest import REGION, _managed_policy_data, cli

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "EXAPROV_TIME_SCALE": "0.001"}


class Stack:
    """The deployed stack: its folder, its state and step outputs, and the secret values."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_path = folder / "state" / "example.json"
        self.state = json.loads(self.state_path.read_text())
        self.outputs: dict[str, Any] = self.state["outputs"]

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def secret_values(self) -> dict[str, str]:
        """The values that must never be written or printed: the RDS master password (in its
        RDS-managed secret) and the backend user's secret access key."""
        sm = self.client("secretsmanager")
        db = self.client("rds").describe_db_instances()["DBInstances"][0]
        password = json.loads(sm.get_secret_value(
            SecretId=db["MasterUserSecret"]["SecretArn"])["SecretString"])["password"]
        key = json.loads(sm.get_secret_value(
            SecretId=self.outputs["backend-user"]["secret_access_key_secret_arn"])["SecretString"])
        return {"rds password": password, "secret access key": key["secret_access_key"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`exaprov init --example full` then `up`, once for every test here (module scope: the
    function-scoped autouse fixtures of conftest are redone by hand for the setup)."""
    folder = tmp_path_factory.mktemp("security")
    with pytest.MonkeyPatch.context() as mp, mock_aws():
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            mp.delenv(var, raising=False)
        for var, value in AWS_ENV.items():
            mp.setenv(var, value)
        mp.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-aws-credentials"))
        mp.setattr(IAMBackend, "_init_aws_policies", lambda self: [  # as conftest does
            AWSManagedPolicy.from_data(name, self.account_id, self.region_name, data)
            for name, data in _managed_policy_data().items()])
        mp.chdir(folder)
        assert cli("init", "--example", "full").exit_code == 0
        old_umask = os.umask(0)  # the files stay private whatever the umask
        try:
            result = cli("up", "--yes")
            assert result.exit_code == 0, result.output
        finally:
            os.umask(old_umask)
        yield Stack(folder)


# -- the state on disk (no secret, private modes) -----------------------------------------------------------


def test_state_files_are_0600_and_their_folder_0700_under_umask_000(stack: Stack) -> None:
    folder = stack.state_path.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert {f.name for f in files} >= {"example.json", "example.json.backup", "example.json.lock"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_no_secret_value_in_any_state_file(stack: Stack) -> None:
    secrets = stack.secret_values()
    assert all(len(v) >= 8 for v in secrets.values())  # real values, so the search means something
    for path in stack.state_path.parent.iterdir():
        text = path.read_text(errors="replace")
        for what, value in secrets.items():
            assert value not in text, f"{what} in {path.name}"
    # What the state holds instead: references.
    assert stack.outputs["backend-user"]["secret_access_key_secret_arn"].startswith("arn:aws:secretsmanager:")


def test_debug_output_never_prints_a_secret(stack: Stack) -> None:
    """`--debug` logs every AWS call, and botocore's own DEBUG logs print request parameters
    and response bodies (GetSecretValue's value, PutSecretValue's SecretString)."""
    secrets = stack.secret_values()
    # The key is deleted so that `up` rotates it: CreateAccessKey and PutSecretValue run too.
    backend = stack.outputs["backend-user"]
    stack.client("iam").delete_access_key(UserName=backend["iam_user_name"],
                                          AccessKeyId=backend["access_key_id"])
    # As in a fresh process: earlier runs here without --debug raised botocore's level.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("botocore")]:
        logging.getLogger(name).setLevel(logging.NOTSET)
    runs = [cli("up", "--yes", "--debug"), cli("outputs", "--debug"),
            cli("outputs", "--debug", "--output", "json"), cli("status", "--debug")]
    assert all(r.exit_code == 0 for r in runs), [r.output[-2000:] for r in runs]
    assert "aws secretsmanager GetSecretValue(" in runs[0].output  # debug logging was on
    secrets.update(Stack(stack.folder).secret_values())  # the rotated key too
    for run in runs:
        for what, value in secrets.items():
            assert value not in run.output, what


# -- the bucket ------------------------------------------------------------------


def test_bucket_is_private_owner_enforced_encrypted_and_tls_only(stack: Stack) -> None:
    """The bucket has no versioning (a cache of modules), so none is checked."""
    s3 = stack.client("s3")
    bucket = stack.outputs["bucket"]["s3_bucket_id"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                     "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    tls = [s for s in policy["Statement"] if s["Effect"] == "Deny"
           and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)]
    assert tls and tls[0]["Action"] in ("s3:*", ["s3:*"])
    user_arn = stack.outputs["backend-user"]["iam_user_arn"]
    allows = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allows and all(s["Principal"] == {"AWS": user_arn} for s in allows)


# -- the database --------------------------------------------------------------------------


def test_database_is_private_encrypted_and_in_the_database_subnets(stack: Stack) -> None:
    db = stack.client("rds").describe_db_instances()["DBInstances"][0]
    assert db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True
    assert "MasterUserSecret" in db  # the password lives in Secrets Manager, managed by RDS
    subnets = {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]}
    network = stack.outputs["network"]
    assert subnets and subnets <= set(network["database_subnet_ids"]) | set(network["private_subnet_ids"])
    assert not subnets & set(network["public_subnet_ids"])


# -- the cluster ---------------------------------------------------------------------------


def test_every_launch_template_version_requires_imdsv2_with_hop_limit_1(stack: Stack) -> None:
    """exaprov's templates (one per node group); EKS's own copies (`eks-…`) are made from them."""
    ec2 = stack.client("ec2")
    templates = ec2.describe_launch_templates(Filters=[
        {"Name": "tag:exaprov:deployment", "Values": ["example"]}])["LaunchTemplates"]
    eks = stack.client("eks")
    cluster = stack.outputs["cluster"]["cluster_name"]
    groups = [eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
              for name in eks.list_nodegroups(clusterName=cluster)["nodegroups"]]
    assert len(groups) == 6  # the example config: four system groups and two runner pools
    assert {g["launchTemplate"]["id"] for g in groups} == {t["LaunchTemplateId"] for t in templates}
    for template in templates:
        versions = ec2.describe_launch_template_versions(
            LaunchTemplateId=template["LaunchTemplateId"])["LaunchTemplateVersions"]
        assert versions
        for version in versions:
            meta = version["LaunchTemplateData"]["MetadataOptions"]
            assert meta["HttpTokens"] == "required", template["LaunchTemplateName"]
            assert int(meta["HttpPutResponseHopLimit"]) == 1, template["LaunchTemplateName"]


def test_cluster_secrets_are_encrypted_with_the_deployments_kms_key(stack: Stack) -> None:
    cluster = stack.client("eks").describe_cluster(
        name=stack.outputs["cluster"]["cluster_name"])["cluster"]
    config = cluster["encryptionConfig"]
    assert [c["resources"] for c in config] == [["secrets"]]
    key_arn = config[0]["provider"]["keyArn"]
    assert key_arn == stack.outputs["kms"]["kms_key_arn"]
    key = stack.client("kms").describe_key(KeyId=key_arn)["KeyMetadata"]
    assert key["KeyState"] == "Enabled" and key.get("KeyManager", "CUSTOMER") == "CUSTOMER"


# -- every policy exaprov wrote: no `*` principal ------------------------------------------


def _statements(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, str):
        document = json.loads(document)
    statements = document.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def _anyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any(v == "*" or (isinstance(v, list) and "*" in v) for v in principal.values())
    return False


def _policies(stack: Stack) -> dict[str, Any]:
    """Every policy document in this account: everything in it was written by exaprov."""
    iam, kms, s3 = stack.client("iam"), stack.client("kms"), stack.client("s3")
    found: dict[str, Any] = {}
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        found[f"trust of role {name}"] = role["AssumeRolePolicyDocument"]
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            found[f"role {name} inline {policy}"] = iam.get_role_policy(
                RoleName=name, PolicyName=policy)["PolicyDocument"]
    for user in iam.list_users()["Users"]:
        name = user["UserName"]
        for policy in iam.list_user_policies(UserName=name)["PolicyNames"]:
            found[f"user {name} inline {policy}"] = iam.get_user_policy(
                UserName=name, PolicyName=policy)["PolicyDocument"]
    for policy in iam.list_policies(Scope="Local")["Policies"]:
        version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
        found[f"policy {policy['PolicyName']}"] = version["PolicyVersion"]["Document"]
    for key in kms.list_keys()["Keys"]:
        found[f"key policy of {key['KeyId']}"] = kms.get_key_policy(
            KeyId=key["KeyId"], PolicyName="default")["Policy"]
    for bucket in s3.list_buckets()["Buckets"]:
        found[f"bucket policy of {bucket['Name']}"] = s3.get_bucket_policy(
            Bucket=bucket["Name"])["Policy"]
    return found


def test_no_policy_exaprov_wrote_lets_anyone_in(stack: Stack) -> None:
    """A `*` principal is allowed in one shape only: a Deny (it can take access away, never
    grant it), as the bucket's deny-non-TLS statement is. Any Allow to `*` fails."""
    policies = _policies(stack)
    kinds = {what.split(" ")[0] for what in policies}
    assert {"trust", "role", "key", "bucket"} <= kinds  # every kind was really read
    for what, document in policies.items():
        for statement in _statements(document):
            if _anyone(statement.get("Principal")) or "NotPrincipal" in statement:
                assert statement["Effect"] == "Deny", f"{what}: {statement}"
