"""AWS access: one boto3 session per command, clients built once and shared by threads.

Throttling and transient 5xx belong to botocore's `standard` retry mode; exaprov's
own retries (tenacity, in `exaprov.waiting`) are only for *semantic* waits.
boto3 is imported here, never by the CLI module, so `exaprov --help` stays fast.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig

from exaprov import __version__

log = logging.getLogger(__name__)

# Enough attempts to ride out a burst of throttling (standard mode backs off
# exponentially up to 20 s between attempts).
MAX_ATTEMPTS = 10


class Aws:
    """The clients of one command run, for one account and region."""

    def __init__(self, region: str, profile: str | None = None,
                 endpoint_url: str | None = None,
                 credentials: Mapping[str, str] | None = None) -> None:
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
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._account_id: str | None = None

    def client(self, service: str) -> Any:
        # boto3 clients are thread-safe once built; building them is not.
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self.session.client(
                    service, config=self._config, endpoint_url=self.endpoint_url)
                if log.isEnabledFor(logging.DEBUG):
                    self._clients[service].meta.events.register("before-call", _log_call)
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
            self._account_id = self.client("sts").get_caller_identity()["Account"]
        return self._account_id


def _bypass_proxy_for(endpoint_url: str) -> None:
    """A local emulator must be reached directly, never through an HTTP(S)_PROXY."""
    host = urlparse(endpoint_url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        current = os.environ.get("NO_PROXY", os.environ.get("no_proxy", ""))
        if host not in current.split(","):
            os.environ["NO_PROXY"] = ",".join(filter(None, [current, host]))


def _log_call(model: Any, params: Mapping[str, Any], **_: Any) -> None:
    # Parameter values may hold secrets (passwords, secret keys): log names only.
    log.debug("call %s(%s)", model.name, ", ".join(sorted(params)))


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
