"""What the ExaDeploy Kubernetes deployment needs, from the state's step outputs.

The groups and keys are the root outputs of the Terraform cloud stack
(`exafunction_network`, `exafunction_cluster`, `exafunction_module_repo_backend`,
`exafunction_peering`), so the companion configuration reads them unchanged —
also from a Terraform v4 state file holding only these outputs.

Secrets appear as references (Secrets Manager ARNs) unless revealed; `reveal`
reads them at that moment and nothing here writes them to disk.
"""

from __future__ import annotations

import json
import shlex
import zlib
from collections.abc import Callable, Mapping
from typing import Any

SECRET_FIELDS = {  # output key -> (its reference key, the JSON key inside the secret)
    "rds_password": ("rds_password_secret_arn", "password"),
    "s3_iam_user_secret_key": ("s3_iam_user_secret_key_secret_arn", "secret_access_key"),
}


def collect(steps: Mapping[str, Mapping[str, Any]], account_id: str | None = None,
            region: str | None = None, vpc_name: str | None = None) -> dict[str, dict[str, Any]]:
    """The four output groups, from the recorded outputs of each step (`account_id` and
    `region` make the ARNs the Terraform network module publishes)."""
    net, cluster = steps.get("network", {}), steps.get("cluster", {})
    sgs = steps.get("security-groups", {})
    groups: dict[str, dict[str, Any]] = {
        "exafunction_network": {
            "vpc_id": net.get("vpc_id"),
            "vpc_cidr_block": net.get("vpc_cidr_block"),
            "private_subnet_ids": net.get("private_subnet_ids"),
            "public_subnet_ids": net.get("public_subnet_ids"),
            "database_subnet_ids": net.get("database_subnet_ids"),
            "database_subnet_group_name": net.get("db_subnet_group_name"),
            **network_module_outputs(net, steps.get("nat", {}), account_id, region, vpc_name),
        },
        "exafunction_cluster": {
            "cluster_name": cluster.get("cluster_name"),
            "cluster_arn": cluster.get("cluster_arn"),
            "cluster_endpoint": cluster.get("cluster_endpoint"),
            "cluster_certificate_authority_data": cluster.get("cluster_certificate_authority_data"),
            "cluster_primary_security_group_id": cluster.get("cluster_primary_security_group_id"),
            "cluster_security_group_id": sgs.get("cluster_security_group_id"),
            "node_security_group_id": sgs.get("node_security_group_id"),
            "cluster_oidc_issuer_url": cluster.get("cluster_oidc_issuer_url"),
            "oidc_provider": cluster.get("oidc_provider"),
            "oidc_provider_arn": cluster.get("oidc_provider_arn"),
        },
        "exafunction_peering": {"peerings": steps.get("peering", {}).get("peerings", {}),
                                **peering_module_outputs(net, steps.get("peering", {}))},
    }
    if any(k in steps for k in ("database", "bucket", "backend-user")):
        db, bucket, user = steps.get("database", {}), steps.get("bucket", {}), steps.get("backend-user", {})
        groups["exafunction_module_repo_backend"] = {
            "rds_address": db.get("rds_address"),
            "rds_port": db.get("rds_port"),
            "rds_username": db.get("rds_username"),
            "rds_password": None,
            "rds_password_secret_arn": db.get("rds_password_secret_arn"),
            "s3_bucket_id": bucket.get("s3_bucket_id"),
            "s3_iam_user_access_key": user.get("access_key_id"),
            "s3_iam_user_secret_key": None,
            "s3_iam_user_secret_key_secret_arn": user.get("secret_access_key_secret_arn"),
        }
    else:
        groups["exafunction_module_repo_backend"] = {}
    return groups


def network_module_outputs(net: Mapping[str, Any], nat: Mapping[str, Any], account_id: str | None,
                           region: str | None, vpc_name: str | None) -> dict[str, Any]:
    """The keys of the Terraform network module (Exafunction's, over terraform-aws-modules/vpc
    3.x) under their names there, so a configuration written against it reads them unchanged.
    Its database subnets share the private route table, as exaprov's do."""
    from exaprov.steps.iam import partition
    from exaprov.steps.network import subnet_layout

    def arn(kind: str, ids: Any) -> Any:
        if not (account_id and region) or ids is None:
            return None
        prefix = f"arn:{partition(region)}:ec2:{region}:{account_id}:{kind}/"
        return prefix + ids if isinstance(ids, str) else [prefix + i for i in ids]

    cidr = net.get("vpc_cidr_block")
    layout = subnet_layout(cidr, ["-"]) if cidr else []
    blocks = {tier: [s.cidr for s in layout if s.tier == tier] or None
              for tier in ("private", "public", "database")}
    public_rt = net.get("public_route_table_id")
    nat_ip = nat.get("nat_public_ip")
    return {
        "vpc_name": vpc_name, "vpc_arn": arn("vpc", net.get("vpc_id")),
        "azs": net.get("availability_zones"),
        "private_subnets": net.get("private_subnet_ids"),
        "public_subnets": net.get("public_subnet_ids"),
        "database_subnets": net.get("database_subnet_ids"),
        "private_subnet_arns": arn("subnet", net.get("private_subnet_ids")),
        "public_subnet_arns": arn("subnet", net.get("public_subnet_ids")),
        "database_subnet_arns": arn("subnet", net.get("database_subnet_ids")),
        "private_subnets_cidr_blocks": blocks["private"],
        "public_subnets_cidr_blocks": blocks["public"],
        "database_subnets_cidr_blocks": blocks["database"],
        "private_route_table_ids": net.get("private_route_table_ids"),
        "public_route_table_ids": [public_rt] if public_rt else None,
        "database_route_table_ids": net.get("private_route_table_ids"),
        "database_subnet_group": net.get("db_subnet_group_name"),
        "igw_id": net.get("internet_gateway_id"),
        "natgw_ids": [nat["nat_gateway_id"]] if nat.get("nat_gateway_id") else None,
        "nat_public_ips": [nat_ip] if nat_ip else None,
    }


def route_id(route_table_id: str, destination: str) -> str:
    """The ID the Terraform AWS provider gives a route: r-<table><hashcode(destination)>, its
    hashcode the CRC-32 (IEEE) of the text, e.g. r-rtb-…1080289494 for 0.0.0.0/0."""
    return f"r-{route_table_id}{zlib.crc32(destination.encode())}"


def peering_module_outputs(net: Mapping[str, Any], peering: Mapping[str, Any]) -> dict[str, Any]:
    """The Terraform peering module's keys. It peers one client VPC per instance; exaprov
    peers any number, so these describe the one peering when there is exactly one (null
    otherwise; `peerings` has every one by client VPC)."""
    peers = peering.get("peerings") or {}
    if len(peers) != 1:
        return {"peering_connection_id": None, "egress_route_ids": None,
                "ingress_route_ids": None, "ingress_security_group_rule_id": None}
    (peer,) = peers.values()
    return {
        "peering_connection_id": peer.get("pcx_id"),
        "egress_route_ids": [route_id(t, c) for t in net.get("private_route_table_ids") or []
                             for c in peer.get("cidrs") or []],
        "ingress_route_ids": [route_id(t, net["vpc_cidr_block"])
                              for t in peer.get("client_route_table_ids") or []]
        if net.get("vpc_cidr_block") else None,
        # The provider's ID for a security group rule is a hash of its own making, with no
        # meaning in AWS; exaprov's rule is the ingress on node_security_group_id.
        "ingress_security_group_rule_id": None,
    }


def reveal(groups: dict[str, dict[str, Any]], read_secret: Callable[[str], str]) -> None:
    """Fill in the secret values, read from Secrets Manager now (`read_secret(arn)` → string)."""
    backend = groups.get("exafunction_module_repo_backend", {})
    for key, (ref, json_key) in SECRET_FIELDS.items():
        if backend.get(ref):
            backend[key] = json.loads(read_secret(backend[ref]))[json_key]


def terraform_outputs(groups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Only the keys the companion Terraform configuration reads (no secret references)."""
    refs = {ref for ref, _ in SECRET_FIELDS.values()}
    return {name: {k: v for k, v in values.items() if k not in refs} for name, values in groups.items()}


def render_table(groups: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"{name}.{key}", _plain(value)) for name, values in groups.items()
            for key, value in values.items()]


def render_tfvars(groups: dict[str, dict[str, Any]]) -> str:
    """HCL: JSON values are valid HCL expressions."""
    lines = []
    for name, values in groups.items():
        lines.append(f"{name} = {{")
        lines += [f"  {key} = {json.dumps(value)}" for key, value in values.items()]
        lines.append("}")
    return "\n".join(lines) + "\n"


def render_env(groups: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, values in groups.items():
        for key, value in values.items():
            lines.append(f"{name.upper()}_{key.upper()}={shlex.quote(_plain(value))}")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _type(value: Any) -> Any:
    """Terraform's type expression for a value, as state format 4 stores it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return ["tuple", [_type(v) for v in value]]
    if isinstance(value, dict):
        return ["object", {k: _type(v) for k, v in value.items()}]
    return "string"


def tfstate(groups: dict[str, dict[str, Any]], lineage: str, serial: int,
            terraform_version: str = "1.5.7") -> dict[str, Any]:
    """A Terraform state (format 4) holding only root outputs, for `terraform_remote_state`."""
    sensitive = {"exafunction_module_repo_backend"}
    return {
        "version": 4,
        "terraform_version": terraform_version,
        "serial": serial,
        "lineage": lineage,
        "outputs": {name: {"value": values, "type": _type(values),
                           **({"sensitive": True} if name in sensitive else {})}
                    for name, values in terraform_outputs(groups).items()},
        "resources": [],
        "check_results": None,
    }
