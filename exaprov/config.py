"""The exaprov config file: its schema, its defaults and every rule, checked before any AWS call.

Keys mirror the Terraform modules' variables; every
key but `name` has a default; an unknown key is an error (a typo must never be ignored).
`load_config` reads YAML, `parse_config` validates; both raise ONE `ConfigError` listing every
problem found, one line each: `<key.path>: <what is wrong> (got <value>); <what is allowed>`.

Names that derive from `name` (VPC, cluster, backend id) are filled in after validation, so
code downstream always sees the final names; an empty or null value in the file means "derive".
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import importlib.util
import ipaddress
import json
import os
import re
import reprlib
import stat
import types
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, NoReturn, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exaprov.errors import ConfigError
from exaprov.paths import file_kind

DEFAULT_REGION = "us-west-1"
# EKS standard and extended support; the seed's 1.22 is long gone.
SUPPORTED_KUBERNETES_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35", "1.36")
# In standard support until 2027-03-27 (1.34 left it on 2026-12-02: billed at the extended
# rate since). Fixed here, so a config without the key never upgrades by itself; `exaprov
# init` writes the newest version EKS offers in standard support. exaprov/eks_versions.py.
DEFAULT_KUBERNETES_VERSION = "1.35"
# The only values CloudWatch Logs' PutRetentionPolicy accepts.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)
# Fixed node groups the cluster step always creates (the ExaDeploy system's own).
SYSTEM_NODE_GROUPS = ("default", "scheduler", "module-repository", "prometheus")
# AWS allows 50 tags per resource; exaprov adds its own (exaprov:deployment, exaprov:component,
# kubernetes.io/... on subnets), so users get 40.
MAX_USER_TAGS = 40
NAME_MAX = 63
CLUSTER_NAME_MAX = 29  # names AWS derives from the cluster's must still fit
# The S3 bucket `module-repo-<id>-xxxxxxxx` must fit 63 characters; RDS `<id>-rds` (63) and the
# IAM user `<id>-user` (64) then fit too.
BACKEND_ID_MAX = 63 - len("module-repo-") - len("-xxxxxxxx")
POSTGRES_MAJORS = range(11, 19)
# RDS refuses Postgres reserved words as the master user name; `rds*` and `pg_*` are reserved
# roles, `public` is the pseudo-role every user belongs to.
POSTGRES_RESERVED_USERNAMES = frozenset("""
    all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time current_timestamp
    current_user default deferrable desc distinct do else end except false fetch for foreign from
    grant group having in initially intersect into lateral leading limit localtime localtimestamp
    not null offset on only or order placing primary public references returning select
    session_user some symmetric system_user table then to trailing true union unique user using
    variadic when where window with rdsadmin rdsrepladmin rdstopmgr
""".split())

_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")  # also RDS-safe: no "--", no trailing -
_REGION_RE = re.compile(r"[a-z]{2,4}(-[a-z]+)+-\d+")
_VPC_NAME_RE = re.compile(r"[A-Za-z0-9-]{3,63}")
_CLUSTER_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_VERSION_RE = re.compile(r"1\.\d+")
_INSTANCE_TYPE_RE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUFFIX_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_NODE_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_IAM_NAME = r"[A-Za-z0-9+=,.@_-]+"
_IAM_PRINCIPAL_RE = re.compile(rf"arn:aws[a-z-]*:iam::\d{{12}}:(root|(user|role)/({_IAM_NAME}/)*"
                               rf"{_IAM_NAME})")
_DB_USERNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_DB_CLASS_RE = re.compile(r"db\.[a-z0-9]+\.[a-z0-9]+")
_S3_URL_RE = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)")
_ADDON_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
_ADDON_VERSION_RE = re.compile(r"v?\d+\.\d+\.\d+[-+._A-Za-z0-9]*")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

# EKS limits, checked up front (EKS user guide, "Amazon EKS service quotas", Dec 2026): the
# default quotas are 30 managed node groups per cluster and 450 nodes per managed node group.
# Both can be raised in Service Quotas; an account with a raised quota says so through these
# environment variables, so exaprov does not refuse what AWS now allows.
NODE_GROUPS_QUOTA_ENV = "EXAPROV_EKS_NODE_GROUPS_QUOTA"
NODES_QUOTA_ENV = "EXAPROV_EKS_NODES_PER_NODE_GROUP_QUOTA"
DEFAULT_NODE_GROUPS_QUOTA = 30
DEFAULT_NODES_QUOTA = 450
# EKS refuses more than 40 public access CIDR blocks per cluster (not adjustable).
MAX_PUBLIC_ACCESS_CIDRS = 40
# A region newer than the installed botocore: name it here (comma-separated) to use it anyway.
EXTRA_REGIONS_ENV = "EXAPROV_EXTRA_REGIONS"


def _quota(env: str, default: int) -> int:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError([f"{env}: must be a whole number of at least 1 (got {raw[:20]!r}); "
                           "the quota Service Quotas shows for your account"], env)
    return int(raw)


def node_groups_quota() -> int:
    return _quota(NODE_GROUPS_QUOTA_ENV, DEFAULT_NODE_GROUPS_QUOTA)


def nodes_quota() -> int:
    return _quota(NODES_QUOTA_ENV, DEFAULT_NODES_QUOTA)


@functools.cache
def _botocore_regions() -> frozenset[str]:
    """Every region of every partition in the data botocore ships (no AWS call)."""
    spec = importlib.util.find_spec("botocore")
    folder = Path(next(iter(spec.submodule_search_locations or []))) / "data" if spec else None
    names: set[str] = set()
    for name in ("partitions.json", "endpoints.json"):
        try:
            data = json.loads((folder / name).read_text()) if folder else {}
        except (OSError, ValueError):
            continue
        for partition in data.get("partitions", []):
            names.update(partition.get("regions", {}))
    # Pseudo-regions such as aws-global are endpoints, not places to build.
    return frozenset(n for n in names if _REGION_RE.fullmatch(n))


def extra_regions() -> frozenset[str]:
    return frozenset(r.strip() for r in os.environ.get(EXTRA_REGIONS_ENV, "").split(",")
                     if r.strip())


def known_regions() -> frozenset[str]:
    """The regions exaprov accepts: botocore's, plus those named in EXAPROV_EXTRA_REGIONS."""
    return _botocore_regions() | extra_regions()


def region_problem(value: str) -> tuple[str, str] | None:
    """(what is wrong, what is allowed) unless `value` is a region this botocore knows (or the
    user named in EXAPROV_EXTRA_REGIONS)."""
    if value in known_regions():
        return None
    near = difflib.get_close_matches(value, sorted(_botocore_regions()), n=3, cutoff=0.6)
    nearest = f"did you mean {' or '.join(near)}? " if near else ""
    try:
        version = importlib.metadata.version("botocore")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = "?"
    if not _REGION_RE.fullmatch(value):
        return "is not an AWS region name", f"{nearest}write one like us-west-1"
    return (f"is not a region botocore {version} knows",
            f"{nearest}a region newer than botocore: upgrade botocore, or set "
            f"{EXTRA_REGIONS_ENV}={value}")


# A family newer than the shipped table (exaprov/data/instance_types.yaml): name it with its
# architecture and accelerator, e.g. EXAPROV_EXTRA_INSTANCE_FAMILIES=m9x:arm64,p7:x86_64:nvidia
EXTRA_FAMILIES_ENV = "EXAPROV_EXTRA_INSTANCE_FAMILIES"
_ACCELERATOR_OF_CATEGORY = {"cpu": None, "gpu": "nvidia", "inferentia": "neuron"}
_ACCELERATOR_WORDS = {"nvidia": "NVIDIA GPU", "neuron": "AWS Neuron (Inferentia/Trainium)",
                      None: "no accelerator"}


class InstanceKind(NamedTuple):
    architecture: str  # x86_64 | arm64
    accelerator: str | None  # nvidia | neuron | None


def extra_families() -> dict[str, InstanceKind]:
    """The families named in EXAPROV_EXTRA_INSTANCE_FAMILIES (malformed entries: ConfigError)."""
    found: dict[str, InstanceKind] = {}
    for item in os.environ.get(EXTRA_FAMILIES_ENV, "").split(","):
        if not item.strip():
            continue
        family, _, rest = item.strip().partition(":")
        arch, _, accel = rest.partition(":")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", family) or arch not in ("x86_64", "arm64") \
                or accel not in ("", "nvidia", "neuron"):
            raise ConfigError([f"{EXTRA_FAMILIES_ENV}: {item.strip()[:40]!r} is not "
                               "FAMILY:ARCHITECTURE[:ACCELERATOR], e.g. m9x:arm64 or "
                               "p7:x86_64:nvidia (x86_64 or arm64; nvidia or neuron)"],
                              EXTRA_FAMILIES_ENV)
        found[family] = InstanceKind(arch, accel or None)
    return found


def instance_kind(instance_type: str) -> InstanceKind | None:
    """Architecture and accelerator of a type in the shipped table or an opted-in family."""
    from exaprov import instance_types

    info = instance_types.describe(instance_type)
    if info is not None:
        return InstanceKind(info.architecture, info.accelerator)
    family, dot, size = instance_type.partition(".")
    return extra_families().get(family) if dot and size else None


def _instance_type_problem(value: str) -> tuple[str, str] | None:
    from exaprov import instance_types

    extra_families()  # a malformed opt-in is refused even when no type needs it

    if instance_kind(value) is not None:
        return None
    near = instance_types.nearest(value)
    nearest = f"did you mean {' or '.join(near)}? " if near else ""
    family = value.partition(".")[0]
    if family in instance_types.known_families():
        sizes = ", ".join(instance_types.family_sizes(family) or ())
        return f"is not a size of the {family} family", f"{nearest}{family} comes in {sizes}"
    return ("is not an instance type exaprov knows",
            f"{nearest}the table is exaprov/data/instance_types.yaml; a family newer than it: "
            f"set {EXTRA_FAMILIES_ENV}={family or 'FAMILY'}:x86_64 (or :arm64, "
            ":x86_64:nvidia, ...)")


def _whole_number(value: Any) -> Any:
    """YAML `100.0` is the whole number 100, as JSON Schema's "integer" says; 100.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A whole number: never a bool or a string; a float only when it has no fraction.
Int = Annotated[StrictInt, BeforeValidator(_whole_number)]


def _schema(**rules: Any) -> dict[str, Any]:
    """JSON Schema keywords for a field, beside pydantic's own (see json_schema())."""
    return {"json_schema_extra": rules}


_NAME_PATTERN = "^" + r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*" + "$"
_LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
_CIDR_PATTERN = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}" \
    r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/"
_RESERVED_TAG_KEYS = "^([aA][wW][sS]|[eE][xX][aA][pP][rR][oO][vV]):"
_TAGS_SCHEMA = {"maxProperties": 40,
                "propertyNames": {"minLength": 1, "maxLength": 128,
                                  "not": {"pattern": _RESERVED_TAG_KEYS}},
                "additionalProperties": {"type": "string", "maxLength": 256}}


# --- problems -------------------------------------------------------------------------------

class _Problem(NamedTuple):
    """One problem found by our own checks; `at` is relative to where pydantic reports it."""

    at: tuple[str | int, ...]
    what: str
    got: Any
    allowed: str = ""


def _fail(what: str, got: Any, allowed: str = "", at: tuple[str | int, ...] = ()) -> NoReturn:
    _fail_all([_Problem(at, what, got, allowed)])


def _fail_all(problems: list[_Problem]) -> NoReturn:
    # A custom error type carries our wording untouched through pydantic to _problem_lines.
    raise PydanticCustomError("exaprov", "{summary}",
                              {"summary": problems[0].what, "problems": problems})


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 64
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = _SHORT.maxset = 4
_SHORT.maxlevel = 2


def _show(value: Any) -> str:
    """A short repr, cut while it is made (never a whole huge value rendered, then cut), so a
    300-character tag value or a 10,000-item list does not flood the terminal."""
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_UNSET: Any = object()


def _line(path: str, what: str, got: Any = _UNSET, allowed: str = "") -> str:
    text = f"{path}: {what}"
    if got is not _UNSET:
        text += f" (got {_show(got)})"
    return f"{text}; {allowed}" if allowed else text


def _path(loc: tuple[Any, ...]) -> str:
    """`cluster.runner_pools[1].capacity_type`; odd keys quoted: `tags['aws:x']`."""
    text = ""
    for item in loc:
        if isinstance(item, int):
            text += f"[{item}]"
        elif _PLAIN_KEY_RE.fullmatch(item):
            text += f".{item}" if text else item
        else:
            text += f"[{item!r}]"
    return text or "(top level)"


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional to reach a model or container type."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return _unwrap(next(arg for arg in get_args(tp) if arg is not type(None)))
    return tp


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the value at `loc`, to list its valid keys."""
    tp: Any = Config
    for item in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_TYPE_WORDS = {
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
}


def _translate(err: Any) -> list[str]:
    """Pydantic's error in exaprov's words; never pydantic's own wording."""
    loc, kind, got = tuple(err["loc"]), err["type"], err.get("input")
    if kind == "exaprov":
        return [_line(_path(loc + p.at), p.what, p.got, p.allowed) for p in err["ctx"]["problems"]]
    if loc and loc[-1] == "[key]":
        return [_line(_path(loc[:-1]), "keys here must be strings", got, "quote the key in YAML")]
    path = _path(loc)
    if kind == "missing":
        return [_line(path, "required key is missing")]
    if kind in ("extra_forbidden", "invalid_key"):
        path = _path(loc[:-1] + (str(loc[-1]),))  # a YAML key like `3:` arrives as an int
        model = _model_at(loc[:-1])
        valid = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        what = f"unknown key (did you mean {close[0]}?)" if close else "unknown key"
        return [_line(path, what, allowed="valid keys here: " + ", ".join(valid))]
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", err["ctx"]["expected"]))
        return [_line(path, f"must be one of {choices}", got)]
    what = _TYPE_WORDS.get(kind, "is not a valid value")
    allowed = ""
    if got is None and kind == "list_type":
        allowed = "write [] for an empty list"
    elif got is None and "type" in kind and what.startswith("must be a mapping"):
        allowed = "write {} for an empty mapping"
    elif kind == "string_type" and isinstance(got, (bool, int, float)):
        allowed = "quote it in YAML"
    return [_line(path, what, got, allowed)]


# --- checks shared by several keys ----------------------------------------------------------

def _ipv4_cidr_problem(text: str) -> tuple[str, str] | None:
    """(what is wrong, what is allowed) for a text that is not a strict IPv4 CIDR block."""
    if "/" not in text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return "not a CIDR block", "write an IPv4 CIDR block like 10.255.0.0/16"
        return "has no prefix length", f"write a CIDR block like {text}/32"
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return "not a CIDR block", "write an IPv4 CIDR block like 10.255.0.0/16"
        if loose.version == 4:
            return "has host bits set", f"did you mean {loose}?"
        return "must be an IPv4 CIDR block, not IPv6", "write one like 10.255.0.0/16"
    if net.version != 4:
        return "must be an IPv4 CIDR block, not IPv6", "write one like 10.255.0.0/16"
    return None


def _tag_problems(tags: dict[str, str]) -> list[_Problem]:
    problems = []
    if len(tags) > MAX_USER_TAGS:
        problems.append(_Problem((), "too many tags", len(tags),
                                 f"at most {MAX_USER_TAGS} (AWS allows 50, exaprov adds its own)"))
    for key, value in tags.items():
        if not 1 <= len(key) <= 128:
            problems.append(_Problem((key,), "tag key must be 1-128 characters", key))
        elif key.lower().startswith("aws:"):
            problems.append(_Problem((key,), "tag keys starting with 'aws:' are reserved by AWS",
                                     key, "choose another key"))
        elif key.lower().startswith("exaprov:"):
            problems.append(_Problem((key,), "tag keys starting with 'exaprov:' are exaprov's own",
                                     key, "choose another key"))
        if len(value) > 256:
            problems.append(_Problem((key,), f"tag value is {len(value)} characters", value,
                                     "AWS allows at most 256"))
    return problems


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    if problems := _tag_problems(tags):
        _fail_all(problems)
    return tags


def _label_key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label/taint key EKS accepts, or None."""
    prefix, slash, name = key.rpartition("/")
    if len(key) > 63:
        return "longer than 63 characters, the most EKS allows"
    if slash and not (_DNS_SUBDOMAIN_RE.fullmatch(prefix) and len(prefix) <= 253):
        return "has a prefix that is not a lowercase DNS name"
    if not _LABEL_NAME_RE.fullmatch(name):
        return "is not a valid Kubernetes label key"
    return None


_LABEL_KEY_RULE = "optional DNS prefix and '/', then letters, digits, '-', '_', '.' (<= 63)"
_LABEL_VALUE_RULE = "at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric"


def _is_label_value(value: str) -> bool:
    return len(value) <= 63 and _LABEL_NAME_RE.fullmatch(value) is not None


def _backend_id_problem(value: str) -> tuple[str, str] | None:
    if not _NAME_RE.fullmatch(value):
        return ("must be lowercase letters, digits and single hyphens, starting with a letter",
                "it names the RDS instance, S3 bucket and IAM user")
    if len(value) > BACKEND_ID_MAX:
        return (f"is {len(value)} characters long",
                f"at most {BACKEND_ID_MAX}, so the bucket 'module-repo-<id>-xxxxxxxx' fits 63")
    return None


def _empty_means_derive(value: Any) -> Any:
    return "" if value is None else value


# --- the models -----------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Taint(_Model):
    """An extra Kubernetes taint on a node group."""

    key: str = Field(**_schema(maxLength=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?"
                                   r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                                   r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"))
    value: str = Field("", **_schema(maxLength=63, pattern=f"^$|{_LABEL_VALUE_PATTERN}"))
    effect: Literal["NO_SCHEDULE", "NO_EXECUTE", "PREFER_NO_SCHEDULE"]

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if problem := _label_key_problem(v):
            _fail(problem, v, _LABEL_KEY_RULE)
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        if v and not _is_label_value(v):
            _fail("is not a valid taint value", v, _LABEL_VALUE_RULE + ", or empty")
        return v


class NodeGroupSpec(_Model):
    """The knobs of one EKS managed node group (a runner pool minus its suffix)."""

    node_instance_category: Literal["cpu", "gpu", "inferentia"] = "cpu"
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    node_instance_type: str = Field(**_schema(enum_instance_types=True))
    disk_size: Int = Field(100, **_schema(minimum=1, maximum=16384))
    min_size: Int = Field(0, **_schema(minimum=0, maximum=DEFAULT_NODES_QUOTA))
    max_size: Int = Field(**_schema(minimum=1, maximum=DEFAULT_NODES_QUOTA))
    accelerator_label: str = Field("", **_schema(maxLength=63,
                                                 pattern=f"^$|{_LABEL_VALUE_PATTERN}"))
    additional_taints: list[Taint] = Field(default_factory=list)
    additional_labels: dict[str, str] = Field(default_factory=dict, **_schema(
        propertyNames={"maxLength": 63, "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?"
                       r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"},
        additionalProperties={"type": "string", "minLength": 1, "maxLength": 63,
                              "pattern": _LABEL_VALUE_PATTERN}))
    # Rolling updates: the share of nodes EKS may take down at once (the Terraform modules' 33).
    max_unavailable_percentage: Int = Field(33, **_schema(minimum=1, maximum=100))
    # EKS node auto repair (off by default in EKS); None = on for gpu and inferentia pools.
    node_repair: StrictBool | None = None

    @property
    def repairs_nodes(self) -> bool:
        if self.node_repair is not None:
            return self.node_repair
        return self.node_instance_category in ("gpu", "inferentia")

    @field_validator("max_unavailable_percentage")
    @classmethod
    def _max_unavailable(cls, v: int) -> int:
        if not 1 <= v <= 100:
            _fail("is out of range", v, "a percentage of the group's nodes from 1 to 100")
        return v

    @field_validator("node_instance_type")
    @classmethod
    def _instance_type(cls, v: str) -> str:
        if not _INSTANCE_TYPE_RE.fullmatch(v):
            _fail("is not an EC2 instance type", v, "write one like m5.xlarge")
        if problem := _instance_type_problem(v):
            _fail(problem[0], v, problem[1])
        return v

    @model_validator(mode="after")
    def _category_fits_type(self) -> NodeGroupSpec:
        """The AMI type follows the category: a gpu pool needs NVIDIA GPUs, an inferentia pool
        Neuron devices; a cpu pool on an accelerated type is refused too (its AMI would have
        no driver for the accelerator it pays for)."""
        kind = instance_kind(self.node_instance_type)
        wanted = _ACCELERATOR_OF_CATEGORY[self.node_instance_category]
        if kind is not None and kind.accelerator != wanted:
            fitting = {v: k for k, v in _ACCELERATOR_OF_CATEGORY.items()}[kind.accelerator]
            _fail(f"is a {self.node_instance_category} pool on {self.node_instance_type}, which "
                  f"has {_ACCELERATOR_WORDS[kind.accelerator]}", self.node_instance_category,
                  f"node_instance_category: {fitting} for this type, or a type with "
                  f"{_ACCELERATOR_WORDS[wanted]}", at=("node_instance_category",))
        return self

    @field_validator("disk_size")
    @classmethod
    def _disk_size(cls, v: int) -> int:
        if not 1 <= v <= 16384:
            _fail("is out of range", v, "a root volume size in GiB from 1 to 16384")
        return v

    @field_validator("min_size")
    @classmethod
    def _min_size(cls, v: int) -> int:
        if v < 0:
            _fail("must not be negative", v)
        _check_nodes_quota(v)
        return v

    @field_validator("max_size")
    @classmethod
    def _max_size(cls, v: int, info: ValidationInfo) -> int:
        if v < 1:
            _fail("must be at least 1", v, "EKS requires a node group's max size >= 1")
        _check_nodes_quota(v)
        low = info.data.get("min_size")  # absent when min_size itself was invalid
        if low is not None and low > v:
            _fail(f"is smaller than min_size {low}", v, "min_size must be <= max_size")
        return v

    @field_validator("accelerator_label")
    @classmethod
    def _accelerator(cls, v: str) -> str:
        if v and not _is_label_value(v):
            _fail("is not a valid Kubernetes label value", v, _LABEL_VALUE_RULE + ", or empty")
        return v

    @field_validator("additional_labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        problems = []
        for key, value in labels.items():
            if problem := _label_key_problem(key):
                problems.append(_Problem((key,), problem, key, _LABEL_KEY_RULE))
            if not value or not _is_label_value(value):
                # EKS refuses empty label values, unlike Kubernetes itself.
                problems.append(_Problem((key,), "is not a valid label value", value,
                                         _LABEL_VALUE_RULE + " (EKS: not empty)"))
        if problems:
            _fail_all(problems)
        return labels


def _check_nodes_quota(v: int) -> None:
    quota = nodes_quota()
    if v > quota:
        _fail(f"is more than the {quota} nodes EKS allows in a managed node group", v,
              f"at most {quota}; a raised quota (Service Quotas -> Amazon EKS -> Nodes per "
              f"managed node group): set {NODES_QUOTA_ENV} to it")


class RunnerPool(NodeGroupSpec):
    """A runner node group, named `runner-<suffix>` in EKS."""

    suffix: str = Field(**_schema(maxLength=56, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str) -> str:
        if not _SUFFIX_RE.fullmatch(v):
            _fail("must be lowercase letters, digits and hyphens, not starting or ending with one",
                  v, "it becomes part of the node group name runner-<suffix>")
        if len("runner-" + v) > 63:
            _fail(f"is {len(v)} characters long", v, "at most 56, so runner-<suffix> fits 63")
        return v


def _default_runner_pools() -> list[RunnerPool]:
    # The seed's root example: a CPU spot pool and its module's default GPU pool.
    return [
        RunnerPool(suffix="cpu", node_instance_category="cpu", capacity_type="SPOT",
                   node_instance_type="m5.xlarge", disk_size=100, min_size=1, max_size=4),
        RunnerPool(suffix="gpu", node_instance_category="gpu", capacity_type="ON_DEMAND",
                   node_instance_type="g4dn.xlarge", disk_size=100, min_size=0, max_size=3,
                   accelerator_label="nvidia-tesla-t4"),
    ]


def _iam_arn_problem(arn: str, *kinds: str) -> tuple[str, str] | None:
    """(what is wrong, what is allowed) unless `arn` is an IAM ARN of one of `kinds`."""
    match = _IAM_PRINCIPAL_RE.fullmatch(arn)
    if match and (match.group(2) or "root") in kinds:
        return None
    shapes = " or ".join(f"arn:aws:iam::<12 digits>:{kind}{'' if kind == 'root' else '/NAME'}"
                         for kind in kinds)
    return f"is not an IAM {'/'.join(kinds)} ARN", f"write {shapes}"


def _require_iam_arn(arn: str, *kinds: str) -> str:
    if problem := _iam_arn_problem(arn, *kinds):
        _fail(problem[0], arn, problem[1])
    return arn


# EKS access entries refuse these (aws-auth accepted them; exaprov maps system:masters to the
# cluster-admin access policy instead).
RESERVED_USERNAME_PREFIXES = ("system:", "eks:", "aws:", "amazon:", "iam:")


class _AwsAuthEntry(_Model):
    username: str = Field(**_schema(minLength=1, not_={"pattern": "^(system|eks|aws|amazon|iam):"}))
    groups: list[str] = Field(default_factory=list, **_schema(items={"anyOf": [
        {"const": "system:masters"}, {"not": {"pattern": "^system:"}}]}))

    @field_validator("username")
    @classmethod
    def _username(cls, v: str) -> str:
        if not v:
            _fail("must not be empty", v, "the Kubernetes user name to map to")
        if v.startswith(RESERVED_USERNAME_PREFIXES):
            _fail("is reserved by EKS", v,
                  f"a user name not starting with {', '.join(RESERVED_USERNAME_PREFIXES)}")
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for group in v:
            if group.startswith("system:") and group != "system:masters":
                _fail("EKS access entries refuse system: groups other than system:masters", group,
                      "your own group names (system:masters becomes the cluster-admin policy)")
        return v


class AwsAuthRole(_AwsAuthEntry):
    """An IAM role given access to the cluster (the seed's aws-auth role map)."""

    rolearn: str = Field(**_schema(pattern="^" + _IAM_PRINCIPAL_RE.pattern.replace(
        "(root|(user|role)/", "(role/") + "$"))

    @field_validator("rolearn")
    @classmethod
    def _arn(cls, v: str) -> str:
        return _require_iam_arn(v, "role")


class AwsAuthUser(_AwsAuthEntry):
    """An IAM user given access to the cluster (the seed's aws-auth user map)."""

    userarn: str = Field(**_schema(pattern="^" + _IAM_PRINCIPAL_RE.pattern.replace(
        "(root|(user|role)/", "(user/") + "$"))

    @field_validator("userarn")
    @classmethod
    def _arn(cls, v: str) -> str:
        return _require_iam_arn(v, "user")


class NetworkConfig(_Model):
    """The VPC, its subnets and the NAT gateway."""

    vpc_name: str = Field("", **_schema(  # "" = exafunction-vpc-<name>
        type=["string", "null"], pattern="^([A-Za-z0-9-]{3,63})?$"))
    vpc_cidr_block: str = Field("10.255.0.0/16", **_schema(pattern=_CIDR_PATTERN
                                                          + "(1[6-9]|2[0-4])$"))

    @field_validator("vpc_name", mode="before")
    @classmethod
    def _derive(cls, v: Any) -> Any:
        return _empty_means_derive(v)

    @field_validator("vpc_name")
    @classmethod
    def _vpc_name(cls, v: str) -> str:
        if v and not _VPC_NAME_RE.fullmatch(v):
            _fail("must be 3-63 characters of letters, digits and hyphens", v)
        return v

    @field_validator("vpc_cidr_block")
    @classmethod
    def _cidr(cls, v: str) -> str:
        if problem := _ipv4_cidr_problem(v):
            _fail(problem[0], v, problem[1])
        prefix = ipaddress.ip_network(v).prefixlen
        if prefix < 16:
            _fail(f"/{prefix} is larger than AWS allows for a VPC", v, "use /16 to /24")
        if prefix > 24:
            # Subnets are /(prefix+4) and AWS's smallest subnet is /28.
            _fail(f"/{prefix} is too small: its /{prefix + 4} subnets would be smaller than the "
                  "/28 AWS allows", v, "use /16 to /24")
        return v


class ClusterConfig(_Model):
    """The EKS cluster, its node groups and who may use it."""

    cluster_name: str = Field("", **_schema(  # "" = exafunction-cluster-<name>
        type=["string", "null"], maxLength=CLUSTER_NAME_MAX, pattern="^([A-Za-z][A-Za-z0-9-]*)?$"))
    cluster_version: str = Field(DEFAULT_KUBERNETES_VERSION,
                                 **_schema(enum=list(SUPPORTED_KUBERNETES_VERSIONS)))
    endpoint_public_access_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"], **_schema(
            minItems=1, maxItems=MAX_PUBLIC_ACCESS_CIDRS,
            items={"type": "string", "pattern": _CIDR_PATTERN + "([0-9]|[12][0-9]|3[0-2])$"}))
    log_retention_in_days: Int = Field(90, **_schema(enum=list(LOG_RETENTION_DAYS)))
    kms_key_administrators: list[str] = Field(default_factory=list, **_schema(
        items={"type": "string", "pattern": "^" + _IAM_PRINCIPAL_RE.pattern + "$"}))
    instance_tags: dict[str, str] = Field(default_factory=lambda: {"owner": "exafunction"},
                                          **_schema(**_TAGS_SCHEMA))
    autoscaling_group_tags: dict[str, str] = Field(
        default_factory=lambda: {"owner": "exafunction"}, **_schema(**_TAGS_SCHEMA))
    runner_pools: list[RunnerPool] = Field(default_factory=_default_runner_pools, **_schema(
        maxItems=DEFAULT_NODE_GROUPS_QUOTA - len(SYSTEM_NODE_GROUPS)))
    additional_node_groups: dict[str, NodeGroupSpec] = Field(default_factory=dict, **_schema(
        maxProperties=DEFAULT_NODE_GROUPS_QUOTA - len(SYSTEM_NODE_GROUPS),
        propertyNames={"pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
                       "not": {"enum": list(SYSTEM_NODE_GROUPS)}}))
    aws_auth_roles: list[AwsAuthRole] = Field(default_factory=list)
    aws_auth_users: list[AwsAuthUser] = Field(default_factory=list)
    imds_hop_limit: Int = Field(1, **_schema(  # exaprov extra: IMDSv2 hop limit
        minimum=1, maximum=64))
    detailed_monitoring: StrictBool = True  # the nodes' one-minute EC2 metrics (the eks module's)
    # EKS in December 2026 (exaprov/steps/addons.py, exaprov/eks_versions.py): what happens at
    # the end of standard support (STANDARD: EKS upgrades the control plane; EXTENDED: billed at
    # $0.60 instead of $0.10 per hour), deletion protection, and managed add-ons pinned to a
    # version or added by name (null = EKS's default version for the cluster's Kubernetes).
    support_type: Literal["STANDARD", "EXTENDED"] = "STANDARD"
    deletion_protection: StrictBool = True
    addons: dict[str, str | None] = Field(default_factory=dict)

    @field_validator("addons")
    @classmethod
    def _addons(cls, addons: dict[str, str | None]) -> dict[str, str | None]:
        problems = [_Problem((name,), "is not an EKS add-on name", name,
                             "lowercase letters, digits and hyphens, e.g. aws-efs-csi-driver")
                    for name in addons if not _ADDON_NAME_RE.fullmatch(name)]
        problems += [_Problem((name,), "is not an add-on version", version,
                              "like v1.19.0-eksbuild.1, or null for EKS's default")
                     for name, version in addons.items()
                     if version and not _ADDON_VERSION_RE.fullmatch(version)]
        if problems:
            _fail_all(problems)
        return addons

    @field_validator("cluster_name", mode="before")
    @classmethod
    def _derive(cls, v: Any) -> Any:
        return _empty_means_derive(v)

    @field_validator("instance_tags", "autoscaling_group_tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_tags(v)

    @field_validator("cluster_name")
    @classmethod
    def _cluster_name(cls, v: str) -> str:
        if v and not _CLUSTER_NAME_RE.fullmatch(v):
            _fail("must be letters, digits and hyphens, starting with a letter", v)
        if len(v) > CLUSTER_NAME_MAX:
            _fail(f"is {len(v)} characters long", v, f"at most {CLUSTER_NAME_MAX}")
        return v

    @field_validator("cluster_version", mode="before")
    @classmethod
    def _version_is_text(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            _fail("must be a quoted string: YAML reads an unquoted 1.30 as the number 1.3", v,
                  f'write cluster_version: "{DEFAULT_KUBERNETES_VERSION}"')
        return v

    @field_validator("cluster_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION_RE.fullmatch(v) or v not in SUPPORTED_KUBERNETES_VERSIONS:
            _fail("is not a Kubernetes version EKS supports", v,
                  "one of " + ", ".join(SUPPORTED_KUBERNETES_VERSIONS))
        return v

    @field_validator("endpoint_public_access_cidrs")
    @classmethod
    def _public_cidrs(cls, cidrs: list[str]) -> list[str]:
        if not cidrs:
            _fail("must not be empty", cidrs, "list at least one CIDR, e.g. [0.0.0.0/0]")
        if len(cidrs) > MAX_PUBLIC_ACCESS_CIDRS:
            _fail(f"has {len(cidrs)} CIDR blocks", cidrs,
                  f"EKS allows at most {MAX_PUBLIC_ACCESS_CIDRS} per cluster")
        problems = [_Problem((i,), problem[0], cidr, problem[1]) for i, cidr in enumerate(cidrs)
                    if (problem := _ipv4_cidr_problem(cidr))]
        if problems:
            _fail_all(problems)
        return cidrs

    @field_validator("log_retention_in_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in LOG_RETENTION_DAYS:
            _fail("is not a retention CloudWatch Logs allows", v,
                  "one of " + ", ".join(map(str, LOG_RETENTION_DAYS)))
        return v

    @field_validator("kms_key_administrators")
    @classmethod
    def _kms_admins(cls, arns: list[str]) -> list[str]:
        problems = [_Problem((i,), problem[0], arn, problem[1]) for i, arn in enumerate(arns)
                    if (problem := _iam_arn_problem(arn, "root", "user", "role"))]
        if problems:
            _fail_all(problems)
        return arns

    @field_validator("runner_pools")
    @classmethod
    def _unique_suffixes(cls, pools: list[RunnerPool]) -> list[RunnerPool]:
        seen: dict[str, int] = {}
        problems = []
        for i, pool in enumerate(pools):
            if pool.suffix in seen:
                problems.append(_Problem((i, "suffix"), "duplicate suffix", pool.suffix,
                                         f"runner_pools[{seen[pool.suffix]}] already uses it"))
            seen.setdefault(pool.suffix, i)
        if problems:
            _fail_all(problems)
        return pools

    @field_validator("additional_node_groups")
    @classmethod
    def _group_names(cls, groups: dict[str, NodeGroupSpec],
                     info: ValidationInfo) -> dict[str, NodeGroupSpec]:
        # runner_pools is validated first; it is absent from info.data when it was invalid.
        runners = {f"runner-{pool.suffix}" for pool in info.data.get("runner_pools", [])}
        problems = []
        for name in groups:
            if not _NODE_GROUP_RE.fullmatch(name):
                problems.append(_Problem((name,), "is not a valid node group name", name,
                                         "1-63 letters, digits, '-' and '_', starting with a "
                                         "letter or digit"))
            elif name in SYSTEM_NODE_GROUPS:
                problems.append(_Problem((name,), "collides with a system node group", name,
                                         "reserved: " + ", ".join(SYSTEM_NODE_GROUPS)))
            elif name in runners:
                problems.append(_Problem((name,), "collides with a runner pool's node group", name,
                                         "runner-<suffix> names belong to runner_pools"))
        if problems:
            _fail_all(problems)
        return groups

    @model_validator(mode="after")
    def _node_group_count(self) -> ClusterConfig:
        quota = node_groups_quota()
        count = len(SYSTEM_NODE_GROUPS) + len(self.runner_pools) + len(self.additional_node_groups)
        if count > quota:
            _fail(f"makes {count} node groups with the {len(SYSTEM_NODE_GROUPS)} system ones and "
                  f"additional_node_groups, more than the {quota} managed node groups EKS allows "
                  "per cluster", len(self.runner_pools),
                  f"at most {quota - len(SYSTEM_NODE_GROUPS)} pools and additional groups; a "
                  "raised quota (Service Quotas -> Amazon EKS -> Managed node groups per "
                  f"cluster): set {NODE_GROUPS_QUOTA_ENV} to it", at=("runner_pools",))
        return self

    @field_validator("imds_hop_limit")
    @classmethod
    def _hop_limit(cls, v: int) -> int:
        if not 1 <= v <= 64:
            _fail("is out of range", v, "an IMDSv2 hop limit from 1 to 64")
        return v


class BackendConfig(_Model):
    """The module repository's RDS Postgres and S3 bucket."""

    exadeploy_id: str = Field("", **_schema(  # "" = exafunction-mrbe-<name>
        type=["string", "null"], maxLength=BACKEND_ID_MAX, pattern=f"^$|{_NAME_PATTERN}"))
    # RDS for PostgreSQL on General Purpose SSD (gp2, gp3): 20 to 65,536 GiB (CreateDBInstance,
    # AllocatedStorage). The Terraform module's 15 predates gp3 and is refused by RDS.
    db_storage: Int = Field(20, **_schema(minimum=20, maximum=65536))
    postgres_version: str = Field("16", **_schema(
        type=None, enum=[str(v) for v in POSTGRES_MAJORS] + list(POSTGRES_MAJORS)))
    db_username: str = Field("exafunction", **_schema(
        pattern="^[A-Za-z][A-Za-z0-9_]{0,62}$",
        not_={"pattern": "^([rR][dD][sS]|[pP][gG]_)"}))
    db_port: Int = Field(5432, **_schema(minimum=1150, maximum=65535))
    db_instance_class: str = Field("db.t4g.micro",
                                   **_schema(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$"))
    db_storage_encrypted: StrictBool = True
    # What a database needs in December 2026 (RDS user guide; the Terraform rds module's
    # variables of the same meaning). Each is reconciled in place with ModifyDBInstance.
    db_storage_type: Literal["gp3", "gp2"] = "gp3"  # gp3: baseline 3,000 IOPS at gp2's price
    db_max_allocated_storage: Int = Field(100, **_schema(  # autoscaling ceiling, GiB; 0 = off
        anyOf=[{"const": 0}, {"minimum": 20, "maximum": 65536}]))
    db_backup_retention_days: Int = Field(7, **_schema(  # automated backups kept; 0 = none
        minimum=0, maximum=35))
    db_deletion_protection: StrictBool = True  # `destroy --disable-deletion-protection` lifts it
    # False = EngineLifecycleSupport open-source-rds-extended-support-disabled: a major version
    # past standard support is not enrolled in (billed) RDS Extended Support; PostgreSQL 13
    # left standard support on 2026-02-28. True = RDS's default, enrolled.
    db_extended_support: StrictBool = False
    # RDS rotates a managed master password every 7 days unless told otherwise, and the module
    # repository receives the password once: null = never (rotation turned off on the secret;
    # `exaprov rotate-db-password` rotates on demand), else every N days (1-1000).
    db_password_rotation_days: Int | None = Field(None, **_schema(
        anyOf=[{"type": "null"}, {"type": "integer", "minimum": 1, "maximum": 1000}]))

    @field_validator("db_max_allocated_storage")
    @classmethod
    def _max_storage(cls, v: int) -> int:
        if v != 0 and not 20 <= v <= 65536:
            _fail("is out of range", v, "0 (storage autoscaling off) or a ceiling in GiB up to 65536")
        return v

    @field_validator("db_backup_retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if not 0 <= v <= 35:
            _fail("is out of range", v, "RDS keeps automated backups 0 (none) to 35 days")
        return v

    @field_validator("db_password_rotation_days")
    @classmethod
    def _rotation(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 1000:
            _fail("is out of range", v, "null (never rotate) or 1 to 1000 days (Secrets Manager)")
        return v

    @model_validator(mode="after")
    def _ceiling_above_storage(self) -> BackendConfig:
        if self.db_max_allocated_storage and self.db_max_allocated_storage <= self.db_storage:
            _fail("must be above db_storage for storage autoscaling", self.db_max_allocated_storage,
                  f"more than {self.db_storage} GiB, or 0 to turn autoscaling off",
                  at=("db_max_allocated_storage",))
        return self

    @field_validator("exadeploy_id", mode="before")
    @classmethod
    def _derive(cls, v: Any) -> Any:
        return _empty_means_derive(v)

    @field_validator("exadeploy_id")
    @classmethod
    def _exadeploy_id(cls, v: str) -> str:
        if v and (problem := _backend_id_problem(v)):
            _fail(problem[0], v, problem[1])
        return v

    @field_validator("db_storage")
    @classmethod
    def _storage(cls, v: int) -> int:
        if not 20 <= v <= 65536:
            _fail("is out of range", v, "RDS storage in GiB from 20 to 65536 (RDS for PostgreSQL "
                  "on gp2 or gp3 storage)")
        return v

    @field_validator("postgres_version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        v = _whole_number(v)  # 16.0 is the number 16 (JSON Schema cannot tell them apart)
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)  # `postgres_version: 16` is what people write
        if isinstance(v, float):
            _fail("must be a major version only: minor versions float with AWS auto-upgrades",
                  v, 'write postgres_version: "16"')
        return v

    @field_validator("postgres_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if re.fullmatch(r"\d+(\.\d+)+", v):
            _fail("must be a major version only: minor versions float with AWS auto-upgrades",
                  v, f'write postgres_version: "{v.split(".")[0]}"')
        if not v.isdigit() or int(v) not in POSTGRES_MAJORS or v != str(int(v)):
            _fail("is not a PostgreSQL major version RDS offers", v,
                  f"{POSTGRES_MAJORS[0]} to {POSTGRES_MAJORS[-1]}, as a string like \"16\"")
        return v

    @field_validator("db_username")
    @classmethod
    def _username(cls, v: str) -> str:
        if not _DB_USERNAME_RE.fullmatch(v):
            _fail("is not a valid master user name", v,
                  "1-63 letters, digits and '_', starting with a letter")
        low = v.lower()
        if low in POSTGRES_RESERVED_USERNAMES or low.startswith(("rds", "pg_")):
            _fail("is reserved by PostgreSQL or RDS", v, "choose another name, e.g. exafunction")
        return v

    @field_validator("db_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1150 <= v <= 65535:
            _fail("is out of range", v, "RDS allows ports 1150 to 65535")
        return v

    @field_validator("db_instance_class")
    @classmethod
    def _instance_class(cls, v: str) -> str:
        if not _DB_CLASS_RE.fullmatch(v):
            _fail("is not an RDS instance class", v, "write one like db.t4g.micro")
        return v


class Config(_Model):
    """The whole config file, with derived names filled in."""

    name: str = Field(**_schema(pattern=_NAME_PATTERN, maxLength=NAME_MAX))
    region: str = Field(DEFAULT_REGION, **_schema(enum_regions=True))
    tags: dict[str, str] = Field(default_factory=lambda: {"owner": "exafunction"},
                                 **_schema(**_TAGS_SCHEMA))
    network: NetworkConfig = Field(default_factory=NetworkConfig, **_schema(nullable=True))
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, **_schema(nullable=True))
    module_repo_backend: BackendConfig | None = Field(default_factory=BackendConfig,
                                                      **_schema(boolean=True))
    state: str | None = Field(None, **_schema(  # exaprov extra: a file path or s3://bucket/key
        pattern=r"\S", anyOf=[{"type": "null"}, {"type": "string", "pattern": "^(?!s3://)"},
                              {"type": "string", "pattern": "^" + _S3_URL_RE.pattern + "$"}]))

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_tags(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            _fail("must be lowercase letters, digits and single hyphens, starting with a letter "
                  "and not ending with a hyphen", v, "e.g. prod or team-a")
        if len(v) > NAME_MAX:
            _fail(f"is {len(v)} characters long", v, f"at most {NAME_MAX}")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if problem := region_problem(v):
            _fail(problem[0], v, problem[1])
        return v

    @field_validator("network", "cluster", mode="before")
    @classmethod
    def _section_defaults(cls, v: Any) -> Any:
        return {} if v is None else v  # `network:` with nothing under it = all defaults

    @field_validator("module_repo_backend", mode="before")
    @classmethod
    def _backend_switch(cls, v: Any) -> Any:
        if v is False:
            return None  # no remote backend: the module repository keeps its data on local disk
        return {} if v is True else v

    @field_validator("state")
    @classmethod
    def _state(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            _fail("must not be empty", v, "a file path or s3://bucket/key, or null")
        if v.startswith("s3://") and not _S3_URL_RE.fullmatch(v):
            _fail("is not a valid S3 location", v, "write s3://bucket/key")
        return v

    @model_validator(mode="after")
    def _derive_names(self) -> Config:
        backend = self.module_repo_backend
        problems = _derived_name_problems(
            self.name, vpc_name_given=bool(self.network.vpc_name),
            cluster_name_given=bool(self.cluster.cluster_name),
            backend_id_given=backend is None or bool(backend.exadeploy_id))
        if problems:
            _fail_all(problems)
        self.network.vpc_name = self.network.vpc_name or f"exafunction-vpc-{self.name}"
        self.cluster.cluster_name = self.cluster.cluster_name or f"exafunction-cluster-{self.name}"
        if backend is not None and not backend.exadeploy_id:
            backend.exadeploy_id = default_backend_id(self.name)
        return self

    @property
    def backend_id(self) -> str:
        """The backend's id; with `module_repo_backend: null` the default one, so that a
        backend made earlier can still be found (by this and by the recorded names)."""
        backend = self.module_repo_backend
        return backend.exadeploy_id if backend is not None else default_backend_id(self.name)


def default_backend_id(name: str) -> str:
    return f"exafunction-mrbe-{name}"


def _derived_name_problems(name: str, *, vpc_name_given: bool, cluster_name_given: bool,
                           backend_id_given: bool) -> list[_Problem]:
    """`name` must be short enough for every name derived from it (reported at `name`)."""
    problems = []
    vpc_name = f"exafunction-vpc-{name}"
    if not vpc_name_given and len(vpc_name) > 63:
        problems.append(_Problem(("name",), f"too long for the derived VPC name ({len(vpc_name)} "
                                 "characters, at most 63)", name,
                                 f"shorten name to {63 - 16} or set network.vpc_name"))
    cluster_name = f"exafunction-cluster-{name}"
    if not cluster_name_given and len(cluster_name) > CLUSTER_NAME_MAX:
        problems.append(_Problem(
            ("name",), f"too long for the derived cluster name {cluster_name!r} "
            f"({len(cluster_name)} characters, at most {CLUSTER_NAME_MAX})", name,
            f"shorten name to {CLUSTER_NAME_MAX - 20} characters or set cluster.cluster_name"))
    backend_id = f"exafunction-mrbe-{name}"
    if not backend_id_given and _backend_id_problem(backend_id):
        problems.append(_Problem(
            ("name",), f"too long for the derived backend id {backend_id!r} ({len(backend_id)} "
            f"characters, at most {BACKEND_ID_MAX})", name,
            f"shorten name to {BACKEND_ID_MAX - 17} characters or set "
            "module_repo_backend.exadeploy_id"))
    return problems


def _raw_derived_name_lines(data: dict[str, Any]) -> list[str]:
    """The derived-name problems, found from the raw data so they are reported even when other
    keys are invalid (pydantic skips Config's own check then)."""
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
        return []  # the name's own problem is reported instead

    def given(section: str, key: str) -> bool:
        value = data.get(section)
        if value is None or value is True:
            return False
        # A malformed section reports its own problem; do not guess about it.
        return not isinstance(value, dict) or bool(value.get(key))

    backend = data.get("module_repo_backend", True)
    problems = _derived_name_problems(
        name, vpc_name_given=given("network", "vpc_name"),
        cluster_name_given=given("cluster", "cluster_name"),
        backend_id_given=backend is None or backend is False
        or given("module_repo_backend", "exadeploy_id"))
    return [_line(_path(p.at), p.what, p.got, p.allowed) for p in problems]


# --- the JSON Schema ---------------------------------------------------------------------------

# What the JSON Schema cannot say (or says only for the default quotas); listed in its
# description. Each entry: (the rule, a fragment of the validator's message for it) -- the
# property test checks that a config the schema accepts is refused only for these.
SCHEMA_CANNOT_EXPRESS: tuple[tuple[str, str], ...] = (
    ("name must leave room for the derived names: exafunction-cluster-<name> at most "
     f"{CLUSTER_NAME_MAX} characters unless cluster.cluster_name is set, exafunction-vpc-<name> "
     "at most 63 unless network.vpc_name is set, exafunction-mrbe-<name> at most "
     f"{BACKEND_ID_MAX} unless module_repo_backend.exadeploy_id is set", "too long for the derived"),
    ("min_size <= max_size", "is smaller than min_size"),
    ("runner pool suffixes are unique", "duplicate suffix"),
    ("additional_node_groups names differ from runner-<suffix> of the pools",
     "collides with a runner pool's node group"),
    (f"{len(SYSTEM_NODE_GROUPS)} system node groups + runner_pools + additional_node_groups <= the "
     f"node groups quota ({DEFAULT_NODE_GROUPS_QUOTA} by default; {NODE_GROUPS_QUOTA_ENV})",
     "managed node groups EKS allows"),
    (f"sizes within the nodes-per-node-group quota when {NODES_QUOTA_ENV} raises it",
     "nodes EKS allows"),
    ("CIDR blocks have no host bits set (10.255.1.0/16 is refused)", "has host bits set"),
    ("IAM and tag rules compared without case (AWS: and aws: are both reserved)", "reserved"),
    ("db_username is not a PostgreSQL reserved word (user, select, ...)", "reserved by"),
    ("db_max_allocated_storage is above db_storage (or 0)", "must be above db_storage"),
    ("node_instance_category matches the instance type's accelerator (gpu: NVIDIA GPUs, "
     "inferentia: AWS Neuron, cpu: none)", "pool on"),
    (f"a region named in {EXTRA_REGIONS_ENV} is accepted too", "region"),
)


def _known_instance_types() -> list[str]:
    from exaprov import instance_types

    return sorted(f"{family}.{size}" for family in instance_types.known_families()
                  for size in instance_types.family_sizes(family) or ())


def json_schema() -> dict[str, Any]:
    """The config file's JSON Schema, from the same models that validate it: every rule JSON
    Schema can say is in it; the others are listed in its description."""
    schema = Config.model_json_schema()

    def fix(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                fix(item)
            return
        if not isinstance(node, dict):
            return
        for value in list(node.values()):
            fix(value)
        if "not_" in node:
            node["not"] = node.pop("not_")
        if node.pop("enum_regions", False):
            node["enum"] = sorted(known_regions())
        if node.pop("enum_instance_types", False):
            node["anyOf"] = [{"enum": _known_instance_types()}] + [
                {"pattern": f"^{re.escape(family)}\\.[a-z0-9]+$"} for family in extra_families()]
        if node.get("type") is None and "type" in node:
            del node["type"]
        for marker, extra in (("nullable", {"type": "null"}), ("boolean", {"type": "boolean"})):
            if node.pop(marker, False):
                options = node.pop("anyOf", None) or [{"$ref": node.pop("$ref")}]
                node["anyOf"] = [*options, extra]
                if extra["type"] == "boolean" and {"type": "null"} not in options:
                    node["anyOf"].append({"type": "null"})

    fix(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "exaprov.yaml"
    schema["description"] = (
        "exaprov's config file. Rules this schema cannot express, which exaprov checks too: "
        + "; ".join(rule for rule, _ in SCHEMA_CANNOT_EXPRESS) + ".")
    return schema


# --- entry points ---------------------------------------------------------------------------

def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a loaded config mapping; every problem goes into one ConfigError."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ConfigError([f"(top level): must be a mapping of keys to values (got {kind}); "
                           "start with `name: <deployment>`"], source)
    lines = _raw_derived_name_lines(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            lines += _translate(err)
    raise ConfigError(list(dict.fromkeys(lines)), source)


# --- reading the file: YAML 1.2 core rules, bounded -------------------------------------------

# A config is a few hundred nodes; these bounds stop a hostile or broken file (nested aliases
# expanding to gigabytes, thousands of nested brackets) in milliseconds with a clear message.
MAX_CONFIG_BYTES = 256 * 1024  # a full config with 30 pools is about 15 KB
MAX_YAML_DEPTH = 32  # the deepest real key, cluster.runner_pools[i].additional_taints[j].key, is 6
MAX_YAML_NODES = 5_000  # keys and values, once aliases and merge keys are expanded (30 pools: ~800)
_AMBIGUOUS_TAG = "tag:exaprov,2026:yaml11-only"


class _Yaml11Only(NamedTuple):
    """A scalar YAML 1.1 reads as a number and YAML 1.2 as text (or another number): exaprov
    refuses to guess which one the writer meant."""

    text: str
    line: int


def _yaml11_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)  # what PyYAML (YAML 1.1) would have made of it
    except yaml.YAMLError:  # pragma: no cover - the forms routed here all load
        return text


def _yaml11_advice(text: str) -> tuple[str, str]:
    """(what is wrong, how to write it) for a YAML 1.1-only number form."""
    try:
        return _yaml11_advice_for(text)
    except ValueError:  # digits its base does not have, like 0o9: no number in either YAML
        return ("looks like a number in a YAML 1.1-only form", f'quote it for text: "{text}"')


def _yaml11_advice_for(text: str) -> tuple[str, str]:
    old = _yaml11_value(text)
    bare = text.lstrip("+-")
    if ":" in text:
        return (f"is a YAML 1.1 base-60 number ({old}), text in YAML 1.2",
                f'quote it for text: "{text}"; write {old} for the number')
    if bare[:2] in ("0o", "0O"):
        return ("is an octal number", f"write the number in decimal ({int(bare[2:] or '0', 8)})"
                f', or quote it for text: "{text}"')
    if bare[:2] in ("0b", "0B"):
        return (f"is a YAML 1.1 binary number ({old}), text in YAML 1.2",
                f'write it in decimal ({old}), or quote it for text: "{text}"')
    if "_" in text:
        digits = text.replace("_", "")
        return (f"has '_' digit separators: YAML 1.1 reads it as {old}, YAML 1.2 as text",
                f'write {digits}, or quote it for text: "{text}"')
    decimal = str(int(text.replace("_", "")))
    old_text = "as text" if isinstance(old, str) else f"as the octal number {old}"
    return (f"has a leading zero: YAML 1.1 reads it {old_text}, YAML 1.2 as {decimal}",
            f'write {decimal}, or quote it for text: "{text}"')


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core schema rules.

    - booleans are only true/false (any case form YAML 1.2 allows); yes/no/on/off are text;
    - null is ~, null or nothing; dates stay text;
    - integers are decimal (or 0x hex) and floats need a digit: `1.30` is still the number 1.3;
    - the forms YAML 1.1 reads as numbers and YAML 1.2 does not (leading zeros like 05432,
      0o/0b prefixes, `_` separators, base-60 like 1:30:00) are refused with how to write them;
    - duplicate keys are refused (PyYAML would keep the last one silently);
    - aliases and merge keys (`<<: *base`) work, within MAX_YAML_DEPTH and MAX_YAML_NODES.
    """

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # The composer recurses once per level: bound it before Python's own limit does, and
        # stop counting values early rather than parse a huge file to the end.
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                    self.peek_event().start_mark)
            if self._nodes > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"has more than {MAX_YAML_NODES} keys and values; a config has "
                    "a few hundred", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<`: merged keys may be overridden by the mapping's own
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (dict, list)):  # `? name: x` makes a mapping the key
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be text, not a {type(key).__name__}",
                    key_node.start_mark)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml11_only(self, node: yaml.ScalarNode) -> _Yaml11Only:
        return _Yaml11Only(node.value, node.start_mark.line + 1)


ConfigLoader.add_constructor(_AMBIGUOUS_TAG, ConfigLoader.construct_yaml11_only)
# Order matters: for a given first character, the first matching pattern wins.
ConfigLoader.add_implicit_resolver(
    _AMBIGUOUS_TAG, re.compile(r"""^(?:[-+]?0[0-9_]+
    |[-+]?0[oObB][0-9a-fA-F_]*
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?
    |[-+]?[0-9][0-9]*_[0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]*\.[0-9]*_[0-9_]*)$""", re.X), list("-+0123456789."))
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])
# YAML 1.2 core reads 0x hex as int; PyYAML's int constructor also takes `_` and 0o, which
# never reach it (routed to the refusal above).


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_NODES values or MAX_YAML_DEPTH
    levels, or that contains itself; counted on the node graph (each node once), so a
    billion-laughs file is refused in microseconds without being expanded."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, expanded depth)
    active: set[int] = set()

    def walk(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a value that "
                                              "contains it (a loop)", node.start_mark)
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total, depth = 1, 0
        for child in children:
            size, child_depth = walk(child)
            total, depth = total + size, max(depth, child_depth)
            if total > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"expands to more than {MAX_YAML_NODES} keys and values "
                    "(each alias repeats what it refers to)", node.start_mark)
        if depth + 1 > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels once aliases are "
                "expanded", node.start_mark)
        active.discard(key)
        sizes[key] = (total, depth + 1)
        return sizes[key]

    walk(root)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with ConfigLoader's rules and bounds."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml11_lines(data: Any, at: tuple[Any, ...] = ()) -> list[str]:
    """One line per YAML 1.1-only number, naming its key."""
    if isinstance(data, _Yaml11Only):
        what, allowed = _yaml11_advice(data.text)
        return [_line(_path(at), f"{data.text} (line {data.line}) {what}", allowed=allowed)]
    lines: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, _Yaml11Only):
                what, allowed = _yaml11_advice(key.text)
                lines.append(_line(_path(at), f"the key {key.text} (line {key.line}) {what}",
                                   allowed=allowed))
                key = key.text
            lines += _yaml11_lines(value, (*at, key if isinstance(key, (str, int)) else str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            lines += _yaml11_lines(value, (*at, index))
    return lines


def _read_config_text(path: Path, source: str) -> str:
    """The file's text: a regular file, at most MAX_CONFIG_BYTES, UTF-8."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(["config file not found; create one with `exaprov init` or point "
                           "--config at it"], source) from None
    except OSError as exc:
        raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"], source) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError([f"is {file_kind(info.st_mode)}, not a config file; point --config at "
                           "a YAML file"], source)
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError([f"the config file is {info.st_size} bytes; a config is at most "
                           f"{MAX_CONFIG_BYTES} bytes"], source)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"], source) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"the config file is over {MAX_CONFIG_BYTES} bytes"], source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(["the config file is not UTF-8 text"], source) from None


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at `path`."""
    source = str(path)
    text = _read_config_text(Path(path), source)
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc)], source) from None
    except (RecursionError, MemoryError):  # pragma: no cover - the bounds above come first
        raise ConfigError(["invalid YAML: too deeply nested or too large"], source) from None
    if data is None:
        raise ConfigError(["the config file is empty; it needs at least `name: <deployment>`"],
                          source)
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping of keys to values, not a "
                           f"{type(data).__name__}; start with `name: <deployment>`"], source)
    if lines := _yaml11_lines(data):
        raise ConfigError(lines, source)
    return parse_config(data, source)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
