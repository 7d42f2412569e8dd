"""The EC2 instance-type table exaprov ships (exaprov/data/instance_types.yaml), read offline.

Which families exist, their CPU architecture, their accelerator (NVIDIA GPUs or AWS Neuron
devices) and how many accelerators each size has. No AWS call; the file is read once, on first
use, so importing this module costs nothing.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Literal

Architecture = Literal["x86_64", "arm64"]
Accelerator = Literal["nvidia", "neuron"]

# The extended resource a node advertises for each accelerator, as the NVIDIA device plugin and
# the Neuron device plugin name them (and as the Cluster Autoscaler's node-template tags need).
ACCELERATOR_RESOURCE: dict[str, str] = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}


@dataclass(frozen=True)
class InstanceTypeInfo:
    instance_type: str
    family: str
    size: str
    architecture: Architecture
    accelerator: Accelerator | None
    # GPUs (nvidia) or Neuron devices (neuron, not NeuronCores) per instance; None without one.
    accelerator_count: int | None


@dataclass(frozen=True)
class _Family:
    architecture: Architecture
    accelerator: Accelerator | None
    sizes: dict[str, int | None]  # size -> accelerator count (None for a family without one)


@functools.cache
def _table() -> dict[str, _Family]:
    import yaml  # only when a type is first looked up

    text = resources.files("exaprov.data").joinpath("instance_types.yaml").read_text(encoding="utf-8")
    table: dict[str, _Family] = {}
    for family, entry in yaml.safe_load(text).items():
        where = f"instance_types.yaml: family {family!r}"
        if not isinstance(family, str) or not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a name and a mapping")
        arch, accel = entry.get("architecture"), entry.get("accelerator")
        if arch not in ("x86_64", "arm64") or accel not in ("nvidia", "neuron", None):
            raise ValueError(f"{where}: bad architecture {arch!r} or accelerator {accel!r}")
        if accel is None:
            keys = {"architecture", "accelerator", "sizes"}
            sizes: dict[str, int | None] = dict.fromkeys(entry.get("sizes") or [])
        else:
            keys = {"architecture", "accelerator", "accelerator_count"}
            sizes = dict(entry.get("accelerator_count") or {})
        if set(entry) != keys or not sizes or not all(isinstance(s, str) for s in sizes):
            raise ValueError(f"{where}: expected exactly the keys {sorted(keys)}, with sizes")
        if accel is not None and not all(type(c) is int and c > 0 for c in sizes.values()):
            raise ValueError(f"{where}: accelerator counts must be positive integers")
        table[family] = _Family(arch, accel, sizes)
    return table


def known_families() -> frozenset[str]:
    """Every instance family in the table (e.g. "m5", "g5g", "p6-b200")."""
    return frozenset(_table())


def family_sizes(family: str) -> tuple[str, ...] | None:
    """The sizes EC2 offers for a known family, smallest first; None for an unknown family."""
    entry = _table().get(family)
    return tuple(entry.sizes) if entry else None


def describe(instance_type: str) -> InstanceTypeInfo | None:
    """What the table says about an instance type such as "g5.12xlarge".

    None when the family is unknown, the name is not "<family>.<size>", or the family does not
    come in that size. Names are matched exactly, as EC2 does (lower case).
    """
    family, dot, size = instance_type.partition(".")
    entry = _table().get(family) if dot else None
    if entry is None or size not in entry.sizes:
        return None
    return InstanceTypeInfo(
        instance_type, family, size, entry.architecture, entry.accelerator, entry.sizes[size]
    )


def nearest(instance_type: str, n: int = 3) -> list[str]:
    """Up to n known instance types close to a mistyped one, best first, for "did you mean".

    A known family keeps its name and gets its closest sizes; an unknown one is replaced by the
    closest family names, each with the given size (or its closest size in that family).
    """
    table = _table()
    family, _, size = instance_type.strip().lower().partition(".")
    if family in table:
        families, per_family = [family], n
    else:
        families, per_family = difflib.get_close_matches(family, list(table), n=n, cutoff=0.6), 1
    found: list[str] = []
    for fam in families:
        sizes = list(table[fam].sizes)
        close = [size] if size in sizes else difflib.get_close_matches(size, sizes, per_family, 0.5)
        found += [f"{fam}.{s}" for s in (close or sizes[:1])[:per_family]]
    return found[:n]
