"""Crash anywhere: for EVERY mutating call a full `up` makes, the process
dies right after AWS carried the call out and before exaprov saw the answer; then a fresh
`up` builds exactly what an uninterrupted `up` builds, and `destroy` leaves nothing.

The stack is the whole stack: network, NAT, IAM, KMS, logs, security groups, cluster,
node groups, the module-repository backend (RDS, its security group, S3, IAM user and
key, secret) and one peered client VPC (recorded in the state as `exaprov peer` records
it, so the same `up` creates the peering too); see tests/crashing.py's CONFIG for why one
runner pool.

The cases are not a hand-kept list: at collection, one uninterrupted `up` of that stack
runs against moto with a recorder on every client, and each of its successful mutating
calls is a candidate, keyed `service.Operation(label)#n` by what it acts on. A call of a new
operation or kind added to exaprov becomes a case by itself; a case whose call the crashed
run never makes fails ("never reached") instead of passing silently. By default one call
stands for the calls that differ only in a number or a node group's name (the third subnet,
the fifth rule of a group, another node group: the same code on the same kind of resource):
88 calls, 55 cases, ~2 min less on 2 cores; `EXAPROV_FULL_CRASH_MATRIX=1` runs every call.

Compared: a census of every resource in the account (tests/census.py), tagged or not,
against the reference run's census: same labels, same counts (nothing leaked, nothing
duplicated); after `destroy`, the census equals the one taken before `up` plus the
database's final snapshot, which the user keeps. The account holds a neighbour
(tests/neighbour.py: a second deployment, untagged resources named like ours) whose
every resource — exact IDs, tags, routes, rules — is unchanged at the end (a NAT
gateway adopted, retagged, re-routed or deleted on the way would show).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.census import Census, after_destroy, census, difference
from tests.crashing import (
    CONFIG,
    crash_then_rerun,
    isolated_aws,
    matrix_cases,
    prepare_account_and_state,
    recorded_calls,
    run_ok,
)
from tests.neighbour import difference as changed
from tests.neighbour import foreign_census


@dataclass(frozen=True)
class Reference:
    calls: list[str]  # every successful mutating call of the uninterrupted `up`, in order
    before: Census  # the account before `up`
    built: Census  # what it built: the census after `up` minus the census before


@functools.cache
def reference() -> Reference:
    """One uninterrupted `up` of the stack (this runs at collection, outside every fixture)."""
    with isolated_aws():
        before = prepare_account_and_state()
        calls = recorded_calls("up", "--yes")
        return Reference(calls, before, census() - before)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "up_call" in metafunc.fixturenames:
        calls = matrix_cases(reference().calls)
        metafunc.parametrize("up_call", calls, ids=calls)


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
    """Everywhere: the process dies (SIGKILL, OOM, a closed laptop) right after AWS
    carried out `up_call` and before exaprov read the answer; nothing after it runs and the
    state file is what was on disk at that instant. The next `up` must adopt what that call
    made (found by tag, deterministic name or idempotency token) rather than make it twice,
    finish the rest, and `destroy` must then remove everything."""
    prepare_account_and_state(count=False)
    before, neighbour = reference().before, foreign_census(CONFIG)
    crash_then_rerun(("up", "--yes"), up_call)
    after = census()
    assert after - before == reference().built, difference(reference().built, after - before)
    assert not before - after  # nothing that was there before was touched
    run_ok("destroy", "--yes", "--disable-deletion-protection")
    kept = after_destroy(before)  # everything but the database's final snapshot, the user's
    assert census() == kept, difference(kept, census())
    assert foreign_census(CONFIG) == neighbour, changed(neighbour, foreign_census(CONFIG))
