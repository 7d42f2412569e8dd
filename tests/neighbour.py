"""A neighbour in the account: what exaprov must never touch, and proof that it did not.

exaprov runs in accounts that hold other things. Before a test's `up`, `build` puts next to
the deployment under test ("ours"):

- a second exaprov deployment, `neighbour`, built by exaprov itself in the same account:
  another deployment name, vpc_name, cluster_name and exadeploy_id (in-process: its network,
  NAT gateway, IAM roles, KMS key, log group and security groups, the parts whose lookups
  could confuse one deployment with another; over HTTP: the whole stack, by the installed
  command);
- unrelated, untagged resources whose names collide with ours: a VPC with our VPC's Name tag,
  and in it a subnet, an internet gateway, a NAT gateway and route tables carrying our
  Name tags (`<vpc_name>-private` routing 0.0.0.0/0 to that NAT gateway); a security group
  named like our node group's, with a rule; a DB subnet group named like our `vpc_name`
  (with a suffix: one of exactly that name would be a name clash, which `up` refuses — see
  tests/test_ownership.py); an IAM role named like our cluster role under another path (IAM
  role names are unique in an account whatever the path, and case-insensitively, so not the
  same name: AWS does not allow it); a log group and KMS alias named like ours.

`foreign_census` records everything in the account that is not ours — by exact ID, with its
tags, routes, rules, attachments and state — so a test asserts that it is exactly what it
was before: nothing foreign adopted, retagged, re-routed or deleted. What is ours: what
carries `exaprov:deployment=<ours>`, what EKS or Kubernetes made for our cluster, what is
inside our VPC, and routes that lead to our peering connections (`peer` adds those to a
client VPC's tables, and `unpeer`/`destroy` remove them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from tests.conftest import REGION

NEIGHBOUR_CONFIG: dict[str, Any] = {
    "name": "neighbour",
    "network": {"vpc_name": "team-vpc", "vpc_cidr_block": "10.60.0.0/16"},
    "cluster": {"cluster_name": "team-cluster"},
    "module_repo_backend": {"exadeploy_id": "team-mrbe"},
}
FOREIGN_CIDR = "10.61.0.0/16"

Clients = Callable[[str], Any]


def clients(**client_args: str) -> Clients:
    """`clients("ec2")`: a client of the moto in use, or of an emulator over HTTP."""
    return lambda service: boto3.client(service, region_name=REGION, **client_args)


def names(config: dict[str, Any]) -> tuple[str, str, str]:
    """(deployment, vpc_name, cluster_name) of a config, with exaprov's defaults."""
    name = config["name"]
    vpc = (config.get("network") or {}).get("vpc_name") or f"exafunction-vpc-{name}"
    cluster = (config.get("cluster") or {}).get("cluster_name") or f"exafunction-cluster-{name}"
    return name, vpc, cluster


# -- building it ----------------------------------------------------------------------------

def build_in_process(ours: dict[str, Any], folder: Path) -> None:
    """The neighbour deployment (by exaprov's engine, its own state under `folder`) and the
    untagged colliding resources, in the moto of the running test."""
    from exaprov.steps import IAM, KMS, LOGS, NAT, NETWORK, SECURITY_GROUPS
    from tests.harness import Stack

    Stack(folder, [NETWORK, NAT, IAM, KMS, LOGS, SECURITY_GROUPS], NEIGHBOUR_CONFIG).up()
    plant(ours, clients())


def plant(ours: dict[str, Any], client: Clients) -> None:
    """Untagged resources whose names collide with `ours`'s (none carries an exaprov tag)."""
    _, vpc_name, cluster = names(ours)
    ec2 = client("ec2")

    def named(kind: str, name: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": [{"Key": "Name", "Value": name},
                                                {"Key": "team", "Value": "data"}]}]

    vpc = ec2.create_vpc(CidrBlock=FOREIGN_CIDR, TagSpecifications=named("vpc", vpc_name))[
        "Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.61.{i}.0/24", AvailabilityZone=zones[i],
                                 TagSpecifications=named("subnet", f"{vpc_name}-database-{i + 1}"))[
        "Subnet"]["SubnetId"] for i in range(2)]
    igw = ec2.create_internet_gateway(TagSpecifications=named("internet-gateway", vpc_name))[
        "InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    eip = ec2.allocate_address(Domain="vpc", TagSpecifications=named("elastic-ip",
                                                                     f"{vpc_name}-nat"))["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnets[0], AllocationId=eip,
                                 TagSpecifications=named("natgateway", f"{vpc_name}-nat"))[
        "NatGateway"]["NatGatewayId"]
    for suffix, route in (("public", {"GatewayId": igw}), ("private", {"NatGatewayId": nat})):
        table = ec2.create_route_table(VpcId=vpc, TagSpecifications=named(
            "route-table", f"{vpc_name}-{suffix}"))["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", **route)
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnets[suffix == "private"])
    group = ec2.create_security_group(GroupName=f"{cluster}-node", Description="team nodes",
                                      VpcId=vpc, TagSpecifications=named("security-group",
                                                                         f"{cluster}-node"))["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": FOREIGN_CIDR}]}])

    rds = client("rds")
    rds.create_db_subnet_group(DBSubnetGroupName=f"{vpc_name.lower()}-db",
                               DBSubnetGroupDescription="the data team's", SubnetIds=subnets,
                               Tags=[{"Key": "team", "Value": "data"}])
    iam = client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "eks.amazonaws.com"}}]}
    iam.create_role(RoleName=f"{cluster}-cluster-team", Path="/team/",
                    AssumeRolePolicyDocument=json.dumps(trust))
    client("logs").create_log_group(logGroupName=f"/aws/eks/{cluster}/cluster-team")
    kms = client("kms")
    key = kms.create_key(Description="the data team's")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/eks/{cluster}-team", TargetKeyId=key)


# -- the census of what is not ours ---------------------------------------------------------

def _tags(item: dict[str, Any], key: str = "Tags") -> dict[str, str]:
    raw = item.get(key) or []
    if isinstance(raw, dict):
        return dict(raw)
    return {t.get("Key", t.get("TagKey")): t.get("Value", t.get("TagValue")) for t in raw}


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    if client.can_paginate(operation):
        return [i for page in client.get_paginator(operation).paginate(**kwargs)
                for i in page.get(key, [])]
    return list(getattr(client, operation)(**kwargs).get(key, []))


class _Ours:
    """What belongs to the deployment under test (everything else is the neighbour's)."""

    def __init__(self, deployment: str, cluster: str) -> None:
        self.deployment, self.cluster = deployment, cluster
        self.vpcs: set[str] = set()
        self.ids: set[str] = set()

    def tags(self, tags: dict[str, str]) -> bool:
        return (tags.get("exaprov:deployment") == self.deployment
                or self.cluster in (tags.get("eks:cluster-name"), tags.get("aws:eks:cluster-name"),
                                    tags.get("elbv2.k8s.aws/cluster"))
                or f"kubernetes.io/cluster/{self.cluster}" in tags)

    def item(self, item: dict[str, Any], id_key: str, key: str = "Tags") -> bool:
        ours = self.tags(_tags(item, key)) or item.get("VpcId") in self.vpcs
        if ours:
            self.ids.add(item[id_key])
        return ours


def foreign_census(ours_config: dict[str, Any], client: Clients | None = None) -> dict[str, Any]:
    """Everything in the account that is not the deployment's, by exact ID, with its tags and
    the parts that could be changed under it (routes, rules, attachments, policies, state)."""
    client = client or clients()
    deployment, _, cluster = names(ours_config)
    ours = _Ours(deployment, cluster)
    out: dict[str, Any] = {}
    ec2 = client("ec2")
    for vpc in _pages(ec2, "describe_vpcs", "Vpcs"):
        if ours.tags(_tags(vpc)):
            ours.vpcs.add(vpc["VpcId"])
            ours.ids.add(vpc["VpcId"])
    for vpc in _pages(ec2, "describe_vpcs", "Vpcs"):
        if vpc["VpcId"] not in ours.vpcs:
            out[f"vpc {vpc['VpcId']}"] = [vpc["CidrBlock"], _tags(vpc)]
    for operation, key, id_key in (
            ("describe_subnets", "Subnets", "SubnetId"),
            ("describe_addresses", "Addresses", "AllocationId"),
            ("describe_launch_templates", "LaunchTemplates", "LaunchTemplateId")):
        for item in _pages(ec2, operation, key):
            if not ours.item(item, id_key):
                out[f"{key} {item[id_key]}"] = [_tags(item), item.get("VpcId"), item.get("CidrBlock"),
                                                item.get("AssociationId"),
                                                item.get("LatestVersionNumber")]
    for pcx in _pages(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections"):
        if not ours.item(pcx, "VpcPeeringConnectionId"):
            out[f"pcx {pcx['VpcPeeringConnectionId']}"] = [pcx["Status"]["Code"], _tags(pcx)]
    for nat in _pages(ec2, "describe_nat_gateways", "NatGateways"):
        if not ours.item(nat, "NatGatewayId"):
            out[f"nat {nat['NatGatewayId']}"] = [nat["State"], nat["SubnetId"], _tags(nat)]
    for igw in _pages(ec2, "describe_internet_gateways", "InternetGateways"):
        if not ours.tags(_tags(igw)):
            out[f"igw {igw['InternetGatewayId']}"] = [
                sorted(a["VpcId"] for a in igw.get("Attachments", [])), _tags(igw)]
    groups = _pages(ec2, "describe_security_groups", "SecurityGroups")
    foreign_groups = {g["GroupId"] for g in groups if not ours.item(g, "GroupId")}
    for group in groups:
        if group["GroupId"] in foreign_groups:
            out[f"sg {group['GroupId']}"] = [group["GroupName"], group["VpcId"], _tags(group)]
    for rule in _pages(ec2, "describe_security_group_rules", "SecurityGroupRules"):
        if rule["GroupId"] in foreign_groups:
            out[f"sgr {rule['SecurityGroupRuleId']}"] = [
                rule["GroupId"], rule["IsEgress"], rule["IpProtocol"], rule.get("FromPort"),
                rule.get("ToPort"), rule.get("CidrIpv4"), rule.get("CidrIpv6"),
                (rule.get("ReferencedGroupInfo") or {}).get("GroupId"), rule.get("Description"),
                _tags(rule)]
    for table in _pages(ec2, "describe_route_tables", "RouteTables"):
        if ours.item(table, "RouteTableId"):
            continue
        routes = sorted(json.dumps(r, sort_keys=True) for r in table.get("Routes", [])
                        if not ours.ids & set(map(str, r.values())))  # `peer`'s routes are ours
        assocs = sorted(f"{a.get('SubnetId')}:{a.get('Main')}" for a in table.get("Associations", []))
        out[f"rtb {table['RouteTableId']}"] = [table["VpcId"], _tags(table), routes, assocs]

    _elsewhere(client, ours, out)
    return out


def _elsewhere(client: Clients, ours: _Ours, out: dict[str, Any]) -> None:
    rds = client("rds")
    for db in _pages(rds, "describe_db_instances", "DBInstances"):
        if not ours.tags(_tags(db, "TagList")):
            out[f"rds {db['DBInstanceIdentifier']}"] = [db["DBInstanceStatus"], _tags(db, "TagList")]
    for group in _pages(rds, "describe_db_subnet_groups", "DBSubnetGroups"):
        tags = _tags(rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"]), "TagList")
        if not ours.tags(tags) and group.get("VpcId") not in ours.vpcs:
            out[f"db-subnet-group {group['DBSubnetGroupName']}"] = [
                group.get("VpcId"), sorted(s["SubnetIdentifier"] for s in group["Subnets"]), tags]
    iam = client("iam")
    for role in _pages(iam, "list_roles", "Roles"):
        name = role["RoleName"]
        if role["Path"].startswith("/aws-service-role/"):
            continue  # made by AWS services on first use, for the whole account
        tags = _tags({"Tags": _pages(iam, "list_role_tags", "Tags", RoleName=name)})
        if not ours.tags(tags):
            out[f"role {role['RoleId']}"] = [name, role["Path"], tags, sorted(
                p["PolicyArn"] for p in _pages(iam, "list_attached_role_policies",
                                               "AttachedPolicies", RoleName=name))]
    for user in _pages(iam, "list_users", "Users"):
        tags = _tags({"Tags": _pages(iam, "list_user_tags", "Tags", UserName=user["UserName"])})
        if not ours.tags(tags):
            out[f"user {user['UserId']}"] = [user["UserName"], user["Path"], tags]
    for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        tags = _tags(iam.list_open_id_connect_provider_tags(OpenIDConnectProviderArn=provider["Arn"]))
        if not ours.tags(tags):
            out[f"oidc {provider['Arn']}"] = tags
    kms = client("kms")
    aliases = _pages(kms, "list_aliases", "Aliases")
    managed = {a.get("TargetKeyId") for a in aliases if a["AliasName"].startswith("alias/aws/")}
    our_keys: set[str] = set()
    for entry in _pages(kms, "list_keys", "Keys"):
        if entry["KeyId"] in managed:
            continue
        meta = kms.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]
        tags = _tags({"Tags": _pages(kms, "list_resource_tags", "Tags", KeyId=entry["KeyId"])})
        if meta.get("KeyManager") == "AWS":
            continue
        if ours.tags(tags):
            our_keys.add(entry["KeyId"])
            continue
        out[f"key {entry['KeyId']}"] = [meta["KeyState"], tags]
    for alias in aliases:
        if not alias["AliasName"].startswith("alias/aws/") and alias.get("TargetKeyId") not in our_keys:
            out[f"alias {alias['AliasName']}"] = alias.get("TargetKeyId")
    logs = client("logs")
    for group in _pages(logs, "describe_log_groups", "logGroups"):
        arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
        tags = logs.list_tags_for_resource(resourceArn=arn).get("tags", {})
        if not ours.tags(tags):
            out[f"log-group {group['logGroupName']}"] = [group.get("retentionInDays"), tags]
    eks = client("eks")
    for name in _pages(eks, "list_clusters", "clusters"):
        found = eks.describe_cluster(name=name)["cluster"]
        if ours.tags(found.get("tags") or {}):
            continue
        out[f"cluster {name}"] = [found["status"], found.get("tags"), sorted(
            _pages(eks, "list_nodegroups", "nodegroups", clusterName=name))]
    s3 = client("s3")
    for bucket in s3.list_buckets().get("Buckets", []):
        try:
            tags = _tags(s3.get_bucket_tagging(Bucket=bucket["Name"]), "TagSet")
        except s3.exceptions.ClientError:
            tags = {}
        if not ours.tags(tags):
            out[f"bucket {bucket['Name']}"] = tags
    for secret in _pages(client("secretsmanager"), "list_secrets", "SecretList"):
        tags = _tags(secret)
        if not ours.tags(tags) and not secret["Name"].startswith("rds!"):
            out[f"secret {secret['Name']}"] = [bool(secret.get("DeletedDate")), tags]


def difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed among the neighbour's things, for an assertion message."""
    return {"gone": {k: before[k] for k in sorted(before.keys() - after.keys())},
            "new": {k: after[k] for k in sorted(after.keys() - before.keys())},
            "changed": {k: {"before": before[k], "after": after[k]}
                        for k in sorted(before.keys() & after.keys()) if before[k] != after[k]}}
