"""A state that cannot be saved stops everything.

The state file's folder fills up (ENOSPC) part-way through `up`. From that write on, no
call that changes anything reaches AWS (a call is sent when it is signed; calls in flight
in other threads were signed before). The message names a file that really holds the
state (next to the state file, else in the temp folder), with what was done, or says that
none could be written, prints the state as JSON and names `exaprov state recover`.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

import exaprov.state
from exaprov.state import State
from tests.census import census
from tests.conftest import READ_PREFIXES, cli
from tests.crashing import CONFIG

STATE = Path("state") / "example.json"
FAIL_AT_WRITE = 30  # of the ~100 a whole `up` makes: AWS is half-built by then


class FullDisk:
    """`_atomic_write` that fails (ENOSPC) for the state file from its Nth write on, and
    for every path in `also` once that happened; every call signed, in order, alongside."""

    def __init__(self, also: list[Path]) -> None:
        self.real = exaprov.state._atomic_write
        self.also = [p.resolve() for p in also]
        self.writes = 0
        self.events: list[tuple[Any, ...]] = []  # started / sent (when it started) / failed
        self.lock = threading.Lock()
        self.failed_text: str | None = None

    def write(self, path: Path, text: str | bytes) -> None:
        resolved = Path(path).resolve()
        with self.lock:
            if resolved == STATE.resolve():
                self.writes += 1
                if self.writes >= FAIL_AT_WRITE:
                    if self.failed_text is None:
                        self.failed_text = text if isinstance(text, str) else text.decode()
                        self.events.append(("failed", ""))
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            elif self.failed_text is not None and any(resolved.is_relative_to(p) or resolved == p
                                                      for p in self.also):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real(path, text)

    def started(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        with self.lock:
            context["started_at"] = len(self.events)
            self.events.append(("started", model.name))

    def signed(self, operation_name: str, request: Any, **_: Any) -> None:
        with self.lock:
            self.events.append(("sent", operation_name, request.context.get("started_at", -1)))

    def changes_after_the_failure(self) -> list[str]:
        """Changes sent that were started after the failed write (one already on its way in
        another thread when the write failed may go out: it was sent before, as it were)."""
        index = self.events.index(("failed", ""))
        return [e[1] for e in self.events if e[0] == "sent" and e[2] > index
                and not e[1].startswith(READ_PREFIXES)]


@pytest.fixture
def temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _setup(monkeypatch: pytest.MonkeyPatch, hooks: Any, also: list[Path]) -> FullDisk:
    Path("exaprov.yaml").write_text(json.dumps(CONFIG))
    disk = FullDisk(also)
    monkeypatch.setattr(exaprov.state, "_atomic_write", disk.write)
    hooks(disk.started, "before-call")
    hooks(disk.signed, "before-sign")
    return disk


def _holds_the_state(text: str, disk: FullDisk) -> State:
    """The copy is a valid state, of this deployment, with at least what the failed write had."""
    kept = State.parse(text, "copy")
    assert disk.failed_text is not None
    failed = json.loads(disk.failed_text)
    assert kept.lineage == failed["lineage"] and kept.serial >= failed["serial"]
    for address, record in failed["resources"].items():
        if record.get("status") == "created":
            assert kept.resources[address]["id"] == record["id"]
    return kept


def _kept_path(output: str) -> Path:
    marker = "The state, with everything done so far, is in "
    assert marker in output, output
    return Path(output.split(marker, 1)[1].split(".json", 1)[0] + ".json")


def test_the_copy_next_to_the_state_holds_it_and_nothing_changes_after(
        workdir: Path, aws: None, hooks: Any, monkeypatch: pytest.MonkeyPatch,
        temp_folder: Path) -> None:
    disk = _setup(monkeypatch, hooks, also=[])
    result = cli("up", "--yes")

    assert result.exit_code == 1, result.output
    assert os.strerror(errno.ENOSPC) in result.output
    assert "Everything done so far is recorded" not in result.output
    kept = _kept_path(result.output)
    assert kept == (workdir / "state" / "example.errored.json").resolve()
    assert oct(kept.stat().st_mode & 0o777) == oct(0o600)
    state = _holds_the_state(kept.read_text(), disk)
    assert state.resources  # half-built
    assert disk.changes_after_the_failure() == []
    assert f"cp {kept} state/example.json" in result.output
    assert list(temp_folder.iterdir()) == []


def test_when_the_state_folder_is_full_the_copy_goes_to_the_temp_folder(
        workdir: Path, aws: None, hooks: Any, monkeypatch: pytest.MonkeyPatch,
        temp_folder: Path) -> None:
    disk = _setup(monkeypatch, hooks, also=[workdir / "state"])
    result = cli("up", "--yes")

    assert result.exit_code == 1, result.output
    kept = _kept_path(result.output)
    assert kept.parent == temp_folder.resolve()
    assert not (workdir / "state" / "example.errored.json").exists()
    _holds_the_state(kept.read_text(), disk)
    assert oct(kept.stat().st_mode & 0o777) == oct(0o600)
    assert disk.changes_after_the_failure() == []


def test_when_no_file_can_be_written_the_state_is_printed_and_recover_named(
        workdir: Path, aws: None, hooks: Any, monkeypatch: pytest.MonkeyPatch,
        temp_folder: Path) -> None:
    disk = _setup(monkeypatch, hooks, also=[workdir / "state", temp_folder])
    result = cli("up", "--yes")

    assert result.exit_code == 1, result.output
    assert "No copy could be written either" in result.output
    assert "exaprov state recover" in result.output
    assert "is in " not in result.output
    printed, _ = json.JSONDecoder().raw_decode(result.output[result.output.index("\n{") + 1:])
    _holds_the_state(json.dumps(printed), disk)
    assert list(temp_folder.iterdir()) == []
    assert disk.changes_after_the_failure() == []
    assert census()  # moto still answers: the run stopped, AWS did not fail
