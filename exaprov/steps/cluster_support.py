"""What the EKS cluster needs before it is created, as two steps.

`kms` owns the symmetric KMS key that encrypts Kubernetes secrets and its alias
`alias/eks/<cluster>`, with yearly automatic rotation on. Its key policy, as the eks
module's, gives the account root `kms:*` (so IAM policies can grant use), the key
administrators (`cluster.kms_key_administrators`, else the caller who created it) the
key-administration actions and the cluster role (from `iam`) the key-user actions; it
names no `*` principal. The key is found by its alias, else by the recorded ID, else by its
tags (a crash between CreateKey and CreateAlias leaves a tagged key without alias).

`logs` owns the control-plane log group `/aws/eks/<cluster>/cluster` and its
retention (`cluster.log_retention_in_days`, 0 = never expire). It must exist
before the cluster: EKS would otherwise create it itself, untagged and with no
retention.

Reads: iam (the cluster role, kms only). Records: kms.key (id = key ID, with arn and alias);
logs.log-group (id = its name). Destroy order: kms: alias → schedule the key's
deletion with the minimum 7-day window (a key already pending deletion counts as
gone); logs: the log group. Both work without state (alias, tags, name).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from exaprov.aws import paginate
from exaprov.engine import TAG_COMPONENT, TAG_RESOURCE, Step, StepContext, unknown
from exaprov.errors import AwsError, InputError, error_code, is_not_found
from exaprov.ownership import clash, is_ours
from exaprov.steps.iam import normalise_policy, partition

KEY_KIND = "kms:key"
LOG_KIND = "logs:log-group"
PENDING_WINDOW_DAYS = 7  # the minimum KMS allows
GONE_KEY_STATES = frozenset({"PendingDeletion", "PendingReplicaDeletion"})
KEY_ADMIN_ACTIONS = ("kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
                     "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
                     "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
                     "kms:CancelKeyDeletion")
# What the eks module gives its key users (the cluster role): encrypt Kubernetes secrets.
KEY_USER_ACTIONS = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                    "kms:DescribeKey")


def _found_or_none(ctx: StepContext, call: Any) -> Any:
    try:
        return ctx.call(call)
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return None
        raise


# -- step: kms ------------------------------------------------------------------------

def alias_name(ctx: StepContext) -> str:
    return f"alias/eks/{ctx.cfg.cluster.cluster_name}"


def key_policy(ctx: StepContext, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """The eks module's key policy: the account root (keeps the key manageable, lets IAM
    policies grant use), key administrators and, as key user, the cluster role.

    Administrators: `cluster.kms_key_administrators`, else those the live policy names (so
    a teammate's `up` does not hand the key to whoever runs it), else the caller."""
    root = f"arn:{partition(ctx.cfg.region)}:iam::{ctx.call(ctx.aws.account_id)}:root"
    statements: list[dict[str, Any]] = [
        {"Sid": "AccountRoot", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": "kms:*", "Resource": "*"}]
    admins = sorted(ctx.cfg.cluster.kms_key_administrators) or _live_admins(live) \
        or [ctx.call(ctx.aws.caller_arn)]
    statements.append({"Sid": "KeyAdministration", "Effect": "Allow",
                       "Principal": {"AWS": admins}, "Action": list(KEY_ADMIN_ACTIONS),
                       "Resource": "*"})
    role = ctx.upstream.get("iam", {}).get("cluster_role_arn")
    if role:
        statements.append({"Sid": "KeyUsage", "Effect": "Allow", "Principal": {"AWS": role},
                           "Action": list(KEY_USER_ACTIONS), "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


def _live_admins(live: dict[str, Any] | None) -> list[str]:
    for statement in (live or {}).get("Statement", []):
        if statement.get("Sid") == "KeyAdministration":
            principals = (statement.get("Principal") or {}).get("AWS") or []
            return sorted([principals] if isinstance(principals, str) else principals)
    return []


def kms_tags(ctx: StepContext) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in sorted(ctx.tags("key").items())]


def key_tags(ctx: StepContext, key_id: str) -> dict[str, str] | None:
    """A key's tags; None if this caller may not read them (keys of other teams)."""
    kms = ctx.aws.client("kms")
    try:
        tags = paginate(kms, "list_resource_tags", "Tags", KeyId=key_id)
    except ClientError as exc:
        if error_code(exc) in ("AccessDeniedException", "NotFoundException"):
            return None
        raise
    return {t["TagKey"]: t["TagValue"] for t in tags}


def _is_our_key(ctx: StepContext, tags: dict[str, str] | None) -> bool:
    return bool(tags) and is_ours(ctx.cfg.name, tags) \
        and tags.get(TAG_COMPONENT) == ctx.step and tags.get(TAG_RESOURCE) == "key"


def tagged_keys(ctx: StepContext) -> list[dict[str, Any]]:
    """Every customer key carrying this step's tags that is not pending deletion."""
    kms = ctx.aws.client("kms")
    found = []
    for entry in ctx.call(lambda: paginate(kms, "list_keys", "Keys")):
        if not _is_our_key(ctx, ctx.call(lambda e=entry: key_tags(ctx, e["KeyId"]))):
            continue
        meta = _found_or_none(ctx, lambda e=entry: kms.describe_key(KeyId=e["KeyId"]))
        if meta and meta["KeyMetadata"]["KeyState"] not in GONE_KEY_STATES:
            found.append(meta["KeyMetadata"])
    return sorted(found, key=lambda m: m["CreationDate"])


def find_key(ctx: StepContext) -> tuple[dict[str, Any] | None, bool]:
    """(the key's metadata, whether the alias points at it), or (None, False).

    By alias first; then the recorded ID; then by tag. A key reached through the alias
    may be pending deletion (repaired by `ensure_kms`); the others must not be.
    """
    kms = ctx.aws.client("kms")
    by_alias = _found_or_none(ctx, lambda: kms.describe_key(KeyId=alias_name(ctx)))
    if by_alias is not None:
        meta = by_alias["KeyMetadata"]
        if not _owns(ctx, meta):
            raise InputError(
                f"kms: the alias {alias_name(ctx)} already points at key {meta['KeyId']}, which "
                f"does not belong to deployment {ctx.cfg.name!r}; exaprov never takes over a "
                "key it did not create",
                hint="choose another cluster.cluster_name, or delete that alias")
        return meta, True
    recorded = ctx.recorded_id("key")
    if recorded:
        meta = _found_or_none(ctx, lambda: kms.describe_key(KeyId=recorded))
        if meta and meta["KeyMetadata"]["KeyState"] not in GONE_KEY_STATES:
            return meta["KeyMetadata"], False
    keys = tagged_keys(ctx)
    return (keys[0] if keys else None), False


def _owns(ctx: StepContext, meta: dict[str, Any]) -> bool:
    """Tagged for this deployment, or the very key the state records."""
    if meta["KeyId"] == ctx.recorded_id("key"):
        return True
    return _is_our_key(ctx, ctx.call(lambda: key_tags(ctx, meta["KeyId"])))


def ensure_kms(ctx: StepContext) -> dict[str, Any]:
    kms, alias = ctx.aws.client("kms"), alias_name(ctx)
    cluster = ctx.cfg.cluster.cluster_name
    description = f"exaprov {ctx.cfg.name}: EKS secrets encryption for {cluster}"
    meta, aliased = find_key(ctx)
    policy = key_policy(ctx) if meta is None else {}
    if meta is None:
        created: dict[str, Any] = {}

        def create(token: str) -> str:
            created.update(kms.create_key(
                Description=description, KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT",
                Policy=json.dumps(policy), Tags=kms_tags(ctx))["KeyMetadata"])
            return str(created["KeyId"])

        key_id = ctx.create("key", KEY_KIND, create, detail=f"symmetric, {alias}, rotated yearly",
                            name=alias)
        if not ctx.planning:
            ctx.run.writer.record(ctx.address("key"), arn=created["Arn"], alias=alias)
        ctx.update("key", KEY_KIND, f"alias {alias}", initial=True,
                   apply=lambda: kms.create_alias(AliasName=alias, TargetKeyId=key_id))
        ctx.update("key", KEY_KIND, "automatic rotation", initial=True,
                   apply=lambda: kms.enable_key_rotation(KeyId=key_id))
        arn = created.get("Arn", key_id)
        return {"kms_key_arn": arn, "kms_key_id": key_id, "kms_alias": alias}

    key_id, arn = meta["KeyId"], meta["Arn"]
    ctx.found("key", KEY_KIND, key_id, live=meta["KeyState"], arn=arn, alias=alias)
    if meta["KeyState"] in GONE_KEY_STATES:
        # A key scheduled for deletion can be saved; CancelKeyDeletion leaves it disabled.
        ctx.update("key", KEY_KIND, "cancel its scheduled deletion and enable it",
                   lambda: (kms.cancel_key_deletion(KeyId=key_id), kms.enable_key(KeyId=key_id)))
    elif meta["KeyState"] == "Disabled":
        ctx.update("key", KEY_KIND, "enable it", lambda: kms.enable_key(KeyId=key_id))
    if not aliased:
        ctx.update("key", KEY_KIND, f"alias {alias} → {key_id}",
                   lambda: kms.create_alias(AliasName=alias, TargetKeyId=key_id))
    if meta.get("Description") != description:
        ctx.update("key", KEY_KIND, "description",
                   lambda: kms.update_key_description(KeyId=key_id, Description=description))
    live_policy = ctx.call(lambda: kms.get_key_policy(KeyId=key_id, PolicyName="default"))["Policy"]
    policy = key_policy(ctx, json.loads(live_policy))
    if normalise_policy(live_policy) != normalise_policy(policy):
        ctx.update("key", KEY_KIND, "key policy", lambda: kms.put_key_policy(
            KeyId=key_id, PolicyName="default", Policy=json.dumps(policy)))
    # The eks module turns on yearly automatic rotation (KMS: every 365 days by default).
    if meta["KeyState"] == "Enabled" and not ctx.call(
            lambda: kms.get_key_rotation_status(KeyId=key_id)).get("KeyRotationEnabled"):
        ctx.update("key", KEY_KIND, "automatic key rotation off → on",
                   lambda: kms.enable_key_rotation(KeyId=key_id))
    live_tags = ctx.call(lambda: key_tags(ctx, key_id)) or {}
    missing = [t for t in kms_tags(ctx) if live_tags.get(t["TagKey"]) != t["TagValue"]]
    if missing:
        ctx.update("key", KEY_KIND, "tags " + ", ".join(f"{t['TagKey']}={t['TagValue']}" for t in missing),
                   lambda: kms.tag_resource(KeyId=key_id, Tags=missing))
    return {"kms_key_arn": arn, "kms_key_id": key_id, "kms_alias": alias}


def destroy_kms(ctx: StepContext) -> None:
    kms, alias = ctx.aws.client("kms"), alias_name(ctx)
    keys: dict[str, dict[str, Any]] = {}
    target = _found_or_none(ctx, lambda: kms.describe_key(KeyId=alias))
    if target is not None and _owns(ctx, target["KeyMetadata"]):
        keys[target["KeyMetadata"]["KeyId"]] = target["KeyMetadata"]
        ctx.delete("alias", "kms:alias", alias, lambda a: kms.delete_alias(AliasName=a))
    recorded = ctx.recorded_id("key")
    if recorded and recorded not in keys:
        meta = _found_or_none(ctx, lambda: kms.describe_key(KeyId=recorded))
        if meta is not None:
            keys[recorded] = meta["KeyMetadata"]
    for meta in tagged_keys(ctx):  # also keys a crashed `up` left without alias
        keys.setdefault(meta["KeyId"], meta)
    for key_id, meta in sorted(keys.items()):
        if meta["KeyState"] in GONE_KEY_STATES:
            continue
        ctx.delete("key", KEY_KIND, key_id, lambda k: kms.schedule_key_deletion(
            KeyId=k, PendingWindowInDays=PENDING_WINDOW_DAYS), detail=f"{key_id} (in 7 days)")
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)


# -- step: logs -----------------------------------------------------------------------

def log_group_name(ctx: StepContext) -> str:
    return f"/aws/eks/{ctx.cfg.cluster.cluster_name}/cluster"


def find_log_group(ctx: StepContext, name: str) -> dict[str, Any] | None:
    logs = ctx.aws.client("logs")
    groups = ctx.call(lambda: paginate(logs, "describe_log_groups", "logGroups",
                                       logGroupNamePrefix=name))
    return next((g for g in groups if g["logGroupName"] == name), None)


def log_group_arn(group: dict[str, Any]) -> str:
    # `arn` ends in ":*" (its streams); `logGroupArn` is the group's own ARN.
    return str(group.get("logGroupArn") or group["arn"].removesuffix(":*"))


def ensure_logs(ctx: StepContext) -> dict[str, Any]:
    logs, name = ctx.aws.client("logs"), log_group_name(ctx)
    retention = ctx.cfg.cluster.log_retention_in_days
    tags = ctx.tags("log-group")
    group = find_log_group(ctx, name)
    if group is None:
        def create(token: str) -> str:
            logs.create_log_group(logGroupName=name, tags=tags)
            return name

        ctx.create("log-group", LOG_KIND, create, detail=_retention_text(retention), name=name)
        if retention:
            ctx.update("log-group", LOG_KIND, "retention", initial=True, apply=lambda: (
                logs.put_retention_policy(logGroupName=name, retentionInDays=retention)))
        if ctx.planning:
            return {"log_group_name": name, "log_group_arn": unknown(ctx.address("log-group"))}
        arn = _arn(ctx, name)
        ctx.run.writer.record(ctx.address("log-group"), arn=arn)  # as found() records it next time
        return {"log_group_name": name, "log_group_arn": arn}

    arn = log_group_arn(group)
    live_tags = ctx.call(lambda: logs.list_tags_for_resource(resourceArn=arn)).get("tags", {})
    # Only a group that is this deployment's by its own tags: an untagged one of that name
    # (EKS's own, left by an earlier cluster of the same name, or a team's) is not proof.
    if not is_ours(ctx.cfg.name, live_tags):
        raise clash("CloudWatch log group", name, live_tags, "cluster.cluster_name", ctx.cfg.name)
    ctx.found("log-group", LOG_KIND, name, arn=arn)
    live = group.get("retentionInDays")
    if (live or 0) != retention:
        detail = f"retention {_retention_text(live or 0)} → {_retention_text(retention)}"
        if retention:
            ctx.update("log-group", LOG_KIND, detail, lambda: logs.put_retention_policy(
                logGroupName=name, retentionInDays=retention))
        else:
            ctx.update("log-group", LOG_KIND, detail,
                       lambda: logs.delete_retention_policy(logGroupName=name))
    missing = {k: v for k, v in tags.items() if live_tags.get(k) != v}
    if missing:
        ctx.update("log-group", LOG_KIND, "tags " + ", ".join(f"{k}={v}" for k, v in sorted(missing.items())),
                   lambda: logs.tag_resource(resourceArn=arn, tags=missing))
    return {"log_group_name": name, "log_group_arn": arn}


def destroy_logs(ctx: StepContext) -> None:
    logs = ctx.aws.client("logs")
    # The recorded name too: the group of a since-renamed cluster must not be left behind.
    for name in sorted({log_group_name(ctx), ctx.recorded_id("log-group")} - {None}):
        group = find_log_group(ctx, name) if name else None
        if group is None:
            continue
        live_tags = ctx.call(lambda g=group: logs.list_tags_for_resource(
            resourceArn=log_group_arn(g))).get("tags", {})
        if not is_ours(ctx.cfg.name, live_tags):  # a name, even a recorded one, is no proof
            ctx.report(f"leaving log group {name}: it does not belong to this deployment")
            continue
        ctx.delete("log-group", LOG_KIND, name, lambda n: logs.delete_log_group(logGroupName=n))
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)


def _retention_text(days: int) -> str:
    return f"{days} days" if days else "never expire"


def _arn(ctx: StepContext, name: str) -> str:
    return (f"arn:{partition(ctx.cfg.region)}:logs:{ctx.cfg.region}:{ctx.call(ctx.aws.account_id)}"
            f":log-group:{name}")


KMS = Step("kms", ("iam",), ensure_kms, destroy_kms, title="KMS key for secrets")
LOGS = Step("logs", (), ensure_logs, destroy_logs, title="control-plane log group")
