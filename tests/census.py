"""A census of EVERY resource in the (moto) account, tagged or not, comparable across runs.

IDs differ from one run to the next, so each resource is counted under its type and a
stable label: its Name tag or deterministic name, with AWS IDs inside labels replaced by
the label of what they name and random suffixes (UUIDs, bucket suffixes) blanked. Two
censuses are equal when both runs hold the same things the same number of times; a
label counted twice is a duplicate. Sub-resources that could drift or double (routes,
route-table associations, security group rules, attached and inline IAM policies, access
keys, ASG tags, bucket settings) are counted too.

RDS snapshots are counted: a database's final snapshot is what `destroy` leaves for the
user (`after_destroy`). What AWS keeps after a delete is not counted: KMS keys pending deletion, secrets
scheduled for deletion, NAT gateways and peerings in a deleted state, terminated
instances. AWS-managed things (KMS keys of `alias/aws/*`, IAM's AWS policies) neither.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any

import boto3

from tests.conftest import REGION

Census = Counter[tuple[str, str]]

_ID = re.compile(r"\b(?:vpc|subnet|igw|rtb|nat|eipalloc|sg|sgr|lt|pcx|eni|i|vol|rtbassoc)-"
                 r"[0-9a-f]{8,17}\b")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"\b[0-9a-fA-F]{32}\b")
_BUCKET = re.compile(r"^(module-repo-.+-)[a-z0-9]{8}$")
_PRIMARY_SG = re.compile(r"(eks-cluster-sg-\S+-)\d{6,}")
_FINAL = re.compile(r"-final-\d{8}-\d{6}$")
_AUTOMATED = re.compile(r"^(rds:.+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}$")
# The database's final snapshot: what `destroy` leaves on purpose, the user's to keep (exaprov
# never deletes a snapshot), so "destroy leaves nothing" means: nothing but this.
FINAL_SNAPSHOT = ("rds:db-snapshot", "exafunction-mrbe-example-final-<time>")
_GONE = frozenset({"deleted", "deleting", "rejected", "failed", "expired", "terminated",
                   "shutting-down"})


def normalise(text: str, ids: dict[str, str] | None = None) -> str:
    """A label with its run-specific parts made stable."""
    def resolve(match: re.Match[str]) -> str:
        found = (ids or {}).get(match.group(0), match.group(0).split("-")[0])
        return normalise(found) if _ID.search(found) else found  # a Name holding an ID

    text = _ID.sub(resolve, text)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _BUCKET.sub(r"\1<suffix>", text)
    return _PRIMARY_SG.sub(r"\1<n>", text)


def _tags(item: dict[str, Any], key: str = "Tags") -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get(key) or []}


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    if client.can_paginate(operation):
        return [i for page in client.get_paginator(operation).paginate(**kwargs)
                for i in page.get(key, [])]
    return list(getattr(client, operation)(**kwargs).get(key, []))


def census(region: str = REGION, **client_args: str) -> Census:
    """Everything the account holds, as Counter{(type, label): how many}. `client_args`
    (endpoint_url, credentials) point it at an emulator over HTTP instead of mock_aws."""
    counted: Census = Counter()
    session = _Session(region, client_args)
    _ec2(session.client("ec2"), counted)
    _elb(session, counted)
    _eks_and_autoscaling(session, counted)
    _iam(session.client("iam"), counted)
    _kms(session.client("kms"), counted)
    for group in _pages(session.client("logs"), "describe_log_groups", "logGroups"):
        counted["logs:log-group", group["logGroupName"]] += 1
    rds = session.client("rds")
    for db in _pages(rds, "describe_db_instances", "DBInstances"):
        counted["rds:db-instance", db["DBInstanceIdentifier"]] += 1
    for group in _pages(rds, "describe_db_subnet_groups", "DBSubnetGroups"):
        counted["rds:db-subnet-group", group["DBSubnetGroupName"]] += 1
    for snapshot in _pages(rds, "describe_db_snapshots", "DBSnapshots"):
        name = _AUTOMATED.sub(r"\1-<time>", snapshot["DBSnapshotIdentifier"])  # daily backups
        counted["rds:db-snapshot", _FINAL.sub("-final-<time>", name)] += 1
    _s3(session.client("s3"), counted)
    for secret in _pages(session.client("secretsmanager"), "list_secrets", "SecretList"):
        if not secret.get("DeletedDate"):
            counted["secretsmanager:secret", normalise(secret["Name"])] += 1
    return counted


class _Session:
    """boto3.Session's `client`, with the same extra arguments for every client."""

    def __init__(self, region: str, client_args: dict[str, str]) -> None:
        self._region = region
        self._args = tuple(sorted(client_args.items()))

    def client(self, service: str) -> Any:
        return _client(self._region, self._args, service)


@functools.cache
def _client(region: str, args: tuple[tuple[str, str], ...], service: str) -> Any:
    """One client per service, region and endpoint for every census of the session (making
    the eleven takes a quarter of a second; the crash matrices take two censuses a case).
    moto's mock intercepts every client's requests whenever a mock is on, whenever the
    client was made; the hooks a test adds (call logs, faults) are not on these, so a
    census neither counts as exaprov's calls nor meets injected faults."""
    return boto3.Session(region_name=region).client(service, **dict(args))


def _ec2(ec2: Any, counted: Census) -> None:
    vpcs = _pages(ec2, "describe_vpcs", "Vpcs")
    ids = {v["VpcId"]: _tags(v).get("Name") or ("default-vpc" if v.get("IsDefault") else v["CidrBlock"])
           for v in vpcs}
    subnets = _pages(ec2, "describe_subnets", "Subnets")
    ids.update({s["SubnetId"]: _tags(s).get("Name") or f"{ids.get(s['VpcId'])}:{s['CidrBlock']}"
                for s in subnets})
    igws = _pages(ec2, "describe_internet_gateways", "InternetGateways")
    ids.update({g["InternetGatewayId"]: _tags(g).get("Name") or "igw" for g in igws})
    nats = [n for n in _pages(ec2, "describe_nat_gateways", "NatGateways") if n["State"] not in _GONE]
    ids.update({n["NatGatewayId"]: _tags(n).get("Name") or "nat" for n in nats})
    pcxs = [p for p in _pages(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections")
            if p["Status"]["Code"] not in _GONE]
    ids.update({p["VpcPeeringConnectionId"]: _tags(p).get("Name") or "pcx" for p in pcxs})
    groups = _pages(ec2, "describe_security_groups", "SecurityGroups")
    ids.update({g["GroupId"]: f"{g['GroupName']}@{ids.get(g['VpcId'])}" if g["GroupName"] == "default"
                else g["GroupName"] for g in groups})
    tables = _pages(ec2, "describe_route_tables", "RouteTables")
    for t in tables:
        main = any(a.get("Main") for a in t.get("Associations", []))
        ids[t["RouteTableId"]] = _tags(t).get("Name") or \
            f"{'main' if main else 'table'}@{ids.get(t['VpcId'])}"

    def label(text: str) -> str:
        return normalise(text, ids)

    for vpc in vpcs:
        counted["ec2:vpc", label(vpc["VpcId"])] += 1
    for subnet in subnets:
        counted["ec2:subnet", label(subnet["SubnetId"])] += 1
    for igw in igws:
        attached = ",".join(label(a["VpcId"]) for a in igw.get("Attachments", []))
        counted["ec2:internet-gateway", f"{label(igw['InternetGatewayId'])} on {attached or '-'}"] += 1
    for nat in nats:
        counted["ec2:nat-gateway", f"{label(nat['NatGatewayId'])} in {label(nat['SubnetId'])}"] += 1
    for pcx in pcxs:
        counted["ec2:vpc-peering-connection",
                f"{label(pcx['VpcPeeringConnectionId'])} {pcx['Status']['Code']}"] += 1
    for table in tables:
        name = label(table["RouteTableId"])
        if not name.startswith("main@"):
            counted["ec2:route-table", name] += 1
        for route in table.get("Routes", []):
            target = next((route[k] for k in ("GatewayId", "NatGatewayId", "VpcPeeringConnectionId",
                                              "NetworkInterfaceId", "InstanceId",
                                              "TransitGatewayId") if route.get(k)), "?")
            if target == "local":
                continue
            dest = route.get("DestinationCidrBlock") or route.get("DestinationIpv6CidrBlock") \
                or route.get("DestinationPrefixListId")
            counted["ec2:route", f"{name}: {dest} → {label(target)}"] += 1
        for assoc in table.get("Associations", []):
            if assoc.get("SubnetId"):
                counted["ec2:route-table-association", f"{name} ↔ {label(assoc['SubnetId'])}"] += 1
    for group in groups:
        counted["ec2:security-group", label(group["GroupId"])] += 1
    for rule in _pages(ec2, "describe_security_group_rules", "SecurityGroupRules"):
        source = rule.get("CidrIpv4") or rule.get("CidrIpv6") or rule.get("PrefixListId") or \
            (rule.get("ReferencedGroupInfo") or {}).get("GroupId") or "?"
        ports = f"{rule.get('FromPort')}-{rule.get('ToPort')}"
        counted["ec2:security-group-rule",
                label(f"{rule['GroupId']} {'egress' if rule['IsEgress'] else 'ingress'} "
                      f"{rule['IpProtocol']} {ports} {source}")] += 1
    for address in _pages(ec2, "describe_addresses", "Addresses"):
        counted["ec2:elastic-ip", _tags(address).get("Name") or "eip"] += 1
    for template in _pages(ec2, "describe_launch_templates", "LaunchTemplates"):
        tags = _tags(template)
        name = f"eks-template:{tags['eks:nodegroup-name']}" if "eks:nodegroup-name" in tags \
            else template["LaunchTemplateName"]
        counted["ec2:launch-template", label(name)] += 1
    dead = set()
    for reservation in _pages(ec2, "describe_instances", "Reservations"):
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] in _GONE:
                dead.add(instance["InstanceId"])
                continue
            group = _tags(instance).get("aws:autoscaling:groupName", "instance")
            counted["ec2:instance", label(group)] += 1
    live_subnets = {s["SubnetId"] for s in subnets}
    for eni in _pages(ec2, "describe_network_interfaces", "NetworkInterfaces"):
        # moto keeps ENIs AWS deletes: a terminated instance's, and any left in a deleted subnet
        # (AWS refuses DeleteSubnet while an ENI is in it; a NAT gateway's goes with it).
        if eni["SubnetId"] not in live_subnets or eni.get("Attachment", {}).get("InstanceId") in dead:
            continue
        counted["ec2:network-interface", label(f"{eni.get('InterfaceType', 'interface')}: "
                                               f"{eni.get('Description', '')} in {eni['SubnetId']}")] += 1
    for volume in _pages(ec2, "describe_volumes", "Volumes"):
        if volume["State"] not in _GONE:
            counted["ec2:volume", f"{volume['Size']} GiB {volume['State']}"] += 1
    for pair in _pages(ec2, "describe_key_pairs", "KeyPairs"):
        counted["ec2:key-pair", pair["KeyName"]] += 1


def _elb(session: Any, counted: Census) -> None:
    elbv2 = session.client("elbv2")
    for lb in _pages(elbv2, "describe_load_balancers", "LoadBalancers"):
        counted["elbv2:load-balancer", lb["LoadBalancerName"]] += 1
    for group in _pages(elbv2, "describe_target_groups", "TargetGroups"):
        counted["elbv2:target-group", group["TargetGroupName"]] += 1
    for lb in _pages(session.client("elb"), "describe_load_balancers", "LoadBalancerDescriptions"):
        counted["elb:load-balancer", lb["LoadBalancerName"]] += 1


def _eks_and_autoscaling(session: Any, counted: Census) -> None:
    eks = session.client("eks")
    for cluster in _pages(eks, "list_clusters", "clusters"):
        counted["eks:cluster", cluster] += 1
        for group in _pages(eks, "list_nodegroups", "nodegroups", clusterName=cluster):
            counted["eks:nodegroup", f"{cluster}/{group}"] += 1
        for principal in eks.list_access_entries(clusterName=cluster).get("accessEntries", []):
            counted["eks:access-entry", f"{cluster}/{principal.rsplit('/', 1)[-1]}"] += 1
        for addon in _pages(eks, "list_addons", "addons", clusterName=cluster):
            counted["eks:addon", f"{cluster}/{addon}"] += 1
        for assoc in _pages(eks, "list_pod_identity_associations", "associations",
                            clusterName=cluster):
            counted["eks:pod-identity-association",
                    f"{cluster}/{assoc['namespace']}/{assoc['serviceAccount']}"] += 1
    autoscaling = session.client("autoscaling")
    for group in _pages(autoscaling, "describe_auto_scaling_groups", "AutoScalingGroups"):
        name = normalise(group["AutoScalingGroupName"])
        counted["autoscaling:group", name] += 1
        for tag in group.get("Tags", []):
            counted["autoscaling:tag", f"{name}: {tag['Key']}={tag['Value']}"] += 1


def _iam(iam: Any, counted: Census) -> None:
    for role in _pages(iam, "list_roles", "Roles"):
        name = role["RoleName"]
        counted["iam:role", name] += 1
        for policy in _pages(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name):
            counted["iam:role-policy-attachment", f"{name}: {policy['PolicyName']}"] += 1
        for policy in _pages(iam, "list_role_policies", "PolicyNames", RoleName=name):
            counted["iam:role-inline-policy", f"{name}: {policy}"] += 1
    for profile in _pages(iam, "list_instance_profiles", "InstanceProfiles"):
        counted["iam:instance-profile", profile["InstanceProfileName"]] += 1
    for user in _pages(iam, "list_users", "Users"):
        name = user["UserName"]
        counted["iam:user", f"{user['Path']}{name}"] += 1
        for key in _pages(iam, "list_access_keys", "AccessKeyMetadata", UserName=name):
            counted["iam:access-key", f"{name} {key['Status']}"] += 1
        for policy in _pages(iam, "list_attached_user_policies", "AttachedPolicies", UserName=name):
            counted["iam:user-policy-attachment", f"{name}: {policy['PolicyName']}"] += 1
        for policy in _pages(iam, "list_user_policies", "PolicyNames", UserName=name):
            counted["iam:user-inline-policy", f"{name}: {policy}"] += 1
    for group in _pages(iam, "list_groups", "Groups"):
        counted["iam:group", group["GroupName"]] += 1
    for policy in _pages(iam, "list_policies", "Policies", Scope="Local"):
        counted["iam:policy", policy["PolicyName"]] += 1
    for provider in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        counted["iam:oidc-provider", normalise(provider["Arn"].split(":oidc-provider/")[-1])] += 1


def _kms(kms: Any, counted: Census) -> None:
    aliases = _pages(kms, "list_aliases", "Aliases")
    # moto makes the AWS managed keys (alias/aws/ebs, ...) as customer keys on first use.
    managed = {a.get("TargetKeyId") for a in aliases if a["AliasName"].startswith("alias/aws/")}
    for entry in _pages(kms, "list_keys", "Keys"):
        if entry["KeyId"] in managed:
            continue
        meta = kms.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]
        if meta.get("KeyManager") == "AWS" or meta["KeyState"] in ("PendingDeletion",
                                                                   "PendingReplicaDeletion"):
            continue
        counted["kms:key", meta.get("Description") or "key"] += 1
    for alias in aliases:
        if not alias["AliasName"].startswith("alias/aws/"):
            counted["kms:alias", alias["AliasName"]] += 1


def _s3(s3: Any, counted: Census) -> None:
    for bucket in s3.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        label = normalise(name)
        counted["s3:bucket", label] += 1
        for what, call in (("policy", s3.get_bucket_policy), ("encryption", s3.get_bucket_encryption),
                           ("public-access-block", s3.get_public_access_block),
                           ("ownership", s3.get_bucket_ownership_controls),
                           ("tags", s3.get_bucket_tagging)):
            try:
                call(Bucket=name)
            except s3.exceptions.ClientError:
                continue
            counted["s3:bucket-setting", f"{label} {what}"] += 1


def after_destroy(before: Census, final_snapshots: int = 1) -> Census:
    """What the account must hold after `destroy` of a deployment with a database: what it
    held before `up`, plus the database's final snapshot(s), which the user keeps."""
    return before + Counter({FINAL_SNAPSHOT: final_snapshots})


def difference(expected: Census, actual: Census) -> dict[str, list[str]]:
    """What `actual` lacks and has too much of, for an assertion message."""
    return {"missing": sorted(f"{t} {lb} ×{n}" for (t, lb), n in (expected - actual).items()),
            "extra": sorted(f"{t} {lb} ×{n}" for (t, lb), n in (actual - expected).items())}


def duplicates(counted: Census, reference: Census) -> dict[tuple[str, str], int]:
    """Labels counted more often than in the reference (two of one resource)."""
    return {key: n - reference[key] for key, n in counted.items() if n > reference[key] > 0}
