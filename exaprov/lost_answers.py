"""Creates whose answer was lost: AWS may have carried them out.

A dropped connection, a read timeout or a 5xx after the request went out leaves a
create's outcome unknown. botocore would simply send it again, and for a create
without an idempotency token (CreateVpc, CreateInternetGateway, AllocateAddress,
CreateKey, ...) AWS then makes the resource twice. So while a create
runs, botocore does not retry such failures; the engine runs the step again
instead, whose lookup by tag finds what AWS made (or creates it, once).
Throttling answers are refusals, not lost answers: those are still retried.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

# 5xx codes that say "refused, not done": safe to send again.
THROTTLED = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "SlowDown",
                       "TooManyRequestsException", "RequestThrottled", "RequestThrottledException"})

_local = threading.local()


@contextlib.contextmanager
def creating() -> Iterator[None]:
    """Around one create call (per thread: steps create concurrently)."""
    _local.creating = True
    try:
        yield
    finally:
        _local.creating = False


def in_create() -> bool:
    return getattr(_local, "creating", False)


def is_lost(response: Any, caught: BaseException | None) -> bool:
    """For botocore's `needs-retry` arguments: did this attempt maybe happen in AWS?"""
    if caught is not None:
        return isinstance(caught, (ConnectionClosedError, ReadTimeoutError))
    if not response or response[0] is None:
        return False
    http, parsed = response
    return _maybe_done(http.status_code, (parsed or {}).get("Error", {}).get("Code"))


def was_lost(exc: BaseException) -> bool:
    """For the error a create raised."""
    if isinstance(exc, ClientError):
        return _maybe_done(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0),
                           exc.response.get("Error", {}).get("Code"))
    return is_lost(None, exc)


def _maybe_done(status: int, code: str | None) -> bool:
    """A 5xx may come after AWS did the work; a throttling answer never does, nor a 501 (HTTP:
    the server does not support the request at all, so it did nothing)."""
    return status >= 500 and status != 501 and code not in THROTTLED
