"""The schedule model: what `up` and `destroy` cost at best, and in the Terraform modules' order.

Each graph maps a resource to (seconds it takes, sequential API calls it needs, what must be
done before it). Durations are the emulator's own AWS figures (`exaprov.emulator.AWS_LATENCY`),
so the bound and the emulator cannot drift apart; every call costs one round trip.

- `up_graph()`: the true dependencies. The cluster needs subnets, its role, key, log group and
  security groups; node groups need the cluster ACTIVE and the NAT gateway available (nodes
  join the cluster through it); the database needs only its subnet group and security group.
- `terraform_up_graph()`: the Terraform modules' order on top of that: the database waits for
  the cluster (it reads the EKS-created security group), node groups wait a fixed 30 s more
  (terraform-aws-eks' `dataplane_wait_duration`), the database is waited for until
  `available` (past `backing-up`), and every wait is seen on a 30 s poll.
- `destroy_graph()` / `terraform_destroy_graph()`: what must be gone before each delete.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from exaprov.emulator import AWS_LATENCY

TERRAFORM_POLL = 30.0  # boto3's stock waiters and the Terraform provider: one look every 30 s
TERRAFORM_DATAPLANE_WAIT = 30.0  # terraform-aws-eks: node groups start 30 s after the cluster


@dataclass(frozen=True)
class Node:
    seconds: float  # how long AWS takes after the create/delete call
    calls: int  # sequential API calls on this node's path (each one round trip)
    after: tuple[str, ...] = ()


Graph = Mapping[str, Node]


def _d(key: str) -> float:
    return AWS_LATENCY[key]


def up_graph() -> dict[str, Node]:
    return {
        "vpc": Node(0, 1),
        "subnets": Node(0, 1, ("vpc",)),  # all subnets at once
        "internet-gateway": Node(0, 2, ("vpc",)),  # create, attach
        "iam": Node(0, 2),  # create role, attach policy (both roles at once)
        "kms": Node(0, 1),
        "logs": Node(0, 1),
        "security-groups": Node(0, 1, ("vpc",)),
        "cluster": Node(_d("cluster_create"), 2, ("subnets", "iam", "kms", "logs", "security-groups")),
        "eip": Node(0, 1),
        "nat": Node(_d("nat_create"), 2, ("subnets", "internet-gateway", "eip")),  # create, describe
        "nat-route": Node(0, 1, ("nat",)),
        "launch-templates": Node(0, 1, ("security-groups",)),
        "node-groups": Node(_d("nodegroup_create"), 2,  # all at once: create, describe
                            ("cluster", "nat-route", "launch-templates", "iam")),
        "db-subnet-group": Node(0, 1, ("subnets",)),
        "db-security-group": Node(0, 1, ("vpc",)),
        "database": Node(_d("rds_create"), 2, ("db-subnet-group", "db-security-group")),
        "backend-user": Node(0, 2),  # user, access key
        "bucket": Node(0, 1, ("backend-user",)),
    }


def terraform_up_graph() -> dict[str, Node]:
    graph = up_graph()
    graph["dataplane-wait"] = Node(TERRAFORM_DATAPLANE_WAIT, 0, ("cluster",))
    ng, db = graph["node-groups"], graph["database"]
    graph["node-groups"] = Node(ng.seconds, ng.calls, (*ng.after, "dataplane-wait"))
    # ... and the provider waits for `available`, past `backing-up` (exaprov uses it then).
    graph["database"] = Node(db.seconds + _d("rds_backup"), db.calls, (*db.after, "cluster"))
    return graph


def destroy_graph() -> dict[str, Node]:
    return {
        "node-groups": Node(_d("nodegroup_delete"), 2),  # all at once: delete, describe
        "launch-templates": Node(0, 1, ("node-groups",)),
        "cluster": Node(_d("cluster_delete"), 2, ("node-groups",)),
        "nat": Node(_d("nat_delete"), 2),
        "eip": Node(0, 1, ("nat",)),  # stays associated until its NAT gateway is deleted
        "database": Node(_d("rds_delete"), 2),
        "db-subnet-group": Node(0, 1, ("database",)),
        "db-security-group": Node(0, 1, ("database",)),
        "iam": Node(0, 2, ("cluster", "node-groups")),
        "kms": Node(0, 1, ("cluster",)),
        "logs": Node(0, 1, ("cluster",)),
        "security-groups": Node(0, 1, ("cluster", "node-groups", "db-security-group")),
        "subnets": Node(0, 1, ("cluster", "node-groups", "nat", "database", "db-subnet-group")),
        "internet-gateway": Node(0, 2, ("eip",)),  # detach, delete
        "vpc": Node(0, 1, ("subnets", "internet-gateway", "security-groups", "db-security-group")),
        "bucket": Node(0, 2),  # empty, delete
        "backend-user": Node(0, 2, ("bucket",)),
    }


def terraform_destroy_graph() -> dict[str, Node]:
    # Terraform destroys in reverse creation order: the database before the cluster.
    graph = destroy_graph()
    cluster = graph["cluster"]
    graph["cluster"] = Node(cluster.seconds, cluster.calls, (*cluster.after, "database"))
    return graph


def finish_times(graph: Graph, round_trip: float, poll: float | None = None) -> dict[str, float]:
    """When each node is done when every node starts as soon as what it needs is done. With
    `poll`, a wait is only seen at the next multiple of `poll` after it started."""
    done: dict[str, float] = {}

    def finish(name: str) -> float:
        if name not in done:
            node = graph[name]
            start = max((finish(dep) for dep in node.after), default=0.0)
            wait = node.seconds
            if poll and wait > 0 and node.calls:  # a fixed sleep (no calls) is not polled
                wait = math.ceil(wait / poll) * poll
            done[name] = start + wait + node.calls * round_trip
        return done[name]

    for name in graph:
        finish(name)
    return done


def makespan(graph: Graph, round_trip: float, poll: float | None = None) -> float:
    return max(finish_times(graph, round_trip, poll).values())


def critical_path(graph: Graph, round_trip: float) -> list[str]:
    """The chain of nodes that decides the makespan, first to last."""
    done = finish_times(graph, round_trip)
    path = [max(done, key=done.__getitem__)]
    while graph[path[-1]].after:
        path.append(max(graph[path[-1]].after, key=done.__getitem__))
    return path[::-1]


def figures(scale: float) -> dict[str, dict[str, object]]:
    """The bounds and Terraform makespans, in AWS seconds and scaled to the benchmark's clock."""
    rtt = AWS_LATENCY["round_trip"]
    out: dict[str, dict[str, object]] = {}
    for name, best, terraform in (("up", up_graph(), terraform_up_graph()),
                                  ("destroy", destroy_graph(), terraform_destroy_graph())):
        bound, tf = makespan(best, rtt), makespan(terraform, rtt, TERRAFORM_POLL)
        out[name] = {"bound_aws_s": bound, "terraform_aws_s": tf, "bound_s": bound * scale,
                     "terraform_s": tf * scale, "critical_path": critical_path(best, rtt)}
    return out
