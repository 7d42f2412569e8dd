"""Before a Kubernetes upgrade: what EKS's upgrade insights say, and the user's go-ahead.

EKS checks a cluster against the next minor version (deprecated APIs still called, kubelet
skew, add-on compatibility...) and reports each check as an insight, category
UPGRADE_READINESS, status PASSING | WARNING | ERROR | UNKNOWN (eks:ListInsights). An ERROR
means the upgrade would likely break something running in the cluster, so `up` shows them
and goes on only with the user's consent (`--yes` gives it), asked before any change at all.
"""

from __future__ import annotations

from typing import Any

from exaprov.aws import paginate
from exaprov.errors import InputError

UPGRADE_READINESS = "UPGRADE_READINESS"


def blocking_insights(eks: Any, cluster: str) -> list[dict[str, Any]]:
    """The cluster's UPGRADE_READINESS insights with status ERROR."""
    return paginate(eks, "list_insights", "insights", clusterName=cluster,
                    filter={"categories": [UPGRADE_READINESS], "statuses": ["ERROR"]})


def describe_insight(insight: dict[str, Any]) -> str:
    status = insight.get("insightStatus", {})
    reason = status.get("reason") or insight.get("description") or ""
    return (f"EKS upgrade insight {status.get('status', '?')} for Kubernetes "
            f"{insight.get('kubernetesVersion', '?')}: {insight.get('name', '?')}"
            f"{': ' + reason if reason and reason != insight.get('name') else ''}")


def preflight(cfg: Any, state: Any, aws: Any, confirm: Any, say: Any) -> None:
    """An upgrade about to start (the config's version one minor above the cluster's): show the
    ERROR insights and ask. Costs nothing in a converged run: the state's recorded version
    must differ from the config's before EKS is asked anything."""
    recorded = (state.outputs.get("cluster") or {}).get("cluster_version")
    wanted = cfg.cluster.cluster_version
    if not recorded or recorded == wanted:
        return
    eks = aws.client("eks")
    try:
        live = eks.describe_cluster(name=cfg.cluster.cluster_name)["cluster"]
    except Exception as exc:  # noqa: BLE001 - gone or unreadable: the cluster step tells
        if type(exc).__name__ == "ResourceNotFoundException" or "NotFound" in str(exc):
            return
        raise
    live_minor, wanted_minor = (int(v.split(".")[1]) for v in (live["version"], wanted))
    if wanted_minor != live_minor + 1:
        return  # nothing to upgrade, or a jump the cluster step refuses
    blockers = blocking_insights(eks, cfg.cluster.cluster_name)
    if not blockers:
        return
    for insight in blockers:
        say(describe_insight(insight))
    question = (f"EKS reports {len(blockers)} upgrade insight(s) with status ERROR for "
                f"{live['version']} → {wanted}. Upgrade anyway?")
    if not confirm(question):
        raise InputError(f"cluster.cluster_version: the upgrade {live['version']} → {wanted} was not "
                         f"confirmed ({len(blockers)} EKS upgrade insight(s) with status ERROR); "
                         "nothing was changed",
                         hint="fix what the insights name (aws eks list-insights), or run `exaprov "
                              "up --yes` to upgrade anyway")
