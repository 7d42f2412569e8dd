"""The names a deployment was built under, read back from its state file.

exaprov names much of what it creates from two config keys, and AWS can rename none of it:
`cluster.cluster_name` names the EKS cluster, its IAM roles, security groups, log group and
KMS alias; `module_repo_backend.exadeploy_id` the RDS instance, its security group, the IAM
user and the bucket. Were `up` to follow a changed key it would build a second cluster (or
backend) beside the first and lose track of the first, which `destroy` would then leave
running. So, from the state alone and before any AWS call:

- `up`, `plan` and `status` refuse such a change (exit 2, nothing changed), naming the key,
  the value the deployment was built with and the way out;
- `destroy` deletes what was built under the recorded names, whatever the config says now.

`network.vpc_name` is not one of these keys: it names Name tags, which are retagged in place,
and the DB subnet group, which keeps the name it was created with (the network step).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from exaprov.config import Config
from exaprov.errors import InputError
from exaprov.state import State

log = logging.getLogger(__name__)

# config key -> the records named from it: (address, field of the record, the name with the
# key's value as its one group). The first record found gives the value the deployment was built with.
NAMED_FROM: dict[str, tuple[tuple[str, str, str], ...]] = {
    "cluster.cluster_name": (
        ("cluster.cluster", "name", r"(.+)"),
        ("iam.cluster-role", "name", r"(.+)-cluster"),
        ("iam.node-role", "name", r"(.+)-node"),
        ("security-groups.cluster-sg", "name", r"(.+)-cluster"),
        ("security-groups.node-sg", "name", r"(.+)-node"),
        ("logs.log-group", "name", r"/aws/eks/(.+)/cluster"),
        ("kms.key", "alias", r"alias/eks/(.+)"),
    ),
    "module_repo_backend.exadeploy_id": (
        ("database.instance", "name", r"(.+)-rds"),
        ("database-sg.db-sg", "name", r"(.+)-rds"),
        ("backend-user.user", "name", r"(.+)-user"),
        ("bucket.bucket", "name", r"module-repo-(.+)-[a-z0-9]{8}"),
    ),
}

WHAT = {
    "cluster.cluster_name": "its EKS cluster, IAM roles, security groups, log group and KMS alias",
    "module_repo_backend.exadeploy_id": "its RDS instance and security group, IAM user and bucket",
}


def configured(cfg: Config, key: str) -> str | None:
    """The config's value of one key (None: the backend is off, so nothing is named from it)."""
    section, field = key.split(".")
    part = getattr(cfg, section)
    return None if part is None else str(getattr(part, field))


def recorded(state: State, key: str) -> str | None:
    """The value the state's resources were named from, or None if none is recorded."""
    for address, field, pattern in NAMED_FROM[key]:
        name = (state.resources.get(address) or {}).get(field)
        match = re.fullmatch(pattern, name) if isinstance(name, str) else None
        if match:
            return match.group(1)
    return None


def renamed(cfg: Config, state: State) -> dict[str, tuple[str, str]]:
    """key -> (built with, the config's value now), for each key the config has changed."""
    changed = {}
    for key in NAMED_FROM:
        built, wanted = recorded(state, key), configured(cfg, key)
        if built is not None and wanted is not None and built != wanted:
            changed[key] = (built, wanted)
    return changed


def refuse_renames(cfg: Config, state: State) -> None:
    """`up`, `plan`, `status`: a changed key is bad input, reported before any AWS call."""
    changed = renamed(cfg, state)
    if not changed:
        return
    problems = [f"{key}: the deployment was built as {built!r} ({WHAT[key]} carry that name) and "
                f"AWS renames none of them; the config says {wanted!r}"
                for key, (built, wanted) in changed.items()]
    keys = " and ".join(changed)
    raise InputError("; ".join(problems),
                     hint=f"put {keys} back; to move to the new name, run `exaprov destroy` (it "
                          "deletes what was built under the old one) and then `exaprov up`")


def as_built(cfg: Config, state: State) -> Config:
    """`destroy`: the config with each changed key put back to the value the state records."""
    changes: dict[str, dict[str, Any]] = {}
    for key, (built, wanted) in renamed(cfg, state).items():
        log.warning("%s is %r in the config, but the deployment was built as %r: destroying "
                    "what was built", key, wanted, built)
        section, field = key.split(".")
        changes.setdefault(section, {})[field] = built
    if not changes:
        return cfg
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=fields)
                                  for section, fields in changes.items()})
