"""Shared fixtures: moto as AWS, a call recorder (a botocore event hook), a work folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import pytest
import yaml
from click.testing import CliRunner, Result
from moto import mock_aws
from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.iam.models import AWSManagedPolicy, IAMBackend

from exaprov import emulator
from exaprov.cli import main

READ_PREFIXES = ("Describe", "List", "Get", "Head", "Search", "Lookup")
REGION = "us-west-1"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_environment(monkeypatch, tmp_path)


def isolate_environment(patch: pytest.MonkeyPatch, folder: Path) -> None:
    """Fake credentials, no real endpoint, no profile: nothing can reach real AWS."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
                "EXAPROV_CRASH_AT", "EXAPROV_SANDBOX_HOME"):
        patch.delenv(var, raising=False)
    # The sandbox emulator is one per user, recorded under $XDG_STATE_HOME: each test gets its
    # own, and never the real user's.
    patch.setenv("XDG_STATE_HOME", str(folder / "xdg-state"))
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_CONFIG_FILE", str(folder / "no-aws-config"))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-aws-credentials"))
    # `init` never asks real EKS for its versions (a test that wants it unsets this, under moto).
    patch.setenv("EXAPROV_OFFLINE", "1")
    # Polls and retries run 1000x faster than against AWS (the time-scale testing knob).
    patch.setenv("EXAPROV_TIME_SCALE", "0.001")


class CallLog:
    """Every AWS operation any client makes, recorded by a `before-call` event hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls.append((model.service_model.service_name, model.name))

    def mutating(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if not c[1].startswith(READ_PREFIXES)]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def calls() -> Iterator[CallLog]:
    # BUILTIN_HANDLERS seed every new botocore session, so this sees exaprov's clients too.
    log = CallLog()
    handler = ("before-call", log)
    botocore.handlers.BUILTIN_HANDLERS.append(handler)
    try:
        yield log
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(handler)


@pytest.fixture
def hooks() -> Iterator[Callable[..., None]]:
    """`hooks(handler, event="before-call")`: a botocore event hook on every session created
    during the test (how tests inject what real AWS does and moto does not); removed after."""
    added: list[tuple[str, Callable[..., Any]]] = []

    def add(handler: Callable[..., Any], event: str = "before-call") -> None:
        entry = (event, handler)
        botocore.handlers.BUILTIN_HANDLERS.append(entry)
        added.append(entry)

    yield add
    for entry in added:
        botocore.handlers.BUILTIN_HANDLERS.remove(entry)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def ec2(aws: None) -> Any:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    write_config({"name": "example"})
    return work


def write_config(data: dict[str, Any], path: str = "exaprov.yaml") -> Path:
    Path(path).write_text(yaml.safe_dump(data))
    return Path(path)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tagged(ec2: Any, operation: str, key: str, name: str = "example",
           filter_param: str = "Filters") -> list[dict[str, Any]]:
    """What EC2 holds of one type carrying the deployment's tag."""
    items = getattr(ec2, operation)(**{filter_param: [
        {"Name": "tag:exaprov:deployment", "Values": [name]}]})[key]
    return [i for i in items if i.get("State") not in ("deleted", "deleting")]


def pytest_configure(config: pytest.Config) -> None:
    """Test folders on tmpfs where there is one: exaprov fsyncs its state file on every
    record (~100 per `up`), most of an in-process run's time on a busy disk. Durability
    itself is tested in test_state.py with the calls, not the disk. (xdist workers get a
    folder under the controller's.)"""
    shm = Path("/dev/shm")
    if config.option.basetemp or hasattr(config, "workerinput") or not shm.is_dir():
        return
    config.option.basetemp = tempfile.mkdtemp(prefix="exaprov-tests-", dir=shm)
    config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests first: each runs for up to a minute and a half (a fresh venv, a
    real emulator process), so with two xdist workers they overlap the crash matrices on
    the other worker instead of running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture(autouse=True, scope="session")
def _moto_like_aws() -> Iterator[None]:
    """moto handles one in-process request at a time (AWS answers each atomically; moto's
    dicts are not thread-safe), and every botocore session shares one data loader (test
    speed: exaprov makes a session per command). See tests/crashing.py."""
    from tests.crashing import one_request_at_a_time, shared_botocore_loader

    with shared_botocore_loader(), one_request_at_a_time():
        yield


# A suite started in the background (`cmd &`, some CI runners) inherits SIGINT ignored: Python
# then installs no KeyboardInterrupt handler, and neither do the exaprov processes the tests
# start, so the Ctrl-C tests would see a signal that does nothing. A terminal's Ctrl-C is what
# they test: restore it (the children then get the default, and Python's handler).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
# moto builds ~1,300 default AMIs (us-west-1) for every EC2 backend it makes, anew at
# every mock_aws reset (about a second a test). Nothing exaprov does reads an AMI: node
# groups name an AMI type, and the emulator's instances fall back to a placeholder image.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
emulator.install_extensions()  # what EKS does and moto does not, for every test

# The AWS managed policies exaprov attaches. moto rejects attaching one it does not have,
# so these prove the names are real; loading all ~1,000 costs about a second per test.
USED_POLICIES = ("AmazonEKSClusterPolicy", "AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                 "AmazonEC2ContainerRegistryReadOnly", "AmazonS3ReadOnlyAccess",
                 "AmazonEKSVPCResourceController", "AmazonEBSCSIDriverPolicy")


@cache
def _managed_policy_data() -> dict[str, Any]:
    data = json.loads(aws_managed_policies_data)
    return {name: data[name] for name in USED_POLICIES}


@pytest.fixture(autouse=True)
def _few_managed_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: IAMBackend) -> list[Any]:
        return [AWSManagedPolicy.from_data(name, self.account_id, self.region_name, data)
                for name, data in _managed_policy_data().items()]

    monkeypatch.setattr(IAMBackend, "_init_aws_policies", init)
