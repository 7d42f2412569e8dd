# ruff: noqa: F811 - the fixtures imported from test_emulator are parameters here
"""The emulator's EKS of December 2026 (exaprov/emulator_eks.py), call by call, as EKS documents it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.test_emulator import (  # noqa: F401 - fixtures
    _extended,
    error_code,
    make_cluster,
    make_nodegroup,
    world,
)


def test_cluster_versions_have_statuses_and_dates(world: dict[str, Any]) -> None:
    versions = {v["clusterVersion"]: v for v in world["eks"].describe_cluster_versions()[
        "clusterVersions"]}
    assert versions["1.34"]["versionStatus"] == "EXTENDED_SUPPORT"
    assert str(versions["1.34"]["endOfStandardSupportDate"].date()) == "2026-12-02"
    assert versions["1.35"]["versionStatus"] == "STANDARD_SUPPORT"
    assert str(versions["1.35"]["endOfStandardSupportDate"].date()) == "2027-03-27"
    assert "1.29" not in versions  # past extended support: only listed with includeAll
    assert "1.29" in {v["clusterVersion"] for v in world["eks"].describe_cluster_versions(
        includeAll=True)["clusterVersions"]}
    (one,) = world["eks"].describe_cluster_versions(clusterVersions=["1.35"])["clusterVersions"]
    assert one["clusterVersion"] == "1.35"


def test_create_cluster_records_bootstrap_support_type_and_protection(world: dict[str, Any]) -> None:
    plain = make_cluster(world, "plain", version="1.35")
    # The API's defaults: self-managed add-ons, EXTENDED support, no protection.
    assert plain["upgradePolicy"] == {"supportType": "EXTENDED"}
    assert plain["deletionProtection"] is False
    make_cluster(world, "new", version="1.35", bootstrapSelfManagedAddons=False,
                 upgradePolicy={"supportType": "STANDARD"}, deletionProtection=True)
    cluster = world["eks"].describe_cluster(name="new")["cluster"]
    assert cluster["upgradePolicy"] == {"supportType": "STANDARD"} and cluster["deletionProtection"]
    with pytest.raises(ClientError) as exc:
        world["eks"].delete_cluster(name="new")
    assert error_code(exc) == "InvalidRequestException"
    assert "deletion protection" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        world["eks"].update_cluster_config(name="new", deletionProtection=True)
    assert error_code(exc) == "InvalidParameterException"  # a no-op update is refused
    with pytest.raises(ClientError) as exc:
        world["eks"].update_cluster_config(name="new", deletionProtection=False,
                                           upgradePolicy={"supportType": "EXTENDED"})
    assert error_code(exc) == "InvalidParameterException"  # one kind of change per call
    update = world["eks"].update_cluster_config(name="new", deletionProtection=False)["update"]
    assert update["type"] == "DeletionProtectionUpdate"
    world["eks"].update_cluster_config(name="new", upgradePolicy={"supportType": "EXTENDED"})
    assert world["eks"].describe_cluster(name="new")["cluster"]["upgradePolicy"] == {
        "supportType": "EXTENDED"}
    world["eks"].delete_cluster(name="new")


def test_addons_need_nodes_to_be_healthy(world: dict[str, Any]) -> None:
    make_cluster(world, version="1.35", bootstrapSelfManagedAddons=False)
    eks = world["eks"]
    coredns = eks.create_addon(clusterName="c1", addonName="coredns")["addon"]
    assert coredns["status"] == "DEGRADED"
    assert coredns["health"]["issues"][0]["code"] == "InsufficientNumberOfReplicas"
    proxy = eks.create_addon(clusterName="c1", addonName="kube-proxy")["addon"]
    assert proxy["status"] == "ACTIVE" and proxy["addonVersion"].startswith("v1.35.")
    make_nodegroup(world)
    assert eks.describe_addon(clusterName="c1", addonName="coredns")["addon"]["status"] == "ACTIVE"
    assert eks.list_addons(clusterName="c1")["addons"] == ["coredns", "kube-proxy"]


def test_addon_versions_have_a_default_per_kubernetes_version(world: dict[str, Any]) -> None:
    def default(version: str) -> str:
        (addon,) = world["eks"].describe_addon_versions(kubernetesVersion=version,
                                                        addonName="vpc-cni")["addons"]
        return next(v["addonVersion"] for v in addon["addonVersions"]
                    if any(c["defaultVersion"] and c["clusterVersion"] == version
                           for c in v["compatibilities"]))
    assert default("1.34") != default("1.35")
    make_cluster(world, version="1.34", bootstrapSelfManagedAddons=False)
    with pytest.raises(ClientError) as exc:
        world["eks"].create_addon(clusterName="c1", addonName="vpc-cni", addonVersion="v9.9.9")
    assert error_code(exc) == "InvalidParameterException"
    world["eks"].create_addon(clusterName="c1", addonName="vpc-cni", addonVersion=default("1.34"))
    with pytest.raises(ClientError) as exc:
        world["eks"].create_addon(clusterName="c1", addonName="vpc-cni")
    assert error_code(exc) == "ResourceInUseException"


def test_taking_over_a_self_managed_component_needs_overwrite(world: dict[str, Any]) -> None:
    make_cluster(world, version="1.35")  # bootstraps self-managed vpc-cni, kube-proxy, coredns
    eks = world["eks"]
    failed = eks.create_addon(clusterName="c1", addonName="vpc-cni")["addon"]
    assert failed["status"] == "CREATE_FAILED"
    assert failed["health"]["issues"][0]["code"] == "ConfigurationConflict"
    eks.delete_addon(clusterName="c1", addonName="vpc-cni")
    taken = eks.create_addon(clusterName="c1", addonName="vpc-cni", resolveConflicts="OVERWRITE")
    assert taken["addon"]["status"] == "ACTIVE"


def test_update_and_delete_an_addon_with_its_pod_identity(world: dict[str, Any]) -> None:
    make_cluster(world, version="1.34", bootstrapSelfManagedAddons=False)
    make_nodegroup(world, version="1.34")
    iam, eks = world["iam"], world["eks"]
    untrusting = iam.create_role(RoleName="ebs", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                       "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    association = [{"serviceAccount": "ebs-csi-controller-sa", "roleArn": untrusting}]
    with pytest.raises(ClientError) as exc:
        eks.create_addon(clusterName="c1", addonName="aws-ebs-csi-driver",
                         podIdentityAssociations=association)
    assert error_code(exc) == "InvalidParameterException"
    iam.update_assume_role_policy(RoleName="ebs", PolicyDocument=json.dumps({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                       "Action": ["sts:AssumeRole", "sts:TagSession"]}]}))
    addon = eks.create_addon(clusterName="c1", addonName="aws-ebs-csi-driver",
                             podIdentityAssociations=association)["addon"]
    assert len(addon["podIdentityAssociations"]) == 1
    (assoc,) = eks.list_pod_identity_associations(clusterName="c1")["associations"]
    assert assoc["ownerArn"] == addon["addonArn"]
    eks.update_cluster_version(name="c1", version="1.35")
    with pytest.raises(ClientError):
        eks.update_nodegroup_version(clusterName="c1", nodegroupName="ng", version="1.36")
    (latest,) = eks.describe_addon_versions(kubernetesVersion="1.35",
                                            addonName="aws-ebs-csi-driver")["addons"]
    version = latest["addonVersions"][0]["addonVersion"]
    update = eks.update_addon(clusterName="c1", addonName="aws-ebs-csi-driver",
                              addonVersion=version, resolveConflicts="PRESERVE")["update"]
    assert eks.describe_update(name="c1", updateId=update["id"], addonName="aws-ebs-csi-driver")[
        "update"]["status"] == "Successful"
    assert eks.describe_addon(clusterName="c1", addonName="aws-ebs-csi-driver")["addon"][
        "addonVersion"] == version
    eks.delete_addon(clusterName="c1", addonName="aws-ebs-csi-driver")
    assert eks.list_pod_identity_associations(clusterName="c1")["associations"] == []
    with pytest.raises(ClientError) as exc:
        eks.describe_addon(clusterName="c1", addonName="aws-ebs-csi-driver")
    assert error_code(exc) == "ResourceNotFoundException"


def test_insights_filter_by_category_and_status(world: dict[str, Any]) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.eks.models import eks_backends

    from exaprov import emulator_eks

    make_cluster(world, version="1.35")
    eks = world["eks"]
    ready = {"categories": ["UPGRADE_READINESS"], "statuses": ["ERROR"]}
    assert eks.list_insights(clusterName="c1", filter=ready)["insights"] == []
    passing = eks.list_insights(clusterName="c1")["insights"]
    assert passing and {i["insightStatus"]["status"] for i in passing} == {"PASSING"}
    assert {i["kubernetesVersion"] for i in passing} == {"1.36"}
    emulator_eks.add_insight(eks_backends[DEFAULT_ACCOUNT_ID]["us-west-1"].clusters["c1"], "ERROR",
                             "Deprecated APIs removed in Kubernetes v1.36")
    (error,) = eks.list_insights(clusterName="c1", filter=ready)["insights"]
    assert error["name"] == "Deprecated APIs removed in Kubernetes v1.36"


def test_node_groups_echo_update_and_repair_settings(world: dict[str, Any]) -> None:
    make_cluster(world, version="1.35")
    default = make_nodegroup(world, name="plain")
    assert default["updateConfig"] == {"maxUnavailable": 1}
    assert default["nodeRepairConfig"] == {"enabled": False}
    gpu = make_nodegroup(world, name="gpu", updateConfig={"maxUnavailablePercentage": 33},
                         nodeRepairConfig={"enabled": True})
    described = world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="gpu")["nodegroup"]
    assert gpu["updateConfig"] == described["updateConfig"] == {"maxUnavailablePercentage": 33}
    assert described["nodeRepairConfig"] == {"enabled": True}
    with pytest.raises(ClientError) as exc:
        make_nodegroup(world, name="both", updateConfig={"maxUnavailable": 1,
                                                         "maxUnavailablePercentage": 10})
    assert error_code(exc) == "InvalidParameterException"
    world["eks"].update_nodegroup_config(clusterName="c1", nodegroupName="plain",
                                         nodeRepairConfig={"enabled": True})
    assert world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="plain")["nodegroup"][
        "nodeRepairConfig"] == {"enabled": True}
