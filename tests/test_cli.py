"""The command line: bad input exits 2 before any AWS request, locks, state files, init."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from exaprov.config import parse_config
from exaprov.deployment import Deployment, Target
from tests.bad_configs import BAD_CONFIGS, BAD_YAML_TEXTS
from tests.conftest import cli, tagged, write_config


@pytest.mark.parametrize(("case", "data", "key"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
@pytest.mark.parametrize("command", ["up", "plan"])
def test_bad_config_exits_2_naming_the_key_with_no_aws_request(
        workdir: Path, aws: None, calls: Any, command: str, case: str, data: dict[str, Any],
        key: str) -> None:
    write_config(data)
    result = cli(command, "--yes") if command == "up" else cli(command)
    assert result.exit_code == 2, result.output
    problems = [line for line in result.output.splitlines() if line.startswith(key)]
    assert problems, result.output
    assert "Traceback" not in result.output
    assert calls.calls == []
    assert not Path("state").exists()


@pytest.mark.parametrize(("case", "text", "needle"), BAD_YAML_TEXTS,
                         ids=[c[0] for c in BAD_YAML_TEXTS])
def test_unreadable_config_exits_2(workdir: Path, aws: None, calls: Any, case: str, text: str,
                                   needle: str) -> None:
    Path("exaprov.yaml").write_text(text)
    result = cli("up", "--yes")
    assert result.exit_code == 2
    assert needle in result.output
    assert calls.calls == []


def test_missing_config_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      calls: Any) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("status", "--config", "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml" in result.output
    assert calls.calls == []


def test_bad_region_flag_exits_2(workdir: Path, aws: None, calls: Any) -> None:
    result = cli("plan", "--region", "mars-north")
    assert result.exit_code == 2
    assert "region" in result.output and "mars-north" in result.output
    assert calls.calls == []


@pytest.mark.parametrize("damage", ["", "{\"format_version\": 1, \"lin", "[1, 2]",
                                    "{\"format_version\": 1}"])
def test_damaged_state_exits_2_and_is_left_untouched(workdir: Path, aws: None, calls: Any,
                                                     damage: str) -> None:
    state = Path("state/example.json")
    state.parent.mkdir(exist_ok=True)
    state.write_text(damage)
    result = cli("up", "--yes")
    assert result.exit_code == 2, result.output
    assert "state/example.json" in result.output
    assert state.read_text() == damage
    assert calls.mutating() == []


def test_state_written_by_a_newer_exaprov_is_refused(workdir: Path, aws: None) -> None:
    assert cli("up", "--yes").exit_code == 0
    path = Path("state/example.json")
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    result = cli("status")
    assert result.exit_code == 2 and "newer exaprov" in result.output


def test_state_of_another_region_is_refused(workdir: Path, aws: None, calls: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    calls.clear()
    result = cli("up", "--yes", "--region", "eu-west-1")
    assert result.exit_code == 2 and "us-west-1" in result.output
    assert calls.mutating() == []


def test_state_of_another_account_is_refused(workdir: Path, aws: None, calls: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    path = Path("state/example.json")
    data = json.loads(path.read_text())
    data["account_id"] = "999999999999"
    path.write_text(json.dumps(data))
    calls.clear()
    result = cli("up", "--yes")
    assert result.exit_code == 2 and "999999999999" in result.output
    assert calls.mutating() == []


def test_second_up_fails_at_once_on_the_lock_and_the_first_finishes(
        workdir: Path, ec2: Any) -> None:
    """Two `up` on one state: the second (another process) exits 2 naming the holder."""
    reached, release = threading.Event(), threading.Event()

    def hold_at_nat(model: Any, **_: Any) -> None:
        if model.name == "CreateNatGateway":
            reached.set()
            release.wait(timeout=60)

    deployment = Deployment(Target())
    deployment.aws.client("ec2").meta.events.register("before-call", hold_at_nat)
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(deployment.up()))
    first.start()
    try:
        assert reached.wait(timeout=60)
        second = subprocess.run([sys.executable, "-m", "exaprov", "up", "--yes"],
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
    finally:
        release.set()
        first.join(timeout=60)
    assert second.returncode == 2, second.stderr
    assert "locked by pid" in second.stderr and "exaprov" in second.stderr
    assert not results[0].failed
    assert len(tagged(ec2, "describe_nat_gateways", "NatGateways", filter_param="Filter")) == 1
    state = json.loads(Path("state/example.json").read_text())
    assert state["resources"]["nat.nat"]["status"] == "created"


def test_destroy_asks_and_without_a_terminal_deletes_nothing(workdir: Path, ec2: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    result = cli("destroy")
    assert result.exit_code == 2
    assert "--yes" in result.output
    assert len(tagged(ec2, "describe_vpcs", "Vpcs")) == 1


def test_init_writes_a_valid_config_and_keeps_an_existing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("init", "--name", "prod", "--region", "eu-west-1").exit_code == 0
    text = Path("exaprov.yaml").read_text()
    cfg = parse_config(yaml.safe_load(text))
    assert (cfg.name, cfg.region, cfg.cluster.cluster_name) == (
        "prod", "eu-west-1", "exafunction-cluster-prod")
    assert cli("init", "--name", "other").exit_code == 0
    assert Path("exaprov.yaml").read_text() == text  # kept
    assert cli("init", "--name", "other", "--force").exit_code == 0
    assert "name: other" in Path("exaprov.yaml").read_text()
    result = cli("init", "--name", "Bad_Name", "--force")
    assert result.exit_code == 2 and "name" in result.output


def test_json_output_is_json_only(workdir: Path, aws: None) -> None:
    assert cli("up", "--yes").exit_code == 0
    for command in (["status"], ["plan"], ["outputs"]):
        result = cli(*command, "--output", "json")
        assert result.exit_code == 0
        json.loads(result.stdout)


def test_help_does_not_import_boto3_or_pydantic() -> None:
    code = ("import sys; from exaprov.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('boto3', 'botocore', 'pydantic', 'moto') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_an_unknown_profile_is_a_message_not_a_traceback(workdir: Path) -> None:
    result = cli("plan", "--profile", "no-such-profile")
    assert result.exit_code == 2
    assert "no-such-profile" in result.output and "Traceback" not in result.output


def test_a_failed_step_names_itself_and_what_was_not_started(
        workdir: Path, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS refusing a create: exit 1, the step and operation named, dependants not started."""
    from botocore.exceptions import ClientError

    import exaprov.steps.network as network

    def refuse(ctx: Any) -> str:
        raise ClientError({"Error": {"Code": "VpcLimitExceeded", "Message": "too many"}},
                          "CreateVpc")

    monkeypatch.setattr(network, "ensure_vpc", lambda ctx: ctx.call(refuse, ctx))
    result = cli("up", "--yes")
    assert result.exit_code == 1
    assert "network: CreateVpc failed (VpcLimitExceeded): too many" in result.output
    assert "not started: nat" in result.output
    assert "run `exaprov up` again" in result.output
    assert "hint: the region's VPC quota" in result.output
