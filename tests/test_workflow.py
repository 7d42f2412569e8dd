"""The daily workflow: config schema, init examples, unlock, push/pull, kubeconfig, token."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from exaprov.config import parse_config
from tests.conftest import REGION, cli, write_config

SMALL = {"name": "example", "module_repo_backend": None,
         "cluster": {"runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge",
                                       "min_size": 0, "max_size": 1}]}}


def test_config_schema_describes_every_key_and_forbids_others() -> None:
    result = cli("config", "schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert {"name", "region", "tags", "network", "cluster", "module_repo_backend"} <= set(
        schema["properties"])
    assert schema.get("additionalProperties") is False
    assert "name" in schema["required"]


def test_init_minimal_and_full_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("init", "--example", "minimal", "--name", "tiny").exit_code == 0
    minimal = yaml.safe_load(Path("exaprov.yaml").read_text())
    assert set(minimal) == {"name", "region"}
    assert cli("init", "--example", "full", "--force").exit_code == 0
    full = yaml.safe_load(Path("exaprov.yaml").read_text())
    assert {"network", "cluster", "module_repo_backend"} <= set(full)
    assert parse_config(full) == parse_config({"name": "example"})


def test_unlock_clears_a_dead_holders_lock_after_confirmation(workdir: Path) -> None:
    state = Path("state/example.json")
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from exaprov.state import LocalStateStore
        with LocalStateStore(Path({str(state)!r})).lock("exaprov up --yes"):
            os._exit(9)  # dies holding it, as a SIGKILL would
    """)
    subprocess.run([sys.executable, "-c", code], check=False)
    refused = cli("state", "unlock")  # no terminal to confirm on
    assert refused.exit_code == 2
    assert "exaprov up --yes" in Path("state/example.json.lock").read_text()
    result = cli("state", "unlock", "--yes")
    assert result.exit_code == 0 and "exaprov up --yes" in result.output
    assert Path("state/example.json.lock").read_text() == ""
    assert "No lock" in cli("state", "unlock", "--yes").output


def test_unlock_refuses_a_live_holder(workdir: Path) -> None:
    from exaprov.state import LocalStateStore

    with LocalStateStore(Path("state/example.json")).lock("exaprov up"):
        result = cli("state", "unlock", "--yes")
    assert result.exit_code == 2 and "still running" in result.output


def test_kubeconfig_and_token_after_up(workdir: Path, aws: None, tmp_path: Path) -> None:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    kubeconfig = tmp_path / "kube" / "config"
    other = {"apiVersion": "v1", "kind": "Config",
             "clusters": [{"name": "other", "cluster": {"server": "https://other"}}],
             "users": [{"name": "other", "user": {}}],
             "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}]}
    kubeconfig.parent.mkdir()
    kubeconfig.write_text(yaml.safe_dump(other))
    result = cli("kubeconfig", "--file", str(kubeconfig), "--alias", "exa", "--use-exaprov-token")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(kubeconfig.read_text())
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    eks = boto3.client("eks", region_name=REGION)
    cluster = eks.describe_cluster(name="exafunction-cluster-example")["cluster"]
    assert {c["name"] for c in data["clusters"]} == {"other", cluster["arn"]}
    ours = next(c for c in data["clusters"] if c["name"] == cluster["arn"])
    assert ours["cluster"]["server"] == cluster["endpoint"]
    assert data["current-context"] == "exa"
    user = next(u for u in data["users"] if u["name"] == cluster["arn"])
    assert user["user"]["exec"]["command"] == "exaprov"
    assert "token" in user["user"]["exec"]["args"]

    token = cli("token", "--cluster-name", "exafunction-cluster-example", "--region", REGION)
    assert token.exit_code == 0
    credential: dict[str, Any] = json.loads(token.stdout)
    assert credential["kind"] == "ExecCredential"
    assert credential["status"]["token"].startswith("k8s-aws-v1.")


def test_state_push_to_s3_then_work_from_there_and_pull_back(workdir: Path, aws: None) -> None:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="team-state", CreateBucketConfiguration={"LocationConstraint": REGION})
    url = "s3://team-state/exaprov/example.json"
    result = cli("state", "push", url)
    assert result.exit_code == 0, result.output
    local = json.loads(Path("state/example.json").read_text())
    remote = json.loads(s3.get_object(Bucket="team-state", Key="exaprov/example.json")["Body"].read())
    assert remote["lineage"] == local["lineage"] and remote["resources"] == local["resources"]
    assert s3.head_object(Bucket="team-state", Key="exaprov/example.json")[
        "ServerSideEncryption"] == "AES256"

    status = json.loads(cli("status", "--state", url, "--output", "json").stdout)
    assert status["in_sync"] is True  # the same deployment, read from S3

    write_config({**SMALL, "state": url})  # or in the config
    assert cli("up", "--yes").exit_code == 0
    Path("state/example.json").unlink()
    assert cli("state", "pull", url, "--state", "state/example.json").exit_code == 0
    assert json.loads(Path("state/example.json").read_text())["lineage"] == local["lineage"]


def test_a_held_s3_lock_names_its_holder_and_unlock_clears_it(workdir: Path, aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="team-state", CreateBucketConfiguration={"LocationConstraint": REGION})
    url = "s3://team-state/exaprov/example.json"
    write_config({**SMALL, "state": url})
    s3.put_object(Bucket="team-state", Key="exaprov/example.json.lock", Body=json.dumps(
        {"owner": "ana", "host": "laptop-7", "pid": 4242, "command": "exaprov up",
         "since": "2026-11-25T10:00:00+00:00"}).encode())
    result = cli("up", "--yes")
    assert result.exit_code == 2 and "laptop-7" in result.output and "4242" in result.output
    assert cli("state", "unlock", "--yes").exit_code == 0
    assert cli("up", "--yes").exit_code == 0
