"""The EKS cluster and its node groups against moto + exaprov's emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import pytest
from botocore.exceptions import ClientError

from exaprov import emulator
from exaprov.aws import tag_dict
from tests.conftest import REGION, cli, tagged, write_config

SYSTEM = {"default": ("m5.xlarge", 1, 10, {}, set()),
          "scheduler": ("c5.xlarge", 1, 2, {"role": "scheduler"},
                        {("dedicated", "scheduler", "NO_SCHEDULE")}),
          "module-repository": ("c5.xlarge", 1, 2, {"role": "module-repository"},
                                {("dedicated", "module-repository", "NO_SCHEDULE")}),
          "prometheus": ("m5.xlarge", 1, 1, {"role": "prometheus"},
                         {("dedicated", "prometheus", "NO_SCHEDULE")})}
CLUSTER = "exafunction-cluster-example"


def eks() -> Any:
    return boto3.client("eks", region_name=REGION)


def node_groups() -> dict[str, dict[str, Any]]:
    client = eks()
    return {n: client.describe_nodegroup(clusterName=CLUSTER, nodegroupName=n)["nodegroup"]
            for n in client.list_nodegroups(clusterName=CLUSTER)["nodegroups"]}


def test_up_builds_the_cluster_of_spec(workdir: Path, ec2: Any) -> None:
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    cluster = eks().describe_cluster(name=CLUSTER)["cluster"]
    network = json.loads(Path("state/example.json").read_text())["outputs"]["network"]
    assert cluster["version"] == "1.35"
    vpc_config = cluster["resourcesVpcConfig"]
    assert sorted(vpc_config["subnetIds"]) == sorted(network["private_subnet_ids"])
    assert vpc_config["endpointPrivateAccess"] and vpc_config["endpointPublicAccess"]
    assert vpc_config["publicAccessCidrs"] == ["0.0.0.0/0"]
    assert cluster["logging"]["clusterLogging"][0]["types"] == ["api", "audit", "authenticator"]
    kms = boto3.client("kms", region_name=REGION)
    key_arn = kms.describe_key(KeyId=f"alias/eks/{CLUSTER}")["KeyMetadata"]["Arn"]
    assert cluster["encryptionConfig"] == [{"resources": ["secrets"], "provider": {"keyArn": key_arn}}]
    assert cluster["tags"]["exaprov:deployment"] == "example"

    # The primary SG (made by EKS, here by the emulator) admits the whole VPC.
    primary = ec2.describe_security_groups(GroupIds=[vpc_config["clusterSecurityGroupId"]])[
        "SecurityGroups"][0]
    assert any(p.get("FromPort") == 0 and p.get("ToPort") == 65535 and
               {"CidrIp": "10.255.0.0/16"}.items() <= (p["IpRanges"] or [{}])[0].items()
               for p in primary["IpPermissions"])

    groups = node_groups()
    assert set(groups) == {*SYSTEM, "runner-cpu", "runner-gpu"}
    for name, (itype, low, high, labels, taints) in SYSTEM.items():
        group = groups[name]
        assert group["instanceTypes"] == [itype] and group["capacityType"] == "ON_DEMAND"
        assert (group["scalingConfig"]["minSize"], group["scalingConfig"]["maxSize"]) == (low, high)
        assert group["labels"] == labels
        assert {(t["key"], t.get("value", ""), t["effect"]) for t in group.get("taints", [])} == taints
        assert group["amiType"] == "AL2023_x86_64_STANDARD"
    cpu, gpu = groups["runner-cpu"], groups["runner-gpu"]
    assert (cpu["capacityType"], cpu["instanceTypes"], cpu["amiType"]) == (
        "SPOT", ["m5.xlarge"], "AL2023_x86_64_STANDARD")
    assert cpu["scalingConfig"] == {"minSize": 1, "maxSize": 4, "desiredSize": 1}
    assert cpu["labels"] == {"role": "runner"}
    assert {(t["key"], t["value"], t["effect"]) for t in cpu["taints"]} == {
        ("dedicated", "runner", "NO_SCHEDULE")}
    assert (gpu["capacityType"], gpu["instanceTypes"], gpu["amiType"]) == (
        "ON_DEMAND", ["g4dn.xlarge"], "AL2023_x86_64_NVIDIA")
    assert gpu["scalingConfig"] == {"minSize": 0, "maxSize": 3, "desiredSize": 0}
    assert gpu["labels"] == {"role": "runner", "nvidia.com/gpu": "present",
                             "k8s.amazonaws.com/accelerator": "nvidia-tesla-t4"}
    assert {(t["key"], t["value"], t["effect"]) for t in gpu["taints"]} == {
        ("dedicated", "runner", "NO_SCHEDULE"), ("nvidia.com/gpu", "present", "NO_SCHEDULE")}

    # Launch templates: disk, IMDSv2 with one hop, detailed monitoring, instance tags on
    # instances, volumes and network interfaces, a Name on instances and volumes.
    for name, group in groups.items():
        lt = group["launchTemplate"]
        data = ec2.describe_launch_template_versions(
            LaunchTemplateId=lt["id"], Versions=[str(lt["version"])])["LaunchTemplateVersions"][0][
            "LaunchTemplateData"]
        ebs = data["BlockDeviceMappings"][0]
        assert ebs["DeviceName"] == "/dev/xvda"
        assert ebs["Ebs"]["VolumeSize"] == 100 and ebs["Ebs"]["DeleteOnTermination"] is True
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
        assert data["Monitoring"] == {"Enabled": True}
        specs = {t["ResourceType"]: tag_dict(t["Tags"]) for t in data["TagSpecifications"]}
        named = {"owner": "exafunction", "Name": f"exafunction-cluster-example-{name}"}
        assert (specs["instance"], specs["volume"], specs["network-interface"]) \
            == (named, named, {"owner": "exafunction"})

    # ASG tags for the cluster autoscaler, including the scale-from-zero templates.
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    for name, group in groups.items():
        asg = group["resources"]["autoScalingGroups"][0]["name"]
        tags = {t["Key"]: t["Value"] for t in autoscaling.describe_tags(
            Filters=[{"Name": "auto-scaling-group", "Values": [asg]}])["Tags"]}
        assert tags["owner"] == "exafunction", name
        if name.startswith("runner-"):
            assert tags["k8s.io/cluster-autoscaler/node-template/label/role"] == "runner"
            assert tags["k8s.io/cluster-autoscaler/node-template/taint/dedicated"] == "runner:NoSchedule"
    gpu_asg = gpu["resources"]["autoScalingGroups"][0]["name"]
    gpu_tags = {t["Key"]: t["Value"] for t in autoscaling.describe_tags(
        Filters=[{"Name": "auto-scaling-group", "Values": [gpu_asg]}])["Tags"]}
    assert gpu_tags["k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"] == "present:NoSchedule"
    assert gpu_tags["k8s.io/cluster-autoscaler/node-template/label/k8s.amazonaws.com/accelerator"] == \
        "nvidia-tesla-t4"

    # OIDC provider for this cluster's issuer; log group retention; role policies.
    iam = boto3.client("iam", region_name=REGION)
    issuer = cluster["identity"]["oidc"]["issuer"].removeprefix("https://")
    arns = [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
    assert [a for a in arns if a.endswith(issuer)]
    provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arns[0])
    assert provider["ClientIDList"] == ["sts.amazonaws.com"]
    logs = boto3.client("logs", region_name=REGION)
    group = logs.describe_log_groups(logGroupNamePrefix=f"/aws/eks/{CLUSTER}/cluster")["logGroups"][0]
    assert group["retentionInDays"] == 90
    attached = {p["PolicyName"] for p in iam.list_attached_role_policies(
        RoleName=cluster["roleArn"].rsplit("/", 1)[1])["AttachedPolicies"]}
    assert attached == {"AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController"}


def test_second_up_makes_no_mutating_call(workdir: Path, aws: None, calls: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    calls.clear()
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert calls.mutating() == []


def test_raising_max_size_is_one_update_call(workdir: Path, aws: None, calls: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    write_config({"name": "example", "cluster": {"runner_pools": [
        {"suffix": "cpu", "node_instance_category": "cpu", "capacity_type": "SPOT",
         "node_instance_type": "m5.xlarge", "disk_size": 100, "min_size": 1, "max_size": 8},
        {"suffix": "gpu", "node_instance_category": "gpu", "capacity_type": "ON_DEMAND",
         "node_instance_type": "g4dn.xlarge", "disk_size": 100, "min_size": 0, "max_size": 3,
         "accelerator_label": "nvidia-tesla-t4"}]}})
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == [("eks", "UpdateNodegroupConfig")]
    scaling = node_groups()["runner-cpu"]["scalingConfig"]
    assert scaling == {"minSize": 1, "maxSize": 8, "desiredSize": 1}


def test_removing_a_pool_is_a_planned_delete_of_only_that_pool(workdir: Path, aws: None) -> None:
    assert cli("up", "--yes").exit_code == 0
    write_config({"name": "example", "cluster": {"runner_pools": [
        {"suffix": "cpu", "node_instance_category": "cpu", "capacity_type": "SPOT",
         "node_instance_type": "m5.xlarge", "disk_size": 100, "min_size": 1, "max_size": 4}]}})
    plan = json.loads(cli("plan", "--output", "json").stdout)
    assert [(c["action"], c["address"]) for c in plan["changes"]] == [
        ("delete", "node-groups.group:runner-gpu")]
    refused = cli("up")  # no terminal to confirm on: nothing deleted
    assert refused.exit_code == 2 and "runner-gpu" in refused.output
    assert "runner-gpu" in node_groups()
    assert cli("up", "--yes").exit_code == 0
    assert set(node_groups()) == {*SYSTEM, "runner-cpu"}


def test_role_propagation_errors_are_retried(workdir: Path, aws: None) -> None:
    """EKS rejects a role created seconds ago until IAM has propagated it."""
    refusals = [2]

    def not_yet(model: Any, **_: Any) -> None:
        if model.name == "CreateCluster" and refusals[0] > 0:
            refusals[0] -= 1
            raise ClientError({"Error": {"Code": "InvalidParameterException", "Message":
                               "Role with arn: arn:aws:iam::123456789012:role/x, could not be "
                               "assumed because it does not exist or the trusted entity is not "
                               "correct"}}, "CreateCluster")

    entry = ("before-call", not_yet)
    botocore.handlers.BUILTIN_HANDLERS.append(entry)
    try:
        result = cli("up", "--yes")
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(entry)
    assert result.exit_code == 0, result.output
    assert refusals == [0]
    assert eks().list_clusters()["clusters"] == [CLUSTER]


def test_a_cluster_creating_past_the_timeout_is_resumed(
        workdir: Path, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real EKS takes 10-16 minutes; a wait that times out leaves the cluster recorded and the
    next `up` waits for it instead of creating a second one."""
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "0.0001")
    emulator.configure_durations(cluster_create=3600.0)
    result = cli("up", "--yes")
    assert result.exit_code == 1
    assert f"cluster {CLUSTER} still CREATING" in result.output
    record = json.loads(Path("state/example.json").read_text())["resources"]["cluster.cluster"]
    assert record["status"] == "created" and record["id"] == CLUSTER

    emulator.configure_durations()
    monkeypatch.setattr(emulator, "_now", lambda: float("inf"))  # the hour has passed
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert eks().list_clusters()["clusters"] == [CLUSTER]
    assert eks().describe_cluster(name=CLUSTER)["cluster"]["status"] == "ACTIVE"


def test_destroy_leaves_nothing_even_with_a_kubernetes_load_balancer(
        workdir: Path, ec2: Any) -> None:
    assert cli("up", "--yes").exit_code == 0
    vpc_id = tagged(ec2, "describe_vpcs", "Vpcs")[0]["VpcId"]
    subnets = json.loads(Path("state/example.json").read_text())["outputs"]["network"][
        "public_subnet_ids"]
    # What the AWS load balancer controller makes for a LoadBalancer Service (Grafana).
    k8s_tags = [{"Key": f"kubernetes.io/cluster/{CLUSTER}", "Value": "owned"},
                {"Key": "elbv2.k8s.aws/cluster", "Value": CLUSTER}]
    lb_sg = ec2.create_security_group(GroupName="k8s-elb-grafana", Description="k8s", VpcId=vpc_id,
                                      TagSpecifications=[{"ResourceType": "security-group",
                                                          "Tags": k8s_tags}])["GroupId"]
    elbv2 = boto3.client("elbv2", region_name=REGION)
    elbv2.create_load_balancer(Name="k8s-grafana", Subnets=subnets[:2], SecurityGroups=[lb_sg],
                               Tags=k8s_tags)

    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    assert elbv2.describe_load_balancers()["LoadBalancers"] == []
    assert eks().list_clusters()["clusters"] == []
    assert tagged(ec2, "describe_vpcs", "Vpcs") == []
    assert tagged(ec2, "describe_security_groups", "SecurityGroups") == []
    assert tagged(ec2, "describe_launch_templates", "LaunchTemplates") == []
    iam = boto3.client("iam", region_name=REGION)
    assert [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(CLUSTER)] == []
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    logs = boto3.client("logs", region_name=REGION)
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/eks/")["logGroups"] == []
    kms = boto3.client("kms", region_name=REGION)
    ours = [k["KeyId"] for k in kms.list_keys()["Keys"]
            if {"TagKey": "exaprov:deployment", "TagValue": "example"}
            in kms.list_resource_tags(KeyId=k["KeyId"])["Tags"]]
    states = [kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] for k in ours]
    assert states == ["PendingDeletion"]  # AWS's minimum 7-day window before it is gone
    assert cli("destroy", "--yes", "--disable-deletion-protection").exit_code == 0


def pools(cpu_type: str = "m5.xlarge", cpu_disk: int = 100) -> dict[str, Any]:
    return {"runner_pools": [
        {"suffix": "cpu", "node_instance_category": "cpu", "capacity_type": "SPOT",
         "node_instance_type": cpu_type, "disk_size": cpu_disk, "min_size": 1, "max_size": 4}]}


def test_instance_type_change_replaces_the_group_new_first(
        workdir: Path, aws: None, calls: Any) -> None:
    write_config({"name": "example", "cluster": pools()})
    assert cli("up", "--yes").exit_code == 0
    old = node_groups()["runner-cpu"]
    write_config({"name": "example", "cluster": pools(cpu_type="m5.2xlarge")})
    plan = json.loads(cli("plan", "--output", "json").stdout)
    assert [(c["action"], c["address"]) for c in plan["changes"]] == [
        ("replace", "node-groups.group:runner-cpu")]
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    operations = [op for _, op in calls.mutating()]
    # Capacity never drops to zero: the new group exists before the old one is deleted.
    assert operations.index("CreateNodegroup") < operations.index("DeleteNodegroup")
    groups = node_groups()
    new = [g for n, g in groups.items() if n.startswith("runner-cpu")]
    assert len(new) == 1 and new[0]["instanceTypes"] == ["m5.2xlarge"]
    assert new[0]["nodegroupName"] != old["nodegroupName"]
    assert new[0]["tags"]["exaprov:resource"] == "group:runner-cpu"
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []


def test_disk_size_change_is_a_new_template_version_rolled_out(
        workdir: Path, ec2: Any, calls: Any) -> None:
    write_config({"name": "example", "cluster": pools()})
    assert cli("up", "--yes").exit_code == 0
    before = node_groups()["runner-cpu"]["launchTemplate"]
    write_config({"name": "example", "cluster": pools(cpu_disk=200)})
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert [op for _, op in calls.mutating()] == ["CreateLaunchTemplateVersion",
                                                  "UpdateNodegroupVersion"]
    after = node_groups()["runner-cpu"]["launchTemplate"]
    assert after["id"] == before["id"] and int(after["version"]) == int(before["version"]) + 1
    data = ec2.describe_launch_template_versions(LaunchTemplateId=after["id"], Versions=[
        str(after["version"])])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 200


def test_detailed_monitoring_off_is_a_new_template_version(
        workdir: Path, ec2: Any, calls: Any) -> None:
    write_config({"name": "example", "cluster": pools()})
    assert cli("up", "--yes").exit_code == 0
    write_config({"name": "example", "cluster": {**pools(), "detailed_monitoring": False}})
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert ("ec2", "CreateLaunchTemplateVersion") in calls.mutating()
    lt = node_groups()["runner-cpu"]["launchTemplate"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=lt["id"], Versions=[
        str(lt["version"])])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["Monitoring"] == {"Enabled": False}
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []


def test_version_upgrade_one_minor_then_node_groups(workdir: Path, aws: None, calls: Any) -> None:
    write_config({"name": "example", "cluster": {**pools(), "cluster_version": "1.33"}})
    assert cli("up", "--yes").exit_code == 0
    write_config({"name": "example", "cluster": {**pools(), "cluster_version": "1.35"}})
    calls.clear()
    too_far = cli("up", "--yes")
    assert too_far.exit_code == 2 and "one minor version at a time" in too_far.output
    assert calls.mutating() == []
    write_config({"name": "example", "cluster": {**pools(), "cluster_version": "1.34"}})
    assert cli("up", "--yes").exit_code == 0, cli("status").output
    assert eks().describe_cluster(name=CLUSTER)["cluster"]["version"] == "1.34"
    assert {g["version"] for g in node_groups().values()} == {"1.34"}


def test_access_entries_for_aws_auth_roles_and_users(workdir: Path, aws: None) -> None:
    role = "arn:aws:iam::123456789012:role/platform-admins"
    user = "arn:aws:iam::123456789012:user/ci"
    iam = boto3.client("iam", region_name=REGION)  # EKS checks that the principals exist
    iam.create_role(RoleName="platform-admins", AssumeRolePolicyDocument="{}")
    iam.create_user(UserName="ci")
    write_config({"name": "example", "cluster": {**pools(), "aws_auth_roles": [
        {"rolearn": role, "username": "admin", "groups": ["system:masters"]}],
        "aws_auth_users": [{"userarn": user, "username": "ci", "groups": ["deployers"]}]}})
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    client = eks()
    ci = client.describe_access_entry(clusterName=CLUSTER, principalArn=user)["accessEntry"]
    assert (ci["username"], ci["kubernetesGroups"]) == ("ci", ["deployers"])
    policies = client.list_associated_access_policies(clusterName=CLUSTER, principalArn=role)
    assert [p["policyArn"] for p in policies["associatedAccessPolicies"]] == [
        "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"]
    write_config({"name": "example", "cluster": pools()})
    assert cli("up", "--yes").exit_code == 0
    left = client.list_access_entries(clusterName=CLUSTER)["accessEntries"]
    assert role not in left and user not in left


def test_labels_taints_and_a_lower_max_change_in_place(workdir: Path, aws: None, calls: Any) -> None:
    write_config({"name": "example", "cluster": pools()})
    assert cli("up", "--yes").exit_code == 0
    group = node_groups()["runner-cpu"]
    # The cluster autoscaler scaled the group to 4; exaprov never reverts that.
    eks().update_nodegroup_config(clusterName=CLUSTER, nodegroupName="runner-cpu",
                                  scalingConfig={"minSize": 1, "maxSize": 4, "desiredSize": 4})
    changed = pools()
    changed["runner_pools"][0].update(max_size=3, additional_labels={"team": "ml"},
                                      additional_taints=[{"key": "gpu-free", "value": "yes",
                                                          "effect": "NO_EXECUTE"}])
    write_config({"name": "example", "cluster": changed})
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == [("eks", "UpdateNodegroupConfig"), ("autoscaling", "CreateOrUpdateTags")]
    group = node_groups()["runner-cpu"]
    assert group["scalingConfig"] == {"minSize": 1, "maxSize": 3, "desiredSize": 3}  # clamped
    assert group["labels"] == {"role": "runner", "team": "ml"}
    assert {(t["key"], t["value"], t["effect"]) for t in group["taints"]} == {
        ("dedicated", "runner", "NO_SCHEDULE"), ("gpu-free", "yes", "NO_EXECUTE")}
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    asg = group["resources"]["autoScalingGroups"][0]["name"]

    def template_tags() -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in autoscaling.describe_tags(Filters=[
            {"Name": "auto-scaling-group", "Values": [asg]}])["Tags"]
            if t["Key"].startswith("k8s.io/cluster-autoscaler/node-template/")}

    assert template_tags()["k8s.io/cluster-autoscaler/node-template/label/team"] == "ml"
    write_config({"name": "example", "cluster": pools()})  # label and taint removed again
    assert cli("up", "--yes").exit_code == 0
    assert set(template_tags()) == {"k8s.io/cluster-autoscaler/node-template/label/role",
                                    "k8s.io/cluster-autoscaler/node-template/taint/dedicated"}


def test_a_principal_eks_already_gave_access_is_refused(workdir: Path, aws: None) -> None:
    """EKS makes access entries itself (cluster creator, node roles); one cannot be made twice."""
    write_config({"name": "example", "cluster": pools()})
    assert cli("up", "--yes").exit_code == 0
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="someone", AssumeRolePolicyDocument="{}")
    arn = "arn:aws:iam::123456789012:role/someone"
    eks().create_access_entry(clusterName=CLUSTER, principalArn=arn)  # not exaprov's
    write_config({"name": "example", "cluster": {**pools(), "aws_auth_roles": [
        {"rolearn": arn, "username": "someone", "groups": ["readers"]}]}})
    result = cli("up", "--yes")
    assert result.exit_code == 2
    assert arn in result.output and "did not make" in result.output
    entry = eks().describe_access_entry(clusterName=CLUSTER, principalArn=arn)["accessEntry"]
    assert entry.get("kubernetesGroups", []) == []  # untouched
