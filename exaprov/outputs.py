"""What the ExaDeploy Kubernetes deployment needs (SPEC §5), from the state's step outputs.

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
from collections.abc import Callable, Mapping
from typing import Any

SECRET_FIELDS = {  # output key -> (its reference key, the JSON key inside the secret)
    "rds_password": ("rds_password_secret_arn", "password"),
    "s3_iam_user_secret_key": ("s3_iam_user_secret_key_secret_arn", "secret_access_key"),
}


def collect(steps: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The four output groups, from the recorded outputs of each step."""
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
        "exafunction_peering": {"peerings": steps.get("peering", {}).get("peerings", {})},
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
