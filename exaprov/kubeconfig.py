"""The kubeconfig entry for a cluster, merged into the user's file like `aws eks update-kubeconfig`.

Owns: building the cluster / user / context entries for one EKS cluster (the user is
an *exec* plugin that fetches a token: `aws eks get-token`, or exaprov's own
`exaprov token` so kubectl works without the AWS CLI), merging them by name into an
existing kubeconfig, and writing the file mode 0600.

Merging never touches other clusters, users or contexts: an entry is replaced only
when it has the same name (the cluster ARN, or the alias for the context). Other
top-level keys (preferences, extensions) are kept as they are.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from exaprov.errors import InputError
from exaprov.state import write_private

EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"
_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


def default_path() -> Path:
    """The file kubectl writes to: the first entry of $KUBECONFIG, else ~/.kube/config."""
    for item in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if item.strip():
            return Path(item.strip()).expanduser()
    return Path("~/.kube/config").expanduser()


def entry(cluster_name: str, cluster_arn: str, endpoint: str, ca_data: str, region: str,
          alias: str | None = None, profile: str | None = None,
          command: str = "aws") -> dict[str, dict[str, Any]]:
    """The cluster, user and context entries for one cluster (each a named kubeconfig item)."""
    if command == "aws":
        args = ["--region", region, "eks", "get-token", "--cluster-name", cluster_name,
                "--output", "json"]
    else:
        args = ["token", "--cluster-name", cluster_name, "--region", region]
    exec_config: dict[str, Any] = {"apiVersion": EXEC_API_VERSION, "command": command, "args": args}
    if profile:
        exec_config["env"] = [{"name": "AWS_PROFILE", "value": profile}]
    return {
        "cluster": {"name": cluster_arn,
                    "cluster": {"server": endpoint, "certificate-authority-data": ca_data}},
        "user": {"name": cluster_arn, "user": {"exec": exec_config}},
        "context": {"name": alias or cluster_arn,
                    "context": {"cluster": cluster_arn, "user": cluster_arn}},
    }


def merge(existing: dict[str, Any] | None, new_entry: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A copy of `existing` with the entry's items replaced or appended by name, and made current."""
    _check(existing, "kubeconfig")
    config: dict[str, Any] = copy.deepcopy(existing) if existing else {}
    config.setdefault("apiVersion", "v1")
    config.setdefault("kind", "Config")
    for section, key in _SECTIONS:
        item = copy.deepcopy(new_entry[key])
        items = list(config.get(section) or [])
        for index, current in enumerate(items):
            if isinstance(current, dict) and current.get("name") == item["name"]:
                items[index] = item
                break
        else:
            items.append(item)
        config[section] = items
    config["current-context"] = new_entry["context"]["name"]
    return config


def update_kubeconfig(path: Path, new_entry: dict[str, dict[str, Any]]) -> Path:
    """Merge the entry into the kubeconfig at `path` (created if missing), written 0600."""
    path = Path(path).expanduser()
    # A kubeconfig that is a symlink (dotfiles) is updated where it points, not replaced.
    target = path.resolve() if path.is_symlink() else path
    existing: Any = None
    try:
        text = target.read_text()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise InputError(f"{path}: cannot read the kubeconfig ({exc.strerror})") from None
    if text.strip():
        try:
            existing = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not a valid kubeconfig (invalid YAML: {exc})",
                             hint="the file was left untouched; fix or move it, then run again") from None
    _check(existing, str(path))
    merged = merge(existing, new_entry)
    # write_private replaces the file with a fresh 0600 one: tokens and endpoints are
    # private even when the old file was group- or world-readable.
    write_private(target, yaml.safe_dump(merged, default_flow_style=False, sort_keys=False))
    return path


def _check(config: Any, where: str) -> None:
    """Refuse a kubeconfig whose shape would make a merge lose or mangle entries."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise InputError(f"{where}: not a valid kubeconfig (the top level is not a mapping)",
                         hint="the file was left untouched; fix or move it, then run again")
    for section, _ in _SECTIONS:
        if config.get(section) is not None and not isinstance(config[section], list):
            raise InputError(f"{where}: not a valid kubeconfig ({section!r} is not a list)",
                             hint="the file was left untouched; fix or move it, then run again")
