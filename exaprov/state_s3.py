"""State kept in S3: the same guarantees as `LocalStateStore`, across machines.

`S3StateStore` implements the `StateStore` protocol on one object, `s3://bucket/key`:

- every write is encrypted (SSE-S3, AES256) and *conditional*: `IfMatch` on the ETag
  last read or written, `IfNoneMatch="*"` for the first write, so two writers cannot
  silently overwrite each other (the loser gets a StateError);
- the previous version stays recoverable: S3 keeps it when bucket versioning is
  Enabled, otherwise it is first copied to `<key>.backup`;
- the lock is a separate object, `<key>.lock`, created with `IfNoneMatch="*"` (only one
  creator can win) and deleted on release. A holder on this host whose pid no longer
  exists is reported as a stale lock; another machine's process cannot be probed. Either
  way `exaprov state unlock` (`force_unlock`) removes it: never automatically.

The caller builds the S3 client with the deployment's region, profile and endpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from exaprov import __version__
from exaprov.errors import ExaprovError, InputError, LockedError, StateError, error_code
from exaprov.state import (
    DamagedStateError,
    State,
    printable_info,
    process_gone,
    stamp,
    write_private,
)

SSE = "AES256"
CONTENT_TYPE = "application/json"

# What S3 answers when a conditional write loses: 412 for a failed If-Match/If-None-Match,
# 409 when a concurrent conditional write to the same key is in flight, and NoSuchKey when
# If-Match names an object someone deleted meanwhile.
_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); InputError naming the value for anything else."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise InputError(f"{url!r} is not an S3 URL (expected s3://bucket/key)")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise InputError(f"{url!r}: the S3 URL has no bucket (expected s3://bucket/key)")
    if not _BUCKET_RE.match(bucket) or ".." in bucket or _IP_RE.match(bucket):
        raise InputError(f"{url!r}: {bucket!r} is not a valid S3 bucket name (3-63 characters: "
                         "lowercase letters, digits, dots and hyphens, starting and ending "
                         "with a letter or digit)")
    if not key or key.endswith("/"):
        raise InputError(f"{url!r}: the S3 URL has no object key (expected s3://bucket/key, "
                         "e.g. s3://my-bucket/exaprov/example.json)")
    return bucket, key


def _supports(client: Any, operation: str, parameter: str) -> bool:
    """Whether the installed botocore knows this parameter of this S3 operation."""
    try:
        shape = client.meta.service_model.operation_model(operation).input_shape
    except Exception:
        return False
    return parameter in shape.members


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def _owner() -> str:
    try:
        return os.getlogin()
    except OSError:
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class _Conflict(Exception):
    """Another writer changed the state object since this store last saw it."""


class S3StateStore:
    """One S3 object: encrypted, conditional writes, previous version kept, lock object."""

    def __init__(self, url: str, s3_client: Any) -> None:
        self.bucket, self.key = parse_s3_url(url)
        self.location = url
        self.client = s3_client
        self.backup_key = self.key + ".backup"
        self.lock_key = self.key + ".lock"
        self.backup_location = f"s3://{self.bucket}/{self.backup_key}"
        self.lock_location = f"s3://{self.bucket}/{self.lock_key}"
        self.errored_path = Path(PurePosixPath(self.key).stem + ".errored.json")
        self._etag: str | None = None  # of the object last read or written; None: none existed
        self._lineage: str | None = None
        self._versioning: bool | None = None

    # What the installed botocore can send, checked on first use: the client may be lazy,
    # and building the store must not start AWS access.

    @functools.cached_property
    def _if_match(self) -> bool:
        return _supports(self.client, "PutObject", "IfMatch")

    @functools.cached_property
    def _if_none_match(self) -> bool:
        return _supports(self.client, "PutObject", "IfNoneMatch")

    @functools.cached_property
    def _delete_if_match(self) -> bool:
        return _supports(self.client, "DeleteObject", "IfMatch")

    # -- reading --------------------------------------------------------------------------

    def read(self) -> State | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            raw = response["Body"].read()
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                self._etag = None
                return None
            raise StateError(f"{self.location}: cannot read the state ({_describe(exc)})",
                             hint="check the bucket name, the region and your access to it") from None
        except BotoCoreError as exc:
            raise StateError(f"{self.location}: cannot read the state ({exc})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or not text.strip():
            what = "not UTF-8 text" if text is None else "the state object is empty (truncated?)"
            raise DamagedStateError(f"{self.location}: {what}{self._previous_version_note()}",
                                    hint=self._restore_hint())
        try:
            state = State.parse(text, self.location)
        except StateError as exc:
            exc.message += self._previous_version_note()
            exc.args = (exc.message,)
            exc.hint = exc.hint or self._restore_hint()
            raise
        self._etag, self._lineage = response["ETag"], state.lineage
        return state

    def _previous_version_note(self) -> str:
        with contextlib.suppress(ClientError, BotoCoreError):
            if self._versioning_enabled():
                return "; previous versions are in the bucket's version history"
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.backup_key)
        except (ClientError, BotoCoreError):
            return "; there is no backup"
        return f"; the previous version is in {self.backup_location}"

    def _restore_hint(self) -> str:
        return ("the object was left untouched; restore the previous version, or rebuild "
                "the state from tags with `exaprov state recover`")

    def _versioning_enabled(self) -> bool:
        """Checked once per store: is bucket versioning Enabled (S3 keeps old versions)?"""
        if self._versioning is None:
            try:
                status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except ClientError as exc:
                if error_code(exc) not in ("AccessDenied", "403"):
                    raise
                status = None  # cannot tell: keep a backup object to be safe
            self._versioning = status == "Enabled"
        return self._versioning

    # -- writing --------------------------------------------------------------------------

    def keep_aside(self, why: str) -> str:
        """Copy the state object, as it is, to `<key>.<why>-<timestamp>` before it is replaced,
        and make the next write replace exactly that object (even a damaged one)."""
        try:
            etag = self.client.head_object(Bucket=self.bucket, Key=self.key)["ETag"]
            aside = f"{self.key}.{why}-{stamp()}"
            self.client.copy_object(Bucket=self.bucket, Key=aside,
                                    CopySource={"Bucket": self.bucket, "Key": self.key},
                                    CopySourceIfMatch=etag, ServerSideEncryption=SSE,
                                    MetadataDirective="COPY")
        except (ClientError, BotoCoreError) as exc:
            raise ExaprovError(f"{self.location}: could not keep a copy of the state before "
                               f"replacing it ({_describe(exc)}); nothing was written") from None
        self._etag = etag
        return f"s3://{self.bucket}/{aside}"

    def write(self, state: State) -> None:
        if self._lineage is not None and state.lineage != self._lineage:
            raise StateError(f"{self.location}: refusing to write state of lineage "
                             f"{state.lineage} over lineage {self._lineage} (an unrelated "
                             "deployment)")
        state.data["serial"] += 1
        state.data["exaprov_version"] = __version__
        text = state.dumps()
        try:
            etag = self._put_state(text)
        except _Conflict:
            state.data["serial"] -= 1
            saved = self._write_errored(text)
            raise StateError(
                f"{self.location}: another writer changed the state since it was read "
                f"(conditional write refused); this run's state was not saved there{saved}",
                hint="another exaprov run may be working on this deployment; run the command "
                     "again to start from the current state") from None
        except (ClientError, BotoCoreError) as exc:
            state.data["serial"] -= 1
            saved = self._write_errored(text)
            raise ExaprovError(
                f"{self.location}: could not save state ({_describe(exc)}){saved} and "
                "exaprov stopped making changes",
                hint=f"fix access to the bucket, then `aws s3 cp --sse {SSE} {self.errored_path} "
                     f"{self.location}` and run the command again") from None
        self._etag, self._lineage = etag, state.lineage

    def _put_state(self, text: str) -> str:
        """Back up the current object (unless versioned), then replace it conditionally."""
        if self._etag is not None and not self._if_match:
            self._check_unchanged()
        elif self._etag is None and not self._if_none_match:
            self._check_absent()
        if self._etag is not None and not self._versioning_enabled():
            try:
                self.client.copy_object(
                    Bucket=self.bucket, Key=self.backup_key,
                    CopySource={"Bucket": self.bucket, "Key": self.key},
                    CopySourceIfMatch=self._etag, ServerSideEncryption=SSE,
                    ContentType=CONTENT_TYPE, MetadataDirective="REPLACE")
            except ClientError as exc:
                if error_code(exc) in _CONFLICT_CODES | _MISSING_CODES:
                    raise _Conflict from None
                raise
        put: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Body": text.encode(),
                               "ContentType": CONTENT_TYPE, "ServerSideEncryption": SSE}
        if self._etag is None and self._if_none_match:
            put["IfNoneMatch"] = "*"
        elif self._etag is not None and self._if_match:
            put["IfMatch"] = self._etag
        try:
            return self.client.put_object(**put)["ETag"]
        except ClientError as exc:
            code = error_code(exc)
            if code in _CONFLICT_CODES or ("IfMatch" in put and code in _MISSING_CODES):
                raise _Conflict from None
            raise

    def _check_unchanged(self) -> None:
        """Fallback when botocore lacks PutObject IfMatch: compare ETags just before the put."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                raise _Conflict from None
            raise
        if head["ETag"] != self._etag:
            raise _Conflict

    def _check_absent(self) -> None:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return
            raise
        raise _Conflict

    def _write_errored(self, text: str) -> str:
        try:
            write_private(self.errored_path, text)
        except OSError:
            return " (nor could it be saved locally)"
        return f"; it was saved to {self.errored_path.resolve()} instead"

    # -- locking --------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[dict[str, Any] | None]:
        """Hold the deployment's lock object. Yields None: a lock left by a dead process on
        another machine cannot be told from a live one, so staleness is never reported."""
        info = {"owner": _owner(), "host": socket.gethostname(), "pid": os.getpid(),
                "command": command, "since": _now(), "exaprov_version": __version__}
        put: dict[str, Any] = {"Bucket": self.bucket, "Key": self.lock_key,
                               "Body": json.dumps(info).encode(), "ContentType": CONTENT_TYPE,
                               "ServerSideEncryption": SSE}
        try:
            if self._if_none_match:
                put["IfNoneMatch"] = "*"
            elif self._read_lock() is not None:
                raise _Conflict
            etag = self.client.put_object(**put)["ETag"]
        except _Conflict:
            raise self._locked_error() from None
        except ClientError as exc:
            if error_code(exc) in _CONFLICT_CODES:
                raise self._locked_error() from None
            raise ExaprovError(f"{self.lock_location}: cannot take the lock ({_describe(exc)})",
                               hint="check your access to the bucket") from None
        except BotoCoreError as exc:
            raise ExaprovError(f"{self.lock_location}: cannot take the lock ({exc})") from None
        try:
            yield None
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._release(etag)
            raise
        else:
            try:
                self._release(etag)
            except (ClientError, BotoCoreError) as exc:
                raise ExaprovError(
                    f"{self.lock_location}: could not release the lock ({_describe(exc)})",
                    hint="the work is done and saved; remove the lock with `exaprov state unlock`"
                ) from None

    def _release(self, etag: str) -> None:
        """Delete our lock object; if it is no longer ours (force-unlocked and taken by another
        run), leave it."""
        delete: dict[str, Any] = {"Bucket": self.bucket, "Key": self.lock_key}
        if self._delete_if_match:
            delete["IfMatch"] = etag
        try:
            self.client.delete_object(**delete)
        except ClientError as exc:
            if error_code(exc) not in _CONFLICT_CODES | _MISSING_CODES:
                raise

    def _read_lock(self) -> dict[str, Any] | None:
        """The lock object's content; None if there is none, {} if it is unreadable."""
        try:
            raw = self.client.get_object(Bucket=self.bucket, Key=self.lock_key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return None
            raise
        try:
            info = json.loads(raw)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def _locked_error(self) -> LockedError:
        try:
            info = self._read_lock() or {}
        except (ClientError, BotoCoreError):
            info = {}
        info = printable_info(info) if isinstance(info, dict) else {}
        if info:
            by = f"{info.get('owner')}'s " if info.get("owner") else ""
            message = (f"{self.location} is locked by {by}pid {info.get('pid')} on "
                       f"{info.get('host')} since {info.get('since')} "
                       f"(running: {info.get('command')})")
        else:
            message = f"{self.location} is locked by another exaprov process"
        if info and process_gone(info):
            return LockedError(message + f"; pid {info.get('pid')} no longer exists on this host, "
                               "so the lock is stale (that run died without releasing it)",
                               hint="check nobody else runs exaprov on this deployment, then "
                                    "clear it with `exaprov state unlock` and run the command again")
        return LockedError(message, hint="wait for it to finish; if that process is gone (a stale "
                                         "lock), remove the lock with `exaprov state unlock`")

    def lock_holder(self) -> dict[str, Any] | None:
        """What the lock object holds (across machines nobody can tell whether it still runs)."""
        try:
            return self._read_lock()
        except (ClientError, BotoCoreError) as exc:
            raise ExaprovError(f"{self.lock_location}: cannot read the lock ({_describe(exc)})") from None

    def force_unlock(self) -> dict[str, Any] | None:
        """Remove the lock object whoever holds it; returns what it held (None: no lock)."""
        try:
            info = self._read_lock()
            if info is None:
                return None
            self.client.delete_object(Bucket=self.bucket, Key=self.lock_key)
        except (ClientError, BotoCoreError) as exc:
            raise ExaprovError(f"{self.lock_location}: cannot remove the lock "
                               f"({_describe(exc)})") from None
        return info
