"""Which resources are this deployment's: the one rule every adopt, change and delete follows.

An AWS account may hold other things next to a deployment: a second exaprov deployment, a
team's hand-made VPCs and DB subnet groups, resources whose names happen to equal the ones
exaprov derives from the config. exaprov touches a resource only if

- AWS itself says it carries `exaprov:deployment=<this deployment>`: the tag is read back
  from the resource's own tags in the answer, never assumed because a describe was sent with
  a `tag:` filter (an endpoint may ignore the filter and answer everything); or
- it is a part of such a resource: a route in our route table, a rule in our security
  group, the primary security group EKS made for our cluster; or
- it carries no exaprov deployment tag at all and the state records its unique,
  AWS-generated ID (a VPC ID, a key ID, an IAM RoleId): exaprov made it and someone stripped
  its tags, which the next `up` puts back. A *name* recorded in the state is never enough:
  a DB subnet group, log group or cluster deleted by hand can be recreated by someone else
  under the same name.

A name match alone never makes a resource ours. A foreign resource in the way of one exaprov
would create (a name clash) stops `up` and `plan` before the first change: `preflight`
finds those with read-only calls, and the steps refuse them again when they meet one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from exaprov.errors import InputError, from_botocore, is_not_found

TAG_DEPLOYMENT = "exaprov:deployment"  # the same key as engine.TAG_DEPLOYMENT

TagsLike = Mapping[str, str] | Iterable[Mapping[str, str]] | None


def tags_of(tags: TagsLike) -> dict[str, str]:
    """Tags in any of AWS's shapes — a dict (EKS, logs) or a list of Key/Value (EC2, RDS, IAM),
    TagKey/TagValue (KMS) or key/value pairs — as one dict."""
    if tags is None:
        return {}
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    out: dict[str, str] = {}
    for tag in tags:
        key = tag.get("Key", tag.get("TagKey", tag.get("key")))
        value = tag.get("Value", tag.get("TagValue", tag.get("value", "")))
        if key is not None:
            out[str(key)] = str(value)
    return out


def owner(tags: TagsLike) -> str | None:
    """The exaprov deployment a resource's own tags name, if any."""
    return tags_of(tags).get(TAG_DEPLOYMENT)


def is_ours(deployment: str, tags: TagsLike, *, recorded_id: bool = False) -> bool:
    """The rule. `recorded_id`: the state records this resource's unique AWS-generated ID
    (never pass True for a name: names are not proof)."""
    found = owner(tags)
    return found == deployment or (recorded_id and found is None)


def owner_text(tags: TagsLike) -> str:
    found = owner(tags)
    return f"exaprov deployment {found!r}" if found else f"no {TAG_DEPLOYMENT} tag"


class NameClash(InputError):
    """Something that is not this deployment's already holds a name exaprov needs."""


def clash(kind: str, name: str, tags: TagsLike, field: str, deployment: str) -> NameClash:
    return NameClash(
        f"{field}: the {kind} {name} already exists and does not belong to deployment "
        f"{deployment!r} ({owner_text(tags)}); exaprov never adopts, changes or deletes what "
        "it did not create, and nothing was changed",
        hint=f"choose another {field} (or --config), or, if that {kind} is unused, delete or "
             "rename it yourself and run the command again")


# -- pre-flight: name clashes, before the first change --------------------------------------

def _or_none(call: Any) -> Any:
    try:
        return call()
    except ClientError as exc:
        if is_not_found(exc) or _code(exc) in ("NoSuchEntity", "DBSubnetGroupNotFoundFault",
                                                "DBInstanceNotFound", "ResourceNotFoundException",
                                                "NotFoundException"):
            return None
        raise


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def preflight(cfg: Any, state: Any, aws: Any) -> None:
    """Refuse `up` (exit 2, nothing changed) if a foreign resource holds a name this deployment
    would create. Only names the state does not record yet are asked about (a converged `up`
    makes no extra request); the steps check recorded ones as they find them."""
    clashes: list[NameClash] = []
    for check in (_db_subnet_group, _roles, _kms_alias, _log_group, _cluster, _launch_templates,
                  _security_groups, _database, _backend_user):
        try:
            found = check(cfg, state, aws)
        except ClientError as exc:
            raise from_botocore("pre-flight", exc) from exc
        if found is not None:
            clashes.append(found)
    if len(clashes) == 1:
        raise clashes[0]
    if clashes:
        raise NameClash("; ".join(c.message for c in clashes), hint=clashes[0].hint)


def _recorded(state: Any, address: str) -> dict[str, Any] | None:
    rec = state.resources.get(address)
    return rec if isinstance(rec, dict) and rec.get("id") else None


def _db_subnet_group(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    if _recorded(state, "network.db-subnet-group"):
        return None
    name = cfg.network.vpc_name.lower()  # RDS stores subnet group names in lower case
    rds = aws.rds
    groups = _or_none(lambda: rds.describe_db_subnet_groups(DBSubnetGroupName=name))
    if not groups or not groups.get("DBSubnetGroups"):
        return None
    tags = db_subnet_group_tags(aws, groups["DBSubnetGroups"][0])
    if is_ours(cfg.name, tags):
        return None
    return clash("RDS DB subnet group", name, tags, "network.vpc_name", cfg.name)


def db_subnet_group_tags(aws: Any, group: Mapping[str, Any]) -> list[dict[str, str]]:
    """A DB subnet group's own tags (DescribeDBSubnetGroups may not carry them)."""
    if "TagList" in group:
        return list(group["TagList"])
    return list(aws.rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"])
                .get("TagList", []))


def _roles(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    iam = aws.client("iam")
    for logical, suffix in (("cluster-role", "cluster"), ("node-role", "node")):
        if _recorded(state, f"iam.{logical}"):
            continue
        name = f"{cfg.cluster.cluster_name}-{suffix}"
        role = _or_none(lambda n=name: iam.get_role(RoleName=n))
        if role is None:
            continue
        tags = role["Role"].get("Tags")
        if tags is None:
            tags = iam.list_role_tags(RoleName=name).get("Tags", [])
        if not is_ours(cfg.name, tags):
            return clash("IAM role", name, tags, "cluster.cluster_name", cfg.name)
    return None


def _kms_alias(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    if _recorded(state, "kms.key"):
        return None
    kms, alias = aws.client("kms"), f"alias/eks/{cfg.cluster.cluster_name}"
    key = _or_none(lambda: kms.describe_key(KeyId=alias))
    if key is None:
        return None
    try:
        tags = kms.list_resource_tags(KeyId=key["KeyMetadata"]["KeyId"]).get("Tags", [])
    except ClientError as exc:
        if _code(exc) != "AccessDeniedException":  # a key of another team, not readable
            raise
        tags = []
    if is_ours(cfg.name, tags):
        return None
    return clash("KMS alias", alias, tags, "cluster.cluster_name", cfg.name)


def _log_group(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    if _recorded(state, "logs.log-group"):
        return None
    logs, name = aws.client("logs"), f"/aws/eks/{cfg.cluster.cluster_name}/cluster"
    groups = logs.describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
    group = next((g for g in groups if g["logGroupName"] == name), None)
    if group is None:
        return None
    arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
    tags = logs.list_tags_for_resource(resourceArn=arn).get("tags", {})
    if is_ours(cfg.name, tags):
        return None
    return clash("CloudWatch log group", name, tags, "cluster.cluster_name", cfg.name)


def _cluster(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    if _recorded(state, "cluster.cluster"):
        return None
    name = cfg.cluster.cluster_name
    found = _or_none(lambda: aws.client("eks").describe_cluster(name=name))
    if found is None or is_ours(cfg.name, found["cluster"].get("tags")):
        return None
    return clash("EKS cluster", name, found["cluster"].get("tags"), "cluster.cluster_name", cfg.name)


def _launch_templates(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    from exaprov.steps.node_groups import desired_groups, template_logical

    names = {f"{cfg.cluster.cluster_name}-{group}" for group in desired_groups(cfg)
             if not _recorded(state, f"node-groups.{template_logical(group)}")}
    if not names:
        return None
    # Launch template names are unique in a region.
    found = aws.ec2.describe_launch_templates(
        Filters=[{"Name": "launch-template-name", "Values": sorted(names)}])["LaunchTemplates"]
    for template in found:
        if template["LaunchTemplateName"] in names and not is_ours(cfg.name, template.get("Tags")):
            return clash("EC2 launch template", template["LaunchTemplateName"], template.get("Tags"),
                         "cluster.cluster_name", cfg.name)
    return None


def _security_groups(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    """Group names are unique in a VPC: only our own VPC can hold a clash."""
    vpc = _recorded(state, "network.vpc")
    if vpc is None:
        return None
    wanted = {"security-groups.cluster-sg": f"{cfg.cluster.cluster_name}-cluster",
              "security-groups.node-sg": f"{cfg.cluster.cluster_name}-node"}
    if cfg.module_repo_backend is not None:
        wanted["database-sg.db-sg"] = f"{cfg.module_repo_backend.exadeploy_id}-rds"
    names = {name for address, name in wanted.items() if not _recorded(state, address)}
    if not names:
        return None
    found = aws.ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc["id"]]},
        {"Name": "group-name", "Values": sorted(names)}])["SecurityGroups"]
    for group in found:
        if group.get("VpcId") == vpc["id"] and group["GroupName"] in names \
                and not is_ours(cfg.name, group.get("Tags")):
            field = "module_repo_backend.exadeploy_id" if group["GroupName"].endswith("-rds") \
                else "cluster.cluster_name"
            return clash(f"security group ({group['GroupId']} in {vpc['id']})", group["GroupName"],
                         group.get("Tags"), field, cfg.name)
    return None


def _database(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    if cfg.module_repo_backend is None or _recorded(state, "database.instance"):
        return None
    ident = f"{cfg.module_repo_backend.exadeploy_id}-rds"
    found = _or_none(lambda: aws.rds.describe_db_instances(DBInstanceIdentifier=ident))
    if not found or not found.get("DBInstances"):
        return None
    tags = found["DBInstances"][0].get("TagList")
    if is_ours(cfg.name, tags):
        return None
    return clash("RDS instance", ident, tags, "module_repo_backend.exadeploy_id", cfg.name)


def _backend_user(cfg: Any, state: Any, aws: Any) -> NameClash | None:
    if cfg.module_repo_backend is None or _recorded(state, "backend-user.user"):
        return None
    iam, name = aws.client("iam"), f"{cfg.backend_id}-user"
    user = _or_none(lambda: iam.get_user(UserName=name))
    if user is None:
        return None
    tags = user["User"].get("Tags")
    if tags is None:
        tags = iam.list_user_tags(UserName=name).get("Tags", [])
    if is_ours(cfg.name, tags):
        return None
    return clash("IAM user", name, tags, "module_repo_backend.exadeploy_id", cfg.name)
