"""S3StateStore against moto: encryption, previous versions, corruption, lineage, the lock
object, and conditional writes between two racing writers."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov import state_s3
from exaprov.errors import ExaprovError, InputError, LockedError, StateError
from exaprov.state import State
from exaprov.state_s3 import S3StateStore, parse_s3_url

REGION = "us-west-1"  # as tests/conftest.py sets AWS_DEFAULT_REGION
BUCKET = "exaprov-state"
KEY = "deployments/example.json"
URL = f"s3://{BUCKET}/{KEY}"


def _client() -> Any:
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def s3(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # where an errored copy would land
    client = _client()
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


def _versioned(client: Any) -> None:
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})


def _stored(client: Any, key: str = KEY) -> dict[str, Any]:
    return json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _keys(client: Any) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_round_trip_serial_and_encryption(s3: Any) -> None:
    store = S3StateStore(URL, _client())
    assert store.location == URL
    assert store.read() is None
    state = State.new("example", REGION)
    store.write(state)
    store.write(state)
    assert state.serial == 2

    again = S3StateStore(URL, _client()).read()
    assert again is not None
    assert again.data == state.data and again.serial == 2
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/json"


def test_previous_version_in_backup_without_versioning(s3: Any) -> None:
    store = S3StateStore(URL, _client())
    state = State.new("example", REGION)
    store.write(state)
    assert KEY + ".backup" not in _keys(s3)  # nothing to back up on the first write
    store.write(state)
    store.write(state)
    assert _stored(s3)["serial"] == 3
    assert _stored(s3, KEY + ".backup")["serial"] == 2
    assert s3.head_object(Bucket=BUCKET, Key=KEY + ".backup")["ServerSideEncryption"] == "AES256"


def test_previous_version_in_history_with_versioning(s3: Any) -> None:
    _versioned(s3)
    store = S3StateStore(URL, _client())
    state = State.new("example", REGION)
    store.write(state)
    store.write(state)
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=KEY)["Versions"]
    assert len([v for v in versions if v["Key"] == KEY]) >= 2
    assert KEY + ".backup" not in _keys(s3)  # S3 keeps it; no backup object needed


def test_corrupt_object_names_backup_and_is_untouched(s3: Any) -> None:
    store = S3StateStore(URL, _client())
    state = State.new("example", REGION)
    store.write(state)
    store.write(state)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"{not json")

    with pytest.raises(StateError) as err:
        S3StateStore(URL, _client()).read()
    assert URL in err.value.message
    assert f"s3://{BUCKET}/{KEY}.backup" in err.value.message
    assert "untouched" in (err.value.hint or "")
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == b"{not json"


def test_corrupt_object_with_versioning_points_to_history(s3: Any) -> None:
    _versioned(s3)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"")
    with pytest.raises(StateError, match="version history"):
        S3StateStore(URL, _client()).read()


def test_lineage_mismatch_refused(s3: Any) -> None:
    store = S3StateStore(URL, _client())
    store.write(State.new("example", REGION))
    assert store.read() is not None
    stranger = State.new("example", REGION)
    with pytest.raises(StateError, match="lineage"):
        store.write(stranger)
    assert stranger.serial == 0
    assert _stored(s3)["serial"] == 1


def test_second_locker_refused_at_once_and_writes_nothing(s3: Any) -> None:
    first, second = S3StateStore(URL, _client()), S3StateStore(URL, _client())
    with first.lock("exaprov up") as stale:
        assert stale is None
        held = s3.get_object(Bucket=BUCKET, Key=KEY + ".lock")
        held_body = held["Body"].read()
        assert held["ServerSideEncryption"] == "AES256"
        with pytest.raises(LockedError) as err, second.lock("exaprov down"):
            pytest.fail("the second store must not get the lock")
        message = err.value.message
        assert str(os.getpid()) in message and socket.gethostname() in message
        assert "exaprov up" in message
        assert "exaprov state unlock" in (err.value.hint or "")
        # The holder's lock object is unchanged and nothing else was written.
        assert s3.get_object(Bucket=BUCKET, Key=KEY + ".lock")["Body"].read() == held_body
        assert _keys(s3) == [KEY + ".lock"]
    assert _keys(s3) == []
    with second.lock("exaprov down"):
        assert json.loads(s3.get_object(Bucket=BUCKET, Key=KEY + ".lock")["Body"].read())[
            "command"] == "exaprov down"
    assert _keys(s3) == []


def test_lock_released_on_keyboard_interrupt(s3: Any) -> None:
    store = S3StateStore(URL, _client())
    with pytest.raises(KeyboardInterrupt), store.lock("exaprov up"):
        raise KeyboardInterrupt
    assert _keys(s3) == []
    with store.lock("exaprov up"):
        pass


def test_force_unlock_clears_stale_lock(s3: Any) -> None:
    stale = {"owner": "ghost", "host": "gone-host", "pid": 4242, "command": "exaprov up",
             "since": "2024-01-01T00:00:00+00:00"}
    s3.put_object(Bucket=BUCKET, Key=KEY + ".lock", Body=json.dumps(stale).encode())
    store = S3StateStore(URL, _client())
    with pytest.raises(LockedError, match="4242 on gone-host"):
        with store.lock("exaprov up"):
            pass
    assert store.force_unlock() == stale
    assert store.force_unlock() is None
    with store.lock("exaprov up"):
        pass


@pytest.mark.parametrize("versioning", [False, True], ids=["backup", "versioned"])
@pytest.mark.parametrize("if_match", [True, False], ids=["if-match", "head-fallback"])
def test_racing_writers_second_refused(s3: Any, monkeypatch: pytest.MonkeyPatch,
                                       versioning: bool, if_match: bool) -> None:
    if versioning:
        _versioned(s3)
    if not if_match:  # as with a botocore that predates PutObject IfMatch
        real = state_s3._supports
        monkeypatch.setattr(state_s3, "_supports", lambda client, op, param:
                            False if param == "IfMatch" else real(client, op, param))
    S3StateStore(URL, _client()).write(State.new("example", REGION))

    first, second = S3StateStore(URL, _client()), S3StateStore(URL, _client())
    assert second._if_match is if_match
    mine, theirs = first.read(), second.read()
    assert mine is not None and theirs is not None and mine.serial == theirs.serial == 1
    mine.data["outputs"]["who"] = {"writer": "first"}
    theirs.data["outputs"]["who"] = {"writer": "second"}
    first.write(mine)
    with pytest.raises(StateError, match="another writer changed the state") as err:
        second.write(theirs)
    assert theirs.serial == 1
    stored = _stored(s3)
    assert stored["serial"] == 2 and stored["outputs"]["who"] == {"writer": "first"}
    if not versioning and not if_match:
        # The ETag check refused before the backup copy. (With IfMatch, S3 refuses the copy
        # through CopySourceIfMatch; moto 5.2 does not enforce that condition.)
        assert _stored(s3, KEY + ".backup")["serial"] == 1
    # The loser's state is not lost: it was saved locally, 0600, and named.
    errored = Path("example.errored.json")
    assert str(errored.resolve()) in err.value.message
    assert json.loads(errored.read_text())["outputs"]["who"] == {"writer": "second"}
    assert errored.stat().st_mode & 0o777 == 0o600


def test_racing_first_writes(s3: Any) -> None:
    first, second = S3StateStore(URL, _client()), S3StateStore(URL, _client())
    assert first.read() is None and second.read() is None
    first.write(State.new("example", REGION))
    with pytest.raises(StateError, match="another writer"):
        second.write(State.new("example", REGION))
    assert _stored(s3)["lineage"] == S3StateStore(URL, _client()).read().lineage  # type: ignore[union-attr]


def test_other_write_failure_saves_errored_copy(aws: None, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = S3StateStore("s3://no-such-bucket-here/state.json", _client())
    with pytest.raises(ExaprovError) as err:
        store.write(State.new("example", REGION))
    assert not isinstance(err.value, StateError)
    assert "NoSuchBucket" in err.value.message and "state.errored.json" in err.value.message
    assert (tmp_path / "state.errored.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("url", [
    "bucket/key.json", "https://bucket/key.json", "s3://", "s3:///key.json", "s3://bucket",
    "s3://bucket/", "s3://bucket/folder/", "s3://Bad_Bucket/key.json", "s3://ab/key.json",
    "s3://a..b/key.json", "s3://192.168.1.1/key.json", "s3://-bucket/key.json",
])
def test_parse_s3_url_errors(url: str) -> None:
    with pytest.raises(InputError) as err:
        parse_s3_url(url)
    assert repr(url) in err.value.message


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://my-bucket.x/a/b/state.json") == ("my-bucket.x", "a/b/state.json")


def test_building_the_store_does_not_touch_the_client() -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"client.{name} used while building the store")

    assert S3StateStore(URL, Untouchable()).location == URL
