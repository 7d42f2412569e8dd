"""`exaprov outputs -o tfstate` read by Terraform itself: a configuration written against the
Terraform modules reads every key of the four root outputs through `terraform_remote_state`.

The fixture configuration has no provider to download: `terraform_remote_state` (backend
"local") is built into Terraform. It runs offline: TF_IN_AUTOMATION, CHECKPOINT_DISABLE (no
version check), an empty CLI config and a private TF_DATA_DIR. Without a `terraform` binary
on PATH the test is skipped, saying so; with EXAPROV_TERRAFORM_REPORT set (.ci/run sets it)
it writes there whether it ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest

from exaprov import outputs as out
from tests.conftest import REGION, cli

# Every key a configuration written against the Terraform modules may read, beside exaprov's.
NETWORK_MODULE_KEYS = (
    "vpc_id", "vpc_name", "vpc_arn", "vpc_cidr_block", "azs", "private_subnets", "public_subnets",
    "database_subnets", "private_subnet_arns", "public_subnet_arns", "database_subnet_arns",
    "private_subnets_cidr_blocks", "public_subnets_cidr_blocks", "database_subnets_cidr_blocks",
    "private_route_table_ids", "public_route_table_ids", "database_route_table_ids",
    "database_subnet_group", "database_subnet_group_name", "igw_id", "natgw_ids", "nat_public_ips")
PEERING_MODULE_KEYS = ("peering_connection_id", "egress_route_ids", "ingress_route_ids",
                       "ingress_security_group_rule_id")


def report(text: str) -> None:
    path = os.environ.get("EXAPROV_TERRAFORM_REPORT")
    if path:
        Path(path).write_text(text + "\n")


@pytest.fixture
def deployed(workdir: Path, aws: None) -> dict[str, dict[str, Any]]:
    """The whole stack with one peered client VPC; its outputs as `outputs --reveal` gives."""
    ec2 = boto3.client("ec2", region_name=REGION)
    client = ec2.create_vpc(CidrBlock="10.10.0.0/16")["Vpc"]["VpcId"]
    assert cli("up", "--yes").exit_code == 0
    assert cli("peer", "--vpc-id", client).exit_code == 0
    result = cli("outputs", "--reveal", "-o", "json")
    assert result.exit_code == 0, result.output
    groups: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return groups


def test_the_outputs_carry_the_modules_keys(deployed: dict[str, dict[str, Any]]) -> None:
    network, peering = deployed["exafunction_network"], deployed["exafunction_peering"]
    for key in NETWORK_MODULE_KEYS:
        assert key in network, key
    for key in PEERING_MODULE_KEYS:
        assert key in peering, key
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.describe_vpcs(VpcIds=[network["vpc_id"]])["Vpcs"][0]
    assert network["vpc_arn"] == f"arn:aws:ec2:{REGION}:{vpc['OwnerId']}:vpc/{vpc['VpcId']}"
    subnets = {s["SubnetId"]: s for s in ec2.describe_subnets(
        SubnetIds=network["private_subnets"] + network["database_subnets"])["Subnets"]}
    assert [subnets[i]["CidrBlock"] for i in network["private_subnets"]] \
        == network["private_subnets_cidr_blocks"]
    assert [subnets[i]["CidrBlock"] for i in network["database_subnets"]] \
        == network["database_subnets_cidr_blocks"]
    assert network["private_subnet_arns"][0].endswith(f":subnet/{network['private_subnets'][0]}")
    nat, = ec2.describe_nat_gateways(NatGatewayIds=network["natgw_ids"])["NatGateways"]
    assert network["nat_public_ips"] == [nat["NatGatewayAddresses"][0]["PublicIp"]]
    assert network["igw_id"] == ec2.describe_internet_gateways(Filters=[
        {"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}])["InternetGateways"][0][
        "InternetGatewayId"]
    assert network["azs"] == sorted({s["AvailabilityZone"] for s in subnets.values()})
    assert network["database_subnet_group"] == network["database_subnet_group_name"]
    (pcx,) = peering["peerings"].values()
    assert peering["peering_connection_id"] == pcx["pcx_id"]
    # The provider's route ID: r-<table><CRC-32 of the destination>.
    assert peering["egress_route_ids"] == [
        out.route_id(t, c) for t in network["private_route_table_ids"] for c in pcx["cidrs"]]
    assert out.route_id("rtb-1", "0.0.0.0/0") == "r-rtb-11080289494"


def test_terraform_reads_every_key_through_terraform_remote_state(
        deployed: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        report("skipped: no terraform binary on PATH")
        pytest.skip("no terraform binary on PATH: the outputs-only tfstate was not read by "
                    "Terraform (install terraform to run this test)")
    state = tmp_path / "cloud.tfstate"
    result = cli("outputs", "-o", "tfstate", "--file", str(state))
    assert result.exit_code == 0, result.output
    expected = out.terraform_outputs(deployed)

    fixture = tmp_path / "consumer"
    fixture.mkdir()
    blocks = [f'data "terraform_remote_state" "cloud" {{\n  backend = "local"\n'
              f'  config = {{ path = {json.dumps(str(state))} }}\n}}\n']
    for group, values in expected.items():
        for key in values:
            # Wrapped in an object: Terraform keeps no root output whose value is null.
            blocks.append(f'output "{group}__{key}" {{\n'
                          f'  value = {{ v = data.terraform_remote_state.cloud.outputs.{group}.{key} }}\n'
                          + ('  sensitive = true\n' if group == "exafunction_module_repo_backend" else "")
                          + "}\n")
    (fixture / "main.tf").write_text("\n".join(blocks))
    (tmp_path / "cli.tfrc").write_text("")
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
           "TF_DATA_DIR": str(tmp_path / "tf-data"), "TF_CLI_CONFIG_FILE": str(tmp_path / "cli.tfrc"),
           "TF_INPUT": "0"}
    env.pop("TF_PLUGIN_CACHE_DIR", None)

    def terraform_run(*args: str) -> str:
        done = subprocess.run([terraform, *args], cwd=fixture, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"terraform {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    terraform_run("init", "-input=false", "-no-color")
    terraform_run("apply", "-input=false", "-auto-approve", "-no-color", "-lock=false")
    read = json.loads(terraform_run("output", "-json", "-no-color"))
    got = {name: entry["value"]["v"] for name, entry in read.items()}
    want = {f"{group}__{key}": value for group, values in expected.items()
            for key, value in values.items()}
    assert got == want
    assert got["exafunction_module_repo_backend__rds_password"]  # revealed in the tfstate
    report(f"ran: terraform read all {len(got)} keys")
