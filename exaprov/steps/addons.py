"""EKS managed add-ons, as two steps around the node groups.

A cluster is created with `bootstrapSelfManagedAddons=false`: EKS installs nothing itself, and
every component is an EKS managed add-on that EKS can upgrade. Each add-on runs at EKS's default
version for the cluster's Kubernetes version (DescribeAddonVersions), unless `cluster.addons`
pins one; `cluster.addons` also adds other add-ons by name.

`addons` (after `cluster`, before `node-groups`) owns vpc-cni, kube-proxy and
eks-pod-identity-agent (DaemonSets: they run as soon as nodes join), the EBS CSI driver's
IAM role, and brings every existing add-on to its wanted version: in an upgrade the control
plane goes first (the cluster step), then every add-on here, then the node groups (they
require this step).

`addons-after-nodes` (after `node-groups`) creates coredns, aws-ebs-csi-driver and any add-on
the config adds: their pods need a node, and without one EKS reports them DEGRADED.

The EBS CSI driver gets AWS credentials through EKS Pod Identity: a role
`<cluster>-ebs-csi` trusting pods.eks.amazonaws.com with AmazonEBSCSIDriverPolicy, passed in
CreateAddon's podIdentityAssociations for the service account ebs-csi-controller-sa (so the
association is the add-on's own: EKS deletes it with the add-on). The pod identity agent is
one of the add-ons.

A cluster built with self-managed add-ons (by an older exaprov) is brought under management
in place: CreateAddon with resolveConflicts=OVERWRITE takes over the running component.

Records: addons.<name> and addons-after-nodes.<name> (id = add-on name, with the version and
the Kubernetes version it was resolved for), addons.ebs-csi-role. Destroy order: the late
add-ons (the EBS CSI driver's association goes with it) → node groups → the early add-ons →
the EBS CSI role → the cluster.

Requests of a converged run: ListAddons (shared by both steps), DescribeAddon per add-on
(version and health), GetRole and ListAttachedRolePolicies for the EBS CSI role.
DescribeAddonVersions is read only when an add-on is created or its wanted version may have
changed (the cluster's Kubernetes version moved, a pin changed, or the state lost the record).
"""

from __future__ import annotations

from typing import Any

from exaprov.aws import paginate
from exaprov.engine import TAG_DEPLOYMENT, Step, StepContext, is_unknown
from exaprov.errors import AwsError, ExaprovError, is_not_found
from exaprov.state import CREATED
from exaprov.steps.iam import RoleSpec, delete_role, ensure_role, find_role, is_ours, role_name

KIND = "eks:addon"
ADDONS_STEP = "addons"
EARLY = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")  # DaemonSets: no node needed
LATE = ("coredns", "aws-ebs-csi-driver")  # Deployments: need a node to be healthy
EBS_CSI = "aws-ebs-csi-driver"
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
EBS_CSI_ROLE = RoleSpec("ebs-csi-role", "ebs-csi", "pods.eks", ("sts:AssumeRole", "sts:TagSession"),
                        ("service-role/AmazonEBSCSIDriverPolicy",))
ADDON_TIMEOUT = 20 * 60  # EKS: a minute or two per add-on
SETTLED = ("ACTIVE", "DEGRADED", "CREATE_FAILED", "UPDATE_FAILED")


def wanted_addons(cfg: Any) -> dict[str, str | None]:
    """Every managed add-on the cluster gets: name -> pinned version (None = EKS's default)."""
    wanted: dict[str, str | None] = dict.fromkeys(EARLY + LATE)
    wanted.update({name: version or None for name, version in cfg.cluster.addons.items()})
    return wanted


def is_early(name: str) -> bool:
    return name in EARLY


# -- reading ------------------------------------------------------------------------

def live_names(ctx: StepContext, cluster: str) -> list[str]:
    """ListAddons, read once per run for both steps (until something changes)."""
    eks = ctx.aws.client("eks")

    def read() -> list[str]:
        try:
            return ctx.call(lambda: paginate(eks, "list_addons", "addons", clusterName=cluster))
        except AwsError as exc:
            if exc.__cause__ is not None and is_not_found(exc.__cause__):
                return []
            raise
    return ctx.run.shared(("eks:list_addons", cluster), read)


def describe(ctx: StepContext, cluster: str, name: str) -> dict[str, Any] | None:
    try:
        return ctx.call(lambda: ctx.aws.client("eks").describe_addon(
            clusterName=cluster, addonName=name))["addon"]
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return None
        raise


def default_versions(ctx: StepContext, kubernetes: str) -> dict[str, str]:
    """EKS's default version of every add-on for a Kubernetes version (one paginated read)."""
    eks = ctx.aws.client("eks")

    def read() -> dict[str, str]:
        found: dict[str, str] = {}
        for addon in ctx.call(lambda: paginate(eks, "describe_addon_versions", "addons",
                                               kubernetesVersion=kubernetes)):
            for version in addon.get("addonVersions", []):
                if any(c.get("defaultVersion") and c.get("clusterVersion") == kubernetes
                       for c in version.get("compatibilities", [])):
                    found[addon["addonName"]] = version["addonVersion"]
        return found
    return ctx.run.shared(("eks:addon_defaults", kubernetes), read)


def wanted_version(ctx: StepContext, name: str, pin: str | None, kubernetes: str,
                   live: dict[str, Any] | None) -> str:
    """The pin, else EKS's default for `kubernetes`. The recorded resolution is reused while
    the add-on still runs it for the same Kubernetes version (no DescribeAddonVersions)."""
    if pin:
        return pin
    rec = ctx.recorded(name) or {}
    if live is not None and rec.get("kubernetes") == kubernetes and not rec.get("pinned") \
            and rec.get("version") == live.get("addonVersion"):
        return str(live["addonVersion"])
    default = default_versions(ctx, kubernetes).get(name)
    if default is None:
        raise ExaprovError(f"{ctx.step}: EKS offers no add-on {name!r} for Kubernetes {kubernetes}",
                           hint="check the name in cluster.addons (aws eks describe-addon-versions "
                                f"--kubernetes-version {kubernetes}), or remove it")
    return default


# -- creating and reconciling ---------------------------------------------------------

def ensure_addon(ctx: StepContext, cluster: str, kubernetes: str, name: str, pin: str | None,
                 live: dict[str, Any] | None, role_arn: str | None) -> str:
    eks = ctx.aws.client("eks")
    extra: dict[str, Any] = {}
    if name == EBS_CSI and role_arn:
        extra["podIdentityAssociations"] = [{"serviceAccount": EBS_CSI_SERVICE_ACCOUNT,
                                             "roleArn": role_arn}]
    if live is None:
        if ctx.planning and is_unknown(kubernetes):
            version = pin or "EKS's default"
        else:
            version = wanted_version(ctx, name, pin, kubernetes, None)

        def create(token: str) -> str:
            # OVERWRITE: a component the cluster runs self-managed (built before managed
            # add-ons) is taken over in place; on a new cluster there is nothing to overwrite.
            eks.create_addon(clusterName=cluster, addonName=name, addonVersion=version,
                             resolveConflicts="OVERWRITE", clientRequestToken=token,
                             tags=ctx.tags(name), **extra)
            return name

        ctx.create(name, KIND, create, detail=f"{version}{' (pinned)' if pin else ''}",
                   **({} if ctx.planning else {"version": version, "kubernetes": kubernetes,
                                               "pinned": bool(pin)}))
        if not ctx.planning:
            _wait(ctx, cluster, name)
        return version
    ctx.found(name, KIND, name, live=_live_text(live), version=live.get("addonVersion"))
    row = ctx.run.observed.get(ctx.address(name))
    issues = "; ".join(f"{i.get('code')}: {i.get('message')}"
                       for i in live.get("health", {}).get("issues", []))
    if live["status"] == "DEGRADED" and row is not None:
        row.drift.append(f"DEGRADED: {issues or 'no issue given'}")
    version = wanted_version(ctx, name, pin, kubernetes, live)
    failed = live["status"].endswith("FAILED")
    update: dict[str, Any] = {}
    details = []
    if live.get("addonVersion") != version:
        update["addonVersion"] = version
        details.append(f"version {live.get('addonVersion')} → {version}"
                       f"{' (pinned)' if pin else f' (default for {kubernetes})'}")
    if extra and not live.get("podIdentityAssociations"):
        update.update(extra)
        details.append(f"pod identity for {EBS_CSI_SERVICE_ACCOUNT}")
    if failed:
        details.append(f"{live['status']} ({issues or 'no issue given'}): apply again, overwriting")
    if details:
        ctx.update(name, KIND, ", ".join(details), lambda: _update(
            ctx, cluster, name, {**update, "resolveConflicts": "OVERWRITE" if failed else "PRESERVE"}))
    if not ctx.planning:
        ctx.run.writer.record(ctx.address(name), version=version, kubernetes=kubernetes,
                              pinned=bool(pin))
    return version


def _live_text(addon: dict[str, Any]) -> str:
    return f"{addon['status']} {addon.get('addonVersion', '')}".strip()


def _update(ctx: StepContext, cluster: str, name: str, params: dict[str, Any]) -> None:
    ctx.aws.client("eks").update_addon(clusterName=cluster, addonName=name, **params)
    _wait(ctx, cluster, name)


def _wait(ctx: StepContext, cluster: str, name: str) -> dict[str, Any]:
    eks = ctx.aws.client("eks")
    addon = ctx.wait_until(
        f"add-on {name}", lambda: eks.describe_addon(clusterName=cluster, addonName=name)["addon"],
        lambda a: a["status"] in SETTLED, timeout=ADDON_TIMEOUT, interval=10,
        describe=lambda a: a["status"])
    if addon["status"].endswith("FAILED"):
        issues = "; ".join(f"{i.get('code')}: {i.get('message')}"
                           for i in addon.get("health", {}).get("issues", []))
        raise ExaprovError(f"{ctx.step}: add-on {name} {addon['status']}: {issues or 'no reason given'}",
                           hint="fix the cause and run `exaprov up` again")
    return addon


def _cluster(ctx: StepContext) -> tuple[str, str]:
    upstream = ctx.upstream["cluster"]
    return upstream["cluster_name"], upstream["cluster_version"]


# -- step: addons (before the node groups) -------------------------------------------------

def ensure_addons(ctx: StepContext) -> dict[str, Any]:
    cluster, kubernetes = _cluster(ctx)
    role_arn, _ = ensure_role(ctx, EBS_CSI_ROLE)
    new_cluster = is_unknown(ctx.upstream["cluster"]["cluster_arn"])
    names = set() if new_cluster else set(live_names(ctx, cluster))
    for name, pin in wanted_addons(ctx.cfg).items():
        if name in names:
            live = describe(ctx, cluster, name)
            if live is not None:
                ensure_addon(ctx, cluster, kubernetes, name, pin, live, role_arn)
                continue
        if is_early(name):
            ensure_addon(ctx, cluster, kubernetes, name, pin, None, role_arn)
    return {"ebs_csi_role_arn": role_arn}  # the versions are in the state's records


def destroy_addons(ctx: StepContext) -> None:
    _delete_addons(ctx, lambda name: True)
    recorded = (ctx.recorded(EBS_CSI_ROLE.logical) or {}).get("name")
    for name in sorted({role_name(ctx, EBS_CSI_ROLE), recorded} - {None}):
        role = find_role(ctx, name)
        if role is None:
            continue
        if not is_ours(ctx, EBS_CSI_ROLE.logical, role):
            ctx.report(f"leaving IAM role {name}: it does not belong to this deployment")
            continue
        ctx.delete(EBS_CSI_ROLE.logical, "iam:role", role["Arn"],
                   lambda arn, n=name: delete_role(ctx, n), detail=name)
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)


# -- step: addons-after-nodes ------------------------------------------------------------------

def ensure_late_addons(ctx: StepContext) -> dict[str, Any]:
    """Create what needs nodes, once the node groups are ACTIVE (the node-groups step waits)."""
    cluster, kubernetes = _cluster(ctx)
    role_arn = ctx.upstream["addons"]["ebs_csi_role_arn"]
    new_cluster = is_unknown(ctx.upstream["cluster"]["cluster_arn"])
    names = set() if new_cluster else set(live_names(ctx, cluster))
    wanted = wanted_addons(ctx.cfg)
    for name, pin in wanted.items():
        if name in names and ctx.recorded(name):
            ctx.forget(name)  # made by a run that died before handing it over: `addons` has it
        if is_early(name) or name in names:
            continue
        ensure_addon(ctx, cluster, kubernetes, name, pin, None, role_arn)
        _hand_over(ctx, name)
    # An add-on this deployment created and the config no longer names.
    for name in sorted(names - set(wanted)):
        live = describe(ctx, cluster, name)
        if live is not None and live.get("tags", {}).get(TAG_DEPLOYMENT) == ctx.cfg.name:
            ctx.delete(name, KIND, name, lambda n: _delete_and_wait(ctx, cluster, n),
                       detail=f"{name} (no longer in cluster.addons)")
    return {}


def _hand_over(ctx: StepContext, name: str) -> None:
    """Once made, an add-on is the `addons` step's to keep current (it upgrades every add-on
    before the node groups): its record moves there."""
    rec = ctx.recorded(name)
    if ctx.planning or not rec or rec.get("status") != CREATED:
        return
    ctx.run.writer.record(f"{ADDONS_STEP}.{name}", **{k: v for k, v in rec.items()})
    ctx.forget(name)


def destroy_late_addons(ctx: StepContext) -> None:
    _delete_addons(ctx, lambda name: not is_early(name))


def _delete_addons(ctx: StepContext, which: Any) -> None:
    """Delete the cluster's add-ons (all of them belong to the cluster, which must be ours)."""
    cluster = ctx.cfg.cluster.cluster_name
    try:
        live = ctx.call(lambda: ctx.aws.client("eks").describe_cluster(name=cluster))["cluster"]
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            live = None
        else:
            raise
    if live is not None and live.get("tags", {}).get(TAG_DEPLOYMENT) == ctx.cfg.name:
        for name in live_names(ctx, cluster):
            if which(name):
                ctx.delete(name, KIND, name, lambda n: _delete_and_wait(ctx, cluster, n))
    for logical in ctx.recorded_logicals():
        if logical != EBS_CSI_ROLE.logical:
            ctx.forget(logical)


def _delete_and_wait(ctx: StepContext, cluster: str, name: str) -> None:
    eks = ctx.aws.client("eks")
    eks.delete_addon(clusterName=cluster, addonName=name)
    ctx.wait_gone(f"add-on {name}", lambda: eks.describe_addon(
        clusterName=cluster, addonName=name)["addon"]["status"], timeout=ADDON_TIMEOUT, interval=5)


ADDONS = Step(ADDONS_STEP, ("cluster",), ensure_addons, destroy_addons,
              title="EKS managed add-ons (networking, pod identity)")
LATE_ADDONS = Step("addons-after-nodes", ("cluster", "addons", "node-groups"), ensure_late_addons,
                   destroy_late_addons, title="EKS managed add-ons that need nodes")
