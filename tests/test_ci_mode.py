"""What a CI pipeline relies on: exit codes that tell drift apart, and a saved plan that `up`
applies exactly or not at all."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import boto3

from tests.conftest import REGION, CallLog, cli, write_config

SMALL = {"name": "example", "module_repo_backend": None,
         "cluster": {"runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge",
                                       "min_size": 0, "max_size": 1}]}}


def with_pool(suffix: str) -> dict[str, Any]:
    data = json.loads(json.dumps(SMALL))
    data["cluster"]["runner_pools"].append({"suffix": suffix, "node_instance_type": "m5.large",
                                            "min_size": 0, "max_size": 1})
    return data


def node_groups() -> list[str]:
    eks = boto3.client("eks", region_name=REGION)
    return sorted(eks.list_nodegroups(clusterName="exafunction-cluster-example")["nodegroups"])


def test_detailed_exitcode_is_2_for_changes_0_in_sync_and_1_for_any_error(
        workdir: Path, aws: None) -> None:
    write_config(SMALL)
    assert cli("plan", "--detailed-exitcode").exit_code == 2  # nothing built yet
    assert cli("plan").exit_code == 0  # without the flag, changes are not an error
    assert cli("up", "--yes").exit_code == 0
    assert cli("plan", "--detailed-exitcode").exit_code == 0
    assert cli("status", "--detailed-exitcode").exit_code == 0

    ec2 = boto3.client("ec2", region_name=REGION)
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "tag:exaprov:deployment",
                                         "Values": ["example"]}])["Vpcs"][0]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": False})  # drift
    drift = cli("status", "--detailed-exitcode")
    assert drift.exit_code == 2, drift.output
    assert cli("status").exit_code == 0

    # Bad input is exit 2 normally, but 2 means "changes" here: it must be 1.
    write_config({**SMALL, "region": "us-west-1", "cluster": {"cluster_version": 1.3}})
    assert cli("plan").exit_code == 2
    assert cli("plan", "--detailed-exitcode").exit_code == 1
    assert cli("status", "--detailed-exitcode").exit_code == 1
    write_config(SMALL)
    assert cli("plan", "--detailed-exitcode", "--output", "bogus").exit_code == 1  # a usage error


def test_up_applies_a_saved_plan_exactly(workdir: Path, aws: None, calls: CallLog) -> None:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    write_config(with_pool("gpu"))
    planned = cli("plan", "--out", "reviewed.plan")
    assert planned.exit_code == 0, planned.output
    assert stat.S_IMODE(Path("reviewed.plan").stat().st_mode) == 0o600
    document = json.loads(Path("reviewed.plan").read_text())
    assert any(c["action"] == "create" and "runner-gpu" in c["address"]
               for c in document["changes"])
    applied = cli("up", "--plan", "reviewed.plan")  # no --yes: the reviewed plan is the consent
    assert applied.exit_code == 0, applied.output
    assert "runner-gpu" in node_groups()
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_up_refuses_a_plan_the_config_has_moved_past(workdir: Path, aws: None,
                                                     calls: CallLog) -> None:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    write_config(with_pool("gpu"))
    assert cli("plan", "--out", "reviewed.plan").exit_code == 0
    write_config(with_pool("big"))  # edited after the review
    before = node_groups()
    calls.clear()
    refused = cli("up", "--plan", "reviewed.plan")
    assert refused.exit_code == 2, refused.output
    assert "config changed since the plan was written" in refused.output
    assert calls.mutating() == []
    assert node_groups() == before


def test_up_refuses_a_plan_when_the_deployment_changed_since(workdir: Path, aws: None,
                                                             calls: CallLog) -> None:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    write_config(with_pool("gpu"))
    assert cli("plan", "--out", "reviewed.plan").exit_code == 0
    assert cli("up", "--yes").exit_code == 0  # someone applied it (or more) in between
    calls.clear()
    refused = cli("up", "--plan", "reviewed.plan")
    assert refused.exit_code == 2, refused.output
    assert "deployment changed since the plan was written" in refused.output
    assert calls.mutating() == []


def test_up_refuses_a_plan_when_aws_drifted_since(workdir: Path, aws: None,
                                                  calls: CallLog) -> None:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    assert cli("plan", "--out", "reviewed.plan").exit_code == 0  # "no changes", reviewed
    eks = boto3.client("eks", region_name=REGION)
    eks.delete_nodegroup(clusterName="exafunction-cluster-example", nodegroupName="prometheus")
    calls.clear()
    refused = cli("up", "--plan", "reviewed.plan")
    assert refused.exit_code == 2, refused.output
    assert "AWS changed since the plan was written" in refused.output
    assert "prometheus" in refused.output
    assert calls.mutating() == []


def test_a_file_that_is_not_a_plan_is_bad_input(workdir: Path, aws: None, calls: CallLog) -> None:
    Path("other.plan").write_text(json.dumps({"format": "something else"}))
    Path("junk.plan").write_text("plan: yes\n")
    for path, words in (("other.plan", "not a plan"), ("junk.plan", "not a readable plan file"),
                        ("absent.plan", "no such file")):
        result = cli("up", "--plan", path)
        assert result.exit_code == 2 and words in result.output and path in result.output
    assert calls.calls == []


def test_read_commands_without_a_state_name_the_path_and_the_missing_sandbox_flag(
        workdir: Path, aws: None, calls: CallLog) -> None:
    write_config(SMALL)
    for command in ("outputs", "kubeconfig", "status"):
        result = cli(command)
        assert result.exit_code == 2, result.output
        assert "state/example.json" in result.output and "`exaprov up`" in result.output
    assert calls.calls == []

    # The deployment was built in the sandbox: its state lives apart from real ones.
    assert cli("up", "--yes").exit_code == 0
    sandbox_state = Path("state/sandbox/deployments/example.json")
    sandbox_state.parent.mkdir(parents=True)
    Path("state/example.json").rename(sandbox_state)
    calls.clear()
    for command in ("outputs", "kubeconfig", "status"):
        result = cli(command, "-o", "json") if command == "outputs" else cli(command)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""  # nothing a script could take for empty outputs
        assert f"add --sandbox (`exaprov {command} --sandbox`)" in result.output, result.output
    assert calls.calls == []


def test_suggested_commands_carry_sandbox_in_a_sandbox_run() -> None:
    from exaprov import cli as cli_module

    text = "run `exaprov up` again; `exaprov destroy --yes` or `exaprov sandbox stop`"
    token = cli_module._sandbox_run.set(True)
    try:
        assert cli_module.suggest(text) == ("run `exaprov up --sandbox` again; `exaprov destroy "
                                            "--yes --sandbox` or `exaprov sandbox stop`")
        assert cli_module.suggest("`exaprov up --sandbox`") == "`exaprov up --sandbox`"
    finally:
        cli_module._sandbox_run.reset(token)
    assert cli_module.suggest(text) == text


def test_init_mentions_the_sandbox(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert result.exit_code == 0 and "`exaprov up --sandbox`" in result.output


def test_debug_prints_one_line_per_aws_call_with_parameter_names_only(
        workdir: Path, aws: None, calls: CallLog) -> None:
    write_config(SMALL)
    assert cli("up", "--yes").exit_code == 0
    calls.clear()
    result = cli("plan", "--debug")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    call_lines = [line for line in lines if line.startswith("DEBUG exaprov.aws: aws ")]
    assert len(call_lines) == len(calls.calls)  # one line per call, each call once
    assert not [line for line in lines if "botocore" in line or "urllib3" in line]
    describe = next(line for line in call_lines if " ec2 DescribeVpcs(" in line)
    assert "DescribeVpcs(Filters): 200 in " in describe, describe
    assert not [line for line in call_lines if "body" in line or "headers" in line]
    assert len(lines) < 2 * len(call_lines) + 20  # exaprov's own lines, not botocore's internals
