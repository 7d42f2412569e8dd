"""SIGKILL of the installed `exaprov up` in mid-run.

Not a simulation: the installed command runs as a subprocess against the sandbox (exaprov's
emulator in its own process, keeping the cluster CREATING for a while as EKS does for
minutes), and receives a real SIGKILL from outside while it waits for the cluster, once its
state file records the cluster's create. The re-run must finish the deployment with exactly
what an uninterrupted `up` builds (a census of every resource in the emulator), and
`destroy` must leave the emulator as it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exaprov.sandbox import SANDBOX_CREDENTIALS, sandbox_dir
from tests.census import Census, census, difference
from tests.conftest import REGION
from tests.test_e2e import exaprov_command, run

pytestmark = pytest.mark.e2e

STATE = Path("state") / "sandbox" / "deployments" / "example.json"
BOUND = 120.0  # seconds: far above what the run takes; only a hang reaches it


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A work folder whose `--sandbox` emulator keeps a new cluster CREATING for 3 s (and
    node groups 0.5 s) and whose exaprov polls 100x faster than against AWS; the emulator
    is stopped afterwards."""
    monkeypatch.setenv("EXAPROV_EMULATOR_CLUSTER_CREATE_SECONDS", "3")
    monkeypatch.setenv("EXAPROV_EMULATOR_NODEGROUP_CREATE_SECONDS", "0.5")
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "0.01")
    run("init", cwd=tmp_path)
    try:
        yield tmp_path
    finally:
        run("sandbox", "stop", "--yes", cwd=tmp_path, check=False)


def emulator_census(work: Path) -> Census:
    endpoint = json.loads((sandbox_dir() / "server.json").read_text())["endpoint"]
    return census(REGION, endpoint_url=endpoint, **SANDBOX_CREDENTIALS)


def recorded(work: Path, address: str) -> dict[str, Any]:
    try:
        return dict(json.loads((work / STATE).read_text())["resources"].get(address) or {})
    except (FileNotFoundError, ValueError):  # not written yet
        return {}


def wait_for(condition: Any, what: str, proc: subprocess.Popen[str]) -> None:
    """Poll a condition (no sleeping on a guess): bounded, and failing fast if `up` ended."""
    deadline = time.monotonic() + BOUND
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"exaprov up ended ({proc.returncode}) before {what}:\n"
                                 f"{proc.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {BOUND} s")
        time.sleep(0.02)


def test_sigkill_while_up_waits_for_the_cluster_then_up_again_builds_it_once(sandbox: Path) -> None:
    run("plan", "--sandbox", cwd=sandbox)  # starts the emulator; read-only
    empty = emulator_census(sandbox)
    # The reference: an uninterrupted `up` on the same emulator.
    run("up", "--sandbox", "--yes", cwd=sandbox)
    built = emulator_census(sandbox) - empty
    assert built["eks:cluster", "exafunction-cluster-example"] == 1
    run("destroy", "--sandbox", "--yes", "--disable-deletion-protection", "--skip-final-snapshot",
        cwd=sandbox)
    assert emulator_census(sandbox) == empty

    proc = subprocess.Popen([*exaprov_command(), "up", "--sandbox", "--yes"], cwd=sandbox,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: recorded(sandbox, "cluster.cluster").get("status") == "created",
                 "the cluster's create recorded in the state file", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = emulator_census(sandbox)
    assert killed["eks:cluster", "exafunction-cluster-example"] == 1
    assert killed - empty != built  # it really was cut off before the end

    again = run("up", "--sandbox", "--yes", cwd=sandbox)
    assert "ended without releasing it" in again.stderr  # the lock the killed run held
    after = emulator_census(sandbox)
    assert after - empty == built, difference(built, after - empty)

    run("destroy", "--sandbox", "--yes", "--disable-deletion-protection", "--skip-final-snapshot",
        cwd=sandbox)
    assert emulator_census(sandbox) == empty, difference(empty, emulator_census(sandbox))
