"""The sandbox as a service the user controls: `exaprov sandbox start | env | status | stop`,
one emulator per user (not per folder), reachable with the user's own tools."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result

from exaprov import sandbox
from tests.conftest import cli

pytestmark = pytest.mark.e2e

STARTED = re.compile(r"started the sandbox emulator at (http://127\.0\.0\.1:(\d+)) \(pid (\d+)\); "
                     r"`exaprov sandbox stop` stops it")


@pytest.fixture
def stopped_afterwards() -> Iterator[None]:
    yield
    sandbox.stop()


def exaprov_command() -> list[str]:
    script = shutil.which("exaprov")
    return [script] if script else [sys.executable, "-m", "exaprov"]


def test_start_is_idempotent_and_listens_on_loopback_only(stopped_afterwards: None,
                                                          tmp_path: Path) -> None:
    first = cli("sandbox", "start")
    assert first.exit_code == 0, first.output
    found = STARTED.search(first.stderr)
    assert found, first.stderr
    endpoint, port, pid = found.group(1), int(found.group(2)), int(found.group(3))
    second = cli("sandbox", "start")
    assert second.exit_code == 0
    assert f"already running at {endpoint} (pid {pid})" in second.stderr
    assert not STARTED.search(second.stderr)
    status = json.loads(cli("sandbox", "status", "--output", "json").stdout)
    assert (status["pid"], status["endpoint"], status["running"]) == (pid, endpoint, True)
    # Its record is the user's (here the test's XDG_STATE_HOME), not the working folder's.
    record = tmp_path / "xdg-state" / "exaprov" / "sandbox" / "server.json"
    assert json.loads(record.read_text())["pid"] == pid
    assert not Path("state", "sandbox", "server.json").exists()
    # Bound to 127.0.0.1 only: another loopback address finds nothing listening.
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", port), timeout=5):
        pass


def test_one_emulator_per_user_whatever_the_folder(stopped_afterwards: None, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    endpoint = STARTED.search(cli("sandbox", "start").stderr).group(1)
    monkeypatch.chdir(tmp_path / "b")
    assert f"already running at {endpoint}" in cli("sandbox", "start").stderr
    # ... and a --sandbox command in the other folder uses it without starting another.
    Path("exaprov.yaml").write_text("name: other\nregion: us-west-1\n")
    plan = cli("plan", "--sandbox")
    assert plan.exit_code == 0, plan.output
    assert not STARTED.search(plan.stderr), plan.stderr
    assert sandbox.status()["endpoint"] == endpoint


def test_a_sandbox_command_says_when_it_starts_the_emulator(stopped_afterwards: None,
                                                            workdir: Path) -> None:
    first = cli("plan", "--sandbox")
    found = STARTED.search(first.stderr)
    assert found, first.stderr
    assert sandbox.status()["pid"] == int(found.group(3))
    again = cli("plan", "--sandbox")
    assert again.exit_code == 0, again.output
    assert not STARTED.search(again.stderr)  # running already: silent


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A shell with none of the test's AWS settings: only what `eval` gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": str(cwd / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "no-aws-credentials")})
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def _stop(*args: str) -> Result:
    return cli("sandbox", "stop", *args)


def test_env_reaches_the_sandbox_with_aws_cli_and_boto3_and_stop_warns(
        stopped_afterwards: None, workdir: Path) -> None:
    up = cli("up", "--sandbox", "--yes")
    assert up.exit_code == 0, up.output
    state = json.loads(Path("state/sandbox/deployments/example.json").read_text())
    vpc_id = state["resources"]["network.vpc"]["id"]

    exports = cli("sandbox", "env")
    assert exports.exit_code == 0
    names = re.findall(r"^export (\w+)=", exports.stdout, flags=re.M)
    assert names == ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                     "AWS_DEFAULT_REGION"]
    assert f"AWS_ENDPOINT_URL={sandbox.status()['endpoint']}" in exports.stdout
    assert "AWS_REGION=us-west-1" in exports.stdout  # the region of ./exaprov.yaml

    evaluated = f'eval "$({shlex.join(exaprov_command())} sandbox env)"'
    boto = _shell(f"{evaluated} && {shlex.quote(sys.executable)} -c "
                  "'import boto3; print(boto3.client(\"ec2\").describe_vpcs()[\"Vpcs\"])'", workdir)
    assert boto.returncode == 0, boto.stderr
    assert vpc_id in boto.stdout
    if shutil.which("aws") is None:
        pytest.skip("aws-cli is not installed: checked with boto3 only")
    aws = _shell(f"{evaluated} && aws ec2 describe-vpcs --output json", workdir)
    assert aws.returncode == 0, aws.stderr
    vpcs = {v["VpcId"]: v for v in json.loads(aws.stdout)["Vpcs"]}
    assert {"Key": "exaprov:deployment", "Value": "example"} in vpcs[vpc_id]["Tags"]

    # A deployment lives in it: without a terminal, stop refuses (at once) and names it.
    refused = _stop()
    assert refused.exit_code == 2, refused.output
    assert "holds 1 deployment(s): example (us-west-1)" in refused.stderr
    assert "--yes" in refused.stderr
    assert sandbox.status()["running"] is True
    stopped = _stop("--yes")
    assert stopped.exit_code == 0 and "Sandbox emulator stopped." in stopped.stdout
    assert sandbox.status() is None


def test_stop_without_deployments_does_not_ask(stopped_afterwards: None) -> None:
    cli("sandbox", "start")
    pid = sandbox.status()["pid"]
    stopped = _stop()
    assert stopped.exit_code == 0 and "Sandbox emulator stopped." in stopped.stdout
    assert not sandbox._is_our_emulator(pid)
    assert "No sandbox emulator was running." in _stop().stdout


def _tag_a_role(deployment: str) -> None:
    """What every deployment leaves in IAM (global): a role with its tag."""
    import boto3

    iam = boto3.client("iam", endpoint_url=sandbox.status()["endpoint"], region_name="us-east-1",
                       **sandbox.SANDBOX_CREDENTIALS)
    iam.create_role(RoleName=f"{deployment}-cluster", AssumeRolePolicyDocument="{}",
                    Tags=[{"Key": "exaprov:deployment", "Value": deployment}])


def _answer_in_a_terminal(args: list[str], answer: bytes, cwd: Path) -> tuple[int, str]:
    """Run the command on a pseudo-terminal; type `answer` once it asks [y/N]."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen([*exaprov_command(), *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, close_fds=True)
    os.close(slave)
    seen, answered = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(master, answer)
            answered = True
        if proc.poll() is not None and not ready:
            break
    os.close(master)
    return proc.wait(timeout=30), seen.decode(errors="replace")


def test_stop_names_deployments_anywhere_and_asks_on_a_terminal(stopped_afterwards: None,
                                                                tmp_path: Path) -> None:
    cli("sandbox", "start")
    _tag_a_role("elsewhere")  # a deployment in a region this folder knows nothing of
    code, shown = _answer_in_a_terminal(["sandbox", "stop"], b"n\n", tmp_path)
    assert code == 2, shown
    assert "holds 1 deployment(s): elsewhere." in shown and "[y/N]" in shown
    assert "Not stopped." in shown
    assert sandbox.status()["running"] is True
    code, shown = _answer_in_a_terminal(["sandbox", "stop"], b"y\n", tmp_path)
    assert code == 0 and "Sandbox emulator stopped." in shown, shown
    assert sandbox.status() is None


def test_stop_also_ends_a_per_folder_emulator_left_by_an_older_exaprov(
        stopped_afterwards: None, workdir: Path) -> None:
    sandbox.ensure_running(Path("state"), announce=False)  # where older versions kept it
    try:
        legacy = sandbox.status(Path("state"))["pid"]
        cli("sandbox", "start")
        stopped = _stop()
        assert stopped.exit_code == 0, stopped.output
        assert "an older exaprov ran for this folder" in stopped.stderr
        assert not sandbox._is_our_emulator(legacy) and sandbox.status() is None
        assert not Path("state/sandbox/server.json").exists()
    finally:
        sandbox.stop(Path("state"))


def test_a_start_keeps_a_long_log_aside(stopped_afterwards: None, tmp_path: Path) -> None:
    log = sandbox.sandbox_dir() / "server.log"
    log.write_bytes(b"x" * (sandbox._LOG_BOUND + 1))
    cli("sandbox", "start")
    assert (log.parent / "server.log.1").stat().st_size == sandbox._LOG_BOUND + 1
    assert log.stat().st_size < 10_000 and "starting emulator" in log.read_text()
