"""The sandbox's background emulator: started once, shared, found again, stopped cleanly."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov import emulator, sandbox
from exaprov.errors import ExaprovError

REGION = "us-west-1"


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        **sandbox.SANDBOX_CREDENTIALS)


def _gone_within(pid: int, bound: float = 10.0) -> bool:
    """Poll, with a bound, until the pid is gone (reaping it if it is our child)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if not sandbox._pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state_root(tmp_path: Path) -> Iterator[Path]:
    """A state folder whose emulator, if any, is always stopped afterwards."""
    yield tmp_path
    sandbox.stop(tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One emulator for the read-only tests, started under umask 0 to prove the modes."""
    root = tmp_path_factory.mktemp("shared-state")
    old = os.umask(0)
    try:
        endpoint = sandbox.ensure_running(root)
    finally:
        os.umask(old)
    yield root, endpoint
    sandbox.stop(root)


def test_one_world_for_every_client(shared: tuple[Path, str]) -> None:
    _, endpoint = shared
    vpc_id = _client("ec2", endpoint).create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    seen = _client("ec2", endpoint).describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    assert [v["CidrBlock"] for v in seen] == ["10.0.0.0/16"]


def test_aws_managed_policies_exist(shared: tuple[Path, str]) -> None:
    _, endpoint = shared
    arn = "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"
    assert _client("iam", endpoint).get_policy(PolicyArn=arn)["Policy"]["Arn"] == arn


def test_second_call_reuses_the_server(shared: tuple[Path, str]) -> None:
    root, endpoint = shared
    pid = sandbox.status(root)["pid"]
    assert sandbox.ensure_running(root) == endpoint
    assert sandbox.status(root)["pid"] == pid


def test_status_reports_the_record(shared: tuple[Path, str]) -> None:
    root, endpoint = shared
    info = sandbox.status(root)
    assert info is not None and info["running"] is True
    assert info["endpoint"] == endpoint == f"http://127.0.0.1:{info['port']}"
    assert info["version"] and info["started_at"].endswith("+00:00")
    on_disk = json.loads((root / "sandbox" / "server.json").read_text())
    assert on_disk == {k: v for k, v in info.items() if k != "running"}


def test_files_are_private_even_under_umask_zero(shared: tuple[Path, str]) -> None:
    root, _ = shared
    directory = root / "sandbox"
    assert _mode(directory) == 0o700
    for name in ("server.json", "server.log", "server.lock"):
        assert _mode(directory / name) == 0o600, name


def test_stop_ends_the_server_and_forgets_it(state_root: Path) -> None:
    sandbox.ensure_running(state_root)
    pid = sandbox.status(state_root)["pid"]
    assert sandbox.stop(state_root) is True
    assert _gone_within(pid)
    assert not (state_root / "sandbox" / "server.json").exists()
    assert sandbox.status(state_root) is None
    assert sandbox.stop(state_root) is False
    # SIGTERM led to a clean shutdown, not the SIGKILL of last resort.
    assert "exaprov emulator: stopped" in (state_root / "sandbox" / "server.log").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_stale_record(state_root: Path, pid: int) -> None:
    port = _free_port()
    record = {"pid": pid, "port": port, "endpoint": f"http://127.0.0.1:{port}",
              "started_at": "2020-01-01T00:00:00+00:00", "version": "0"}
    (sandbox.sandbox_dir(state_root) / "server.json").write_text(json.dumps(record))


def test_stale_record_of_an_exited_process_is_replaced(state_root: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_stale_record(state_root, dead.pid)
    assert sandbox.status(state_root)["running"] is False
    endpoint = sandbox.ensure_running(state_root)
    info = sandbox.status(state_root)
    assert info["running"] and info["pid"] != dead.pid and info["endpoint"] == endpoint


def test_a_recycled_pid_is_never_signalled(state_root: Path) -> None:
    # The record names a live process that is not an emulator: this very test run.
    _write_stale_record(state_root, os.getpid())
    assert sandbox.status(state_root)["running"] is False
    assert sandbox.stop(state_root) is False  # we are still here to assert it
    assert sandbox.status(state_root) is None


def test_concurrent_callers_share_one_server(state_root: Path) -> None:
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(sandbox.ensure_running(state_root)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3 and len(set(results)) == 1


def test_an_emulator_that_dies_early_is_reported_with_its_log(
        state_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crash = [sys.executable, "-c", "import sys; print('boom: no moto here'); sys.exit(3)"]
    monkeypatch.setattr(sandbox, "_emulator_command", lambda ready: crash)
    with pytest.raises(ExaprovError) as caught:
        sandbox.ensure_running(state_root, timeout=10)
    assert "exited early (code 3)" in caught.value.message
    assert "boom: no moto here" in caught.value.message
    assert "server.log" in caught.value.message
    assert sandbox.status(state_root) is None


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "example.com", "::"])
def test_emulator_refuses_non_loopback_hosts(
        host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def must_not_bind(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve() reached with a non-loopback host")

    monkeypatch.setattr(emulator, "serve", must_not_bind)
    with pytest.raises(SystemExit) as exited:
        emulator.main(["--host", host, "--port", "0"])
    assert exited.value.code == 2
    assert "loopback" in capsys.readouterr().err


def test_loopback_hosts_are_accepted() -> None:
    assert all(emulator.is_loopback(h) for h in ("127.0.0.1", "127.5.6.7", "::1", "localhost"))


def test_install_extensions_is_idempotent() -> None:
    emulator.install_extensions()
    emulator.install_extensions()


def test_relative_state_root_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI passes Path("state"), relative to wherever the user runs exaprov.
    monkeypatch.chdir(tmp_path)
    try:
        endpoint = sandbox.ensure_running(Path("state"))
        assert sandbox.status(Path("state"))["running"] is True
        assert endpoint.startswith("http://127.0.0.1:")
    finally:
        assert sandbox.stop(Path("state")) is True
