"""The cluster's two security groups and their rules, as one step.

Owns the additional cluster security group `<cluster>-cluster` and the shared
node security group `<cluster>-node` (tagged `kubernetes.io/cluster/<cluster>=owned`),
both in the deployment's VPC, with the rules of the terraform-aws-eks module:
the cluster group admits the API port from the nodes and has no egress; the node
group admits everything from itself and the control plane's ports from the
cluster group, and reaches anywhere over IPv4 and IPv6. Rules are reconciled one
by one; rules on these groups that nothing wants are revoked, except those whose
description starts with a prefix of FOREIGN_RULE_PREFIXES (later steps own them).
`ensure_rules` and `Rule` are exported for the cluster step (the primary group's
VPC-wide rule, added with `exclusive=False`).

Reads: `network.vpc_id`. Records: cluster-sg, node-sg.
Destroy order: revoke the rules that reference the other group → delete detached
ENIs in the VPC that use either group (VPC CNI leftovers) → delete both
groups, retrying DependencyViolation while ENIs of deleted nodes or load
balancers linger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from exaprov.aws import paginate, tag_dict, tag_list
from exaprov.engine import TAG_RESOURCE, Change, Step, StepContext, is_unknown
from exaprov.errors import ExaprovError, error_code, is_not_found
from exaprov.ownership import clash, is_ours
from exaprov.steps.ec2_lookup import Ec2Items, deployment_items, reconcile_tags, tag_specs, verify_gone

KIND = "ec2:security-group"
# Rules on our groups whose description starts with one of these belong to later
# steps (peering adds client CIDRs to the node group): never revoked here.
FOREIGN_RULE_PREFIXES: tuple[str, ...] = ("exaprov peering",)
ALL = "-1"  # every protocol; AWS reports its ports as -1
IPV4_ANYWHERE, IPV6_ANYWHERE = "0.0.0.0/0", "::/0"
WEBHOOK_PORTS = (4443, 6443, 8443, 9443)  # metrics-server and admission webhooks
DEPENDENCY_TIMEOUT = 15 * 60  # ENIs of deleted nodes and load balancers linger for minutes
NEW_ID_TIMEOUT = 2 * 60  # a new group may not yet be known to every EC2 endpoint
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "all": ALL}


@dataclass(frozen=True)
class Rule:
    """One security group rule. Its identity is what AWS compares; the description is not."""

    direction: str  # ingress | egress
    protocol: str  # tcp | udp | icmp | -1
    from_port: int = -1
    to_port: int = -1
    source: str = ""  # an IPv4 CIDR, an IPv6 CIDR, a security group ID or a prefix list ID
    description: str = field(default="", compare=False)

    def __str__(self) -> str:
        protocol = "all" if self.protocol == ALL else self.protocol
        ports = "" if self.protocol == ALL else (
            f" {self.from_port}" if self.from_port == self.to_port
            else f" {self.from_port}-{self.to_port}")
        towards = "from" if self.direction == "ingress" else "to"
        return f"{self.direction} {protocol}{ports} {towards} {self.source}"

    def permission(self) -> dict[str, Any]:
        """The rule as one IpPermissions entry."""
        perm: dict[str, Any] = {"IpProtocol": self.protocol}
        if self.protocol != ALL:
            perm.update(FromPort=self.from_port, ToPort=self.to_port)
        described = {"Description": self.description} if self.description else {}
        if self.source.startswith("sg-") or is_unknown(self.source):
            perm["UserIdGroupPairs"] = [{"GroupId": self.source, **described}]
        elif self.source.startswith("pl-"):
            perm["PrefixListIds"] = [{"PrefixListId": self.source, **described}]
        elif ":" in self.source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": self.source, **described}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.source, **described}]
        return perm


def live_rule(item: dict[str, Any]) -> Rule:
    """A rule as DescribeSecurityGroupRules reports it."""
    protocol = str(item.get("IpProtocol", ALL)).lower()
    protocol = _PROTOCOL_NAMES.get(protocol, protocol)
    ports = (-1, -1) if protocol == ALL else (item.get("FromPort", -1), item.get("ToPort", -1))
    source = (item.get("CidrIpv4") or item.get("CidrIpv6")
              or (item.get("ReferencedGroupInfo") or {}).get("GroupId")
              or item.get("PrefixListId") or "")
    return Rule("egress" if item.get("IsEgress") else "ingress", protocol, ports[0], ports[1],
                source, item.get("Description", ""))


def cluster_rules(node_sg: str) -> set[Rule]:
    return {Rule("ingress", "tcp", 443, 443, node_sg, "Node groups to cluster API")}


def node_rules(node_sg: str, cluster_sg: str) -> set[Rule]:
    rules = {
        Rule("ingress", ALL, source=node_sg, description="Node to node all ports/protocols"),
        Rule("ingress", "tcp", 443, 443, cluster_sg, "Cluster API to node groups"),
        Rule("ingress", "tcp", 10250, 10250, cluster_sg, "Cluster API to node kubelets"),
        Rule("egress", ALL, source=IPV4_ANYWHERE, description="Node all egress"),
        Rule("egress", ALL, source=IPV6_ANYWHERE, description="Node all egress"),
    }
    rules |= {Rule("ingress", "tcp", port, port, cluster_sg, f"Cluster API to node {port}/tcp webhook")
              for port in WEBHOOK_PORTS}
    return rules


# -- step: security-groups ----------------------------------------------------------

def ensure_security_groups(ctx: StepContext) -> dict[str, Any]:
    vpc_id = ctx.upstream["network"]["vpc_id"]
    cluster_name = ctx.cfg.cluster.cluster_name
    # In a VPC still to be created, nothing can exist yet: everything is a create.
    items = None if is_unknown(vpc_id) else Ec2Items(ctx, "describe_security_groups", KIND)
    cluster_sg, cluster_new = ensure_group(
        ctx, items, "cluster-sg", vpc_id, f"{cluster_name}-cluster", "EKS cluster security group")
    node_sg, node_new = ensure_group(
        ctx, items, "node-sg", vpc_id, f"{cluster_name}-node", "EKS node shared security group",
        extra={f"kubernetes.io/cluster/{cluster_name}": "owned"})
    # The cluster group loses the allow-all egress AWS gives every new group.
    ensure_rules(ctx, "cluster-sg", cluster_sg, cluster_rules(node_sg), initial=cluster_new)
    ensure_rules(ctx, "node-sg", node_sg, node_rules(node_sg, cluster_sg), initial=node_new)
    return {"cluster_security_group_id": cluster_sg, "node_security_group_id": node_sg}


def ensure_group(ctx: StepContext, items: Ec2Items | None, logical: str, vpc_id: str, name: str,
                 description: str, extra: dict[str, str] | None = None) -> tuple[str, bool]:
    """Find (by record, tag, then name in the VPC) or create one group; True if created.

    Group names are unique in a VPC: one of this name that is not the deployment's by its
    own tags is in the way (a name clash), refused before anything changes."""
    ec2 = ctx.aws.ec2
    group = items.pick(logical) if items is not None else None
    if group is None and items is not None:
        group = find_group_by_name(ctx, vpc_id, name)
        if group is not None and not is_ours(ctx.cfg.name, group.get("Tags")):
            raise clash(f"security group ({group['GroupId']} in {vpc_id})", name, group.get("Tags"),
                        "cluster.cluster_name" if ctx.step == "security-groups"
                        else "module_repo_backend.exadeploy_id", ctx.cfg.name)
    if group is None:
        group_id = ctx.create(logical, KIND, lambda token: ctx.retry_while(
            f"new VPC {vpc_id}", lambda: ec2.create_security_group(
                GroupName=name, Description=description, VpcId=vpc_id,
                TagSpecifications=tag_specs(ctx, "security-group", logical, name, extra),
            ), {"InvalidVpcID.NotFound"}, timeout=NEW_ID_TIMEOUT)["GroupId"],
            detail=f"in {vpc_id}", name=name)
        return group_id, True
    group_id = group["GroupId"]
    if group.get("VpcId") != vpc_id:
        raise ExaprovError(f"{ctx.step}: security group {group_id} ({name}) is in {group.get('VpcId')}, "
                           f"not in the deployment's VPC {vpc_id}; a group cannot move",
                           hint=f"delete {group_id} by hand, then run `exaprov up` again")
    ctx.found(logical, KIND, group_id)
    reconcile_tags(ctx, logical, KIND, group, group_id, name=name, extra=extra)
    return group_id, False


def find_group_by_name(ctx: StepContext, vpc_id: str, name: str) -> dict[str, Any] | None:
    groups = ctx.call(lambda: ctx.aws.ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]))
    return next((g for g in groups["SecurityGroups"]
                 if g.get("VpcId") == vpc_id and g.get("GroupName") == name), None)


def ensure_rules(ctx: StepContext, logical: str, group_id: str, wanted: set[Rule],
                 initial: bool = False, exclusive: bool = True) -> None:
    """Add the wanted rules a group lacks; if `exclusive`, revoke the ones nobody wants.

    `initial=True` for a group created in this run: its rules are part of the create.
    Rules described with a FOREIGN_RULE_PREFIXES prefix are never revoked.
    """
    live: dict[Rule, dict[str, Any]] = {}
    if not is_unknown(group_id):
        for item in group_rules(ctx, group_id):
            live.setdefault(live_rule(item), item)
    for rule in sorted(wanted - live.keys(), key=str):
        ctx.update(logical, KIND, f"add {rule} ({rule.description})" if rule.description
                   else f"add {rule}", initial=initial,
                   apply=partial(authorize, ctx, logical, group_id, rule))
    if not exclusive:
        return
    for rule, item in sorted(live.items(), key=lambda kv: str(kv[0])):
        if rule in wanted or item.get("Description", "").startswith(FOREIGN_RULE_PREFIXES):
            continue
        ctx.update(logical, KIND, f"revoke {rule}", initial=initial,
                   apply=partial(revoke, ctx, group_id, rule.direction, item["SecurityGroupRuleId"]))


def group_rules(ctx: StepContext, group_id: str) -> list[dict[str, Any]]:
    """One group's rules. One DescribeSecurityGroupRules per run serves every step: it covers
    the deployment's tagged groups and the EKS primary group (not ours to tag) the state
    recorded; a group outside that set is described on its own."""
    def read() -> tuple[frozenset[str], list[dict[str, Any]]]:
        ids = {g["GroupId"] for g in deployment_items(ctx, "describe_security_groups")}
        primary = ctx.run.state.outputs.get("cluster", {}).get("cluster_primary_security_group_id")
        if primary and not is_unknown(primary):
            ids.add(primary)
        return frozenset(ids), describe_rules(ctx, sorted(ids)) if ids else []

    covered, rules = ctx.run.shared(("ec2", "security-group-rules"), read)
    if group_id not in covered:
        return describe_rules(ctx, [group_id])
    return [r for r in rules if r.get("GroupId") == group_id]


def describe_rules(ctx: StepContext, group_ids: list[str]) -> list[dict[str, Any]]:
    return ctx.call(lambda: paginate(ctx.aws.ec2, "describe_security_group_rules",
                                     "SecurityGroupRules",
                                     Filters=[{"Name": "group-id", "Values": group_ids}]))


def authorize(ctx: StepContext, logical: str, group_id: str, rule: Rule) -> None:
    """Add one rule; one already there (InvalidPermission.Duplicate) is fine."""
    ec2 = ctx.aws.ec2
    call = ec2.authorize_security_group_ingress if rule.direction == "ingress" \
        else ec2.authorize_security_group_egress
    try:
        ctx.retry_while(f"new security group {group_id}", lambda: call(
            GroupId=group_id, IpPermissions=[rule.permission()],
            TagSpecifications=[{"ResourceType": "security-group-rule",
                                "Tags": tag_list(ctx.tags(logical))}]),
            {"InvalidGroup.NotFound"}, timeout=NEW_ID_TIMEOUT)
    except ClientError as exc:
        if error_code(exc) != "InvalidPermission.Duplicate":
            raise


def revoke(ctx: StepContext, group_id: str, direction: str, rule_id: str) -> None:
    """Remove one rule by its ID; one already gone is fine."""
    ec2 = ctx.aws.ec2
    call = ec2.revoke_security_group_ingress if direction == "ingress" \
        else ec2.revoke_security_group_egress
    try:
        call(GroupId=group_id, SecurityGroupRuleIds=[rule_id])
    except ClientError as exc:
        if not is_not_found(exc):
            raise


# -- destroy ---------------------------------------------------------------------

def destroy_security_groups(ctx: StepContext) -> None:
    groups = Ec2Items(ctx, "describe_security_groups", KIND).items
    ids = [g["GroupId"] for g in groups]
    if ids and not ctx.planning:
        # A group referenced by another group's rule cannot be deleted: drop those rules first.
        for item in describe_rules(ctx, ids):
            rule = live_rule(item)
            if rule.source in ids and rule.source != item["GroupId"]:
                ctx.report(f"revoking {rule} on {item['GroupId']}")
                ctx.call(revoke, ctx, item["GroupId"], rule.direction, item["SecurityGroupRuleId"])
    vpc_id = ctx.upstream.get("network", {}).get("vpc_id")
    for group in groups:
        ctx.delete(_logical(ctx, group), KIND, group["GroupId"],
                   lambda gid: ctx.retry_while(
                       f"delete security group {gid}",
                       lambda: _delete_group(ctx, gid, ids, vpc_id), {"DependencyViolation"},
                       timeout=DEPENDENCY_TIMEOUT,
                       hint="something still uses it (look for ENIs, load balancers or other "
                            "security groups referencing it)"))
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)
    verify_gone(ctx, {"describe_security_groups": KIND})


def _delete_group(ctx: StepContext, group_id: str, group_ids: list[str], vpc_id: str | None) -> None:
    # Nodes leave detached ENIs behind as they terminate: clear them on every attempt.
    delete_detached_interfaces(ctx, group_ids, vpc_id)
    ctx.aws.ec2.delete_security_group(GroupId=group_id)


def delete_detached_interfaces(ctx: StepContext, group_ids: list[str], vpc_id: str | None) -> None:
    """Delete the detached (`available`) ENIs that use these groups (the VPC CNI leaves them)."""
    ec2 = ctx.aws.ec2
    filters = [{"Name": "group-id", "Values": group_ids}]
    if vpc_id and not is_unknown(vpc_id):
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    for eni in paginate(ec2, "describe_network_interfaces", "NetworkInterfaces", Filters=filters):
        if eni.get("Status") != "available":
            continue
        eni_id = eni["NetworkInterfaceId"]
        ctx.run.add_change(Change("delete", ctx.address(eni_id), "ec2:network-interface",
                                  "detached, left by the VPC CNI"))
        ctx.report(f"deleting detached network interface {eni_id}")
        try:
            ec2.delete_network_interface(NetworkInterfaceId=eni_id)
        except ClientError as exc:
            if not is_not_found(exc):
                raise


def _logical(ctx: StepContext, group: dict[str, Any]) -> str:
    """The logical name of a found group: from its tag, else from the record holding its ID."""
    logical = tag_dict(group.get("Tags")).get(TAG_RESOURCE)
    if logical:
        return logical
    for name, rec in ctx.run.state.step_resources(ctx.step).items():
        if rec.get("id") == group["GroupId"]:
            return name
    return group["GroupId"]


SECURITY_GROUPS = Step("security-groups", ("network",), ensure_security_groups,
                       destroy_security_groups, title="cluster and node security groups")
