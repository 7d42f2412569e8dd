"""Crash injection: the process "dies" right after AWS carried out one chosen call.

`CrashAt(target)` hooks every botocore client made while it is installed (through
botocore's BUILTIN_HANDLERS, as conftest's `calls` does). It names each successful
mutating call (anything but Describe/List/Get/Head/...) with a key stable across runs,
`service.Operation(label)#n`, where the label comes from the call's parameters (the
resource's `exaprov:resource` tag, names, IDs resolved to the Name of what they point
at) and n counts repeats of the same key. On the call whose key is `target`:

- AWS has carried it out (the hook runs `after-call`), then SimulatedCrash is raised in
  place of the answer, as if the process died before reading it;
- every later AWS call of that run, in any thread, raises SimulatedCrash before it is
  sent: a dead process makes no calls;
- the state directory's files are copied at that instant, and `restore()` puts them back
  exactly so once the crashed run has returned (threads still running meanwhile may have
  written; a killed process would not have).

With no target it only records the keys: the reference run that the matrix is built from.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import botocore.loaders
import botocore.session
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam.models import AWSManagedPolicy, IAMBackend

from exaprov.state import LocalStateStore, State
from tests.census import Census, census, normalise
from tests.conftest import (
    READ_PREFIXES,
    REGION,
    _managed_policy_data,
    cli,
    isolate_environment,
    write_config,
)
from tests.neighbour import build_in_process

TAG_RESOURCE = "exaprov:resource"
# Parameters that name what a call acts on, in the order they appear in a key.
LABEL_KEYS = ("name", "nodegroupName", "principalArn", "RoleName", "UserName", "PolicyArn",
              "PolicyName", "AliasName", "logGroupName", "DBInstanceIdentifier",
              "DBSubnetGroupName", "Bucket", "SecretId", "LaunchTemplateName", "VpcId", "PeerVpcId",
              "GroupId", "RouteTableId", "SubnetId", "InternetGatewayId", "DestinationCidrBlock",
              "NatGatewayId", "GatewayId", "VpcPeeringConnectionId", "LaunchTemplateId",
              "AllocationId", "AssociationId")
_SECRET_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


class SimulatedCrash(BaseException):
    """Stands for SIGKILL: not an Exception, so no `except Exception` in exaprov handles it."""


# Node groups differ only in name: one code path, so one of them stands for all of them.
_NODE_GROUPS = re.compile(r"(default|scheduler|module-repository|prometheus|runner-\w+)\b")
FULL_MATRIX = "EXAPROV_FULL_CRASH_MATRIX"


def matrix_cases(calls: list[str]) -> list[str]:
    """The cases of a crash matrix: one per operation and kind of thing it acts on (`sample`),
    or every call with EXAPROV_FULL_CRASH_MATRIX=1."""
    return sorted(set(calls)) if os.environ.get(FULL_MATRIX) else sample(calls)


def sample(calls: list[str]) -> list[str]:
    """One case per operation and kind of thing it acts on. Calls that differ only in a
    number (subnet 1-3, the n-th rule of one group, the n-th policy of one role) or in which
    node group they act on run the same code on the same kind of resource: the first in
    sorted order stands for them."""
    chosen: dict[str, str] = {}
    for call in sorted(set(calls)):
        operation, label = call.split("(", 1)
        label = _NODE_GROUPS.sub("<group>", re.sub(r"#\d+$", "", label).rstrip(")"))
        chosen.setdefault(f"{operation}({re.sub(r'-?[0-9]+', '', label.split(' ')[0])}", call)
    return sorted(chosen.values())


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES)


class _Ec2Names:
    """ID → the Name of what it points at, read from moto's EC2 backend (no API call)."""

    def get(self, resource_id: str, default: str) -> str:
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
        name = backend.tags.get(resource_id, {}).get("Name")
        if name:
            return str(name)
        try:
            if resource_id.startswith("sg-"):
                return str(backend.get_security_group_from_id(resource_id).name)
            if resource_id.startswith("vpc-"):
                return str(backend.vpcs[resource_id].cidr_block)
            if resource_id.startswith("rtb-"):
                return f"table@{self.get(backend.route_tables[resource_id].vpc_id, 'vpc')}"
            if resource_id.startswith("lt-"):
                return str(backend.launch_templates[resource_id].name)
            if resource_id.startswith("rtbassoc-"):
                for table in backend.route_tables.values():
                    subnet = table._associations.get(resource_id)
                    if subnet:
                        return f"{self.get(table.id, 'rtb')} <-> {self.get(subnet, 'subnet')}"
        except (KeyError, AttributeError):
            pass
        return default


def _tail(value: str) -> str:
    """An ARN's last part: a policy's or role's name, a secret's name without its suffix."""
    if not value.startswith("arn:"):
        return value
    if ":secret:" in value:
        return _SECRET_SUFFIX.sub("", value.split(":secret:", 1)[1])
    return re.split(r"[:/]", value)[-1]


def _resource_tag(params: dict[str, Any]) -> str | None:
    specs = params.get("TagSpecifications") or []
    tags = [t for spec in specs for t in spec.get("Tags", [])]
    if isinstance(params.get("Tags"), list):
        tags += params["Tags"]
    found = {t.get("Key", t.get("TagKey")): t.get("Value", t.get("TagValue")) for t in tags}
    if isinstance(params.get("tags"), dict):
        found.update(params["tags"])
    return found.get(TAG_RESOURCE)


def call_label(params: dict[str, Any]) -> str:
    """What a call acts on, in words stable across runs."""
    parts = [_resource_tag(params) or ""]
    parts += [_tail(str(params[k])) for k in LABEL_KEYS if isinstance(params.get(k), str)]
    parts += [k for k in params if k.startswith("Enable")]  # ModifyVpcAttribute's attribute
    for perm in params.get("IpPermissions") or []:
        sources = [r.get("Description") or r.get(k) for key, k in (
            ("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6"), ("UserIdGroupPairs", "GroupId"),
            ("PrefixListIds", "PrefixListId")) for r in perm.get(key, [])]
        parts.append(f"{perm.get('IpProtocol')} {perm.get('FromPort', '')}-{perm.get('ToPort', '')} "
                     + ",".join(map(str, sources)))
    return normalise(" ".join(dict.fromkeys(p for p in parts if p)), _Ec2Names())


class CrashAt:
    """Record mutating calls by key; at `target` (if any), crash as described above."""

    def __init__(self, target: str | None = None, state_dir: Path | None = None) -> None:
        self.target = target
        self.state_dir = state_dir
        self.keys: list[str] = []
        self.crashed = False
        self.snapshot: dict[str, bytes] | None = None
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- the hooks -----------------------------------------------------------------

    def _name(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if self.crashed:
            raise SimulatedCrash("no AWS call after the crash")
        if is_mutating(model.name):
            service = model.service_model.service_name
            context["crash_key"] = f"{service}.{model.name}({call_label(params)})"

    def _refuse(self, **_: Any) -> None:
        if self.crashed:
            raise SimulatedCrash("no AWS call after the crash")

    def _after(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        base = context.get("crash_key")
        if base is None or http_response.status_code >= 300:
            return  # a read, or a call AWS refused: nothing was carried out
        with self._lock:
            if self.crashed:
                raise SimulatedCrash("no AWS answer after the crash")
            self._seen[base] += 1
            n = self._seen[base]
            key = base if n == 1 else f"{base}#{n}"
            self.keys.append(key)
            if key != self.target:
                return
            self.crashed = True
            self.snapshot = self._read_state_dir()
        raise SimulatedCrash(key)

    @contextmanager
    def installed(self) -> Iterator[CrashAt]:
        handlers = [("before-parameter-build", self._name), ("before-call", self._refuse),
                    ("after-call", self._after)]
        botocore.handlers.BUILTIN_HANDLERS.extend(handlers)
        try:
            yield self
        finally:
            for handler in handlers:
                botocore.handlers.BUILTIN_HANDLERS.remove(handler)

    # -- the state directory at the crash instant ---------------------------------------

    def _read_state_dir(self) -> dict[str, bytes]:
        if self.state_dir is None or not self.state_dir.is_dir():
            return {}
        files = {}
        for path in self.state_dir.iterdir():
            try:
                files[path.name] = path.read_bytes()
            except FileNotFoundError:  # a temp file renamed away meanwhile
                continue
        return files

    def restore(self) -> None:
        """The state directory exactly as it was when the process "died"."""
        assert self.state_dir is not None and self.snapshot is not None
        for path in self.state_dir.iterdir() if self.state_dir.is_dir() else ():
            if path.name not in self.snapshot:
                path.unlink()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for name, data in self.snapshot.items():
            (self.state_dir / name).write_bytes(data)


@contextmanager
def memory_workdir() -> Iterator[Path]:
    """A work folder on tmpfs (/dev/shm) where there is one, as the current directory.

    exaprov fsyncs the state file on every record (~100 per `up`); on a busy disk that is
    most of an in-process run. What these tests check is the file's content at a crash,
    which a simulated crash leaves the same on tmpfs; durability against power loss is
    tests/test_state.py's concern."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="exaprov-", dir=shm if shm.is_dir() else None) as work:
        previous = Path.cwd()
        os.chdir(work)
        try:
            yield Path(work)
        finally:
            os.chdir(previous)


_MOTO_LOCK = threading.RLock()


@contextmanager
def one_request_at_a_time() -> Iterator[None]:
    """moto answers each in-process request with plain dicts, not thread-safe: a describe
    iterating a backend's dict while another step's thread creates something raises
    "RuntimeError: dictionary changed size during iteration" (seen once in ~130 runs:
    DescribeSecurityGroupRules of peering beside CreateSecurityGroup of database-sg).
    AWS answers each request atomically; so does moto with this lock (exaprov's steps
    still run concurrently, only moto's handling of one request is not interleaved)."""
    from moto.core.botocore_stubber import BotocoreStubber

    original = BotocoreStubber.process_request

    def process_request(self: Any, request: Any) -> Any:
        with _MOTO_LOCK:
            return original(self, request)

    BotocoreStubber.process_request = process_request  # type: ignore[method-assign]
    try:
        yield
    finally:
        BotocoreStubber.process_request = original  # type: ignore[method-assign]


@contextmanager
def shared_botocore_loader() -> Iterator[None]:
    """One botocore data loader for every session (exaprov makes a session per command):
    each new session otherwise parses botocore's endpoint and service JSON again, most of
    an in-process `up`'s time. Test speed only; nothing exaprov does changes."""
    loader = botocore.loaders.create_loader()
    original = botocore.session.create_loader
    botocore.session.create_loader = lambda *args, **kwargs: loader  # type: ignore[assignment]
    try:
        yield
    finally:
        botocore.session.create_loader = original  # type: ignore[assignment]


# -- the scenario both crash matrices run ----------------------------------------------

# the example config with its cpu runner pool only: a second pool repeats the same
# calls (launch template, node group, ASG tags) on another name, adding cases, not code
# paths. The module-repository backend is on (the default).
CONFIG: dict[str, Any] = {
    "name": "example",
    "cluster": {"runner_pools": [{"suffix": "cpu", "node_instance_category": "cpu",
                                  "capacity_type": "SPOT", "node_instance_type": "m5.xlarge",
                                  "disk_size": 100, "min_size": 1, "max_size": 4}]},
}
CLIENT_CIDR = "10.50.0.0/16"
STATE_DIR = Path("state")
NEIGHBOUR_DIR = Path("neighbour")  # the second deployment's state, beside ours


def prepare_account_and_state(count: bool = True) -> Census:
    """A neighbour (tests/neighbour.py: a second deployment and untagged resources whose names
    collide with ours), a client VPC (with one route table besides its main one) recorded as
    a peer in an otherwise empty state, and the config: what `exaprov init` + `exaprov peer`
    leave when the deployment's resources do not exist (yet, or any more), so that one `up`
    builds the whole stack and the peering. Returns the census of the account then (if
    `count`: it is the same every time, so a matrix counts it once)."""
    build_in_process(CONFIG, NEIGHBOUR_DIR)
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock=CLIENT_CIDR,
                         TagSpecifications=[{"ResourceType": "vpc", "Tags": [
                             {"Key": "Name", "Value": "client"}]}])["Vpc"]["VpcId"]
    ec2.create_route_table(VpcId=vpc, TagSpecifications=[{"ResourceType": "route-table", "Tags": [
        {"Key": "Name", "Value": "client-extra"}]}])
    write_config(CONFIG)
    state = State.new(CONFIG["name"], REGION)
    state.data["peers"] = {vpc: {"route_table_ids": None, "region": None, "profile": None,
                                 "cidrs": [CLIENT_CIDR]}}
    LocalStateStore(STATE_DIR / f"{CONFIG['name']}.json").write(state)
    return census() if count else Counter()


@contextmanager
def isolated_aws() -> Iterator[None]:
    """What conftest's autouse fixtures and `aws` give a test, for code that runs outside
    any test (the matrices' reference runs, at collection): fake credentials, fast polls,
    few managed policies, a fresh moto, a work folder of its own."""
    with pytest.MonkeyPatch.context() as patch, memory_workdir() as work, shared_botocore_loader(), \
            one_request_at_a_time():
        isolate_environment(patch, work)
        patch.setattr(IAMBackend, "_init_aws_policies", lambda self: [
            AWSManagedPolicy.from_data(name, self.account_id, self.region_name, data)
            for name, data in _managed_policy_data().items()])
        with mock_aws():
            yield


def run_ok(*command: str) -> None:
    result = cli(*command)
    assert result.exit_code == 0, result.output


def recorded_calls(*command: str) -> list[str]:
    """The keys of the successful mutating calls `command` makes."""
    recorder = CrashAt()
    with recorder.installed():
        run_ok(*command)
    return list(recorder.keys)


def crash_then_rerun(command: tuple[str, ...], target: str) -> CrashAt:
    """Run `command` until AWS has carried out `target`, "kill" it there, put the state
    directory back as it was at that instant; then run `command` again to success."""
    crash = CrashAt(target, STATE_DIR)
    with crash.installed():
        try:
            cli(*command)
        except SimulatedCrash:
            pass  # the crash reached the main thread (a call it made after the walk)
    assert crash.crashed, f"the run never reached {target}; calls made: {crash.keys}"
    crash.restore()
    run_ok(*command)
    return crash
