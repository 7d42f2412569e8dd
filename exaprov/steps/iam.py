"""The cluster's IAM roles, as the step `iam`.

Owns two roles with deterministic names: `<cluster>-cluster`, which EKS assumes
(trust `eks.amazonaws.com`, AmazonEKSClusterPolicy, AmazonEKSVPCResourceController and an
inline policy denying logs:CreateLogGroup), and `<cluster>-node`, which
the nodes' EC2 instances assume (trust `ec2.amazonaws.com`, AmazonEKSWorkerNodePolicy,
AmazonEKS_CNI_Policy, AmazonEC2ContainerRegistryReadOnly). Each role carries
exactly those managed policies: missing ones are attached, extra ones detached.

Roles are found by name; one of that name that neither carries this deployment's
`exaprov:deployment` tag nor is the role the state records (by its unique RoleId)
belongs to someone else, and exaprov refuses to touch it.

Reads: nothing upstream. Records: cluster-role, node-role (id = ARN, with name and
role_id). Destroy order: per role, detach managed policies → delete inline
policies → remove it from instance profiles (EKS managed node groups make some)
→ delete the role. It works without state: roles are looked up by name and
deleted only if they carry this deployment's tag.

IAM is eventually consistent, but nothing here needs to wait: the cluster step
retries EKS's "role cannot be assumed" while a new role propagates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from exaprov import ownership
from exaprov.aws import paginate, tag_dict, tag_list
from exaprov.engine import TAG_DEPLOYMENT, Step, StepContext
from exaprov.errors import AwsError, InputError, ignore_not_found, is_not_found

KIND = "iam:role"


@dataclass(frozen=True)
class RoleSpec:
    logical: str
    suffix: str  # the role is named <cluster>-<suffix>
    service: str  # the service principal's first label: eks, ec2
    actions: tuple[str, ...]
    policies: tuple[str, ...]  # AWS managed policy names


ROLES = (
    # Current EKS docs give the cluster role's trust sts:TagSession as well.
    # AmazonEKSVPCResourceController as the eks module attaches it (security groups for pods).
    RoleSpec("cluster-role", "cluster", "eks", ("sts:AssumeRole", "sts:TagSession"),
             ("AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController")),
    RoleSpec("node-role", "node", "ec2", ("sts:AssumeRole",),
             ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
              "AmazonEC2ContainerRegistryReadOnly")),
)


# The cluster role's inline policy, as the eks module's: EKS may not create the control-plane
# log group itself. The `logs` step makes it (tagged, with retention) before the cluster;
# without this, EKS would re-create it untagged and never expiring, e.g. after a destroy.
DENY_LOG_GROUP_POLICY = "exaprov-deny-log-group-creation"
DENY_LOG_GROUP = {"Version": "2012-10-17", "Statement": [
    {"Sid": "DenyCreateLogGroup", "Effect": "Deny", "Action": ["logs:CreateLogGroup"],
     "Resource": "*"}]}


def partition(region: str) -> str:
    """The ARN partition of a region (aws, aws-cn, aws-us-gov)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def role_name(ctx: StepContext, spec: RoleSpec) -> str:
    return f"{ctx.cfg.cluster.cluster_name}-{spec.suffix}"


def trust_policy(ctx: StepContext, spec: RoleSpec) -> dict[str, Any]:
    # In China, EC2's service principal carries the partition's DNS suffix; EKS's does not.
    suffix = "amazonaws.com.cn" if spec.service == "ec2" and partition(ctx.cfg.region) == "aws-cn" \
        else "amazonaws.com"
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": f"{spec.service}.{suffix}"},
                           "Action": list(spec.actions)}]}


def policy_arns(ctx: StepContext, spec: RoleSpec) -> set[str]:
    return {f"arn:{partition(ctx.cfg.region)}:iam::aws:policy/{p}" for p in spec.policies}


def normalise_policy(doc: Any) -> str:
    """A policy document in a canonical form: AWS may return single values unlisted,
    lists reordered, or the document URL-encoded as a string."""
    if isinstance(doc, str):
        doc = json.loads(unquote(doc))

    def canon(value: Any, in_list: bool = False) -> Any:
        if isinstance(value, dict):
            return {k: canon(v) for k, v in value.items()}
        if isinstance(value, list):
            return sorted((canon(v, True) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
        return [value] if isinstance(value, str) and not in_list else value

    statements = doc.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    canonical = {"Version": doc.get("Version"),
                 "Statement": canon([{k: v for k, v in s.items() if k != "Sid"} for s in statements])}
    return json.dumps(canonical, sort_keys=True)


# -- finding ----------------------------------------------------------------------

def find_role(ctx: StepContext, name: str) -> dict[str, Any] | None:
    """The role of that name, or None."""
    iam = ctx.aws.client("iam")
    try:
        role: dict[str, Any] = ctx.call(lambda: iam.get_role(RoleName=name))["Role"]
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return None
        raise
    if "Tags" not in role:  # GetRole returns tags; be safe with endpoints that do not
        role["Tags"] = ctx.call(lambda: paginate(iam, "list_role_tags", "Tags", RoleName=name))
    return role


def is_ours(ctx: StepContext, logical: str, role: dict[str, Any]) -> bool:
    """Tagged for this deployment, or the very role (same RoleId) the state records."""
    rec = ctx.recorded(logical) or {}
    same = rec.get("id") == role["Arn"] and rec.get("role_id") == role["RoleId"]
    return ownership.is_ours(ctx.cfg.name, role.get("Tags"), recorded_id=same)


# -- step: iam ----------------------------------------------------------------------

def ensure_iam(ctx: StepContext) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for spec in ROLES:
        arn, name = ensure_role(ctx, spec)
        outputs[f"{spec.suffix}_role_arn"] = arn
        outputs[f"{spec.suffix}_role_name"] = name
    return outputs


def ensure_role(ctx: StepContext, spec: RoleSpec) -> tuple[str, str]:
    iam, name = ctx.aws.client("iam"), role_name(ctx, spec)
    trust, wanted_policies = trust_policy(ctx, spec), policy_arns(ctx, spec)
    tags = ctx.tags(spec.logical, name=name)
    role = find_role(ctx, name)
    if role is None:
        created: dict[str, Any] = {}

        def create(token: str) -> str:
            created.update(iam.create_role(
                RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                Description=f"exaprov {ctx.cfg.name}: EKS {spec.suffix} role",
                Tags=tag_list(tags))["Role"])
            return str(created["Arn"])

        arn = ctx.create(spec.logical, KIND, create, detail=f"trusts {spec.service}", name=name)
        if not ctx.planning:
            ctx.run.writer.record(ctx.address(spec.logical), name=name, role_id=created["RoleId"])
        for policy in sorted(wanted_policies):
            ctx.update(spec.logical, KIND, f"attach {policy}", initial=True,
                       apply=lambda p=policy: iam.attach_role_policy(RoleName=name, PolicyArn=p))
        if spec.logical == "cluster-role":
            ctx.update(spec.logical, KIND, f"inline policy {DENY_LOG_GROUP_POLICY}", initial=True,
                       apply=lambda: _put_deny_log_group(iam, name))
        return arn, name

    if not is_ours(ctx, spec.logical, role):
        raise InputError(
            f"iam: the IAM role {name} ({role['Arn']}) already exists and does not belong to "
            f"deployment {ctx.cfg.name!r} (no {TAG_DEPLOYMENT}={ctx.cfg.name} tag); exaprov "
            "never takes over a role it did not create",
            hint="choose another cluster.cluster_name, or delete or rename that role")
    arn = ctx.found(spec.logical, KIND, role["Arn"], name=name, role_id=role["RoleId"])

    if normalise_policy(role["AssumeRolePolicyDocument"]) != normalise_policy(trust):
        ctx.update(spec.logical, KIND, f"trust policy → {spec.service} only",
                   lambda: iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust)))
    attached = {p["PolicyArn"] for p in ctx.call(lambda: paginate(
        iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name))}
    for policy in sorted(wanted_policies - attached):
        ctx.update(spec.logical, KIND, f"attach {policy}",
                   lambda p=policy: iam.attach_role_policy(RoleName=name, PolicyArn=p))
    for policy in sorted(attached - wanted_policies):
        ctx.update(spec.logical, KIND, f"detach {policy}",
                   lambda p=policy: iam.detach_role_policy(RoleName=name, PolicyArn=p))
    if spec.logical == "cluster-role":
        try:
            document: Any = ctx.call(lambda: iam.get_role_policy(
                RoleName=name, PolicyName=DENY_LOG_GROUP_POLICY))["PolicyDocument"]
        except AwsError as exc:
            if exc.__cause__ is None or not is_not_found(exc.__cause__):
                raise
            document = None
        if document is None or normalise_policy(document) != normalise_policy(DENY_LOG_GROUP):
            ctx.update(spec.logical, KIND, f"inline policy {DENY_LOG_GROUP_POLICY} "
                                           f"({'missing' if document is None else 'changed'})",
                       lambda: _put_deny_log_group(iam, name))
    live = tag_dict(role.get("Tags"))
    missing = {k: v for k, v in tags.items() if live.get(k) != v}
    if missing:
        ctx.update(spec.logical, KIND, "tags " + ", ".join(f"{k}={v}" for k, v in sorted(missing.items())),
                   lambda: iam.tag_role(RoleName=name, Tags=tag_list(missing)))
    return arn, name


def _put_deny_log_group(iam: Any, role: str) -> None:
    iam.put_role_policy(RoleName=role, PolicyName=DENY_LOG_GROUP_POLICY,
                        PolicyDocument=json.dumps(DENY_LOG_GROUP))


def destroy_iam(ctx: StepContext) -> None:
    for spec in ROLES:
        # The recorded name too: the role of a since-renamed cluster must not be left behind.
        recorded_name = (ctx.recorded(spec.logical) or {}).get("name")
        for name in sorted({role_name(ctx, spec), recorded_name} - {None}):
            role = find_role(ctx, name)
            if role is None:
                continue
            if not is_ours(ctx, spec.logical, role):
                ctx.report(f"leaving IAM role {name}: it does not belong to this deployment")
                continue
            ctx.delete(spec.logical, KIND, role["Arn"], lambda arn, n=name: delete_role(ctx, n),
                       detail=name)
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)


def delete_role(ctx: StepContext, name: str) -> None:
    """A role can only go once nothing is attached to it and no instance profile holds it."""
    iam = ctx.aws.client("iam")
    for policy in paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name):
        ignore_not_found(lambda p=policy: iam.detach_role_policy(RoleName=name,
                                                                   PolicyArn=p["PolicyArn"]))
    for policy_name in paginate(iam, "list_role_policies", "PolicyNames", RoleName=name):
        ignore_not_found(lambda p=policy_name: iam.delete_role_policy(RoleName=name, PolicyName=p))
    for profile in paginate(iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=name):
        ignore_not_found(lambda p=profile: iam.remove_role_from_instance_profile(
            InstanceProfileName=p["InstanceProfileName"], RoleName=name))
    iam.delete_role(RoleName=name)



IAM = Step("iam", (), ensure_iam, destroy_iam, title="IAM roles")
