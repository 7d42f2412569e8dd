"""The schedule of `up` and `destroy`: what starts before what, against the emulator's durations.

Real AWS keeps an EKS cluster CREATING for ~10 minutes, a node group ~2, an RDS instance 4-5
and a NAT gateway `pending` ~2 (the emulator's latency model stands for that). These tests
stop the emulator's clock so that a resource becomes ready only when the test lets time
move, and prove the order from the calls themselves: a schedule that waited for the wrong
thing would wait forever and time out. No timing is measured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exaprov import emulator
from exaprov.engine import Step
from exaprov.steps import STEPS
from tests.conftest import REGION, cli

ACCOUNT = "123456789012"
GROUPS = 6  # the example config: four system node groups and two runner pools


class Clock:
    """The emulator's clock; it moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.t += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(emulator, "_now", fake)
    yield fake
    emulator.configure_durations()


@pytest.fixture
def example(aws: None, workdir: Any) -> None:
    assert cli("init", "--example", "full", "--force").exit_code == 0


def on_call(hooks: Callable[..., None], operation: str, action: Callable[[], None],
            after: bool = False) -> None:
    """Run `action()` in the calling thread just before (or after) each `operation` request."""
    def hook(model: Any, **_: Any) -> None:
        if model.name == operation:
            action()

    hooks(hook, "after-call" if after else "before-call")


def cluster_status() -> str | None:
    from moto.eks.models import eks_backends

    backend = eks_backends[ACCOUNT][REGION]
    with emulator._eks_lock:
        emulator._settle(backend)
        clusters = list(backend.clusters.values())
    return clusters[0].status if clusters else None


def nat_states() -> list[str]:
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[ACCOUNT][REGION]
    with emulator._transition_lock:
        emulator._settle_nat_gateways(backend)
        return [nat.state for nat in backend.nat_gateways.values()]


def requires_closure(name: str, steps: tuple[Step, ...] = STEPS) -> set[str]:
    by_name = {s.name: s for s in steps}
    seen: set[str] = set()
    todo = [name]
    while todo:
        for required in by_name[todo.pop()].requires:
            if required not in seen:
                seen.add(required)
                todo.append(required)
    return seen


def test_the_graph_keeps_the_database_off_the_cluster_and_node_groups_after_the_nat() -> None:
    assert "cluster" not in requires_closure("database")
    assert {"cluster", "nat"} <= requires_closure("node-groups")
    assert "nat" not in requires_closure("cluster")  # the control plane does not wait for the NAT


def test_up_creates_the_database_before_the_cluster_is_active(
        example: None, clock: Clock, hooks: Callable[..., None]) -> None:
    """The database needs only its subnet and security groups: its create must not wait for
    the control plane. Time stands still until CreateDBInstance is issued (then each poll
    moves it a minute), so an `up` whose database waited for the cluster would never see it
    ACTIVE and fail."""
    emulator.configure_durations(cluster_create=600, rds_create=270)
    seen: list[str | None] = []
    database_created = threading.Event()
    on_call(hooks, "CreateDBInstance", lambda: seen.append(cluster_status()))
    on_call(hooks, "CreateDBInstance", database_created.set, after=True)
    for poll in ("DescribeCluster", "DescribeDBInstances"):
        on_call(hooks, poll, lambda: database_created.is_set() and clock.advance(60))
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert seen and seen[0] in (None, "CREATING")
    assert cluster_status() == "ACTIVE"


def test_up_creates_node_groups_together_and_only_once_the_nat_gateway_is_available(
        example: None, clock: Clock, hooks: Callable[..., None]) -> None:
    """EKS builds node groups in parallel, and their nodes join the cluster through the NAT
    gateway. Every CreateNodegroup waits at a barrier for all the others: created one by one,
    the first would wait alone and break it. Each poll moves time a minute."""
    emulator.configure_durations(nat_create=600, nodegroup_create=120)  # the NAT last of all
    barrier = threading.Barrier(GROUPS, timeout=20)
    nat_when_created: list[list[str]] = []

    def nodegroup_create() -> None:
        nat_when_created.append(nat_states())
        barrier.wait()  # raises BrokenBarrierError (and fails `up`) unless all are in flight

    on_call(hooks, "CreateNodegroup", nodegroup_create)
    for poll in ("DescribeNatGateways", "DescribeNodegroup"):
        on_call(hooks, poll, lambda: clock.advance(60))
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert nat_when_created == [["available"]] * GROUPS
    assert not barrier.broken


def test_destroy_deletes_node_groups_together_and_the_database_alongside(
        example: None, clock: Clock, hooks: Callable[..., None]) -> None:
    """`destroy`: node groups go in parallel, and the database (4-6 min to delete) does not
    wait for node groups or the cluster. Time stands still until DeleteDBInstance (then each
    poll moves it a minute), so a database delete queued behind the cluster would never come."""
    assert cli("up", "--yes").exit_code == 0
    emulator.configure_durations(nodegroup_delete=300, cluster_delete=180, rds_delete=300, nat_delete=60)
    barrier = threading.Barrier(GROUPS, timeout=20)
    database_deleted = threading.Event()
    seen: list[str | None] = []
    on_call(hooks, "DeleteNodegroup", barrier.wait)
    on_call(hooks, "DeleteDBInstance", lambda: seen.append(cluster_status()))
    on_call(hooks, "DeleteDBInstance", database_deleted.set, after=True)
    for poll in ("DescribeNatGateways", "DescribeCluster", "DescribeNodegroup", "DescribeDBInstances"):
        on_call(hooks, poll, lambda: database_deleted.is_set() and clock.advance(60))
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    assert not barrier.broken
    assert seen == ["ACTIVE"]  # the cluster was still there when the database delete went out
    assert cluster_status() is None
