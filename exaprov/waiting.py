"""Bounded waits and semantic retries, all through tenacity and the time scale.

`wait_until` polls a resource until it is ready, reporting what it waits for and
how long so far on every pass; `retry_while` retries a call while AWS answers
with an error that means "not yet" (IAM propagation, DependencyViolation while
ENIs linger, NotFound right after a create). Throttling is not handled here:
botocore's retry mode owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import ClientError
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
)

from exaprov.errors import WaitTimeout, error_code
from exaprov.timing import CancelToken, scaled

T = TypeVar("T")


def _fmt(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def wait_until(what: str, probe: Callable[[], T], ready: Callable[[T], bool], *,
               timeout: float, interval: float, cancel: CancelToken,
               report: Callable[[str], None], describe: Callable[[T], str] = str,
               hint: str = "run the command again to keep waiting",
               progress: Callable[[str, float, bool], None] | None = None) -> T:
    """Poll `probe` until `ready(result)`; first poll at once, then backing off to `interval`.

    `timeout` and `interval` are in real-AWS seconds and scaled by EXAPROV_TIME_SCALE.
    With `progress`, each poll is reported as `progress(state, seconds waited, False)` instead
    of a line of text, and the end of the wait (ready, failed or cancelled) as
    `progress(last state, seconds waited, True)`: a live view gives each waited-on resource
    its own line and removes it when its wait ends.
    """
    started = time.monotonic()
    last: list[T] = []

    def poll() -> T:
        cancel.check()
        result = probe()
        last[:] = [result]
        if progress is not None:
            progress(describe(result), time.monotonic() - started, False)
        else:
            report(f"waiting for {what}: {describe(result)} ({_fmt(time.monotonic() - started)})")
        return result

    retrying = Retrying(
        retry=retry_if_result(lambda r: not ready(r)),
        stop=stop_after_delay(scaled(timeout)),
        wait=wait_exponential(multiplier=scaled(1), min=scaled(1), max=scaled(interval)),
        sleep=cancel.sleep,
    )
    try:
        return retrying(poll)
    except RetryError:
        state = describe(last[0]) if last else "unknown"
        raise WaitTimeout(f"{what} still {state} after {_fmt(scaled(timeout))}",
                          hint=hint) from None
    finally:
        if progress is not None:
            progress(describe(last[0]) if last else "unknown", time.monotonic() - started, True)


def retry_while(what: str, call: Callable[[], T], codes: set[str], *, timeout: float,
                cancel: CancelToken, report: Callable[[str], None],
                hint: str | None = None, message: str | None = None) -> T:
    """Call, retrying while AWS answers with one of `codes` (and, if given, an error message
    containing `message`), for at most `timeout` (scaled)."""
    started = time.monotonic()

    def matches(exc: BaseException) -> bool:
        if not isinstance(exc, ClientError) or error_code(exc) not in codes:
            return False
        return message is None or message.lower() in str(exc).lower()

    def retryable(exc: BaseException) -> bool:
        if matches(exc):
            report(f"{what}: {error_code(exc)}, retrying ({_fmt(time.monotonic() - started)})")
            return True
        return False

    retrying = Retrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_delay(scaled(timeout)),
        wait=wait_exponential(multiplier=scaled(1), min=scaled(1), max=scaled(15)),
        sleep=cancel.sleep,
        reraise=True,
    )
    try:
        return retrying(call)
    except ClientError as exc:
        if matches(exc):
            exc.response.setdefault("Error", {})["Message"] = (
                f"{exc.response['Error'].get('Message', '')} — still failing after "
                f"{_fmt(scaled(timeout))} of retries ({what})" + (f"; {hint}" if hint else ""))
        raise
