"""Finding a deployment's EC2 resources: one describe per type, by tag, then by recorded ID.

The describe by the deployment's tag is shared by every step of a run (`Run.shared`):
a converged `up` asks EC2 once per type, not once per step.

Every EC2 resource exaprov creates carries `exaprov:deployment`, `exaprov:component`
and `exaprov:resource` (its logical name) in its create call, so one describe
filtered by the deployment tag finds them all, with or without a state file.
A recorded ID whose tags were stripped by hand is still found by a second
describe filtered by ID (a filter, not `...Ids=`, so a gone ID is no error).

Ownership (exaprov.ownership): what a describe by tag answers is kept only if its own
tags say it is this deployment's; an endpoint that ignores the `tag:` filter (some
emulators do, for some types) must not make another deployment's NAT gateway ours. A
recorded ID found by the second describe is kept only if it carries no other
deployment's tag.
"""

from __future__ import annotations

from typing import Any

from exaprov.aws import paginate, tag_dict, tag_list
from exaprov.engine import TAG_COMPONENT, TAG_DEPLOYMENT, TAG_RESOURCE, StepContext
from exaprov.errors import AwsError, ExaprovError, is_not_found
from exaprov.ownership import is_ours

# operation -> (result key, ID key, ID filter name, filter parameter name)
EC2_TYPES: dict[str, tuple[str, str, str, str]] = {
    "describe_vpcs": ("Vpcs", "VpcId", "vpc-id", "Filters"),
    "describe_subnets": ("Subnets", "SubnetId", "subnet-id", "Filters"),
    "describe_internet_gateways": ("InternetGateways", "InternetGatewayId",
                                   "internet-gateway-id", "Filters"),
    "describe_route_tables": ("RouteTables", "RouteTableId", "route-table-id", "Filters"),
    "describe_addresses": ("Addresses", "AllocationId", "allocation-id", "Filters"),
    "describe_nat_gateways": ("NatGateways", "NatGatewayId", "nat-gateway-id", "Filter"),
    "describe_security_groups": ("SecurityGroups", "GroupId", "group-id", "Filters"),
    # DescribeLaunchTemplates has no ID filter (only LaunchTemplateIds, which fails on a gone ID).
    "describe_launch_templates": ("LaunchTemplates", "LaunchTemplateId", "", "Filters"),
    "describe_vpc_peering_connections": ("VpcPeeringConnections", "VpcPeeringConnectionId",
                                         "vpc-peering-connection-id", "Filters"),
}

GONE_STATES = frozenset({"deleted", "deleting"})

_PAGINATED = set(EC2_TYPES) - {"describe_addresses"}  # DescribeAddresses does not page


class Ec2Items:
    """The items of one EC2 type that belong to this step, by logical name."""

    def __init__(self, ctx: StepContext, operation: str, kind: str,
                 gone: frozenset[str] = GONE_STATES) -> None:
        self.ctx, self.operation, self.kind = ctx, operation, kind
        key, self.id_key, id_filter, param = EC2_TYPES[operation]
        deployment = deployment_items(ctx, operation)
        items = [i for i in deployment if tag_dict(i.get("Tags")).get(TAG_COMPONENT) == ctx.step]
        seen = {i[self.id_key] for i in items}
        lost = sorted({rec["id"] for rec in ctx.run.state.step_resources(ctx.step).values()
                       if rec.get("kind") == kind and rec.get("id") and rec["id"] not in seen})
        found: list[dict[str, Any]] = []
        if lost and id_filter:
            found = _describe(ctx, operation, key, param, [{"Name": id_filter, "Values": lost}])
        elif lost:
            found = _by_ids(ctx, operation, key, self.id_key + "s", lost)
        items += [i for i in found if i[self.id_key] in lost
                  and is_ours(ctx.cfg.name, i.get("Tags"), recorded_id=True)]
        # Deleted NAT gateways and peerings stay visible for a while; they are history.
        self.items = [i for i in items if i.get("State") not in gone]

    def pick(self, logical: str, *legacy: str) -> dict[str, Any] | None:
        """The recorded ID if it still exists, else the one tagged with this logical name
        (or one of its `legacy` names: tags written before a record was renamed)."""
        recorded = self.ctx.recorded_id(logical)
        for item in self.items:
            if item[self.id_key] == recorded:
                return item
        for name in (logical, *legacy):
            for item in self.items:
                if tag_dict(item.get("Tags")).get(TAG_RESOURCE) == name:
                    return item
        return None

    def others(self, logicals: set[str]) -> list[dict[str, Any]]:
        """Items of this type that no current logical name claims (for deletion)."""
        claimed = {self.ctx.recorded_id(lg) for lg in logicals}
        return [i for i in self.items
                if i[self.id_key] not in claimed
                and tag_dict(i.get("Tags")).get(TAG_RESOURCE) not in logicals]


def deployment_items(ctx: StepContext, operation: str) -> list[dict[str, Any]]:
    """Every item of one EC2 type carrying the deployment's tag: one describe per run."""
    key, _, _, param = EC2_TYPES[operation]

    def read() -> list[dict[str, Any]]:
        answer = _describe(ctx, operation, key, param,
                           [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [ctx.cfg.name]}])
        return [i for i in answer if is_ours(ctx.cfg.name, i.get("Tags"))]  # read back, not assumed

    return ctx.run.shared(("ec2", operation), read)


def items_by_id(ctx: StepContext, operation: str, ids: list[str]) -> list[dict[str, Any]]:
    """These items of the deployment (any step's), from the shared describe by tag when it holds
    them all, else described by ID (one whose tags were stripped by hand is still found)."""
    key, id_key, id_filter, param = EC2_TYPES[operation]
    shared = {i[id_key]: i for i in deployment_items(ctx, operation)}
    if all(i in shared for i in ids):
        return [shared[i] for i in ids]
    found = _describe(ctx, operation, key, param, [{"Name": id_filter, "Values": list(ids)}])
    return [i for i in found if i[id_key] in ids
            and is_ours(ctx.cfg.name, i.get("Tags"), recorded_id=True)]


def _describe(ctx: StepContext, operation: str, key: str, param: str,
              filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ec2 = ctx.aws.ec2
    if operation in _PAGINATED:
        return ctx.call(lambda: paginate(ec2, operation, key, **{param: filters}))
    return ctx.call(lambda: getattr(ec2, operation)(**{param: filters}))[key]


def _by_ids(ctx: StepContext, operation: str, key: str, ids_param: str,
            ids: list[str]) -> list[dict[str, Any]]:
    """One describe per ID (for types without an ID filter): a gone ID is no error."""
    found: list[dict[str, Any]] = []
    for resource_id in ids:
        try:
            found += ctx.call(lambda i=resource_id: getattr(ctx.aws.ec2, operation)(
                **{ids_param: [i]}))[key]
        except AwsError as exc:
            if exc.__cause__ is None or not is_not_found(exc.__cause__):
                raise
    return found


def tag_specs(ctx: StepContext, resource_type: str, logical: str, name: str | None = None,
              extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """TagSpecifications for a create call, so nothing exists untagged even for a moment."""
    return [{"ResourceType": resource_type,
             "Tags": tag_list(ctx.tags(logical, name=name, extra=extra))}]


def reconcile_tags(ctx: StepContext, logical: str, kind: str, item: dict[str, Any],
                   resource_id: str, name: str | None = None,
                   extra: dict[str, str] | None = None) -> None:
    """Put back tags exaprov manages that are missing or changed (others are left alone)."""
    live = tag_dict(item.get("Tags"))
    wanted = ctx.tags(logical, name=name, extra=extra)
    missing = {k: v for k, v in wanted.items() if live.get(k) != v}
    if missing:
        ctx.update(logical, kind, "tags " + ", ".join(f"{k}={v}" for k, v in sorted(missing.items())),
                   lambda: ctx.aws.ec2.create_tags(Resources=[resource_id],
                                                   Tags=tag_list(missing)))


def verify_gone(ctx: StepContext, kinds: dict[str, str]) -> None:
    """Prove a destroy complete: a fresh describe by tag finds nothing of these types."""
    if ctx.planning:
        return
    left = []
    for operation, kind in kinds.items():
        found = Ec2Items(ctx, operation, kind)
        left += [f"{kind} {item[found.id_key]}" for item in found.items]
    if left:
        raise ExaprovError(f"{ctx.step}: still present after destroy: {', '.join(left)}",
                           hint="run `exaprov destroy` again; if it persists, delete them by hand")
