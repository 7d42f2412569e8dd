"""Crash anywhere (issue #6, part 2): for EVERY mutating call a full `up` makes, the process
dies right after AWS carried the call out and before exaprov saw the answer; then a fresh
`up` builds exactly what an uninterrupted `up` builds, and `destroy` leaves nothing.

The stack is the whole of SPEC: network, NAT, IAM, KMS, logs, security groups, cluster,
node groups, the module-repository backend (RDS, its security group, S3, IAM user and
key, secret) and one peered client VPC (recorded in the state as `exaprov peer` records
it, so the same `up` creates the peering too). One runner pool instead of SPEC example's
two: a second pool repeats the same calls (launch template, node group, ASG tags) on
another name and adds cases, not code paths.

The cases are not a hand-kept list: at collection, one uninterrupted `up` of that stack
runs against moto with a recorder on every client (tests/crashing.py), and each of its
successful mutating calls becomes a case, keyed `service.Operation(label)#n` by what it
acts on. A call added to exaprov becomes a case by itself; a case whose call the crashed
run never makes fails ("never reached") instead of passing silently.

Compared: a census of every resource in the account (tests/census.py), tagged or not,
against the reference run's census: same labels, same counts (nothing leaked, nothing
duplicated); after `destroy`, the census equals the one taken before `up`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.iam.models import AWSManagedPolicy, IAMBackend

from exaprov.state import LocalStateStore, State
from tests.census import Census, census, difference
from tests.conftest import REGION, _managed_policy_data, cli, write_config
from tests.crashing import CrashAt, SimulatedCrash, memory_workdir, shared_botocore_loader

# SPEC's example config with its cpu runner pool only (see the docstring); backend on.
CONFIG: dict[str, Any] = {
    "name": "example",
    "cluster": {"runner_pools": [{"suffix": "cpu", "node_instance_category": "cpu",
                                  "capacity_type": "SPOT", "node_instance_type": "m5.xlarge",
                                  "disk_size": 100, "min_size": 1, "max_size": 4}]},
}
CLIENT_CIDR = "10.50.0.0/16"
STATE_DIR = Path("state")


def prepare_account_and_state() -> Census:
    """A client VPC (with one route table besides its main one) recorded as a peer in an
    otherwise empty state, and the config: what `exaprov init` + `exaprov peer` leave when
    the deployment's resources do not exist (yet, or any more). Returns the census before."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock=CLIENT_CIDR,
                         TagSpecifications=[{"ResourceType": "vpc", "Tags": [
                             {"Key": "Name", "Value": "client"}]}])["Vpc"]["VpcId"]
    ec2.create_route_table(VpcId=vpc, TagSpecifications=[{"ResourceType": "route-table", "Tags": [
        {"Key": "Name", "Value": "client-extra"}]}])
    write_config(CONFIG)
    state = State.new(CONFIG["name"], REGION)
    state.data["peers"] = {vpc: {"route_table_ids": None, "region": None, "profile": None,
                                 "cidrs": [CLIENT_CIDR]}}
    LocalStateStore(STATE_DIR / f"{CONFIG['name']}.json").write(state)
    return census()


@dataclass(frozen=True)
class Reference:
    calls: list[str]  # every successful mutating call of the uninterrupted `up`, in order
    built: Census  # what it built: the census after `up` minus the census before


@functools.cache
def reference() -> Reference:
    """One uninterrupted `up` of the stack, in its own moto, work folder and environment
    (this runs at collection, outside every fixture)."""
    with pytest.MonkeyPatch.context() as patch, memory_workdir() as work, shared_botocore_loader():
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
                    "EXAPROV_CRASH_AT"):
            patch.delenv(var, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", str(work / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(work / "no-aws-credentials"))
        patch.setenv("EXAPROV_TIME_SCALE", "0.001")
        patch.setattr(IAMBackend, "_init_aws_policies", lambda self: [
            AWSManagedPolicy.from_data(name, self.account_id, self.region_name, data)
            for name, data in _managed_policy_data().items()])  # as conftest does per test
        with mock_aws():
            before = prepare_account_and_state()
            recorder = CrashAt()
            with recorder.installed():
                result = cli("up", "--yes")
            assert result.exit_code == 0, result.output
            return Reference(list(recorder.keys), census() - before)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "up_call" in metafunc.fixturenames:
        calls = sorted(set(reference().calls))
        metafunc.parametrize("up_call", calls, ids=calls)


@pytest.fixture(autouse=True)
def _fast_clients() -> Iterator[None]:
    with shared_botocore_loader():
        yield


@pytest.fixture
def workdir() -> Iterator[Path]:
    """conftest's `workdir`, on tmpfs (see memory_workdir)."""
    with memory_workdir() as work:
        yield work


def crash_then_rerun(command: tuple[str, ...], target: str) -> CrashAt:
    """Run `command` until AWS has carried out `target`, "kill" it there, put the state
    directory back as it was at that instant; then run `command` again to success."""
    crash = CrashAt(target, STATE_DIR)
    with crash.installed():
        try:
            cli(*command)
        except SimulatedCrash:
            pass  # the crash reached the main thread (its calls after the walk)
    assert crash.crashed, f"the run never reached {target}; calls made: {crash.keys}"
    crash.restore()
    result = cli(*command)
    assert result.exit_code == 0, result.output
    return crash


def test_the_matrix_covers_every_part_of_the_stack() -> None:
    """The reference `up` made the calls of every step; if it stopped early (or a step
    moved its creates elsewhere) the matrix would be thin without anyone noticing."""
    operations = Counter(call.split("(")[0] for call in reference().calls)
    for operation in ("ec2.CreateVpc", "ec2.CreateNatGateway", "iam.CreateRole", "kms.CreateKey",
                      "logs.CreateLogGroup", "ec2.CreateSecurityGroup", "eks.CreateCluster",
                      "iam.CreateOpenIDConnectProvider", "ec2.CreateLaunchTemplate",
                      "eks.CreateNodegroup", "autoscaling.CreateOrUpdateTags", "rds.CreateDBInstance",
                      "iam.CreateUser", "iam.CreateAccessKey", "secretsmanager.PutSecretValue",
                      "s3.CreateBucket", "ec2.CreateVpcPeeringConnection",
                      "ec2.AcceptVpcPeeringConnection"):
        assert operations[operation], f"the reference up made no {operation}"
    assert len(reference().calls) == len(set(reference().calls))  # one case per call


def test_a_crash_after_any_call_of_up_is_finished_by_the_next_up(
        up_call: str, workdir: Path, aws: None) -> None:
    """F1/F2, everywhere: the process dies (SIGKILL, OOM, a closed laptop) right after AWS
    carried out `up_call` and before exaprov read the answer; nothing after it runs and the
    state file is what was on disk at that instant. The next `up` must adopt what that call
    made (found by tag, deterministic name or idempotency token) rather than make it twice,
    finish the rest, and `destroy` must then remove everything."""
    before = prepare_account_and_state()
    crash_then_rerun(("up", "--yes"), up_call)
    after = census()
    assert after - before == reference().built, difference(reference().built, after - before)
    assert not before - after  # nothing that was there before was touched
    result = cli("destroy", "--yes")
    assert result.exit_code == 0, result.output
    assert census() == before, difference(before, census())
