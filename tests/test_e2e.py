"""End to end: the installed `exaprov` command as a subprocess, against emulators over HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from exaprov import sandbox
from tests.conftest import REGION, tagged
from tests.neighbour import NEIGHBOUR_CONFIG, Clients, clients, foreign_census, plant
from tests.neighbour import difference as changed

pytestmark = pytest.mark.e2e


def exaprov_command() -> list[str]:
    """The installed console script (CI installs the package); `python -m` in a bare checkout."""
    script = shutil.which("exaprov")
    return [script] if script else [sys.executable, "-m", "exaprov"]


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*exaprov_command(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"exaprov {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def running(pid: int) -> bool:
    """Alive and not a zombie (a reparented child may wait a moment for its reaper)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


@pytest.fixture
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def build_neighbour(cwd: Path, ours: dict[str, Any], *flags: str, **client_args: str) -> Clients:
    """tests/neighbour.py over HTTP: the second deployment by the installed command (its own
    config and state), then the untagged resources named like ours."""
    (cwd / "neighbour.yaml").write_text(yaml.safe_dump(NEIGHBOUR_CONFIG))
    run("up", "--yes", "--config", "neighbour.yaml", *flags, cwd=cwd)
    client = clients(**client_args)
    plant(ours, client)
    return client


def test_init_up_status_destroy_against_a_moto_server(tmp_path: Path, moto_server: str) -> None:
    endpoint = ["--endpoint-url", moto_server]
    run("init", cwd=tmp_path)
    assert "name: example" in (tmp_path / "exaprov.yaml").read_text()
    ours = {"name": "example"}
    client = build_neighbour(tmp_path, ours, "--state", "neighbour.json", *endpoint,
                             endpoint_url=moto_server)
    neighbour = foreign_census(ours, client)

    run("up", "--yes", *endpoint, cwd=tmp_path)
    assert foreign_census(ours, client) == neighbour, changed(neighbour, foreign_census(ours, client))
    status = json.loads(run("status", "--output", "json", *endpoint, cwd=tmp_path).stdout)
    assert status["in_sync"] is True
    assert len([r for r in status["resources"] if r["address"].startswith("network.")]) == 14
    assert all(r["live_id"] for r in status["resources"])

    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_server)
    assert len(tagged(ec2, "describe_subnets", "Subnets")) == 9

    run("destroy", "--yes", "--disable-deletion-protection", *endpoint, cwd=tmp_path)
    assert foreign_census(ours, client) == neighbour, changed(neighbour, foreign_census(ours, client))
    assert tagged(ec2, "describe_vpcs", "Vpcs") == []
    assert tagged(ec2, "describe_subnets", "Subnets") == []
    assert tagged(ec2, "describe_nat_gateways", "NatGateways", filter_param="Filter") == []


def test_the_sandbox_end_to_end_leaves_no_process(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator keeps the cluster and node groups CREATING for a while, as EKS does (for
    # minutes), so the installed command really polls and reports its waits. Long enough that
    # the first describe after the create still sees CREATING on a loaded CI machine (at 0.5 s
    # a node group was once ACTIVE by then, and rightly nothing waited for it).
    monkeypatch.setenv("EXAPROV_EMULATOR_CLUSTER_CREATE_SECONDS", "2")
    monkeypatch.setenv("EXAPROV_EMULATOR_NODEGROUP_CREATE_SECONDS", "2")
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "0.01")
    run("init", cwd=tmp_path)
    ours = {"name": "example"}
    try:
        (tmp_path / "neighbour.yaml").write_text(yaml.safe_dump(NEIGHBOUR_CONFIG))
        run("up", "--sandbox", "--yes", "--config", "neighbour.yaml", cwd=tmp_path)
        endpoint = json.loads((sandbox.sandbox_dir() / "server.json").read_text())["endpoint"]
        client = clients(endpoint_url=endpoint, **sandbox.SANDBOX_CREDENTIALS)
        plant(ours, client)
        neighbour = foreign_census(ours, client)
        up = run("up", "--sandbox", "--yes", cwd=tmp_path)
        assert "EKS cluster exafunction-cluster-example: creating, " in up.stderr
        assert "node group runner-cpu: creating, " in up.stderr
        assert "node group runner-cpu: ACTIVE after " in up.stderr
        status = json.loads(run("status", "--sandbox", "--output", "json", cwd=tmp_path).stdout)
        assert status["in_sync"] is True
        assert {r["address"] for r in status["resources"]} >= {"cluster.cluster", "nat.nat"}
        record: dict[str, Any] = json.loads((sandbox.sandbox_dir() / "server.json").read_text())
        assert (tmp_path / "state" / "sandbox" / "deployments" / "example.json").exists()
        assert not (tmp_path / "state" / "example.json").exists()  # apart from real deployments

        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=record["endpoint"])
        assert len(tagged(ec2, "describe_vpcs", "Vpcs")) == 1  # the emulator outlived `up`
        assert foreign_census(ours, client) == neighbour, \
            changed(neighbour, foreign_census(ours, client))

        run("destroy", "--sandbox", "--yes", "--disable-deletion-protection", cwd=tmp_path)
        assert tagged(ec2, "describe_vpcs", "Vpcs") == []
        assert foreign_census(ours, client) == neighbour, \
            changed(neighbour, foreign_census(ours, client))
    finally:
        stopped = run("sandbox", "stop", "--yes", cwd=tmp_path)
    assert "stopped" in stopped.stdout
    assert not running(record["pid"])
    sandbox_status = json.loads(run("sandbox", "status", "--output", "json", cwd=tmp_path).stdout)
    assert sandbox_status == {"running": False}
