"""The local state store: atomic writes, refusing bad files, lineage, write failure, the lock."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import exaprov.state
from exaprov.errors import ExaprovError, LockedError, StateError
from exaprov.state import FORMAT_VERSION, LocalStateStore, State, StateWriter

REPO = Path(__file__).resolve().parents[1]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def new_state() -> State:
    return State.new("t", "us-west-1")


# -- write ---------------------------------------------------------------------------


def test_write_is_atomic_counts_serials_and_keeps_a_backup(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "s.json")
    state = new_state()
    texts = []
    for n in range(1, 4):
        state.resources[f"s.r{n}"] = {"id": f"r-{n}"}
        store.write(state)
        assert state.serial == n
        assert json.loads(store.path.read_text())["serial"] == n
        texts.append(store.path.read_text())
        if n > 1:  # the previous version is the backup
            assert store.backup_path.read_text() == texts[-2]
        # no temp file is ever left behind
        expected = ["s.json", "s.json.backup"] if n > 1 else ["s.json"]
        assert listing(tmp_path) == expected

    reread = LocalStateStore(tmp_path / "s.json").read()
    assert reread is not None
    assert reread.data == state.data


def test_files_are_private_even_under_umask_zero(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "state"
    store = LocalStateStore(folder / "s.json")
    old = os.umask(0)
    try:
        state = new_state()
        store.write(state)
        store.write(state)
        with store.lock("exaprov up"):
            pass
    finally:
        os.umask(old)

    assert mode_of(folder) == 0o700
    assert mode_of(store.path) == 0o600
    assert mode_of(store.backup_path) == 0o600
    assert mode_of(store.lock_path) == 0o600


# -- read ----------------------------------------------------------------------------


def test_a_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert LocalStateStore(tmp_path / "absent.json").read() is None


def _valid_text() -> str:
    return new_state().dumps()


def _without_lineage() -> str:
    data = json.loads(_valid_text())
    del data["lineage"]
    return json.dumps(data)


BAD_FILES = {
    "empty": "",
    "blank": "\n  \n",
    "truncated": _valid_text()[:40],
    "list": "[1, 2, 3]",
    "no-lineage": _without_lineage(),
    "wrong-type": _valid_text().replace('"resources": {}', '"resources": []'),
}


@pytest.mark.parametrize("with_backup", [True, False], ids=["backup", "no-backup"])
@pytest.mark.parametrize("text", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_bad_file_is_refused_and_left_untouched(tmp_path: Path, text: str,
                                                  with_backup: bool) -> None:
    store = LocalStateStore(tmp_path / "s.json")
    store.path.write_text(text)
    if with_backup:
        store.backup_path.write_text(_valid_text())
    before = store.path.read_bytes()
    files = listing(tmp_path)

    with pytest.raises(StateError) as caught:
        store.read()

    err = caught.value
    assert err.exit_code == 2
    assert str(store.path) in err.message
    if with_backup:
        assert str(store.backup_path) in err.message
    else:
        assert "no backup" in err.message
    assert store.path.read_bytes() == before
    assert listing(tmp_path) == files
    # and the store will not then overwrite it as if it were empty
    assert store._last_text is None


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "s.json")
    data = json.loads(_valid_text())
    data["format_version"] = FORMAT_VERSION + 1
    store.path.write_text(json.dumps(data))

    with pytest.raises(StateError) as caught:
        store.read()
    assert "newer exaprov" in caught.value.message
    assert caught.value.exit_code == 2


# -- lineage ---------------------------------------------------------------------------


def test_a_store_refuses_to_write_another_lineage(tmp_path: Path) -> None:
    first = new_state()
    LocalStateStore(tmp_path / "s.json").write(first)
    before = (tmp_path / "s.json").read_bytes()

    store = LocalStateStore(tmp_path / "s.json")
    assert store.read() is not None
    other = new_state()
    with pytest.raises(StateError) as caught:
        store.write(other)

    assert caught.value.exit_code == 2
    assert first.lineage in caught.value.message and other.lineage in caught.value.message
    assert (tmp_path / "s.json").read_bytes() == before
    assert other.serial == 0


# -- write failure --------------------------------------------------------------------


def test_a_failed_write_saves_the_errored_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStateStore(tmp_path / "s.json")
    state = new_state()
    store.write(state)
    before = store.path.read_text()

    real_write = exaprov.state._atomic_write

    def disk_full(path: Path, text: str) -> None:
        if path == store.path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, text)

    monkeypatch.setattr(exaprov.state, "_atomic_write", disk_full)
    state.resources["s.vpc"] = {"id": "vpc-1", "status": "created"}

    with pytest.raises(ExaprovError) as caught:
        store.write(state)

    assert str(store.errored_path) in caught.value.message
    assert os.strerror(errno.ENOSPC) in caught.value.message
    assert caught.value.hint and str(store.errored_path) in caught.value.hint
    assert state.serial == 1  # unchanged in memory
    assert store.path.read_text() == before  # the good file is still the previous one
    assert mode_of(store.errored_path) == 0o600
    errored = json.loads(store.errored_path.read_text())
    assert errored["resources"] == {"s.vpc": {"id": "vpc-1", "status": "created"}}
    assert errored["lineage"] == state.lineage
    assert errored["serial"] == 2


# -- the lock --------------------------------------------------------------------------


def test_a_held_lock_refuses_a_second_holder_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with LocalStateStore(path).lock("exaprov up --yes") as stale:
        assert stale is None
        with pytest.raises(LockedError) as caught:
            with LocalStateStore(path).lock("exaprov destroy"):
                pytest.fail("a second holder got the lock")
        err = caught.value
        assert err.exit_code == 2
        assert f"pid {os.getpid()}" in err.message
        assert socket.gethostname() in err.message
        assert "exaprov up --yes" in err.message
        # The refused attempt closed its own descriptor without releasing ours.
        with pytest.raises(LockedError):
            with LocalStateStore(path).lock("exaprov destroy"):
                pass

    # Released: the next holder gets it, and sees no stale info.
    with LocalStateStore(path).lock("exaprov destroy") as stale:
        assert stale is None


STALE_HOLDER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from exaprov.state import LocalStateStore

    with LocalStateStore(Path(sys.argv[1])).lock("exaprov up"):
        print(os.getpid(), flush=True)
        os._exit(9)  # dies holding the lock, as a SIGKILL would leave it
""")


def test_a_dead_holders_lock_is_free_and_reported_stale(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.run([sys.executable, "-c", STALE_HOLDER, str(path)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert holder.returncode == 9, holder.stderr
    pid = int(holder.stdout.strip())

    with LocalStateStore(path).lock("exaprov up") as stale:
        assert stale is not None
        assert stale["pid"] == pid
        assert stale["command"] == "exaprov up"
        assert stale["host"] == socket.gethostname()

    with LocalStateStore(path).lock("exaprov up") as stale:
        assert stale is None


# -- StateWriter -----------------------------------------------------------------------


class CountingStore(LocalStateStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes = 0

    def write(self, state: State) -> None:
        self.writes += 1
        super().write(state)


def test_the_writer_saves_only_changes(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s.json")
    writer = StateWriter(store, new_state())

    writer.record("s.vpc", kind="vpc", id="vpc-1", status="created")
    assert (store.writes, writer.state.serial) == (1, 1)
    writer.record("s.vpc", kind="vpc", id="vpc-1")  # same fields
    writer.record("s.vpc", name=None)  # None never overwrites
    writer.remove("s.absent")
    writer.set_outputs("s", {})
    assert (store.writes, writer.state.serial) == (2, 2)  # only set_outputs was new
    writer.set_outputs("s", {})
    writer.drop_outputs("absent")
    writer.set_field("account_id", None)
    assert (store.writes, writer.state.serial) == (2, 2)

    writer.record("s.vpc", status="deleting")
    writer.remove("s.vpc")
    assert (store.writes, writer.state.serial) == (4, 4)
    saved = store.read()
    assert saved is not None and saved.resources == {} and saved.serial == 4


def test_a_dry_run_writer_never_writes(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s.json")
    writer = StateWriter(store, new_state(), dry_run=True)
    writer.record("s.vpc", kind="vpc", id="vpc-1")
    writer.set_outputs("s", {"vpc_id": "vpc-1"})
    writer.remove("s.vpc")
    writer.drop_outputs("s")
    writer.set_field("account_id", "123456789012")
    assert store.writes == 0
    assert listing(tmp_path) == []


def test_the_writer_is_thread_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fsync makes 400 writes slow and proves nothing about the mutex.
    monkeypatch.setattr(exaprov.state.os, "fsync", lambda fd: None)
    store = CountingStore(tmp_path / "s.json")
    writer = StateWriter(store, new_state())
    threads_n, per_thread = 8, 50
    start = threading.Barrier(threads_n, timeout=5)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                writer.record(f"s.r{t}-{i}", kind="thing", id=f"id-{t}-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    total = threads_n * per_thread
    assert store.writes == total
    assert writer.state.serial == total
    saved: Any = LocalStateStore(tmp_path / "s.json").read()
    assert saved.serial == total
    assert len(saved.resources) == total
    assert saved.resources["s.r7-49"] == {"kind": "thing", "id": "id-7-49"}
    assert listing(tmp_path) == ["s.json", "s.json.backup"]


def test_missing_parent_folders_are_created_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = LocalStateStore(tmp_path / "a" / "b" / "s.json")
        store.write(State.new("t", "us-west-1"))
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# -- a dead holder, reported  -------------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has just ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_the_next_command_names_a_dead_holder_and_goes_on(workdir: Path, aws: None) -> None:
    from tests.conftest import cli

    state = workdir / "state" / "example.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.run([sys.executable, "-c", STALE_HOLDER, str(state)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert holder.returncode == 9, holder.stderr
    pid = int(holder.stdout.strip())

    result = cli("destroy", "--yes")  # with nothing deployed: a quick walk of every step
    assert result.exit_code == 0, result.output
    assert f"pid {pid} on {socket.gethostname()}" in result.output
    assert "(running: exaprov up)" in result.output
    assert "that process no longer exists" in result.output
    assert "exaprov state unlock" in result.output
    assert (state.parent / "example.json.lock").read_text() == ""  # released cleanly this time


def test_the_holder_liveness_is_only_judged_on_this_host() -> None:
    from exaprov.state import process_gone

    here = socket.gethostname()
    assert process_gone({"pid": _dead_pid(), "host": here}) is True
    assert process_gone({"pid": os.getpid(), "host": here}) is False
    assert process_gone({"pid": _dead_pid(), "host": here + "-elsewhere"}) is False  # cannot tell
    assert process_gone({"pid": "x", "host": here}) is False
    assert process_gone({}) is False


def test_an_s3_lock_of_a_dead_process_on_this_host_is_called_stale(aws: None) -> None:
    import boto3

    from exaprov.state_s3 import S3StateStore

    s3 = boto3.client("s3", region_name="us-west-1")
    s3.create_bucket(Bucket="team-state", CreateBucketConfiguration={"LocationConstraint": "us-west-1"})
    store = S3StateStore("s3://team-state/example.json", s3)
    for pid, stale in ((_dead_pid(), True), (os.getpid(), False)):
        s3.put_object(Bucket="team-state", Key="example.json.lock", Body=json.dumps(
            {"host": socket.gethostname(), "pid": pid, "command": "exaprov up",
             "since": "2026-11-25T10:00:00+00:00"}).encode())
        with pytest.raises(LockedError) as caught, store.lock("exaprov destroy"):
            pytest.fail("a held lock was taken")
        assert f"pid {pid}" in caught.value.message
        assert ("no longer exists on this host" in caught.value.message) is stale
        assert "exaprov state unlock" in (caught.value.hint or "")
