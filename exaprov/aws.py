"""AWS access: one boto3 session per command, clients built once and shared by threads.

Throttling and transient 5xx belong to botocore's `standard` retry mode; exaprov's
own retries (tenacity, in `exaprov.waiting`) are only for *semantic* waits. Each
retry botocore makes is logged on one line (seen with `-v`), and its backoff is
multiplied by EXAPROV_TIME_SCALE like every other wait.
boto3 is imported here, never by the CLI module, so `exaprov --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.retries import standard

from exaprov import __version__
from exaprov.errors import LAST_CALL
from exaprov.lost_answers import in_create, is_lost
from exaprov.timing import time_scale

log = logging.getLogger(__name__)

# Enough retries to ride out a burst of throttling (standard mode backs off
# exponentially up to 20 s between attempts): 11 attempts in all.
MAX_ATTEMPTS = 10
# An endpoint that does not answer: a connection not accepted within CONNECT_TIMEOUT, or an
# answer not started within READ_TIMEOUT (AWS's API calls answer in well under a second; the
# slowest exaprov makes take a few). A line is printed after NO_ANSWER_NOTICE seconds of
# silence, and such a call is given NO_ANSWER_ATTEMPTS attempts, not MAX_ATTEMPTS + 1: it gives
# up after at most 3 x 5 s + backoff (about 20 s) when nothing accepts the connection, and
# 3 x 30 s + backoff (about 95 s) when a server accepts and never answers.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
NO_ANSWER_NOTICE = 5.0
NO_ANSWER_ATTEMPTS = 3
_NO_ANSWER = (ConnectTimeoutError, ReadTimeoutError, EndpointConnectionError)


class Aws:
    """The clients of one command run, for one account and region."""

    def __init__(self, region: str, profile: str | None = None,
                 endpoint_url: str | None = None,
                 credentials: Mapping[str, str] | None = None) -> None:
        time_scale()  # scales every backoff: a bad EXAPROV_TIME_SCALE stops us before any call
        self.region = region
        self.endpoint_url = endpoint_url
        self._profile = profile
        self._credentials = dict(credentials or {})
        if endpoint_url:
            _bypass_proxy_for(endpoint_url)
        self.session = boto3.Session(profile_name=profile, region_name=region,
                                     **dict(credentials or {}))
        self._config = BotoConfig(
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            user_agent_extra=f"exaprov/{__version__}",
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=32,
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._account_id: str | None = None
        self._caller_arn = ""

    def client(self, service: str) -> Any:
        # boto3 clients are thread-safe once built; building them is not.
        with self._lock:
            if service not in self._clients:
                client = self.session.client(service, config=self._config,
                                             endpoint_url=self.endpoint_url)
                _scale_and_log_retries(client)
                client.meta.events.register("before-send", _WATCH.started)
                client.meta.events.register("after-call", _name_service)
                client.meta.events.register("after-call", _WATCH.answered)
                client.meta.events.register("after-call-error", _WATCH.answered)
                client.meta.events.register("before-call", _remember_call)
                if log.isEnabledFor(logging.DEBUG):
                    _log_each_call(client)
                self._clients[service] = client
            return self._clients[service]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def rds(self) -> Any:
        return self.client("rds")

    def elsewhere(self, region: str | None = None, profile: str | None = None) -> Aws:
        """Clients for another region and/or account (a peer VPC's side), same endpoint."""
        if (region or self.region) == self.region and profile in (None, self._profile):
            return self
        return Aws(region or self.region, profile=profile or self._profile,
                   endpoint_url=self.endpoint_url,
                   credentials=None if profile else self._credentials)

    def account_id(self) -> str:
        if self._account_id is None:
            identity = self.client("sts").get_caller_identity()
            self._caller_arn = identity["Arn"]
            self._account_id = identity["Account"]
        return self._account_id

    def caller_arn(self) -> str:
        """The IAM principal making the calls (an assumed role's session as its role's ARN,
        the form a key policy names: arn:…:iam::<account>:role/<name>). One GetCallerIdentity
        serves this and `account_id`."""
        self.account_id()
        arn = self._caller_arn
        if ":assumed-role/" in arn:
            head, _, rest = arn.partition(":assumed-role/")
            arn = f"{head.replace(':sts:', ':iam:')}:role/{rest.split('/')[0]}"
        return arn


def _bypass_proxy_for(endpoint_url: str) -> None:
    """A local emulator must be reached directly, never through an HTTP(S)_PROXY."""
    host = urlparse(endpoint_url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        current = os.environ.get("NO_PROXY", os.environ.get("no_proxy", ""))
        if host not in current.split(","):
            os.environ["NO_PROXY"] = ",".join(filter(None, [current, host]))


def _scale_and_log_retries(client: Any) -> None:
    """Swap the client's standard-mode retry handler for the same handler wrapped in
    `ScaledRetries`: botocore decides whether and how long to back off, we scale and log it.

    botocore keeps no reference to the handler it registered, so we unregister it (by its
    unique id) and register a fresh one through the same public function, which returns it.
    """
    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()
    event, unique_id = f"needs-retry.{service}", f"retry-config-{service}"
    attempts = client.meta.config.retries.get("total_max_attempts", MAX_ATTEMPTS + 1)
    events.unregister(event, unique_id=unique_id)
    handler = standard.register_retry_handler(client, max_attempts=attempts)
    events.unregister(event, unique_id=unique_id)
    events.register(event, ScaledRetries(handler.needs_retry, service, attempts), unique_id=unique_id)


class ScaledRetries:
    """A `needs-retry` handler: botocore's decision and delay, the delay times the time scale,
    and one INFO line per retry naming the operation, the error and the attempt."""

    def __init__(self, needs_retry: Any, service: str, max_attempts: int) -> None:
        self._needs_retry = needs_retry
        self._service = service
        self._max_attempts = max_attempts

    def __call__(self, **kwargs: Any) -> Any:
        attempt, operation = kwargs["attempts"], kwargs["operation"].name
        caught = kwargs.get("caught_exception")
        _WATCH.answered()
        if isinstance(caught, _NO_ANSWER):
            host = _host(kwargs.get("request_dict"))
            if attempt >= NO_ANSWER_ATTEMPTS:
                log.warning("%s (%s %s): %d attempts, giving up", _silence(host, caught),
                            self._service, operation, attempt)
                return None
            log.warning("%s (%s %s), retrying (attempt %d of %d)", _silence(host, caught),
                        self._service, operation, attempt + 1, NO_ANSWER_ATTEMPTS)
        problem = _problem(kwargs.get("response"), caught)
        if in_create() and is_lost(kwargs.get("response"), kwargs.get("caught_exception")):
            log.info("%s %s: %s, the answer is lost: not sent again (the step looks it up)",
                     self._service, operation, problem)
            return None
        delay = self._needs_retry(**kwargs)
        if delay is None or delay is False:  # no retry (False: botocore already slept)
            if problem and (_gave_up(kwargs.get("response")) or (
                    kwargs.get("caught_exception") is not None and attempt >= self._max_attempts)):
                log.info("%s %s: %s on all %d attempts, giving up", self._service, operation,
                         problem, attempt)
            return delay
        delay *= time_scale()
        log.info("%s %s: %s, retrying (attempt %d of %d) in %.3gs", self._service, operation,
                 problem, attempt + 1, self._max_attempts, delay)
        return delay


def _host(request_dict: Any) -> str:
    url = (request_dict or {}).get("url", "") if isinstance(request_dict, dict) else ""
    return urlparse(url).netloc or "the endpoint"


def _silence(host: str, caught: BaseException) -> str:
    if isinstance(caught, ConnectTimeoutError):
        return f"no answer from {host} after {CONNECT_TIMEOUT} s"
    if isinstance(caught, ReadTimeoutError):
        return f"no answer from {host} after {READ_TIMEOUT} s"
    return f"could not connect to {host}"


def _remember_call(model: Any, **_: Any) -> None:
    LAST_CALL.call = (model.service_model.service_id.hyphenize(), model.name)


def _name_service(http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
    """Errors name the service they came from (ClientError itself does not)."""
    if isinstance(parsed, dict) and isinstance(parsed.get("Error"), dict):
        parsed.setdefault("ResponseMetadata", {})["ExaprovService"] = \
            model.service_model.service_id.hyphenize()


class _NoAnswerWatch:
    """One daemon thread that prints "no answer from <host> after 5 s, still waiting" for a
    request silent that long (a connect or read timeout takes longer to fire)."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def started(self, request: Any, **_: Any) -> None:
        import time

        with self._lock:
            self._pending[threading.get_ident()] = (time.monotonic(), urlparse(request.url).netloc)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="exaprov-no-answer",
                                                daemon=True)
                self._thread.start()

    def answered(self, **_: Any) -> None:
        with self._lock:
            self._pending.pop(threading.get_ident(), None)

    def _run(self) -> None:
        import time

        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                late = [(k, v) for k, v in self._pending.items() if now - v[0] >= NO_ANSWER_NOTICE]
                for key, _ in late:
                    del self._pending[key]
            for _, (_, host) in late:
                log.warning("no answer from %s after %.0f s, still waiting (up to %d s per "
                            "attempt, %d attempts)", host, NO_ANSWER_NOTICE, READ_TIMEOUT,
                            NO_ANSWER_ATTEMPTS)


_WATCH = _NoAnswerWatch()


def _problem(response: Any, caught: BaseException | None) -> str:
    """What went wrong with one attempt: the error code, the HTTP status or the exception."""
    if caught is not None:
        return type(caught).__name__
    if not response:
        return ""
    http, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code")
    if code:
        return str(code)
    return f"HTTP {http.status_code}" if http is not None and http.status_code >= 400 else ""


def _gave_up(response: Any) -> bool:
    parsed = response[1] if response else None
    meta = (parsed or {}).get("ResponseMetadata", {})
    return bool(meta.get("MaxAttemptsReached") or meta.get("RetryQuotaReached"))


def _log_each_call(client: Any) -> None:
    """--debug: one line per AWS call once it is answered: service, operation, the names of
    the parameters sent, the HTTP status (and error code), botocore's retries and the time.

    Parameter values are never logged: they hold passwords and secret keys. The hooks are
    botocore's own events: `before-parameter-build` sees the API parameters (`before-call`
    sees the serialized request), `after-call` the answer after every retry, and
    `after-call-error` a call that got no answer at all.
    """
    service = client.meta.service_model.service_name
    events = client.meta.events

    def started(params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["exaprov_call"] = (model.name, ", ".join(sorted(params)), time.monotonic())

    def line(context: dict[str, Any], outcome: str) -> None:
        operation, names, began = context.get("exaprov_call", ("?", "", time.monotonic()))
        log.debug("aws %s %s(%s): %s in %.3fs", service, operation, names, outcome,
                  time.monotonic() - began)

    def answered(http_response: Any, parsed: Mapping[str, Any], context: dict[str, Any],
                 **_: Any) -> None:
        code = (parsed or {}).get("Error", {}).get("Code")
        retries = (parsed or {}).get("ResponseMetadata", {}).get("RetryAttempts") or 0
        line(context, f"{http_response.status_code}{' ' + code if code else ''}"
                      f"{f' after {retries} retries' if retries else ''}")

    def failed(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
        line(context, f"no answer ({type(exception).__name__})")

    events.register("before-parameter-build", started)
    events.register("after-call", answered)
    events.register("after-call-error", failed)


def paginate(client: Any, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item of a listing that may span pages."""
    items: list[dict[str, Any]] = []
    for page in client.get_paginator(operation).paginate(**kwargs):
        items.extend(page.get(key, []))
    return items


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_dict(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or ()}
