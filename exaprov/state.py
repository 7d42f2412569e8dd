"""The state record: what exaprov created, by logical address, and how it is stored.

State is a cache and a trail, not the truth: every run re-checks recorded IDs
live and falls back to a lookup by tag. It is written after every resource is
created or deleted (and an *intent* before each create), so a process that dies
mid-call leaves a trail rather than an orphan.

`StateStore` is the interface; `LocalStateStore` keeps a JSON file with an atomic
replace, a backup of the previous version, mode 0600 and a kernel lock on a
separate file (renaming the state swaps its inode, so the lock cannot live on it).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from exaprov import __version__, addresses
from exaprov.errors import ExaprovError, LockedError, StateError

FORMAT_VERSION = 1

# Resource record statuses.
INTENT = "intent"      # about to be created: kind, name and token are known, the ID not yet
CREATED = "created"    # exists (or existed when last seen) with this ID
DELETING = "deleting"  # a delete was issued
FAILED = "failed"      # AWS reported the resource failed; the next `up` replaces it


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class DamagedStateError(StateError):
    """The state is there but unusable (empty, not JSON, not an exaprov state):
    `exaprov state recover` may set it aside and rebuild it."""


class StateSaveError(ExaprovError):
    """The state could not be saved where it lives. The run stops making changes; the state
    as it is in memory was kept in `saved_to` (a file that really holds it), or, if no file
    could be written, is printed with the error (`state_json`)."""

    def __init__(self, location: str, reason: str, saved_to: Path | None, text: str,
                 restore: str, tried: list[Path]) -> None:
        self.location, self.reason, self.restore, self.tried = location, reason, restore, tried
        self.saved_to: Path | None = None
        self.state_json: str | None = None
        super().__init__("")
        self.kept(saved_to, text)

    def kept(self, saved_to: Path | None, text: str) -> None:
        """Where the latest state now is (a later record of the same run moved it on)."""
        self.saved_to = saved_to
        self.state_json = None if saved_to else text
        head = (f"{self.location}: could not save the state ({self.reason}); exaprov stopped "
                "and makes no further change in AWS.")
        if saved_to is not None:
            self.message = f"{head} The state, with everything done so far, is in {saved_to}."
            self.hint = (f"fix the cause, then {self.restore.format(saved_to)} and run the command "
                         "again")
        else:
            tried = ", ".join(str(p) for p in self.tried) or "no other place"
            self.message = (f"{head} No copy could be written either (tried {tried}): the state is "
                            "printed below as JSON.")
            self.hint = (f"save the JSON below as {self.location} once it can be written, or "
                         "rebuild the state from the tags in AWS with `exaprov state recover --yes`")
        self.args = (self.message,)


class StateConflictError(StateSaveError, StateError):
    """Another writer changed the state object since this run read it."""

    exit_code = 2  # bad input if nothing changed yet; the CLI says 1 once AWS was changed


def failing(store: Any) -> None:
    """A store's write just failed: tell its writer at once (it halts every further change),
    before the store keeps the state elsewhere."""
    hook = getattr(store, "on_failure", None)
    if hook is not None:
        hook()


def keep_copy(text: str, candidates: list[Path]) -> Path | None:
    """Write `text` (0600) to the first candidate that can be written; None if none could."""
    for path in candidates:
        try:
            write_private(path, text)
        except OSError:
            continue
        return path.resolve()
    return None


def temp_copy_path(stem: str) -> Path:
    """A private file name in the temp folder for a state that could not be saved."""
    return Path(tempfile.gettempdir()) / f"exaprov-{stem}-{stamp()}-{os.getpid()}.json"


class NewerStateError(StateError):
    """The state was written by a newer exaprov: nothing here may read it, or replace it."""


def stamp() -> str:
    """A timestamp for file names: `20261125T101500Z`."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class State:
    """One deployment's state document."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def new(cls, deployment: str, region: str) -> State:
        return cls({
            "format_version": FORMAT_VERSION,
            "lineage": str(uuid.uuid4()),
            "serial": 0,
            "exaprov_version": __version__,
            "deployment": deployment,
            "region": region,
            "account_id": None,
            "resources": {},
            "outputs": {},
        })

    @classmethod
    def parse(cls, text: str, where: str) -> State:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DamagedStateError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DamagedStateError(f"{where}: not an exaprov state (top level is not an object)")
        version = data.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise NewerStateError(
                f"{where}: written by a newer exaprov (state format {version}, this exaprov "
                f"reads up to {FORMAT_VERSION} — exaprov {__version__})",
                hint="upgrade exaprov rather than let an older one guess")
        required = {"format_version": int, "lineage": str, "serial": int, "deployment": str,
                    "region": str, "resources": dict, "outputs": dict}
        for key, typ in required.items():
            if not isinstance(data.get(key), typ):
                raise DamagedStateError(f"{where}: not an exaprov state ({key!r} missing or not "
                                 f"a {typ.__name__})")
        from exaprov.state_schema import problems

        bad = problems(data)
        if bad:
            shown = bad[:10] + ([f"... and {len(bad) - 10} more"] if len(bad) > 10 else [])
            raise DamagedStateError(f"{where}: {len(bad)} invalid value(s) in the state\n"
                                    + "\n".join(f"  {line}" for line in shown))
        addresses.migrate(data)  # records of user-named things, renamed to their own namespace
        return cls(data)

    def dumps(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True) + "\n"

    def copy(self) -> State:
        return State(copy.deepcopy(self.data))

    @property
    def lineage(self) -> str:
        return self.data["lineage"]

    @property
    def serial(self) -> int:
        return self.data["serial"]

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.data["resources"]

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self.data["outputs"]

    def step_resources(self, step: str) -> dict[str, dict[str, Any]]:
        """This step's records, keyed by logical name (the address minus `step.`)."""
        prefix = step + "."
        # list() copies atomically: other steps' threads may be recording meanwhile.
        return {k[len(prefix):]: v for k, v in list(self.resources.items())
                if k.startswith(prefix)}


class StateStore(Protocol):
    """Where a deployment's state lives. A later backend (S3) keeps the same guarantees."""

    location: str

    def read(self) -> State | None: ...

    def write(self, state: State) -> None: ...

    def lock(self, command: str) -> contextlib.AbstractContextManager[dict[str, Any] | None]: ...

    def lock_holder(self) -> dict[str, Any] | None: ...

    def force_unlock(self) -> dict[str, Any] | None: ...


class LocalStateStore:
    """A JSON file on local disk: atomic replace, backup, 0600, kernel lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.errored_path = self.path.with_name(self.path.stem + ".errored.json")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._last_text: str | None = None
        self._lineage: str | None = None

    def read(self) -> State | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read ({exc.strerror})") from None
        backup = (f"; the previous version is in {self.backup_path}"
                  if self.backup_path.exists() else "; there is no backup")
        if not text.strip():
            raise DamagedStateError(f"{self.path}: the state file is empty (truncated?){backup}",
                             hint="restore the backup, or run `exaprov state recover` "
                                  "to rebuild it from tags")
        try:
            state = State.parse(text, str(self.path))
        except StateError as exc:
            exc.message += backup
            exc.args = (exc.message,)
            exc.hint = exc.hint or ("the file was left untouched; restore the backup, or "
                                    "rebuild it from tags with `exaprov state recover`")
            raise
        self._last_text, self._lineage = text, state.lineage
        return state

    def write(self, state: State) -> None:
        if self._lineage is not None and state.lineage != self._lineage:
            raise StateError(f"{self.path}: refusing to write state of lineage {state.lineage} "
                             f"over lineage {self._lineage} (an unrelated deployment)")
        state.data["serial"] += 1
        state.data["exaprov_version"] = __version__
        text = state.dumps()
        try:
            ensure_private_dir(self.path.parent)
            if self._last_text is not None:
                _atomic_write(self.backup_path, self._last_text)
            _atomic_write(self.path, text)
        except OSError as exc:
            state.data["serial"] -= 1
            tried = self.fallbacks()
            failing(self)  # stop every change first: keeping the copy takes a while
            raise StateSaveError(str(self.path), exc.strerror or str(exc), keep_copy(text, tried),
                                 text, f"`cp {{}} {self.path}`", tried) from None
        self._last_text, self._lineage = text, state.lineage

    def fallbacks(self) -> list[Path]:
        """Where a state that cannot be saved is kept: next to it, else in the temp folder."""
        return [self.errored_path, temp_copy_path(self.path.stem)]

    def keep_aside(self, why: str) -> str:
        """Copy the state file, as it is, to `<name>.<why>-<timestamp>` (0600) before it is
        replaced; returns where. The copy is never touched again."""
        aside = self.path.with_name(f"{self.path.name}.{why}-{stamp()}")
        _atomic_write(aside, self.path.read_bytes())
        return str(aside)

    def lock_holder(self) -> dict[str, Any] | None:
        return _lock_holder(self)

    def force_unlock(self) -> dict[str, Any] | None:
        """Clear the info a dead holder left; a live holder keeps its kernel lock."""
        holder = _lock_holder(self)
        if holder and holder.get("running"):
            raise LockedError(_held_message(self.location, holder) + "; it is still running",
                              hint="a live process's lock cannot be cleared; stop it instead")
        if holder:
            with open(self.lock_path, "r+") as handle:
                handle.truncate(0)
        return holder

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[dict[str, Any] | None]:
        """Hold the deployment's exclusive lock; yields the info of a stale holder, if any."""
        ensure_private_dir(self.lock_path.parent)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(_held_message(self.location, _read_info(fd)),
                                  hint="wait for it to finish; if that process is gone the "
                                       "kernel has already released the lock") from None
            # Info left behind means the previous holder died without releasing.
            stale = _read_info(fd) or None
            # A state left readable by others (an older exaprov, a `cp`) becomes 0600 now,
            # not only when this run next writes it.
            for path in (self.path, self.backup_path):
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mode & 0o077:
                        os.chmod(path, 0o600)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "command": command, "since": _now(), "exaprov_version": __version__}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            os.fsync(fd)
            try:
                yield stale
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _lock_holder(store: LocalStateStore) -> dict[str, Any] | None:
    """Who holds (or, having died, last held) the lock; `running` says which."""
    if not store.lock_path.exists():
        return None
    fd = os.open(store.lock_path, os.O_RDWR)
    try:
        info = _read_info(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {**info, "running": True}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return {**info, "running": False} if info else None
    finally:
        os.close(fd)


def _read_info(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 65536, 0)
        info = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return printable_info(info) if isinstance(info, dict) else {}


def printable_info(info: dict[str, Any]) -> dict[str, Any]:
    """Lock info as it may be printed: anyone who can write the lock file chooses its text, so
    control characters (terminal escape codes) are shown escaped and each value is cut short."""
    def clean(value: Any) -> Any:
        if isinstance(value, (bool, int, float)) or value is None:
            return value
        text = str(value)[:200]
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

    return {clean(k): clean(v) for k, v in list(info.items())[:20]}


def process_gone(info: dict[str, Any]) -> bool:
    """True if the lock info names a process on this host that no longer runs. A process on
    another host cannot be probed: never called gone."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, but someone else's (EPERM)
    return False


def describe_holder(info: dict[str, Any]) -> str:
    """`pid 4242 on host since ... (running: exaprov up)`, plus whether it is gone."""
    text = (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"(running: {info.get('command')})")
    return text + (" — that process no longer exists" if process_gone(info) else "")


def _held_message(location: str, info: dict[str, Any]) -> str:
    if not info:
        return f"{location} is locked by another exaprov process"
    return (f"{location} is locked by pid {info.get('pid')} on {info.get('host')} "
            f"since {info.get('since')} (running: {info.get('command')})")


def ensure_private_dir(path: Path) -> None:
    """Create missing folders 0700 whatever the umask; folders that exist are the user's."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        os.chmod(folder, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (missing folders made 0700)."""
    ensure_private_dir(Path(path).parent)
    _atomic_write(Path(path), text)


def _atomic_write(path: Path, text: str | bytes) -> None:
    """Temp file in the same folder, fsync, rename over, fsync the folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)  # mkstemp already creates 0600; fchmod defends against odd umasks
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode() if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateWriter:
    """The one writer of a run's state: steps report resources, this saves after each.

    Steps run in threads; a mutex keeps each change-and-save whole.
    """

    def __init__(self, store: StateStore, state: State, dry_run: bool = False) -> None:
        self.store = store
        self.state = state
        self.dry_run = dry_run
        self._mutex = threading.Lock()
        # Set by the first save that failed: from then on nothing is saved to the store and
        # every record only moves the kept copy on (and raises again, stopping its step).
        self.broken: StateSaveError | None = None
        self.on_broken: list[Callable[[], None]] = []
        if not dry_run:
            store.on_failure = self._failing  # type: ignore[attr-defined]

    def record(self, address: str, *, fresh: bool = False, **fields: Any) -> None:
        """Merge fields into a resource's record; `fresh` starts it anew (an intent must
        not inherit the ID of a vanished resource)."""
        with self._mutex:
            current = self.state.resources.get(address, {})
            base = {} if fresh else current
            updated = {**base, **{k: v for k, v in fields.items() if v is not None}}
            if updated != current:
                self.state.resources[address] = updated
                self._save()

    def remove(self, address: str) -> None:
        with self._mutex:
            if self.state.resources.pop(address, None) is not None:
                self._save()

    def set_outputs(self, step: str, outputs: dict[str, Any]) -> None:
        with self._mutex:
            if self.state.outputs.get(step) != outputs:
                self.state.outputs[step] = outputs
                self._save()

    def drop_outputs(self, step: str) -> None:
        with self._mutex:
            if self.state.outputs.pop(step, None) is not None:
                self._save()

    def set_field(self, key: str, value: Any) -> None:
        with self._mutex:
            if self.state.data.get(key) != value:
                self.state.data[key] = value
                self._save()

    def _save(self) -> None:
        if self.dry_run:
            return
        if self.broken is not None:
            self._keep_again(self.broken)
            raise self.broken
        try:
            self.store.write(self.state)
        except StateSaveError as exc:
            self.broken = exc
            self._failing()
            raise

    def _failing(self) -> None:
        for stop in self.on_broken:
            stop()

    def _keep_again(self, error: StateSaveError) -> None:
        """After a failed save, a later record (a call that was in flight) updates the copy."""
        # The serial the failed write carried: the copy is one step past the saved file.
        text = State({**self.state.data, "serial": self.state.serial + 1}).dumps()
        places = [error.saved_to] if error.saved_to else []
        error.kept(keep_copy(text, places + [p for p in error.tried if p not in places]), text)


def default_state_path(name: str, sandbox: bool = False) -> Path:
    # Sandbox deployments live apart from real ones (and from the emulator's own files).
    base = Path("state") / "sandbox" / "deployments" if sandbox else Path("state")
    return base / f"{name}.json"


def command_line() -> str:
    return " ".join(["exaprov", *sys.argv[1:]])[:200]
