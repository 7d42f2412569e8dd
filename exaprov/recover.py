"""`exaprov state recover`: rebuild a lost or damaged state from what exists in AWS.

Every resource exaprov creates carries the tags `exaprov:deployment`, `exaprov:component`
(its step) and `exaprov:resource` (its logical name), or a name derived from the config,
and every step's ensure already finds its resources that way. Recovery runs every enabled
step in `Mode.RECOVER` — a plan (no change to AWS) whose finds are recorded — into a fresh
state, so the rebuilt state holds the IDs and step outputs that `up` itself would record.
What a plan would create is reported as missing; the state never claims it.

The client VPCs of `exaprov peer` are not in the config but in the state: they are read
back first, from the peering connections tagged for the deployment, so that the peering
step recovers them instead of planning to remove them.

Nothing is written without `write` (`--yes`). A damaged state (empty, not JSON, not an
exaprov state) is copied aside as `<name>.damaged-<timestamp>` before it is replaced; a
readable state that records resources is replaced only with `force` (and copied aside as
`<name>.replaced-<timestamp>`); a state written by a newer exaprov is never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exaprov import engine
from exaprov.aws import Aws, tag_dict
from exaprov.engine import TAG_COMPONENT, TAG_DEPLOYMENT, Mode
from exaprov.errors import InputError
from exaprov.ownership import is_ours
from exaprov.state import DamagedStateError, State, StateWriter


@dataclass
class Recovery:
    """What `state recover` found, and what it did with it."""

    state: State
    result: engine.RunResult
    location: str
    previous: str  # "none" | "empty" | "damaged" | "records N resource(s)"
    damage: str | None = None  # why the previous state was unusable
    written: bool = False
    kept_aside: str | None = None

    @property
    def found(self) -> list[engine.Observed]:
        return sorted((o for o in self.result.observed if o.live_id),
                      key=lambda o: o.address)

    @property
    def missing(self) -> list[engine.Change]:
        return [c for c in self.result.changes if c.action in ("create", "replace")]

    @property
    def drift(self) -> list[engine.Change]:
        return [c for c in self.result.changes if c.action not in ("create", "replace")]


def recover(deployment: Any, *, write: bool, force: bool,
            peer_profiles: dict[str, str] | None = None,
            reporter: engine.Reporter | None = None) -> Recovery:
    from exaprov.steps import STEPS

    store, cfg = deployment.store, deployment.cfg
    previous, damage = _read_previous(store)
    if previous is not None:
        deployment.check_identity(previous)  # another deployment's state is never replaced
    recorded = len(previous.resources) if previous is not None else 0
    if write and recorded and not force:
        raise InputError(f"{store.location} is readable and records {recorded} resource(s); "
                         "state recover replaces it only with --force",
                         hint="`exaprov status` shows whether it is right; `exaprov state recover` "
                              "without --yes shows what recovery would write")

    aws: Aws = deployment.aws
    if previous is not None:
        deployment.check_account(previous, None)
    state = State.new(cfg.name, cfg.region)
    if previous is not None:  # the same deployment's history: keep its lineage and serial
        state.data["lineage"], state.data["serial"] = previous.lineage, previous.serial
    state.data["account_id"] = aws.account_id()
    # The profiles of cross-account peers are not in AWS: a readable state still knows them.
    known = {vpc: spec["profile"] for vpc, spec in (previous.data.get("peers") or {}).items()
             if isinstance(spec, dict) and spec.get("profile")} if previous is not None else {}
    state.data["peers"] = find_peers(aws, cfg.name, {**known, **(peer_profiles or {})})

    # A dry-run writer: records land in `state` in memory; the store is written once, below.
    run = engine.Run(cfg, aws, StateWriter(store, state, dry_run=True), Mode.RECOVER, reporter)
    result = engine.apply(STEPS, run)
    recovery = Recovery(state, result, store.location,
                        previous="damaged" if damage else "none" if previous is None
                        else f"records {recorded} resource(s)" if recorded else "empty",
                        damage=damage)
    if write and not result.failed:
        if damage:
            recovery.kept_aside = store.keep_aside("damaged")
        elif recorded:
            recovery.kept_aside = store.keep_aside("replaced")
        store.write(state)
        recovery.written = True
    return recovery


def _read_previous(store: Any) -> tuple[State | None, str | None]:
    """The current state and None, or None and why it is damaged. A state of a newer
    exaprov (NewerStateError) or one that cannot be read at all is raised, not replaced."""
    try:
        return store.read(), None
    except DamagedStateError as exc:
        return None, exc.message


def find_peers(aws: Aws, deployment: str,
               peer_profiles: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The client VPCs peered with the deployment, as `exaprov peer` records them, read back
    from the usable peering connections tagged for it.

    route_table_ids: None (every table of the client VPC) when every table routes through
    the peering, else the tables that do. A client VPC in another account needs its profile
    in `peer_profiles` (it cannot be read from AWS).
    """
    from exaprov.steps.peering import USABLE_STATES, accepter, describe_client_vpc, state_of, vpc_cidrs

    filters = [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment]},
               {"Name": f"tag:{TAG_COMPONENT}", "Values": ["peering"]}]
    found = aws.ec2.describe_vpc_peering_connections(Filters=filters)["VpcPeeringConnections"]
    peers: dict[str, dict[str, Any]] = {}
    for pcx in sorted(found, key=lambda p: p["VpcPeeringConnectionId"]):
        tags = tag_dict(pcx.get("Tags"))
        vpc_id = accepter(pcx)
        if (not is_ours(deployment, tags) or tags.get(TAG_COMPONENT) != "peering"
                or state_of(pcx) not in USABLE_STATES or not vpc_id):
            continue  # filters not honoured everywhere; failed/deleted peerings are history
        info = pcx.get("AccepterVpcInfo") or {}
        region = info.get("Region") if info.get("Region") not in (None, aws.region) else None
        profile = peer_profiles.get(vpc_id)
        if profile is None and info.get("OwnerId") and info["OwnerId"] != aws.account_id():
            raise InputError(
                f"the peering {pcx['VpcPeeringConnectionId']} connects client VPC {vpc_id} of "
                f"account {info['OwnerId']}, whose AWS profile is not kept in tags",
                hint=f"pass --peer-profile {vpc_id}=PROFILE (a profile of account {info['OwnerId']})")
        client = aws.elsewhere(region, profile)
        vpc = describe_client_vpc(client, vpc_id, region or aws.region, profile)
        tables = client.ec2.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
        routed = sorted(t["RouteTableId"] for t in tables
                        if any(r.get("VpcPeeringConnectionId") == pcx["VpcPeeringConnectionId"]
                               for r in t.get("Routes", [])))
        peers[vpc_id] = {"route_table_ids": routed if routed and len(routed) < len(tables) else None,
                         "region": region, "profile": profile, "cidrs": vpc_cidrs(vpc)}
    return peers


def as_json(recovery: Recovery) -> dict[str, Any]:
    """What `state recover --output json` prints."""
    return {
        "state": recovery.location, "previous": recovery.previous, "damage": recovery.damage,
        "written": recovery.written, "kept_aside": recovery.kept_aside,
        "found": [{"address": o.address, "kind": o.kind, "id": o.live_id, "live": o.live}
                  for o in recovery.found],
        "missing": [{"address": c.address, "kind": c.kind, "detail": c.detail}
                    for c in recovery.missing],
        "drift": [{"address": c.address, "action": c.action, "detail": c.detail}
                  for c in recovery.drift],
        "peers": sorted(recovery.state.data.get("peers") or {}),
        "failed": {o.step: o.error.message if o.error else o.status
                   for o in recovery.result.failed},
    }
