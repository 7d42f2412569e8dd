"""Faults real AWS produces and moto does not, injected with botocore event hooks.

Each test names the real behaviour it stands for. The hooks sit on exaprov's own
clients (through `Deployment.aws`) or on every new session (the `calls` idea in
conftest), never on the network.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

import exaprov.engine
from exaprov.errors import ExaprovError
from exaprov.steps.network import NAT, NETWORK
from tests.conftest import cli, tagged, write_config
from tests.faults import Faults, faults_fixture, inventory, recorded  # noqa: F401
from tests.harness import Stack
from tests.test_network import NONE, ONE_OF_EACH, census

# Every create a network `up` makes, by address (the engine's crash checkpoints).
ADDRESSES = ["network.vpc", *(f"network.subnet-{t}-{n}" for t in ("private", "public", "database")
                              for n in (1, 2, 3)),
             "network.igw", "network.public-rt", "network.private-rt", "network.db-subnet-group",
             "nat.eip", "nat.nat"]


class SimulatedCrash(BaseException):
    """Stands for SIGKILL at a checkpoint: nothing after it runs, no state is written."""


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, operation)


@pytest.mark.parametrize("point", ["before_create", "after_create"])
@pytest.mark.parametrize("address", ADDRESSES)
def test_a_crash_at_any_create_is_finished_by_the_next_up(
        tmp_path: Path, ec2: Any, monkeypatch: pytest.MonkeyPatch, point: str,
        address: str) -> None:
    """The process dies right after AWS made the resource (or right before the call);
    the next `up` adopts it by tag/name (or creates it once) and nothing is duplicated.
    Runs the network steps alone: the crash points are theirs."""
    target = f"{point}:{address}"
    stack = Stack(tmp_path, [NETWORK, NAT])

    def crash_at(name: str) -> None:
        if name == target:
            raise SimulatedCrash(name)

    with monkeypatch.context() as patch:
        patch.setattr(exaprov.engine, "checkpoint", crash_at)
        with pytest.raises(ExaprovError):
            stack.up()
    record = stack.state().resources[address]
    assert record["status"] == "intent" and record["token"] and "id" not in record

    stack.up()
    assert census(ec2) == ONE_OF_EACH
    assert stack.state().resources[address]["status"] == "created"
    stack.destroy()
    assert census(ec2) == NONE


def test_ids_not_yet_visible_after_create_are_retried(workdir: Path, ec2: Any, hooks: Any) -> None:
    """EC2 answers InvalidVpcID.NotFound for a moment after CreateVpc returns."""
    refusals = {"ModifyVpcAttribute": 2, "AttachInternetGateway": 2}

    def not_yet(model: Any, **_: Any) -> None:
        if refusals.get(model.name, 0) > 0:
            refusals[model.name] -= 1
            code = "InvalidVpcID.NotFound" if model.name == "ModifyVpcAttribute" \
                else "InvalidInternetGatewayID.NotFound"
            raise client_error(code, model.name)

    hooks(not_yet)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert refusals == {"ModifyVpcAttribute": 0, "AttachInternetGateway": 0}
    vpc = tagged(ec2, "describe_vpcs", "Vpcs")[0]
    assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsHostnames")[
        "EnableDnsHostnames"]["Value"] is True
    assert tagged(ec2, "describe_internet_gateways", "InternetGateways")[0]["Attachments"]


def test_dependency_violation_while_enis_linger_is_waited_out(
        workdir: Path, ec2: Any, hooks: Any) -> None:
    """After a NAT gateway is deleted its ENI lingers; DeleteSubnet and DeleteVpc fail
    with DependencyViolation for a while, then succeed."""
    assert cli("up", "--yes").exit_code == 0
    refusals = {"DeleteSubnet": 3, "DeleteVpc": 3, "DetachInternetGateway": 2}

    def lingering(model: Any, **_: Any) -> None:
        if refusals.get(model.name, 0) > 0:
            refusals[model.name] -= 1
            raise client_error("DependencyViolation", model.name)

    hooks(lingering)
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    assert set(refusals.values()) == {0}
    assert census(ec2) == NONE


def test_a_dependency_that_never_clears_is_reported_and_state_kept(
        workdir: Path, ec2: Any, hooks: Any) -> None:
    """Past the deadline: destroy stops with the blocking error, the VPC stays recorded."""
    assert cli("up", "--yes").exit_code == 0

    def never(model: Any, **_: Any) -> None:
        if model.name == "DeleteVpc":
            raise client_error("DependencyViolation", model.name)

    hooks(never)
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 1
    assert "DependencyViolation" in result.output and "DeleteVpc" in result.output
    state = json.loads(Path("state/example.json").read_text())["resources"]
    assert list(state) == ["network.vpc"]
    assert len(tagged(ec2, "describe_vpcs", "Vpcs")) == 1


class CtrlCWhileNatWaits:
    """The NAT gateway shows `nat_state` (AWS holds it there for minutes) and the first poll
    waiting on it gets a Ctrl-C: SIGINT to the main thread, as the terminal sends it.
    `settle()`: the minutes have passed, EC2 shows the real state again."""

    def __init__(self, hooks: Any, nat_state: str) -> None:
        self.interrupted = False
        self.holding = True

        def ctrl_c(params: Any, **_: Any) -> None:
            waiting = any(f["Name"] == "nat-gateway-id" for f in params.get("Filter", []))
            if waiting and not self.interrupted:
                self.interrupted = True
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        def hold(parsed: Any, **_: Any) -> None:
            for nat in parsed.get("NatGateways", []) if self.holding else []:
                nat["State"] = nat_state

        hooks(ctrl_c, "before-parameter-build.ec2.DescribeNatGateways")
        hooks(hold, "after-call.ec2.DescribeNatGateways")

    def settle(self) -> None:
        self.holding = False


def test_ctrl_c_during_a_wait_saves_state_and_exits_130(
        workdir: Path, ec2: Any, hooks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NAT gateway stays `pending` for minutes on AWS; Ctrl-C while exaprov waits
    records what was made and exits 130 with a message to run again."""
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "0.05")  # a 30 s bound: the wait outlasts the signal
    nat = CtrlCWhileNatWaits(hooks, "pending")
    result = cli("up", "--yes")
    nat.settle()
    assert result.exit_code == 130, result.output
    assert "Run `exaprov up` again to continue" in result.output
    assert "Traceback" not in result.output
    state = json.loads(Path("state/example.json").read_text())["resources"]
    assert state["nat.nat"]["status"] == "created"
    assert cli("up", "--yes").exit_code == 0
    assert census(ec2) == ONE_OF_EACH


def test_ctrl_c_during_destroy_saves_state_and_exits_130(
        workdir: Path, ec2: Any, hooks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for `destroy`: a NAT gateway stays `deleting` for a minute on AWS; Ctrl-C while
    exaprov waits keeps it recorded as deleting, saves the state, exits 130 with one line
    saying to run `destroy` again; that run finishes."""
    write_config({"name": "example", "module_repo_backend": None, "cluster": {"runner_pools": [
        {"suffix": "cpu", "node_instance_type": "m5.xlarge", "min_size": 0, "max_size": 1}]}})
    assert cli("up", "--yes").exit_code == 0
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "0.01")  # a 6 s bound: the wait outlasts the signal
    nat = CtrlCWhileNatWaits(hooks, "deleting")
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    nat.settle()
    assert result.exit_code == 130, result.output
    assert [line for line in result.output.splitlines() if "Interrupted" in line] == [
        "Interrupted by Ctrl-C (SIGINT): running steps stopped at their next poll and recorded "
        "what they did; the state is saved and the lock released. Run `exaprov destroy` again "
        "to continue."]
    assert "Traceback" not in result.output
    state = json.loads(Path("state/example.json").read_text())["resources"]
    assert state["nat.nat"]["status"] == "deleting"
    assert state["network.vpc"]["status"] == "created"  # not reached: still there, still recorded
    assert len(tagged(ec2, "describe_vpcs", "Vpcs")) == 1

    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    assert census(ec2) == NONE
    assert inventory() == {}


def test_a_crash_right_after_a_kms_key_is_made_is_finished_without_a_second_key(
        workdir: Path, aws: None, faults: Faults) -> None:
    """Outside the network, with the harness: the process dies right after CreateKey
    returned (AWS made a key; exaprov recorded only its intent); the next `up` adopts that key
    by its tag instead of making a second (KMS, like AWS, would happily make two)."""
    faults.crash_at("after:CreateKey")
    assert cli("up", "--yes").exit_code == 1
    assert faults.crashed
    record = json.loads(Path("state/example.json").read_text())["resources"]["kms.key"]
    assert record["status"] == "intent" and "id" not in record
    assert len(inventory()["kms:key"]) == 1

    faults.restart()
    assert cli("up", "--yes").exit_code == 0
    held = inventory()
    assert held == recorded("state/example.json") and len(held["kms:key"]) == 1


def test_a_create_whose_answer_is_lost_is_not_made_twice(
        tmp_path: Path, ec2: Any, faults: Faults) -> None:
    """A lost answer: AWS made the VPC but the connection dropped before the answer. botocore would send
    CreateVpc again (a transient error) and AWS, with no idempotency token for it, would make a
    second VPC. exaprov does not resend a create blindly: the step runs again and its lookup
    by tag adopts the VPC AWS made."""
    faults.lose_response("CreateVpc")
    stack = Stack(tmp_path, [NETWORK])
    stack.up()
    assert faults.count("ResponseLost") == 1
    vpcs = tagged(ec2, "describe_vpcs", "Vpcs")
    assert len(vpcs) == 1
    assert stack.state().resources["network.vpc"]["id"] == vpcs[0]["VpcId"]


@pytest.mark.parametrize("operation", ["CreateInternetGateway", "AllocateAddress", "CreateKey",
                                       "CreateNatGateway", "CreateCluster"])
def test_lost_answers_of_other_creates_are_not_made_twice(
        tmp_path: Path, aws: None, faults: Faults, operation: str) -> None:
    """A lost answer for creates with no token (IGW, EIP, KMS key) and with one (NAT, EKS): one made."""
    from exaprov.steps import STEPS

    wanted = {"network", "nat", "kms", "iam", "logs", "security-groups", "cluster"}
    faults.lose_response(operation)
    stack = Stack(tmp_path, [s for s in STEPS if s.name in wanted])
    stack.up()
    assert faults.count("ResponseLost") == 1
    held = inventory()
    assert held == recorded(stack.store.path)
    kind = {"CreateInternetGateway": "ec2:internet-gateway", "AllocateAddress": "ec2:elastic-ip",
            "CreateKey": "kms:key", "CreateNatGateway": "ec2:natgateway",
            "CreateCluster": "eks:cluster"}[operation]
    assert len(held[kind]) == 1, held
