"""Fault injection in front of moto: what real AWS does and moto does not.

In-process, moto answers every call from its `before-send` handler (BotocoreStubber). A
`before-send` hook of our own cannot stop moto (botocore runs every handler, then takes the
first answer), so `Faults` wraps the stubber itself: a refused call never reaches moto, and
botocore gets a response in the service's own wire protocol (EC2 XML, query XML, JSON,
REST-JSON, S3 XML), which it parses, retries and raises exactly as it would from AWS.

Only exaprov's own clients are faulted (recognised by their `exaprov/` user agent): the
tests' own boto3 clients, which set up and check moto, always get moto's answer.

Use the `faults` fixture (`from tests.faults import faults_fixture  # noqa: F401`):

    faults.refuse_share(0.25, seed=7)                     # throttling and 5xx on ~25% of attempts
    faults.refuse("DeleteVpc", "DependencyViolation", times=3)   # the next 3 DeleteVpc calls
    faults.refuse("DeleteVpc", "DependencyViolation")             # every one (never clears)
    faults.not_found_after_create(times=2)   # new EC2 IDs unknown to 2 calls of each operation
    faults.role_not_assumable(times=2)       # a new IAM role is not yet usable by EKS
    faults.principal_not_known(times=2)      # ...nor by S3 as a bucket policy principal
    faults.lose_response("CreateVpc")        # done by AWS, answer lost: botocore retries
    faults.delay(0.5, operations={"DescribeNatGateways"})  # slow answers
    faults.crash_at("after_create:network.vpc")  # or "after:CreateVpc": the process "dies"
    faults.refused  # every refused attempt: Refusal(service, operation, code)
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse

import exaprov.engine
from exaprov.state import StateWriter

# The wire protocol of each service exaprov calls (botocore's service-2.json `protocol`).
PROTOCOLS = {"ec2": "ec2", "iam": "query", "rds": "query", "sts": "query",
             "elastic-load-balancing": "query", "elastic-load-balancing-v2": "query",
             "auto-scaling": "query", "eks": "rest-json", "kms": "json",
             "cloudwatch-logs": "json", "secrets-manager": "json", "s3": "rest-xml"}

# How each service says "slow down" (code, HTTP status), as AWS answers it.
THROTTLING = {"ec2": ("RequestLimitExceeded", 503), "eks": ("TooManyRequestsException", 429),
              "s3": ("SlowDown", 503), "kms": ("ThrottlingException", 400),
              "cloudwatch-logs": ("ThrottlingException", 400),
              "secrets-manager": ("ThrottlingException", 400)}
DEFAULT_THROTTLING = ("Throttling", 400)  # IAM, RDS, STS, ELB, Auto Scaling
# How each service says "something broke on our side".
SERVER_ERRORS = {"ec2": [("InternalError", 500), ("Unavailable", 503)],
                 "s3": [("InternalError", 500), ("ServiceUnavailable", 503)]}
DEFAULT_SERVER_ERRORS = [("InternalFailure", 500), ("ServiceUnavailable", 503)]
DROPPED = "ConnectionClosed"  # the connection closed before any answer (no HTTP status)
NOT_LISTED = "NotListedYet"  # a describe by an ID filter left the new resource out
LOST = "ResponseLost"  # carried out, but the answer never arrived

# EC2 creates, and the response element holding the new resource's ID.
EC2_CREATES = {"CreateVpc": "vpcId", "CreateSubnet": "subnetId", "CreateSecurityGroup": "groupId",
               "CreateRouteTable": "routeTableId", "CreateInternetGateway": "internetGatewayId",
               "CreateNatGateway": "natGatewayId", "AllocateAddress": "allocationId",
               "CreateVpcPeeringConnection": "vpcPeeringConnectionId",
               "CreateLaunchTemplate": "launchTemplateId"}
# The NotFound code EC2 answers for an ID it does not know (yet), by ID prefix.
EC2_NOT_FOUND = {"vpc-": "InvalidVpcID.NotFound", "subnet-": "InvalidSubnetID.NotFound",
                 "sg-": "InvalidGroup.NotFound", "rtb-": "InvalidRouteTableID.NotFound",
                 "igw-": "InvalidInternetGatewayID.NotFound", "nat-": "NatGatewayNotFound",
                 "eipalloc-": "InvalidAllocationID.NotFound",
                 "pcx-": "InvalidVpcPeeringConnectionID.NotFound",
                 "lt-": "InvalidLaunchTemplateId.NotFound"}
# ...except where a route names the NAT gateway (as the Terraform AWS provider retries it).
EC2_NOT_FOUND_BY_OPERATION = {("CreateRoute", "nat-"): "InvalidNatGatewayID.NotFound",
                              ("ReplaceRoute", "nat-"): "InvalidNatGatewayID.NotFound"}


class SimulatedCrash(BaseException):
    """Stands for SIGKILL: raised at the crash point; after it no AWS call reaches moto and
    no state write lands, until `Faults.restart()` (the next process)."""


@dataclass(frozen=True)
class Refusal:
    service: str
    operation: str
    code: str


@dataclass
class _Rule:
    operation: str
    code: str
    status: int
    left: int | None  # None: forever
    message: str


class Faults:
    """The faults of one test; installed on moto's stubber by the `faults` fixture."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.refused: list[Refusal] = []
        self.attempts = 0  # every exaprov attempt that reached the harness
        self._share = 0.0
        self._random = random.Random(0)
        self._kinds: tuple[str, ...] = ()
        self._services: set[str] | None = None
        self._rules: list[_Rule] = []
        self._delays: list[tuple[float, set[str] | None]] = []
        # New ID -> calls naming it still to refuse (-1: forever); None: fault not asked for.
        self._fresh_times: int | None = None
        self._fresh: dict[str, dict[str, int]] = {}  # EC2 ID -> operation -> calls left
        self._fresh_operations: set[str] | None = None
        self._role_times: int | None = None
        self._fresh_roles: dict[str, int] = {}  # IAM role ARNs, for EKS
        self._principal_times: int | None = None
        self._fresh_principals: dict[str, int] = {}  # IAM user/role ARNs, for S3 policies
        self._lost: dict[str, int] = {}  # operation -> answers still to lose
        self._crash_point: str | None = None
        self.crashed = False

    # -- what a test asks for --------------------------------------------------------

    def refuse_share(self, share: float, seed: int = 0,
                     kinds: Iterable[str] = ("throttling", "server-error", "dropped"),
                     services: Iterable[str] | None = None) -> None:
        """Refuse a random `share` of exaprov's attempts (seeded), each with one of `kinds`:
        the service's throttling code, a 500/503, or a connection closed mid-request."""
        self._share, self._random = share, random.Random(seed)
        self._kinds = tuple(kinds)
        self._services = set(services) if services is not None else None

    def refuse(self, operation: str, code: str, times: int | None = None, status: int = 400,
               message: str | None = None) -> None:
        """Answer the next `times` calls of `operation` (every call if None) with `code`."""
        self._rules.append(_Rule(operation, code, status, times,
                                 message or f"injected {code}"))

    def lose_response(self, operation: str, times: int = 1) -> None:
        """A lost answer: AWS carries out the next `times` calls of `operation`, but the connection
        drops before the answer arrives (botocore sees ConnectionClosedError and retries)."""
        self._lost[operation] = times

    def delay(self, seconds: float, operations: Iterable[str] | None = None) -> None:
        """Hold each answer (of `operations`, or every one) for `seconds` of real time."""
        self._delays.append((seconds, set(operations) if operations is not None else None))

    def not_found_after_create(self, times: int | None = 2,
                               operations: Iterable[str] | None = None) -> None:
        """EC2 eventual consistency: an ID a create returned is unknown to the next `times`
        calls of each operation naming it (None: never known), so that every call site meets
        it. Calls naming it as a parameter get its `Invalid*.NotFound`; describes naming it
        only in a filter just do not list it. IDs inside a launch template's data are not
        checked (EC2 checks them at launch, not when the template is made). `operations`:
        only these meet it (the others know every ID at once), and describes among them leave
        it out of every list, by tag too (EC2's tag index lags as well)."""
        self._fresh_times = -1 if times is None else times
        self._fresh_operations = set(operations) if operations is not None else None

    def role_not_assumable(self, times: int | None = 2) -> None:
        """IAM eventual consistency: a role created in this run cannot be assumed by EKS for
        the next `times` CreateCluster/CreateNodegroup calls naming it (None: never)."""
        self._role_times = -1 if times is None else times

    def principal_not_known(self, times: int | None = 2) -> None:
        """IAM eventual consistency: S3 does not yet accept a user or role created in this
        run as a bucket policy principal for the next `times` PutBucketPolicy calls naming it
        (None: never); S3 answers MalformedPolicy "Invalid principal in policy"."""
        self._principal_times = -1 if times is None else times

    def crash_at(self, point: str) -> None:
        """Die at an engine checkpoint (`before_create:<address>`, `after_create:<address>`)
        or right after moto carried out an operation (`after:<Operation>`)."""
        self._crash_point = point

    def clear(self) -> None:
        """No more faults from here on (what was refused stays counted)."""
        self._share, self._rules, self._delays, self._lost = 0.0, [], [], {}
        self._fresh_times = self._role_times = self._principal_times = None
        self._fresh.clear()
        self._fresh_roles.clear()
        self._fresh_principals.clear()

    def restart(self) -> None:
        """The next process: AWS answers again and state writes land."""
        self.crashed, self._crash_point = False, None

    def count(self, code: str | None = None) -> int:
        return sum(1 for r in self.refused if code is None or r.code == code)

    def codes(self) -> Counter[str]:
        return Counter(r.code for r in self.refused)

    # -- the stubber wrapper -----------------------------------------------------------

    def answer(self, moto: Callable[[], AWSResponse | None], event_name: str,
               request: Any) -> AWSResponse | None:
        _, service, operation = (event_name.split(".") + ["", ""])[:3]
        ours = b"exaprov/" in _header(request, "User-Agent")
        if not ours:
            return moto()
        if self.crashed:
            raise SimulatedCrash(f"{operation} after the crash")
        with self._mutex:
            self.attempts += 1
            refusal = self._pick_refusal(service, operation, request)
        for seconds, operations in self._delays:
            if operations is None or operation in operations:
                time.sleep(seconds)
        if refusal is not None:
            code, status, message = refusal
            self.refused.append(Refusal(service, operation, code))
            if code == DROPPED:
                raise ConnectionClosedError(endpoint_url=request.url)
            return error_response(request, service, code, status, message)
        response = moto()
        if response is not None and response.status_code < 300:
            self._after_success(service, operation, request, response)
            with self._mutex:
                lose = self._lost.get(operation, 0) > 0
                if lose:
                    self._lost[operation] -= 1
            if lose:
                self.refused.append(Refusal(service, operation, LOST))
                raise ConnectionClosedError(endpoint_url=request.url)
        if self._crash_point == f"after:{operation}":
            self._crash(self._crash_point)
        return response

    def _pick_refusal(self, service: str, operation: str,
                      request: Any) -> tuple[str, int, str] | None:
        for rule in self._rules:
            if rule.operation == operation and rule.left != 0:
                if rule.left is not None:
                    rule.left -= 1
                return rule.code, rule.status, rule.message
        not_found = self._not_yet_known(service, operation, request)
        if not_found:
            return not_found
        if self._share and service in PROTOCOLS and (
                self._services is None or service in self._services) \
                and self._random.random() < self._share:
            kind = self._random.choice(self._kinds)
            if kind == "throttling":
                return (*THROTTLING.get(service, DEFAULT_THROTTLING), "Rate exceeded")
            if kind == "server-error":
                code, status = self._random.choice(SERVER_ERRORS.get(service, DEFAULT_SERVER_ERRORS))
                return code, status, "We encountered an internal error. Please try again."
            return DROPPED, 0, ""
        return None

    def _not_yet_known(self, service: str, operation: str,
                       request: Any) -> tuple[str, int, str] | None:
        if service == "ec2" and self._fresh:
            for key, value in parse_qsl(_body(request)):
                if key.startswith(("Filter.", "LaunchTemplateData.")) or value not in self._fresh:
                    continue
                if self._take_fresh(value, operation):
                    prefix = next(p for p in EC2_NOT_FOUND if value.startswith(p))
                    code = EC2_NOT_FOUND_BY_OPERATION.get((operation, prefix), EC2_NOT_FOUND[prefix])
                    return code, 400, f"The ID '{value}' does not exist"
        if service == "eks" and operation in ("CreateCluster", "CreateNodegroup") and self._fresh_roles:
            params = json.loads(_body(request) or "{}")
            role = params.get("roleArn") or params.get("nodeRole")
            if self._fresh_roles.get(role, 0) != 0:
                self._fresh_roles[role] -= 1
                return ("InvalidParameterException", 400,
                        f"Role with arn: {role}, could not be assumed because it does not exist "
                        "or the trusted entity is not correct")
        if service == "s3" and operation == "PutBucketPolicy" and self._fresh_principals:
            body = _body(request)
            named = [arn for arn, left in self._fresh_principals.items() if left != 0 and arn in body]
            if named:
                self._fresh_principals[named[0]] -= 1
                return "MalformedPolicy", 400, "Invalid principal in policy"
        return None

    def _after_success(self, service: str, operation: str, request: Any,
                       response: AWSResponse) -> None:
        if service == "ec2" and self._fresh_times is not None and operation in EC2_CREATES:
            found = re.search(rf"<{EC2_CREATES[operation]}>([^<]+)<", _text(response))
            if found:
                with self._mutex:
                    self._fresh[found.group(1)] = {}
        elif service == "ec2" and self._fresh and operation.startswith("Describe"):
            named = {v for k, v in parse_qsl(_body(request)) if k.startswith("Filter.")}
            if self._fresh_operations is not None and operation in self._fresh_operations:
                # Singled out: a list by tag (or unfiltered) leaves a new item out too.
                named = {i for i in self._fresh if i in _text(response)}
            with self._mutex:
                unknown = {i for i in named & set(self._fresh) if self._take_fresh(i, operation)}
            if unknown:
                _hide(response, unknown)
                self.refused.append(Refusal(service, operation, NOT_LISTED))
        if service == "iam" and operation in ("CreateRole", "CreateUser"):
            found = re.search(r"<Arn>([^<]+)<", _text(response))
            with self._mutex:
                if found and self._role_times is not None and operation == "CreateRole":
                    self._fresh_roles[found.group(1)] = self._role_times
                if found and self._principal_times is not None:
                    self._fresh_principals[found.group(1)] = self._principal_times

    def _take_fresh(self, fresh_id: str, operation: str) -> bool:
        """True (and one fewer left) while `operation` should not know `fresh_id` yet."""
        if self._fresh_operations is not None and operation not in self._fresh_operations:
            return False
        left = self._fresh[fresh_id].setdefault(operation, self._fresh_times or 0)
        if left == 0:
            return False
        self._fresh[fresh_id][operation] = left - 1
        return True

    def _crash(self, point: str) -> None:
        self.crashed = True
        raise SimulatedCrash(point)

    def checkpoint(self, name: str) -> None:
        if name == self._crash_point and not self.crashed:
            self._crash(name)


def _header(request: Any, name: str) -> bytes:
    value = request.headers.get(name, b"")
    return value.encode() if isinstance(value, str) else value


def _body(request: Any) -> str:
    body = request.body
    if hasattr(body, "read"):  # a stream (S3 uploads): never an EC2 or EKS request
        return ""
    return body.decode(errors="replace") if isinstance(body, bytes) else (body or "")


def _text(response: AWSResponse) -> str:
    return response.content.decode(errors="replace")


def _hide(response: AWSResponse, ids: set[str]) -> None:
    """Drop the listed items whose own ID is one of `ids` (EC2 answers an empty list, never
    an error, for a filter it cannot match yet)."""
    root = ET.fromstring(response.content)
    for listing in root:
        for item in list(listing):
            if any(child.text in ids for child in item):
                listing.remove(item)
    response.raw = MockRawResponse(ET.tostring(root))
    response._content = None


# -- wire-format error answers -------------------------------------------------------

def error_response(request: Any, service: str, code: str, status: int,
                   message: str) -> AWSResponse:
    """An AWS error answer in the service's protocol, as botocore expects to parse it."""
    request_id = str(uuid.uuid4())
    protocol = PROTOCOLS.get(service, "query")
    headers = {"x-amzn-RequestId": request_id}
    if protocol == "ec2":
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
                f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID>"
                "</Response>")
        headers["Content-Type"] = "text/xml;charset=UTF-8"
    elif protocol == "query":
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId>"
                "</ErrorResponse>")
        headers["Content-Type"] = "text/xml"
    elif protocol == "rest-xml":
        body = "" if request.method == "HEAD" else (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}"
            f"</Message><RequestId>{request_id}</RequestId></Error>")
        headers["Content-Type"] = "application/xml"
    else:  # json, rest-json
        body = json.dumps({"__type": code, "message": message})
        headers["x-amzn-ErrorType"] = code
        headers["Content-Type"] = "application/x-amz-json-1.1"
    return AWSResponse(request.url, status, headers, MockRawResponse(body))


# -- installation ---------------------------------------------------------------------

def install(faults: Faults, monkeypatch: Any) -> None:
    """Put `faults` in front of moto's stubber, the engine's checkpoints and state writes."""
    original = BotocoreStubber.__call__

    def stubbed(stubber: BotocoreStubber, event_name: str, request: Any,
                **kwargs: Any) -> AWSResponse | None:
        if not stubber.enabled:
            return None
        return faults.answer(lambda: original(stubber, event_name, request, **kwargs),
                             event_name, request)

    original_checkpoint = exaprov.engine.checkpoint

    def checkpoint(name: str) -> None:
        faults.checkpoint(name)
        original_checkpoint(name)

    original_save = StateWriter._save

    def save(writer: StateWriter) -> None:
        if not faults.crashed:  # a dead process writes nothing
            original_save(writer)

    monkeypatch.setattr(BotocoreStubber, "__call__", stubbed)
    monkeypatch.setattr(exaprov.engine, "checkpoint", checkpoint)
    monkeypatch.setattr(StateWriter, "_save", save)


@pytest.fixture(name="faults")
def faults_fixture(monkeypatch: pytest.MonkeyPatch) -> Faults:
    """A fresh `Faults` in front of moto for one test (import this fixture to use it)."""
    faults = Faults()
    install(faults, monkeypatch)
    return faults


# -- what AWS holds, by the deployment's tag ------------------------------------------

DEPLOYMENT_TAG = "exaprov:deployment"
EC2_KINDS = {"ec2:vpc": ("describe_vpcs", "Vpcs", "VpcId"),
             "ec2:subnet": ("describe_subnets", "Subnets", "SubnetId"),
             "ec2:internet-gateway": ("describe_internet_gateways", "InternetGateways",
                                      "InternetGatewayId"),
             "ec2:route-table": ("describe_route_tables", "RouteTables", "RouteTableId"),
             "ec2:security-group": ("describe_security_groups", "SecurityGroups", "GroupId"),
             "ec2:elastic-ip": ("describe_addresses", "Addresses", "AllocationId"),
             "ec2:natgateway": ("describe_nat_gateways", "NatGateways", "NatGatewayId"),
             "ec2:launch-template": ("describe_launch_templates", "LaunchTemplates",
                                     "LaunchTemplateId")}


def inventory(name: str = "example", region: str = "us-west-1") -> dict[str, set[str]]:
    """Every resource AWS (moto) holds tagged `exaprov:deployment=<name>`, by state kind and
    state ID; kinds with nothing are left out. Read with the test's own (unfaulted) clients."""
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, region_name=region)

    def ours(tags: Any) -> bool:
        pairs = tags.items() if isinstance(tags, dict) else (
            (t.get("Key", t.get("TagKey")), t.get("Value", t.get("TagValue"))) for t in tags or ())
        return (DEPLOYMENT_TAG, name) in set(pairs)

    found: dict[str, set[str]] = {}
    ec2 = client("ec2")
    for kind, (operation, key, id_key) in EC2_KINDS.items():
        param = "Filter" if operation == "describe_nat_gateways" else "Filters"
        items = getattr(ec2, operation)(**{param: [{"Name": f"tag:{DEPLOYMENT_TAG}",
                                                    "Values": [name]}]})[key]
        found[kind] = {i[id_key] for i in items if i.get("State") not in ("deleted", "deleting")}
    eks = client("eks")
    for cluster in eks.list_clusters()["clusters"]:
        if ours(eks.describe_cluster(name=cluster)["cluster"].get("tags")):
            found.setdefault("eks:cluster", set()).add(cluster)
        for group in eks.list_nodegroups(clusterName=cluster)["nodegroups"]:
            if ours(eks.describe_nodegroup(clusterName=cluster, nodegroupName=group)[
                    "nodegroup"].get("tags")):
                found.setdefault("eks:nodegroup", set()).add(group)
    iam = client("iam")
    found["iam:role"] = {r["Arn"] for r in iam.list_roles()["Roles"]
                         if ours(iam.list_role_tags(RoleName=r["RoleName"])["Tags"])}
    found["iam:user"] = {u["Arn"] for u in iam.list_users()["Users"]
                         if ours(iam.list_user_tags(UserName=u["UserName"])["Tags"])}
    kms = client("kms")
    found["kms:key"] = {k["KeyId"] for k in kms.list_keys()["Keys"]
                        if kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"]
                        != "PendingDeletion"
                        and ours(kms.list_resource_tags(KeyId=k["KeyId"])["Tags"])}
    logs = client("logs")
    found["logs:log-group"] = {g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]
                               if ours(logs.list_tags_log_group(
                                   logGroupName=g["logGroupName"])["tags"])}
    rds = client("rds")
    found["rds:db-instance"] = {d["DBInstanceIdentifier"]
                                for d in rds.describe_db_instances()["DBInstances"]
                                if ours(d.get("TagList"))}
    found["rds:db-subnet-group"] = {
        g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]
        if ours(rds.list_tags_for_resource(ResourceName=g["DBSubnetGroupArn"])["TagList"])}
    s3 = client("s3")
    found["s3:bucket"] = {b["Name"] for b in s3.list_buckets()["Buckets"]
                          if ours(_bucket_tags(s3, b["Name"]))}
    secrets = client("secretsmanager")
    found["secretsmanager:secret"] = {s["ARN"] for s in secrets.list_secrets()["SecretList"]
                                      if ours(s.get("Tags"))}
    return {kind: ids for kind, ids in found.items() if ids}


def _bucket_tags(s3: Any, bucket: str) -> list[dict[str, str]]:
    try:
        return s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    except Exception:  # NoSuchTagSet
        return []


def recorded(state_file: str | Any) -> dict[str, set[str]]:
    """The state file's resources of the kinds `inventory` reads, by kind."""
    from pathlib import Path

    resources = json.loads(Path(state_file).read_text())["resources"]
    kinds = {*EC2_KINDS, "eks:cluster", "eks:nodegroup", "iam:role", "iam:user", "kms:key",
             "logs:log-group", "rds:db-instance", "rds:db-subnet-group", "s3:bucket",
             "secretsmanager:secret"}
    found: dict[str, set[str]] = {}
    for record in resources.values():
        if record.get("kind") in kinds and record.get("id"):
            found.setdefault(record["kind"], set()).add(record["id"])
    return found
