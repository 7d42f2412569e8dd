"""Config keys that name what AWS cannot rename (exaprov/identity.py).

Found with the full example: changing `cluster.cluster_name` made `up` build a second EKS
cluster (roles, log group, node groups) beside the first, and `destroy` then left the first
running; changing `module_repo_backend.exadeploy_id` made `up` delete the backend's IAM user
and its access key (the running ExaDeploy's S3 credentials) before refusing at the bucket.
Now `up`, `plan` and `status` refuse such a change before any AWS call, and `destroy`
deletes what was built, whatever the config says; a changed `network.vpc_name` renames the
Name tags and keeps the DB subnet group it was made with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from exaprov.identity import NAMED_FROM, recorded
from exaprov.state import State
from tests.census import after_destroy, census, difference
from tests.conftest import REGION, CallLog, cli, write_config


def _set(key: str, value: str) -> None:
    data = yaml.safe_load(Path("exaprov.yaml").read_text())
    section, field = key.split(".")
    data[section][field] = value
    write_config(data)


@pytest.fixture
def built(aws: None, workdir: Path) -> dict[str, Any]:
    """The full example (two pools, the backend), up; the censuses before and after."""
    before = census()
    assert cli("init", "--example", "full", "--force").exit_code == 0
    assert cli("up", "--yes").exit_code == 0
    return {"before": before, "after": census()}


@pytest.mark.parametrize(("key", "old", "new"), [
    ("cluster.cluster_name", "exafunction-cluster-example", "exafunction-cluster-renamed"),
    ("module_repo_backend.exadeploy_id", "exafunction-mrbe-example", "exafunction-mrbe-other"),
])
def test_a_changed_name_key_is_refused_before_any_call(built: dict[str, Any], calls: CallLog,
                                                       key: str, old: str, new: str) -> None:
    _set(key, new)
    for command in (("plan",), ("status", "-o", "json"), ("up", "--yes")):
        calls.clear()
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert f"{key}: the deployment was built as {old!r}" in result.output
        assert f"the config says {new!r}" in result.output
        assert "exaprov destroy" in result.output  # the way out
        assert calls.calls == [], (command, calls.calls)
    assert census() == built["after"], difference(built["after"], census())

    # Putting the old value back is all it takes: converged, nothing to change.
    _set(key, old)
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []


@pytest.mark.parametrize(("key", "new"), [
    ("cluster.cluster_name", "exafunction-cluster-renamed"),
    ("module_repo_backend.exadeploy_id", "exafunction-mrbe-other"),
])
def test_destroy_deletes_what_was_built_under_the_old_name(built: dict[str, Any], key: str,
                                                           new: str) -> None:
    _set(key, new)
    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    kept = after_destroy(built["before"])  # the final snapshot, named from the backend as built
    assert census() == kept, difference(kept, census())


def test_a_renamed_vpc_keeps_its_db_subnet_group(built: dict[str, Any], calls: CallLog) -> None:
    """The VPC's name is Name tags (retagged in place) and the DB subnet group's name, which
    RDS cannot change: the group keeps it, and the RDS instance keeps its group."""
    _set("network.vpc_name", "exafunction-vpc-renamed")
    assert cli("up", "--yes").exit_code == 0
    assert not [c for c in calls.mutating() if c[0] == "rds"], calls.mutating()
    rds = boto3.client("rds", region_name=REGION)
    groups = [g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]]
    assert groups == ["exafunction-vpc-example"]
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:exaprov:deployment", "Values": ["example"]}])["Vpcs"][0]
    assert {"Key": "Name", "Value": "exafunction-vpc-renamed"} in vpc["Tags"]
    calls.clear()
    assert cli("up", "--yes").exit_code == 0
    assert calls.mutating() == []
    assert cli("destroy", "--yes", "--disable-deletion-protection").exit_code == 0
    kept = after_destroy(built["before"])
    assert census() == kept, difference(kept, census())


def test_each_named_record_gives_back_the_value_it_was_named_from(built: dict[str, Any]) -> None:
    """Every pattern matches what the steps really record (a renamed step or logical name
    would make the check blind, so each record is read on its own)."""
    state = State.parse(Path("state/example.json").read_text(), "state")
    wanted = {"cluster.cluster_name": "exafunction-cluster-example",
              "module_repo_backend.exadeploy_id": "exafunction-mrbe-example"}
    for key, records in NAMED_FROM.items():
        for address, field, _ in records:
            alone = State({**state.data, "resources": {address: state.resources[address]}})
            assert state.resources[address].get(field), (address, field)
            assert recorded(alone, key) == wanted[key], address
