"""exaprov's own local AWS emulator: moto's server plus what moto lacks.

This is the emulator `--sandbox` runs in a background process and the tests
share, so that both see the same behaviour. `install_extensions()` teaches
moto's EKS what real EKS does and moto skips: the cluster's primary security
group, a unique OIDC issuer per cluster, a real Auto Scaling group (and EKS's
own launch template) behind every managed node group, CREATING / UPDATING /
DELETING durations, version upgrades, endpoint and logging updates, update
records, and access entries (and, in exaprov/emulator_eks.py, Kubernetes versions,
managed add-ons, upgrade insights, deletion protection and the support type); RDS
instances `creating` / `backing-up` / `deleting` and NAT gateways `pending` /
`deleting` for as long as AWS keeps them so.

A latency model says how long each takes and how long each request's round trip
is, all multiplied by one time scale: `configure_durations()` (tests), or
`--latency-model aws --time-scale 0.0167` / EXAPROV_EMULATOR_LATENCY_MODEL,
EXAPROV_EMULATOR_TIME_SCALE and EXAPROV_EMULATOR_<KEY>_SECONDS (`serve()`). The
default is instant, moto's behaviour, so tests and the sandbox stay fast.

Run it as `python -m exaprov.emulator --host 127.0.0.1 --port 0 --ready-file PATH`.
It only ever binds a loopback address: the sandbox must never be reachable
from another machine.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from exaprov import emulator_rds
from exaprov.errors import ExaprovError, InputError

MOTO_MISSING = (
    "the sandbox needs the local AWS emulator (moto), which is not installed: "
    "pip install 'exaprov[sandbox]'"
)

_extensions_lock = threading.Lock()
_extensions_installed = False


def install_extensions() -> None:
    """Patch moto's backends with exaprov's extensions; safe to call many times.

    The one extension point for behaviour moto lacks, called by the server entry
    point and by in-process test fixtures alike so both emulate the same AWS.
    Only moto's EKS classes are patched; EC2 and Auto Scaling are used through
    their backends, so every other service behaves exactly as moto ships it.
    """
    global _extensions_installed
    with _extensions_lock:
        if _extensions_installed:
            return
        try:
            _install_eks()
            _install_rds()
            emulator_rds.install()  # managed master passwords and their rotation
            _install_nat()
            _install_ec2_filters()
            _install_tls_condition()
        except ImportError as exc:
            raise ExaprovError(MOTO_MISSING) from exc
        _extensions_installed = True


def _install_tls_condition() -> None:
    """Real S3 sees every SDK request arrive over TLS, so a bucket policy's usual
    "Deny unless aws:SecureTransport" never refuses them. moto knows no such key and
    applies the Deny to everything; evaluate that one condition as AWS would."""
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    original = IAMPolicyStatement.is_action_permitted
    if getattr(original, "_exaprov", False):
        return

    def is_action_permitted(self: Any, action: str, *args: Any, **kwargs: Any) -> Any:
        condition = self._statement.get("Condition") or {}
        secure = {k.lower(): v for k, v in condition.get("Bool", {}).items()}.get("aws:securetransport")
        if self._statement.get("Effect") == "Deny" and secure is not None and len(condition) == 1:
            wants_insecure = str(secure).lower() == "false"
            if wants_insecure:  # the request came over TLS: this Deny does not apply
                return PermissionResult.NEUTRAL
        return original(self, action, *args, **kwargs)

    is_action_permitted._exaprov = True  # type: ignore[attr-defined]
    IAMPolicyStatement.is_action_permitted = is_action_permitted  # type: ignore[method-assign]


# -- clock, durations and the latency model -------------------------------------------

DURATION_KEYS = ("cluster_create", "cluster_delete", "cluster_update",
                 "nodegroup_create", "nodegroup_delete", "nodegroup_update",
                 "rds_create", "rds_backup", "rds_delete", "nat_create", "nat_delete", "round_trip")
DURATION_ENV = {key: f"EXAPROV_EMULATOR_{key.upper()}_SECONDS" for key in DURATION_KEYS}
ENV_LATENCY_MODEL = "EXAPROV_EMULATOR_LATENCY_MODEL"
ENV_TIME_SCALE = "EXAPROV_EMULATOR_TIME_SCALE"

# What real AWS takes, in seconds (sources: benchmarks/README.md). `round_trip` is one API
# request's round trip; the rest are how long a resource stays in its transitional state.
# Updates are not modelled (0): no benchmark measures them.
AWS_LATENCY: dict[str, float] = {
    "cluster_create": 600.0,    # EKS control plane: about 10 min (16 in us-west-1)
    "cluster_delete": 180.0,    # about 3 min
    "nodegroup_create": 120.0,  # managed node group: about 2 min
    "nodegroup_delete": 300.0,  # 4-6 min
    "rds_create": 270.0,        # db.t3.micro: `creating` 4-5 min ...
    "rds_backup": 60.0,         # ... then `backing-up` (already serving) before `available`
    "rds_delete": 300.0,        # 4-6 min
    "nat_create": 120.0,        # NAT gateway `pending`: about 2 min
    "nat_delete": 60.0,         # `deleting`: about 1 min
    "round_trip": 0.1,          # one API request
}
LATENCY_MODELS: dict[str, dict[str, float]] = {"none": {}, "aws": AWS_LATENCY}
_durations: dict[str, float] = dict.fromkeys(DURATION_KEYS, 0.0)


def _now() -> float:
    """The emulator's clock; tests monkeypatch it instead of sleeping."""
    return time.monotonic()


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise InputError(f"emulator {name}: {value!r} is not a number of seconds >= 0")
    return float(value)


def configure_durations(scale: float = 1.0, **durations: float) -> None:
    """How long resources stay CREATING / UPDATING / DELETING (EKS), `creating` /
    `backing-up` / `deleting` (RDS), `pending` / `deleting` (NAT), and each request's
    round trip: every figure (seconds) multiplied by `scale`.

    A key left out is 0, moto's instant behaviour; called with no arguments it restores
    that default. `configure_durations(scale=1/60, **AWS_LATENCY)` is AWS sixty times faster.
    """
    unknown = sorted(set(durations) - set(DURATION_KEYS))
    if unknown:
        raise InputError(f"emulator durations: unknown {', '.join(unknown)} "
                         f"(known: {', '.join(DURATION_KEYS)})")
    factor = _seconds("time scale", scale)
    wanted = {key: _seconds(f"duration {key}", durations.get(key, 0.0)) for key in DURATION_KEYS}
    _durations.update({key: value * factor for key, value in wanted.items()})


def durations_from_env(environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """The durations the `EXAPROV_EMULATOR_<KEY>_SECONDS` variables ask for (unset = 0)."""
    environ = os.environ if environ is None else environ
    found: dict[str, float] = {}
    for key, var in DURATION_ENV.items():
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{var}={raw!r}: not a number of seconds >= 0")
        found[key] = value
    return found


def latency_settings(model: str | None = None, scale: float | str | None = None,
                     environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`configure_durations` arguments: a named model (`none`, `aws`; default from
    EXAPROV_EMULATOR_LATENCY_MODEL), overridden key by key by EXAPROV_EMULATOR_<KEY>_SECONDS,
    all times one scale (default from EXAPROV_EMULATOR_TIME_SCALE, else 1)."""
    environ = os.environ if environ is None else environ
    name = (model or environ.get(ENV_LATENCY_MODEL, "").strip() or "none").lower()
    if name not in LATENCY_MODELS:
        raise InputError(f"latency model {name!r}: must be one of {', '.join(LATENCY_MODELS)}")
    raw = scale if scale is not None else (environ.get(ENV_TIME_SCALE, "").strip() or "1")
    try:
        factor = float(raw)
    except ValueError:
        factor = -1.0
    if not math.isfinite(factor) or factor <= 0:
        raise InputError(f"time scale {raw!r}: must be a number above 0 (e.g. 0.0167 for 1/60)")
    return {**LATENCY_MODELS[name], **durations_from_env(environ), "scale": factor}


def round_trip() -> float:
    """Seconds the server holds each request before answering (0 unless a model says)."""
    return _durations["round_trip"]


# -- EKS: what real EKS does and moto does not ------------------------------------------

_eks_lock = threading.RLock()  # moto's backends are plain dicts; the server is threaded
_ORIGINAL: dict[str, Callable[..., Any]] = {}

ACTIVE, CREATING, UPDATING, DELETING = "ACTIVE", "CREATING", "UPDATING", "DELETING"
LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
AUTH_MODES = ("CONFIG_MAP", "API_AND_CONFIG_MAP", "API")  # EKS only ever moves rightwards
PRIMARY_SG_DESCRIPTION = ("EKS created security group applied to ENI that is attached to EKS Control "
                          "Plane master nodes, as well as any managed workloads.")
NODE_AMI_PLACEHOLDER = "ami-0eks0de000000000a"
ACCESS_ENTRY_TYPES = ("STANDARD", "EC2_LINUX", "EC2_WINDOWS", "FARGATE_LINUX", "EC2",
                      "HYBRID_LINUX", "HYPERPOD_LINUX")
ACCESS_POLICIES = ("AmazonEKSAdminPolicy", "AmazonEKSAdminViewPolicy", "AmazonEKSClusterAdminPolicy",
                   "AmazonEKSEditPolicy", "AmazonEKSViewPolicy", "AmazonEKSAutoNodePolicy",
                   "AmazonEKSBlockStoragePolicy", "AmazonEKSComputePolicy",
                   "AmazonEKSLoadBalancingPolicy", "AmazonEKSNetworkingPolicy",
                   "AmazonEKSHybridPolicy", "AmazonEKSSecretReaderPolicy")
RESERVED_USERNAME_PREFIXES = ("system:", "eks:", "aws:", "amazon:", "iam:")
TAINT_EFFECTS = ("NO_SCHEDULE", "NO_EXECUTE", "PREFER_NO_SCHEDULE")

# The URLs moto does not route for EKS (it answers 404 "Not yet implemented").
# `.+` for the principal ARN: boto3 percent-encodes its slashes, but the server
# path arrives decoded, so the ARN and any /access-policies/... tail share it.
EXTRA_URL_PATHS = (
    "{0}/clusters/(?P<name>[^/]+)/updates$",
    "{0}/clusters/(?P<name>[^/]+)/updates/(?P<updateId>[^/]+)$",
    "{0}/clusters/(?P<name>[^/]+)/node-groups/(?P<nodegroupName>[^/]+)/update-version$",
    "{0}/clusters/(?P<name>[^/]+)/access-entries$",
    "{0}/clusters/(?P<name>[^/]+)/access-entries/(?P<principalArn>.+)$",
)


def _exc(kind: str, message: str, **fields: Any) -> Exception:
    """One of moto's EKS errors (same JSON body and status real EKS answers with)."""
    from moto.eks import exceptions

    return getattr(exceptions, kind)(message=message, **fields)


def _ec2(backend: Any) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[backend.account_id][backend.region_name]


def _autoscaling(backend: Any) -> Any:
    from moto.autoscaling.models import autoscaling_backends

    return autoscaling_backends[backend.account_id][backend.region_name]


def _hex32() -> str:
    from moto.moto_api._internal import mock_random

    return mock_random.uuid4().hex.upper()


def _new_uuid() -> str:
    from moto.moto_api._internal import mock_random

    return str(mock_random.uuid4())


def _utcnow() -> Any:
    from moto.core.utils import utcnow

    return utcnow()


def _minor(version: Any) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)", str(version or ""))
    if not match:
        raise _exc("InvalidParameterException", f"Kubernetes version {version!r} is not valid")
    return int(match.group(1)), int(match.group(2))


def _release_version(version: str) -> str:
    # EKS-optimized AMI release versions look like 1.34.1-20250101.
    return f"{version}.0-20250101"


def _get_cluster(backend: Any, name: str) -> Any:
    from moto.eks.models import CLUSTER_NOT_FOUND_MSG

    cluster = backend.clusters.get(name)
    if cluster is None:
        raise _exc("ResourceNotFoundException", CLUSTER_NOT_FOUND_MSG.format(clusterName=name),
                   clusterName=name)
    return cluster


def _get_nodegroup(backend: Any, cluster_name: str, nodegroup_name: str) -> tuple[Any, Any]:
    from moto.eks.models import NODEGROUP_NOT_FOUND_MSG

    cluster = _get_cluster(backend, cluster_name)
    nodegroup = cluster.nodegroups.get(nodegroup_name)
    if nodegroup is None:
        raise _exc("ResourceNotFoundException",
                   NODEGROUP_NOT_FOUND_MSG.format(nodegroupName=nodegroup_name),
                   clusterName=cluster_name, nodegroupName=nodegroup_name)
    return cluster, nodegroup


def _pending_update(cluster: Any, nodegroup_name: str | None) -> str | None:
    for update_id, (owner, update) in _updates(cluster).items():
        if owner == nodegroup_name and update["status"] == "InProgress":
            return update_id
    return None


def _require_active_cluster(cluster: Any) -> None:
    # EKS refuses changes while the control plane is CREATING, UPDATING or DELETING.
    if cluster.status == UPDATING:
        raise _exc("ResourceInUseException", f"Cluster {cluster.name} currently has update "
                   f"{_pending_update(cluster, None)} in progress", clusterName=cluster.name)
    if cluster.status != ACTIVE:
        raise _exc("ResourceInUseException",
                   f"Cluster {cluster.name} is in {cluster.status} state", clusterName=cluster.name)


def _require_active_nodegroup(nodegroup: Any) -> None:
    if nodegroup.status != ACTIVE:
        raise _exc("ResourceInUseException",
                   "Nodegroup cannot be updated as it is currently not in Active State",
                   clusterName=nodegroup.cluster_name, nodegroupName=nodegroup.nodegroup_name)


def _updates(cluster: Any) -> dict[str, tuple[str | None, dict[str, Any]]]:
    if not hasattr(cluster, "_exaprov_updates"):
        cluster._exaprov_updates = {}
    return cluster._exaprov_updates  # type: ignore[no-any-return]


def _access_entries(cluster: Any) -> dict[str, _AccessEntry]:
    if not hasattr(cluster, "_exaprov_access_entries"):
        cluster._exaprov_access_entries = {}
    return cluster._exaprov_access_entries  # type: ignore[no-any-return]


def _new_update(kind: str, params: list[dict[str, str]]) -> dict[str, Any]:
    return {"id": _new_uuid(), "status": "Successful", "type": kind, "params": params,
            "createdAt": _utcnow(), "errors": []}


def _record_update(cluster: Any, update: dict[str, Any], nodegroup: Any = None) -> dict[str, Any]:
    """Keep the update for DescribeUpdate; with an update duration the target is UPDATING."""
    seconds = _durations["nodegroup_update" if nodegroup is not None else "cluster_update"]
    target = nodegroup if nodegroup is not None else cluster
    if seconds > 0:
        target.status = UPDATING
        target._exaprov_due = _now() + seconds
        update["status"] = "InProgress"
    else:
        update["status"] = "Successful"
    owner = nodegroup.nodegroup_name if nodegroup is not None else None
    _updates(cluster)[update["id"]] = (owner, update)
    return update


def _finish_updates(cluster: Any, owner: str | None) -> None:
    for update_owner, update in _updates(cluster).values():
        if update_owner == owner and update["status"] == "InProgress":
            update["status"] = "Successful"


def _settle(backend: Any) -> None:
    """Apply every CREATING/UPDATING/DELETING transition whose time has come (lazily, no threads)."""
    now = _now()
    for name, cluster in list(backend.clusters.items()):
        for ng_name, nodegroup in list(cluster.nodegroups.items()):
            due = getattr(nodegroup, "_exaprov_due", None)
            if due is None or now < due:
                continue
            nodegroup._exaprov_due = None
            if nodegroup.status == DELETING:
                cluster.nodegroups.pop(ng_name, None)
                cluster.nodegroup_count -= 1
                _release_nodegroup(backend, nodegroup)
            else:
                nodegroup.status = ACTIVE
                _finish_updates(cluster, ng_name)
        due = getattr(cluster, "_exaprov_due", None)
        if due is None or now < due:
            continue
        cluster._exaprov_due = None
        if cluster.status == DELETING:
            backend.clusters.pop(name, None)
            backend.cluster_count -= 1
            _release_cluster(backend, cluster)
        else:
            cluster.status = ACTIVE
            _finish_updates(cluster, None)


def _settled(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _eks_lock:
            _settle(self)
            return method(self, *args, **kwargs)

    wrapper._exaprov_settled = True  # type: ignore[attr-defined]
    return wrapper


# ---- clusters

def _validated_vpc_config(backend: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """resourcesVpcConfig as EKS checks and reports it: subnets in >= 2 AZs of one VPC."""
    from moto.ec2.exceptions import InvalidSubnetIdError

    ec2 = _ec2(backend)
    subnet_ids = list(config.get("subnetIds") or [])
    if not subnet_ids:
        raise _exc("InvalidParameterException", "Subnets are required")
    subnets = []
    for subnet_id in subnet_ids:
        try:
            subnets.append(ec2.get_subnet(subnet_id))
        except InvalidSubnetIdError:
            raise _exc("InvalidParameterException",
                       f"The subnet ID '{subnet_id}' does not exist") from None
    vpc_ids = {subnet.vpc_id for subnet in subnets}
    if len(vpc_ids) > 1:
        raise _exc("InvalidParameterException", "Subnets specified must belong to the same VPC")
    if len({subnet.availability_zone for subnet in subnets}) < 2:
        raise _exc("InvalidParameterException",
                   "Subnets specified must be in at least two different AZs")
    vpc_id = vpc_ids.pop()
    group_ids = list(config.get("securityGroupIds") or [])
    for group_id in group_ids:
        group = ec2.get_security_group_from_id(group_id)
        if group is None or group.vpc_id != vpc_id:
            raise _exc("InvalidParameterException",
                       f"The security group '{group_id}' does not exist in VPC '{vpc_id}'")
    public = bool(config.get("endpointPublicAccess", True))
    private = bool(config.get("endpointPrivateAccess", False))
    if not public and not private:
        raise _exc("InvalidParameterException",
                   "Private and public endpoint access cannot both be disabled")
    cidrs = list(config.get("publicAccessCidrs") or ["0.0.0.0/0"])
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            raise _exc("InvalidParameterException",
                       f"The following CIDRs are invalid in publicAccessCidrs: [{cidr}]") from None
    return {"subnetIds": subnet_ids, "securityGroupIds": group_ids, "vpcId": vpc_id,
            "endpointPublicAccess": public, "endpointPrivateAccess": private,
            "publicAccessCidrs": cidrs}


def _apply_logging(enabled: set[str], logging: Mapping[str, Any] | None) -> set[str]:
    result = set(enabled)
    for entry in (logging or {}).get("clusterLogging") or []:
        types = list(entry.get("types") or [])
        unknown = [t for t in types if t not in LOG_TYPES]
        if unknown:
            raise _exc("InvalidParameterException", f"Unsupported log types: {unknown}")
        if entry.get("enabled"):
            result |= set(types)
        else:
            result -= set(types)
    return result


def _logging_view(enabled: set[str]) -> dict[str, Any]:
    # EKS reports one group of enabled and one of disabled log types.
    groups = []
    on = [t for t in LOG_TYPES if t in enabled]
    off = [t for t in LOG_TYPES if t not in enabled]
    if on:
        groups.append({"types": on, "enabled": True})
    if off:
        groups.append({"types": off, "enabled": False})
    return {"clusterLogging": groups}


def _create_primary_sg(backend: Any, cluster: Any) -> str:
    """The cluster security group EKS creates in the cluster's VPC (`eks-cluster-sg-<name>-<n>`)."""
    from moto.moto_api._internal import mock_random

    ec2 = _ec2(backend)
    vpc_id = cluster.resources_vpc_config["vpcId"]
    sg_name = f"eks-cluster-sg-{cluster.name}-{mock_random.randint(10**9, 10**10 - 1)}"
    tags = {"Name": sg_name, f"kubernetes.io/cluster/{cluster.name}": "owned",
            "aws:eks:cluster-name": cluster.name}  # moto's backend accepts aws: keys, as EKS sets them
    group = ec2.create_security_group(sg_name, PRIMARY_SG_DESCRIPTION, vpc_id=vpc_id, tags=tags)
    # EKS's rules: all traffic from itself in, everything out (moto adds the egress rule).
    ec2.authorize_security_group_ingress(group.id, "-1", None, None, [],
                                         source_groups=[{"GroupId": group.id}], vpc_id=vpc_id)
    return str(group.id)


def _release_cluster(backend: Any, cluster: Any) -> None:
    # Deleting a cluster deletes the security group EKS created for it.
    group_id = cluster.resources_vpc_config.get("clusterSecurityGroupId")
    if group_id:
        try:
            _ec2(backend).delete_security_group(group_id=group_id)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _create_cluster(self: Any, name: str, role_arn: str, resources_vpc_config: Any = None,
                    access_config: Mapping[str, Any] | None = None, creator_arn: str | None = None,
                    **kwargs: Any) -> Any:
    existing = self.clusters.get(name)
    token = kwargs.get("client_request_token")
    if existing is not None:
        if token and existing.client_request_token == token:
            return existing  # EKS: a retried create with the same clientRequestToken is idempotent
        return _ORIGINAL["create_cluster"](self, name=name, role_arn=role_arn,
                                           resources_vpc_config=resources_vpc_config, **kwargs)
    from moto.eks.utils import validate_role_arn

    validate_role_arn(role_arn)
    vpc_config = _validated_vpc_config(self, resources_vpc_config or {})
    access = dict(access_config or {})
    mode = access.get("authenticationMode") or "CONFIG_MAP"  # the API's default (console: API_AND_...)
    if mode not in AUTH_MODES:
        raise _exc("InvalidParameterException", f"Unsupported authentication mode {mode}")
    bootstrap = bool(access.get("bootstrapClusterCreatorAdminPermissions", True))
    if mode == "CONFIG_MAP" and not bootstrap:
        raise _exc("InvalidParameterException", "bootstrapClusterCreatorAdminPermissions must be "
                   "true when authenticationMode is CONFIG_MAP")
    enabled_logs = _apply_logging(set(), kwargs.get("logging"))
    cluster = _ORIGINAL["create_cluster"](self, name=name, role_arn=role_arn,
                                          resources_vpc_config=vpc_config, **kwargs)
    region = self.region_name
    # Every cluster gets its own issuer and endpoint (moto shares one per process).
    cluster.identity = {"oidc": {"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{_hex32()}"}}
    cluster.endpoint = f"https://{_hex32()}.gr7.{region}.eks.amazonaws.com"
    cluster.logging = _logging_view(enabled_logs)
    cluster._exaprov_log_types = enabled_logs
    cluster.access_config = {"authenticationMode": mode,
                             "bootstrapClusterCreatorAdminPermissions": bootstrap}
    _updates(cluster)
    vpc_config["clusterSecurityGroupId"] = _create_primary_sg(self, cluster)
    cluster.resources_vpc_config = vpc_config
    seconds = _durations["cluster_create"]
    if seconds > 0:
        cluster.status = CREATING
        cluster._exaprov_due = _now() + seconds
    if bootstrap and mode != "CONFIG_MAP" and creator_arn:
        # The creator gets an access entry with cluster admin, visible in the API.
        entry = _AccessEntry(self, cluster, creator_arn, "STANDARD", [], None, {})
        entry.policies[_policy_arn(self, "AmazonEKSClusterAdminPolicy")] = _associated_policy(
            _policy_arn(self, "AmazonEKSClusterAdminPolicy"), {"type": "cluster", "namespaces": []})
        _access_entries(cluster)[creator_arn] = entry
    return cluster


def _delete_cluster(self: Any, name: str) -> Any:
    from moto.eks.models import validate_safe_to_delete

    cluster = _get_cluster(self, name)
    if cluster.status == DELETING:
        raise _exc("ResourceInUseException", f"Cluster {name} is already in DELETING status",
                   clusterName=name)
    if cluster.status == UPDATING:
        raise _exc("ResourceInUseException", f"Cannot delete because cluster {name} currently has "
                   f"update {_pending_update(cluster, None)} in progress", clusterName=name)
    validate_safe_to_delete(cluster)  # node groups attached (even DELETING ones): ResourceInUse
    seconds = _durations["cluster_delete"]
    if seconds > 0:
        cluster.status = DELETING
        cluster._exaprov_due = _now() + seconds
        return cluster
    result = _ORIGINAL["delete_cluster"](self, name=name)
    _release_cluster(self, result)
    result.status = DELETING  # what DeleteCluster answers, even when it is gone at once
    return result


def _update_cluster_config(self: Any, name: str, resources_vpc_config: Any = None,
                           logging: Any = None, client_request_token: str | None = None,
                           kubernetes_network_config: Any = None, remote_network_config: Any = None,
                           access_config: Any = None, **_: Any) -> dict[str, Any]:
    """UpdateClusterConfig as EKS does it: one kind of change per call, merged, refused if a no-op."""
    cluster = _get_cluster(self, name)
    kinds = [kind for kind, value in (("resourcesVpcConfig", resources_vpc_config),
                                      ("logging", logging), ("accessConfig", access_config),
                                      ("kubernetesNetworkConfig", kubernetes_network_config),
                                      ("remoteNetworkConfig", remote_network_config)) if value]
    if len(kinds) != 1:
        raise _exc("InvalidParameterException", "Only one type of update can be allowed."
                   if kinds else "No changes needed for the provided cluster configuration")
    _require_active_cluster(cluster)
    if resources_vpc_config:
        update = _update_vpc_config(self, cluster, resources_vpc_config)
    elif logging:
        enabled = _apply_logging(getattr(cluster, "_exaprov_log_types", set()), logging)
        if enabled == getattr(cluster, "_exaprov_log_types", set()):
            raise _exc("InvalidParameterException", "No changes needed for the logging config provided")
        cluster._exaprov_log_types = enabled
        cluster.logging = _logging_view(enabled)
        update = _new_update("LoggingUpdate", [{"type": "ClusterLogging",
                                                "value": json.dumps(cluster.logging)}])
    elif access_config:
        current = cluster.access_config["authenticationMode"]
        wanted = access_config.get("authenticationMode") or current
        if "bootstrapClusterCreatorAdminPermissions" in access_config:
            raise _exc("InvalidParameterException",
                       "bootstrapClusterCreatorAdminPermissions can only be set at cluster creation")
        if wanted not in AUTH_MODES or AUTH_MODES.index(wanted) < AUTH_MODES.index(current):
            raise _exc("InvalidParameterException",
                       f"Unsupported authentication mode update from {current} to {wanted}")
        if wanted == current:
            raise _exc("InvalidParameterException",
                       f"Cluster already has authentication mode {current}")
        cluster.access_config = {**cluster.access_config, "authenticationMode": wanted}
        update = _new_update("AccessConfigUpdate", [{"type": "AuthenticationMode", "value": wanted}])
    else:
        if kubernetes_network_config:
            cluster.kubernetes_network_config = kubernetes_network_config
        if remote_network_config:
            cluster.remote_network_config = remote_network_config
        update = _new_update("ConfigUpdate", [])
    return _record_update(cluster, update)


def _update_vpc_config(backend: Any, cluster: Any, requested: Mapping[str, Any]) -> dict[str, Any]:
    current = cluster.resources_vpc_config
    merged = {**current, **{k: v for k, v in requested.items() if v is not None}}
    if "subnetIds" in requested or "securityGroupIds" in requested:
        checked = _validated_vpc_config(backend, merged)
        if checked["vpcId"] != current["vpcId"]:
            raise _exc("InvalidParameterException", "Subnets must be in the cluster's VPC")
        merged.update(checked, clusterSecurityGroupId=current["clusterSecurityGroupId"])
    merged["publicAccessCidrs"] = list(merged.get("publicAccessCidrs") or ["0.0.0.0/0"])
    for cidr in merged["publicAccessCidrs"]:
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            raise _exc("InvalidParameterException",
                       f"The following CIDRs are invalid in publicAccessCidrs: [{cidr}]") from None
    public, private = bool(merged["endpointPublicAccess"]), bool(merged["endpointPrivateAccess"])
    if not public and not private:
        raise _exc("InvalidParameterException",
                   "Private and public endpoint access cannot both be disabled")
    keys = ("endpointPublicAccess", "endpointPrivateAccess", "publicAccessCidrs", "subnetIds",
            "securityGroupIds")
    if all(_same(merged.get(k), current.get(k)) for k in keys):
        raise _exc("InvalidParameterException",
                   f"Cluster is already at the desired configuration with endpointPrivateAccess: "
                   f"{str(private).lower()} , endpointPublicAccess: {str(public).lower()}, and Public "
                   f"Endpoint Restrictions: {', '.join(merged['publicAccessCidrs'])}")
    cluster.resources_vpc_config = merged
    if "subnetIds" in requested or "securityGroupIds" in requested:
        return _new_update("VpcConfigUpdate", [
            {"type": "Subnets", "value": json.dumps(merged["subnetIds"])},
            {"type": "SecurityGroups", "value": json.dumps(merged["securityGroupIds"])}])
    return _new_update("EndpointAccessUpdate", [
        {"type": "EndpointPublicAccess", "value": str(public).lower()},
        {"type": "EndpointPrivateAccess", "value": str(private).lower()},
        {"type": "PublicAccessCidrs", "value": json.dumps(merged["publicAccessCidrs"])}])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return sorted(map(str, a)) == sorted(map(str, b))
    return bool(a == b)


def _update_cluster_version(self: Any, name: str, version: str,
                            client_request_token: str | None = None, force: bool = False) -> dict[str, Any]:
    """EKS upgrades the control plane one minor version at a time, nodes first caught up."""
    cluster = _get_cluster(self, name)
    _require_active_cluster(cluster)
    (major, live), (new_major, wanted) = _minor(cluster.version), _minor(version)
    if new_major != major or wanted != live + 1:
        raise _exc("InvalidParameterException",
                   f"Unsupported Kubernetes minor version update from {cluster.version} to {version}")
    behind = sorted(ng.nodegroup_name for ng in cluster.nodegroups.values()
                    if _minor(ng.version) != (major, live))
    if behind:
        raise _exc("InvalidRequestException", f"Nodegroups {', '.join(behind)} must be updated to "
                   f"match cluster version {cluster.version} before updating cluster version")
    cluster.version = str(version)
    cluster.platformVersion = "eks.1"
    update = _new_update("VersionUpdate", [{"type": "Version", "value": str(version)},
                                           {"type": "PlatformVersion", "value": "eks.1"}])
    return _record_update(cluster, update)


def _describe_update(self: Any, name: str, update_id: str,
                     nodegroup_name: str | None = None) -> dict[str, Any]:
    cluster = _get_cluster(self, name)
    found = _updates(cluster).get(update_id)
    if found is None or found[0] != (nodegroup_name or None):
        raise _exc("ResourceNotFoundException", f"No update found for ID: {update_id}.",
                   clusterName=name)
    return found[1]


def _list_updates(self: Any, name: str, nodegroup_name: str | None = None) -> list[str]:
    cluster = _get_cluster(self, name)
    if nodegroup_name:
        _get_nodegroup(self, name, nodegroup_name)
    return [uid for uid, (owner, _) in _updates(cluster).items() if owner == (nodegroup_name or None)]


# ---- node groups

def _scaling(requested: Mapping[str, Any] | None) -> dict[str, int]:
    requested = dict(requested or {})
    low = int(requested.get("minSize", 1))
    high = int(requested.get("maxSize", max(low, 2)))
    desired = int(requested.get("desiredSize", min(max(2, low), high)))
    return {"minSize": low, "maxSize": high, "desiredSize": desired}


def _validate_scaling(config: Mapping[str, int]) -> None:
    low, high, desired = config["minSize"], config["maxSize"], config["desiredSize"]
    if high < 1:
        raise _exc("InvalidParameterException", "Maximum capacity should be greater than or equal to 1")
    if low < 0 or desired < 0:
        raise _exc("InvalidParameterException", "Capacity should be greater than or equal to 0")
    if low > desired:
        raise _exc("InvalidParameterException",
                   f"Minimum capacity {low} can't be greater than desired size {desired}")
    if desired > high:
        raise _exc("InvalidParameterException",
                   f"Desired capacity {desired} can't be greater than max size {high}")


def _validate_taints(taints: list[Mapping[str, Any]]) -> None:
    for taint in taints:
        if not taint.get("key") or taint.get("effect") not in TAINT_EFFECTS:
            raise _exc("InvalidParameterException", f"Invalid taint {dict(taint)}: a key and an "
                       f"effect of {', '.join(TAINT_EFFECTS)} are required")


def _user_launch_template(backend: Any, spec: Mapping[str, Any]) -> tuple[Any, str]:
    """The node group's own launch template and version (its default when none is given)."""
    ec2 = _ec2(backend)
    if ("id" in spec) == ("name" in spec):
        raise _exc("InvalidParameterException", "You must specify either the launch template ID or "
                   "the launch template name in the request, but not both.")
    try:
        template = ec2.get_launch_template(spec["id"]) if "id" in spec else \
            ec2.get_launch_template_by_name(spec["name"])
    except Exception:  # noqa: BLE001 - moto's not-found errors
        raise _exc("InvalidParameterException", f"Launch template {spec.get('id') or spec.get('name')} "
                   "does not exist") from None
    version = spec.get("version")
    if version is None:
        return template, str(template.default_version_number)
    if not str(version).isdigit() or not 1 <= int(version) <= template.latest_version_number:
        # EKS wants a version number, not $Latest / $Default.
        raise _exc("InvalidParameterException",
                   f"Launch template {template.name} version {version} does not exist")
    return template, str(int(version))


def _node_launch_data(backend: Any, nodegroup: Any) -> dict[str, Any]:
    """What EKS puts in its own copy of the launch template: the user's, plus AMI and type."""
    data: dict[str, Any] = {}
    spec = nodegroup.launch_template
    if spec:
        template = _ec2(backend).get_launch_template(spec["id"])
        data = dict(template.get_version(spec["version"]).data)
    if not data.get("ImageId"):
        data["ImageId"] = next(iter(_ec2(backend).amis), NODE_AMI_PLACEHOLDER)
    if nodegroup.instance_types:
        data["InstanceType"] = nodegroup.instance_types[0]
    data.setdefault("InstanceType", "t3.medium")
    return data


def _create_node_asg(backend: Any, cluster: Any, nodegroup: Any) -> None:
    """The Auto Scaling group (and launch template `eks-<uuid>`) EKS creates for a node group."""
    ec2, autoscaling = _ec2(backend), _autoscaling(backend)
    owner_tags = {"eks:cluster-name": cluster.name, "eks:nodegroup-name": nodegroup.nodegroup_name}
    template = ec2.create_launch_template(f"eks-{nodegroup.uuid}", "", _node_launch_data(backend, nodegroup),
                                          {"launch-template": owner_tags})
    asg_tags = {**owner_tags, f"kubernetes.io/cluster/{cluster.name}": "owned",
                "k8s.io/cluster-autoscaler/enabled": "true",
                f"k8s.io/cluster-autoscaler/{cluster.name}": "owned"}
    asg_name = f"eks-{nodegroup.nodegroup_name}-{nodegroup.uuid}"
    scaling = nodegroup.scaling_config
    autoscaling.create_auto_scaling_group(
        name=asg_name, availability_zones=[], desired_capacity=scaling["desiredSize"],
        max_size=scaling["maxSize"], min_size=scaling["minSize"], launch_config_name=None,
        launch_template={"LaunchTemplateId": template.id, "Version": "1"},
        vpc_zone_identifier=",".join(nodegroup.subnets), default_cooldown=None,
        health_check_period=None, health_check_type="EC2", load_balancers=[], target_group_arns=[],
        placement_group=None, termination_policies=[],
        tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in asg_tags.items()])
    nodegroup._exaprov_launch_template_id = template.id
    nodegroup._exaprov_asg = asg_name


def _release_nodegroup(backend: Any, nodegroup: Any) -> None:
    # Deleting a node group deletes its Auto Scaling group (terminating its nodes) and template.
    asg_name = getattr(nodegroup, "_exaprov_asg", None)
    if asg_name:
        try:
            _autoscaling(backend).delete_auto_scaling_group(asg_name)
        except Exception:  # noqa: BLE001 - already gone
            pass
    template_id = getattr(nodegroup, "_exaprov_launch_template_id", None)
    if template_id:
        try:
            _ec2(backend).delete_launch_template(None, template_id)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _create_nodegroup(self: Any, cluster_name: str, node_role: str, nodegroup_name: str,
                      subnets: list[str], **kwargs: Any) -> Any:
    cluster = self.clusters.get(cluster_name)
    token = kwargs.get("client_request_token")
    existing = cluster.nodegroups.get(nodegroup_name) if cluster is not None else None
    if existing is not None and token and existing.client_request_token == token:
        return existing  # idempotent retry
    if cluster is None or existing is not None or not cluster.is_active:
        # moto's own answers: no such cluster, node group exists, cluster not ACTIVE
        # (InvalidRequestException "Cluster '<name>' is not in ACTIVE status", as EKS).
        return _ORIGINAL["create_nodegroup"](self, cluster_name=cluster_name, node_role=node_role,
                                             nodegroup_name=nodegroup_name, subnets=subnets, **kwargs)
    from moto.ec2.exceptions import InvalidSubnetIdError

    ec2 = _ec2(self)
    if not subnets:
        raise _exc("InvalidParameterException", "Subnets are required")
    for subnet_id in subnets:
        try:
            subnet = ec2.get_subnet(subnet_id)
        except InvalidSubnetIdError:
            raise _exc("InvalidParameterException",
                       f"The subnet ID '{subnet_id}' does not exist") from None
        if subnet.vpc_id != cluster.resources_vpc_config.get("vpcId"):
            raise _exc("InvalidParameterException",
                       f"Subnet {subnet_id} is not in the same VPC as the cluster")
    scaling = _scaling(kwargs.get("scaling_config"))
    _validate_scaling(scaling)
    _validate_taints(kwargs.get("taints") or [])
    version = kwargs.get("version") or cluster.version
    if _minor(version) > _minor(cluster.version):
        raise _exc("InvalidParameterException", f"Requested Kubernetes version {version} is newer "
                   f"than the cluster's version {cluster.version}")
    lt_spec = kwargs.get("launch_template")
    launch_template = None
    if lt_spec:
        template, lt_version = _user_launch_template(self, lt_spec)
        launch_template = {"name": template.name, "id": template.id, "version": lt_version}
    kwargs.update(scaling_config=dict(scaling), version=version,
                  launch_template=dict(launch_template) if launch_template else None)
    nodegroup = _ORIGINAL["create_nodegroup"](self, cluster_name=cluster_name, node_role=node_role,
                                              nodegroup_name=nodegroup_name, subnets=subnets, **kwargs)
    nodegroup.scaling_config = scaling
    nodegroup.launch_template = launch_template
    nodegroup.release_version = kwargs.get("release_version") or _release_version(version)
    remote_access = kwargs.get("remote_access")
    nodegroup.remote_access = remote_access or None  # moto invents an SSH key when none was asked
    nodegroup.resources = {"autoScalingGroups": [{"name": f"eks-{nodegroup_name}-{nodegroup.uuid}"}]}
    if remote_access:
        nodegroup.resources["remoteAccessSecurityGroup"] = \
            "sg-" + _hex32()[:17].lower()
    if launch_template:  # the launch template carries disk and (optionally) instance type
        nodegroup.disk_size = kwargs.get("disk_size")
        nodegroup.instance_types = kwargs.get("instance_types")
    nodegroup.labels = dict(nodegroup.labels or {})
    nodegroup.taints = list(nodegroup.taints or [])
    _create_node_asg(self, cluster, nodegroup)
    seconds = _durations["nodegroup_create"]
    if seconds > 0:
        nodegroup.status = CREATING
        nodegroup._exaprov_due = _now() + seconds
    if cluster.access_config["authenticationMode"] != "CONFIG_MAP" \
            and node_role not in _access_entries(cluster):
        # EKS maps a managed node group's role into the cluster with an EC2_LINUX access entry.
        _access_entries(cluster)[node_role] = _AccessEntry(self, cluster, node_role, "EC2_LINUX",
                                                           [], None, {})
    return nodegroup


def _delete_nodegroup(self: Any, cluster_name: str, nodegroup_name: str) -> Any:
    cluster, nodegroup = _get_nodegroup(self, cluster_name, nodegroup_name)
    if nodegroup.status == DELETING:
        raise _exc("ResourceInUseException", f"Nodegroup {nodegroup_name} is already in DELETING "
                   "status", clusterName=cluster_name, nodegroupName=nodegroup_name)
    seconds = _durations["nodegroup_delete"]
    if seconds > 0:
        nodegroup.status = DELETING
        nodegroup._exaprov_due = _now() + seconds
        return nodegroup
    result = _ORIGINAL["delete_nodegroup"](self, cluster_name=cluster_name,
                                           nodegroup_name=nodegroup_name)
    _release_nodegroup(self, result)
    result.status = DELETING
    return result


def _update_nodegroup_config(self: Any, cluster_name: str, nodegroup_name: str, labels: Any = None,
                             taints: Any = None, scaling_config: Any = None, update_config: Any = None,
                             node_repair_config: Any = None, client_request_token: str | None = None
                             ) -> dict[str, Any]:
    cluster, nodegroup = _get_nodegroup(self, cluster_name, nodegroup_name)
    _require_active_nodegroup(nodegroup)
    if scaling_config:
        _validate_scaling({**nodegroup.scaling_config, **scaling_config})
    if taints:
        _validate_taints(taints.get("addOrUpdateTaints") or [])
    if labels and set(labels.get("addOrUpdateLabels") or {}) & set(labels.get("removeLabels") or []):
        raise _exc("InvalidParameterException", "The same label key cannot be both added and removed")
    update = _ORIGINAL["update_nodegroup_config"](
        self, cluster_name=cluster_name, nodegroup_name=nodegroup_name, labels=labels, taints=taints,
        scaling_config=scaling_config, update_config=update_config,
        node_repair_config=node_repair_config, client_request_token=client_request_token)
    if scaling_config and getattr(nodegroup, "_exaprov_asg", None):
        # EKS applies the new sizes to the node group's Auto Scaling group.
        scaling = nodegroup.scaling_config
        _autoscaling(self).update_auto_scaling_group(
            name=nodegroup._exaprov_asg, availability_zones=[], desired_capacity=scaling["desiredSize"],
            max_size=scaling["maxSize"], min_size=scaling["minSize"], launch_config_name=None,
            launch_template={}, vpc_zone_identifier=None, health_check_period=None,
            health_check_type=None)
    return _record_update(cluster, update, nodegroup)


def _update_nodegroup_version(self: Any, cluster_name: str, nodegroup_name: str,
                              version: str | None = None, release_version: str | None = None,
                              launch_template: Mapping[str, Any] | None = None, force: bool = False,
                              client_request_token: str | None = None) -> dict[str, Any]:
    """UpdateNodegroupVersion: a new launch template version and/or Kubernetes version."""
    cluster, nodegroup = _get_nodegroup(self, cluster_name, nodegroup_name)
    _require_active_cluster(cluster)
    _require_active_nodegroup(nodegroup)
    params: list[dict[str, str]] = []
    current = nodegroup.launch_template
    new_lt_version = None
    if launch_template:
        if not current:
            raise _exc("InvalidParameterException", "A launch template can't be specified: the "
                       "nodegroup was not created with a launch template")
        if launch_template.get("id", current["id"]) != current["id"] or \
                launch_template.get("name", current["name"]) != current["name"]:
            raise _exc("InvalidParameterException", "The launch template must be the one the "
                       f"nodegroup uses ({current['name']}, {current['id']})")
        _, new_lt_version = _user_launch_template(self, {"id": current["id"],
                                                         **({"version": launch_template["version"]}
                                                            if launch_template.get("version") else {})})
    if version:
        lt_data = {}
        if current:
            template = _ec2(self).get_launch_template(current["id"])
            lt_data = template.get_version(new_lt_version or current["version"]).data
        if lt_data.get("ImageId"):
            raise _exc("InvalidParameterException", "You cannot specify a Kubernetes version for a "
                       "nodegroup whose launch template specifies a custom AMI")
        if _minor(version) > _minor(cluster.version):
            raise _exc("InvalidParameterException", f"Requested Kubernetes version {version} is "
                       f"newer than the cluster's version {cluster.version}")
        if _minor(version) < _minor(nodegroup.version):
            raise _exc("InvalidParameterException", f"Requested Kubernetes version {version} is "
                       f"older than the nodegroup's version {nodegroup.version}")
    if new_lt_version is not None:
        nodegroup.launch_template = {**current, "version": new_lt_version}
        params += [{"type": "LaunchTemplateName", "value": current["name"]},
                   {"type": "LaunchTemplateVersion", "value": new_lt_version}]
    if version:
        nodegroup.version = str(version)
        params.append({"type": "Version", "value": str(version)})
    nodegroup.release_version = release_version or _release_version(nodegroup.version)
    params.append({"type": "ReleaseVersion", "value": nodegroup.release_version})
    template_id = getattr(nodegroup, "_exaprov_launch_template_id", None)
    if template_id:
        # EKS rolls the nodes onto a new version of its own copy of the launch template.
        template = _ec2(self).get_launch_template(template_id)
        new = template.create_version(_node_launch_data(self, nodegroup), "")
        _autoscaling(self).update_auto_scaling_group(
            name=nodegroup._exaprov_asg, availability_zones=[], desired_capacity=None, max_size=None,
            min_size=None, launch_config_name=None,
            launch_template={"LaunchTemplateId": template_id, "Version": str(new.number)},
            vpc_zone_identifier=None, health_check_period=None, health_check_type=None)
    nodegroup.modified_at = _utcnow()
    return _record_update(cluster, _new_update("VersionUpdate", params), nodegroup)


def _list_nodegroups(self: Any, cluster_name: str, max_results: int, next_token: str | None) -> Any:
    _get_cluster(self, cluster_name)  # moto raises a KeyError (HTTP 500) for a missing cluster
    return _ORIGINAL["list_nodegroups"](self, cluster_name=cluster_name, max_results=max_results,
                                        next_token=next_token)


def _tagged(self: Any, arn: str) -> Any:
    """Clusters and node groups both take tags in EKS (moto: clusters only)."""
    for cluster in self.clusters.values():
        if cluster.arn == arn:
            return cluster
        for nodegroup in cluster.nodegroups.values():
            if nodegroup.arn == arn:
                return nodegroup
    raise _exc("ResourceNotFoundException", f"Resource {arn} was not found")


def _tag_resource(self: Any, resource_arn: str, tags: dict[str, str]) -> None:
    _tagged(self, resource_arn).tags.update(tags)


def _untag_resource(self: Any, resource_arn: str, tag_keys: Any) -> None:
    resource = _tagged(self, resource_arn)
    for key in [tag_keys] if isinstance(tag_keys, str) else tag_keys or []:
        resource.tags.pop(key, None)


def _list_tags_for_resource(self: Any, resource_arn: str) -> dict[str, str]:
    return dict(_tagged(self, resource_arn).tags)


# ---- access entries

def _policy_arn(backend: Any, name: str) -> str:
    return f"arn:{backend.partition}:eks::aws:cluster-access-policy/{name}"


def _associated_policy(policy_arn: str, scope: Mapping[str, Any]) -> dict[str, Any]:
    now = _utcnow()
    return {"policyArn": policy_arn, "accessScope": {"type": scope.get("type"),
                                                     "namespaces": list(scope.get("namespaces") or [])},
            "associatedAt": now, "modifiedAt": now}


class _AccessEntry:
    """An EKS access entry; attribute names are the API's, snake_cased, for moto's serializer."""

    def __init__(self, backend: Any, cluster: Any, principal_arn: str, kind: str,
                 kubernetes_groups: list[str], username: str | None, tags: dict[str, str]) -> None:
        match = re.fullmatch(r"arn:[^:]+:(?:iam|sts)::(\d+):(role|user)/(?:.*/)?([^/]+)", principal_arn)
        account, what, name = match.groups() if match else (backend.account_id, "role", principal_arn)
        self.cluster_name = cluster.name
        self.principal_arn = principal_arn
        self.type = kind
        if kind == "STANDARD":
            self.kubernetes_groups = list(kubernetes_groups)
            self.username = username or (
                f"arn:{backend.partition}:sts::{account}:assumed-role/{name}/{{{{SessionName}}}}"
                if what == "role" else principal_arn)
        else:  # node entries: EKS fixes the user and group
            self.kubernetes_groups = ["system:nodes"]
            self.username = "system:node:{{EC2PrivateDNSName}}"
        self.access_entry_arn = (f"arn:{backend.partition}:eks:{backend.region_name}:{backend.account_id}"
                                 f":access-entry/{cluster.name}/{what}/{account}/{name}/{_new_uuid()}")
        self.created_at = self.modified_at = _utcnow()
        self.tags = dict(tags)
        self.policies: dict[str, dict[str, Any]] = {}


def _require_api_auth(cluster: Any) -> None:
    if cluster.access_config["authenticationMode"] == "CONFIG_MAP":
        raise _exc("InvalidRequestException", "The cluster's authentication mode must be set to one "
                   "of [API, API_AND_CONFIG_MAP] to perform this operation.", clusterName=cluster.name)


def _get_access_entry(backend: Any, cluster_name: str, principal_arn: str) -> tuple[Any, _AccessEntry]:
    cluster = _get_cluster(backend, cluster_name)
    _require_api_auth(cluster)
    entry = _access_entries(cluster).get(principal_arn)
    if entry is None:
        raise _exc("ResourceNotFoundException", f"The specified principalArn {principal_arn} could not "
                   "be found. You can view your available access entries with 'list-access-entries'.",
                   clusterName=cluster_name)
    return cluster, entry


def _principal_exists(backend: Any, principal_arn: str) -> bool:
    match = re.fullmatch(r"arn:[^:]+:iam::(\d+):(role|user)/(?:.*/)?([^/]+)", principal_arn)
    if not match:
        return False
    account, what, name = match.groups()
    if account != backend.account_id:
        return True  # another account's principal: EKS cannot look, nor can we
    from moto.iam.models import iam_backends

    iam = iam_backends[account][backend.partition]
    try:
        if what == "role":
            iam.get_role_by_arn(principal_arn)
        else:
            iam.get_user(name)
    except Exception:  # noqa: BLE001 - moto's NotFound / NoSuchEntity
        return False
    return True


def _validate_entry_identity(kind: str, groups: list[str], username: str | None) -> None:
    if kind != "STANDARD" and (groups or username):
        raise _exc("InvalidParameterException",
                   f"kubernetesGroups and username cannot be specified for type {kind}")
    for group in groups:
        if group.startswith("system:"):
            raise _exc("InvalidParameterException",
                       f"The kubernetes group name {group} is invalid, it cannot start with system:")
    if username and username.startswith(RESERVED_USERNAME_PREFIXES):
        raise _exc("InvalidParameterException", f"The username {username} is invalid, it cannot start "
                   f"with any of {', '.join(RESERVED_USERNAME_PREFIXES)}")


def _create_access_entry(self: Any, cluster_name: str, principal_arn: str,
                         kubernetes_groups: list[str] | None = None, tags: dict[str, str] | None = None,
                         username: str | None = None, type: str | None = None) -> _AccessEntry:  # noqa: A002
    cluster = _get_cluster(self, cluster_name)
    _require_api_auth(cluster)
    kind = type or "STANDARD"
    if kind not in ACCESS_ENTRY_TYPES:
        raise _exc("InvalidParameterException", f"Unsupported access entry type {kind}")
    if principal_arn in _access_entries(cluster):
        raise _exc("ResourceInUseException",
                   "The specified access entry resource is already in use on this cluster.",
                   clusterName=cluster_name)
    if not _principal_exists(self, principal_arn) or (kind != "STANDARD" and ":role/" not in principal_arn):
        raise _exc("InvalidParameterException",
                   f"The specified principalArn is invalid: invalid principal {principal_arn}")
    groups = list(kubernetes_groups or [])
    _validate_entry_identity(kind, groups, username)
    entry = _AccessEntry(self, cluster, principal_arn, kind, groups, username, tags or {})
    _access_entries(cluster)[principal_arn] = entry
    return entry


def _describe_access_entry(self: Any, cluster_name: str, principal_arn: str) -> _AccessEntry:
    return _get_access_entry(self, cluster_name, principal_arn)[1]


def _update_access_entry(self: Any, cluster_name: str, principal_arn: str,
                         kubernetes_groups: list[str] | None = None,
                         username: str | None = None) -> _AccessEntry:
    _, entry = _get_access_entry(self, cluster_name, principal_arn)
    _validate_entry_identity(entry.type, list(kubernetes_groups or []), username)
    if kubernetes_groups is not None:
        entry.kubernetes_groups = list(kubernetes_groups)
    if username:
        entry.username = username
    entry.modified_at = _utcnow()
    return entry


def _delete_access_entry(self: Any, cluster_name: str, principal_arn: str) -> None:
    cluster, _ = _get_access_entry(self, cluster_name, principal_arn)
    del _access_entries(cluster)[principal_arn]


def _list_access_entries(self: Any, cluster_name: str,
                         associated_policy_arn: str | None = None) -> list[str]:
    cluster = _get_cluster(self, cluster_name)
    _require_api_auth(cluster)
    return sorted(arn for arn, entry in _access_entries(cluster).items()
                  if not associated_policy_arn or associated_policy_arn in entry.policies)


def _associate_access_policy(self: Any, cluster_name: str, principal_arn: str, policy_arn: str,
                             access_scope: Mapping[str, Any]) -> dict[str, Any]:
    _, entry = _get_access_entry(self, cluster_name, principal_arn)
    match = re.fullmatch(r"arn:[^:]+:eks::aws:cluster-access-policy/([A-Za-z0-9]+)", policy_arn or "")
    if not match or match.group(1) not in ACCESS_POLICIES:
        raise _exc("InvalidParameterException", f"The policy {policy_arn} is not a valid EKS access policy")
    if entry.type != "STANDARD":
        raise _exc("InvalidRequestException",
                   f"Access policies can only be associated with STANDARD access entries, not {entry.type}")
    scope = dict(access_scope or {})
    namespaces = list(scope.get("namespaces") or [])
    if scope.get("type") not in ("cluster", "namespace") or \
            (scope["type"] == "namespace") != bool(namespaces):
        raise _exc("InvalidParameterException", "accessScope must be type cluster without namespaces "
                   "or type namespace with at least one namespace")
    previous = entry.policies.get(policy_arn)
    policy = _associated_policy(policy_arn, scope)
    if previous is not None:
        policy["associatedAt"] = previous["associatedAt"]
    entry.policies[policy_arn] = policy
    return {"clusterName": cluster_name, "principalArn": principal_arn,
            "associatedAccessPolicy": policy}


def _list_associated_access_policies(self: Any, cluster_name: str,
                                     principal_arn: str) -> list[dict[str, Any]]:
    _, entry = _get_access_entry(self, cluster_name, principal_arn)
    return list(entry.policies.values())


def _disassociate_access_policy(self: Any, cluster_name: str, principal_arn: str,
                                policy_arn: str) -> None:
    _, entry = _get_access_entry(self, cluster_name, principal_arn)
    if entry.policies.pop(policy_arn, None) is None:
        raise _exc("ResourceNotFoundException",
                   f"The policy {policy_arn} is not associated with {principal_arn}")


# ---- the HTTP side: moto's EKSResponse methods for the calls it lacks

def _caller_principal(response: Any) -> str | None:
    """The IAM principal behind the request, as EKS records its cluster creator."""
    try:
        from moto.sts.models import sts_backends
        from moto.utilities.utils import get_partition

        partition = get_partition(response.region)
        _, arn, _ = sts_backends[response.current_account][partition].get_caller_identity(
            response.get_access_key(), response.region)
    except Exception:  # noqa: BLE001 - no identity: no creator entry
        return None
    assumed = re.fullmatch(r"arn:([^:]+):sts::(\d+):assumed-role/([^/]+)/.+", arn)
    if assumed:
        return f"arn:{assumed.group(1)}:iam::{assumed.group(2)}:role/{assumed.group(3)}"
    user = re.fullmatch(r"arn:([^:]+):(?:sts|iam)::(\d+):user/(.+)", arn)
    if user:
        return f"arn:{user.group(1)}:iam::{user.group(2)}:user/{user.group(3)}"
    return None


def _entry_path(response: Any) -> tuple[str, str | None]:
    """principalArn and policyArn from the path, percent-encoded (in-process) or not (server)."""
    from urllib.parse import unquote, urlparse

    path = unquote(urlparse(response.path).path if "://" in response.path else response.path)
    rest = path.split("/access-entries/", 1)[1]
    principal, _, policy = rest.partition("/access-policies")
    return principal, (policy.lstrip("/") or None)


def _r_create_cluster(self: Any) -> Any:
    from moto.core.responses import ActionResult

    cluster = self.eks_backend.create_cluster(
        name=self._get_param("name"), version=self._get_param("version"),
        role_arn=self._get_param("roleArn"), resources_vpc_config=self._get_param("resourcesVpcConfig"),
        kubernetes_network_config=self._get_param("kubernetesNetworkConfig"),
        logging=self._get_param("logging"), client_request_token=self._get_param("clientRequestToken"),
        tags=self._get_param("tags"), encryption_config=self._get_param("encryptionConfig"),
        remote_network_config=self._get_param("remoteNetworkConfig"),
        access_config=self._get_param("accessConfig"), creator_arn=_caller_principal(self))
    return ActionResult({"cluster": cluster})


def _r_update_cluster_config(self: Any) -> Any:
    from moto.core.responses import ActionResult

    update = self.eks_backend.update_cluster_config(
        name=self._get_param("name"), resources_vpc_config=self._get_param("resourcesVpcConfig"),
        logging=self._get_param("logging"), client_request_token=self._get_param("clientRequestToken"),
        kubernetes_network_config=self._get_param("kubernetesNetworkConfig"),
        remote_network_config=self._get_param("remoteNetworkConfig"),
        access_config=self._get_param("accessConfig"))
    return ActionResult({"update": update})  # EKS answers with the update, not the cluster


def _r_update_cluster_version(self: Any) -> Any:
    from moto.core.responses import ActionResult

    update = self.eks_backend.update_cluster_version(
        name=self._get_param("name"), version=self._get_param("version"),
        client_request_token=self._get_param("clientRequestToken"),
        force=bool(self._get_param("force")))
    return ActionResult({"update": update})


def _r_update_nodegroup_version(self: Any) -> Any:
    from moto.core.responses import ActionResult

    update = self.eks_backend.update_nodegroup_version(
        cluster_name=self._get_param("name"), nodegroup_name=self._get_param("nodegroupName"),
        version=self._get_param("version"), release_version=self._get_param("releaseVersion"),
        launch_template=self._get_param("launchTemplate"), force=bool(self._get_param("force")),
        client_request_token=self._get_param("clientRequestToken"))
    return ActionResult({"update": update})


def _r_describe_update(self: Any) -> Any:
    from moto.core.responses import ActionResult

    update = self.eks_backend.describe_update(
        name=self._get_param("name"), update_id=self._get_param("updateId"),
        nodegroup_name=self._get_param("nodegroupName"))
    return ActionResult({"update": update})


def _r_list_updates(self: Any) -> Any:
    from moto.core.responses import ActionResult

    ids = self.eks_backend.list_updates(name=self._get_param("name"),
                                        nodegroup_name=self._get_param("nodegroupName"))
    return ActionResult({"updateIds": ids})


def _r_create_access_entry(self: Any) -> Any:
    from moto.core.responses import ActionResult

    entry = self.eks_backend.create_access_entry(
        cluster_name=self._get_param("name"), principal_arn=self._get_param("principalArn"),
        kubernetes_groups=self._get_param("kubernetesGroups"), tags=self._get_param("tags"),
        username=self._get_param("username"), type=self._get_param("type"))
    return ActionResult({"accessEntry": entry})


def _r_describe_access_entry(self: Any) -> Any:
    from moto.core.responses import ActionResult

    principal, _ = _entry_path(self)
    entry = self.eks_backend.describe_access_entry(cluster_name=self._get_param("name"),
                                                   principal_arn=principal)
    return ActionResult({"accessEntry": entry})


def _r_update_access_entry(self: Any) -> Any:
    from moto.core.responses import ActionResult

    principal, _ = _entry_path(self)
    entry = self.eks_backend.update_access_entry(
        cluster_name=self._get_param("name"), principal_arn=principal,
        kubernetes_groups=self._get_param("kubernetesGroups"), username=self._get_param("username"))
    return ActionResult({"accessEntry": entry})


def _r_delete_access_entry(self: Any) -> Any:
    from moto.core.responses import EmptyResult

    principal, _ = _entry_path(self)
    self.eks_backend.delete_access_entry(cluster_name=self._get_param("name"), principal_arn=principal)
    return EmptyResult()


def _r_list_access_entries(self: Any) -> Any:
    from moto.core.responses import ActionResult

    arns = self.eks_backend.list_access_entries(
        cluster_name=self._get_param("name"),
        associated_policy_arn=self._get_param("associatedPolicyArn"))
    return ActionResult({"accessEntries": arns})


def _r_associate_access_policy(self: Any) -> Any:
    from moto.core.responses import ActionResult

    principal, _ = _entry_path(self)
    result = self.eks_backend.associate_access_policy(
        cluster_name=self._get_param("name"), principal_arn=principal,
        policy_arn=self._get_param("policyArn"), access_scope=self._get_param("accessScope"))
    return ActionResult(result)


def _r_list_associated_access_policies(self: Any) -> Any:
    from moto.core.responses import ActionResult

    principal, _ = _entry_path(self)
    name = self._get_param("name")
    policies = self.eks_backend.list_associated_access_policies(cluster_name=name,
                                                                principal_arn=principal)
    return ActionResult({"clusterName": name, "principalArn": principal,
                         "associatedAccessPolicies": policies})


def _r_disassociate_access_policy(self: Any) -> Any:
    from moto.core.responses import EmptyResult

    principal, policy = _entry_path(self)
    self.eks_backend.disassociate_access_policy(cluster_name=self._get_param("name"),
                                                principal_arn=principal, policy_arn=policy or "")
    return EmptyResult()


_BACKEND_REPLACEMENTS: dict[str, Callable[..., Any]] = {
    "create_cluster": _create_cluster,
    "delete_cluster": _delete_cluster,
    "update_cluster_config": _update_cluster_config,
    "create_nodegroup": _create_nodegroup,
    "delete_nodegroup": _delete_nodegroup,
    "update_nodegroup_config": _update_nodegroup_config,
    "list_nodegroups": _list_nodegroups,
    "tag_resource": _tag_resource,
    "untag_resource": _untag_resource,
    "list_tags_for_resource": _list_tags_for_resource,
}
_BACKEND_ADDITIONS: dict[str, Callable[..., Any]] = {
    "update_cluster_version": _update_cluster_version,
    "update_nodegroup_version": _update_nodegroup_version,
    "describe_update": _describe_update,
    "list_updates": _list_updates,
    "create_access_entry": _create_access_entry,
    "describe_access_entry": _describe_access_entry,
    "update_access_entry": _update_access_entry,
    "delete_access_entry": _delete_access_entry,
    "list_access_entries": _list_access_entries,
    "associate_access_policy": _associate_access_policy,
    "list_associated_access_policies": _list_associated_access_policies,
    "disassociate_access_policy": _disassociate_access_policy,
}
_RESPONSE_METHODS: dict[str, Callable[..., Any]] = {
    "create_cluster": _r_create_cluster,
    "update_cluster_config": _r_update_cluster_config,
    "update_cluster_version": _r_update_cluster_version,
    "update_nodegroup_version": _r_update_nodegroup_version,
    "describe_update": _r_describe_update,
    "list_updates": _r_list_updates,
    "create_access_entry": _r_create_access_entry,
    "describe_access_entry": _r_describe_access_entry,
    "update_access_entry": _r_update_access_entry,
    "delete_access_entry": _r_delete_access_entry,
    "list_access_entries": _r_list_access_entries,
    "associate_access_policy": _r_associate_access_policy,
    "list_associated_access_policies": _r_list_associated_access_policies,
    "disassociate_access_policy": _r_disassociate_access_policy,
}

# The EKS grown since (versions, managed add-ons, insights, deletion protection, node group
# update and repair settings) lives in its own module, merged into these tables.
from exaprov import emulator_eks  # noqa: E402

emulator_eks.extend(sys.modules[__name__], _BACKEND_REPLACEMENTS, _BACKEND_ADDITIONS,
                    _RESPONSE_METHODS)


def _install_eks() -> None:
    """Patch moto's EKS backend, responses and URLs (once: the classes carry a marker)."""
    from moto.eks import models, responses, urls

    backend_cls, response_cls = models.EKSBackend, responses.EKSResponse
    if getattr(backend_cls, "_exaprov_patched", False):
        return
    for name, replacement in _BACKEND_REPLACEMENTS.items():
        _ORIGINAL[name] = getattr(backend_cls, name)
        setattr(backend_cls, name, replacement)
    for name, addition in _BACKEND_ADDITIONS.items():
        setattr(backend_cls, name, addition)
    # Every backend call first applies the transitions whose time has come.
    for name, attr in list(vars(backend_cls).items()):
        if not name.startswith("_") and callable(attr) and not isinstance(attr, type) \
                and not getattr(attr, "_exaprov_settled", False):
            setattr(backend_cls, name, _settled(attr))
    for name, method in _RESPONSE_METHODS.items():
        setattr(response_cls, name, method)
    # moto reads url_paths each request (in-process) and when the server builds its app.
    for pattern in EXTRA_URL_PATHS + emulator_eks.URL_PATHS:
        urls.url_paths.setdefault(pattern, urls.response.dispatch)
    backend_cls._exaprov_patched = True

# -- RDS and NAT gateways: the time they take ------------------------------------------

_transition_lock = threading.RLock()  # settling mutates moto's dicts; the server is threaded
RDS_BUSY = frozenset({"creating", "deleting"})


def _settle_databases(backend: Any) -> None:
    """creating → backing-up → available, deleting → gone, as their time comes (lazily)."""
    now = _now()
    for ident, db in list(backend.databases.items()):
        due = getattr(db, "_exaprov_due", None)
        if due is None or now < due:
            continue
        db._exaprov_due = None
        if db.status == "deleting":
            backend.databases.pop(ident, None)
        elif db.status == "creating" and _durations["rds_backup"] > 0:
            db.status = "backing-up"  # RDS takes the first backup; the instance already serves
            db._exaprov_due = now + _durations["rds_backup"]
        else:
            db.status = "available"


def _rds_settled(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _transition_lock:
            _settle_databases(self)
            return method(self, *args, **kwargs)

    return wrapper


def _db_ident(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    return str(kwargs.get("db_instance_identifier") or (args[0] if args else ""))


def _rds_create(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_db_instance(self: Any, db_kwargs: dict[str, Any]) -> Any:
        database = original(self, db_kwargs)
        if _durations["rds_create"] > 0:
            database.status = "creating"
            database._exaprov_due = _now() + _durations["rds_create"]
        return database

    return create_db_instance


def _rds_delete(original: Callable[..., Any]) -> Callable[..., Any]:
    def delete_db_instance(self: Any, *args: Any, **kwargs: Any) -> Any:
        from moto.rds.exceptions import RDSClientError

        ident = _db_ident(args, kwargs)
        current = self.databases.get(ident)
        if current is not None and current.status == "deleting":
            raise RDSClientError("InvalidDBInstanceState", f"Instance {ident} is already being deleted.")
        database = original(self, *args, **kwargs)  # moto forgets it at once, answering `deleting`
        if _durations["rds_delete"] > 0:
            database.status = "deleting"  # RDS lists it `deleting` for minutes
            database._exaprov_due = _now() + _durations["rds_delete"]
            self.databases[ident] = database
        return database

    return delete_db_instance


def _rds_modify(original: Callable[..., Any]) -> Callable[..., Any]:
    def modify_db_instance(self: Any, db_instance_identifier: str, db_kwargs: dict[str, Any]) -> Any:
        from moto.rds.exceptions import RDSClientError

        current = self.databases.get(db_instance_identifier)
        if current is not None and current.status in RDS_BUSY:
            # RDS refuses changes while the instance is being created or deleted.
            raise RDSClientError("InvalidDBInstanceState",
                                 f"Database instance is not in available state ({current.status}).")
        return original(self, db_instance_identifier, db_kwargs)

    return modify_db_instance


def _rds_delete_subnet_group(original: Callable[..., Any]) -> Callable[..., Any]:
    def delete_subnet_group(self: Any, subnet_name: str) -> Any:
        from moto.rds.exceptions import RDSClientError

        users = sorted(ident for ident, db in self.databases.items()
                       if getattr(db, "_db_subnet_group_name", None) == subnet_name)
        if users:  # RDS: not while an instance (even a `deleting` one) still uses it
            raise RDSClientError("InvalidDBSubnetGroupStateFault",
                                 f"Cannot delete the subnet group '{subnet_name}' because at least "
                                 f"one database instance: {users[0]} is still using it.")
        return original(self, subnet_name)

    return delete_subnet_group


def _install_rds() -> None:
    from moto.rds.models import RDSBackend

    if getattr(RDSBackend, "_exaprov_patched", False):
        return
    RDSBackend.create_db_instance = _rds_create(RDSBackend.create_db_instance)
    RDSBackend.delete_db_instance = _rds_delete(RDSBackend.delete_db_instance)
    RDSBackend.modify_db_instance = _rds_modify(RDSBackend.modify_db_instance)
    RDSBackend.delete_subnet_group = _rds_delete_subnet_group(RDSBackend.delete_subnet_group)
    # Every call that reads or changes an instance first applies the transitions now due.
    for name in ("create_db_instance", "delete_db_instance", "modify_db_instance",
                 "describe_db_instances", "reboot_db_instance", "stop_db_instance",
                 "start_db_instance", "list_tags_for_resource", "add_tags_to_resource",
                 "remove_tags_from_resource", "delete_subnet_group"):
        setattr(RDSBackend, name, _rds_settled(getattr(RDSBackend, name)))
    RDSBackend._exaprov_patched = True


def _settle_nat_gateways(backend: Any) -> None:
    now = _now()
    for nat in list(backend.nat_gateways.values()):
        due = getattr(nat, "_exaprov_due", None)
        if due is None or now < due:
            continue
        nat._exaprov_due = None
        if nat.state == "deleting":
            nat.state = "deleted"
            _release_nat_interface(backend, nat)
        else:
            nat.state = "available"


def _release_nat_interface(backend: Any, nat: Any) -> None:
    """A deleted NAT gateway's network interface goes with it, and its Elastic IP is
    disassociated (EC2 does both; moto keeps the interface, which then holds the address)."""
    eni = getattr(nat, "_eni", None)
    if eni is None or eni.id not in backend.enis:
        return
    for address in backend.addresses:
        if address.eni is eni:
            address.eni, address.instance, address.association_id = None, None, None
    backend.enis.pop(eni.id, None)


def _nat_settled(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _transition_lock:
            _settle_nat_gateways(self)
            return method(self, *args, **kwargs)

    return wrapper


def _install_nat() -> None:
    from moto.ec2.models.nat_gateways import NatGatewayBackend

    if getattr(NatGatewayBackend, "_exaprov_patched", False):
        return
    original_create, original_delete = (NatGatewayBackend.create_nat_gateway,
                                        NatGatewayBackend.delete_nat_gateway)

    def create_nat_gateway(self: Any, *args: Any, **kwargs: Any) -> Any:
        nat = original_create(self, *args, **kwargs)
        if _durations["nat_create"] > 0:
            nat.state = "pending"  # EC2: `pending` for about two minutes, then `available`
            nat._exaprov_due = _now() + _durations["nat_create"]
        return nat

    def delete_nat_gateway(self: Any, nat_gateway_id: str) -> Any:
        nat = original_delete(self, nat_gateway_id)  # moto: `deleted` at once
        if _durations["nat_delete"] > 0:
            nat.state = "deleting"
            nat._exaprov_due = _now() + _durations["nat_delete"]
        else:
            _release_nat_interface(self, nat)
        return nat

    NatGatewayBackend.create_nat_gateway = _nat_settled(create_nat_gateway)
    NatGatewayBackend.delete_nat_gateway = _nat_settled(delete_nat_gateway)
    NatGatewayBackend.describe_nat_gateways = _nat_settled(NatGatewayBackend.describe_nat_gateways)
    NatGatewayBackend._exaprov_patched = True


# -- EC2 filters moto ignores -------------------------------------------------------------

# DescribeVpcPeeringConnections filters AWS documents, by what they read off moto's object.
_PCX_FILTERS: dict[str, Callable[[Any], list[str]]] = {
    "vpc-peering-connection-id": lambda p: [p.id],
    "status-code": lambda p: [p._status.code],
    "accepter-vpc-info.vpc-id": lambda p: [p.peer_vpc.id],
    "accepter-vpc-info.owner-id": lambda p: [p.peer_vpc.owner_id],
    "accepter-vpc-info.cidr-block": lambda p: [p.peer_vpc.cidr_block],
    "requester-vpc-info.vpc-id": lambda p: [p.vpc.id],
    "requester-vpc-info.owner-id": lambda p: [p.vpc.owner_id],
    "requester-vpc-info.cidr-block": lambda p: [p.vpc.cidr_block],
}


def _pcx_matches(pcx: Any, name: str, values: list[str]) -> bool:
    from moto.ec2.exceptions import FilterNotImplementedError
    from moto.ec2.utils import is_tag_filter, tag_filter_matches

    if is_tag_filter(name):
        return tag_filter_matches(pcx, name, values)
    if name not in _PCX_FILTERS:
        raise FilterNotImplementedError(name, "DescribeVpcPeeringConnections")
    return any(v in values for v in _PCX_FILTERS[name](pcx))


def _install_ec2_filters() -> None:
    """AWS applies every filter of a Describe call; moto drops some. An endpoint that answers
    more than was asked makes a lookup by tag see other deployments' resources, so the
    emulator applies what moto skips: the `tag:`/`tag-key`/`tag-value` filters of
    DescribeNatGateways, and every filter of DescribeVpcPeeringConnections (moto reads only
    its ID list). The other Describe calls exaprov sends with `tag:`, `tag-key` or `vpc-id`
    filters are honoured by moto itself (tests/test_emulator.py asserts each)."""
    from moto.core.responses import ActionResult
    from moto.ec2.models.nat_gateways import NatGatewayBackend
    from moto.ec2.responses.vpc_peering_connections import VPCPeeringConnections
    from moto.ec2.utils import is_tag_filter, tag_filter_matches

    if getattr(NatGatewayBackend, "_exaprov_filters", False):
        return
    describe_nats = NatGatewayBackend.describe_nat_gateways

    def describe_nat_gateways(self: Any, filters: Any, nat_gateway_ids: Any) -> Any:
        found = describe_nats(self, filters, nat_gateway_ids)
        for name, values in (filters or {}).items():
            if is_tag_filter(name):
                found = [n for n in found if tag_filter_matches(n, name, values)]
        return found

    def describe_vpc_peering_connections(self: Any) -> Any:
        ids = self._get_param("VpcPeeringConnectionIds", [])
        filters = self._filters_from_querystring()
        found = self.ec2_backend.describe_vpc_peering_connections(vpc_peering_ids=ids)
        found = [p for p in found if all(_pcx_matches(p, n, v) for n, v in filters.items())]
        return ActionResult({"VpcPeeringConnections": found})

    NatGatewayBackend._exaprov_unfiltered = describe_nats  # what moto alone answers (tests)
    NatGatewayBackend.describe_nat_gateways = describe_nat_gateways
    VPCPeeringConnections.describe_vpc_peering_connections = describe_vpc_peering_connections
    NatGatewayBackend._exaprov_filters = True


# -- the server --------------------------------------------------------------------------

class _RequestLatency:
    """WSGI middleware: holds every request for the model's round trip, lets moto handle one
    at a time, and counts requests by service (`GET /exaprov-emulator/requests` answers the
    counts as JSON)."""

    PATH = "/exaprov-emulator/requests"

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.moto_lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == self.PATH:
            with self.lock:
                body = json.dumps({"total": sum(self.counts.values()), "by_service": self.counts})
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body.encode()]
        control = emulator_rds.control(environ)  # the test hooks: clock, database password
        if control is not None:
            start_response(control[0], [("Content-Type", "application/json")])
            return [json.dumps(control[1]).encode()]
        # The service is the 4th field of SigV4's credential scope: AK/date/region/service/...
        match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        service = match.group(1) if match else "unsigned"
        with self.lock:
            self.counts[service] = self.counts.get(service, 0) + 1
        delay = round_trip()
        if delay > 0:
            time.sleep(delay)
        # AWS answers each request atomically; moto's backends are plain dicts and the server
        # is threaded (a describe racing a create can raise "dictionary changed size during
        # iteration"). Round trips overlap; moto's work does not.
        with self.moto_lock:
            return self.app(environ, start_response)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only addresses we may bind."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_atomically(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def serve(host: str = "127.0.0.1", port: int = 0, ready_file: Path | None = None,
          latency_model: str | None = None, time_scale: float | None = None) -> None:
    """Serve the emulator in the foreground until SIGTERM/SIGINT, then shut down cleanly.

    With port 0 the OS picks a free port; the port actually bound is written to
    `ready_file` once the socket listens, which is how a parent learns it. `latency_model`
    (`none`, `aws`) and `time_scale` default to EXAPROV_EMULATOR_LATENCY_MODEL and
    EXAPROV_EMULATOR_TIME_SCALE (see `latency_settings`).
    """
    if not is_loopback(host):
        raise InputError(f"the emulator only binds a loopback address, not {host!r}")
    # Before moto is imported: the AWS managed IAM policies (e.g. AmazonEKSClusterPolicy)
    # must exist, as they do in real AWS.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as exc:
        raise ExaprovError(MOTO_MISSING) from exc

    # How long resources take and each request's round trip (default: instant).
    configure_durations(**latency_settings(latency_model, time_scale))
    install_extensions()
    app = _RequestLatency(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True)
    bound = server.server_port
    # moto builds some URLs that point back at itself (e.g. SQS queue URLs) from this.
    os.environ["MOTO_PORT"] = str(bound)

    def _stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, and serve_forever runs in
        # this very thread: ask from another thread or it would deadlock.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread: the caller stops us via the process
            pass
    try:
        if ready_file is not None:
            _write_atomically(Path(ready_file), f"{bound}\n")
        print(f"exaprov emulator: listening on http://{host}:{bound} (pid {os.getpid()})",
              flush=True)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("exaprov emulator: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; refuses any non-loopback host before binding anything."""
    parser = argparse.ArgumentParser(prog="python -m exaprov.emulator",
                                     description="exaprov's local AWS emulator")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="file the bound port is written to once listening")
    parser.add_argument("--latency-model", choices=sorted(LATENCY_MODELS), default=None,
                        help="how long resources take: none (instant, the default) or aws "
                             "(the figures in benchmarks/README.md)")
    parser.add_argument("--time-scale", type=float, default=None,
                        help="multiply every duration and round trip by this (e.g. 0.0167 = 1/60)")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"--host {args.host}: not a loopback address; only 127.0.0.0/8, ::1 "
                     "or localhost may be bound")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: not a port number")
    try:
        serve(args.host, args.port, args.ready_file, args.latency_model, args.time_scale)
    except ExaprovError as exc:
        print(f"exaprov emulator: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
