"""EKS managed node groups: launch templates, node groups, autoscaling-group tags.

Owns: one launch template per node group (root volume /dev/xvda of the group's
disk size, deleted on termination, encrypted; IMDSv2 required; the node SG;
`instance_tags` on instances and volumes) and the node groups themselves: the
four fixed system groups, `runner-<suffix>` per runner pool, and the user's
additional groups; plus the cluster-autoscaler tags on each group's ASG.
Reads: cluster (name, version), nat (nodes pull images through it), iam (node
role), security-groups (node SG), network (private subnets).
Records: lt:<group> (launch template ID), group:<group> (node group name): user-named, so
prefixed with a colon no group name can hold (exaprov.addresses).
Reconcile: min/max, labels, taints in place (desired size belongs to the cluster
autoscaler: only clamped); disk size / instance tags via a new launch template
version; instance type, capacity type or AMI family by replacement (new group
first, then the old one deleted); a group gone from the config is deleted after
confirmation. Destroy: every group at once → wait deleted → launch templates.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from exaprov.addresses import (
    OLD_SUFFIX,
    group_from_tag,
    group_logical,
    legacy_template_tag,
    template_from_tag,
    template_logical,
)
from exaprov.aws import paginate, tag_dict, tag_list
from exaprov.engine import TAG_RESOURCE, Step, StepContext, is_unknown
from exaprov.errors import AwsError, ExaprovError, InputError, error_code, is_not_found
from exaprov.ownership import is_ours
from exaprov.state import FAILED
from exaprov.steps.cluster import wait_for_update
from exaprov.steps.ec2_lookup import Ec2Items, tag_specs, verify_gone

NODEGROUP_CREATE_TIMEOUT = 30 * 60  # AWS: about 2 minutes, more for GPU instances
NODEGROUP_DELETE_TIMEOUT = 30 * 60  # AWS: 4-6 minutes
ROLE_PROPAGATION_TIMEOUT = 2 * 60
RUNNER_TAINT = {"key": "dedicated", "value": "runner", "effect": "NO_SCHEDULE"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
AUTOSCALER_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
K8S_EFFECT = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute",
              "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
# AL2 AMIs are not published for Kubernetes 1.33 and later; AL2023 has every family since 1.30.
AL2023_FROM_MINOR = 30
AMI_TYPES = {
    "al2023": {"cpu": "AL2023_x86_64_STANDARD", "gpu": "AL2023_x86_64_NVIDIA",
               "inferentia": "AL2023_x86_64_NEURON"},
    "al2": {"cpu": "AL2_x86_64", "gpu": "AL2_x86_64_GPU", "inferentia": "AL2_x86_64_GPU"},
}
# Graviton (arm64) types; Neuron devices are x86_64 only, and AL2 has no ARM NVIDIA AMI.
ARM_AMI_TYPES = {
    "al2023": {"cpu": "AL2023_ARM_64_STANDARD", "gpu": "AL2023_ARM_64_NVIDIA",
               "inferentia": "AL2023_ARM_64_STANDARD"},
    "al2": {"cpu": "AL2_ARM_64", "gpu": "AL2_ARM_64", "inferentia": "AL2_ARM_64"},
}


@dataclass(frozen=True)
class GroupSpec:
    name: str
    instance_type: str
    capacity_type: str
    category: str
    disk_size: int
    min_size: int
    max_size: int
    desired_size: int
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, EKS effect)
    runner: bool = False
    max_unavailable_percentage: int = 33  # rolling updates (the Terraform modules' value)
    node_repair: bool = False  # EKS node auto repair

    def immutable(self, ami_type: str) -> str:
        """What EKS cannot change in place; a change means a replacement group."""
        return hashlib.sha256(f"{self.instance_type}/{self.capacity_type}/{ami_type}".encode()
                              ).hexdigest()[:6]


def _system(name: str, instance_type: str, minimum: int, maximum: int,
            role: str | None = None) -> GroupSpec:
    labels = {"role": role} if role else {}
    taints = (("dedicated", role, "NO_SCHEDULE"),) if role else ()
    return GroupSpec(name, instance_type, "ON_DEMAND", "cpu", 100, minimum, maximum, minimum,
                     labels, taints)


SYSTEM_GROUPS = (
    _system("default", "m5.xlarge", 1, 10),
    _system("scheduler", "c5.xlarge", 1, 2, "scheduler"),
    _system("module-repository", "c5.xlarge", 1, 2, "module-repository"),
    _system("prometheus", "m5.xlarge", 1, 1, "prometheus"),
)


def _from_config(name: str, pool: Any, runner: bool) -> GroupSpec:
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    if runner:
        labels["role"] = "runner"
        taints.append(RUNNER_TAINT)
    if pool.node_instance_category == "gpu":
        labels[GPU_TAINT["key"]] = GPU_TAINT["value"]
        taints.append(GPU_TAINT)
    if pool.accelerator_label:
        labels[ACCELERATOR_LABEL] = pool.accelerator_label
    labels.update(pool.additional_labels)
    taints += [{"key": t.key, "value": t.value, "effect": t.effect} for t in pool.additional_taints]
    unique = tuple(dict.fromkeys((t["key"], t["value"], t["effect"]) for t in taints))
    return GroupSpec(name, pool.node_instance_type, pool.capacity_type, pool.node_instance_category,
                     pool.disk_size, pool.min_size, pool.max_size, pool.min_size, labels, unique,
                     runner, pool.max_unavailable_percentage, pool.repairs_nodes)


def desired_groups(cfg: Any) -> dict[str, GroupSpec]:
    groups = {g.name: g for g in SYSTEM_GROUPS}
    for pool in cfg.cluster.runner_pools:
        groups[f"runner-{pool.suffix}"] = _from_config(f"runner-{pool.suffix}", pool, runner=True)
    for name, spec in cfg.cluster.additional_node_groups.items():
        groups[name] = _from_config(name, spec, runner=False)
    return groups


def ami_type(category: str, version: str, instance_type: str = "") -> str:
    """EKS's AMI type for a group: AL2023 (AL2 before 1.30), the category's variant, and the
    ARM build for Graviton types (an x86_64 AMI on an arm64 instance never boots a node)."""
    from exaprov.config import instance_kind

    family = "al2023" if int(version.split(".")[1]) >= AL2023_FROM_MINOR else "al2"
    kind = instance_kind(instance_type) if instance_type else None
    if kind is not None and kind.architecture == "arm64":
        return ARM_AMI_TYPES[family][category]
    return AMI_TYPES[family][category]


def asg_tags(spec: GroupSpec, cfg: Any) -> dict[str, str]:
    """Tags the cluster autoscaler reads to scale a group up from zero nodes."""
    tags = dict(cfg.cluster.autoscaling_group_tags)
    for key, value in spec.labels.items():
        tags[f"{AUTOSCALER_TEMPLATE}/label/{key}"] = value
    for key, value, effect in spec.taints:
        tags[f"{AUTOSCALER_TEMPLATE}/taint/{key}"] = f"{value}:{K8S_EFFECT[effect]}"
    resource = accelerator_resource(spec)
    if resource:
        # Without it the autoscaler cannot tell that a node of an empty GPU pool would satisfy
        # a pod asking for nvidia.com/gpu, and does not scale it up from zero
        # (kubernetes/autoscaler#5278).
        tags[f"{AUTOSCALER_TEMPLATE}/resources/{resource[0]}"] = str(resource[1])
    return tags


def accelerator_resource(spec: GroupSpec) -> tuple[str, int] | None:
    """(extended resource, count per node) of an accelerator pool, from the instance-type table;
    only where the pool's AMI runs the device plugin (gpu: NVIDIA, inferentia: Neuron)."""
    from exaprov.instance_types import ACCELERATOR_RESOURCE, describe

    info = describe(spec.instance_type)
    wanted = {"gpu": "nvidia", "inferentia": "neuron"}.get(spec.category)
    if info is None or info.accelerator is None or info.accelerator != wanted \
            or not info.accelerator_count:
        return None
    return ACCELERATOR_RESOURCE[info.accelerator], info.accelerator_count


# -- launch templates -------------------------------------------------------------------

def launch_template_data(ctx: StepContext, spec: GroupSpec, node_sg: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {
            "VolumeSize": spec.disk_size, "VolumeType": "gp3", "DeleteOnTermination": True,
            "Encrypted": True}}],
        # IMDSv2 only, one hop: pods get AWS credentials through IRSA, not the node role.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                            "HttpPutResponseHopLimit": ctx.cfg.cluster.imds_hop_limit},
        "SecurityGroupIds": [node_sg],
        # One-minute EC2 metrics, as the eks module's launch templates (cluster.detailed_monitoring).
        "Monitoring": {"Enabled": ctx.cfg.cluster.detailed_monitoring},
    }
    # As the eks module: the instance tags on the instances, their volumes and their network
    # interfaces, and a Name (<cluster>-<group>) on instances and volumes.
    tags = tag_list(ctx.cfg.cluster.instance_tags)
    named = tag_list({**ctx.cfg.cluster.instance_tags,
                      "Name": f"{ctx.cfg.cluster.cluster_name}-{spec.name}"})
    data["TagSpecifications"] = [{"ResourceType": "instance", "Tags": named},
                                 {"ResourceType": "volume", "Tags": named}] \
        + ([{"ResourceType": "network-interface", "Tags": tags}] if tags else [])
    return data


def _lt_digest(data: dict[str, Any]) -> str:
    """The launch template fields exaprov manages, in a comparable form."""
    ebs = (data.get("BlockDeviceMappings") or [{}])[0].get("Ebs", {})
    meta = data.get("MetadataOptions", {})
    tagspecs = {t["ResourceType"]: tag_dict(t.get("Tags")) for t in data.get("TagSpecifications", [])}
    return json.dumps({
        "volume": [int(ebs.get("VolumeSize", 0)), ebs.get("VolumeType"),
                   bool(ebs.get("DeleteOnTermination")), bool(ebs.get("Encrypted"))],
        "imds": [meta.get("HttpTokens"), int(meta.get("HttpPutResponseHopLimit", 0))],
        "sgs": sorted(data.get("SecurityGroupIds", [])),
        "tags": [tagspecs.get("instance", {}), tagspecs.get("volume", {}),
                 tagspecs.get("network-interface", {})],
        "monitoring": bool((data.get("Monitoring") or {}).get("Enabled")),
    }, sort_keys=True)


def ensure_launch_template(ctx: StepContext, templates: Ec2Items, spec: GroupSpec,
                           node_sg: str) -> tuple[str, str]:
    """(template ID, version to use); a changed template gets a new version, not a new template."""
    ec2, logical = ctx.aws.ec2, template_logical(spec.name)
    name = f"{ctx.cfg.cluster.cluster_name}-{spec.name}"
    data = launch_template_data(ctx, spec, node_sg)
    wanted = _lt_fingerprint(data)
    template = templates.pick(logical, legacy_template_tag(spec.name))
    if template is None:
        lt_id = ctx.create(logical, "ec2:launch-template", lambda token: ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData=data, ClientToken=token[:64],
            TagSpecifications=tag_specs(ctx, "launch-template", logical, name),
        )["LaunchTemplate"]["LaunchTemplateId"], name=name, detail=f"{spec.disk_size} GiB, IMDSv2",
            **({} if is_unknown(node_sg) else {"version": "1", "fingerprint": wanted}))
        return lt_id, "1"
    lt_id = template["LaunchTemplateId"]
    ctx.found(logical, "ec2:launch-template", lt_id)
    latest = str(template["LatestVersionNumber"])
    if is_unknown(node_sg):
        return lt_id, latest
    # A version never changes once made: if the latest is still the one exaprov made (or checked)
    # with these very settings, its data is known without describing it.
    rec = ctx.recorded(logical) or {}
    if rec.get("id") == lt_id and rec.get("version") == latest and rec.get("fingerprint") == wanted:
        return lt_id, latest
    live = ctx.call(lambda: ec2.describe_launch_template_versions(
        LaunchTemplateId=lt_id, Versions=[latest]))["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    if _lt_digest(live) == _lt_digest(data):
        _record_version(ctx, logical, latest, wanted)
        return lt_id, latest
    version: list[str] = [str(int(latest) + 1)]
    ctx.update(logical, "ec2:launch-template", "new version (disk size / instance tags / IMDS / monitoring)",
               lambda: version.__setitem__(0, str(ec2.create_launch_template_version(
                   LaunchTemplateId=lt_id, LaunchTemplateData=data,
               )["LaunchTemplateVersion"]["VersionNumber"])))
    _record_version(ctx, logical, version[0], wanted)
    return lt_id, version[0]


def _lt_fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(_lt_digest(data).encode()).hexdigest()[:16]


def _record_version(ctx: StepContext, logical: str, version: str, fingerprint: str) -> None:
    """Remember which version holds which settings (versions are immutable)."""
    if not ctx.planning:
        ctx.run.writer.record(ctx.address(logical), version=version, fingerprint=fingerprint)


# -- node groups ---------------------------------------------------------------------

def ensure_node_groups(ctx: StepContext) -> dict[str, Any]:
    cfg = ctx.cfg
    cluster = ctx.upstream["cluster"]
    node_sg = ctx.upstream["security-groups"]["node_security_group_id"]
    wanted = desired_groups(cfg)
    live = {} if is_unknown(cluster["cluster_arn"]) else find_node_groups(ctx)
    templates = Ec2Items(ctx, "describe_launch_templates", "ec2:launch-template")
    launch = {name: ensure_launch_template(ctx, templates, spec, node_sg)
              for name, spec in wanted.items()}

    def one(name: str) -> str:
        return ensure_group(ctx, wanted[name], live.get(group_logical(name)), launch[name])

    # Node groups take minutes each and EKS builds them in parallel: create them all at once.
    with ThreadPoolExecutor(max_workers=max(1, len(wanted)), thread_name_prefix="nodegroup") as pool:
        names = dict(zip(wanted, pool.map(one, wanted), strict=True))
    wanted_logicals = {group_logical(n) for n in wanted}
    for logical, group in live.items():
        if logical.endswith(OLD_SUFFIX) and logical.removesuffix(OLD_SUFFIX) in wanted_logicals:
            remove_group(ctx, logical, group, confirm=False)  # an interrupted replacement's old group
        elif logical not in wanted_logicals:
            remove_group(ctx, logical, group)
    # A group made in this run gets its autoscaler tags as part of its create (in a plan it
    # has no ASG yet to compare); only an existing group's tags can drift.
    made_now = {names[n] for n in wanted if group_logical(n) not in live
                or live[group_logical(n)]["nodegroupName"] != names[n]}
    existing = {names[n]: wanted[n] for n in wanted if not ctx.planning or names[n] not in made_now}
    ensure_asg_tags(ctx, existing, {g["nodegroupName"]: g for g in live.values()}, made_now)
    return {"node_groups": names}


def find_node_groups(ctx: StepContext) -> dict[str, dict[str, Any]]:
    """This deployment's node groups (by their own tags), by logical name (`group:<name>`)."""
    eks, cluster = ctx.aws.client("eks"), ctx.cfg.cluster.cluster_name
    try:
        names = ctx.call(lambda: paginate(eks, "list_nodegroups", "nodegroups", clusterName=cluster))
    except AwsError as exc:
        if exc.__cause__ is not None and is_not_found(exc.__cause__):
            return {}
        raise
    found: dict[str, dict[str, Any]] = {}
    deleting: list[str] = []
    for name in names:
        try:
            group = ctx.call(lambda n=name: eks.describe_nodegroup(
                clusterName=cluster, nodegroupName=n))["nodegroup"]
        except AwsError as exc:
            # Listed, then gone before the describe: a group whose delete an interrupted
            # destroy (or replacement) started has just finished deleting.
            if exc.__cause__ is not None and is_not_found(exc.__cause__):
                continue
            raise
        tags = group.get("tags", {})
        if not is_ours(ctx.cfg.name, tags):
            continue
        if group["status"] == "DELETING":
            # A destroy or replacement interrupted mid-delete: its name is not free until it is gone.
            deleting.append(name)
            continue
        logical = group_from_tag(tags.get(TAG_RESOURCE), name)
        # During a replacement two groups share a logical name: the newer one wins.
        if logical not in found or group["createdAt"] > found[logical]["createdAt"]:
            if logical in found:
                found[logical + OLD_SUFFIX] = found[logical]
            found[logical] = group
        else:
            found[logical + OLD_SUFFIX] = group
    for name in deleting:  # deleting side by side: the first wait is the longest
        if not ctx.planning:
            _wait_deleted(ctx, name)
    return found


def ensure_group(ctx: StepContext, spec: GroupSpec, group: dict[str, Any] | None,
                 launch: tuple[str, str]) -> str:
    cluster, logical = ctx.upstream["cluster"], group_logical(spec.name)
    ami = ami_type(spec.category, ctx.cfg.cluster.cluster_version, spec.instance_type)
    if group is not None and group["status"] == "CREATE_FAILED":
        failed_name = group["nodegroupName"]
        ctx.report(f"node group {failed_name} CREATE_FAILED: replacing it")
        remove_group(ctx, logical, group, confirm=False)
        return create_group(ctx, spec, failed_name, launch, ami)  # its name is free again
    if group is None:
        return create_group(ctx, spec, spec.name, launch, ami)
    name = group["nodegroupName"]
    ctx.found(logical, "eks:nodegroup", name, live=group["status"])
    immutable = (group.get("instanceTypes") or [None])[0], group.get("capacityType"), group.get("amiType")
    if immutable != (spec.instance_type, spec.capacity_type, ami):
        # EKS cannot change these in place. New group first, so capacity never drops to zero;
        # the old group's nodes are then drained and deleted: asked like a removal.
        was, now = "/".join(map(str, immutable)), f"{spec.instance_type}/{spec.capacity_type}/{ami}"
        if not ctx.ask(f"Replace node group {name} ({was} → {now}): a new group first, then the "
                       f"old one's nodes are drained and deleted?"):
            raise InputError(f"node-groups: node group {name} needs replacing ({was} → {now}); "
                             "not replaced",
                             hint="run `exaprov up --yes` to replace it, or put the old values back")
        new_name = f"{spec.name[:56]}-{spec.immutable(ami)}"
        if new_name == name:
            new_name = spec.name
        ctx.run.add_change(_replace_change(ctx, spec, immutable, (spec.instance_type,
                                                                   spec.capacity_type, ami)))
        new = create_group(ctx, spec, new_name, launch, ami, quiet=True)
        remove_group(ctx, logical + OLD_SUFFIX, group, confirm=False, quiet=True)
        return new
    if group["status"] not in ("ACTIVE", "DEGRADED") and not ctx.planning:
        group = wait_for_group(ctx, name)
    reconcile_group(ctx, spec, group, launch, cluster["cluster_version"])
    return name


def _replace_change(ctx: StepContext, spec: GroupSpec, was: tuple[Any, ...], now: tuple[Any, ...]) -> Any:
    from exaprov.engine import Change

    return Change("replace", ctx.address(group_logical(spec.name)), "eks:nodegroup",
                  f"{'/'.join(map(str, was))} → {'/'.join(map(str, now))} (new group first)")


def create_group(ctx: StepContext, spec: GroupSpec, name: str, launch: tuple[str, str], ami: str,
                 quiet: bool = False) -> str:
    eks = ctx.aws.client("eks")
    cluster_name = ctx.cfg.cluster.cluster_name
    params = {
        "clusterName": cluster_name, "nodegroupName": name,
        "scalingConfig": {"minSize": spec.min_size, "maxSize": spec.max_size,
                          "desiredSize": spec.desired_size},
        "subnets": ctx.upstream["network"]["private_subnet_ids"],
        "nodeRole": ctx.upstream["iam"]["node_role_arn"],
        "launchTemplate": {"id": launch[0], "version": launch[1]},
        "instanceTypes": [spec.instance_type], "capacityType": spec.capacity_type, "amiType": ami,
        "labels": spec.labels,
        "taints": [{"key": k, "value": v, "effect": e} for k, v, e in spec.taints],
        "tags": ctx.tags(group_logical(spec.name), name=name),
        "updateConfig": {"maxUnavailablePercentage": spec.max_unavailable_percentage},
        # Off by default in EKS; for GPU and Inferentia pools it replaces a node whose
        # accelerator fails (EKS node health monitoring reports it).
        "nodeRepairConfig": {"enabled": spec.node_repair},
    }

    def create(token: str) -> str:
        params["clientRequestToken"] = token
        return ctx.retry_while(
            f"node role {params['nodeRole']}", lambda: eks.create_nodegroup(**params),
            {"InvalidParameterException"}, message="role", timeout=ROLE_PROPAGATION_TIMEOUT,
            hint=f"check that {params['nodeRole']} exists and trusts ec2.amazonaws.com",
        )["nodegroup"]["nodegroupName"]

    if quiet and ctx.planning:
        return name
    created = ctx.create(group_logical(spec.name), "eks:nodegroup", create, name=name, listed=quiet,
                         detail=f"{spec.instance_type} {spec.capacity_type} {spec.min_size}-{spec.max_size}")
    if not ctx.planning:
        wait_for_group(ctx, name)
    return created if not is_unknown(created) else name


def wait_for_group(ctx: StepContext, name: str) -> dict[str, Any]:
    eks, cluster = ctx.aws.client("eks"), ctx.cfg.cluster.cluster_name
    group = ctx.wait_until(
        f"node group {name}",
        lambda: eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"],
        lambda g: g["status"] in ("ACTIVE", "DEGRADED") or g["status"].endswith("FAILED"),
        timeout=NODEGROUP_CREATE_TIMEOUT, interval=5, describe=lambda g: g["status"])
    if group["status"].endswith("FAILED"):
        logical = group_from_tag(group.get("tags", {}).get(TAG_RESOURCE), name)
        ctx.run.writer.record(ctx.address(logical), status=FAILED)
        issues = "; ".join(i.get("message", "") for i in group.get("health", {}).get("issues", []))
        raise ExaprovError(f"node-groups: node group {name} {group['status']}: "
                           f"{issues or 'no reason given'}",
                           hint="run `exaprov up` again to replace it")
    return group


def reconcile_group(ctx: StepContext, spec: GroupSpec, group: dict[str, Any],
                    launch: tuple[str, str], cluster_version: str) -> None:
    eks, name = ctx.aws.client("eks"), group["nodegroupName"]
    cluster_name = ctx.cfg.cluster.cluster_name
    update: dict[str, Any] = {}
    details: list[str] = []
    scaling = group["scalingConfig"]
    if (scaling["minSize"], scaling["maxSize"]) != (spec.min_size, spec.max_size):
        # Desired size belongs to the cluster autoscaler: kept, only clamped into the new range.
        desired = min(max(scaling["desiredSize"], spec.min_size), spec.max_size)
        update["scalingConfig"] = {"minSize": spec.min_size, "maxSize": spec.max_size,
                                   "desiredSize": desired}
        details.append(f"scaling {scaling['minSize']}-{scaling['maxSize']} → {spec.min_size}-{spec.max_size}")
    live_labels = group.get("labels") or {}
    if live_labels != spec.labels:
        update["labels"] = {k: v for k, v in {
            "addOrUpdateLabels": {k: v for k, v in spec.labels.items() if live_labels.get(k) != v},
            "removeLabels": [k for k in live_labels if k not in spec.labels]}.items() if v}
        details.append("labels")
    live_taints = {(t["key"], t.get("value", ""), t["effect"]) for t in group.get("taints") or []}
    if live_taints != set(spec.taints):
        update["taints"] = {k: v for k, v in {
            "addOrUpdateTaints": [{"key": k, "value": v, "effect": e}
                                  for k, v, e in set(spec.taints) - live_taints],
            "removeTaints": [{"key": k, "value": v, "effect": e}
                             for k, v, e in live_taints - set(spec.taints)
                             if (k, e) not in {(sk, se) for sk, _, se in spec.taints}]}.items() if v}
        details.append("taints")
    if (group.get("updateConfig") or {}).get("maxUnavailablePercentage") != \
            spec.max_unavailable_percentage:
        update["updateConfig"] = {"maxUnavailablePercentage": spec.max_unavailable_percentage}
        details.append(f"rolling updates {spec.max_unavailable_percentage}% at a time")
    if bool((group.get("nodeRepairConfig") or {}).get("enabled")) != spec.node_repair:
        update["nodeRepairConfig"] = {"enabled": spec.node_repair}
        details.append(f"node auto repair {'on' if spec.node_repair else 'off'}")
    if update:
        ctx.update(group_logical(spec.name), "eks:nodegroup", ", ".join(details), lambda: wait_for_update(
            ctx, cluster_name, eks.update_nodegroup_config(
                clusterName=cluster_name, nodegroupName=name, **update), nodegroup=name))
    live_lt = group.get("launchTemplate") or {}
    version_update: dict[str, Any] = {}
    if str(live_lt.get("version")) != launch[1] and not is_unknown(launch[0]):
        version_update["launchTemplate"] = {"id": launch[0], "version": launch[1]}
    if group.get("version") and group["version"] != cluster_version and not is_unknown(cluster_version):
        version_update["version"] = cluster_version
    if version_update:
        words = []
        if "launchTemplate" in version_update:
            words.append(f"launch template {launch[0]} version {launch[1]}")
        if "version" in version_update:
            words.append(f"Kubernetes {cluster_version}")
        ctx.update(group_logical(spec.name), "eks:nodegroup",
                   "rolling update to " + " and ".join(words),
                   lambda: wait_for_update(ctx, cluster_name, eks.update_nodegroup_version(
                       clusterName=cluster_name, nodegroupName=name, **version_update), nodegroup=name))


def remove_group(ctx: StepContext, logical: str, group: dict[str, Any], confirm: bool = True,
                 quiet: bool = False) -> None:
    """Delete a node group (one gone from the config asks first, unless --yes)."""
    name = group["nodegroupName"]
    if confirm and not ctx.ask(f"Delete node group {name} (no longer in the config)?"):
        raise InputError(f"node-groups: node group {name} is no longer in the config; not deleted",
                         hint="run `exaprov up --yes` to delete it, or put it back in the config")
    if quiet and ctx.planning:
        return
    ctx.delete(logical, "eks:nodegroup", name, lambda n: _delete_and_wait(ctx, n), listed=quiet,
               detail=f"{name} ({'replaced' if quiet else 'removed from the config'})")


def _delete_and_wait(ctx: StepContext, name: str) -> None:
    eks, cluster = ctx.aws.client("eks"), ctx.cfg.cluster.cluster_name
    try:
        eks.delete_nodegroup(clusterName=cluster, nodegroupName=name)
    except ClientError as exc:
        # Gone already (`delete` counts that as done), or a delete already under way: a
        # destroy resumed after an interruption waits for that one.
        if not (error_code(exc) == "ResourceInUseException" and "DELETING" in str(exc)):
            raise
    _wait_deleted(ctx, name)


def _wait_deleted(ctx: StepContext, name: str) -> None:
    eks, cluster = ctx.aws.client("eks"), ctx.cfg.cluster.cluster_name
    ctx.wait_gone(f"node group {name}", lambda: eks.describe_nodegroup(
        clusterName=cluster, nodegroupName=name)["nodegroup"]["status"],
        timeout=NODEGROUP_DELETE_TIMEOUT, interval=5)


def _put_asg_tags(autoscaling: Any, tags: list[dict[str, Any]]) -> None:
    for i in range(0, len(tags), 50):  # CreateOrUpdateTags takes at most 50 tags a call
        autoscaling.create_or_update_tags(Tags=tags[i:i + 50])


def ensure_asg_tags(ctx: StepContext, groups: dict[str, GroupSpec],
                    described: dict[str, dict[str, Any]] | None = None,
                    made_now: set[str] | frozenset[str] = frozenset()) -> None:
    """Autoscaler tags on each group's ASG (not propagated to instances): one read, one write.

    `described`: groups already described in this run; a group's ASG does not change while
    it lives, so only groups created in this run (or not described yet) are described again.
    """
    eks, autoscaling = ctx.aws.client("eks"), ctx.aws.client("autoscaling")
    cluster = ctx.cfg.cluster.cluster_name
    asgs: dict[str, GroupSpec] = {}
    new_asgs: set[str] = set()
    for name, spec in groups.items():
        group = (described or {}).get(name)
        if not (group or {}).get("resources", {}).get("autoScalingGroups"):
            group = ctx.call(lambda n=name: eks.describe_nodegroup(
                clusterName=cluster, nodegroupName=n))["nodegroup"]
        for asg in group.get("resources", {}).get("autoScalingGroups", []):
            asgs[asg["name"]] = spec
            if name in made_now:
                new_asgs.add(asg["name"])
    if not asgs:
        return
    live: dict[tuple[str, str], str] = {}
    for tag in ctx.call(lambda: paginate(autoscaling, "describe_tags", "Tags", Filters=[
            {"Name": "auto-scaling-group", "Values": sorted(asgs)}])):
        live[(tag["ResourceId"], tag["Key"])] = tag["Value"]
    missing = [{"ResourceId": asg, "ResourceType": "auto-scaling-group", "Key": k, "Value": v,
                "PropagateAtLaunch": False}
               for asg, spec in asgs.items() for k, v in asg_tags(spec, ctx.cfg).items()
               if live.get((asg, k)) != v]
    for tags, initial in (([t for t in missing if t["ResourceId"] in new_asgs], True),
                          ([t for t in missing if t["ResourceId"] not in new_asgs], False)):
        if tags:
            ctx.update("asg-tags", "autoscaling:tags", f"{len(tags)} autoscaler tag(s)",
                       partial(_put_asg_tags, autoscaling, tags), initial=initial)
    # A label or taint gone from the config must not keep telling the autoscaler it exists.
    stale = [{"ResourceId": asg, "ResourceType": "auto-scaling-group", "Key": key}
             for (asg, key) in live if key.startswith(AUTOSCALER_TEMPLATE + "/")
             and key not in asg_tags(asgs[asg], ctx.cfg)]
    if stale:
        ctx.update("asg-tags", "autoscaling:tags", f"remove {len(stale)} stale autoscaler tag(s)",
                   lambda: [autoscaling.delete_tags(Tags=stale[i:i + 50])
                            for i in range(0, len(stale), 50)])


# -- destroy ---------------------------------------------------------------------------

def destroy_node_groups(ctx: StepContext) -> None:
    groups = find_node_groups(ctx)
    with ThreadPoolExecutor(max_workers=max(1, len(groups)), thread_name_prefix="nodegroup") as pool:
        list(pool.map(lambda item: remove_group(ctx, item[0], item[1], confirm=False), groups.items()))
    templates = Ec2Items(ctx, "describe_launch_templates", "ec2:launch-template")
    for template in templates.items:
        logical = template_from_tag(tag_dict(template.get("Tags")).get(TAG_RESOURCE),
                                    template["LaunchTemplateId"])
        ctx.delete(logical, "ec2:launch-template", template["LaunchTemplateId"],
                   lambda lt: ctx.aws.ec2.delete_launch_template(LaunchTemplateId=lt))
    for logical in ctx.recorded_logicals():
        ctx.forget(logical)
    verify_gone(ctx, {"describe_launch_templates": "ec2:launch-template"})


# After `addons`: in an upgrade the add-ons reach the new version's defaults before the nodes roll.
NODE_GROUPS = Step("node-groups", ("cluster", "addons", "nat", "iam", "security-groups", "network"),
                   ensure_node_groups, destroy_node_groups, title="EKS managed node groups",
                   asks=True)
