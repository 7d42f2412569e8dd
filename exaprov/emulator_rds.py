"""The emulator's RDS-managed master passwords, and the RDS settings moto does not keep.

What RDS does with `ManageMasterUserPassword` (RDS user guide, "Password management with
Amazon RDS and AWS Secrets Manager"; checked against a live secret, December 2026):
- it creates a secret `rds!db-<uuid>` holding `{"username": <master user>, "password": …}`,
  owned by the service (`OwningService: rds`) with rotation ON, every 7 days
  (`RotationRules.AutomaticallyAfterDays: 7`), and no Lambda: RDS rotates it itself;
- on each rotation RDS sets a new password on the database and stores it as the secret's
  new AWSCURRENT version (the old one becomes AWSPREVIOUS);
- `secretsmanager:RotateSecret` with `RotationRules` changes the schedule (RotateImmediately
  false: no rotation now), `secretsmanager:CancelRotateSecret` turns rotation off (the
  Secrets Manager console's "disable automatic rotation"; terraform-provider-aws 6.62's
  `rotation_enabled = false` calls it), and `ModifyDBInstance RotateMasterUserPassword`
  (ApplyImmediately) rotates at once whatever the schedule.

moto creates the secret with a fixed placeholder (user `admin`), no rotation at all, refuses
CancelRotateSecret on a secret without a Lambda, and keeps no password on the database.
Here the database has a real current password (`database_password`) that changes exactly
when the secret rotates, so a test can prove that what a consumer was handed still opens
the database.

Rotation is scheduled on the emulator's clock, `clock()`: wall time plus an offset that
tests move with `advance_clock(seconds)` (over HTTP: `POST /exaprov-emulator/clock` with
`{"advance_seconds": N}`), never by sleeping. Due rotations happen lazily, before any
Secrets Manager or RDS request is answered.

Also: moto forgets `EngineLifecycleSupport` given to CreateDBInstance (it keeps the value
ModifyDBInstance sets): kept here, with RDS's default `open-source-rds-extended-support`.
And a final snapshot taken by DeleteDBInstance carries the instance's tags when
CopyTagsToSnapshot is on, as in RDS.
"""

from __future__ import annotations

import functools
import json
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

MANAGED_ROTATION_DAYS = 7  # RDS's schedule for a new managed master secret
DAY = 86400
CLOCK_PATH = "/exaprov-emulator/clock"
PASSWORD_PATH = "/exaprov-emulator/rds/master-password"

_lock = threading.RLock()
_offset = 0.0


def clock() -> float:
    """The emulator's wall clock (epoch seconds), moved by `advance_clock`."""
    return time.time() + _offset


def advance_clock(seconds: float) -> None:
    """Move the clock forward (tests: days pass without waiting); due rotations follow."""
    global _offset
    if seconds < 0:
        raise ValueError("the clock only moves forward")
    with _lock:
        _offset += seconds


def reset_clock() -> None:
    global _offset
    with _lock:
        _offset = 0.0


def _new_password() -> str:
    # RDS's managed passwords: 32 characters, no `/ @ " '` or space.
    alphabet = string.ascii_letters + string.digits + "!#$%&()*+,-.:;<=>?[]^_{|}~"
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _is_rds_managed(secret: Any) -> bool:
    return getattr(secret, "owning_service", None) == "rds"


def _secret_of(database: Any) -> Any:
    holder = getattr(database, "master_user_secret", None)
    return holder.secret if holder is not None else None


# -- the rotation itself -----------------------------------------------------------------

def _rotate(database: Any, secret: Any, backend: Any) -> None:
    """What RDS's managed rotation does: a new password on the database and in the secret."""
    now = int(clock())
    secret.last_rotation_date = now  # first: the put below settles rotations again
    if secret.rotation_enabled and secret.auto_rotate_after_days:
        secret.next_rotation_date = now + secret.auto_rotate_after_days * DAY
    password = _new_password()
    database._exaprov_password = password
    value = json.dumps({"username": database.master_username, "password": password})
    backend.put_secret_value(secret.arn, value, None, None, ["AWSCURRENT"])


def _databases() -> Iterator[tuple[Any, Any]]:
    """(RDS backend, instance) for every instance with a managed secret, in every region."""
    from moto.rds.models import rds_backends

    for account in list(rds_backends.values()):
        for backend in list(account.values()):
            for database in list(backend.databases.values()):
                if _secret_of(database) is not None:
                    yield backend, database


def settle_rotations() -> None:
    """Carry out every scheduled rotation whose time has come on the emulator's clock."""
    with _lock:
        now = clock()
        for rds, database in _databases():
            secret = _secret_of(database)
            if secret.is_deleted() or not secret.rotation_enabled:
                continue
            due = secret.next_rotation_date
            if due is not None and due <= now:
                _rotate(database, secret, rds.secretsmanager)


def database_password(identifier: str, region: str | None = None) -> str | None:
    """The master password the database itself accepts now (None: no such managed instance)."""
    settle_rotations()
    for rds, database in _databases():
        if database.db_instance_identifier == identifier and region in (None, rds.region_name):
            return getattr(database, "_exaprov_password", None)
    return None


# -- patches -----------------------------------------------------------------------------

def _create_secret(original: Callable[..., Any]) -> Callable[..., Any]:
    def _create(self: Any, kms_key_id: str | None) -> Any:
        secret = original(self, kms_key_id)
        database = self.resource
        password = _new_password()
        database._exaprov_password = password
        value = json.dumps({"username": database.master_username, "password": password})
        for version in secret.versions.values():
            version["secret_string"] = value
        secret.secret_string = value
        # RDS turns managed rotation on, every 7 days, from the moment it makes the secret.
        secret.rotation_requested = True
        secret.rotation_enabled = True
        secret.auto_rotate_after_days = MANAGED_ROTATION_DAYS
        secret.next_rotation_date = int(clock()) + MANAGED_ROTATION_DAYS * DAY
        return secret

    return _create


def _rotate_master(self: Any) -> None:
    """ModifyDBInstance RotateMasterUserPassword: RDS rotates now, whatever the schedule."""
    self._status = "rotating"
    with _lock:
        _rotate(self.resource, self.secret, self.secretsmanager)


def _find_database(secret: Any) -> tuple[Any, Any] | None:
    for rds, database in _databases():
        if _secret_of(database) is secret:
            return rds, database
    return None


def _rotate_secret(original: Callable[..., Any]) -> Callable[..., Any]:
    def rotate_secret(self: Any, secret_id: str, client_request_token: str | None = None,
                      rotation_lambda_arn: str | None = None,
                      rotation_rules: dict[str, Any] | None = None,
                      rotate_immediately: bool = True) -> str:
        secret = self.secrets.get(secret_id) if self._is_valid_identifier(secret_id) else None
        if secret is None or not _is_rds_managed(secret) or secret.is_deleted():
            return original(self, secret_id, client_request_token, rotation_lambda_arn,
                            rotation_rules, rotate_immediately)
        from moto.secretsmanager.exceptions import InvalidParameterException

        days = (rotation_rules or {}).get("AutomaticallyAfterDays")
        if days is not None and not 1 <= int(days) <= 1000:
            raise InvalidParameterException("RotationRules.AutomaticallyAfterDays must be within 1-1000.")
        with _lock:
            secret.rotation_requested = True
            secret.rotation_enabled = True
            if days is not None:
                secret.auto_rotate_after_days = int(days)
            found = _find_database(secret)
            if rotate_immediately and found is not None:
                _rotate(found[1], secret, self)
            else:  # the schedule only: the next rotation is N days from now
                secret.next_rotation_date = int(clock()) + secret.auto_rotate_after_days * DAY
        return secret.to_short_dict()

    return rotate_secret


def _cancel_rotate_secret(original: Callable[..., Any]) -> Callable[..., Any]:
    def cancel_rotate_secret(self: Any, secret_id: str) -> str:
        secret = self.secrets.get(secret_id) if self._is_valid_identifier(secret_id) else None
        if secret is None or not _is_rds_managed(secret) or secret.is_deleted():
            return original(self, secret_id)
        with _lock:  # a managed secret has no Lambda, and AWS turns its rotation off all the same
            secret.rotation_requested = True
            secret.rotation_enabled = False
            secret.next_rotation_date = None
        return secret.to_short_dict()

    return cancel_rotate_secret


def _settled(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        settle_rotations()
        return method(self, *args, **kwargs)

    return wrapper


def _create_instance(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_db_instance(self: Any, db_kwargs: dict[str, Any]) -> Any:
        database = original(self, db_kwargs)
        database.engine_lifecycle_support = db_kwargs.get("engine_lifecycle_support") \
            or "open-source-rds-extended-support"  # RDS's default: enrolled
        return database

    return create_db_instance


def _delete_instance(original: Callable[..., Any]) -> Callable[..., Any]:
    def delete_db_instance(self: Any, *args: Any, **kwargs: Any) -> Any:
        ident = str(kwargs.get("db_instance_identifier") or (args[0] if args else ""))
        database = self.databases.get(ident)
        result = original(self, *args, **kwargs)
        snapshot_id = kwargs.get("final_db_snapshot_identifier")
        snapshot = self.database_snapshots.get(snapshot_id) if snapshot_id else None
        if snapshot is not None and database is not None and database.copy_tags_to_snapshot \
                and not snapshot.tags:
            snapshot.tags = [dict(t) for t in database.tags]
        return result

    return delete_db_instance


def install() -> None:
    """Patch moto's RDS and Secrets Manager backends; called by install_extensions()."""
    from moto.rds.models import DBInstance, MasterUserSecret, RDSBackend
    from moto.secretsmanager.models import SecretsManagerBackend

    if getattr(MasterUserSecret, "_exaprov_rotation", False):
        return
    MasterUserSecret._create_secret = _create_secret(MasterUserSecret._create_secret)
    MasterUserSecret.rotate_secret = _rotate_master
    MasterUserSecret._exaprov_rotation = True
    SecretsManagerBackend.rotate_secret = _rotate_secret(SecretsManagerBackend.rotate_secret)
    SecretsManagerBackend.cancel_rotate_secret = _cancel_rotate_secret(
        SecretsManagerBackend.cancel_rotate_secret)
    for name in ("get_secret_value", "describe_secret", "list_secrets", "rotate_secret",
                 "cancel_rotate_secret", "put_secret_value", "update_secret"):
        setattr(SecretsManagerBackend, name, _settled(getattr(SecretsManagerBackend, name)))
    # DBInstance.__init__ does not keep it; ModifyDBInstance sets it through update().
    DBInstance.engine_lifecycle_support = None
    RDSBackend.create_db_instance = _create_instance(RDSBackend.create_db_instance)
    RDSBackend.delete_db_instance = _delete_instance(RDSBackend.delete_db_instance)
    RDSBackend.describe_db_instances = _settled(RDSBackend.describe_db_instances)


def control(environ: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The emulator's test hooks over HTTP: (status, JSON body), or None if not one of ours.

    POST /exaprov-emulator/clock {"advance_seconds": N} moves the clock; GET answers it.
    GET /exaprov-emulator/rds/master-password?db=IDENT&region=R answers the password the
    database accepts now (a loopback-only sandbox's fake database: no real secret)."""
    from urllib.parse import parse_qs

    path = environ.get("PATH_INFO")
    if path == CLOCK_PATH:
        if environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                advance_clock(float(body.get("advance_seconds", 0)))
            except (ValueError, TypeError, AttributeError) as exc:
                return "400 Bad Request", {"error": f"advance_seconds: {exc}"}
            settle_rotations()
        return "200 OK", {"clock": clock(), "offset_seconds": _offset}
    if path == PASSWORD_PATH:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        ident = (query.get("db") or [""])[0]
        password = database_password(ident, (query.get("region") or [None])[0])
        if password is None:
            return "404 Not Found", {"error": f"no RDS instance {ident!r} with a managed password"}
        return "200 OK", {"db": ident, "password": password}
    return None
