"""EKS as AWS runs it in December 2026: Kubernetes versions and their support, managed add-ons,
upgrades as one sequence, deletion protection, node group update and repair settings.

Every test asserts on what the emulator holds afterwards (exaprov/emulator_eks.py)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto.core import DEFAULT_ACCOUNT_ID
from moto.eks.models import eks_backends

from exaprov import eks_versions, emulator_eks
from exaprov.deployment import Deployment, Target
from exaprov.errors import InputError
from tests.census import census, difference
from tests.conftest import REGION, CallLog, cli, write_config

CLUSTER = "exafunction-cluster-example"
FIVE = {"vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent", "aws-ebs-csi-driver"}
NEED_NODES = {"coredns", "aws-ebs-csi-driver"}
GROUPS = 6  # four system groups and the two default runner pools


def eks() -> Any:
    return boto3.client("eks", region_name=REGION)


def backend_cluster() -> Any:
    """The emulator's own record of the cluster (what the API does not show)."""
    return eks_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[CLUSTER]


def addons() -> dict[str, dict[str, Any]]:
    client = eks()
    return {n: client.describe_addon(clusterName=CLUSTER, addonName=n)["addon"]
            for n in client.list_addons(clusterName=CLUSTER)["addons"]}


def defaults(version: str) -> dict[str, str]:
    found = {}
    for page in eks().get_paginator("describe_addon_versions").paginate(kubernetesVersion=version):
        for addon in page["addons"]:
            for v in addon["addonVersions"]:
                if any(c["defaultVersion"] for c in v["compatibilities"]):
                    found[addon["addonName"]] = v["addonVersion"]
    return found


def node_groups() -> dict[str, dict[str, Any]]:
    client = eks()
    return {n: client.describe_nodegroup(clusterName=CLUSTER, nodegroupName=n)["nodegroup"]
            for n in client.list_nodegroups(clusterName=CLUSTER)["nodegroups"]}


def up(*extra: str) -> Any:
    result = cli("up", *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def watch(hooks: Any) -> list[tuple[str, str, bool]]:
    """Every EKS call in order: (operation, its add-on or node group, whether the cluster had
    an ACTIVE node group at that moment, as the emulator holds it)."""
    seen: list[tuple[str, str, bool]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.service_model.service_name != "eks":
            return
        clusters = eks_backends[DEFAULT_ACCOUNT_ID][REGION].clusters
        active = CLUSTER in clusters and any(
            g.status == "ACTIVE" for g in clusters[CLUSTER].nodegroups.values())
        body = params.get("body") or b"{}"
        try:
            target = json.loads(body).get("addonName") or json.loads(body).get("nodegroupName")
        except (ValueError, AttributeError):
            target = None
        url = params.get("url_path", "")
        for marker in ("/addons/", "/node-groups/"):
            if marker in url:
                target = url.split(marker)[-1].split("/")[0].split("?")[0]
        seen.append((model.name, target or "", active))

    hooks(record, "before-call.eks")
    return seen


# -- a new cluster ---------------------------------------------------------------------

def test_a_new_cluster_gets_managed_addons_protection_and_standard_support(
        workdir: Path, aws: None, watch: list[tuple[str, str, bool]]) -> None:
    up("--yes")
    cluster = eks().describe_cluster(name=CLUSTER)["cluster"]
    assert cluster["version"] == "1.35"
    assert cluster["upgradePolicy"] == {"supportType": "STANDARD"}
    assert cluster["deletionProtection"] is True
    assert backend_cluster().bootstrap_self_managed_addons is False
    wanted = defaults("1.35")
    held = addons()
    assert set(held) == FIVE
    assert {n: (a["status"], a["addonVersion"]) for n, a in held.items()} == \
        {n: ("ACTIVE", wanted[n]) for n in FIVE}
    # coredns and the EBS CSI driver only once a node group was ACTIVE; the others before any.
    creates = {target: active for op, target, active in watch if op == "CreateAddon"}
    assert set(creates) == FIVE
    assert all(creates[n] for n in NEED_NODES), creates
    first_group = next(i for i, (op, _, _) in enumerate(watch) if op == "CreateNodegroup")
    early = [i for i, (op, target, _) in enumerate(watch)
             if op == "CreateAddon" and target not in NEED_NODES]
    assert early and max(early) < first_group
    # The EBS CSI driver's credentials: EKS Pod Identity, a role trusting pods.eks.amazonaws.com.
    assoc, = eks().list_pod_identity_associations(clusterName=CLUSTER)["associations"]
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("kube-system", "ebs-csi-controller-sa")
    assert assoc["ownerArn"] == held["aws-ebs-csi-driver"]["addonArn"]
    role_arn = eks().describe_pod_identity_association(
        clusterName=CLUSTER, associationId=assoc["associationId"])["association"]["roleArn"]
    iam = boto3.client("iam", region_name=REGION)
    role = iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "pods.eks.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [
        "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]


def test_node_groups_roll_a_third_at_a_time_and_accelerator_pools_repair_nodes(
        workdir: Path, aws: None) -> None:
    up("--yes")
    groups = node_groups()
    assert len(groups) == GROUPS
    assert {g["updateConfig"].get("maxUnavailablePercentage") for g in groups.values()} == {33}
    repair = {n: g["nodeRepairConfig"]["enabled"] for n, g in groups.items()}
    assert repair == {"default": False, "scheduler": False, "module-repository": False,
                      "prometheus": False, "runner-cpu": False, "runner-gpu": True}
    # Per pool: both can be changed, in place.
    config = yaml.safe_load(Path("exaprov.yaml").read_text())
    pools = [{"suffix": "cpu", "node_instance_type": "m5.xlarge", "capacity_type": "SPOT",
              "min_size": 1, "max_size": 4, "node_repair": True, "max_unavailable_percentage": 50},
             {"suffix": "gpu", "node_instance_category": "gpu", "node_instance_type": "g4dn.xlarge",
              "max_size": 3, "accelerator_label": "nvidia-tesla-t4", "node_repair": False}]
    write_config({**config, "cluster": {**config.get("cluster", {}), "runner_pools": pools}})
    up("--yes")
    groups = node_groups()
    assert groups["runner-cpu"]["nodeRepairConfig"]["enabled"] is True
    assert groups["runner-cpu"]["updateConfig"]["maxUnavailablePercentage"] == 50
    assert groups["runner-gpu"]["nodeRepairConfig"]["enabled"] is False


def test_a_converged_up_changes_nothing(workdir: Path, aws: None, calls: CallLog) -> None:
    up("--yes")
    calls.clear()
    up("--yes")
    assert calls.mutating() == []
    eks_reads = {op for service, op in calls.calls if service == "eks"}
    # The add-ons cost ListAddons once and DescribeAddon per add-on; defaults are not re-read.
    assert "DescribeAddonVersions" not in eks_reads and "ListInsights" not in eks_reads
    assert [c for c in calls.calls if c == ("eks", "ListAddons")] == [("eks", "ListAddons")]


def test_addons_key_pins_a_version_and_adds_one_by_name(workdir: Path, aws: None) -> None:
    coredns = sorted(v["addonVersion"] for a in eks().describe_addon_versions(
        kubernetesVersion="1.35", addonName="coredns")["addons"] for v in a["addonVersions"])[0]
    write_config({"name": "example", "cluster": {"addons": {
        "coredns": coredns, "aws-efs-csi-driver": None}}})
    up("--yes")
    held = addons()
    assert held["coredns"]["addonVersion"] == coredns != defaults("1.35")["coredns"]
    assert held["aws-efs-csi-driver"]["status"] == "ACTIVE"
    assert held["aws-efs-csi-driver"]["addonVersion"] == defaults("1.35")["aws-efs-csi-driver"]
    write_config({"name": "example", "cluster": {"addons": {}}})
    up("--yes")
    held = addons()
    assert set(held) == FIVE and held["coredns"]["addonVersion"] == defaults("1.35")["coredns"]


def test_a_bad_addons_key_is_refused_before_any_call(workdir: Path, aws: None,
                                                     calls: CallLog) -> None:
    write_config({"name": "example", "cluster": {"addons": {"Bad_Name": None, "coredns": "latest"}}})
    result = cli("plan")
    assert result.exit_code == 2
    assert "cluster.addons.Bad_Name" in result.output and "cluster.addons.coredns" in result.output
    assert calls.calls == []


# -- the Kubernetes version and its support ------------------------------------------------

def test_init_asks_eks_for_the_newest_version_in_standard_support(
        workdir: Path, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXAPROV_OFFLINE")
    result = cli("init", "--force")
    assert result.exit_code == 0 and "eks:DescribeClusterVersions" in result.output
    newest = max((v["clusterVersion"] for v in eks().describe_cluster_versions()["clusterVersions"]
                  if v["versionStatus"] == "STANDARD_SUPPORT"), key=eks_versions.minor)
    assert yaml.safe_load(Path("exaprov.yaml").read_text())["cluster"]["cluster_version"] == newest


def test_init_without_credentials_uses_the_shipped_table(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, calls: CallLog) -> None:
    monkeypatch.delenv("EXAPROV_OFFLINE")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = cli("init", "--force")
    assert result.exit_code == 0 and "no AWS credentials" in result.output, result.output
    assert calls.calls == []
    version = yaml.safe_load(Path("exaprov.yaml").read_text())["cluster"]["cluster_version"]
    info = eks_versions.shipped()[version]
    assert info.status == eks_versions.STANDARD and not info.approximate


def test_plan_and_status_warn_about_extended_support_with_dates_and_price(
        workdir: Path, aws: None) -> None:
    write_config({"name": "example", "cluster": {"cluster_version": "1.34"}})
    up("--yes")
    for command in ("plan", "status"):
        result = cli(command)
        assert result.exit_code == 0, result.output
        assert "Kubernetes 1.34: extended support" in result.output
        assert "2026-12-02" in result.output and "2027-12-02" in result.output
        assert "$0.60 instead of $0.10" in result.output
    notices = json.loads(cli("status", "-o", "json").stdout)["notices"]
    assert any(n.startswith("WARNING: Kubernetes 1.34 left standard support") for n in notices)


def test_a_warning_sixty_days_before_standard_support_ends(
        workdir: Path, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    up("--yes")
    assert "WARNING" not in " ".join(json.loads(cli("status", "-o", "json").stdout)["notices"])
    soon = date(2027, 2, 1)  # 54 days before 1.35 leaves standard support
    monkeypatch.setattr(emulator_eks, "_today", lambda: soon)
    monkeypatch.setattr(eks_versions, "today", lambda: soon)
    notices = json.loads(cli("plan", "-o", "json").stdout)["notices"]
    assert any("1.35 leaves standard support on 2027-03-27 (in 54 days)" in n and "$0.60" in n
               for n in notices), notices


def test_support_type_and_deletion_protection_are_reconciled(workdir: Path, aws: None,
                                                             calls: CallLog) -> None:
    up("--yes")
    eks().update_cluster_config(name=CLUSTER, upgradePolicy={"supportType": "EXTENDED"})
    eks().update_cluster_config(name=CLUSTER, deletionProtection=False)
    assert cli("status", "-o", "json").exit_code == 0
    calls.clear()
    up("--yes")
    assert [op for _, op in calls.mutating()] == ["UpdateClusterConfig", "UpdateClusterConfig"]
    cluster = eks().describe_cluster(name=CLUSTER)["cluster"]
    assert cluster["upgradePolicy"]["supportType"] == "STANDARD" and cluster["deletionProtection"]
    write_config({"name": "example", "cluster": {"support_type": "EXTENDED",
                                                 "deletion_protection": False}})
    up("--yes")
    cluster = eks().describe_cluster(name=CLUSTER)["cluster"]
    assert cluster["upgradePolicy"]["supportType"] == "EXTENDED"
    assert cluster["deletionProtection"] is False


# -- upgrades ------------------------------------------------------------------------------

def test_an_upgrade_is_control_plane_then_every_addon_then_every_node_group(
        workdir: Path, aws: None, watch: list[tuple[str, str, bool]]) -> None:
    write_config({"name": "example", "cluster": {"cluster_version": "1.34"}})
    up("--yes")
    assert {a["addonVersion"] for a in addons().values()} == {defaults("1.34")[n] for n in FIVE}
    write_config({"name": "example", "cluster": {"cluster_version": "1.35"}})
    plan = cli("plan")
    assert "Upgrade 1.34 → 1.35, one sequence" in plan.output
    planned = [c["address"] for c in json.loads(cli("plan", "-o", "json").stdout)["changes"]]
    assert planned[0] == "cluster.cluster"
    assert {a.split(".")[1] for a in planned if a.startswith("addons.")} == FIVE
    assert len([a for a in planned if a.startswith("node-groups.")]) == GROUPS
    watch.clear()
    up("--yes")
    order = [(op, target) for op, target, _ in watch
             if op in ("UpdateClusterVersion", "UpdateAddon", "UpdateNodegroupVersion")]
    kinds = [op for op, _ in order]
    assert kinds == ["UpdateClusterVersion"] + ["UpdateAddon"] * 5 + \
        ["UpdateNodegroupVersion"] * GROUPS, order
    assert {t for op, t in order if op == "UpdateAddon"} == FIVE
    assert eks().describe_cluster(name=CLUSTER)["cluster"]["version"] == "1.35"
    assert {n: a["addonVersion"] for n, a in addons().items()} == \
        {n: defaults("1.35")[n] for n in FIVE}
    assert {g["version"] for g in node_groups().values()} == {"1.35"}


def test_an_error_insight_stops_the_upgrade_unless_confirmed(
        workdir: Path, aws: None, calls: CallLog) -> None:
    write_config({"name": "example", "cluster": {"cluster_version": "1.34"}})
    up("--yes")
    emulator_eks.add_insight(backend_cluster(), "ERROR", "Deprecated APIs removed in Kubernetes v1.35",
                             "flowcontrol.apiserver.k8s.io/v1beta3 is still called")
    write_config({"name": "example", "cluster": {"cluster_version": "1.35"}})
    plan = cli("plan")
    assert "Deprecated APIs removed in Kubernetes v1.35" in plan.output
    calls.clear()
    result = cli("up")  # no terminal to ask on, no --yes
    assert result.exit_code == 2, result.output
    assert "Deprecated APIs removed in Kubernetes v1.35" in result.output
    assert "no terminal to ask on" in result.output and "--yes" in result.output
    asked: list[str] = []
    with pytest.raises(InputError) as declined:  # asked on a terminal, and the answer is no
        Deployment(Target()).up(confirm=lambda question: asked.append(question) is not None)
    assert "nothing was changed" in declined.value.message and "1.34 → 1.35" in asked[0]
    assert calls.mutating() == []
    assert eks().describe_cluster(name=CLUSTER)["cluster"]["version"] == "1.34"
    up("--yes")
    assert eks().describe_cluster(name=CLUSTER)["cluster"]["version"] == "1.35"


# -- a deployment built by the previous exaprov --------------------------------------------

def make_it_old() -> None:
    """The cluster as the previous exaprov left it: self-managed add-ons (the API's default
    bootstrap), no deletion protection, EXTENDED support (the API's default), node groups
    with EKS's default update settings."""
    cluster = backend_cluster()
    cluster._exaprov_addons.clear()
    cluster._exaprov_pod_identity.clear()
    cluster.bootstrap_self_managed_addons = True
    cluster._exaprov_self_managed = {"vpc-cni", "kube-proxy", "coredns"}
    cluster.deletion_protection = False
    cluster.upgrade_policy = {"supportType": "EXTENDED"}
    for group in cluster.nodegroups.values():
        group.update_config = {"maxUnavailable": 1}
        group.node_repair_config = {"enabled": False}


def test_a_cluster_with_self_managed_addons_is_brought_under_management_in_place(
        workdir: Path, aws: None, calls: CallLog) -> None:
    up("--yes")
    make_it_old()
    before = eks().describe_cluster(name=CLUSTER)["cluster"]
    calls.clear()
    up("--yes")
    ops = [op for _, op in calls.mutating()]
    assert "CreateCluster" not in ops and "DeleteCluster" not in ops
    assert ops.count("CreateAddon") == 5
    after = eks().describe_cluster(name=CLUSTER)["cluster"]
    assert (after["arn"], after["createdAt"]) == (before["arn"], before["createdAt"])
    assert after["deletionProtection"] is True and after["upgradePolicy"]["supportType"] == "STANDARD"
    held = addons()
    assert {n: a["status"] for n, a in held.items()} == dict.fromkeys(FIVE, "ACTIVE")
    assert backend_cluster()._exaprov_self_managed == set()  # taken over, not left beside
    assert {g["updateConfig"].get("maxUnavailablePercentage") for g in node_groups().values()} == {33}
    calls.clear()
    up("--yes")
    assert calls.mutating() == []


# -- destroy -------------------------------------------------------------------------------

def test_destroy_of_a_protected_cluster_needs_the_flag(workdir: Path, aws: None,
                                                       calls: CallLog) -> None:
    before = census()
    up("--yes")
    built = census()
    assert built["eks:addon", f"{CLUSTER}/coredns"] == 1
    calls.clear()
    result = cli("destroy", "--yes")
    assert result.exit_code == 2, result.output
    assert CLUSTER in result.output and "deletion protection" in result.output
    assert "--disable-deletion-protection" in result.output
    assert calls.mutating() == []
    assert census() == built, difference(built, census())
    result = cli("destroy", "--yes", "--disable-deletion-protection", "--skip-final-snapshot")
    assert result.exit_code == 0, result.output
    assert "turning off deletion protection of EKS cluster" in result.output
    assert census() == before, difference(before, census())


def test_destroy_deletes_addons_before_the_ebs_role_and_the_cluster(
        workdir: Path, aws: None, calls: CallLog) -> None:
    up("--yes")
    calls.clear()
    assert cli("destroy", "--yes", "--disable-deletion-protection", "--skip-final-snapshot").exit_code == 0
    ops = [op for _, op in calls.mutating()]
    deletes = [i for i, op in enumerate(ops) if op == "DeleteAddon"]
    assert len(deletes) == 5
    role = ops.index("DeleteRole")  # the first role deleted is the EBS CSI driver's
    assert max(deletes) < ops.index("DeleteCluster") and max(deletes) < role
    assert ops.index("DeleteNodegroup") > min(deletes)  # the late add-ons go before the nodes


def test_accelerator_pools_tell_the_autoscaler_their_devices_per_node(
        workdir: Path, aws: None) -> None:
    pools = [{"suffix": "gpu", "node_instance_category": "gpu", "node_instance_type": "g4dn.12xlarge",
              "max_size": 3},
             {"suffix": "inf", "node_instance_category": "inferentia",
              "node_instance_type": "inf2.48xlarge", "max_size": 2},
             {"suffix": "cpu", "node_instance_type": "m5.xlarge", "max_size": 2}]
    write_config({"name": "example", "cluster": {"runner_pools": pools}})
    up("--yes")
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    resources = {}
    for name, group in node_groups().items():
        asg = group["resources"]["autoScalingGroups"][0]["name"]
        tags = autoscaling.describe_tags(Filters=[{"Name": "auto-scaling-group", "Values": [asg]}])
        resources[name] = {t["Key"].rsplit("/resources/", 1)[1]: t["Value"] for t in tags["Tags"]
                           if "/node-template/resources/" in t["Key"]}
    assert resources["runner-gpu"] == {"nvidia.com/gpu": "4"}
    assert resources["runner-inf"] == {"aws.amazon.com/neuron": "12"}
    assert resources["runner-cpu"] == {} and resources["default"] == {}


def test_the_default_version_is_in_standard_support_with_known_dates() -> None:
    from exaprov.config import DEFAULT_KUBERNETES_VERSION

    # As of the day the table (and with it the default) was written, not of the day the suite
    # runs: a release must not turn red on a date. Users see the warning at run time.
    as_of = date.fromisoformat(eks_versions.table_date())
    info = eks_versions.shipped(as_of)[DEFAULT_KUBERNETES_VERSION]
    assert info.status == eks_versions.STANDARD and not info.approximate
    # ... and stays so for a while: no warning yet (more than 60 days left).
    assert eks_versions.describe(info, DEFAULT_KUBERNETES_VERSION, day=as_of)[1] is None
