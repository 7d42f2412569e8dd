"""The stack, as an explicit list of steps (greppable; no registry).

Each module owns one part of the stack; its docstring says what it records and
its destroy order. The engine orders them by their `requires`:

    network ─┬─ nat ───────────────────────────┐
             └─ security-groups ─┐             │
    iam ──────────────────────── cluster ── node-groups
    kms, logs ───────────────────┘    └──── cluster-access
"""

from __future__ import annotations

from exaprov.engine import Step
from exaprov.steps.cluster import CLUSTER
from exaprov.steps.cluster_access import CLUSTER_ACCESS
from exaprov.steps.cluster_support import KMS, LOGS
from exaprov.steps.iam import IAM
from exaprov.steps.network import NAT, NETWORK
from exaprov.steps.node_groups import NODE_GROUPS
from exaprov.steps.security_groups import SECURITY_GROUPS

STEPS: tuple[Step, ...] = (NETWORK, NAT, IAM, KMS, LOGS, SECURITY_GROUPS, CLUSTER, NODE_GROUPS,
                           CLUSTER_ACCESS)
