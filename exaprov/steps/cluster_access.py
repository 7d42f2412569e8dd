"""Cluster access for extra IAM roles and users (the seed's aws-auth maps), as EKS access entries.

Access entries replaced the aws-auth ConfigMap: no Kubernetes API call is needed.
`system:masters` cannot be an access-entry group (EKS refuses `system:` groups),
so it becomes the AmazonEKSClusterAdminPolicy access policy, cluster-wide, which
grants the same.
Reads: cluster. Records: entry:<principal ARN>.
Touches only entries tagged with this deployment: EKS makes its own (the cluster
creator, the node role) and those are left alone.
Destroy: delete this deployment's entries (they go with the cluster anyway).
"""

from __future__ import annotations

from typing import Any

from exaprov.aws import paginate
from exaprov.engine import Step, StepContext, is_unknown
from exaprov.errors import AwsError, InputError, is_not_found
from exaprov.ownership import is_ours

MASTERS = "system:masters"
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def wanted_entries(cfg: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """principal ARN -> (Kubernetes user name, groups) from aws_auth_roles and aws_auth_users."""
    entries = {r.rolearn: (r.username, tuple(sorted(r.groups))) for r in cfg.cluster.aws_auth_roles}
    entries.update({u.userarn: (u.username, tuple(sorted(u.groups))) for u in cfg.cluster.aws_auth_users})
    return entries


def ensure_cluster_access(ctx: StepContext) -> dict[str, Any]:
    eks, cluster = ctx.aws.client("eks"), ctx.cfg.cluster.cluster_name
    wanted = wanted_entries(ctx.cfg)
    if not wanted and not ctx.recorded_logicals():
        return {"access_entries": []}  # off by default: not even a read
    live, others = ({}, set()) if is_unknown(ctx.upstream["cluster"]["cluster_arn"]) else _entries(ctx)
    clash = sorted(set(wanted) & others)
    if clash:
        raise InputError(
            f"cluster.aws_auth_roles/aws_auth_users: {', '.join(clash)} already has an access entry "
            "that exaprov did not make (EKS makes one for the cluster's creator and for node roles)",
            hint="remove it from the config; that principal already has access")
    for arn, (username, groups) in wanted.items():
        logical = f"entry:{arn}"
        plain = [g for g in groups if g != MASTERS]
        entry = live.get(arn)
        if entry is None:
            ctx.create(logical, "eks:access-entry", lambda token, a=arn, u=username, g=plain, lg=logical:
                       eks.create_access_entry(clusterName=cluster, principalArn=a, username=u,
                                               kubernetesGroups=g, clientRequestToken=token,
                                               tags=ctx.tags(lg))["accessEntry"]["principalArn"],
                       detail=f"{username} in {', '.join(groups) or 'no groups'}")
        else:
            ctx.found(logical, "eks:access-entry", arn)
            groups_live = sorted(entry.get("kubernetesGroups", []))
            if groups_live != sorted(plain) or entry.get("username") != username:
                ctx.update(logical, "eks:access-entry", f"{username} in {', '.join(plain) or 'no groups'}",
                           lambda a=arn, u=username, g=plain: eks.update_access_entry(
                               clusterName=cluster, principalArn=a, username=u, kubernetesGroups=g))
        admin = MASTERS in groups
        has_admin = entry is not None and ADMIN_POLICY in _policies(ctx, arn)
        if admin and not has_admin:
            ctx.update(logical, "eks:access-entry", f"{MASTERS} → cluster admin policy",
                       initial=entry is None,
                       apply=lambda a=arn: eks.associate_access_policy(
                           clusterName=cluster, principalArn=a, policyArn=ADMIN_POLICY,
                           accessScope={"type": "cluster"}))
        elif not admin and has_admin:
            ctx.update(logical, "eks:access-entry", "remove cluster admin policy",
                       lambda a=arn: eks.disassociate_access_policy(
                           clusterName=cluster, principalArn=a, policyArn=ADMIN_POLICY))
    for arn in live:
        if arn not in wanted:
            ctx.delete(f"entry:{arn}", "eks:access-entry", arn,
                       lambda a: eks.delete_access_entry(clusterName=cluster, principalArn=a),
                       detail=f"{arn} (no longer in the config)")
    return {"access_entries": sorted(wanted)}


def _our_entries(ctx: StepContext) -> dict[str, dict[str, Any]]:
    return _entries(ctx)[0]


def _entries(ctx: StepContext) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """(this deployment's entries by principal, the principals of everyone else's entries)"""
    eks, cluster = ctx.aws.client("eks"), ctx.cfg.cluster.cluster_name
    try:
        arns = ctx.call(lambda: paginate(eks, "list_access_entries", "accessEntries", clusterName=cluster))
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return {}, set()
        raise
    entries, others = {}, set()
    for arn in arns:
        entry = ctx.call(lambda a=arn: eks.describe_access_entry(clusterName=cluster, principalArn=a))[
            "accessEntry"]
        if is_ours(ctx.cfg.name, entry.get("tags")):
            entries[arn] = entry
        else:
            others.add(arn)
    return entries, others


def _policies(ctx: StepContext, arn: str) -> set[str]:
    eks = ctx.aws.client("eks")
    listed = ctx.call(lambda: eks.list_associated_access_policies(
        clusterName=ctx.cfg.cluster.cluster_name, principalArn=arn))
    return {p["policyArn"] for p in listed.get("associatedAccessPolicies", [])}


def destroy_cluster_access(ctx: StepContext) -> None:
    eks, cluster = ctx.aws.client("eks"), ctx.cfg.cluster.cluster_name
    if not ctx.recorded_logicals():
        return  # entries go with the cluster; only recorded ones are deleted ahead of it
    for arn in _our_entries(ctx):
        ctx.delete(f"entry:{arn}", "eks:access-entry", arn,
                   lambda a: eks.delete_access_entry(clusterName=cluster, principalArn=a))
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)


CLUSTER_ACCESS = Step("cluster-access", ("cluster",), ensure_cluster_access, destroy_cluster_access,
                      title="cluster access entries")
