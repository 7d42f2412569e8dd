"""Ctrl-C, SIGTERM and SIGHUP: one behaviour for the three.

SIGTERM is what CI runners, `timeout`, systemd and container stops send; SIGHUP is a
closed terminal or SSH session. Each is treated as the first Ctrl-C: while steps run
the run is cancelled (running steps stop at their next poll, record and save, the lock
is released) and the command exits 128 + the signal's number (130, 143, 129). Outside
the steps (reading the config, taking the lock, a question) the signal interrupts what
the main thread is doing, which unwinds through the lock and exits with the same code.
A second signal stops at once: every state write is an atomic replace, so the state on
disk is valid whenever the process stops.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}

_received: list[int] = []  # the signals this command got, in order


class Interrupted(KeyboardInterrupt):
    """A signal interrupted the main thread (a KeyboardInterrupt, whichever signal it was, so
    that everything that cleans up after Ctrl-C cleans up after SIGTERM too)."""

    def __init__(self, signum: int, again: bool) -> None:
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum
        self.again = again  # the second signal of this command: stopping at once


def exit_code(signum: int | None) -> int:
    """128 + the signal's number, as a shell reports a process ended by it."""
    return 128 + int(signum or signal.SIGINT)


def first_signal() -> int | None:
    return _received[0] if _received else None


def describe(signum: int | None) -> str:
    return NAMES.get(signum or signal.SIGINT, f"signal {signum}")


def note(signum: int) -> bool:
    """Record a signal; True if it is the first of this command."""
    _received.append(signum)
    return len(_received) == 1


@contextlib.contextmanager
def handled(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`handler` for SIGINT, SIGTERM and SIGHUP while the block runs (main thread only;
    elsewhere signals cannot be handled and the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig, old in previous.items():
        # An ignored signal stays ignored: `nohup exaprov up` must outlive its terminal.
        if old is not signal.SIG_IGN:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, old)


@contextlib.contextmanager
def command() -> Iterator[None]:
    """For a whole command: any of the three signals raises Interrupted in the main thread."""
    _received.clear()

    def raise_interrupted(signum: int, frame: Any) -> None:
        first = note(signum)
        raise Interrupted(first_signal() or signum, again=not first)

    with handled(raise_interrupted):
        yield
