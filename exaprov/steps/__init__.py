"""The stack, as an explicit list of steps (greppable; no registry).

Each module owns one part of the stack; its docstring says what it records and
its destroy order. The engine orders them by their `requires`:

    network ─┬─ nat ───────────────────────────┐
             └─ security-groups ─┐             │
    iam ──────────────────────── cluster ── addons ── node-groups ── addons-after-nodes
    kms, logs ───────────────────┘    └──── cluster-access
    network, security-groups ── database-sg ── database
                                      └── (with cluster) database-cluster-rule
    backend-user ── bucket
    network, security-groups ── peering   (client VPCs added with `exaprov peer`)

The database starts right after the network and security groups, not after the
cluster: it is the slowest resource after the control plane.
"""

from __future__ import annotations

from exaprov.engine import Step
from exaprov.steps.addons import ADDONS, LATE_ADDONS
from exaprov.steps.backend_storage import BACKEND_USER, BUCKET
from exaprov.steps.cluster import CLUSTER
from exaprov.steps.cluster_access import CLUSTER_ACCESS
from exaprov.steps.cluster_support import KMS, LOGS
from exaprov.steps.database import DATABASE, DATABASE_CLUSTER_RULE, DATABASE_SG
from exaprov.steps.iam import IAM
from exaprov.steps.network import NAT, NETWORK
from exaprov.steps.node_groups import NODE_GROUPS
from exaprov.steps.peering import PEERING
from exaprov.steps.security_groups import SECURITY_GROUPS

STEPS: tuple[Step, ...] = (NETWORK, NAT, IAM, KMS, LOGS, SECURITY_GROUPS, CLUSTER, ADDONS,
                           NODE_GROUPS, LATE_ADDONS, CLUSTER_ACCESS, DATABASE_SG, DATABASE,
                           DATABASE_CLUSTER_RULE, BACKEND_USER, BUCKET, PEERING)
