"""Interrupted runs of the installed command, with real signals, against one sandbox emulator.

The emulator holds a new cluster CREATING, and node groups and the cluster DELETING, for a
few seconds, as EKS does for minutes, so that a signal lands while exaprov waits on them.
Each signal is sent once the run has observably reached its point (the state records the
delete or create and the emulator reports the resource DELETING or CREATING), never after
a guessed sleep; and after the signal the emulator must still report it so (the signal
really landed mid-wait).

- destroy interrupted by SIGINT, SIGTERM or SIGKILL while node groups and the cluster are
  DELETING: the next `destroy` exits 0 and the emulator holds what it held before `up`;
  an `up` after such an interruption converges to what an uninterrupted `up` builds;
- SIGTERM and SIGHUP stop `up` and `destroy` as the first Ctrl-C does, with local and with
  S3 state: exit 143 / 129, a valid state, no lock left behind;
- `--state s3://bucket/key` on the command line keeps the state in S3 and writes no local
  file at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov.sandbox import SANDBOX_CREDENTIALS
from exaprov.state import State
from tests.census import Census, census, difference
from tests.conftest import REGION, isolate_environment
from tests.test_e2e import exaprov_command

pytestmark = pytest.mark.e2e

BOUND = 120.0  # seconds: far above what any step takes here; only a hang reaches it
CLUSTER = "exafunction-cluster-example"
LOCAL_STATE = Path("state") / "sandbox" / "deployments" / "example.json"
BUCKET = "exaprov-team-state"
EMULATOR_FILES = {"server.json", "server.log", "server.lock", "server.ready"}
# How long the emulator holds each transition (seconds). Long enough for the test to see
# the point and signal while the run still waits there even on a loaded machine; nothing
# waits for them to pass but exaprov itself.
HOLD = "4"
# The database is protected from deletion by default, and keeps a final snapshot.
DESTROY = ("destroy", "--yes", "--disable-deletion-protection", "--skip-final-snapshot")


@dataclass
class Sandbox:
    work: Path
    env: dict[str, str]
    empty: Census  # the emulator before any `up` (holds only the team's state bucket)
    built: Census  # what one uninterrupted `up` adds

    @property
    def endpoint(self) -> str:
        record = Path(self.env["XDG_STATE_HOME"]) / "exaprov" / "sandbox" / "server.json"
        return json.loads(record.read_text())["endpoint"]

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint,
                            **SANDBOX_CREDENTIALS)

    def census(self) -> Census:
        return census(REGION, endpoint_url=self.endpoint, **SANDBOX_CREDENTIALS)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*exaprov_command(), *args, "--sandbox"], cwd=self.work,
                              env=self.env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"exaprov {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*exaprov_command(), *args, "--sandbox"], cwd=self.work,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One emulator for the module: durations on, exaprov polling 100x faster than on AWS."""
    work = tmp_path_factory.mktemp("interruptions")
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, work)
        patch.setenv("EXAPROV_TIME_SCALE", "0.01")
        for key in ("CLUSTER_CREATE", "CLUSTER_DELETE", "NODEGROUP_DELETE"):
            patch.setenv(f"EXAPROV_EMULATOR_{key}_SECONDS", HOLD)
        env = dict(os.environ)
    box = Sandbox(work, env, Census(), Census())
    subprocess.run([*exaprov_command(), "init"], cwd=work, env=env, check=True,
                   capture_output=True)
    try:
        box.run("plan")  # starts the emulator; read-only
        box.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": REGION})
        box.empty = box.census()
        box.run("up", "--yes")
        box.built = box.census() - box.empty
        assert box.built["eks:cluster", CLUSTER] == 1
        box.run(*DESTROY)
        assert box.census() == box.empty, difference(box.empty, box.census())
        yield box
    finally:
        subprocess.run([*exaprov_command(), "sandbox", "stop"], cwd=work, env=env,
                       capture_output=True)


# -- observing a run from outside ----------------------------------------------------------

def local_records(box: Sandbox) -> dict[str, dict[str, Any]]:
    try:
        return dict(json.loads((box.work / LOCAL_STATE).read_text())["resources"])
    except (FileNotFoundError, ValueError, KeyError):  # not written yet
        return {}


def s3_records(box: Sandbox, key: str) -> dict[str, dict[str, Any]]:
    try:
        body = box.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return dict(json.loads(body)["resources"])
    except Exception:  # not written yet
        return {}


def eks_status(box: Sandbox, nodegroup: str | None = None) -> str:
    eks = box.client("eks")
    try:
        if nodegroup:
            return str(eks.describe_nodegroup(clusterName=CLUSTER,
                                              nodegroupName=nodegroup)["nodegroup"]["status"])
        return str(eks.describe_cluster(name=CLUSTER)["cluster"]["status"])
    except eks.exceptions.ResourceNotFoundException:
        return "GONE"


def groups_deleting(records: dict[str, dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records.values()
            if r.get("kind") == "eks:nodegroup" and r.get("status") == "deleting"]


def all_groups(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records.values() if r.get("kind") == "eks:nodegroup"]


# A point of a run: (the state's records, the sandbox) -> what is held there (a node group
# name, or "cluster") once the run has reached it, else None.
Point = Callable[[dict[str, dict[str, Any]], Sandbox], "str | None"]


def first_group_deleting(records: dict[str, dict[str, Any]], box: Sandbox) -> str | None:
    for name in groups_deleting(records):
        if eks_status(box, name) == "DELETING":
            return name
    return None


def every_group_deleting(records: dict[str, dict[str, Any]], box: Sandbox) -> str | None:
    groups = all_groups(records)
    if not groups or any(g.get("status") != "deleting" for g in groups):
        return None
    return first_group_deleting(records, box)


def cluster_deleting(records: dict[str, dict[str, Any]], box: Sandbox) -> str | None:
    if (records.get("cluster.cluster") or {}).get("status") != "deleting":
        return None
    return "cluster" if eks_status(box) == "DELETING" else None


def cluster_creating(records: dict[str, dict[str, Any]], box: Sandbox) -> str | None:
    if (records.get("cluster.cluster") or {}).get("status") != "created":
        return None
    return "cluster" if eks_status(box) == "CREATING" else None


POINTS: dict[str, Point] = {"a-node-group-deleting": first_group_deleting,
                            "every-node-group-deleting": every_group_deleting,
                            "cluster-deleting": cluster_deleting}


def interrupt(box: Sandbox, args: list[str], point: Point, sig: int,
              key: str | None = None) -> tuple[subprocess.CompletedProcess[str], str]:
    """Start `exaprov *args`, wait (bounded poll) until it reaches `point`, send `sig`; the
    finished process and what was held there, which the emulator must still hold."""
    proc = box.start(*args)
    deadline = time.monotonic() + BOUND
    try:
        while True:
            records = s3_records(box, key) if key else local_records(box)
            held = point(records, box)
            if held:
                break
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"exaprov {' '.join(args)} ended ({proc.returncode}) before "
                                     f"the point:\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"exaprov {' '.join(args)}: the point not reached in {BOUND} s")
            time.sleep(0.02)
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    status = eks_status(box, None if held == "cluster" else held)
    assert status in ("DELETING", "CREATING"), f"{held} was {status} when the signal landed"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), held


def expected_code(sig: int) -> int:
    return -signal.SIGKILL if sig == signal.SIGKILL else 128 + sig


def clean_up(box: Sandbox, *extra: str) -> None:
    box.run(*DESTROY, *extra, check=False)


# -- destroy interrupted while node groups and the cluster are DELETING ------------------

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("sig", sorted(SIGNALS))
def test_an_interrupted_destroy_is_finished_by_the_next_destroy(sandbox: Sandbox, sig: str,
                                                                point: str) -> None:
    box = sandbox
    try:
        box.run("up", "--yes")
        stopped, _ = interrupt(box, list(DESTROY), POINTS[point], SIGNALS[sig])
        assert stopped.returncode == expected_code(SIGNALS[sig]), stopped.stderr
        assert box.census() != box.empty  # it really was cut off before the end

        again = box.run(*DESTROY, check=False)
        assert again.returncode == 0, again.stderr
        assert box.census() == box.empty, difference(box.empty, box.census())
        assert local_records(box) == {}
    finally:
        clean_up(box)


@pytest.mark.parametrize(("sig", "point"), [("SIGINT", "cluster-deleting"),
                                            ("SIGTERM", "a-node-group-deleting"),
                                            ("SIGKILL", "every-node-group-deleting")])
def test_up_after_an_interrupted_destroy_converges(sandbox: Sandbox, sig: str, point: str) -> None:
    box = sandbox
    try:
        box.run("up", "--yes")
        stopped, _ = interrupt(box, list(DESTROY), POINTS[point], SIGNALS[sig])
        assert stopped.returncode == expected_code(SIGNALS[sig]), stopped.stderr

        up = box.run("up", "--yes", check=False)
        assert up.returncode == 0, up.stderr
        assert box.census() - box.empty == box.built, difference(box.built,
                                                                 box.census() - box.empty)
        status = json.loads(box.run("status", "--output", "json").stdout)
        assert status["in_sync"] is True, status["changes"]

        box.run(*DESTROY)
        assert box.census() == box.empty, difference(box.empty, box.census())
    finally:
        clean_up(box)


# -- SIGTERM and SIGHUP are the first Ctrl-C -------------------------------------------------

@pytest.mark.parametrize("store", ["local", "s3"])
@pytest.mark.parametrize("command", ["up", "destroy"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_like_the_first_ctrl_c(sandbox: Sandbox, sig: str, command: str,
                                                        store: str) -> None:
    box = sandbox
    signum = {"SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP}[sig]
    key = f"{sig}-{command}/example.json"
    flags = ["--state", f"s3://{BUCKET}/{key}"] if store == "s3" else []
    try:
        if command == "destroy":
            box.run("up", "--yes", *flags)
        point = cluster_creating if command == "up" else first_group_deleting
        args = list(DESTROY) if command == "destroy" else ["up", "--yes"]
        stopped, _ = interrupt(box, [*args, *flags], point, signum,
                               key=key if store == "s3" else None)
        assert stopped.returncode == 128 + signum, stopped.stderr
        assert f"Interrupted by {sig}" in stopped.stderr
        assert f"Run `exaprov {command} --sandbox` again" in stopped.stderr

        # The state is valid (whole, and it parses as exaprov's state) and no lock is left.
        if store == "s3":
            s3 = box.client("s3")
            text = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
            assert key + ".lock" not in keys
        else:
            text = (box.work / LOCAL_STATE).read_text()
            lock = box.work / LOCAL_STATE.with_name("example.json.lock")
            assert lock.read_text() == ""  # the holder's record is cleared on release
        state = State.parse(text, "state")
        assert state.resources  # stopped half-way: some of the deployment is recorded
        assert "No lock is held" in box.run("state", "unlock", "--yes", *flags).stderr

        box.run(*args, *flags)  # the run finishes what was interrupted
        box.run(*DESTROY, *flags)
        assert box.census() == box.empty, difference(box.empty, box.census())
    finally:
        clean_up(box, *flags)
        if store == "s3":
            s3 = box.client("s3")
            for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


# -- --state s3://… as a flag ------------------------------------------------------------------

def local_files(work: Path) -> dict[str, tuple[int, int]]:
    """Every file under the work folder but the emulator's own, with its mtime and size."""
    return {str(p.relative_to(work)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in work.rglob("*") if p.is_file() and p.name not in EMULATOR_FILES}


def test_the_state_flag_takes_an_s3_url(sandbox: Sandbox) -> None:
    box = sandbox
    url = f"s3://{BUCKET}/teams/ml/example.json"
    before = local_files(box.work)
    s3 = box.client("s3")
    try:
        box.run("up", "--yes", "--state", url)
        state = State.parse(s3.get_object(Bucket=BUCKET, Key="teams/ml/example.json")["Body"]
                            .read().decode(), url)
        assert state.resources["cluster.cluster"]["id"] == CLUSTER
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        assert keys == {"teams/ml/example.json", "teams/ml/example.json.backup"}
        assert local_files(box.work) == before  # nothing local: not `s3:/…`, not the default
        assert not (box.work / "s3:").exists()

        box.run(*DESTROY, "--state", url)
        assert box.census() == box.empty, difference(box.empty, box.census())
        assert local_files(box.work) == before
    finally:
        clean_up(box, "--state", url)
        for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
