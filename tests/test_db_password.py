"""The database's master password never changes under its consumer, and the RDS settings a
2026 database needs (gp3, storage autoscaling, backups, DeletionProtection, no Extended
Support), each seen drifting by `status` and put back by `up` in place.

The emulator models RDS's managed rotation (exaprov/emulator_rds.py): a new managed secret
rotates every 7 days on the emulator's clock, which these tests move instead of waiting,
and the database's own password changes with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov import emulator_rds
from exaprov.steps.database import DATABASE, DATABASE_SG
from exaprov.steps.network import NETWORK
from exaprov.steps.security_groups import SECURITY_GROUPS
from tests.conftest import REGION, CallLog, cli, write_config
from tests.harness import Stack

IDENT = "exafunction-mrbe-example-rds"
STEPS = [NETWORK, SECURITY_GROUPS, DATABASE_SG, DATABASE]
DAY = 86400


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    emulator_rds.reset_clock()
    yield
    emulator_rds.reset_clock()


def config(**backend: Any) -> dict[str, Any]:
    return {"name": "example", "module_repo_backend": backend}


def build(tmp_path: Path, **backend: Any) -> Stack:
    """The database's steps, up; the config file `exaprov` reads says the same."""
    write_config(config(**backend))
    stack = Stack(tmp_path, STEPS, config(**backend))
    stack.up()
    return stack


def revealed(stack: Stack) -> str:
    result = cli("outputs", "--reveal", "-o", "json", "--state", str(stack.store.path))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["exafunction_module_repo_backend"]["rds_password"]


def secret_of(rds: Any) -> dict[str, Any]:
    arn = rds.describe_db_instances(DBInstanceIdentifier=IDENT)["DBInstances"][0][
        "MasterUserSecret"]["SecretArn"]
    return boto3.client("secretsmanager", region_name=REGION).describe_secret(SecretId=arn)


@pytest.fixture
def rds(aws: None) -> Any:
    return boto3.client("rds", region_name=REGION)


def test_the_password_handed_over_still_opens_the_database_eight_days_later(
        workdir: Path, tmp_path: Path, rds: Any) -> None:
    stack = build(tmp_path)
    handed_over = revealed(stack)
    assert handed_over == emulator_rds.database_password(IDENT)
    assert secret_of(rds)["RotationEnabled"] is False  # RDS turned it on; exaprov turned it off

    emulator_rds.advance_clock(8 * DAY)  # past RDS's 7-day managed rotation
    assert revealed(stack) == emulator_rds.database_password(IDENT) == handed_over


def test_with_rotation_on_rds_changes_the_password_after_seven_days(
        workdir: Path, tmp_path: Path, rds: Any) -> None:
    """What the default prevents, and proof that the clock really rotates."""
    stack = build(tmp_path, db_password_rotation_days=7)
    handed_over = revealed(stack)
    assert secret_of(rds)["RotationRules"]["AutomaticallyAfterDays"] == 7

    emulator_rds.advance_clock(8 * DAY)
    now = emulator_rds.database_password(IDENT)
    assert now != handed_over  # the consumer's copy no longer opens the database
    assert revealed(stack) == now  # what --reveal reads is the database's current password


def test_status_shows_the_schedule_and_rotation_turned_on_out_of_band_is_turned_off(
        workdir: Path, tmp_path: Path, rds: Any, calls: CallLog) -> None:
    stack = build(tmp_path)
    row = next(r for r in stack.plan().observed if r.address == "database.master-password")
    assert row.live == "never rotates (automatic rotation off)" and row.drift == []

    arn = secret_of(rds)["ARN"]
    boto3.client("secretsmanager", region_name=REGION).rotate_secret(
        SecretId=arn, RotationRules={"AutomaticallyAfterDays": 7}, RotateImmediately=False)
    calls.clear()
    row = next(r for r in stack.plan().observed if r.address == "database.master-password")
    assert row.live.startswith("rotates every 7 days; next ")
    assert row.drift == ["rotates every 7 days → never (automatic rotation off)"]
    assert calls.mutating() == []

    stack.up()
    assert calls.mutating() == [("secretsmanager", "CancelRotateSecret")]
    assert secret_of(rds)["RotationEnabled"] is False
    calls.clear()
    assert stack.up().changes == [] and calls.mutating() == []


def test_a_configured_schedule_is_set_without_rotating_now(
        workdir: Path, tmp_path: Path, rds: Any, calls: CallLog) -> None:
    stack = build(tmp_path)
    password = emulator_rds.database_password(IDENT)
    monthly = Stack(tmp_path, STEPS, config(db_password_rotation_days=30))
    calls.clear()
    changes = monthly.up().changes
    assert [(c.address, c.detail) for c in changes] == [
        ("database.master-password", "never rotates (automatic rotation off) → rotates every 30 days")]
    assert calls.mutating() == [("secretsmanager", "RotateSecret")]
    secret = secret_of(rds)
    assert (secret["RotationEnabled"], secret["RotationRules"]["AutomaticallyAfterDays"]) == (True, 30)
    assert emulator_rds.database_password(IDENT) == password  # scheduled, not rotated
    emulator_rds.advance_clock(8 * DAY)
    assert emulator_rds.database_password(IDENT) == password
    assert stack is not None


def test_rotate_db_password_rotates_now_and_says_what_to_reapply(
        workdir: Path, tmp_path: Path, rds: Any) -> None:
    stack = build(tmp_path)
    old = revealed(stack)
    state = ("--state", str(stack.store.path))

    refused = cli("rotate-db-password", *state)  # no terminal to confirm on
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert emulator_rds.database_password(IDENT) == old

    result = cli("rotate-db-password", "--yes", *state)
    assert result.exit_code == 0, result.output
    new = emulator_rds.database_password(IDENT)
    assert new != old and revealed(stack) == new
    for what in ("-o tfstate", "rds_password", "rds-password", "restart the module repository"):
        assert what in result.output
    assert secret_of(rds)["RotationEnabled"] is False  # on demand only: no schedule came back


def test_rotate_db_password_without_a_database_is_an_input_error(workdir: Path, aws: None) -> None:
    result = cli("rotate-db-password", "--yes")
    assert result.exit_code == 2 and "run `exaprov up` first" in result.output


# -- the RDS settings ---------------------------------------------------------------------

SETTINGS = [  # (ModifyDBInstance out of band, the DescribeDBInstances key, what status says)
    ({"StorageType": "gp2"}, "StorageType", "gp3", "storage type gp2 → gp3"),
    ({"MaxAllocatedStorage": 200}, "MaxAllocatedStorage", 100,
     "storage autoscaling ceiling 200 → 100 GiB"),
    ({"BackupRetentionPeriod": 1}, "BackupRetentionPeriod", 7, "backup retention 1 → 7 days"),
    ({"DeletionProtection": False}, "DeletionProtection", True, "deletion protection off → on"),
    ({"CopyTagsToSnapshot": False}, "CopyTagsToSnapshot", True, "copy tags to snapshots off → on"),
    ({"AutoMinorVersionUpgrade": False}, "AutoMinorVersionUpgrade", True,
     "minor version auto-upgrade off → on"),
    ({"EngineLifecycleSupport": "open-source-rds-extended-support"}, "EngineLifecycleSupport",
     "open-source-rds-extended-support-disabled",
     "engine lifecycle support open-source-rds-extended-support → "
     "open-source-rds-extended-support-disabled"),
]


@pytest.mark.parametrize(("change", "key", "wanted", "drift"), SETTINGS,
                         ids=[s[1] for s in SETTINGS])
def test_each_setting_drifting_shows_in_status_and_up_puts_it_back_in_place(
        workdir: Path, tmp_path: Path, rds: Any, calls: CallLog, change: dict[str, Any], key: str,
        wanted: Any, drift: str) -> None:
    stack = build(tmp_path)
    assert rds.describe_db_instances()["DBInstances"][0][key] == wanted
    rds.modify_db_instance(DBInstanceIdentifier=IDENT, ApplyImmediately=True, **change)

    status = cli("status", "-o", "json", "--state", str(stack.store.path))
    assert status.exit_code == 0, status.output
    row = next(r for r in json.loads(status.stdout)["resources"] if r["address"] == "database.instance")
    assert row["drift"] == [drift]

    calls.clear()
    stack.up()
    assert calls.mutating() == [("rds", "ModifyDBInstance")]
    assert rds.describe_db_instances()["DBInstances"][0][key] == wanted
    calls.clear()
    assert stack.up().changes == [] and calls.mutating() == []


def test_changed_settings_are_applied_in_one_modify_and_autoscaling_can_be_turned_off(
        workdir: Path, tmp_path: Path, rds: Any, calls: CallLog) -> None:
    build(tmp_path)
    changed = Stack(tmp_path, STEPS, config(
        db_storage_type="gp2", db_max_allocated_storage=0, db_backup_retention_days=14,
        db_deletion_protection=False, db_extended_support=True))
    calls.clear()
    changed.up()
    assert calls.mutating() == [("rds", "ModifyDBInstance")]
    db = rds.describe_db_instances()["DBInstances"][0]
    assert (db["StorageType"], db.get("MaxAllocatedStorage"), db["BackupRetentionPeriod"],
            db["DeletionProtection"], db["EngineLifecycleSupport"]) \
        == ("gp2", None, 14, False, "open-source-rds-extended-support")
    calls.clear()
    assert changed.up().changes == [] and calls.mutating() == []


def test_storage_grown_by_autoscaling_is_not_drift(
        workdir: Path, tmp_path: Path, rds: Any, calls: CallLog) -> None:
    stack = build(tmp_path)
    rds.modify_db_instance(DBInstanceIdentifier=IDENT, AllocatedStorage=40, ApplyImmediately=True)
    calls.clear()
    assert stack.up().changes == [] and calls.mutating() == []


def test_the_emulator_s_http_hooks_move_the_clock_and_answer_the_password(
        workdir: Path, tmp_path: Path, aws: None) -> None:
    """What an end-to-end test against the emulator process uses (no sleeping there either)."""
    import io

    from exaprov.emulator import _RequestLatency

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise AssertionError("the hooks never reach moto")

    def call(method: str, path: str, query: str = "", body: bytes = b"") -> tuple[str, Any]:
        status: list[str] = []
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
        answer = _RequestLatency(app)(environ, lambda s, headers: status.append(s))
        return status[0], json.loads(b"".join(answer))

    build(tmp_path, db_password_rotation_days=7)
    status, found = call("GET", emulator_rds.PASSWORD_PATH, f"db={IDENT}&region={REGION}")
    assert status.startswith("200") and found["password"] == emulator_rds.database_password(IDENT)
    first = found["password"]
    status, clock = call("POST", emulator_rds.CLOCK_PATH, body=b'{"advance_seconds": 691200}')
    assert status.startswith("200") and clock["offset_seconds"] == 8 * DAY
    assert call("GET", emulator_rds.PASSWORD_PATH, f"db={IDENT}")[1]["password"] != first
    assert call("GET", emulator_rds.PASSWORD_PATH, "db=nope")[0].startswith("404")
    assert call("POST", emulator_rds.CLOCK_PATH, body=b'{"advance_seconds": -1}')[0].startswith("400")
