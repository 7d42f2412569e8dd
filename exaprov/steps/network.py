"""The network, as two steps.

`network` owns the VPC (DNS support and hostnames on), nine /prefix+4 subnets
(1–3 private, 4–6 public, 7–9 database, spread over the region's zones), the
internet gateway, the public and private route tables with their associations,
and the DB subnet group. `nat` owns the Elastic IP, the NAT gateway and the
private default route: split out because a NAT gateway takes minutes and only
node groups (which pull images) need it, not the cluster or the database.

Reads: `nat` reads `network`'s outputs. Records: vpc, subnet-<tier>-<n>, igw,
public-rt, private-rt, db-subnet-group; eip, nat.
Destroy order: nat (NAT gateway → wait deleted → release EIP) before network
(DB subnet group → route tables → IGW → subnets → VPC), each retrying
DependencyViolation while ENIs of deleted things linger.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import ip_network
from typing import Any

from botocore.exceptions import ClientError

from exaprov.aws import tag_dict, tag_list
from exaprov.engine import TAG_RESOURCE, Step, StepContext, is_unknown
from exaprov.errors import AwsError, ExaprovError, InputError, error_code, ignore_not_found, is_not_found
from exaprov.ownership import clash, db_subnet_group_tags, is_ours, owner_text
from exaprov.state import FAILED
from exaprov.steps.database import database_identifier, find_database, rds_may_hold
from exaprov.steps.ec2_lookup import Ec2Items, items_by_id, reconcile_tags, tag_specs, verify_gone

TIERS = (("private", 1), ("public", 4), ("database", 7))  # tier, index of its first /+4 block
K8S_ROLE_TAGS = {"public": {"kubernetes.io/role/elb": "1"},
                 "private": {"kubernetes.io/role/internal-elb": "1"},
                 "database": {}}
ANYWHERE = "0.0.0.0/0"
# Deletes of a network fail with DependencyViolation while ENIs of just-deleted
# NAT gateways, load balancers or nodes linger; AWS clears them within minutes.
DEPENDENCY_TIMEOUT = 15 * 60
# Right after a create, EC2 may not yet know the new ID (eventual consistency).
NEW_ID_TIMEOUT = 2 * 60


@dataclass(frozen=True)
class SubnetSpec:
    logical: str
    tier: str
    number: int
    cidr: str
    zone: str


def subnet_layout(vpc_cidr: str, zones: list[str]) -> list[SubnetSpec]:
    """The nine subnets: /prefix+4 blocks 1–9, subnet n of a tier in zone n (wrapping)."""
    network = ip_network(vpc_cidr)
    blocks = list(network.subnets(new_prefix=network.prefixlen + 4))
    return [SubnetSpec(f"subnet-{tier}-{n}", tier, n, str(blocks[first + n - 1]),
                       zones[(n - 1) % len(zones)])
            for tier, first in TIERS for n in (1, 2, 3)]


def availability_zones(ctx: StepContext) -> list[str]:
    """The region's available zones of type availability-zone (EKS refuses Local Zones)."""
    zones = ctx.call(lambda: ctx.aws.ec2.describe_availability_zones(
        Filters=[{"Name": "state", "Values": ["available"]}]))["AvailabilityZones"]
    names = sorted(z["ZoneName"] for z in zones
                   if z.get("ZoneType", "availability-zone") == "availability-zone")
    if not names:
        raise InputError(f"region {ctx.cfg.region} has no available availability zone")
    return names


def network_layout(ctx: StepContext) -> list[SubnetSpec]:
    """The nine subnets. The region's zones matter only to create one: while all nine exist,
    each keeps the zone it is in, and DescribeAvailabilityZones is not asked."""
    cidr = ctx.cfg.network.vpc_cidr_block
    items = Ec2Items(ctx, "describe_subnets", "ec2:subnet")
    layout = subnet_layout(cidr, ["(unknown)"])
    live = {s.logical: items.pick(s.logical) for s in layout}
    if not all(live.values()):
        return subnet_layout(cidr, availability_zones(ctx))
    return [replace(s, zone=(live[s.logical] or {}).get("AvailabilityZone", s.zone)) for s in layout]


# -- step: network ---------------------------------------------------------------

def ensure_network(ctx: StepContext) -> dict[str, Any]:
    net = ctx.cfg.network
    layout = network_layout(ctx)
    vpc_id = ensure_vpc(ctx)
    subnets = ensure_subnets(ctx, vpc_id, layout)
    by_tier = {tier: [subnets[s.logical] for s in layout if s.tier == tier]
               for tier, _ in TIERS}
    igw_id = ensure_internet_gateway(ctx, vpc_id)
    tables = Ec2Items(ctx, "describe_route_tables", "ec2:route-table")
    public_rt = ensure_route_table(ctx, tables, "public-rt", vpc_id, f"{net.vpc_name}-public",
                                   by_tier["public"], {ANYWHERE: ("GatewayId", igw_id)})
    private_rt = ensure_route_table(ctx, tables, "private-rt", vpc_id,
                                    f"{net.vpc_name}-private",
                                    by_tier["private"] + by_tier["database"], {})
    db_subnet_group = ensure_db_subnet_group(ctx, vpc_id, by_tier["database"])
    return {
        "vpc_id": vpc_id,
        "vpc_cidr_block": net.vpc_cidr_block,
        "availability_zones": sorted({s.zone for s in layout}),
        "private_subnet_ids": by_tier["private"],
        "public_subnet_ids": by_tier["public"],
        "database_subnet_ids": by_tier["database"],
        "internet_gateway_id": igw_id,
        "public_route_table_id": public_rt,
        "private_route_table_ids": [private_rt],
        "db_subnet_group_name": db_subnet_group,
    }


def ensure_vpc(ctx: StepContext) -> str:
    net, ec2 = ctx.cfg.network, ctx.aws.ec2
    vpc = Ec2Items(ctx, "describe_vpcs", "ec2:vpc").pick("vpc")
    if vpc is None:
        vpc_id = ctx.create("vpc", "ec2:vpc", lambda token: ec2.create_vpc(
            CidrBlock=net.vpc_cidr_block,
            TagSpecifications=tag_specs(ctx, "vpc", "vpc", net.vpc_name))["Vpc"]["VpcId"],
            detail=net.vpc_cidr_block, name=net.vpc_name)
        for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
            ctx.update("vpc", "ec2:vpc", attribute, initial=True,
                       apply=lambda a=attribute: _retry_new(ctx, "VPC", lambda: ec2.modify_vpc_attribute(
                           VpcId=vpc_id, **{a: {"Value": True}})))
        return vpc_id
    vpc_id = vpc["VpcId"]
    if vpc["CidrBlock"] != net.vpc_cidr_block:
        raise InputError(
            f"network.vpc_cidr_block: the VPC {vpc_id} has {vpc['CidrBlock']}, the config says "
            f"{net.vpc_cidr_block}; a VPC's CIDR cannot change in place",
            hint="put the old value back, or `exaprov destroy` and `up` again")
    ctx.found("vpc", "ec2:vpc", vpc_id, live=vpc.get("State", "available"))
    reconcile_tags(ctx, "vpc", "ec2:vpc", vpc, vpc_id, name=net.vpc_name)
    for attribute in ("enableDnsSupport", "enableDnsHostnames"):
        key = attribute[0].upper() + attribute[1:]
        live = ctx.call(lambda a=attribute: ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=a))
        if not live[key]["Value"]:
            ctx.update("vpc", "ec2:vpc", f"{attribute} off → on",
                       lambda k=key: ec2.modify_vpc_attribute(VpcId=vpc_id, **{k: {"Value": True}}))
    return vpc_id


def ensure_subnets(ctx: StepContext, vpc_id: str, layout: list[SubnetSpec]) -> dict[str, str]:
    ec2, vpc_name = ctx.aws.ec2, ctx.cfg.network.vpc_name
    items = Ec2Items(ctx, "describe_subnets", "ec2:subnet")
    ids: dict[str, str] = {}
    for spec in layout:
        name = f"{vpc_name}-{spec.tier}-{spec.number}"
        extra = K8S_ROLE_TAGS[spec.tier]
        subnet = items.pick(spec.logical)
        if subnet is None:
            ids[spec.logical] = ctx.create(
                spec.logical, "ec2:subnet", lambda token, s=spec, n=name, x=extra: _retry_new(
                    ctx, "VPC", lambda: ec2.create_subnet(
                        VpcId=vpc_id, CidrBlock=s.cidr, AvailabilityZone=s.zone,
                        TagSpecifications=tag_specs(ctx, "subnet", s.logical, n, x),
                    ))["Subnet"]["SubnetId"],
                detail=f"{spec.cidr} in {spec.zone}", name=name)
            continue
        subnet_id = ids[spec.logical] = subnet["SubnetId"]
        ctx.found(spec.logical, "ec2:subnet", subnet_id, live=subnet.get("State", "available"))
        if subnet["CidrBlock"] != spec.cidr:
            ctx.run.observed[ctx.address(spec.logical)].drift.append(
                f"CIDR {subnet['CidrBlock']}, expected {spec.cidr} (cannot change in place)")
        reconcile_tags(ctx, spec.logical, "ec2:subnet", subnet, subnet_id, name=name, extra=extra)
    return ids


def ensure_internet_gateway(ctx: StepContext, vpc_id: str) -> str:
    ec2, name = ctx.aws.ec2, ctx.cfg.network.vpc_name
    igw = Ec2Items(ctx, "describe_internet_gateways", "ec2:internet-gateway").pick("igw")
    attach = lambda: ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)  # noqa: E731
    if igw is None:
        igw_id = ctx.create("igw", "ec2:internet-gateway", lambda token: ec2.create_internet_gateway(
            TagSpecifications=tag_specs(ctx, "internet-gateway", "igw", name),
        )["InternetGateway"]["InternetGatewayId"], name=name)
        ctx.update("igw", "ec2:internet-gateway", "attach", initial=True,
                   apply=lambda: _retry_new(ctx, "internet gateway", attach))
        return igw_id
    igw_id = igw["InternetGatewayId"]
    ctx.found("igw", "ec2:internet-gateway", igw_id)
    reconcile_tags(ctx, "igw", "ec2:internet-gateway", igw, igw_id, name=name)
    if not any(a.get("VpcId") == vpc_id for a in igw.get("Attachments", [])):
        ctx.update("igw", "ec2:internet-gateway", f"attach to {vpc_id}", attach)
    return igw_id


def ensure_route_table(ctx: StepContext, tables: Ec2Items, logical: str, vpc_id: str, name: str,
                       subnet_ids: list[str], routes: dict[str, tuple[str, str]]) -> str:
    ec2 = ctx.aws.ec2
    table = tables.pick(logical)
    created = table is None
    if table is None:
        rt_id = ctx.create(logical, "ec2:route-table", lambda token: _retry_new(
            ctx, "VPC", lambda: ec2.create_route_table(
                VpcId=vpc_id, TagSpecifications=tag_specs(ctx, "route-table", logical, name),
                ClientToken=token,  # the intent's token: a retried create returns the same table
            ))["RouteTable"]["RouteTableId"], name=name)
        table = {"RouteTableId": rt_id, "Routes": [], "Associations": []}
    else:
        rt_id = table["RouteTableId"]
        ctx.found(logical, "ec2:route-table", rt_id)
        reconcile_tags(ctx, logical, "ec2:route-table", table, rt_id, name=name)
    for cidr, (target_key, target) in routes.items():
        ensure_route(ctx, logical, table, cidr, target_key, target, initial=created)
    associated = {a.get("SubnetId") for a in table.get("Associations", [])}
    for subnet_id in subnet_ids:
        if subnet_id not in associated:
            ctx.update(logical, "ec2:route-table", f"associate {subnet_id}", initial=created,
                       apply=lambda s=subnet_id: associate(ctx, rt_id, s))
    return rt_id


def ensure_route(ctx: StepContext, logical: str, table: dict[str, Any], cidr: str,
                 target_key: str, target: str, initial: bool = False) -> None:
    """One route, by destination: added if missing, re-pointed if it targets something else."""
    ec2, rt_id = ctx.aws.ec2, table["RouteTableId"]
    live = next((r for r in table.get("Routes", []) if r.get("DestinationCidrBlock") == cidr), None)
    if live is not None and live.get(target_key) == target and live.get("State") != "blackhole":
        return
    params = {"RouteTableId": rt_id, "DestinationCidrBlock": cidr, target_key: target}
    if live is None:
        ctx.update(logical, "ec2:route-table", f"route {cidr} → {target}", initial=initial,
                   apply=lambda: _retry_new(ctx, "route target", lambda: ec2.create_route(**params)))
    else:
        was = live.get(target_key) or live.get("GatewayId") or live.get("NatGatewayId") or "?"
        ctx.update(logical, "ec2:route-table", f"route {cidr}: {was} → {target}",
                   lambda: ec2.replace_route(**params))


def associate(ctx: StepContext, rt_id: str, subnet_id: str) -> None:
    """Associate a subnet, moving it over if another table holds it explicitly."""
    ec2 = ctx.aws.ec2
    try:
        _retry_new(ctx, "subnet", lambda: ec2.associate_route_table(
            RouteTableId=rt_id, SubnetId=subnet_id))
    except ClientError as exc:
        if error_code(exc) != "Resource.AlreadyAssociated":
            raise
        holders = ec2.describe_route_tables(
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["RouteTables"]
        for holder in holders:
            for assoc in holder["Associations"]:
                if assoc.get("SubnetId") == subnet_id:
                    ec2.replace_route_table_association(
                        AssociationId=assoc["RouteTableAssociationId"], RouteTableId=rt_id)


def ensure_db_subnet_group(ctx: StepContext, vpc_id: str, subnet_ids: list[str]) -> str:
    """RDS subnet groups have deterministic names, so they are found by name, then proven ours
    by their own tags (a name is no proof: another deployment or a team may hold it). A group
    keeps the name it was made with: RDS cannot rename it, and moving the instance to another
    group is an outage (ModifyDBInstance), so a changed `network.vpc_name` renames only Name tags."""
    rds = ctx.aws.rds
    # RDS stores subnet group names in lower case.
    name = (ctx.recorded("db-subnet-group") or {}).get("name") or ctx.cfg.network.vpc_name.lower()
    group = find_db_subnet_group(ctx, name, via_instance=True)
    if group is not None and not db_subnet_group_is_ours(ctx, group):
        raise clash("RDS DB subnet group", name, group.get("TagList"), "network.vpc_name",
                    ctx.cfg.name)
    if group is None:
        ctx.create("db-subnet-group", "rds:db-subnet-group", lambda token: rds.create_db_subnet_group(
            DBSubnetGroupName=name, DBSubnetGroupDescription=f"exaprov {ctx.cfg.name} database subnets",
            SubnetIds=subnet_ids, Tags=tag_list(ctx.tags("db-subnet-group", name=name)),
        )["DBSubnetGroup"]["DBSubnetGroupName"], name=name)
        return name
    if not is_unknown(vpc_id) and group.get("VpcId") != vpc_id:
        raise InputError(f"network.vpc_name: the DB subnet group {name!r} already exists in "
                         f"{group.get('VpcId')}, not in this deployment's VPC {vpc_id}",
                         hint="choose another network.vpc_name")
    ctx.found("db-subnet-group", "rds:db-subnet-group", name,
              live=group.get("SubnetGroupStatus", "Complete"))
    live = sorted(s["SubnetIdentifier"] for s in group.get("Subnets", []))
    if live != sorted(subnet_ids) and not any(is_unknown(s) for s in subnet_ids):
        ctx.update("db-subnet-group", "rds:db-subnet-group", "subnets → the database subnets",
                   lambda: rds.modify_db_subnet_group(DBSubnetGroupName=name, SubnetIds=subnet_ids))
    return name


def db_subnet_group_is_ours(ctx: StepContext, group: dict[str, Any]) -> bool:
    """By the group's own tags (read with ListTagsForResource when the describe lacks them).
    The group our own database (ours by its tags) uses, under the name the state records,
    is ours without that read: exaprov made both."""
    if group.get("_in_use_by_ours") and \
            ctx.recorded_id("db-subnet-group") == group.get("DBSubnetGroupName"):
        return True
    if "TagList" not in group:
        if "DBSubnetGroupArn" not in group:
            group.update(ctx.call(lambda: ctx.aws.rds.describe_db_subnet_groups(
                DBSubnetGroupName=group["DBSubnetGroupName"]))["DBSubnetGroups"][0])
        group["TagList"] = ctx.call(lambda: db_subnet_group_tags(ctx.aws, group))
    return is_ours(ctx.cfg.name, group["TagList"])


def find_db_subnet_group(ctx: StepContext, name: str, via_instance: bool = False
                         ) -> dict[str, Any] | None:
    # DescribeDBInstances carries the instance's subnet group (subnets, VPC, status) and the
    # database step reads it anyway: one RDS read serves both while the group is in use.
    ident = database_identifier(ctx.cfg) if via_instance else None
    db = find_database(ctx, ident) if ident else None
    in_use = (db or {}).get("DBSubnetGroup") or {}
    if in_use.get("DBSubnetGroupName") == name and "Subnets" in in_use:
        return {**in_use, "_in_use_by_ours": is_ours(ctx.cfg.name, (db or {}).get("TagList"))}
    try:
        return ctx.call(lambda: ctx.aws.rds.describe_db_subnet_groups(
            DBSubnetGroupName=name))["DBSubnetGroups"][0]
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return None
        raise


def destroy_network(ctx: StepContext) -> None:
    ec2 = ctx.aws.ec2
    # The recorded name too: the group of a since-renamed VPC must not be left behind.
    # Deleted only if its own tags say it is this deployment's: the name is no proof.
    names = {ctx.cfg.network.vpc_name.lower(), ctx.recorded_id("db-subnet-group")} - {None}
    if not rds_may_hold(ctx.run.state, ctx.address("db-subnet-group")):
        names = set()

    def ours(name: str) -> bool:
        group = find_db_subnet_group(ctx, name)
        if group is None:
            return False
        if db_subnet_group_is_ours(ctx, group):
            return True
        ctx.report(f"leaving RDS DB subnet group {name}: it is not this deployment's "
                   f"({owner_text(group.get('TagList'))})")
        return False

    for name in sorted(n for n in names if n and ours(n)):
        ctx.delete("db-subnet-group", "rds:db-subnet-group", name,
                   lambda n: ctx.aws.rds.delete_db_subnet_group(DBSubnetGroupName=n))

    for table in Ec2Items(ctx, "describe_route_tables", "ec2:route-table").items:
        def delete_table(rt_id: str, t: dict[str, Any] = table) -> None:
            for assoc in t.get("Associations", []):
                if not assoc.get("Main"):
                    ignore_not_found(lambda a=assoc: ec2.disassociate_route_table(
                        AssociationId=a["RouteTableAssociationId"]))
            ec2.delete_route_table(RouteTableId=rt_id)
        ctx.delete(_logical(ctx, table, "RouteTableId"), "ec2:route-table",
                   table["RouteTableId"], delete_table)

    for igw in Ec2Items(ctx, "describe_internet_gateways", "ec2:internet-gateway").items:
        def delete_igw(igw_id: str, g: dict[str, Any] = igw) -> None:
            for attachment in g.get("Attachments", []):
                _retry_dependency(ctx, f"detach {igw_id}", lambda a=attachment: ignore_not_found(
                    lambda: ec2.detach_internet_gateway(InternetGatewayId=igw_id,
                                                        VpcId=a["VpcId"])))
            ec2.delete_internet_gateway(InternetGatewayId=igw_id)
        ctx.delete(_logical(ctx, igw, "InternetGatewayId"), "ec2:internet-gateway",
                   igw["InternetGatewayId"], delete_igw)

    for subnet in Ec2Items(ctx, "describe_subnets", "ec2:subnet").items:
        ctx.delete(_logical(ctx, subnet, "SubnetId"), "ec2:subnet", subnet["SubnetId"],
                   lambda sid: _retry_dependency(ctx, f"delete subnet {sid}",
                                                 lambda: ec2.delete_subnet(SubnetId=sid)))

    for vpc in Ec2Items(ctx, "describe_vpcs", "ec2:vpc").items:
        ctx.delete(_logical(ctx, vpc, "VpcId"), "ec2:vpc", vpc["VpcId"],
                   lambda vid: _retry_dependency(ctx, f"delete VPC {vid}",
                                                 lambda: ec2.delete_vpc(VpcId=vid)))
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)
    left = sorted(n for n in names if n and (g := find_db_subnet_group(ctx, n)) is not None
                  and db_subnet_group_is_ours(ctx, g))
    if left:
        raise ExaprovError(f"network: DB subnet group {', '.join(left)} still present after destroy")
    verify_gone(ctx, {"describe_vpcs": "ec2:vpc", "describe_subnets": "ec2:subnet",
                      "describe_internet_gateways": "ec2:internet-gateway",
                      "describe_route_tables": "ec2:route-table"})


# -- step: nat -------------------------------------------------------------------

NAT_CREATE_TIMEOUT = 10 * 60  # AWS: about 2 minutes
NAT_DELETE_TIMEOUT = 10 * 60  # AWS: about 1 minute


def ensure_nat(ctx: StepContext) -> dict[str, Any]:
    ec2, net = ctx.aws.ec2, ctx.upstream["network"]
    name = f"{ctx.cfg.network.vpc_name}-nat"
    eip = Ec2Items(ctx, "describe_addresses", "ec2:elastic-ip").pick("eip")
    if eip is None:
        eip = {}
        allocation_id = ctx.create("eip", "ec2:elastic-ip", lambda token: eip.update(
            ec2.allocate_address(Domain="vpc", TagSpecifications=tag_specs(
                ctx, "elastic-ip", "eip", name))) or eip["AllocationId"], name=name)
    else:
        allocation_id = ctx.found("eip", "ec2:elastic-ip", eip["AllocationId"])
        reconcile_tags(ctx, "eip", "ec2:elastic-ip", eip, allocation_id, name=name)

    nats = Ec2Items(ctx, "describe_nat_gateways", "ec2:natgateway")
    nat = nats.pick("nat")
    if nat is not None and nat["State"] == "failed":
        # A failed NAT gateway never recovers: replace it (its reason goes to the log).
        ctx.report(f"NAT gateway {nat['NatGatewayId']} failed: {nat.get('FailureMessage')}")
        ctx.delete("nat", "ec2:natgateway", nat["NatGatewayId"],
                   lambda nid: ec2.delete_nat_gateway(NatGatewayId=nid))
        nat = None
    if nat is None:
        subnet_id = net["public_subnet_ids"][0]
        # The token makes a retried create return the first NAT gateway, never a second.
        nat_id = ctx.create("nat", "ec2:natgateway", lambda token: _retry_new(
            ctx, "subnet or Elastic IP", lambda: ec2.create_nat_gateway(
                SubnetId=subnet_id, AllocationId=allocation_id, ClientToken=token,
                TagSpecifications=tag_specs(ctx, "natgateway", "nat", name),
            ))["NatGateway"]["NatGatewayId"], detail=f"in {subnet_id}", name=name)
        state, created = "pending", True
    else:
        created = False
        nat_id, state = nat["NatGatewayId"], nat["State"]
        ctx.found("nat", "ec2:natgateway", nat_id, live=state)
        reconcile_tags(ctx, "nat", "ec2:natgateway", nat, nat_id, name=name)
    if state != "available" and not ctx.planning:
        wait_for_nat(ctx, nat_id)

    private_rt = net["private_route_table_ids"][0]
    table: dict[str, Any] = {"RouteTableId": private_rt, "Routes": []}
    if not is_unknown(private_rt):
        tables = items_by_id(ctx, "describe_route_tables", [private_rt])
        # The network step has just found or made it: not listed means not listed *yet*
        # (EC2 eventual consistency). Past the bound, running `up` again recreates it.
        table = tables[0] if tables else ctx.wait_until(
            f"private route table {private_rt} to be listed", lambda: (ec2.describe_route_tables(
                Filters=[{"Name": "route-table-id", "Values": [private_rt]}])["RouteTables"] or [{}])[0],
            bool, timeout=NEW_ID_TIMEOUT, interval=5,
            describe=lambda t: "listed" if t else "not listed")
    # Pointing the private default route at a new NAT gateway is part of creating it.
    ensure_route(ctx, "nat", table, ANYWHERE, "NatGatewayId", nat_id, initial=created)
    return {"nat_gateway_id": nat_id, "eip_allocation_id": allocation_id,
            "nat_public_ip": eip.get("PublicIp")}


def describe_nat(ctx: StepContext, nat_id: str, absent: str) -> dict[str, Any]:
    """One NAT gateway by ID; `absent` is the state to assume when EC2 does not list it."""
    found = ctx.aws.ec2.describe_nat_gateways(
        Filter=[{"Name": "nat-gateway-id", "Values": [nat_id]}])["NatGateways"]
    return found[0] if found else {"State": absent}


def wait_for_nat(ctx: StepContext, nat_id: str) -> None:
    # Not yet listed right after the create: still creating.
    nat = ctx.wait_until(f"NAT gateway {nat_id}", lambda: describe_nat(ctx, nat_id, "pending"),
                         lambda n: n["State"] in ("available", "failed", "deleted"),
                         timeout=NAT_CREATE_TIMEOUT, interval=5, describe=lambda n: n["State"])
    if nat["State"] != "available":
        ctx.run.writer.record(ctx.address("nat"), status=FAILED)
        raise ExaprovError(f"nat: NAT gateway {nat_id} {nat['State']}: "
                         f"{nat.get('FailureMessage', 'no reason given')}",
                         hint="run `exaprov up` again to replace it")


def destroy_nat(ctx: StepContext) -> None:
    ec2 = ctx.aws.ec2
    # Include NAT gateways a crashed destroy left `deleting`: their EIP frees only once deleted.
    for nat in Ec2Items(ctx, "describe_nat_gateways", "ec2:natgateway",
                        gone=frozenset({"deleted"})).items:
        ctx.delete(_logical(ctx, nat, "NatGatewayId"), "ec2:natgateway", nat["NatGatewayId"],
                   lambda nid: _delete_nat(ctx, nid))
    for eip in Ec2Items(ctx, "describe_addresses", "ec2:elastic-ip").items:
        # The address stays associated until its NAT gateway is fully deleted.
        ctx.delete(_logical(ctx, eip, "AllocationId"), "ec2:elastic-ip", eip["AllocationId"],
                   lambda aid: ctx.retry_while(
                       f"release {aid}", lambda: ec2.release_address(AllocationId=aid),
                       {"InvalidIPAddress.InUse"}, timeout=NAT_DELETE_TIMEOUT))
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)
    verify_gone(ctx, {"describe_nat_gateways": "ec2:natgateway",
                      "describe_addresses": "ec2:elastic-ip"})


def _delete_nat(ctx: StepContext, nat_id: str) -> None:
    ec2 = ctx.aws.ec2
    ec2.delete_nat_gateway(NatGatewayId=nat_id)
    ctx.wait_until(f"NAT gateway {nat_id} to delete",
                   lambda: describe_nat(ctx, nat_id, "deleted")["State"], lambda s: s == "deleted",
                   timeout=NAT_DELETE_TIMEOUT, interval=5)


# -- shared helpers -----------------------------------------------------------------

def _logical(ctx: StepContext, item: dict[str, Any], id_key: str) -> str:
    """The logical name of a found item: from its tag, else from the record holding its ID."""
    logical = tag_dict(item.get("Tags")).get(TAG_RESOURCE)
    if logical:
        return logical
    for name, rec in ctx.run.state.step_resources(ctx.step).items():
        if rec.get("id") == item[id_key]:
            return name
    return item[id_key]


def _retry_new(ctx: StepContext, what: str, call: Any) -> Any:
    return ctx.retry_while(f"new {what}", call,
                           {"InvalidVpcID.NotFound", "InvalidSubnetID.NotFound",
                            "InvalidInternetGatewayID.NotFound", "InvalidRouteTableID.NotFound",
                            "InvalidNatGatewayID.NotFound", "InvalidGatewayID.NotFound",
                            "InvalidAllocationID.NotFound"},
                           timeout=NEW_ID_TIMEOUT)


def _retry_dependency(ctx: StepContext, what: str, call: Any) -> Any:
    return ctx.retry_while(what, call, {"DependencyViolation"}, timeout=DEPENDENCY_TIMEOUT,
                           hint="something else still uses it (look for ENIs, load balancers "
                                "or security groups in the VPC)")



NETWORK = Step("network", (), ensure_network, destroy_network, title="VPC, subnets, routes")
NAT = Step("nat", ("network",), ensure_nat, destroy_nat, title="NAT gateway")
