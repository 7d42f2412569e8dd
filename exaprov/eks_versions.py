"""Kubernetes versions on EKS: which are in standard support, until when, and what that costs.

EKS gives each minor version 14 months of standard support after its EKS release, then 12
months of extended support billed at $0.60 per cluster-hour instead of $0.10; at the end of
extended support EKS upgrades the control plane itself (Amazon EKS user guide, "Understand the
Kubernetes version lifecycle on EKS"; pricing: aws.amazon.com/eks/pricing, December 2026).

The truth is `eks:DescribeClusterVersions` (status and dates per version). Without AWS access
(`exaprov init` on a laptop with no credentials) exaprov falls back on the table it ships,
`exaprov/data/eks_versions.json`, which names its date and sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

STANDARD_HOURLY = 0.10  # USD per cluster-hour, standard support (EKS pricing, Dec 2026)
EXTENDED_HOURLY = 0.60  # USD per cluster-hour, extended support
WARN_DAYS = 60  # warn this long before standard support ends (EKS's own notice period)

STANDARD, EXTENDED, UNSUPPORTED = "STANDARD_SUPPORT", "EXTENDED_SUPPORT", "UNSUPPORTED"
# DescribeClusterVersions' older `status` field spells them in lower case with hyphens.
_OLD_STATUS = {"standard-support": STANDARD, "extended-support": EXTENDED,
               "unsupported": UNSUPPORTED}


@dataclass(frozen=True)
class VersionInfo:
    version: str
    status: str  # STANDARD_SUPPORT | EXTENDED_SUPPORT | UNSUPPORTED
    end_of_standard_support: date | None
    end_of_extended_support: date | None
    approximate: bool = False  # dates estimated (the shipped table only)
    source: str = "eks"  # "eks" (DescribeClusterVersions) or "table (as of <date>)"


def minor(version: str) -> int:
    return int(version.split(".")[1])


def today() -> date:
    return datetime.now(timezone.utc).date()


def _status_on(day: date, end_standard: date, end_extended: date) -> str:
    # AWS bills extended support from the start (UTC) of the end-of-standard-support day.
    if day < end_standard:
        return STANDARD
    return EXTENDED if day < end_extended else UNSUPPORTED


@cache
def _table_data() -> dict[str, Any]:
    text = resources.files("exaprov.data").joinpath("eks_versions.json").read_text()
    return dict(json.loads(text))


def table_date() -> str:
    return str(_table_data()["as_of"])


def shipped(day: date | None = None) -> dict[str, VersionInfo]:
    """The shipped table, each version's status computed for `day` (default: today, UTC)."""
    day = day or today()
    found = {}
    for row in _table_data()["versions"]:
        end_std = date.fromisoformat(row["end_of_standard_support"])
        end_ext = date.fromisoformat(row["end_of_extended_support"])
        found[row["version"]] = VersionInfo(
            row["version"], _status_on(day, end_std, end_ext), end_std, end_ext,
            bool(row.get("approximate")), f"exaprov's table as of {table_date()}")
    return found


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).date()
    if isinstance(value, date):
        return value
    return None


def from_eks(eks: Any, versions: list[str] | None = None) -> dict[str, VersionInfo]:
    """DescribeClusterVersions (every version EKS offers, or only `versions`)."""
    kwargs: dict[str, Any] = {"clusterVersions": versions} if versions else {}
    found = {}
    for page in eks.get_paginator("describe_cluster_versions").paginate(**kwargs):
        for row in page.get("clusterVersions", []):
            status = row.get("versionStatus") or _OLD_STATUS.get(str(row.get("status")), UNSUPPORTED)
            found[row["clusterVersion"]] = VersionInfo(
                row["clusterVersion"], status, _day(row.get("endOfStandardSupportDate")),
                _day(row.get("endOfExtendedSupportDate")))
    return found


def newest_standard(versions: dict[str, VersionInfo]) -> str | None:
    standard = [v for v in versions.values() if v.status == STANDARD]
    return max(standard, key=lambda v: minor(v.version)).version if standard else None


def describe(info: VersionInfo | None, version: str, day: date | None = None) -> tuple[str, str | None]:
    """(one line on the version's support, a warning or None).

    Warns when the version is in extended support (billed at the higher rate) or leaves
    standard support within WARN_DAYS, with the dates and the hourly price difference."""
    day = day or today()
    if info is None:
        return f"Kubernetes {version}: EKS does not list it", \
            f"Kubernetes {version} is not offered by EKS: upgrade the cluster"
    approx = " (approximate)" if info.approximate else ""
    std, ext = info.end_of_standard_support, info.end_of_extended_support
    extra = f"${EXTENDED_HOURLY - STANDARD_HOURLY:.2f} more per cluster-hour " \
            f"(${EXTENDED_HOURLY:.2f} instead of ${STANDARD_HOURLY:.2f})"
    line = (f"Kubernetes {version}: {info.status.replace('_', ' ').lower()}; standard support "
            f"ends {std or '?'}, extended support ends {ext or '?'}{approx} [{info.source}]")
    if info.status == EXTENDED:
        return line, (f"Kubernetes {version} left standard support on {std} and is in extended "
                      f"support until {ext}: {extra}. Raise cluster.cluster_version one minor at "
                      f"a time to a version in standard support")
    if info.status == UNSUPPORTED:
        return line, (f"Kubernetes {version} is past the end of extended support ({ext}): EKS "
                      f"upgrades the control plane itself. Raise cluster.cluster_version")
    if std is not None and (std - day).days <= WARN_DAYS:
        return line, (f"Kubernetes {version} leaves standard support on {std} (in "
                      f"{(std - day).days} days); after that it is in extended support until "
                      f"{ext}: {extra}, or, with cluster.support_type STANDARD, EKS upgrades the "
                      f"control plane itself. Plan the upgrade")
    return line, None
