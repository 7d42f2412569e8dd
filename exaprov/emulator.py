"""exaprov's own local AWS emulator: moto's server plus what moto lacks.

This is the emulator `--sandbox` runs in a background process and the tests
share, so that both see the same behaviour. Later work teaches it real AWS
behaviour that moto skips (the EKS cluster's primary security group, Auto
Scaling groups behind managed node groups, CREATING durations, a latency
model); all of that hooks in through `install_extensions()`.

Run it as `python -m exaprov.emulator --host 127.0.0.1 --port 0 --ready-file PATH`.
It only ever binds a loopback address: the sandbox must never be reachable
from another machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from exaprov.errors import ExaprovError, InputError

MOTO_MISSING = (
    "the sandbox needs the local AWS emulator (moto), which is not installed: "
    "pip install 'exaprov[sandbox]'"
)

_extensions_lock = threading.Lock()
_extensions_installed = False


def install_extensions() -> None:
    """Patch moto's backends with exaprov's extensions; safe to call many times.

    The one extension point for behaviour moto lacks, called by the server entry
    point and by in-process test fixtures alike so both emulate the same AWS.
    Nothing needs patching yet.
    """
    global _extensions_installed
    with _extensions_lock:
        if _extensions_installed:
            return
        _extensions_installed = True


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only addresses we may bind."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_atomically(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def serve(host: str = "127.0.0.1", port: int = 0, ready_file: Path | None = None) -> None:
    """Serve the emulator in the foreground until SIGTERM/SIGINT, then shut down cleanly.

    With port 0 the OS picks a free port; the port actually bound is written to
    `ready_file` once the socket listens, which is how a parent learns it.
    """
    if not is_loopback(host):
        raise InputError(f"the emulator only binds a loopback address, not {host!r}")
    # Before moto is imported: the AWS managed IAM policies (e.g. AmazonEKSClusterPolicy)
    # must exist, as they do in real AWS.
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as exc:
        raise ExaprovError(MOTO_MISSING) from exc

    install_extensions()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True)
    bound = server.server_port
    # moto builds some URLs that point back at itself (e.g. SQS queue URLs) from this.
    os.environ["MOTO_PORT"] = str(bound)

    def _stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, and serve_forever runs in
        # this very thread: ask from another thread or it would deadlock.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread: the caller stops us via the process
            pass
    try:
        if ready_file is not None:
            _write_atomically(Path(ready_file), f"{bound}\n")
        print(f"exaprov emulator: listening on http://{host}:{bound} (pid {os.getpid()})",
              flush=True)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("exaprov emulator: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; refuses any non-loopback host before binding anything."""
    parser = argparse.ArgumentParser(prog="python -m exaprov.emulator",
                                     description="exaprov's local AWS emulator")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="file the bound port is written to once listening")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"--host {args.host}: not a loopback address; only 127.0.0.0/8, ::1 "
                     "or localhost may be bound")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: not a port number")
    try:
        serve(args.host, args.port, args.ready_file)
    except ExaprovError as exc:
        print(f"exaprov emulator: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
