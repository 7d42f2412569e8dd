"""Start, find and stop the background emulator behind `--sandbox`.

Every exaprov command given `--sandbox` talks to one local emulator
(`exaprov.emulator`) on 127.0.0.1. It runs in a detached process that
outlives the command, so that `up`, `status` and `destroy` run as separate
processes see the same emulated AWS world.

There is one emulator per user, not per working folder: it stands for one AWS account,
and like an account it is shared by every folder the user works in (the user's own tools
reach the same one through `exaprov sandbox env`). Its pid and port are recorded in
`$XDG_STATE_HOME/exaprov/sandbox/server.json` (by default `~/.local/state/exaprov/sandbox/`),
its output goes to `server.log` beside it; EXAPROV_SANDBOX_HOME names another folder (a
second, separate "account"). What the emulator holds lives only in its memory. A sandbox
deployment's state stays in its folder (`state/sandbox/deployments/<name>.json`); two folders
deploying the same name into one emulator meet the same resources by their tags, exactly as
two checkouts would in one AWS account.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exaprov import __version__
from exaprov.errors import ExaprovError

# Fake credentials: boto3 refuses to sign without some, and the emulator accepts any.
# The keys are boto3's keyword names: `boto3.client(..., **SANDBOX_CREDENTIALS)`.
SANDBOX_CREDENTIALS: dict[str, str] = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}
SANDBOX_ACCOUNT_ID = "123456789012"  # moto's default account
SANDBOX_HOST = "127.0.0.1"

_RECORD = "server.json"
_LOG = "server.log"
_LOCK = "server.lock"
_READY = "server.ready"
_EMULATOR_MODULE = "exaprov.emulator"
_POLL = 0.05
_LOG_BOUND = 5 * 1024 * 1024  # bytes of server.log before a start moves it to server.log.1
LEGACY_ROOT = Path("state")  # exaprov before one emulator per user kept one per folder here
ENV_SANDBOX_HOME = "EXAPROV_SANDBOX_HOME"
TAG_DEPLOYMENT = "exaprov:deployment"  # exaprov.engine's, without importing the engine

# Emulators this process started: kept so they can be reaped (no zombies that
# look alive) and so Popen does not warn about a child still running.
_children: dict[int, subprocess.Popen[bytes]] = {}


def user_root() -> Path:
    """Where the user's sandbox lives: EXAPROV_SANDBOX_HOME, else `$XDG_STATE_HOME/exaprov`
    (XDG Base Directory: state that persists between runs; default ~/.local/state)."""
    explicit = os.environ.get(ENV_SANDBOX_HOME, "").strip()
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "exaprov"


def sandbox_dir(state_root: Path | None = None) -> Path:
    """The folder of the sandbox's record, log and lock; private to the user (0700)."""
    from exaprov.state import ensure_private_dir

    path = Path(state_root if state_root is not None else user_root()) / "sandbox"
    ensure_private_dir(path)  # and the folders above it it makes: 0700 whatever the umask
    os.chmod(path, 0o700)
    return path


def _open_private(path: Path, flags: int) -> int:
    """Open (creating) a file with mode 0600 whatever the umask."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _write_record(path: Path, record: dict[str, Any]) -> None:
    """Write the server record atomically (temp file then rename), mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = _open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, (json.dumps(record, indent=2) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_record(directory: Path) -> dict[str, Any] | None:
    """The server record, or None when absent or unreadable (treated as stale)."""
    try:
        record = json.loads((directory / _RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    if not isinstance(record.get("endpoint"), str):
        return None
    return record


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (reaping our own children)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (or it just vanished): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _is_our_emulator(pid: int) -> bool:
    """Alive and running exaprov.emulator: a recycled pid must never be signalled."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # vanished, unless there is no procfs at all
    except OSError:
        return False
    return _EMULATOR_MODULE.encode() in cmdline.split(b"\0")


def _answers(endpoint: str, timeout: float = 1.0) -> bool:
    """True when something answers HTTP at the endpoint (any status counts)."""
    # No proxies: an HTTP(S)_PROXY from the environment must not see loopback traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{endpoint}/moto-api/config", timeout=timeout) as response:
            response.read(1)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _locked(directory: Path, wait: float) -> Iterator[None]:
    """Hold the sandbox lock, so two exaprov processes never start two servers."""
    fd = _open_private(directory / _LOCK, os.O_RDWR)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ExaprovError(
                        f"another exaprov process holds {directory / _LOCK}",
                        hint="wait for it to finish, then retry",
                    ) from None
                time.sleep(_POLL)
        yield
    finally:
        os.close(fd)  # releases the lock


def _log_tail(log: Path, lines: int = 15) -> str:
    """The last lines of the server log, for error messages."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _emulator_command(ready_file: Path) -> list[str]:
    """The command line of the background emulator."""
    return [sys.executable, "-m", _EMULATOR_MODULE, "--host", SANDBOX_HOST, "--port", "0",
            "--ready-file", str(ready_file)]


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll, bounded by timeout, until the process is gone; True if it went."""
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait bounded, then SIGKILL as a last resort."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        if _wait_gone(pid, wait):
            return


def _start(directory: Path, timeout: float) -> dict[str, Any]:
    """Start a detached emulator and wait, bounded, until it answers; returns its record."""
    directory = directory.resolve()  # the child runs in it: relative paths would break
    ready = directory / _READY
    ready.unlink(missing_ok=True)
    log = directory / _LOG
    # One log for every start of the user's emulator: keep the previous one aside past a bound.
    with contextlib.suppress(OSError):
        if log.stat().st_size > _LOG_BOUND:
            os.replace(log, log.with_name(_LOG + ".1"))
    log_fd = _open_private(log, os.O_WRONLY | os.O_APPEND)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    os.write(log_fd, f"--- exaprov {__version__}: starting emulator at {started_at}\n".encode())
    # The child must import exaprov even when it is not installed (a source checkout).
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.Popen(
            _emulator_command(ready), stdin=subprocess.DEVNULL, stdout=log_fd,
            stderr=subprocess.STDOUT, close_fds=True, start_new_session=True,
            cwd=directory, env=env,
        )
    except OSError as exc:
        raise ExaprovError(f"could not start the sandbox emulator: {exc}") from exc
    finally:
        os.close(log_fd)
    _children[proc.pid] = proc

    def fail(why: str) -> ExaprovError:
        return ExaprovError(f"the sandbox emulator {why}; last lines of {log}:\n{_log_tail(log)}",
                            hint="see the log; `pip install 'exaprov[sandbox]'` if moto is missing")

    deadline = time.monotonic() + timeout
    endpoint: str | None = None
    while True:
        code = proc.poll()
        if code is not None:
            _children.pop(proc.pid, None)
            raise fail(f"exited early (code {code})")
        if endpoint is None and ready.exists():
            try:
                port = int(ready.read_text().strip())
            except (OSError, ValueError):
                port = 0
            if port:
                endpoint = f"http://{SANDBOX_HOST}:{port}"
        if endpoint is not None and _answers(endpoint):
            break
        if time.monotonic() >= deadline:
            _terminate(proc.pid, 2.0)
            raise fail(f"did not answer within {timeout:g} s")
        time.sleep(_POLL)
    ready.unlink(missing_ok=True)
    return {"pid": proc.pid, "port": port, "endpoint": endpoint,
            "started_at": started_at, "version": __version__}


def start(state_root: Path | None = None, timeout: float = 30.0) -> tuple[dict[str, Any], bool]:
    """The record of the running sandbox emulator, starting one if none is running, and
    whether this call started it.

    A recorded server is reused only if its pid is alive, runs exaprov.emulator
    and answers HTTP; otherwise the record is stale and a fresh server replaces it.
    """
    directory = sandbox_dir(state_root)
    with _locked(directory, wait=timeout + 10.0):
        record = _read_record(directory)
        if record is not None:
            pid, endpoint = record["pid"], record["endpoint"]
            if _is_our_emulator(pid):
                if _answers(endpoint):
                    return record, False
                _terminate(pid, 5.0)  # ours but hung: do not leak it
        (directory / _RECORD).unlink(missing_ok=True)
        record = _start(directory, timeout)
        _write_record(directory / _RECORD, record)
        return record, True


def started_message(record: dict[str, Any]) -> str:
    return (f"started the sandbox emulator at {record['endpoint']} (pid {record['pid']}); "
            "`exaprov sandbox stop` stops it")


def ensure_running(state_root: Path | None = None, timeout: float = 30.0,
                   announce: bool = True) -> str:
    """The endpoint URL of the sandbox emulator, starting one if none is running (and then,
    with `announce`, saying so on stderr: a process that outlives the command must not
    start silently)."""
    record, started = start(state_root, timeout)
    if started and announce:
        sys.stderr.write(started_message(record) + "\n")
        sys.stderr.flush()
    return str(record["endpoint"])


def env_exports(endpoint: str, region: str) -> str:
    """Shell lines that point aws-cli, boto3 and the other SDKs at the emulator:
    `eval "$(exaprov sandbox env)"`. botocore reads AWS_DEFAULT_REGION, the other SDKs and
    aws-cli v2 AWS_REGION; AWS_ENDPOINT_URL is every SDK's global endpoint override."""
    import shlex

    values = {"AWS_ENDPOINT_URL": endpoint,
              "AWS_ACCESS_KEY_ID": SANDBOX_CREDENTIALS["aws_access_key_id"],
              "AWS_SECRET_ACCESS_KEY": SANDBOX_CREDENTIALS["aws_secret_access_key"],
              "AWS_REGION": region, "AWS_DEFAULT_REGION": region}
    lines = [f"export {k}={shlex.quote(v)}\n" for k, v in values.items()]
    if any(os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")):
        # A proxy must not see loopback traffic (and cannot reach the user's loopback anyway).
        lines.append(f'export NO_PROXY="${{NO_PROXY:+$NO_PROXY,}}{SANDBOX_HOST}"\n')
    return "".join(lines)


def _requests_by_service(endpoint: str) -> dict[str, int] | None:
    """The emulator's request counts by service (None if it does not say)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{endpoint}/exaprov-emulator/requests", timeout=5) as response:
            counts = json.loads(response.read()).get("by_service")
    except (OSError, ValueError, AttributeError):
        return None
    return counts if isinstance(counts, dict) else None


def deployments(endpoint: str, regions: list[str]) -> list[tuple[str, str]]:
    """The deployments living in the emulator, as (name, region), region "" when unknown.

    Every deployment's IAM roles carry its tag, and IAM is global: one look finds them all
    wherever they live (and its roles go late in a destroy). Where they live: the VPCs with
    the tag in `regions` (a deployment's first resource and one of its last to go). Not every
    region: the emulator makes each region's EC2 world on first use, a second or more each.
    """
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    from exaprov.aws import _bypass_proxy_for

    served = _requests_by_service(endpoint)
    if served is not None and not served.get("iam") and not served.get("ec2"):
        return []  # nothing ever asked it for a role or a VPC: no deployment lives in it
    _bypass_proxy_for(endpoint)
    session = boto3.Session(**SANDBOX_CREDENTIALS)
    iam = session.client("iam", region_name="us-east-1", endpoint_url=endpoint)
    names: set[str] = set()
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            tags = iam.list_role_tags(RoleName=role["RoleName"])["Tags"]
            names.update(t["Value"] for t in tags if t["Key"] == TAG_DEPLOYMENT)

    def in_region(region: str) -> list[tuple[str, str]]:
        ec2 = session.client("ec2", region_name=region, endpoint_url=endpoint)
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag-key", "Values": [TAG_DEPLOYMENT]}])["Vpcs"]
        return [(tag["Value"], region) for vpc in vpcs for tag in vpc.get("Tags", [])
                if tag["Key"] == TAG_DEPLOYMENT]

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = {pair for pairs in pool.map(in_region, sorted(set(regions))) for pair in pairs}
    located = {name for name, _ in found}
    return sorted(found | {(name, "") for name in names - located})


def status(state_root: Path | None = None) -> dict[str, Any] | None:
    """The server record plus `running` (alive and answering); None without a record."""
    record = _read_record(sandbox_dir(state_root))
    if record is None:
        return None
    running = _is_our_emulator(record["pid"]) and _answers(record["endpoint"])
    return {**record, "running": running}


def stop_legacy(timeout: float = 10.0) -> bool:
    """Stop the per-folder emulator an older exaprov may have left in ./state/sandbox (only
    if its record is there: never creates the folder)."""
    if not (LEGACY_ROOT / "sandbox" / _RECORD).is_file():
        return False
    return stop(LEGACY_ROOT, timeout)


def stop(state_root: Path | None = None, timeout: float = 10.0) -> bool:
    """Stop the sandbox emulator and remove its record; True if a server was stopped.

    The emulator keeps its AWS world only in memory: everything in it is lost.
    """
    directory = sandbox_dir(state_root)
    with _locked(directory, wait=timeout + 40.0):
        record = _read_record(directory)
        stopped = False
        if record is not None and _is_our_emulator(record["pid"]):
            _terminate(record["pid"], timeout)
            stopped = True
        (directory / _RECORD).unlink(missing_ok=True)
        return stopped
