"""Time in exaprov: one scale for every poll interval, wait bound and backoff.

`EXAPROV_TIME_SCALE` (default 1) multiplies them all, so that exaprov against
an emulator running its latency model at 1/60 behaves as it would against AWS
at full speed. It is a testing knob; users never need it.
"""

from __future__ import annotations

import os
import threading

from exaprov.errors import Cancelled, InputError

ENV_TIME_SCALE = "EXAPROV_TIME_SCALE"


def time_scale() -> float:
    raw = os.environ.get(ENV_TIME_SCALE, "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = -1.0
    if not scale > 0:
        raise InputError(f"{ENV_TIME_SCALE}: must be a number above 0 (got {raw!r})")
    return scale


def scaled(seconds: float) -> float:
    return seconds * time_scale()


class CancelToken:
    """Set on the first Ctrl-C (or SIGTERM, SIGHUP); every wait checks it, so running steps
    stop at their next poll."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None  # the signal that cancelled the run, if one did

    def cancel(self, signum: int | None = None) -> None:
        if not self._event.is_set():
            self.signum = signum
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with Cancelled) when the run is cancelled."""
        if self._event.wait(max(seconds, 0.0)):
            raise Cancelled("interrupted")

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("interrupted")
