"""Throttling and 5xx: botocore's standard retry mode rides them out with
bounded backoff scaled by EXAPROV_TIME_SCALE, and `-v` shows each retry on one line.

Real AWS behaviour stood for: every API throttles a caller that goes too fast (EC2
`RequestLimitExceeded` 503, IAM/RDS/STS `Throttling` 400, EKS `TooManyRequestsException` 429,
KMS/Logs/Secrets Manager `ThrottlingException`, S3 `SlowDown` 503), answers 500/503 now
and then, and sometimes drops a connection before answering.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.endpoint
import pytest
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff

from exaprov.aws import MAX_ATTEMPTS, Aws
from tests.conftest import REGION, cli, write_config
from tests.faults import Faults, faults_fixture, inventory, recorded  # noqa: F401

STATE = "state/example.json"
# A smaller stack for the tests about one refused operation: no backend, one runner pool.
SMALL = {"name": "example", "module_repo_backend": None,
         "cluster": {"runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge",
                                       "min_size": 0, "max_size": 1}]}}


def test_full_stack_up_and_destroy_through_a_quarter_of_calls_refused(
        workdir: Path, aws: None, faults: Faults) -> None:
    """25% of exaprov's attempts, seeded, get throttling, a 500/503 or a dropped connection:
    `up` and `destroy` of the full example config both succeed and leave AWS exactly as the state
    says (everything after `up`, nothing after `destroy`)."""
    assert cli("init", "--example", "full", "--force").exit_code == 0
    faults.refuse_share(0.25, seed=6)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    # Calls run in threads, so which attempts are refused varies from run to run; the
    # bounds below sit over 4 standard deviations from what a 25% share gives.
    up_refusals = faults.count()
    assert up_refusals >= 20, faults.codes()
    assert up_refusals / faults.attempts == pytest.approx(0.25, abs=0.13)
    held = inventory()
    assert held == recorded(STATE)
    assert len(held["ec2:subnet"]) == 9 and len(held["eks:nodegroup"]) == 6
    assert {"rds:db-instance", "s3:bucket", "secretsmanager:secret", "kms:key"} <= set(held)

    result = cli("destroy", "--yes", "--disable-deletion-protection")
    assert result.exit_code == 0, result.output
    assert faults.count() - up_refusals >= 25, faults.codes()
    assert inventory() == {}
    assert json.loads(Path(STATE).read_text())["resources"] == {}
    codes = set(faults.codes())
    # Every family of refusal was met and ridden out: several services' throttling, 5xx and
    # dropped connections.
    assert {"RequestLimitExceeded", "TooManyRequestsException", "ConnectionClosed"} <= codes
    assert len(codes & {"RequestLimitExceeded", "TooManyRequestsException", "Throttling",
                        "ThrottlingException", "SlowDown"}) >= 3, codes
    assert codes & {"InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable"}


def test_each_retry_is_one_line_with_verbose(workdir: Path, aws: None, faults: Faults) -> None:
    """With `-v` each retry names the operation, the error and the attempt; without it,
    retries are silent."""
    write_config(SMALL)
    faults.refuse("CreateVpc", "RequestLimitExceeded", times=2, status=503)
    result = cli("up", "--yes", "-v")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "retrying" in line]
    assert len(lines) == 2, result.output
    assert "ec2 CreateVpc: RequestLimitExceeded, retrying (attempt 2 of 11)" in lines[0]
    assert "(attempt 3 of 11)" in lines[1]
    assert "Retry needed" not in result.output  # botocore's own debug lines stay off

    faults.refuse("DescribeVpcs", "RequestLimitExceeded", times=1, status=503)
    quiet = cli("up", "--yes")
    assert quiet.exit_code == 0 and faults.count("RequestLimitExceeded") == 3
    assert "retrying" not in quiet.output


def test_retries_are_bounded_and_the_next_up_completes(
        workdir: Path, aws: None, faults: Faults) -> None:
    """Throttling that never stops: after 11 attempts the step fails naming the step, the
    operation and the code; the state holds only the create's intent; the next `up`, with
    AWS answering again, creates the VPC once and finishes."""
    write_config(SMALL)
    faults.refuse("CreateVpc", "RequestLimitExceeded", status=503)
    result = cli("up", "--yes", "-v")
    assert result.exit_code == 1
    assert faults.count("RequestLimitExceeded") == MAX_ATTEMPTS + 1
    assert "network: CreateVpc failed (RequestLimitExceeded)" in result.output
    assert "ec2 CreateVpc: RequestLimitExceeded on all 11 attempts, giving up" in result.output
    assert "Traceback" not in result.output
    vpc = json.loads(Path(STATE).read_text())["resources"]["network.vpc"]
    assert vpc["status"] == "intent" and "id" not in vpc
    assert "ec2:vpc" not in inventory()

    faults.clear()
    assert cli("up", "--yes").exit_code == 0
    held = inventory()
    assert held == recorded(STATE) and len(held["ec2:vpc"]) == 1


@pytest.mark.parametrize("scale", ["0.001", "0.5"])
def test_botocore_backoff_is_multiplied_by_the_time_scale(
        aws: None, faults: Faults, monkeypatch: pytest.MonkeyPatch, scale: str) -> None:
    """The sleeps botocore takes between attempts are its own backoff times the scale."""
    monkeypatch.setenv("EXAPROV_TIME_SCALE", scale)
    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=slept.append))
    # botocore's backoff is random (full jitter up to 20 s): pin it to see the scaling.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 8.0)
    faults.refuse("DescribeVpcs", "RequestLimitExceeded", status=503)
    with pytest.raises(ClientError) as raised:
        Aws(REGION).ec2.describe_vpcs()
    assert raised.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert slept == [8.0 * float(scale)] * MAX_ATTEMPTS


def test_unpinned_backoff_stays_under_the_scaled_cap(
        aws: None, faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pinning: every sleep is under botocore's 20 s cap times the scale (0.001)."""
    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=slept.append))
    faults.refuse("ListRoles", "Throttling", times=6)
    iam: Any = Aws(REGION).client("iam")
    assert iam.list_roles()["ResponseMetadata"]["RetryAttempts"] == 6
    assert len(slept) == 6 and all(0 <= s <= 20 * 0.001 for s in slept)


def test_a_bad_time_scale_is_refused_before_any_call(
        workdir: Path, aws: None, calls: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "fast")
    result = cli("up", "--yes")
    assert result.exit_code == 2
    assert "EXAPROV_TIME_SCALE: must be a number above 0 (got 'fast')" in result.output
    assert calls.calls == []
