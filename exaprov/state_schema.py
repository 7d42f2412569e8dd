"""The state document's schema: every field checked when a state is read, before any AWS call.

A state whose outer shape is right but whose inner values are not (a resource record that
is a string, `outputs.network = 5`, `peers = "x"`) would otherwise surface as a traceback
half-way through a run, after some of its changes. Validation is strict (no coercion: `1`
is not `"1"`, `true` is not `1`) and lists every bad value by its JSON path.

Fields are what this exaprov writes; extra fields are allowed, so that a state written by
another exaprov of the same format version keeps loading. Values that may be absent or
unknown are optional.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, create_model

StrList = list[StrictStr]


class _Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ResourceRecord(_Schema):
    """One resource: what it is, its ID, where its create or delete stands, and what the
    step keeps about it (all written by StateWriter.record)."""

    kind: StrictStr | None = None
    id: StrictStr | None = None
    status: Literal["intent", "created", "deleting", "failed"] | None = None
    token: StrictStr | None = None
    name: StrictStr | None = None
    arn: StrictStr | None = None
    alias: StrictStr | None = None
    region: StrictStr | None = None
    profile: StrictStr | None = None
    role_id: StrictStr | None = None
    user_id: StrictStr | None = None
    version: StrictStr | None = None
    fingerprint: StrictStr | None = None
    peer_vpc: StrictStr | None = None
    cidrs: StrList | None = None


class Peer(_Schema):
    """A client VPC `peer` added (what `up` keeps converged, `unpeer` removes)."""

    route_table_ids: StrList | None = None
    region: StrictStr | None = None
    profile: StrictStr | None = None
    cidrs: StrList = Field(default_factory=list)


class Peering(_Schema):
    pcx_id: StrictStr | None = None
    cidrs: StrList | None = None


# Each step's outputs: the values other steps, `outputs` and `kubeconfig` read.
_STR = StrictStr | None
_OUTPUTS: dict[str, dict[str, Any]] = {
    "network": {"vpc_id": _STR, "vpc_cidr_block": _STR, "availability_zones": StrList | None,
                "private_subnet_ids": StrList | None, "public_subnet_ids": StrList | None,
                "database_subnet_ids": StrList | None, "internet_gateway_id": _STR,
                "public_route_table_id": _STR, "private_route_table_ids": StrList | None,
                "db_subnet_group_name": _STR},
    "nat": {"nat_gateway_id": _STR, "eip_allocation_id": _STR},
    "iam": {"cluster_role_arn": _STR, "cluster_role_name": _STR, "node_role_arn": _STR,
            "node_role_name": _STR},
    "kms": {"kms_key_arn": _STR, "kms_key_id": _STR, "kms_alias": _STR},
    "logs": {"log_group_name": _STR, "log_group_arn": _STR},
    "security-groups": {"cluster_security_group_id": _STR, "node_security_group_id": _STR},
    "cluster": {"cluster_name": _STR, "cluster_arn": _STR, "cluster_endpoint": _STR,
                "cluster_certificate_authority_data": _STR, "cluster_version": _STR,
                "cluster_primary_security_group_id": _STR, "cluster_oidc_issuer_url": _STR,
                "oidc_provider": _STR, "oidc_provider_arn": _STR},
    "cluster-access": {"access_entries": StrList | None},
    "node-groups": {"node_groups": dict[StrictStr, StrictStr] | None},
    "database-sg": {"db_security_group_id": _STR},
    "database": {"rds_identifier": _STR, "rds_arn": _STR, "rds_address": _STR,
                 "rds_port": StrictInt | None, "rds_username": _STR,
                 "rds_password_secret_arn": _STR, "rds_engine_version": _STR},
    "bucket": {"s3_bucket_id": _STR, "s3_bucket_arn": _STR, "s3_bucket_region": _STR},
    "backend-user": {"iam_user_name": _STR, "iam_user_arn": _STR, "access_key_id": _STR,
                     "secret_access_key_secret_arn": _STR},
    "peering": {"peerings": dict[StrictStr, Peering] | None},
}
_OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    step: create_model(f"Outputs_{step.replace('-', '_')}", __base__=_Schema,
                       **{key: (typ, None) for key, typ in fields.items()})
    for step, fields in _OUTPUTS.items()
}
AccountId = StrictStr


class StateDocument(_Schema):
    format_version: StrictInt = Field(ge=1)
    lineage: StrictStr = Field(min_length=1)
    serial: StrictInt = Field(ge=0)
    exaprov_version: StrictStr | None = None
    deployment: StrictStr = Field(min_length=1)
    region: StrictStr = Field(min_length=1)
    account_id: AccountId | None = Field(default=None, pattern=r"^\d{12}$")
    resources: dict[StrictStr, ResourceRecord]
    outputs: dict[StrictStr, dict[StrictStr, Any]]
    peers: dict[StrictStr, Peer] = Field(default_factory=dict)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as a JSON path: `resources["network.vpc"].id`, `outputs.network`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.match(part):
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]".replace("'", '"')
    return path or "(top level)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problems(data: dict[str, Any]) -> list[str]:
    """Every value of the state document that does not fit its schema, by JSON path; [] if
    none."""
    found: list[str] = []
    try:
        StateDocument.model_validate(data)
    except ValidationError as exc:
        found += [_problem(error, ()) for error in exc.errors()]
    outputs = data.get("outputs")
    if isinstance(outputs, dict):
        for step, model in _OUTPUT_MODELS.items():
            value = outputs.get(step)
            if not isinstance(value, dict):
                continue  # absent, or already reported as not an object
            try:
                model.model_validate(value)
            except ValidationError as exc:
                found += [_problem(error, ("outputs", step)) for error in exc.errors()]
    return found


def _problem(error: Any, prefix: tuple[int | str, ...]) -> str:
    loc = prefix + tuple(part for part in error["loc"]
                         if not (isinstance(part, str) and part.startswith(("function-", "lax-"))))
    message = re.sub(r" or instance of \w+", "", error["msg"])
    if error["type"] == "missing":
        return f"{json_path(loc)}: missing"
    return f"{json_path(loc)}: {message} (found {_shown(error.get('input'))})"
