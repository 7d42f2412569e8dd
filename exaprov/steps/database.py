"""The module repository's PostgreSQL database, as three steps.

`database-sg` owns the security group `<exadeploy_id>-rds` in the deployment's VPC:
PostgreSQL (TCP db_port) from the node and additional cluster security groups, no
other rule (not even the egress AWS gives every new group). It does not wait for
the cluster, so the database starts as soon as the network is there.
`database-cluster-rule` adds, once EKS has made it, PostgreSQL from the cluster's
primary security group; its rule carries PRIMARY_RULE_DESCRIPTION, which
`database-sg` leaves alone.
`database` owns the RDS instance `<exadeploy_id>-rds`: PostgreSQL of the configured
major version (RDS picks the minor and upgrades it), in the network's DB subnet
group, not public, with its master password managed by RDS in Secrets Manager
(exaprov only ever sees the secret's ARN) and that secret's automatic rotation off
unless `db_password_rotation_days` sets a schedule. gp3 storage with autoscaling, 7-day
backups, DeletionProtection, tags copied to snapshots, minor version auto-upgrades and
no RDS Extended Support enrolment by default, each reconciled in place. Storage grows
and the class changes in place; a smaller storage (beyond what autoscaling grew) or
another major version is refused before any change.

Reads: network (vpc_id, db_subnet_group_name), security-groups (node and cluster
SGs), cluster (cluster_primary_security_group_id), database-sg.
Records: database-sg.db-sg, database.instance (ID = the identifier).
Destroy order: database (refused while DeletionProtection is on; a final snapshot
`<exadeploy_id>-final-<UTC date-time>` that the user keeps, unless `--skip-final-snapshot`;
wait gone — RDS deletes the secret with it) and database-cluster-rule (revoke the
rule, so EKS can delete its primary group) → database-sg (retrying
DependencyViolation while the deleted instance's network interface lingers).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from exaprov.aws import tag_dict, tag_list
from exaprov.engine import TAG_DEPLOYMENT, TAG_RESOURCE, Observed, Step, StepContext, is_unknown, unknown
from exaprov.errors import ExaprovError, InputError, error_code, is_not_found
from exaprov.ownership import is_ours
from exaprov.state import FAILED
from exaprov.steps.ec2_lookup import Ec2Items, items_by_id, verify_gone
from exaprov.steps.security_groups import Rule, describe_rules, ensure_group, ensure_rules, live_rule, revoke

SG_KIND = "ec2:security-group"
RULE_KIND = "ec2:security-group-rule"
KIND = "rds:db-instance"
SECRET_KIND = "secretsmanager:secret"
PRIMARY_RULE_DESCRIPTION = "exaprov database: PostgreSQL from the EKS primary security group"
CREATE_TIMEOUT = 40 * 60  # AWS: 5-10 minutes
MODIFY_TIMEOUT = 40 * 60  # a class change: about 10 minutes
DELETE_TIMEOUT = 40 * 60  # AWS: 5-10 minutes
POLL_INTERVAL = 10  # creating takes 4-5 min, deleting 4-6: late by at most 10 s
# The network interface of a deleted instance keeps its security group in use for minutes.
DEPENDENCY_TIMEOUT = 30 * 60
# The instance serves in these; storage-optimization follows a storage change for hours.
USABLE = frozenset({"available", "backing-up", "storage-optimization"})
STOPPED = frozenset({"stopped", "stopping"})
PENDING_KEYS = ("AllocatedStorage", "DBInstanceClass", "Port")  # what reconcile may change


def _identifier(cfg: Any) -> str:
    return f"{cfg.module_repo_backend.exadeploy_id}-rds"


def _enabled(cfg: Any) -> bool:
    return cfg.module_repo_backend is not None


# -- step: database-sg ---------------------------------------------------------------

def ensure_database_sg(ctx: StepContext) -> dict[str, Any]:
    vpc_id = ctx.upstream["network"]["vpc_id"]
    sgs = ctx.upstream["security-groups"]
    items = None if is_unknown(vpc_id) else Ec2Items(ctx, "describe_security_groups", SG_KIND)
    name = _identifier(ctx.cfg)
    group_id, created = ensure_group(ctx, items, "db-sg", vpc_id, name,
                                     f"exaprov {ctx.cfg.name}: PostgreSQL of the module repository")
    wanted = database_rules(ctx.cfg.module_repo_backend.db_port, sgs["node_security_group_id"],
                            sgs["cluster_security_group_id"])
    if not created and not is_unknown(group_id):
        wanted |= primary_rules(ctx, group_id)  # database-cluster-rule's
    ensure_rules(ctx, "db-sg", group_id, wanted, initial=created)
    return {"db_security_group_id": group_id}


def database_rules(port: int, node_sg: str, cluster_sg: str) -> set[Rule]:
    return {Rule("ingress", "tcp", port, port, node_sg, "PostgreSQL from the EKS nodes"),
            Rule("ingress", "tcp", port, port, cluster_sg,
                 "PostgreSQL from the EKS cluster security group")}


def destroy_database_sg(ctx: StepContext) -> None:
    ec2 = ctx.aws.ec2
    for group in Ec2Items(ctx, "describe_security_groups", SG_KIND).items:
        logical = tag_dict(group.get("Tags")).get(TAG_RESOURCE, "db-sg")
        ctx.delete(logical, SG_KIND, group["GroupId"], lambda gid: ctx.retry_while(
            f"delete security group {gid}", lambda: ec2.delete_security_group(GroupId=gid),
            {"DependencyViolation"}, timeout=DEPENDENCY_TIMEOUT,
            hint="the deleted database's network interface may linger; else look for ENIs "
                 "or security groups that use it"))
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)
    verify_gone(ctx, {"describe_security_groups": SG_KIND})


# -- step: database-cluster-rule ---------------------------------------------------------

def ensure_database_cluster_rule(ctx: StepContext) -> dict[str, Any]:
    primary_sg = ctx.upstream["cluster"].get("cluster_primary_security_group_id")
    if not primary_sg:
        return {}  # EKS has not made it (yet)
    group_id = ctx.upstream["database-sg"]["db_security_group_id"]
    port = ctx.cfg.module_repo_backend.db_port
    wanted = Rule("ingress", "tcp", port, port, primary_sg, PRIMARY_RULE_DESCRIPTION)
    # For a cluster still to be created, or made in this run, the rule is part of making it,
    # not a change of its own.
    made_now = is_unknown(primary_sg) or ctx.created_in_this_run("cluster.cluster")
    ensure_rules(ctx, "rule", group_id, {wanted}, exclusive=False, initial=made_now)
    if is_unknown(group_id):
        return {}
    # A replaced cluster (new primary group) or another port leaves a stale rule of ours.
    stale = primary_rules(ctx, group_id) - {wanted}
    for rule, rule_id in (_rule_ids(ctx, group_id, stale) if stale else {}).items():
        ctx.update("rule", RULE_KIND, f"revoke {rule}", partial(revoke, ctx, group_id, "ingress", rule_id))
    return {}


def primary_rules(ctx: StepContext, group_id: str) -> set[Rule]:
    """The group's rules described as database-cluster-rule's.

    Read from DescribeSecurityGroups: its IpPermissions carry the description of rules
    that reference a group, which moto's DescribeSecurityGroupRules leaves out. The
    run's shared describe by tag holds the group (else it is described by ID).
    """
    groups = items_by_id(ctx, "describe_security_groups", [group_id])
    return {Rule("ingress", str(perm["IpProtocol"]).lower(), perm.get("FromPort", -1),
                 perm.get("ToPort", -1), pair["GroupId"], PRIMARY_RULE_DESCRIPTION)
            for group in groups for perm in group.get("IpPermissions", [])
            for pair in perm.get("UserIdGroupPairs", [])
            if pair.get("Description") == PRIMARY_RULE_DESCRIPTION}


def _rule_ids(ctx: StepContext, group_id: str, rules: set[Rule]) -> dict[Rule, str]:
    """The IDs of these rules (to revoke by ID: what AWS compares, whatever the description)."""
    ids = {live_rule(i): i["SecurityGroupRuleId"] for i in describe_rules(ctx, [group_id])}
    return {rule: ids[rule] for rule in sorted(rules, key=str) if rule in ids}


def destroy_database_cluster_rule(ctx: StepContext) -> None:
    # The security group goes with database-sg, but EKS deletes the primary group with
    # the cluster, and a group another group's rule refers to cannot be deleted.
    group_id = ctx.upstream.get("database-sg", {}).get("db_security_group_id")
    if group_id and not is_unknown(group_id):
        for rule, rule_id in _rule_ids(ctx, group_id, primary_rules(ctx, group_id)).items():
            ctx.delete("rule", RULE_KIND, rule_id, partial(revoke, ctx, group_id, "ingress"),
                       detail=f"{rule} on {group_id}")
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)


# -- step: database ------------------------------------------------------------------

def ensure_database(ctx: StepContext) -> dict[str, Any]:
    backend, ident = ctx.cfg.module_repo_backend, _identifier(ctx.cfg)
    sg_id = ctx.upstream["database-sg"]["db_security_group_id"]
    db = find_database(ctx, ident)
    if db is not None and db["DBInstanceStatus"] == "deleting":
        if not ctx.planning:
            wait_for_gone(ctx, ident)
        db = None
    if db is None:
        ctx.create("instance", KIND, lambda token: _create_database(ctx, ident, sg_id),
                   detail=f"PostgreSQL {backend.postgres_version}, {backend.db_instance_class}, "
                          f"{backend.db_storage} GiB", name=ident)
        if ctx.planning:
            return _planned_outputs(ctx, ident)
        db = wait_for_database(ctx, ident, CREATE_TIMEOUT)
        ensure_password_rotation(ctx, db, initial=True)
        return database_outputs(ctx, db)
    _check_ours(ctx, db)
    _check_failed(ctx, db)
    _check_unchangeable(ctx, db)
    ctx.found("instance", KIND, ident, live=db["DBInstanceStatus"])
    if db["DBInstanceStatus"] not in USABLE and not ctx.planning:
        db = wait_for_database(ctx, ident, CREATE_TIMEOUT)  # a previous run stopped waiting
    if reconcile_database(ctx, db, sg_id) and not ctx.planning:
        db = wait_for_database(ctx, ident, MODIFY_TIMEOUT)
    ensure_password_rotation(ctx, db)
    return database_outputs(ctx, db)


def find_database(ctx: StepContext, ident: str) -> dict[str, Any] | None:
    """The instance, read once per run (the network step reads its DB subnet group from it)."""
    return ctx.run.shared(("rds", "db-instance", ident), lambda: ctx.call(lambda: _describe(ctx, ident)))


def database_identifier(cfg: Any) -> str | None:
    return _identifier(cfg) if _enabled(cfg) else None


def _describe(ctx: StepContext, ident: str) -> dict[str, Any] | None:
    try:
        return ctx.aws.rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
    except ClientError as exc:
        if is_not_found(exc):  # DBInstanceNotFound
            return None
        raise


def _create_database(ctx: StepContext, ident: str, sg_id: str) -> str:
    backend = ctx.cfg.module_repo_backend
    try:
        ctx.aws.rds.create_db_instance(
            DBInstanceIdentifier=ident, Engine="postgres", EngineVersion=backend.postgres_version,
            DBInstanceClass=backend.db_instance_class,
            AllocatedStorage=backend.db_storage, DBName="postgres",
            MasterUsername=backend.db_username, ManageMasterUserPassword=True, Port=backend.db_port,
            DBSubnetGroupName=ctx.upstream["network"]["db_subnet_group_name"],
            VpcSecurityGroupIds=[sg_id], PubliclyAccessible=False,
            StorageEncrypted=backend.db_storage_encrypted,
            **{key: value for key, (_, value, _) in wanted_settings(backend).items()},
            Tags=tag_list(ctx.tags("instance")))
    except ClientError as exc:
        if error_code(exc) != "DBInstanceAlreadyExists":
            raise
        raced = _describe(ctx, ident)  # a create that raced: found, if it is ours
        if raced is None:
            raise
        _check_ours(ctx, raced)
    return ident


def _is_ours(ctx: StepContext, db: dict[str, Any]) -> bool:
    """Tagged for this deployment, by its own tags: an identifier is a name, and a recorded
    name is no proof (an instance deleted by hand can be recreated by someone else)."""
    return is_ours(ctx.cfg.name, db.get("TagList"))


def _check_ours(ctx: StepContext, db: dict[str, Any]) -> None:
    if not _is_ours(ctx, db):
        owner = tag_dict(db.get("TagList")).get(TAG_DEPLOYMENT)
        raise InputError(
            f"module_repo_backend.exadeploy_id: an RDS instance {db['DBInstanceIdentifier']} already "
            f"exists and is not this deployment's ({TAG_DEPLOYMENT}="
            f"{owner if owner else 'missing'}); exaprov never adopts another database",
            hint="choose another module_repo_backend.exadeploy_id")


def _is_failed(status: str) -> bool:
    return status in ("failed", "restore-error", "inaccessible-encryption-credentials") \
        or status.startswith(("incompatible-", "inaccessible-encryption-credentials-"))


def _check_failed(ctx: StepContext, db: dict[str, Any]) -> None:
    status, ident = db["DBInstanceStatus"], db["DBInstanceIdentifier"]
    if _is_failed(status):
        if not ctx.planning:
            ctx.run.writer.record(ctx.address("instance"), kind=KIND, id=ident, status=FAILED)
        raise ExaprovError(f"{ctx.step}: RDS instance {ident} is {status}",
                           hint=f"see `aws rds describe-events --source-type db-instance "
                                f"--source-identifier {ident}`; RDS cannot always recover it: "
                                "then `exaprov destroy` (or delete it by hand) and `up` again")
    if status in STOPPED:
        raise ExaprovError(f"{ctx.step}: RDS instance {ident} is {status}",
                           hint=f"start it: aws rds start-db-instance --db-instance-identifier {ident}")


def _check_unchangeable(ctx: StepContext, db: dict[str, Any]) -> None:
    """What RDS cannot change in place, as an input error before any change."""
    backend, ident = ctx.cfg.module_repo_backend, db["DBInstanceIdentifier"]
    problems = []
    live_major = str(db["EngineVersion"]).split(".")[0]
    if live_major != backend.postgres_version:
        problems.append(f"module_repo_backend.postgres_version: the database {ident} runs "
                        f"PostgreSQL {db['EngineVersion']} (major {live_major}), the config says "
                        f"{backend.postgres_version}; exaprov does not change major versions")
    storage = (db.get("PendingModifiedValues") or {}).get("AllocatedStorage", db["AllocatedStorage"])
    if backend.db_storage < storage and _autoscaled(backend, storage):
        pass  # storage autoscaling grew it: RDS's doing, within the configured ceiling
    elif backend.db_storage < storage:
        problems.append(f"module_repo_backend.db_storage: the database {ident} has {storage} GiB, "
                        f"the config says {backend.db_storage}; RDS storage cannot shrink")
    elif storage < backend.db_storage < math.ceil(storage * 1.1):
        # RDS would round it up to +10%, which the next run would see as a decrease.
        problems.append(f"module_repo_backend.db_storage: the database {ident} has {storage} GiB, "
                        f"the config says {backend.db_storage}; RDS grows storage by at least "
                        f"10% (to {math.ceil(storage * 1.1)} GiB or more)")
    if db["MasterUsername"] != backend.db_username:
        problems.append(f"module_repo_backend.db_username: the database {ident} has "
                        f"{db['MasterUsername']}, the config says {backend.db_username}; "
                        "the master user name cannot change")
    if bool(db.get("StorageEncrypted")) != backend.db_storage_encrypted:
        problems.append(f"module_repo_backend.db_storage_encrypted: the database {ident} has "
                        f"{bool(db.get('StorageEncrypted'))}, the config says "
                        f"{backend.db_storage_encrypted}; encryption cannot change in place")
    if problems:
        raise InputError("; ".join(problems),
                         hint="put the old value back, or `exaprov destroy` and `up` again "
                              "(which loses the database's data)")


def reconcile_database(ctx: StepContext, db: dict[str, Any], sg_id: str) -> bool:
    """Grow storage, change the class, repair drift: one ModifyDBInstance. True if modified."""
    backend, ident = ctx.cfg.module_repo_backend, db["DBInstanceIdentifier"]
    pending = db.get("PendingModifiedValues") or {}
    changes: list[str] = []
    params: dict[str, Any] = {}
    storage = pending.get("AllocatedStorage", db["AllocatedStorage"])
    if backend.db_storage > storage:
        changes.append(f"storage {storage} → {backend.db_storage} GiB")
        params["AllocatedStorage"] = backend.db_storage
    db_class = pending.get("DBInstanceClass", db["DBInstanceClass"])
    if db_class != backend.db_instance_class:
        changes.append(f"class {db_class} → {backend.db_instance_class}")
        params["DBInstanceClass"] = backend.db_instance_class
    port = pending.get("Port", (db.get("Endpoint") or {}).get("Port", db.get("DbInstancePort")))
    if port and port != backend.db_port:
        changes.append(f"port {port} → {backend.db_port}")
        params["DBPortNumber"] = backend.db_port
    if db.get("PubliclyAccessible"):
        changes.append("publicly accessible → not")
        params["PubliclyAccessible"] = False
    live_sgs = sorted(g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])
                      if g.get("Status") != "removing")
    if live_sgs != [sg_id]:
        changes.append(f"security groups {', '.join(live_sgs) or 'none'} → {sg_id}")
        params["VpcSecurityGroupIds"] = [sg_id]
    for key, (label, value, shown) in wanted_settings(backend, db).items():
        live = pending.get(key, db.get(key))
        if live is None and key == "EngineLifecycleSupport":
            continue  # not in the answer (moto's plain server): nothing to compare with
        if live != value:
            changes.append(f"{label} {_show(live)} → {shown}")
            params[key] = value
    if not db.get("MasterUserSecret"):
        changes.append("master password → managed by RDS in Secrets Manager")
        params["ManageMasterUserPassword"] = True
    _reconcile_tags(ctx, db)
    if not params:
        return False
    ctx.update("instance", KIND, "; ".join(changes), lambda: ctx.aws.rds.modify_db_instance(
        DBInstanceIdentifier=ident, ApplyImmediately=True, **params))
    return True


def wanted_settings(backend: Any, db: dict[str, Any] | None = None) -> dict[str, tuple[str, Any, str]]:
    """CreateDBInstance/ModifyDBInstance parameter → (what status calls it, the wanted value as
    DescribeDBInstances shows it, that value for people). All change in place, at once."""
    lifecycle = "open-source-rds-extended-support" if backend.db_extended_support \
        else "open-source-rds-extended-support-disabled"
    ceiling: Any = backend.db_max_allocated_storage or None
    settings: dict[str, tuple[str, Any, str]] = {
        "StorageType": ("storage type", backend.db_storage_type, backend.db_storage_type),
        "BackupRetentionPeriod": ("backup retention", backend.db_backup_retention_days,
                                  f"{backend.db_backup_retention_days} days"),
        "DeletionProtection": ("deletion protection", backend.db_deletion_protection,
                               _show(backend.db_deletion_protection)),
        "CopyTagsToSnapshot": ("copy tags to snapshots", True, "on"),
        "AutoMinorVersionUpgrade": ("minor version auto-upgrade", True, "on"),
        "EngineLifecycleSupport": ("engine lifecycle support", lifecycle, lifecycle),
    }
    if ceiling is not None:
        settings["MaxAllocatedStorage"] = ("storage autoscaling ceiling", ceiling, f"{ceiling} GiB")
    elif db is not None and db.get("MaxAllocatedStorage"):
        # Off: RDS turns storage autoscaling off when the ceiling equals the allocated storage
        # (DescribeDBInstances then leaves MaxAllocatedStorage out).
        settings["MaxAllocatedStorage"] = ("storage autoscaling ceiling", db["AllocatedStorage"], "off")
    return settings


def _autoscaled(backend: Any, storage: int) -> bool:
    return bool(backend.db_max_allocated_storage) and storage <= backend.db_max_allocated_storage


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _reconcile_tags(ctx: StepContext, db: dict[str, Any]) -> None:
    live = tag_dict(db.get("TagList"))
    missing = {k: v for k, v in ctx.tags("instance").items() if live.get(k) != v}
    if missing:
        ctx.update("instance", KIND, "tags " + ", ".join(f"{k}={v}" for k, v in sorted(missing.items())),
                   lambda: ctx.aws.rds.add_tags_to_resource(ResourceName=db["DBInstanceArn"],
                                                            Tags=tag_list(missing)))


# -- the master password's rotation ----------------------------------------------------
#
# RDS turns on rotation of the managed master secret, every 7 days, when it creates it
# (RDS user guide, "Password management with Amazon RDS and AWS Secrets Manager"). The
# module repository is handed the password once, so by default exaprov turns that rotation
# off (secretsmanager:CancelRotateSecret, which AWS allows on an RDS-managed secret: the
# Secrets Manager console's "disable automatic rotation"; terraform-provider-aws 6.62's
# `rotation_enabled = false` does the same), or sets the configured schedule with
# RotateSecret (RotationRules, RotateImmediately false: no rotation now).

def ensure_password_rotation(ctx: StepContext, db: dict[str, Any], initial: bool = False) -> None:
    arn = (db.get("MasterUserSecret") or {}).get("SecretArn")
    if not arn:
        return  # ManageMasterUserPassword is still being turned on: the next run sees it
    secrets = ctx.aws.client("secretsmanager")
    secret = ctx.call(lambda: secrets.describe_secret(SecretId=arn))
    ctx.run.observe(Observed(ctx.address("master-password"), SECRET_KIND, arn, arn,
                             rotation_text(secret)))
    wanted = ctx.cfg.module_repo_backend.db_password_rotation_days
    enabled = bool(secret.get("RotationEnabled"))
    days = (secret.get("RotationRules") or {}).get("AutomaticallyAfterDays")
    live = rotation_text(secret).split(";")[0]
    if wanted is None and enabled:
        ctx.update("master-password", SECRET_KIND, f"{live} → never (automatic rotation off)",
                   lambda: secrets.cancel_rotate_secret(SecretId=arn), initial=initial)
    elif wanted is not None and (not enabled or days != wanted):
        ctx.update("master-password", SECRET_KIND, f"{live} → rotates every {wanted} days",
                   lambda: secrets.rotate_secret(
                       SecretId=arn, RotationRules={"AutomaticallyAfterDays": wanted},
                       RotateImmediately=False), initial=initial)


def rotation_text(secret: dict[str, Any]) -> str:
    """The secret's rotation schedule as `status` shows it."""
    if not secret.get("RotationEnabled"):
        return "never rotates (automatic rotation off)"
    rules = secret.get("RotationRules") or {}
    every = f"every {rules['AutomaticallyAfterDays']} days" if rules.get("AutomaticallyAfterDays") \
        else rules.get("ScheduleExpression", "on a schedule")
    when = secret.get("NextRotationDate")
    nxt = f"; next {when.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC" if isinstance(when, datetime) else ""
    return f"rotates {every}{nxt}"


def wait_for_database(ctx: StepContext, ident: str, timeout: float) -> dict[str, Any]:
    """Until the instance serves with no change of ours pending; failed → recorded, raised."""
    def ready(db: dict[str, Any]) -> bool:
        status = db["DBInstanceStatus"]
        pending = db.get("PendingModifiedValues") or {}
        return (status in USABLE and not any(k in pending for k in PENDING_KEYS)) \
            or _is_failed(status) or status in STOPPED or status == "missing"

    db = ctx.wait_until(f"database {ident}",
                        lambda: _describe(ctx, ident) or {"DBInstanceIdentifier": ident,
                                                          "DBInstanceStatus": "missing"},
                        ready, timeout=timeout, interval=POLL_INTERVAL,
                        describe=lambda d: d["DBInstanceStatus"])
    if db["DBInstanceStatus"] == "missing":
        raise ExaprovError(f"{ctx.step}: RDS instance {ident} disappeared while exaprov waited for it",
                           hint="run `exaprov up` again to create it")
    _check_failed(ctx, db)
    return db


def wait_for_gone(ctx: StepContext, ident: str) -> None:
    ctx.wait_until(f"database {ident} to delete",
                   lambda: (_describe(ctx, ident) or {"DBInstanceStatus": "deleted"})["DBInstanceStatus"],
                   lambda status: status == "deleted", timeout=DELETE_TIMEOUT, interval=POLL_INTERVAL)


def database_outputs(ctx: StepContext, db: dict[str, Any]) -> dict[str, Any]:
    pending = unknown(ctx.address("instance"))  # no endpoint yet while creating (plan only)
    endpoint = db.get("Endpoint") or {}
    return {
        "rds_identifier": db["DBInstanceIdentifier"],
        "rds_arn": db["DBInstanceArn"],
        "rds_address": endpoint.get("Address") or pending,
        "rds_port": endpoint.get("Port") or db.get("DbInstancePort") or ctx.cfg.module_repo_backend.db_port,
        "rds_username": db["MasterUsername"],
        "rds_password_secret_arn": (db.get("MasterUserSecret") or {}).get("SecretArn") or pending,
        "rds_engine_version": db["EngineVersion"],
    }


def _planned_outputs(ctx: StepContext, ident: str) -> dict[str, Any]:
    backend, pending = ctx.cfg.module_repo_backend, unknown(ctx.address("instance"))
    return {"rds_identifier": ident, "rds_arn": pending, "rds_address": pending,
            "rds_port": backend.db_port, "rds_username": backend.db_username,
            "rds_password_secret_arn": pending, "rds_engine_version": backend.postgres_version}


def _known_identifiers(cfg: Any, recorded: str | None) -> list[str]:
    """The config's instance and the recorded one: with `module_repo_backend: null`, or after
    an exadeploy_id change, the recorded identifier is the only one that finds it."""
    idents = {recorded} | ({_identifier(cfg)} if _enabled(cfg) else set())
    return sorted(i for i in idents if i and not is_unknown(i))


def _protected(db: dict[str, Any]) -> bool:
    return bool(db.get("DeletionProtection")) and db["DBInstanceStatus"] != "deleting"


def rds_may_hold(state: Any, address: str) -> bool:
    """Whether destroy asks RDS about `address`: when the state records it, or when there is no
    state (everything is found by the config's names and the deployment's tag). A state that
    records nothing there never made it (an intent is recorded before every create), and an
    endpoint without RDS must not stop the rest of the deployment from being deleted."""
    return state.serial == 0 or address in state.resources


def destroy_database(ctx: StepContext) -> None:
    if not rds_may_hold(ctx.run.state, ctx.address("instance")):
        return
    for ident in _known_identifiers(ctx.cfg, ctx.recorded_id("instance")):
        db = find_database(ctx, ident)
        if db is None:
            continue
        if not _is_ours(ctx, db):
            ctx.report(f"leaving RDS instance {ident} alone: it is not this deployment's")
            continue
        if _protected(db):  # `destroy` checked first; this is `up` dropping the backend
            raise ExaprovError(
                f"{ctx.step}: RDS instance {ident} has DeletionProtection on; exaprov deletes "
                "nothing of the database while it is", hint=(
                    "if its data may go: `exaprov destroy --disable-deletion-protection`, or turn "
                    f"it off yourself: aws rds modify-db-instance --db-instance-identifier {ident} "
                    "--no-deletion-protection --apply-immediately; then run the command again"))
        ctx.delete("instance", KIND, ident, lambda i: _delete_database(ctx, i),
                   detail=f"DATA LOSS: database {ident} and its data")
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)


def protected_databases(cfg: Any, state: Any, aws: Any) -> list[str]:
    """The deployment's RDS instances that have DeletionProtection on.

    `destroy` asks this before anything is deleted: refusing then, rather than when the
    database step reaches the instance, leaves the rest of the deployment whole instead of
    half deleted around a database that stays."""
    if not rds_may_hold(state, "database.instance"):
        return []
    recorded = (state.resources.get("database.instance") or {}).get("id")
    protected = []
    for ident in _known_identifiers(cfg, recorded):
        try:
            db = aws.rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
        except ClientError as exc:
            if is_not_found(exc):
                continue
            raise
        if is_ours(cfg.name, db.get("TagList")) and _protected(db):
            protected.append(ident)
    return protected


def disable_deletion_protection(aws: Any, ident: str) -> None:
    """What `destroy --disable-deletion-protection` does first: the user's explicit consent."""
    aws.rds.modify_db_instance(DBInstanceIdentifier=ident, DeletionProtection=False,
                               ApplyImmediately=True)


def final_snapshot_name(ident: str, now: datetime | None = None) -> str:
    """`<exadeploy_id>-final-<UTC date-time>`: unique per second, a valid snapshot identifier."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{ident.removesuffix('-rds')}-final-{stamp}"


def _latest_final_snapshot(ctx: StepContext, ident: str) -> str | None:
    prefix = f"{ident.removesuffix('-rds')}-final-"
    found = ctx.call(lambda: ctx.aws.rds.describe_db_snapshots(
        DBInstanceIdentifier=ident, SnapshotType="manual"))["DBSnapshots"]
    names = sorted(s["DBSnapshotIdentifier"] for s in found
                   if s["DBSnapshotIdentifier"].startswith(prefix))
    return names[-1] if names else None


def _delete_database(ctx: StepContext, ident: str) -> None:
    rds = ctx.aws.rds
    # RDS takes the final snapshot once the instance stops taking writes. The snapshot is the
    # user's to keep: no step of exaprov ever deletes a snapshot (with CopyTagsToSnapshot it
    # carries the instance's tags, which help the user find it).
    snapshot = final_snapshot_name(ident) if ctx.run.final_snapshot else None
    final: dict[str, Any] = {"FinalDBSnapshotIdentifier": snapshot} if snapshot \
        else {"SkipFinalSnapshot": True}

    deleted: list[bool] = []

    def delete() -> None:
        try:
            rds.delete_db_instance(DBInstanceIdentifier=ident, DeleteAutomatedBackups=True, **final)
            deleted.append(True)
        except ClientError as exc:
            # Already deleting: just wait. Else (modifying, backing-up): retried until it can.
            if error_code(exc) != "InvalidDBInstanceState" \
                    or (_describe(ctx, ident) or {}).get("DBInstanceStatus", "deleting") != "deleting":
                raise

    ctx.retry_while(f"delete database {ident}", delete, {"InvalidDBInstanceState"},
                    timeout=DELETE_TIMEOUT)
    if snapshot and not deleted:  # already deleting (an earlier destroy): its snapshot, if any
        snapshot = _latest_final_snapshot(ctx, ident)
    if snapshot:
        ctx.run.kept.append(f"the database's final snapshot {snapshot} (RDS, {ctx.cfg.region}); "
                            f"restore it with `aws rds restore-db-instance-from-db-snapshot "
                            f"--db-snapshot-identifier {snapshot} ...`; exaprov never deletes it")
        ctx.report(f"final snapshot {snapshot}")
    wait_for_gone(ctx, ident)  # the RDS-managed secret goes with the instance


DATABASE_SG = Step("database-sg", ("network", "security-groups"), ensure_database_sg,
                   destroy_database_sg, enabled=_enabled, title="database security group")
DATABASE_CLUSTER_RULE = Step("database-cluster-rule", ("cluster", "database-sg"),
                             ensure_database_cluster_rule, destroy_database_cluster_rule,
                             enabled=_enabled, title="database access from the EKS primary group")
DATABASE = Step("database", ("network", "database-sg"), ensure_database, destroy_database,
                enabled=_enabled, title="RDS PostgreSQL")
