"""kubeconfig entries, merge by name, the 0600 writer, and the built-in token (no AWS)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import yaml

from exaprov.errors import InputError
from exaprov.kubeconfig import default_path, entry, merge, update_kubeconfig
from exaprov.token import TOKEN_PREFIX, get_token

ARN = "arn:aws:eks:us-west-1:123456789012:cluster/demo"
OTHER_ARN = "arn:aws:eks:eu-west-1:123456789012:cluster/other"
CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()


def _entry(**kwargs: Any) -> dict[str, dict[str, Any]]:
    return entry("demo", ARN, "https://ABC.gr7.us-west-1.eks.amazonaws.com", CA, "us-west-1", **kwargs)


def _other() -> dict[str, Any]:
    other = entry("other", OTHER_ARN, "https://other.example", CA, "eu-west-1")
    return {"apiVersion": "v1", "kind": "Config", "preferences": {"colors": True},
            "clusters": [other["cluster"]], "users": [other["user"]], "contexts": [other["context"]],
            "current-context": OTHER_ARN}


def _named(config: dict[str, Any], section: str) -> dict[str, Any]:
    return {item["name"]: item for item in config[section]}


def test_merge_into_nothing_makes_a_whole_config() -> None:
    config = merge(None, _entry())
    assert config["apiVersion"] == "v1" and config["kind"] == "Config"
    assert config["clusters"] == [{"name": ARN, "cluster": {
        "server": "https://ABC.gr7.us-west-1.eks.amazonaws.com", "certificate-authority-data": CA}}]
    assert config["contexts"] == [{"name": ARN, "context": {"cluster": ARN, "user": ARN}}]
    exec_config = config["users"][0]["user"]["exec"]
    assert exec_config["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert exec_config["command"] == "aws"
    assert exec_config["args"] == ["--region", "us-west-1", "eks", "get-token",
                                   "--cluster-name", "demo", "--output", "json"]
    assert "env" not in exec_config
    assert config["current-context"] == ARN


def test_merge_keeps_others_and_replaces_same_name() -> None:
    existing = _other()
    stale = entry("demo", ARN, "https://old.example", "old-ca", "us-west-1")
    for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
        existing[section].append(stale[key])
    before = json.loads(json.dumps(existing))

    config = merge(existing, _entry())

    assert existing == before  # the input is not mutated
    for section in ("clusters", "users", "contexts"):
        assert [item["name"] for item in config[section]] == [OTHER_ARN, ARN]
        assert config[section][0] == before[section][0]
    assert _named(config, "clusters")[ARN]["cluster"]["server"].startswith("https://ABC.")
    assert config["current-context"] == ARN
    assert config["preferences"] == {"colors": True}


def test_alias_names_the_context_and_becomes_current() -> None:
    config = merge(_other(), _entry(alias="demo"))
    assert _named(config, "contexts")["demo"]["context"] == {"cluster": ARN, "user": ARN}
    assert ARN not in _named(config, "contexts")
    assert config["current-context"] == "demo"


def test_profile_goes_in_the_exec_env() -> None:
    exec_config = _entry(profile="prod")["user"]["user"]["exec"]
    assert exec_config["env"] == [{"name": "AWS_PROFILE", "value": "prod"}]


def test_exaprov_command_variant() -> None:
    exec_config = _entry(command="exaprov")["user"]["user"]["exec"]
    assert exec_config["command"] == "exaprov"
    assert exec_config["args"] == ["token", "--cluster-name", "demo", "--region", "us-west-1"]


def test_update_creates_file_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".kube" / "config"
    old_umask = os.umask(0)
    try:
        assert update_kubeconfig(path, _entry()) == path
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert yaml.safe_load(path.read_text())["current-context"] == ARN


def test_update_merges_and_tightens_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_other()))
    path.chmod(0o644)
    update_kubeconfig(path, _entry())
    config = yaml.safe_load(path.read_text())
    assert [c["name"] for c in config["clusters"]] == [OTHER_ARN, ARN]
    assert config["preferences"] == {"colors": True}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("text", ["clusters: [unclosed\n", "- just\n- a list\n", "clusters: nope\n"])
def test_invalid_kubeconfig_is_an_input_error_and_left_untouched(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(str(path))):
        update_kubeconfig(path, _entry())
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["config"]


def test_default_path_is_the_first_of_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{second}")
    assert default_path() == first
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path() == tmp_path / ".kube" / "config"


def test_kubectl_reads_the_file(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not on PATH")
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_other()))
    update_kubeconfig(path, _entry(alias="demo", profile="prod"))
    result = subprocess.run([kubectl, "config", "view", "--kubeconfig", str(path), "-o", "json"],
                            capture_output=True, text=True, timeout=20, check=True)
    view = json.loads(result.stdout)
    assert view["current-context"] == "demo"
    clusters = _named(view, "clusters")
    assert set(clusters) == {ARN, OTHER_ARN}
    assert clusters[ARN]["cluster"]["server"] == "https://ABC.gr7.us-west-1.eks.amazonaws.com"
    exec_config = _named(view, "users")[ARN]["user"]["exec"]
    assert exec_config["command"] == "aws"
    assert exec_config["env"] == [{"name": "AWS_PROFILE", "value": "prod"}]


def test_token_is_a_presigned_caller_identity_url() -> None:
    session = boto3.Session(aws_access_key_id="AKID", aws_secret_access_key="s", region_name="us-west-1")
    credential = get_token(session, "demo", "us-west-1")
    assert credential["kind"] == "ExecCredential"
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert credential["status"]["expirationTimestamp"].endswith("Z")
    token = credential["status"]["token"]
    assert token.startswith(TOKEN_PREFIX) and "=" not in token
    encoded = token[len(TOKEN_PREFIX):]
    url = urlparse(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode())
    assert (url.scheme, url.hostname) == ("https", "sts.us-west-1.amazonaws.com")
    query = parse_qs(url.query)
    assert query["Action"] == ["GetCallerIdentity"]
    assert query["X-Amz-Expires"] == ["60"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0].split(";")
    assert "x-k8s-aws-id" not in query  # a signed header, not a query parameter


def test_token_uses_the_given_endpoint() -> None:
    session = boto3.Session(aws_access_key_id="AKID", aws_secret_access_key="s", region_name="us-west-1")
    token = get_token(session, "demo", "us-west-1", endpoint_url="http://127.0.0.1:4566")["status"]["token"]
    encoded = token[len(TOKEN_PREFIX):]
    assert base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).startswith(b"http://127.0.0.1:4566/")
