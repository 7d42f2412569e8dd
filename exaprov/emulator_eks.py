"""The EKS of December 2026 that moto lacks: versions, managed add-ons, insights, protection.

exaprov/emulator.py patches moto's EKS for clusters and node groups; this module adds what
EKS grew since (moto 5.2 has none of it), merged into the same patch tables so the sandbox
server and in-process tests get the same behaviour:

- DescribeClusterVersions: every version with its status and dates (the dates of exaprov's
  own table, exaprov/data/eks_versions.json; status computed on the emulator's `_today()`).
- CreateCluster records `bootstrapSelfManagedAddons` (default true: vpc-cni, kube-proxy and
  coredns then run as self-managed components), `upgradePolicy.supportType` (default
  EXTENDED, as EKS) and `deletionProtection` (default false); DescribeCluster echoes the last
  two; UpdateClusterConfig changes either (one kind of change per call, refused if a no-op).
- DeleteCluster of an ACTIVE or UPDATING cluster with deletion protection on answers
  InvalidRequestException (the code EKS documents; a CREATING, FAILED or DELETING cluster can
  be deleted).
- Managed add-ons: CreateAddon / DescribeAddon / ListAddons / UpdateAddon / DeleteAddon and
  DescribeAddonVersions with a default version per Kubernetes version. An add-on whose pods
  need nodes (coredns, the CSI drivers...) is DEGRADED, with EKS's InsufficientNumberOfReplicas
  issue, while the cluster has no ACTIVE node group. CreateAddon over a self-managed component
  without resolveConflicts=OVERWRITE ends CREATE_FAILED with a ConfigurationConflict issue.
  Add-on pod identity associations (CreateAddon's podIdentityAssociations) are created with
  the add-on and deleted with it; the role must exist and trust pods.eks.amazonaws.com.
  UpdateAddon records an AddonUpdate for DescribeUpdate(addonName=...).
- ListPodIdentityAssociations / DescribePodIdentityAssociation / Create / Delete.
- ListInsights: UPGRADE_READINESS insights for the next minor version (PASSING), plus any a
  test adds with `add_insight()`.
- CreateNodegroup takes updateConfig (default maxUnavailable 1) and nodeRepairConfig
  (default off) and DescribeNodegroup echoes them back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

# exaprov/emulator.py, handed over by `extend` (not imported: run as `python -m
# exaprov.emulator`, that module is __main__, and importing it by name would load a second copy).
emu: Any = None

URL_PATHS = (
    "{0}/cluster-versions$",
    "{0}/addons/supported-versions$",
    "{0}/clusters/(?P<name>[^/]+)/addons$",
    "{0}/clusters/(?P<name>[^/]+)/addons/(?P<addonName>[^/]+)$",
    "{0}/clusters/(?P<name>[^/]+)/addons/(?P<addonName>[^/]+)/update$",
    "{0}/clusters/(?P<name>[^/]+)/insights$",
    "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations$",
    "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations/(?P<associationId>[^/]+)$",
)

SELF_MANAGED = ("vpc-cni", "kube-proxy", "coredns")  # what bootstrapSelfManagedAddons installs
# Add-ons whose pods are Deployments: without a node they never get ready replicas.
NEEDS_NODES = frozenset({"coredns", "aws-ebs-csi-driver", "aws-efs-csi-driver",
                         "snapshot-controller", "amazon-cloudwatch-observability"})
POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"


def _today() -> date:
    """The emulator's calendar day (UTC); tests monkeypatch it."""
    return datetime.now(timezone.utc).date()


# ---- the add-on catalogue: per Kubernetes minor, the versions offered and the default (last)

def _per_minor(defaults: dict[int, str]) -> dict[int, list[str]]:
    """Each minor offers its own default and the two before it (EKS keeps a few builds)."""
    minors = sorted(defaults)
    return {m: list(dict.fromkeys(defaults[k] for k in minors if m - 2 <= k <= m)) for m in minors}


_CATALOGUE: dict[str, dict[int, list[str]]] = {
    "vpc-cni": _per_minor({29: "v1.18.6-eksbuild.1", 30: "v1.19.0-eksbuild.1",
                           31: "v1.19.2-eksbuild.1", 32: "v1.19.5-eksbuild.3",
                           33: "v1.20.1-eksbuild.3", 34: "v1.20.4-eksbuild.2",
                           35: "v1.21.0-eksbuild.4", 36: "v1.21.1-eksbuild.1"}),
    "kube-proxy": {m: [f"v1.{m}.1-eksbuild.1", f"v1.{m}.3-eksbuild.2"] for m in range(29, 37)},
    "coredns": _per_minor({29: "v1.11.1-eksbuild.9", 30: "v1.11.3-eksbuild.1",
                           31: "v1.11.3-eksbuild.2", 32: "v1.11.4-eksbuild.2",
                           33: "v1.12.1-eksbuild.2", 34: "v1.12.3-eksbuild.1",
                           35: "v1.12.4-eksbuild.1", 36: "v1.13.1-eksbuild.1"}),
    "eks-pod-identity-agent": _per_minor({m: f"v1.3.{m - 24}-eksbuild.1" for m in range(29, 37)}),
    "aws-ebs-csi-driver": _per_minor({m: f"v1.{m + 10}.0-eksbuild.1" for m in range(29, 37)}),
    "aws-efs-csi-driver": {m: ["v2.1.9-eksbuild.1", "v2.2.0-eksbuild.1"] for m in range(29, 37)},
    "snapshot-controller": {m: ["v8.2.0-eksbuild.1", "v8.3.0-eksbuild.1"] for m in range(29, 37)},
}
_ADDON_TYPES = {"vpc-cni": "networking", "kube-proxy": "networking", "coredns": "networking",
                "eks-pod-identity-agent": "security", "aws-ebs-csi-driver": "storage",
                "aws-efs-csi-driver": "storage", "snapshot-controller": "storage"}
_NEEDS_IAM = frozenset({"vpc-cni", "aws-ebs-csi-driver", "aws-efs-csi-driver"})


def default_version(addon: str, version: str) -> str | None:
    offered = _CATALOGUE.get(addon, {}).get(emu._minor(version)[1])
    return offered[-1] if offered else None


# ---- small helpers

def _addons(cluster: Any) -> dict[str, dict[str, Any]]:
    if not hasattr(cluster, "_exaprov_addons"):
        cluster._exaprov_addons = {}
    return cluster._exaprov_addons  # type: ignore[no-any-return]


def _associations(cluster: Any) -> dict[str, dict[str, Any]]:
    if not hasattr(cluster, "_exaprov_pod_identity"):
        cluster._exaprov_pod_identity = {}
    return cluster._exaprov_pod_identity  # type: ignore[no-any-return]


def _insights(cluster: Any) -> list[dict[str, Any]]:
    if not hasattr(cluster, "_exaprov_insights"):
        cluster._exaprov_insights = []
    return cluster._exaprov_insights  # type: ignore[no-any-return]


def _has_active_nodes(cluster: Any) -> bool:
    return any(ng.status == emu.ACTIVE for ng in cluster.nodegroups.values())


def _addon_view(cluster: Any, addon: dict[str, Any]) -> dict[str, Any]:
    """The add-on as DescribeAddon answers: its health follows the cluster's nodes."""
    view = {k: v for k, v in addon.items() if not k.startswith("_")}
    if view["status"] in (emu.ACTIVE, "DEGRADED"):
        if addon["addonName"] in NEEDS_NODES and not _has_active_nodes(cluster):
            view["status"] = "DEGRADED"
            view["health"] = {"issues": [{
                "code": "InsufficientNumberOfReplicas",
                "message": "The add-on is unhealthy because it doesn't have the desired number "
                           "of replicas.", "resourceIds": []}]}
        else:
            view["status"] = emu.ACTIVE
            view["health"] = {"issues": []}
    return view


def _get_addon(backend: Any, cluster_name: str, addon_name: str) -> tuple[Any, dict[str, Any]]:
    cluster = emu._get_cluster(backend, cluster_name)
    addon = _addons(cluster).get(addon_name)
    if addon is None:
        raise emu._exc("ResourceNotFoundException",
                       f"No addon: {addon_name} found in cluster: {cluster_name}",
                       clusterName=cluster_name, addonName=addon_name)
    return cluster, addon


def _check_version(cluster: Any, addon_name: str, version: str | None) -> str:
    offered = _CATALOGUE.get(addon_name, {}).get(emu._minor(cluster.version)[1])
    if not offered:
        raise emu._exc("InvalidParameterException", f"Addon {addon_name} specified is not supported "
                       f"in {cluster.version} kubernetes version", clusterName=cluster.name,
                       addonName=addon_name)
    if version and version not in offered:
        raise emu._exc("InvalidParameterException", f"Addon version specified is not supported for "
                       f"{addon_name} in {cluster.version} kubernetes version",
                       clusterName=cluster.name, addonName=addon_name)
    return version or offered[-1]


def _role_trusts_pods(backend: Any, role_arn: str) -> None:
    """EKS checks a pod identity role: it must exist and trust pods.eks.amazonaws.com."""
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    name = role_arn.rsplit("/", 1)[-1]
    iam = iam_backends[backend.account_id][get_partition(backend.region_name)]
    try:
        role = iam.get_role(name)
    except Exception:  # noqa: BLE001 - moto's NoSuchEntity
        raise emu._exc("InvalidParameterException", f"Role {role_arn} does not exist") from None
    policy = role.assume_role_policy_document
    document = json.loads(policy) if isinstance(policy, str) else policy
    for statement in document.get("Statement", []):
        services = (statement.get("Principal") or {}).get("Service", [])
        if POD_IDENTITY_PRINCIPAL in ([services] if isinstance(services, str) else services):
            return
    raise emu._exc("InvalidParameterException", f"Trust policy of role {role_arn} does not allow "
                   f"{POD_IDENTITY_PRINCIPAL} to assume it")


def _new_association(backend: Any, cluster: Any, namespace: str, service_account: str,
                     role_arn: str, owner: str | None, tags: dict[str, str] | None) -> dict[str, Any]:
    _role_trusts_pods(backend, role_arn)
    for existing in _associations(cluster).values():
        if (existing["namespace"], existing["serviceAccount"]) == (namespace, service_account):
            raise emu._exc("ResourceInUseException", "Association already exists: "
                           f"{existing['associationId']}", clusterName=cluster.name)
    assoc_id = "a-" + emu._hex32()[:17].lower()
    now = emu._utcnow()
    association = {
        "clusterName": cluster.name, "namespace": namespace, "serviceAccount": service_account,
        "roleArn": role_arn, "associationId": assoc_id,
        "associationArn": (f"arn:{backend.partition}:eks:{backend.region_name}:{backend.account_id}"
                           f":podidentityassociation/{cluster.name}/{assoc_id}"),
        "tags": dict(tags or {}), "createdAt": now, "modifiedAt": now,
        "disableSessionTags": False}
    if owner:
        association["ownerArn"] = owner
    _associations(cluster)[assoc_id] = association
    return association


def _addon_associations(backend: Any, cluster: Any, addon: dict[str, Any],
                        wanted: list[dict[str, Any]] | None) -> None:
    """Make the add-on's associations what `wanted` lists (by service account)."""
    if wanted is None:
        return
    by_sa = {a["serviceAccount"]: a for a in _associations(cluster).values()
             if a.get("ownerArn") == addon["addonArn"]}
    keep = []
    for entry in wanted:
        current = by_sa.pop(entry["serviceAccount"], None)
        if current is not None and current["roleArn"] != entry["roleArn"]:
            _role_trusts_pods(backend, entry["roleArn"])
            current.update(roleArn=entry["roleArn"], modifiedAt=emu._utcnow())
        if current is None:
            current = _new_association(backend, cluster, "kube-system", entry["serviceAccount"],
                                       entry["roleArn"], addon["addonArn"], None)
        keep.append(current["associationArn"])
    for gone in by_sa.values():
        _associations(cluster).pop(gone["associationId"], None)
    addon["podIdentityAssociations"] = keep


# ---- backend methods: versions

def _describe_cluster_versions(self: Any, cluster_versions: list[str] | None = None,
                               include_all: bool = False, default_only: bool = False,
                               version_status: str | None = None) -> list[dict[str, Any]]:
    from exaprov import eks_versions

    day = _today()
    rows = []
    confirmed = [v for v in eks_versions.shipped(day).values() if not v.approximate]
    default = max((v.version for v in confirmed if v.status == eks_versions.STANDARD),
                  key=eks_versions.minor, default=None)
    for info in eks_versions.shipped(day).values():
        if cluster_versions and info.version not in cluster_versions:
            continue
        if not include_all and not cluster_versions and info.status == eks_versions.UNSUPPORTED:
            continue  # EKS lists only versions a cluster can run, unless asked for all
        if version_status and info.status != version_status:
            continue
        if default_only and info.version != default:
            continue
        end_std, end_ext = info.end_of_standard_support, info.end_of_extended_support
        rows.append({
            "clusterVersion": info.version, "clusterType": "eks",
            "defaultPlatformVersion": "eks.1", "defaultVersion": info.version == default,
            "endOfStandardSupportDate": datetime(end_std.year, end_std.month, end_std.day,
                                                 tzinfo=timezone.utc) if end_std else None,
            "endOfExtendedSupportDate": datetime(end_ext.year, end_ext.month, end_ext.day,
                                                 tzinfo=timezone.utc) if end_ext else None,
            "status": info.status.lower().replace("_", "-"), "versionStatus": info.status,
            "kubernetesPatchVersion": f"{info.version}.2"})
    return sorted(rows, key=lambda r: -eks_versions.minor(r["clusterVersion"]))


# ---- backend methods: add-ons

def _create_addon(self: Any, cluster_name: str, addon_name: str, addon_version: str | None = None,
                  service_account_role_arn: str | None = None, resolve_conflicts: str | None = None,
                  client_request_token: str | None = None, tags: dict[str, str] | None = None,
                  configuration_values: str | None = None,
                  pod_identity_associations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    cluster = emu._get_cluster(self, cluster_name)
    existing = _addons(cluster).get(addon_name)
    if existing is not None:
        if client_request_token and existing.get("_token") == client_request_token:
            return _addon_view(cluster, existing)  # an idempotent retry
        raise emu._exc("ResourceInUseException", "Addon already exists.", clusterName=cluster_name,
                       addonName=addon_name)
    if cluster.status != emu.ACTIVE:
        raise emu._exc("InvalidRequestException", f"Cluster {cluster_name} is not in ACTIVE status",
                       clusterName=cluster_name, addonName=addon_name)
    if resolve_conflicts == "PRESERVE":
        raise emu._exc("InvalidParameterException",
                       "ResolveConflicts PRESERVE is only supported when updating an addon",
                       clusterName=cluster_name, addonName=addon_name)
    version = _check_version(cluster, addon_name, addon_version)
    now = emu._utcnow()
    addon: dict[str, Any] = {
        "addonName": addon_name, "clusterName": cluster_name, "status": emu.ACTIVE,
        "addonVersion": version, "health": {"issues": []},
        "addonArn": (f"arn:{self.partition}:eks:{self.region_name}:{self.account_id}:addon/"
                     f"{cluster_name}/{addon_name}/{emu._new_uuid()}"),
        "createdAt": now, "modifiedAt": now, "tags": dict(tags or {}),
        "podIdentityAssociations": [], "_token": client_request_token}
    if service_account_role_arn:
        addon["serviceAccountRoleArn"] = service_account_role_arn
    if configuration_values:
        addon["configurationValues"] = configuration_values
    self_managed = getattr(cluster, "_exaprov_self_managed", set())
    if addon_name in self_managed and resolve_conflicts != "OVERWRITE":
        # EKS will not take over a component it did not install unless told to overwrite it.
        addon["status"] = "CREATE_FAILED"
        addon["health"] = {"issues": [{
            "code": "ConfigurationConflict",
            "message": "Conflicts found when trying to apply. Will not continue due to resolve "
                       "conflicts mode. Conflicts: ...", "resourceIds": []}]}
    else:
        self_managed.discard(addon_name)
    _addons(cluster)[addon_name] = addon
    try:
        _addon_associations(self, cluster, addon, pod_identity_associations or [])
    except Exception:
        _addons(cluster).pop(addon_name, None)
        raise
    return _addon_view(cluster, addon)


def _describe_addon(self: Any, cluster_name: str, addon_name: str) -> dict[str, Any]:
    cluster, addon = _get_addon(self, cluster_name, addon_name)
    return _addon_view(cluster, addon)


def _list_addons(self: Any, cluster_name: str) -> list[str]:
    return sorted(_addons(emu._get_cluster(self, cluster_name)))


def _update_addon(self: Any, cluster_name: str, addon_name: str, addon_version: str | None = None,
                  service_account_role_arn: str | None = None, resolve_conflicts: str | None = None,
                  configuration_values: str | None = None,
                  pod_identity_associations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    cluster, addon = _get_addon(self, cluster_name, addon_name)
    if addon["status"] in ("CREATING", "DELETING", "UPDATING"):
        raise emu._exc("ResourceInUseException", f"Addon {addon_name} is in {addon['status']} state",
                       clusterName=cluster_name, addonName=addon_name)
    params = []
    if addon_version:
        addon["addonVersion"] = _check_version(cluster, addon_name, addon_version)
        params.append({"type": "AddonVersion", "value": addon_version})
    if service_account_role_arn is not None:
        addon["serviceAccountRoleArn"] = service_account_role_arn
        params.append({"type": "ServiceAccountRoleArn", "value": service_account_role_arn})
    if configuration_values is not None:
        addon["configurationValues"] = configuration_values
        params.append({"type": "ConfigurationValues", "value": configuration_values})
    if pod_identity_associations is not None:
        _addon_associations(self, cluster, addon, pod_identity_associations)
        params.append({"type": "PodIdentityAssociations",
                       "value": json.dumps(addon["podIdentityAssociations"])})
    if resolve_conflicts:
        params.append({"type": "ResolveConflicts", "value": resolve_conflicts})
    if addon["status"].endswith("FAILED"):
        addon["status"] = emu.ACTIVE  # a new attempt; conflicts are EKS's concern only at create
        addon["health"] = {"issues": []}
    addon["modifiedAt"] = emu._utcnow()
    update = emu._new_update("AddonUpdate", params)
    emu._updates(cluster)[update["id"]] = (f"addon:{addon_name}", update)
    return update


def _delete_addon(self: Any, cluster_name: str, addon_name: str, preserve: bool = False
                  ) -> dict[str, Any]:
    cluster, addon = _get_addon(self, cluster_name, addon_name)
    view = _addon_view(cluster, addon)
    for assoc_id, association in list(_associations(cluster).items()):
        if association.get("ownerArn") == addon["addonArn"]:
            del _associations(cluster)[assoc_id]
    del _addons(cluster)[addon_name]
    view["status"] = "DELETING"
    return view


def _describe_addon_versions(self: Any, kubernetes_version: str | None = None,
                             addon_name: str | None = None) -> list[dict[str, Any]]:
    wanted = emu._minor(kubernetes_version)[1] if kubernetes_version else None
    found = []
    for name, per_minor in sorted(_CATALOGUE.items()):
        if addon_name and name != addon_name:
            continue
        versions: dict[str, list[dict[str, Any]]] = {}
        for minor, offered in sorted(per_minor.items()):
            if wanted is not None and minor != wanted:
                continue
            for version in offered:
                versions.setdefault(version, []).append({
                    "clusterVersion": f"1.{minor}", "platformVersions": ["*"],
                    "defaultVersion": version == offered[-1]})
        if not versions:
            continue
        found.append({
            "addonName": name, "type": _ADDON_TYPES[name], "owner": "aws", "publisher": "eks",
            "defaultNamespace": "kube-system",
            "addonVersions": [{
                "addonVersion": version, "architecture": ["amd64", "arm64"],
                "computeTypes": ["ec2", "auto", "hybrid"], "compatibilities": compat,
                "requiresConfiguration": False, "requiresIamPermissions": name in _NEEDS_IAM}
                for version, compat in sorted(versions.items(), reverse=True)]})
    return found


# ---- backend methods: pod identity associations

def _create_pod_identity_association(self: Any, cluster_name: str, namespace: str,
                                     service_account: str, role_arn: str,
                                     tags: dict[str, str] | None = None) -> dict[str, Any]:
    cluster = emu._get_cluster(self, cluster_name)
    return _new_association(self, cluster, namespace, service_account, role_arn, None, tags)


def _get_association(backend: Any, cluster_name: str, association_id: str) -> tuple[Any, dict[str, Any]]:
    cluster = emu._get_cluster(backend, cluster_name)
    found = _associations(cluster).get(association_id)
    if found is None:
        raise emu._exc("ResourceNotFoundException",
                       f"No Pod Identity Association found with id {association_id}",
                       clusterName=cluster_name)
    return cluster, found


def _describe_pod_identity_association(self: Any, cluster_name: str, association_id: str
                                       ) -> dict[str, Any]:
    return _get_association(self, cluster_name, association_id)[1]


def _delete_pod_identity_association(self: Any, cluster_name: str, association_id: str
                                     ) -> dict[str, Any]:
    cluster, found = _get_association(self, cluster_name, association_id)
    if found.get("ownerArn"):
        raise emu._exc("InvalidRequestException", "The association is owned by an add-on "
                       f"({found['ownerArn']}): update or delete the add-on instead",
                       clusterName=cluster_name)
    return _associations(cluster).pop(association_id)


def _list_pod_identity_associations(self: Any, cluster_name: str, namespace: str | None = None,
                                    service_account: str | None = None) -> list[dict[str, Any]]:
    cluster = emu._get_cluster(self, cluster_name)
    keys = ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId",
            "ownerArn")
    return [{k: a[k] for k in keys if k in a} for a in _associations(cluster).values()
            if (namespace is None or a["namespace"] == namespace)
            and (service_account is None or a["serviceAccount"] == service_account)]


# ---- backend methods: insights

def add_insight(cluster: Any, status: str, name: str, description: str = "",
                category: str = "UPGRADE_READINESS", kubernetes_version: str | None = None) -> None:
    """What tests use to make EKS report an upgrade blocker (e.g. a deprecated API in use)."""
    major, minor = emu._minor(cluster.version)
    now = emu._utcnow()
    _insights(cluster).append({
        "id": emu._new_uuid(), "name": name, "category": category,
        "kubernetesVersion": kubernetes_version or f"{major}.{minor + 1}",
        "lastRefreshTime": now, "lastTransitionTime": now, "description": description or name,
        "insightStatus": {"status": status, "reason": description or name}})


def _list_insights(self: Any, cluster_name: str, filter: dict[str, Any] | None = None  # noqa: A002
                   ) -> list[dict[str, Any]]:
    cluster = emu._get_cluster(self, cluster_name)
    major, minor = emu._minor(cluster.version)
    now = emu._utcnow()
    # What EKS checks before every upgrade; all pass in a fresh emulated cluster.
    built_in = [{"id": f"{cluster.name}-{i}", "name": name, "category": "UPGRADE_READINESS",
                 "kubernetesVersion": f"{major}.{minor + 1}", "lastRefreshTime": now,
                 "lastTransitionTime": now, "description": name,
                 "insightStatus": {"status": "PASSING", "reason": "No issues found."}}
                for i, name in enumerate((f"Deprecated APIs removed in Kubernetes v{major}.{minor + 1}",
                                          "Kubelet version skew", "Cluster health issues",
                                          "Amazon EKS add-on version compatibility"))]
    wanted = filter or {}
    return [i for i in built_in + _insights(cluster)
            if (not wanted.get("categories") or i["category"] in wanted["categories"])
            and (not wanted.get("statuses") or i["insightStatus"]["status"] in wanted["statuses"])
            and (not wanted.get("kubernetesVersions")
                 or i["kubernetesVersion"] in wanted["kubernetesVersions"])]


# ---- wrappers of emulator.py's cluster and node group methods

UPGRADE_SUPPORT_TYPES = ("STANDARD", "EXTENDED")


def _wrap_create_cluster(inner: Callable[..., Any]) -> Callable[..., Any]:
    def create_cluster(self: Any, name: str, *args: Any, bootstrap_self_managed_addons: Any = None,
                       upgrade_policy: Any = None, deletion_protection: Any = None,
                       **kwargs: Any) -> Any:
        support = (upgrade_policy or {}).get("supportType") or "EXTENDED"  # EKS's default
        if support not in UPGRADE_SUPPORT_TYPES:
            raise emu._exc("InvalidParameterException", f"Invalid supportType {support}")
        existed = name in self.clusters
        cluster = inner(self, name, *args, **kwargs)
        if not existed:
            bootstrap = bootstrap_self_managed_addons is not False  # the API's default: true
            cluster.bootstrap_self_managed_addons = bootstrap
            cluster._exaprov_self_managed = set(SELF_MANAGED) if bootstrap else set()
            cluster.upgrade_policy = {"supportType": support}
            cluster.deletion_protection = bool(deletion_protection)
        return cluster
    return create_cluster


def _wrap_delete_cluster(inner: Callable[..., Any]) -> Callable[..., Any]:
    def delete_cluster(self: Any, name: str) -> Any:
        cluster = emu._get_cluster(self, name)
        if getattr(cluster, "deletion_protection", False) and cluster.status in (emu.ACTIVE,
                                                                                 emu.UPDATING):
            # The code EKS documents for this case; the wording is the emulator's.
            raise emu._exc("InvalidRequestException", f"Cluster {name} has deletion protection "
                           "enabled. Disable it with UpdateClusterConfig (deletionProtection "
                           "false) before deleting the cluster.", clusterName=name)
        return inner(self, name)
    return delete_cluster


def _wrap_update_cluster_config(inner: Callable[..., Any]) -> Callable[..., Any]:
    def update_cluster_config(self: Any, name: str, *args: Any, upgrade_policy: Any = None,
                              deletion_protection: Any = None, **kwargs: Any) -> Any:
        ours = [k for k, v in (("upgradePolicy", upgrade_policy),
                               ("deletionProtection", deletion_protection)) if v is not None]
        if not ours:
            return inner(self, name, *args, **kwargs)
        others = [v for k, v in kwargs.items() if k != "client_request_token" and v]
        if len(ours) > 1 or any(args) or others:
            raise emu._exc("InvalidParameterException", "Only one type of update can be allowed.")
        cluster = emu._get_cluster(self, name)
        emu._require_active_cluster(cluster)
        if upgrade_policy is not None:
            support = upgrade_policy.get("supportType")
            if support not in UPGRADE_SUPPORT_TYPES:
                raise emu._exc("InvalidParameterException", f"Invalid supportType {support}")
            if support == cluster.upgrade_policy.get("supportType"):
                raise emu._exc("InvalidParameterException",
                               f"Cluster already has supportType {support}")
            cluster.upgrade_policy = {"supportType": support}
            update = emu._new_update("UpgradePolicyUpdate",
                                     [{"type": "UpgradePolicy", "value": support}])
        else:
            wanted = bool(deletion_protection)
            if wanted == bool(getattr(cluster, "deletion_protection", False)):
                raise emu._exc("InvalidParameterException",
                               f"Cluster already has deletionProtection {str(wanted).lower()}")
            cluster.deletion_protection = wanted
            update = emu._new_update("DeletionProtectionUpdate",
                                     [{"type": "DeletionProtection", "value": str(wanted).lower()}])
        return emu._record_update(cluster, update)
    return update_cluster_config


def _wrap_create_nodegroup(inner: Callable[..., Any]) -> Callable[..., Any]:
    def create_nodegroup(self: Any, *args: Any, update_config: Any = None,
                         node_repair_config: Any = None, **kwargs: Any) -> Any:
        if update_config is not None:
            given = [k for k in ("maxUnavailable", "maxUnavailablePercentage")
                     if update_config.get(k) is not None]
            if len(given) != 1:
                raise emu._exc("InvalidParameterException", "You must specify either "
                               "maxUnavailable or maxUnavailablePercentage in updateConfig")
            percent = update_config.get("maxUnavailablePercentage")
            if percent is not None and not 1 <= int(percent) <= 100:
                raise emu._exc("InvalidParameterException",
                               "maxUnavailablePercentage must be between 1 and 100")
        existed = kwargs.get("nodegroup_name") in getattr(
            self.clusters.get(kwargs.get("cluster_name")), "nodegroups", {})
        nodegroup = inner(self, *args, **kwargs)
        if not existed:  # EKS's defaults when the request leaves them out
            nodegroup.update_config = dict(update_config or {"maxUnavailable": 1})
            nodegroup.node_repair_config = dict(node_repair_config or {"enabled": False})
        return nodegroup
    return create_nodegroup


def _wrap_describe_update(inner: Callable[..., Any]) -> Callable[..., Any]:
    def describe_update(self: Any, name: str, update_id: str, nodegroup_name: str | None = None,
                        addon_name: str | None = None) -> Any:
        owner = f"addon:{addon_name}" if addon_name else nodegroup_name
        return inner(self, name, update_id, nodegroup_name=owner)
    return describe_update


# ---- the HTTP side

def _query_list(response: Any, name: str) -> list[str] | None:
    values = response.querystring.get(name)
    return list(values) if values else None


def _query_bool(response: Any, name: str) -> bool:
    return str(response._get_param(name, "false")).lower() == "true"


def _page(response: Any, items: list[Any], default_size: int = 100) -> tuple[list[Any], str | None]:
    """maxResults / nextToken paging (the token: the next item's index)."""
    size = int(response._get_param("maxResults") or default_size)
    start = int(response._get_param("nextToken") or 0)
    nxt = str(start + size) if start + size < len(items) else None
    return items[start:start + size], nxt


def _result(body: dict[str, Any]) -> Any:
    from moto.core.responses import ActionResult

    return ActionResult({k: v for k, v in body.items() if v is not None})


def _r_create_cluster(self: Any) -> Any:
    cluster = self.eks_backend.create_cluster(
        name=self._get_param("name"), version=self._get_param("version"),
        role_arn=self._get_param("roleArn"), resources_vpc_config=self._get_param("resourcesVpcConfig"),
        kubernetes_network_config=self._get_param("kubernetesNetworkConfig"),
        logging=self._get_param("logging"), client_request_token=self._get_param("clientRequestToken"),
        tags=self._get_param("tags"), encryption_config=self._get_param("encryptionConfig"),
        remote_network_config=self._get_param("remoteNetworkConfig"),
        access_config=self._get_param("accessConfig"), creator_arn=emu._caller_principal(self),
        bootstrap_self_managed_addons=self._get_param("bootstrapSelfManagedAddons"),
        upgrade_policy=self._get_param("upgradePolicy"),
        deletion_protection=self._get_param("deletionProtection"))
    return _result({"cluster": cluster})


def _r_update_cluster_config(self: Any) -> Any:
    update = self.eks_backend.update_cluster_config(
        name=self._get_param("name"), resources_vpc_config=self._get_param("resourcesVpcConfig"),
        logging=self._get_param("logging"), client_request_token=self._get_param("clientRequestToken"),
        kubernetes_network_config=self._get_param("kubernetesNetworkConfig"),
        remote_network_config=self._get_param("remoteNetworkConfig"),
        access_config=self._get_param("accessConfig"),
        upgrade_policy=self._get_param("upgradePolicy"),
        deletion_protection=self._get_param("deletionProtection"))
    return _result({"update": update})


def _r_create_nodegroup(self: Any) -> Any:
    nodegroup = self.eks_backend.create_nodegroup(
        cluster_name=self._get_param("name"), nodegroup_name=self._get_param("nodegroupName"),
        scaling_config=self._get_param("scalingConfig"), disk_size=self._get_int_param("diskSize"),
        subnets=self._get_param("subnets"), instance_types=self._get_param("instanceTypes"),
        ami_type=self._get_param("amiType"), remote_access=self._get_param("remoteAccess"),
        node_role=self._get_param("nodeRole"), labels=self._get_param("labels"),
        taints=self._get_param("taints"), tags=self._get_param("tags"),
        client_request_token=self._get_param("clientRequestToken"),
        launch_template=self._get_param("launchTemplate"),
        capacity_type=self._get_param("capacityType"), version=self._get_param("version"),
        release_version=self._get_param("releaseVersion"),
        update_config=self._get_param("updateConfig"),
        node_repair_config=self._get_param("nodeRepairConfig"))
    return _result({"nodegroup": nodegroup})


def _r_describe_update(self: Any) -> Any:
    update = self.eks_backend.describe_update(
        name=self._get_param("name"), update_id=self._get_param("updateId"),
        nodegroup_name=self._get_param("nodegroupName"), addon_name=self._get_param("addonName"))
    return _result({"update": update})


def _r_describe_cluster_versions(self: Any) -> Any:
    rows = self.eks_backend.describe_cluster_versions(
        cluster_versions=_query_list(self, "clusterVersions"),
        include_all=_query_bool(self, "includeAll"), default_only=_query_bool(self, "defaultOnly"),
        version_status=self._get_param("versionStatus"))
    page, nxt = _page(self, rows)
    return _result({"clusterVersions": page, "nextToken": nxt})


def _r_create_addon(self: Any) -> Any:
    addon = self.eks_backend.create_addon(
        cluster_name=self._get_param("name"), addon_name=self._get_param("addonName"),
        addon_version=self._get_param("addonVersion"),
        service_account_role_arn=self._get_param("serviceAccountRoleArn"),
        resolve_conflicts=self._get_param("resolveConflicts"),
        client_request_token=self._get_param("clientRequestToken"), tags=self._get_param("tags"),
        configuration_values=self._get_param("configurationValues"),
        pod_identity_associations=self._get_param("podIdentityAssociations"))
    return _result({"addon": addon})


def _r_describe_addon(self: Any) -> Any:
    return _result({"addon": self.eks_backend.describe_addon(
        cluster_name=self._get_param("name"), addon_name=self._get_param("addonName"))})


def _r_list_addons(self: Any) -> Any:
    page, nxt = _page(self, self.eks_backend.list_addons(cluster_name=self._get_param("name")))
    return _result({"addons": page, "nextToken": nxt})


def _r_update_addon(self: Any) -> Any:
    update = self.eks_backend.update_addon(
        cluster_name=self._get_param("name"), addon_name=self._get_param("addonName"),
        addon_version=self._get_param("addonVersion"),
        service_account_role_arn=self._get_param("serviceAccountRoleArn"),
        resolve_conflicts=self._get_param("resolveConflicts"),
        configuration_values=self._get_param("configurationValues"),
        pod_identity_associations=self._get_param("podIdentityAssociations"))
    return _result({"update": update})


def _r_delete_addon(self: Any) -> Any:
    return _result({"addon": self.eks_backend.delete_addon(
        cluster_name=self._get_param("name"), addon_name=self._get_param("addonName"),
        preserve=_query_bool(self, "preserve"))})


def _r_describe_addon_versions(self: Any) -> Any:
    addons = self.eks_backend.describe_addon_versions(
        kubernetes_version=self._get_param("kubernetesVersion"),
        addon_name=self._get_param("addonName"))
    page, nxt = _page(self, addons, default_size=10)
    return _result({"addons": page, "nextToken": nxt})


def _r_list_insights(self: Any) -> Any:
    insights = self.eks_backend.list_insights(cluster_name=self._get_param("name"),
                                              filter=self._get_param("filter"))
    page, nxt = _page(self, insights)
    return _result({"insights": page, "nextToken": nxt})


def _r_create_pod_identity_association(self: Any) -> Any:
    return _result({"association": self.eks_backend.create_pod_identity_association(
        cluster_name=self._get_param("name"), namespace=self._get_param("namespace"),
        service_account=self._get_param("serviceAccount"), role_arn=self._get_param("roleArn"),
        tags=self._get_param("tags"))})


def _r_describe_pod_identity_association(self: Any) -> Any:
    return _result({"association": self.eks_backend.describe_pod_identity_association(
        cluster_name=self._get_param("name"), association_id=self._get_param("associationId"))})


def _r_delete_pod_identity_association(self: Any) -> Any:
    return _result({"association": self.eks_backend.delete_pod_identity_association(
        cluster_name=self._get_param("name"), association_id=self._get_param("associationId"))})


def _r_list_pod_identity_associations(self: Any) -> Any:
    found = self.eks_backend.list_pod_identity_associations(
        cluster_name=self._get_param("name"), namespace=self._get_param("namespace"),
        service_account=self._get_param("serviceAccount"))
    page, nxt = _page(self, found)
    return _result({"associations": page, "nextToken": nxt})


_WRAPPERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "create_cluster": _wrap_create_cluster,
    "delete_cluster": _wrap_delete_cluster,
    "update_cluster_config": _wrap_update_cluster_config,
    "create_nodegroup": _wrap_create_nodegroup,
    "describe_update": _wrap_describe_update,
}
_ADDITIONS: dict[str, Callable[..., Any]] = {
    "describe_cluster_versions": _describe_cluster_versions,
    "create_addon": _create_addon,
    "describe_addon": _describe_addon,
    "list_addons": _list_addons,
    "update_addon": _update_addon,
    "delete_addon": _delete_addon,
    "describe_addon_versions": _describe_addon_versions,
    "create_pod_identity_association": _create_pod_identity_association,
    "describe_pod_identity_association": _describe_pod_identity_association,
    "delete_pod_identity_association": _delete_pod_identity_association,
    "list_pod_identity_associations": _list_pod_identity_associations,
    "list_insights": _list_insights,
}
_RESPONSES: dict[str, Callable[..., Any]] = {
    "create_cluster": _r_create_cluster,
    "update_cluster_config": _r_update_cluster_config,
    "create_nodegroup": _r_create_nodegroup,
    "describe_update": _r_describe_update,
    "describe_cluster_versions": _r_describe_cluster_versions,
    "create_addon": _r_create_addon,
    "describe_addon": _r_describe_addon,
    "list_addons": _r_list_addons,
    "update_addon": _r_update_addon,
    "delete_addon": _r_delete_addon,
    "describe_addon_versions": _r_describe_addon_versions,
    "list_insights": _r_list_insights,
    "create_pod_identity_association": _r_create_pod_identity_association,
    "describe_pod_identity_association": _r_describe_pod_identity_association,
    "delete_pod_identity_association": _r_delete_pod_identity_association,
    "list_pod_identity_associations": _r_list_pod_identity_associations,
}


def extend(module: Any, replacements: dict[str, Callable[..., Any]],
           additions: dict[str, Callable[..., Any]], responses: dict[str, Callable[..., Any]]) -> None:
    """Merge this module's behaviour into emulator.py's patch tables (before it installs them)."""
    global emu
    if emu is None:
        emu = module
    for name, wrap in _WRAPPERS.items():
        if name in replacements:
            replacements[name] = wrap(replacements[name])
        else:
            additions[name] = wrap(additions[name])
    additions.update(_ADDITIONS)
    responses.update(_RESPONSES)
