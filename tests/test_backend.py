"""The module repository backend and `exaprov outputs`, through the CLI."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, cli, write_config

BACKEND_ID = "exafunction-mrbe-example"
# One small pool keeps these runs short; the backend does not depend on the pools.
SMALL = {"runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge", "min_size": 0,
                           "max_size": 1}]}


def secret_values() -> list[str]:
    """Every secret string the deployment has in Secrets Manager (RDS password, S3 key)."""
    sm = boto3.client("secretsmanager", region_name=REGION)
    values = []
    for secret in sm.list_secrets()["SecretList"]:
        data = json.loads(sm.get_secret_value(SecretId=secret["ARN"])["SecretString"])
        values += [data[k] for k in ("password", "secret_access_key") if data.get(k)]
    return values


@pytest.fixture
def deployed(workdir: Path, aws: None) -> Path:
    write_config({"name": "example", "cluster": SMALL})
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    return workdir


def test_no_secret_lands_in_state_or_plain_outputs(deployed: Path) -> None:
    values = secret_values()
    assert len(values) == 2  # the RDS-managed password and the S3 user's secret key
    for path in Path("state").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not any(v in text for v in values), path
    for fmt in ("table", "json", "tfvars", "env"):
        result = cli("outputs", "--output", fmt)
        assert result.exit_code == 0, result.output
        assert not any(v in result.output for v in values), fmt
    revealed = cli("outputs", "--output", "json", "--reveal")
    assert all(v in revealed.stdout for v in values)


def test_outputs_json_carries_what_the_kubernetes_deployment_reads(deployed: Path) -> None:
    groups = json.loads(cli("outputs", "--output", "json").stdout)
    cluster = groups["exafunction_cluster"]
    eks = boto3.client("eks", region_name=REGION)
    live = eks.describe_cluster(name=cluster["cluster_name"])["cluster"]
    assert cluster["cluster_endpoint"] == live["endpoint"]
    assert cluster["cluster_oidc_issuer_url"] == live["identity"]["oidc"]["issuer"]
    backend = groups["exafunction_module_repo_backend"]
    rds = boto3.client("rds", region_name=REGION).describe_db_instances(
        DBInstanceIdentifier=f"{BACKEND_ID}-rds")["DBInstances"][0]
    assert (backend["rds_address"], backend["rds_port"]) == (rds["Endpoint"]["Address"], 5432)
    assert backend["rds_username"] == "exafunction"
    assert backend["rds_password"] is None
    assert backend["rds_password_secret_arn"] == rds["MasterUserSecret"]["SecretArn"]
    assert re.fullmatch(rf"module-repo-{BACKEND_ID}-[a-z0-9]{{8}}", backend["s3_bucket_id"])
    iam = boto3.client("iam", region_name=REGION)
    keys = iam.list_access_keys(UserName=f"{BACKEND_ID}-user")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [backend["s3_iam_user_access_key"]]


def test_tfstate_is_terraform_v4_with_every_output_of_spec(deployed: Path) -> None:
    result = cli("outputs", "--output", "tfstate", "--file", "cloud.tfstate")
    assert result.exit_code == 0, result.output
    assert "0600" in result.output
    path = Path("cloud.tfstate")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = json.loads(path.read_text())
    assert state["version"] == 4 and state["resources"] == []
    assert re.fullmatch(r"[0-9a-f-]{36}", state["lineage"]) and isinstance(state["serial"], int)
    outputs = state["outputs"]
    assert set(outputs) == {"exafunction_network", "exafunction_cluster",
                            "exafunction_module_repo_backend", "exafunction_peering"}
    for output in outputs.values():
        assert "value" in output and "type" in output
    cluster_keys = {"cluster_name", "cluster_arn", "cluster_primary_security_group_id",
                    "cluster_security_group_id", "node_security_group_id",
                    "cluster_oidc_issuer_url", "oidc_provider", "oidc_provider_arn"}
    assert cluster_keys <= set(outputs["exafunction_cluster"]["value"])
    assert all(outputs["exafunction_cluster"]["value"][k] for k in cluster_keys)
    backend = outputs["exafunction_module_repo_backend"]["value"]
    assert set(backend) == {"rds_address", "rds_port", "rds_username", "rds_password",
                            "s3_bucket_id", "s3_iam_user_access_key", "s3_iam_user_secret_key"}
    assert set(secret_values()) == {backend["rds_password"], backend["s3_iam_user_secret_key"]}
    assert outputs["exafunction_module_repo_backend"]["type"][0] == "object"
    assert outputs["exafunction_module_repo_backend"]["type"][1]["rds_port"] == "number"
    assert cli("outputs", "--output", "tfstate").exit_code == 2  # --file is required


def test_local_backend_creates_no_database_bucket_or_user(workdir: Path, aws: None) -> None:
    write_config({"name": "example", "cluster": SMALL, "module_repo_backend": None})
    assert cli("up", "--yes").exit_code == 0
    assert boto3.client("rds", region_name=REGION).describe_db_instances()["DBInstances"] == []
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
    iam = boto3.client("iam", region_name=REGION)
    assert iam.list_users(PathPrefix="/exafunction/")["Users"] == []
    assert json.loads(cli("outputs", "--output", "json").stdout)[
        "exafunction_module_repo_backend"] == {}


def test_dropping_the_backend_is_a_planned_data_loss_confirmed(deployed: Path) -> None:
    write_config({"name": "example", "cluster": SMALL, "module_repo_backend": None})
    protected = cli("plan", "--output", "json")  # DeletionProtection (the default) refuses it
    assert protected.exit_code == 1 and "DeletionProtection" in protected.output
    write_config({"name": "example", "cluster": SMALL,
                  "module_repo_backend": {"db_deletion_protection": False}})
    assert cli("up", "--yes").exit_code == 0
    write_config({"name": "example", "cluster": SMALL, "module_repo_backend": None})
    plan = json.loads(cli("plan", "--output", "json").stdout)
    deletes = [c for c in plan["changes"] if c["action"] == "delete"]
    assert {c["address"].split(".")[0] for c in deletes} >= {"database", "bucket", "backend-user"}
    assert any("DATA LOSS" in c["detail"] for c in deletes)
    refused = cli("up")  # no terminal to confirm on
    assert refused.exit_code == 2
    rds = boto3.client("rds", region_name=REGION)
    assert len(rds.describe_db_instances()["DBInstances"]) == 1
    assert cli("up", "--yes").exit_code == 0
    assert rds.describe_db_instances()["DBInstances"] == []
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []


def test_destroy_with_objects_leaves_no_backend(deployed: Path) -> None:
    bucket = json.loads(cli("outputs", "--output", "json").stdout)[
        "exafunction_module_repo_backend"]["s3_bucket_id"]
    s3 = boto3.client("s3", region_name=REGION)
    for n in range(3):
        s3.put_object(Bucket=bucket, Key=f"modules/{n}", Body=b"x")
    assert cli("destroy", "--yes", "--disable-deletion-protection").exit_code == 0
    assert s3.list_buckets()["Buckets"] == []
    assert boto3.client("rds", region_name=REGION).describe_db_instances()["DBInstances"] == []
    iam = boto3.client("iam", region_name=REGION)
    assert iam.list_users(PathPrefix="/exafunction/")["Users"] == []
    sm = boto3.client("secretsmanager", region_name=REGION)
    live = [s for s in sm.list_secrets()["SecretList"] if "DeletedDate" not in s]
    assert live == []


def test_second_up_with_the_backend_makes_no_mutating_call(deployed: Path, calls: Any) -> None:
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []


def test_a_lost_state_adopts_bucket_database_and_user(deployed: Path) -> None:
    before = json.loads(cli("outputs", "--output", "json").stdout)["exafunction_module_repo_backend"]
    for leftover in Path("state").glob("example.json*"):
        leftover.unlink()
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    s3 = boto3.client("s3", region_name=REGION)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [before["s3_bucket_id"]]
    rds = boto3.client("rds", region_name=REGION)
    assert len(rds.describe_db_instances()["DBInstances"]) == 1
    iam = boto3.client("iam", region_name=REGION)
    assert len(iam.list_users(PathPrefix="/exafunction/")["Users"]) == 1
    keys = iam.list_access_keys(UserName=f"{BACKEND_ID}-user")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [before["s3_iam_user_access_key"]]  # not rotated
    after = json.loads(cli("outputs", "--output", "json").stdout)["exafunction_module_repo_backend"]
    assert after == before
