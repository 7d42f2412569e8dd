"""The emulator's EKS: what real EKS does and moto does not, in-process under mock_aws()."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from exaprov import emulator
from exaprov.errors import InputError

REGION = "us-west-1"
ACCOUNT = "123456789012"
CLUSTER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/cluster"
NODE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/node"


class Clock:
    """Stands in for emulator._now(): time moves only when a test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(emulator, "_now", fake)
    return fake


@pytest.fixture(autouse=True)
def _extended() -> Iterator[None]:
    emulator.install_extensions()
    yield
    emulator.configure_durations()  # back to instant, moto's behaviour


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    """A VPC with two subnets in two AZs (as EKS requires), and the clients the tests use."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        azs = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
        vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24",
                                     AvailabilityZone=azs[i % len(azs)])["Subnet"]["SubnetId"]
                   for i in range(2)]
        extra_sg = ec2.create_security_group(GroupName="extra", Description="extra",
                                             VpcId=vpc_id)["GroupId"]
        yield {"ec2": ec2, "eks": boto3.client("eks", region_name=REGION),
               "asg": boto3.client("autoscaling", region_name=REGION),
               "iam": boto3.client("iam", region_name=REGION),
               "vpc_id": vpc_id, "subnets": subnets, "extra_sg": extra_sg}


def make_cluster(world: dict[str, Any], name: str = "c1", version: str = "1.30",
                 **extra: Any) -> dict[str, Any]:
    return world["eks"].create_cluster(
        name=name, version=version, roleArn=CLUSTER_ROLE,
        resourcesVpcConfig={"subnetIds": world["subnets"], "securityGroupIds": [world["extra_sg"]]},
        **extra)["cluster"]


def make_nodegroup(world: dict[str, Any], cluster: str = "c1", name: str = "ng",
                   **extra: Any) -> dict[str, Any]:
    extra.setdefault("scalingConfig", {"minSize": 1, "maxSize": 3, "desiredSize": 1})
    return world["eks"].create_nodegroup(clusterName=cluster, nodegroupName=name, nodeRole=NODE_ROLE,
                                         subnets=world["subnets"], **extra)["nodegroup"]


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def asg_of(world: dict[str, Any], nodegroup: dict[str, Any]) -> dict[str, Any] | None:
    name = nodegroup["resources"]["autoScalingGroups"][0]["name"]
    groups = world["asg"].describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return groups["AutoScalingGroups"][0] if groups["AutoScalingGroups"] else None


# -- the primary security group and the issuer -----------------------------------------

def test_primary_security_group_lives_in_the_cluster_vpc_and_goes_with_it(world: dict[str, Any]) -> None:
    cluster = make_cluster(world)
    vpc = world["eks"].describe_cluster(name="c1")["cluster"]["resourcesVpcConfig"]
    assert vpc["vpcId"] == world["vpc_id"]
    assert vpc["securityGroupIds"] == [world["extra_sg"]]
    assert vpc["clusterSecurityGroupId"] == cluster["resourcesVpcConfig"]["clusterSecurityGroupId"]
    (group,) = world["ec2"].describe_security_groups(GroupIds=[vpc["clusterSecurityGroupId"]])[
        "SecurityGroups"]
    assert group["VpcId"] == world["vpc_id"]
    assert group["GroupName"].startswith("eks-cluster-sg-c1-")
    assert group["Description"].startswith("EKS created security group applied to ENI")
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags["kubernetes.io/cluster/c1"] == "owned"
    assert tags["aws:eks:cluster-name"] == "c1"

    world["eks"].delete_cluster(name="c1")
    with pytest.raises(ClientError) as exc:
        world["eks"].describe_cluster(name="c1")
    assert error_code(exc) == "ResourceNotFoundException"
    assert not [g for g in world["ec2"].describe_security_groups()["SecurityGroups"]
                if g["GroupId"] == vpc["clusterSecurityGroupId"]]


def test_each_cluster_has_its_own_oidc_issuer(world: dict[str, Any]) -> None:
    issuers = {make_cluster(world, name)["identity"]["oidc"]["issuer"] for name in ("a", "b")}
    assert len(issuers) == 2
    for issuer in issuers:
        prefix = f"https://oidc.eks.{REGION}.amazonaws.com/id/"
        assert issuer.startswith(prefix)
        ident = issuer.removeprefix(prefix)
        assert len(ident) == 32 and ident == ident.upper()
        int(ident, 16)


def test_subnets_must_exist_and_span_two_azs(world: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as exc:
        world["eks"].create_cluster(name="bad", roleArn=CLUSTER_ROLE,
                                    resourcesVpcConfig={"subnetIds": world["subnets"][:1]})
    assert error_code(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        world["eks"].create_cluster(name="bad", roleArn=CLUSTER_ROLE,
                                    resourcesVpcConfig={"subnetIds": ["subnet-12345678"]})
    assert error_code(exc) == "InvalidParameterException"


# -- node groups and their Auto Scaling groups -----------------------------------------

def test_nodegroup_has_a_real_asg_that_follows_it(world: dict[str, Any]) -> None:
    make_cluster(world)
    nodegroup = make_nodegroup(world)
    group = asg_of(world, nodegroup)
    assert group is not None
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (1, 3, 1)
    assert set(group["VPCZoneIdentifier"].split(",")) == set(world["subnets"])
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags["eks:cluster-name"] == "c1"
    assert tags["eks:nodegroup-name"] == "ng"
    assert tags["kubernetes.io/cluster/c1"] == "owned"

    world["asg"].create_or_update_tags(Tags=[{
        "ResourceId": group["AutoScalingGroupName"], "ResourceType": "auto-scaling-group",
        "Key": "owner", "Value": "exafunction", "PropagateAtLaunch": False}])
    tags = {t["Key"]: t["Value"] for t in asg_of(world, nodegroup)["Tags"]}  # type: ignore[index]
    assert tags["owner"] == "exafunction"

    world["eks"].update_nodegroup_config(clusterName="c1", nodegroupName="ng",
                                         scalingConfig={"minSize": 2, "maxSize": 5, "desiredSize": 2})
    group = asg_of(world, nodegroup)
    assert group is not None
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (2, 5, 2)
    described = world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="ng")["nodegroup"]
    assert described["scalingConfig"] == {"minSize": 2, "maxSize": 5, "desiredSize": 2}

    with pytest.raises(ClientError) as exc:  # EKS checks min <= desired <= max
        world["eks"].update_nodegroup_config(clusterName="c1", nodegroupName="ng",
                                             scalingConfig={"desiredSize": 9})
    assert error_code(exc) == "InvalidParameterException"

    world["eks"].delete_nodegroup(clusterName="c1", nodegroupName="ng")
    assert asg_of(world, nodegroup) is None
    assert world["eks"].list_nodegroups(clusterName="c1")["nodegroups"] == []


def test_labels_and_taints_updates_show_in_describe(world: dict[str, Any]) -> None:
    make_cluster(world)
    make_nodegroup(world, labels={"a": "1", "b": "2"},
                   taints=[{"key": "gpu", "value": "true", "effect": "NO_SCHEDULE"}])
    world["eks"].update_nodegroup_config(
        clusterName="c1", nodegroupName="ng",
        labels={"addOrUpdateLabels": {"c": "3"}, "removeLabels": ["a"]},
        taints={"addOrUpdateTaints": [{"key": "spot", "value": "yes", "effect": "NO_EXECUTE"}],
                "removeTaints": [{"key": "gpu", "value": "true", "effect": "NO_SCHEDULE"}]})
    nodegroup = world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="ng")["nodegroup"]
    assert nodegroup["labels"] == {"b": "2", "c": "3"}
    assert nodegroup["taints"] == [{"key": "spot", "value": "yes", "effect": "NO_EXECUTE"}]


def test_nodegroup_version_update_moves_the_launch_template_version(world: dict[str, Any]) -> None:
    make_cluster(world)
    template = world["ec2"].create_launch_template(
        LaunchTemplateName="nodes", LaunchTemplateData={"InstanceType": "m5.xlarge"})["LaunchTemplate"]
    world["ec2"].create_launch_template_version(
        LaunchTemplateId=template["LaunchTemplateId"], LaunchTemplateData={"InstanceType": "m5.2xlarge"})
    nodegroup = make_nodegroup(world, launchTemplate={"name": "nodes"})
    assert nodegroup["launchTemplate"] == {"name": "nodes", "id": template["LaunchTemplateId"],
                                           "version": "1"}
    assert asg_of(world, nodegroup)["Instances"][0]["InstanceType"] == "m5.xlarge"  # type: ignore[index]

    update = world["eks"].update_nodegroup_version(
        clusterName="c1", nodegroupName="ng",
        launchTemplate={"id": template["LaunchTemplateId"], "version": "2"})["update"]
    assert (update["type"], update["status"]) == ("VersionUpdate", "Successful")
    described = world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="ng")["nodegroup"]
    assert described["launchTemplate"]["version"] == "2"
    assert world["eks"].describe_update(name="c1", nodegroupName="ng",
                                        updateId=update["id"])["update"]["id"] == update["id"]
    with pytest.raises(ClientError) as exc:
        world["eks"].update_nodegroup_version(clusterName="c1", nodegroupName="ng",
                                              launchTemplate={"name": "nodes", "version": "7"})
    assert error_code(exc) == "InvalidParameterException"


# -- durations --------------------------------------------------------------------------

def test_cluster_stays_creating_then_active_and_refuses_nodegroups_meanwhile(
        world: dict[str, Any], clock: Clock) -> None:
    emulator.configure_durations(cluster_create=600, cluster_delete=300)
    assert make_cluster(world)["status"] == "CREATING"
    clock.advance(599)
    assert world["eks"].describe_cluster(name="c1")["cluster"]["status"] == "CREATING"
    with pytest.raises(ClientError) as exc:
        make_nodegroup(world)
    assert error_code(exc) == "InvalidRequestException"
    assert "is not in ACTIVE status" in str(exc.value)

    clock.advance(1)
    assert world["eks"].describe_cluster(name="c1")["cluster"]["status"] == "ACTIVE"
    make_nodegroup(world)
    with pytest.raises(ClientError) as exc:  # node groups attached: EKS refuses, as moto does
        world["eks"].delete_cluster(name="c1")
    assert error_code(exc) == "ResourceInUseException"
    world["eks"].delete_nodegroup(clusterName="c1", nodegroupName="ng")

    assert world["eks"].delete_cluster(name="c1")["cluster"]["status"] == "DELETING"
    assert world["eks"].describe_cluster(name="c1")["cluster"]["status"] == "DELETING"
    assert world["eks"].list_clusters()["clusters"] == ["c1"]
    with pytest.raises(ClientError) as exc:
        world["eks"].delete_cluster(name="c1")
    assert error_code(exc) == "ResourceInUseException" and "DELETING" in str(exc.value)
    clock.advance(300)
    with pytest.raises(ClientError) as exc:
        world["eks"].describe_cluster(name="c1")
    assert error_code(exc) == "ResourceNotFoundException"
    assert world["eks"].list_clusters()["clusters"] == []


def test_nodegroup_durations(world: dict[str, Any], clock: Clock) -> None:
    make_cluster(world)
    emulator.configure_durations(nodegroup_create=120, nodegroup_delete=60)
    nodegroup = make_nodegroup(world)
    assert nodegroup["status"] == "CREATING"
    with pytest.raises(ClientError) as exc:
        world["eks"].update_nodegroup_config(clusterName="c1", nodegroupName="ng",
                                             scalingConfig={"desiredSize": 2})
    assert error_code(exc) == "ResourceInUseException"
    clock.advance(120)
    assert world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="ng")[
        "nodegroup"]["status"] == "ACTIVE"
    world["eks"].delete_nodegroup(clusterName="c1", nodegroupName="ng")
    assert world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="ng")[
        "nodegroup"]["status"] == "DELETING"
    assert asg_of(world, nodegroup) is not None
    clock.advance(60)
    with pytest.raises(ClientError) as exc:
        world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="ng")
    assert error_code(exc) == "ResourceNotFoundException"
    assert asg_of(world, nodegroup) is None


def test_cluster_update_duration(world: dict[str, Any], clock: Clock) -> None:
    make_cluster(world)
    emulator.configure_durations(cluster_update=60)
    update = world["eks"].update_cluster_version(name="c1", version="1.31")["update"]
    assert update["status"] == "InProgress"
    assert world["eks"].describe_cluster(name="c1")["cluster"]["status"] == "UPDATING"
    clock.advance(60)
    assert world["eks"].describe_cluster(name="c1")["cluster"]["status"] == "ACTIVE"
    assert world["eks"].describe_update(name="c1", updateId=update["id"])["update"]["status"] == \
        "Successful"
    assert world["eks"].list_updates(name="c1")["updateIds"] == [update["id"]]


def test_durations_from_env_and_validation() -> None:
    env = {"EXAPROV_EMULATOR_CLUSTER_CREATE_SECONDS": "5", "EXAPROV_EMULATOR_NODEGROUP_DELETE_SECONDS": "0.5"}
    assert emulator.durations_from_env(env) == {"cluster_create": 5.0, "nodegroup_delete": 0.5}
    with pytest.raises(InputError):
        emulator.durations_from_env({"EXAPROV_EMULATOR_CLUSTER_DELETE_SECONDS": "soon"})
    with pytest.raises(InputError):
        emulator.configure_durations(cluster_create=-1)


def make_database(world: dict[str, Any], ident: str = "db1") -> dict[str, Any]:
    rds = boto3.client("rds", region_name=REGION)
    rds.create_db_subnet_group(DBSubnetGroupName="dbs", DBSubnetGroupDescription="db",
                               SubnetIds=world["subnets"])
    return rds.create_db_instance(DBInstanceIdentifier=ident, DBInstanceClass="db.t3.micro",
                                  Engine="postgres", AllocatedStorage=20, MasterUsername="u",
                                  MasterUserPassword="password123", DBSubnetGroupName="dbs")["DBInstance"]


def db_status(ident: str = "db1") -> str:
    rds = boto3.client("rds", region_name=REGION)
    return str(rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["DBInstanceStatus"])


def test_database_is_creating_then_backing_up_then_available_and_deleting_for_minutes(
        world: dict[str, Any], clock: Clock) -> None:
    """Real RDS: `creating` for minutes (refusing changes), `backing-up` (already serving),
    then `available`; a delete lists it `deleting` for minutes and its subnet group stays
    in use until it is gone."""
    rds = boto3.client("rds", region_name=REGION)
    emulator.configure_durations(rds_create=270, rds_backup=60, rds_delete=300)
    assert make_database(world)["DBInstanceStatus"] == "creating"
    clock.advance(269)
    assert db_status() == "creating"
    with pytest.raises(ClientError) as exc:
        rds.modify_db_instance(DBInstanceIdentifier="db1", AllocatedStorage=30, ApplyImmediately=True)
    assert error_code(exc) == "InvalidDBInstanceState"
    clock.advance(1)
    assert db_status() == "backing-up"
    clock.advance(60)
    assert db_status() == "available"

    rds.delete_db_instance(DBInstanceIdentifier="db1", SkipFinalSnapshot=True)
    assert db_status() == "deleting"
    with pytest.raises(ClientError) as exc:
        rds.delete_db_instance(DBInstanceIdentifier="db1", SkipFinalSnapshot=True)
    assert error_code(exc) == "InvalidDBInstanceState"
    with pytest.raises(ClientError) as exc:
        rds.delete_db_subnet_group(DBSubnetGroupName="dbs")
    assert error_code(exc) == "InvalidDBSubnetGroupStateFault"
    clock.advance(300)
    assert rds.describe_db_instances()["DBInstances"] == []
    rds.delete_db_subnet_group(DBSubnetGroupName="dbs")
    assert rds.describe_db_subnet_groups()["DBSubnetGroups"] == []


def test_nat_gateway_is_pending_then_available_and_deleting_then_deleted(
        world: dict[str, Any], clock: Clock) -> None:
    """Real EC2: a NAT gateway is `pending` for about two minutes, `deleting` for about one."""
    ec2 = world["ec2"]
    emulator.configure_durations(nat_create=120, nat_delete=60)
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat_id = ec2.create_nat_gateway(SubnetId=world["subnets"][0], AllocationId=eip)[
        "NatGateway"]["NatGatewayId"]

    def state() -> str:
        return str(ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"][0]["State"])

    assert state() == "pending"
    clock.advance(119)
    assert state() == "pending"
    clock.advance(1)
    assert state() == "available"
    ec2.delete_nat_gateway(NatGatewayId=nat_id)
    assert state() == "deleting"
    clock.advance(60)
    assert state() == "deleted"


def test_instant_by_default(world: dict[str, Any]) -> None:
    """Without a model the emulator answers as moto does: everything ready at once."""
    assert make_database(world)["DBInstanceStatus"] == "available"
    eip = world["ec2"].allocate_address(Domain="vpc")["AllocationId"]
    nat = world["ec2"].create_nat_gateway(SubnetId=world["subnets"][0], AllocationId=eip)["NatGateway"]
    assert world["ec2"].describe_nat_gateways(NatGatewayIds=[nat["NatGatewayId"]])[
        "NatGateways"][0]["State"] == "available"
    assert emulator.round_trip() == 0


def test_latency_model_is_scaled_as_one() -> None:
    settings = emulator.latency_settings("aws", 1 / 60, environ={})
    emulator.configure_durations(**settings)
    assert emulator.round_trip() == pytest.approx(0.1 / 60)
    assert emulator._durations["cluster_create"] == pytest.approx(10)  # 10 minutes → 10 s
    env = {"EXAPROV_EMULATOR_LATENCY_MODEL": "aws", "EXAPROV_EMULATOR_TIME_SCALE": "0.5",
           "EXAPROV_EMULATOR_NAT_CREATE_SECONDS": "10"}
    settings = emulator.latency_settings(environ=env)
    assert (settings["scale"], settings["nat_create"], settings["cluster_create"]) == (0.5, 10.0, 600.0)
    assert emulator.latency_settings(environ={}) == {"scale": 1.0}
    for bad in ({"EXAPROV_EMULATOR_LATENCY_MODEL": "gcp"}, {"EXAPROV_EMULATOR_TIME_SCALE": "0"}):
        with pytest.raises(InputError):
            emulator.latency_settings(environ=bad)
    with pytest.raises(InputError):
        emulator.configure_durations(warp_drive=1)


def test_request_path_counts_and_holds_requests_for_the_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request waits the model's round trip before moto answers; the counts by service
    are served on a local path the benchmark reads."""
    slept: list[float] = []
    monkeypatch.setattr(emulator.time, "sleep", slept.append)
    emulator.configure_durations(round_trip=0.25)
    answered: list[str] = []
    app = emulator._RequestLatency(lambda environ, start: answered.append(environ["PATH_INFO"]) or [b""])
    auth = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-west-1/eks/aws4_request, SignedHeaders=host"
    app({"PATH_INFO": "/clusters", "HTTP_AUTHORIZATION": auth}, lambda *a: None)
    app({"PATH_INFO": "/"}, lambda *a: None)
    assert answered == ["/clusters", "/"] and slept == [0.25, 0.25]
    body = app({"PATH_INFO": emulator._RequestLatency.PATH}, lambda *a: None)
    assert __import__("json").loads(body[0]) == {"total": 2, "by_service": {"eks": 1, "unsigned": 1}}


# -- version and config updates ---------------------------------------------------------

def test_cluster_version_goes_one_minor_at_a_time(world: dict[str, Any]) -> None:
    make_cluster(world, version="1.30")
    update = world["eks"].update_cluster_version(name="c1", version="1.31")["update"]
    assert (update["type"], update["status"]) == ("VersionUpdate", "Successful")
    assert world["eks"].describe_cluster(name="c1")["cluster"]["version"] == "1.31"
    with pytest.raises(ClientError) as exc:
        world["eks"].update_cluster_version(name="c1", version="1.33")
    assert error_code(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        world["eks"].update_cluster_version(name="c1", version="1.30")
    assert error_code(exc) == "InvalidParameterException"


def test_cluster_upgrade_waits_for_nodegroups_to_catch_up(world: dict[str, Any]) -> None:
    make_cluster(world, version="1.30")
    make_nodegroup(world)
    world["eks"].update_cluster_version(name="c1", version="1.31")
    with pytest.raises(ClientError) as exc:
        world["eks"].update_cluster_version(name="c1", version="1.32")
    assert error_code(exc) == "InvalidRequestException"
    world["eks"].update_nodegroup_version(clusterName="c1", nodegroupName="ng", version="1.31")
    assert world["eks"].describe_nodegroup(clusterName="c1", nodegroupName="ng")[
        "nodegroup"]["version"] == "1.31"
    world["eks"].update_cluster_version(name="c1", version="1.32")


def test_update_cluster_config_endpoint_and_logging(world: dict[str, Any]) -> None:
    make_cluster(world)
    eks = world["eks"]
    update = eks.update_cluster_config(name="c1", resourcesVpcConfig={
        "endpointPrivateAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]})["update"]
    assert update["type"] == "EndpointAccessUpdate"
    vpc = eks.describe_cluster(name="c1")["cluster"]["resourcesVpcConfig"]
    assert (vpc["endpointPrivateAccess"], vpc["endpointPublicAccess"]) == (True, True)
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert vpc["subnetIds"] == world["subnets"] and vpc["clusterSecurityGroupId"]  # merged, not replaced
    with pytest.raises(ClientError) as exc:  # EKS refuses a no-op update
        eks.update_cluster_config(name="c1", resourcesVpcConfig={"endpointPrivateAccess": True})
    assert error_code(exc) == "InvalidParameterException"

    eks.update_cluster_config(name="c1", logging={"clusterLogging": [
        {"types": ["api", "audit"], "enabled": True}]})
    logging = eks.describe_cluster(name="c1")["cluster"]["logging"]["clusterLogging"]
    assert {"types": ["api", "audit"], "enabled": True} in logging
    with pytest.raises(ClientError) as exc:  # one kind of change per call
        eks.update_cluster_config(name="c1", logging={"clusterLogging": [
            {"types": ["scheduler"], "enabled": True}]},
            resourcesVpcConfig={"endpointPrivateAccess": False})
    assert error_code(exc) == "InvalidParameterException"


# -- access entries ---------------------------------------------------------------------

def test_access_entries_round_trip(world: dict[str, Any]) -> None:
    iam, eks = world["iam"], world["eks"]
    admin = iam.create_role(RoleName="admin", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    make_cluster(world, accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"})
    entry = eks.create_access_entry(clusterName="c1", principalArn=admin,
                                    kubernetesGroups=["ops"])["accessEntry"]
    assert entry["type"] == "STANDARD" and entry["kubernetesGroups"] == ["ops"]
    assert eks.describe_access_entry(clusterName="c1", principalArn=admin)[
        "accessEntry"]["principalArn"] == admin
    assert admin in eks.list_access_entries(clusterName="c1")["accessEntries"]
    with pytest.raises(ClientError) as exc:
        eks.create_access_entry(clusterName="c1", principalArn=admin)
    assert error_code(exc) == "ResourceInUseException"

    policy = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    eks.associate_access_policy(clusterName="c1", principalArn=admin, policyArn=policy,
                                accessScope={"type": "cluster"})
    listed = eks.list_associated_access_policies(clusterName="c1", principalArn=admin)
    assert [p["policyArn"] for p in listed["associatedAccessPolicies"]] == [policy]
    assert eks.list_access_entries(clusterName="c1", associatedPolicyArn=policy)["accessEntries"]
    eks.disassociate_access_policy(clusterName="c1", principalArn=admin, policyArn=policy)
    assert eks.list_associated_access_policies(
        clusterName="c1", principalArn=admin)["associatedAccessPolicies"] == []

    eks.delete_access_entry(clusterName="c1", principalArn=admin)
    with pytest.raises(ClientError) as exc:
        eks.describe_access_entry(clusterName="c1", principalArn=admin)
    assert error_code(exc) == "ResourceNotFoundException"


def test_access_entries_need_api_authentication(world: dict[str, Any]) -> None:
    admin = world["iam"].create_role(RoleName="admin", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    make_cluster(world)  # the API's default authentication mode is CONFIG_MAP
    with pytest.raises(ClientError) as exc:
        world["eks"].create_access_entry(clusterName="c1", principalArn=admin)
    assert error_code(exc) == "InvalidRequestException"
    world["eks"].update_cluster_config(name="c1", accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"})
    world["eks"].create_access_entry(clusterName="c1", principalArn=admin)
    with pytest.raises(ClientError) as exc:  # no way back
        world["eks"].update_cluster_config(name="c1", accessConfig={"authenticationMode": "CONFIG_MAP"})
    assert error_code(exc) == "InvalidParameterException"


def test_install_is_idempotent(world: dict[str, Any]) -> None:
    emulator.install_extensions()
    emulator._extensions_installed = False
    try:
        emulator.install_extensions()  # the class marker still prevents double patching
    finally:
        emulator._extensions_installed = True
    make_cluster(world)
    assert len(world["eks"].list_updates(name="c1")["updateIds"]) == 0
    # other services are untouched
    assert world["ec2"].describe_vpcs(VpcIds=[world["vpc_id"]])["Vpcs"]


def test_tls_only_bucket_policies_admit_sdk_requests_as_s3_does() -> None:
    """Real S3 sees SDK requests arrive over TLS; a 'deny unless SecureTransport' policy
    must not refuse them, while an unconditional Deny still does."""
    import json

    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    emulator.install_extensions()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="tls-only")

        def policy(condition: dict[str, object] | None) -> str:
            statement: dict[str, object] = {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                                            "Resource": ["arn:aws:s3:::tls-only", "arn:aws:s3:::tls-only/*"]}
            if condition:
                statement["Condition"] = condition
            return json.dumps({"Version": "2012-10-17", "Statement": [statement]})

        s3.put_bucket_policy(Bucket="tls-only", Policy=policy({"Bool": {"aws:SecureTransport": "false"}}))
        s3.put_object(Bucket="tls-only", Key="k", Body=b"x")
        s3.put_bucket_policy(Bucket="tls-only", Policy=policy(None))
        with pytest.raises(ClientError):
            s3.put_object(Bucket="tls-only", Key="k2", Body=b"x")
