"""VPC peering with client VPCs, as one step.

The wanted peers are not in the config: `exaprov peer` stores them in the state
document, `state.data["peers"]` = `{vpc_id: {"route_table_ids": [...] | None,
"region": str | None, "profile": str | None, ...}}` (None: the deployment's
region/profile, and every route table of the client VPC). This step converges to
that list. Per peer: a peering connection from the deployment's VPC (peer owner =
the client VPC's owner), accepted from the client's side; a route to each client
CIDR via the peering in each private route table of the deployment; a route to
the deployment's CIDR in the client's route tables; an ingress rule TCP 0-65535
from each client CIDR on the node security group, described `exaprov peering
<vpc_id>` (so the security-groups step never revokes it).

`check_peer` validates a new peer read-only (the VPC exists, its CIDRs are disjoint
from the deployment's and every other peer's) before anything is changed.

Reads: `network.vpc_id`, `network.vpc_cidr_block`, `network.private_route_table_ids`,
`security-groups.node_security_group_id`, `state.data["peers"]`.
Records: `pcx:<vpc_id>` (attrs peer_vpc, region, profile, cidrs),
`route:<route_table_id>:<cidr>` (id `<rtb>|<cidr>`, attrs peer_vpc, side),
`sg-rule:<vpc_id>` (id the node group, attrs cidrs).
Removal of a peer no longer wanted (and destroy): the routes on both sides whose
target is that peer's peering → the rules described `exaprov peering <vpc_id>` →
the peering connection. Destroy runs before network and security-groups.
"""

from __future__ import annotations

from functools import partial
from ipaddress import ip_network
from typing import Any

from botocore.exceptions import ClientError

from exaprov.aws import Aws, tag_dict
from exaprov.engine import TAG_COMPONENT, TAG_DEPLOYMENT, Step, StepContext, is_unknown
from exaprov.errors import AwsError, ExaprovError, InputError, error_code, is_not_found
from exaprov.ownership import is_ours
from exaprov.steps.ec2_lookup import items_by_id, tag_specs
from exaprov.steps.security_groups import Rule, describe_rules, ensure_rules, revoke

KIND_PCX = "ec2:vpc-peering-connection"
KIND_ROUTE = "ec2:route"
KIND_RULE = "ec2:security-group-rule"
RULE_PREFIX = "exaprov peering"
USABLE_STATES = frozenset({"active", "pending-acceptance", "provisioning", "initiating-request"})
BROKEN_STATES = frozenset({"failed", "rejected", "expired", "deleted", "deleting"})
ACTIVE_TIMEOUT = 5 * 60  # AWS: seconds, once accepted
NEW_ID_TIMEOUT = 2 * 60  # the accepter side may not know a new peering at once


# -- validation ------------------------------------------------------------------

def check_peer(aws: Aws, deployment_cidr: str, other_peer_cidrs: dict[str, list[str]], vpc_id: str,
               region: str | None = None, profile: str | None = None,
               deployment_vpc_id: str | None = None,
               route_table_ids: list[str] | None = None) -> list[str]:
    """Validate a client VPC before any change; return its IPv4 CIDR blocks.

    Raises InputError if the VPC does not exist (in that region/account), is the
    deployment's own VPC, has a CIDR overlapping the deployment's or another peer's, or if
    a route table given is not one of that VPC's (peering touches only the client VPC).
    """
    if deployment_vpc_id is not None and vpc_id == deployment_vpc_id:
        raise InputError(f"--vpc-id: {vpc_id} is the deployment's own VPC; peer a client VPC")
    peer = aws.elsewhere(region, profile)
    vpc = describe_client_vpc(peer, vpc_id, region or aws.region, profile)
    if route_table_ids:
        check_tables(vpc_id, route_table_ids, _tables_by_id(peer, route_table_ids), "--route-table-ids")
    cidrs = vpc_cidrs(vpc)
    problems = overlaps(deployment_cidr, other_peer_cidrs, vpc_id, cidrs)
    if problems:
        raise InputError(f"--vpc-id: the CIDR ranges of {vpc_id} are not disjoint: " + "; ".join(problems),
                         hint="a peered VPC's ranges must not overlap the deployment's or another "
                              "peer's; nothing was changed")
    return cidrs


def describe_client_vpc(peer: Aws, vpc_id: str, region: str, profile: str | None) -> dict[str, Any]:
    where = f"account of profile {profile}" if profile else "the deployment's account"
    try:
        vpcs = peer.ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    except ClientError as exc:
        if not is_not_found(exc) and error_code(exc) != "InvalidVpcID.Malformed":
            raise AwsError("peering", exc.operation_name, error_code(exc) or "Error",
                           exc.response.get("Error", {}).get("Message", str(exc))) from exc
        vpcs = []
    if not vpcs:
        raise InputError(f"--vpc-id: no VPC {vpc_id} in {region} ({where})",
                         hint="check --vpc-id, --peer-region and --peer-profile")
    return vpcs[0]


def _tables_by_id(aws: Aws, ids: list[str]) -> list[dict[str, Any]]:
    try:
        return list(aws.ec2.describe_route_tables(
            Filters=[{"Name": "route-table-id", "Values": list(ids)}])["RouteTables"])
    except ClientError as exc:
        raise AwsError("peering", exc.operation_name, error_code(exc) or "Error",
                       exc.response.get("Error", {}).get("Message", str(exc))) from exc


def check_tables(vpc_id: str, ids: list[str], tables: list[dict[str, Any]], field: str) -> None:
    """Every route table given exists and is one of the client VPC's: a table of another VPC
    (another team's, another deployment's) is never touched."""
    found = {t["RouteTableId"]: t for t in tables if t["RouteTableId"] in ids}
    missing = sorted(set(ids) - found.keys())
    if missing:
        raise InputError(f"{field}: no route table {', '.join(missing)} (looked in the account "
                         f"and region of {vpc_id})",
                         hint=f"run `exaprov peer --vpc-id {vpc_id}` with the right --route-table-ids")
    elsewhere = sorted(f"{i} is in {t.get('VpcId')}" for i, t in found.items()
                       if t.get("VpcId") != vpc_id)
    if elsewhere:
        raise InputError(f"{field}: the route tables must belong to {vpc_id}: "
                         + "; ".join(elsewhere) + "; nothing was changed",
                         hint=f"pass only route tables of {vpc_id} (aws ec2 describe-route-tables "
                              f"--filters Name=vpc-id,Values={vpc_id}), or none for all of them")


def vpc_cidrs(vpc: dict[str, Any]) -> list[str]:
    """Every associated IPv4 CIDR block of a VPC, the primary first."""
    cidrs = [a["CidrBlock"] for a in vpc.get("CidrBlockAssociationSet", [])
             if a.get("CidrBlockState", {}).get("State", "associated") in ("associated", "associating")]
    primary = vpc.get("CidrBlock")
    if primary and primary not in cidrs:
        cidrs.insert(0, primary)
    return cidrs


def overlaps(deployment_cidr: str, others: dict[str, list[str]], vpc_id: str,
             cidrs: list[str]) -> list[str]:
    """Each overlapping pair, named: "<range> (<owner>) overlaps <range> (<vpc_id>)"."""
    owners = [(deployment_cidr, "the deployment")]
    owners += [(c, other) for other, ranges in sorted(others.items()) if other != vpc_id for c in ranges]
    return [f"{theirs} ({owner}) overlaps {mine} ({vpc_id})"
            for mine in cidrs for theirs, owner in owners
            if ip_network(mine).overlaps(ip_network(theirs))]


# -- ensure ----------------------------------------------------------------------

class Peer:
    """One wanted client VPC, as found before any change."""

    def __init__(self, vpc_id: str, spec: dict[str, Any], aws: Aws, vpc: dict[str, Any],
                 tables: list[dict[str, Any]]) -> None:
        self.vpc_id = vpc_id
        self.region: str | None = spec.get("region")
        self.profile: str | None = spec.get("profile")
        self.aws = aws
        self.owner_id: str = vpc["OwnerId"]
        self.cidrs = vpc_cidrs(vpc)
        self.tables = tables


def ensure_peering(ctx: StepContext) -> dict[str, Any]:
    net, node_sg = ctx.upstream["network"], ctx.upstream["security-groups"]["node_security_group_id"]
    wanted: dict[str, dict[str, Any]] = dict(ctx.run.state.data.get("peers") or {})
    live = our_peerings(ctx)
    # Everything is read and checked first: a refusal leaves AWS untouched.
    peers = [inspect_peer(ctx, live, net, vpc_id, spec or {}) for vpc_id, spec in sorted(wanted.items())]
    claimed: dict[str, list[str]] = {}
    for peer in peers:
        problems = overlaps(net["vpc_cidr_block"], claimed, peer.vpc_id, peer.cidrs)
        if problems:
            raise InputError(f"peering: the CIDR ranges of {peer.vpc_id} are not disjoint: "
                             + "; ".join(problems), hint=f"run `exaprov unpeer --vpc-id {peer.vpc_id}`")
        claimed[peer.vpc_id] = peer.cidrs
    for vpc_id in sorted(known_peers(ctx, live) - wanted.keys()):
        unpeer(ctx, vpc_id, live, node_sg)
    known_tables = [i for i in net["private_route_table_ids"] if not is_unknown(i)]
    deployment_tables = items_by_id(ctx, "describe_route_tables", known_tables) if known_tables else []
    outputs = {p.vpc_id: ensure_peer(ctx, live, net, node_sg, deployment_tables, p) for p in peers}
    return {"peerings": outputs}


def inspect_peer(ctx: StepContext, live: list[dict[str, Any]], net: dict[str, Any], vpc_id: str,
                 spec: dict[str, Any]) -> Peer:
    """Describe a client VPC and its route tables; refuse a table routing our CIDR elsewhere."""
    if vpc_id == net["vpc_id"]:
        raise InputError(f"peering: {vpc_id} is the deployment's own VPC",
                         hint=f"run `exaprov unpeer --vpc-id {vpc_id}`")
    aws = ctx.aws.elsewhere(spec.get("region"), spec.get("profile"))
    vpc = describe_client_vpc(aws, vpc_id, spec.get("region") or ctx.aws.region, spec.get("profile"))
    ids = spec.get("route_table_ids")
    tables = describe_tables(ctx, aws, ids=ids) if ids else describe_tables(ctx, aws, vpc_id=vpc_id)
    if ids:
        check_tables(vpc_id, ids, tables, "peering")
    ours = {p["VpcPeeringConnectionId"] for p in live if accepter(p) == vpc_id}
    for table in tables:
        rtb = table["RouteTableId"]
        route = find_route(table, net["vpc_cidr_block"])
        if route is None or ctx.recorded(route_logical(rtb, net["vpc_cidr_block"])):
            continue
        target = route_target(route)
        if route.get("VpcPeeringConnectionId") not in ours:
            raise InputError(f"peering: route table {rtb} of {vpc_id} already routes "
                             f"{net['vpc_cidr_block']} to {target}; nothing was changed",
                             hint=f"remove that route, or pass --route-table-ids without {rtb}")
    return Peer(vpc_id, spec, aws, vpc, tables)


def ensure_peer(ctx: StepContext, live: list[dict[str, Any]], net: dict[str, Any], node_sg: str,
                deployment_tables: list[dict[str, Any]], peer: Peer) -> dict[str, Any]:
    pcx_id = ensure_connection(ctx, live, net["vpc_id"], peer)
    for table in deployment_tables:
        for cidr in peer.cidrs:
            ensure_route(ctx, ctx.aws, table, cidr, pcx_id, peer.vpc_id, "deployment")
    for table in peer.tables:
        ensure_route(ctx, peer.aws, table, net["vpc_cidr_block"], pcx_id, peer.vpc_id, "client")
    description = f"{RULE_PREFIX} {peer.vpc_id}"
    rules = {Rule("ingress", "tcp", 0, 65535, cidr, description) for cidr in peer.cidrs}
    ensure_rules(ctx, f"sg-rule:{peer.vpc_id}", node_sg, rules, exclusive=False)
    if ctx.recording:
        ctx.run.writer.record(ctx.address(f"sg-rule:{peer.vpc_id}"), kind=KIND_RULE, id=node_sg,
                              cidrs=peer.cidrs)
    return {"pcx_id": pcx_id, "cidrs": peer.cidrs,
            "client_route_table_ids": sorted(t["RouteTableId"] for t in peer.tables)}


def ensure_connection(ctx: StepContext, live: list[dict[str, Any]], deployment_vpc: str,
                      peer: Peer) -> str:
    """Find (recorded, else tagged) or create the peering; accept it; wait until active."""
    logical = pcx_logical(peer.vpc_id)
    attrs = {"peer_vpc": peer.vpc_id, "region": peer.region, "profile": peer.profile,
             "cidrs": peer.cidrs}
    mine = [p for p in live if accepter(p) == peer.vpc_id]
    recorded = ctx.recorded_id(logical)
    usable = sorted((p for p in mine if state_of(p) in USABLE_STATES),
                    key=lambda p: p["VpcPeeringConnectionId"] != recorded)
    if not usable:
        broken = next((p for p in mine if p["VpcPeeringConnectionId"] == recorded), None)
        if broken is not None and state_of(broken) in BROKEN_STATES:
            report_broken(ctx, peer.vpc_id, broken)
        ec2, name = ctx.aws.ec2, f"{ctx.cfg.name}-{peer.vpc_id}"
        params: dict[str, Any] = {"VpcId": deployment_vpc, "PeerVpcId": peer.vpc_id,
                                  "PeerOwnerId": peer.owner_id,
                                  "TagSpecifications": tag_specs(ctx, "vpc-peering-connection",
                                                                 logical, name)}
        if peer.region and peer.region != ctx.aws.region:
            params["PeerRegion"] = peer.region
        pcx_id = ctx.create(logical, KIND_PCX, lambda token: ctx.retry_while(
            f"new VPC {deployment_vpc}", lambda: ec2.create_vpc_peering_connection(**params),
            {"InvalidVpcID.NotFound"}, timeout=NEW_ID_TIMEOUT,
        )["VpcPeeringConnection"]["VpcPeeringConnectionId"],
            detail=f"{deployment_vpc} ↔ {peer.vpc_id}", name=name, **attrs)
        if ctx.planning:
            return pcx_id
        pcx = ctx.wait_until(f"peering {pcx_id}", lambda: describe_pcx(ctx.aws, pcx_id),
                             lambda p: p is None or state_of(p) != "initiating-request",
                             timeout=NEW_ID_TIMEOUT, interval=5, describe=describe_state)
        initial = True
    else:
        pcx, initial = usable[0], False
        pcx_id = pcx["VpcPeeringConnectionId"]
        ctx.found(logical, KIND_PCX, pcx_id, live=state_of(pcx), **attrs)
    if pcx is not None and state_of(pcx) == "pending-acceptance":
        ctx.update(logical, KIND_PCX, f"accept from {peer.vpc_id}'s side", initial=initial,
                   apply=lambda: ctx.retry_while(
                       f"peering {pcx_id} on the accepter side",
                       lambda: peer.aws.ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx_id),
                       {"InvalidVpcPeeringConnectionID.NotFound"}, timeout=NEW_ID_TIMEOUT))
    if not ctx.planning and (pcx is None or state_of(pcx) != "active"):
        done = ctx.wait_until(f"peering {pcx_id} active", lambda: describe_pcx(ctx.aws, pcx_id),
                              lambda p: p is not None and state_of(p) in {"active"} | BROKEN_STATES,
                              timeout=ACTIVE_TIMEOUT, interval=5, describe=describe_state)
        if done is None or state_of(done) != "active":
            report_broken(ctx, peer.vpc_id, done or {"VpcPeeringConnectionId": pcx_id})
    return pcx_id


def report_broken(ctx: StepContext, vpc_id: str, pcx: dict[str, Any]) -> None:
    """A peering failed, was rejected, expired or was deleted (e.g. on the client side)."""
    logical, pcx_id, state = pcx_logical(vpc_id), pcx["VpcPeeringConnectionId"], state_of(pcx)
    fix = f"run `exaprov unpeer --vpc-id {vpc_id}` then `exaprov peer --vpc-id {vpc_id}`"
    if ctx.planning:
        ctx.found(logical, KIND_PCX, pcx_id, live=state)
        ctx.update(logical, KIND_PCX, f"peering {state}: {fix}", lambda: None)
        return
    ctx.forget(logical)
    message = (pcx.get("Status") or {}).get("Message") or ""
    raise ExaprovError(f"peering: the peering {pcx_id} with {vpc_id} is {state}"
                       + (f" ({message})" if message else ""),
                       hint=f"{fix} (or `exaprov peer --vpc-id {vpc_id}` again to make a new one)")


def ensure_route(ctx: StepContext, aws: Aws, table: dict[str, Any], cidr: str, pcx_id: str,
                 vpc_id: str, side: str) -> None:
    """One route `cidr → pcx_id`: created if missing, re-pointed if it is ours but stale."""
    rtb = table["RouteTableId"]
    logical, route_id = route_logical(rtb, cidr), f"{rtb}|{cidr}"
    attrs = {"peer_vpc": vpc_id, "side": side}
    live = find_route(table, cidr)
    params = {"RouteTableId": rtb, "DestinationCidrBlock": cidr, "VpcPeeringConnectionId": pcx_id}
    if live is None:
        ctx.create(logical, KIND_ROUTE, lambda token: (aws.ec2.create_route(**params), route_id)[1],
                   detail=f"{cidr} → {pcx_id} in {rtb}", **attrs)
        return
    ctx.found(logical, KIND_ROUTE, route_id, live=live.get("State", "active"), **attrs)
    if live.get("VpcPeeringConnectionId") != pcx_id or live.get("State") == "blackhole":
        ctx.update(logical, KIND_ROUTE, f"{cidr}: {route_target(live)} → {pcx_id}",
                   lambda: aws.ec2.replace_route(**params))


# -- removal ---------------------------------------------------------------------

def unpeer(ctx: StepContext, vpc_id: str, live: list[dict[str, Any]], node_sg: str | None) -> None:
    """Remove exactly what ensure added for one client VPC, tolerating what is gone."""
    rec = ctx.recorded(pcx_logical(vpc_id)) or {}
    mine = [p for p in live if accepter(p) == vpc_id]
    pcx_ids = {p["VpcPeeringConnectionId"] for p in mine} | ({rec["id"]} if rec.get("id") else set())
    region = rec.get("region") or next(
        (p.get("AccepterVpcInfo", {}).get("Region") for p in mine), None)
    peer_aws = ctx.aws.elsewhere(region, rec.get("profile"))
    deployment_vpc = (ctx.upstream.get("network") or {}).get("vpc_id")
    sides = [(peer_aws, vpc_id)]
    if deployment_vpc and not is_unknown(deployment_vpc):
        sides.insert(0, (ctx.aws, deployment_vpc))
    # The routes `peer` added, wherever they are: every table of both VPCs, and the tables
    # the records name (a route a past exaprov put in a table outside the client VPC).
    recorded: dict[str, set[str]] = {"deployment": set(), "client": set()}
    for logical, record in ctx.run.state.step_resources(ctx.step).items():
        if logical.startswith("route:") and record.get("peer_vpc") == vpc_id \
                and record.get("side") in recorded and "|" in str(record.get("id", "")):
            recorded[record["side"]].add(str(record["id"]).split("|", 1)[0])
    done: set[tuple[str, str]] = set()
    for aws, owner in sides:
        side = "client" if owner == vpc_id else "deployment"
        tables = describe_tables(ctx, aws, vpc_id=owner)
        others = sorted(recorded[side] - {t["RouteTableId"] for t in tables})
        if others:
            tables += describe_tables(ctx, aws, ids=others)
        for table in tables:
            for route in table.get("Routes", []):
                rtb, cidr = table["RouteTableId"], route.get("DestinationCidrBlock")
                if route.get("VpcPeeringConnectionId") in pcx_ids and cidr and (rtb, cidr) not in done:
                    done.add((rtb, cidr))
                    ctx.delete(route_logical(rtb, cidr), KIND_ROUTE, f"{rtb}|{cidr}",
                               partial(_delete_route, aws, rtb, cidr),
                               detail=f"{cidr} → {route['VpcPeeringConnectionId']} in {rtb}")
    if node_sg and not is_unknown(node_sg):
        description = f"{RULE_PREFIX} {vpc_id}"
        for item in describe_rules(ctx, [node_sg]):
            if item.get("Description") == description:
                ctx.delete(f"sg-rule:{vpc_id}", KIND_RULE, item["SecurityGroupRuleId"],
                           partial(revoke, ctx, node_sg,
                                   "egress" if item.get("IsEgress") else "ingress"),
                           detail=f"{description}: {item.get('CidrIpv4') or item.get('CidrIpv6')}")
    for pcx in mine:
        if state_of(pcx) in USABLE_STATES:
            ctx.delete(pcx_logical(vpc_id), KIND_PCX, pcx["VpcPeeringConnectionId"],
                       lambda pid: ctx.aws.ec2.delete_vpc_peering_connection(VpcPeeringConnectionId=pid))
    for logical, record in ctx.run.state.step_resources(ctx.step).items():
        if logical == pcx_logical(vpc_id) or record.get("peer_vpc") == vpc_id \
                or logical == f"sg-rule:{vpc_id}":
            ctx.forget(logical)


def _delete_route(aws: Aws, rtb: str, cidr: str, _route_id: str) -> None:
    aws.ec2.delete_route(RouteTableId=rtb, DestinationCidrBlock=cidr)


def destroy_peering(ctx: StepContext) -> None:
    live = our_peerings(ctx)
    node_sg = (ctx.upstream.get("security-groups") or {}).get("node_security_group_id")
    for vpc_id in sorted(known_peers(ctx, live)):
        unpeer(ctx, vpc_id, live, node_sg)
    for logical in ctx.recorded_logicals():  # recorded, but already gone from AWS
        ctx.forget(logical)
    if not ctx.planning:
        left = [p["VpcPeeringConnectionId"] for p in our_peerings(ctx) if state_of(p) in USABLE_STATES]
        if left:
            raise ExaprovError(f"peering: still present after destroy: {', '.join(left)}",
                               hint="run `exaprov destroy` again; if it persists, delete them by hand")


# -- lookups ---------------------------------------------------------------------

def our_peerings(ctx: StepContext) -> list[dict[str, Any]]:
    """This deployment's peerings, in any state: tagged by us, or recorded by ID.

    Filtered again here: not every EC2 implementation honours the filters.
    """
    ec2 = ctx.aws.ec2
    filters = [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [ctx.cfg.name]},
               {"Name": f"tag:{TAG_COMPONENT}", "Values": [ctx.step]}]
    found = ctx.call(lambda: ec2.describe_vpc_peering_connections(Filters=filters))
    items = [p for p in found["VpcPeeringConnections"] if _tagged_ours(ctx, p)]
    seen = {p["VpcPeeringConnectionId"] for p in items}
    lost = sorted({rec["id"] for rec in ctx.run.state.step_resources(ctx.step).values()
                   if rec.get("kind") == KIND_PCX and rec.get("id") and rec["id"] not in seen
                   and not is_unknown(rec["id"])})
    if lost:
        by_id = [{"Name": "vpc-peering-connection-id", "Values": lost}]
        found = ctx.call(lambda: ec2.describe_vpc_peering_connections(Filters=by_id))
        items += [p for p in found["VpcPeeringConnections"] if p["VpcPeeringConnectionId"] in lost]
    return items


def _tagged_ours(ctx: StepContext, pcx: dict[str, Any]) -> bool:
    tags = tag_dict(pcx.get("Tags"))
    return is_ours(ctx.cfg.name, tags) and tags.get(TAG_COMPONENT) == ctx.step


def known_peers(ctx: StepContext, live: list[dict[str, Any]]) -> set[str]:
    """Client VPCs this step has (or had) something for: records and live peerings."""
    vpcs = {p["AccepterVpcInfo"]["VpcId"] for p in live if state_of(p) in USABLE_STATES}
    for logical, record in ctx.run.state.step_resources(ctx.step).items():
        if logical.startswith("pcx:"):
            vpcs.add(logical.removeprefix("pcx:"))
        if record.get("peer_vpc"):
            vpcs.add(record["peer_vpc"])
    return vpcs


def describe_pcx(aws: Aws, pcx_id: str) -> dict[str, Any] | None:
    items = aws.ec2.describe_vpc_peering_connections(
        Filters=[{"Name": "vpc-peering-connection-id", "Values": [pcx_id]}])["VpcPeeringConnections"]
    return next((p for p in items if p["VpcPeeringConnectionId"] == pcx_id), None)


def describe_tables(ctx: StepContext, aws: Aws, ids: list[str] | None = None,
                    vpc_id: str | None = None) -> list[dict[str, Any]]:
    """Route tables by ID (unknown IDs of a plan skipped), or every table of a VPC."""
    if ids is not None:
        known = [i for i in ids if not is_unknown(i)]
        if not known:
            return []
        flt = [{"Name": "route-table-id", "Values": known}]
    elif vpc_id and not is_unknown(vpc_id):
        flt = [{"Name": "vpc-id", "Values": [vpc_id]}]
    else:
        return []
    return ctx.call(lambda: aws.ec2.describe_route_tables(Filters=flt))["RouteTables"]


def find_route(table: dict[str, Any], cidr: str) -> dict[str, Any] | None:
    return next((r for r in table.get("Routes", []) if r.get("DestinationCidrBlock") == cidr), None)


def route_target(route: dict[str, Any]) -> str:
    for key in ("VpcPeeringConnectionId", "GatewayId", "NatGatewayId", "TransitGatewayId",
                "NetworkInterfaceId", "InstanceId", "VpcEndpointId", "LocalGatewayId",
                "CarrierGatewayId", "EgressOnlyInternetGatewayId"):
        if route.get(key):
            return str(route[key])
    return "?"


def accepter(pcx: dict[str, Any]) -> str | None:
    return (pcx.get("AccepterVpcInfo") or {}).get("VpcId")


def state_of(pcx: dict[str, Any] | None) -> str:
    return ((pcx or {}).get("Status") or {}).get("Code", "missing")


def describe_state(pcx: dict[str, Any] | None) -> str:
    return state_of(pcx)


def pcx_logical(vpc_id: str) -> str:
    return f"pcx:{vpc_id}"


def route_logical(rtb: str, cidr: str) -> str:
    return f"route:{rtb}:{cidr}"


PEERING = Step("peering", ("network", "security-groups"), ensure_peering, destroy_peering,
               title="VPC peering")
