"""The config file: defaults, derived names, every rule, and the wording of its errors."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_configs import BAD_CONFIGS, BAD_YAML_TEXTS, POOL
from pydantic import BaseModel

from exaprov.config import (
    SUPPORTED_KUBERNETES_VERSIONS,
    Config,
    load_config,
    parse_config,
)
from exaprov.config_template import render_config
from exaprov.errors import ConfigError

_PATH_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[('(?:[^'\\]|\\.)*')\]")


def _path_keys(path: str) -> list[str | int]:
    """`cluster.runner_pools[1].suffix` -> ["cluster", "runner_pools", 1, "suffix"]."""
    keys: list[str | int] = []
    for match in _PATH_TOKEN.finditer(path):
        plain, index, quoted = match.groups()
        keys.append(plain if plain else int(index) if index else ast.literal_eval(quoted))
    return keys


def _value_at(data: Any, path: str) -> Any:
    for key in _path_keys(path):
        data = data[key]
    return data


def _problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.exit_code == 2
    return info.value.problems


def _assert_clean(lines: list[str]) -> None:
    """Our wording only: one line per problem, no pydantic phrasing or links."""
    for line in lines:
        assert "\n" not in line
        for leak in ("Input should", "pydantic", "http", "Value error"):
            assert leak not in line, line


# --- bad configs ---------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "path"), [case[1:] for case in BAD_CONFIGS],
                         ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_names_its_key_and_value(data: dict[str, Any], path: str) -> None:
    problems = _problems(data)
    _assert_clean(problems)
    assert len(problems) == 1, problems  # one broken rule, one line: no cascades
    line = problems[0]
    assert line.startswith(path + ": "), problems
    if "unknown key" in line:
        assert "valid keys here: " in line
    elif "required key is missing" not in line:
        assert "(got " in line, line
        value, last_key = _value_at(data, path), _path_keys(path)[-1]
        if isinstance(value, (str, int, float, bool)):
            assert repr(value)[:30] in line or repr(last_key) in line, line


def test_bad_config_ids_are_unique_and_plenty() -> None:
    ids = [case[0] for case in BAD_CONFIGS]
    assert len(ids) == len(set(ids)) >= 35


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in BAD_YAML_TEXTS],
                         ids=[case[0] for case in BAD_YAML_TEXTS])
def test_bad_yaml_text_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "exaprov.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert len(info.value.problems) == 1
    _assert_clean(info.value.problems)
    assert expected in info.value.problems[0]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path)


def test_parse_config_refuses_non_mappings() -> None:
    for data in (None, [], "name: x"):
        assert len(_problems(data)) == 1


def test_unquoted_version_in_yaml_says_to_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "exaprov.yaml"
    path.write_text("name: example\ncluster:\n  cluster_version: 1.30\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = info.value.problems
    assert line.startswith("cluster.cluster_version: must be a quoted string")
    assert "(got 1.3)" in line


def test_several_problems_are_all_reported_one_line_each() -> None:
    data = {
        "name": "averylongname",
        "regoin": "x",
        "network": {"vpc_cidr_block": "10.255.1.0/16"},
        "cluster": {"log_retention_in_days": 91,
                    "runner_pools": [POOL, {**POOL, "suffix": "b", "capacity_type": "spot"}]},
        "module_repo_backend": {"db_port": 80, "postgres_version": "16.3"},
    }
    problems = _problems(data)
    _assert_clean(problems)
    by_path = {line.split(": ")[0]: line for line in problems}
    assert len(by_path) == len(problems) == 7
    assert set(by_path) == {
        "name", "regoin", "network.vpc_cidr_block", "cluster.log_retention_in_days",
        "cluster.runner_pools[1].capacity_type", "module_repo_backend.postgres_version",
        "module_repo_backend.db_port"}
    assert "did you mean 10.255.0.0/16?" in by_path["network.vpc_cidr_block"]
    assert by_path["cluster.runner_pools[1].capacity_type"].endswith(
        "must be one of ON_DEMAND, SPOT (got 'spot')")


def test_error_wording_examples() -> None:
    [line] = _problems({"name": "example", "network": {"vpc_cidr_bloc": "10.0.0.0/16"}})
    assert line == ("network.vpc_cidr_bloc: unknown key (did you mean vpc_cidr_block?); "
                    "valid keys here: vpc_cidr_block, vpc_name")
    [line] = _problems({"name": "example", "cluster": {"runner_pools": [
        POOL, {**POOL, "suffix": "b", "min_size": 5, "max_size": 2}]}})
    assert "min_size 5" in line and "(got 2)" in line
    [line] = _problems({"name": "averylongname"})
    assert "cluster.cluster_name" in line and "exafunction-cluster-averylongname" in line


# --- good configs --------------------------------------------------------------------------

def test_name_only_gets_every_spec_default() -> None:
    cfg = parse_config({"name": "example"})
    assert cfg.region == "us-west-1"
    assert cfg.tags == {"owner": "exafunction"}
    assert cfg.network.vpc_name == "exafunction-vpc-example"
    assert cfg.network.vpc_cidr_block == "10.255.0.0/16"
    cluster = cfg.cluster
    assert cluster.cluster_name == "exafunction-cluster-example"
    # 1.34 left EKS standard support on 2026-12-02: the default is 1.35 (standard to 2027-03-27).
    assert cluster.cluster_version == "1.35" and "1.35" in SUPPORTED_KUBERNETES_VERSIONS
    assert (cluster.support_type, cluster.deletion_protection, cluster.addons) == (
        "STANDARD", True, {})
    assert cluster.endpoint_public_access_cidrs == ["0.0.0.0/0"]
    assert cluster.log_retention_in_days == 90
    assert cluster.kms_key_administrators == []
    assert cluster.instance_tags == cluster.autoscaling_group_tags == {"owner": "exafunction"}
    assert cluster.additional_node_groups == {}
    assert cluster.aws_auth_roles == cluster.aws_auth_users == []
    assert cluster.imds_hop_limit == 1 and cluster.detailed_monitoring is True
    cpu, gpu = cluster.runner_pools
    assert (cpu.suffix, cpu.node_instance_category, cpu.capacity_type, cpu.node_instance_type,
            cpu.disk_size, cpu.min_size, cpu.max_size, cpu.accelerator_label) == (
        "cpu", "cpu", "SPOT", "m5.xlarge", 100, 1, 4, "")
    assert (gpu.suffix, gpu.node_instance_category, gpu.capacity_type, gpu.node_instance_type,
            gpu.disk_size, gpu.min_size, gpu.max_size, gpu.accelerator_label) == (
        "gpu", "gpu", "ON_DEMAND", "g4dn.xlarge", 100, 0, 3, "nvidia-tesla-t4")
    assert gpu.additional_taints == [] and gpu.additional_labels == {}
    # Rolling updates replace a third of the nodes at once; auto repair for accelerator pools.
    assert (cpu.max_unavailable_percentage, gpu.max_unavailable_percentage) == (33, 33)
    assert (cpu.repairs_nodes, gpu.repairs_nodes) == (False, True)
    backend = cfg.module_repo_backend
    assert backend is not None
    assert backend.model_dump() == {
        "exadeploy_id": "exafunction-mrbe-example", "db_storage": 20, "postgres_version": "16",
        "db_username": "exafunction", "db_port": 5432, "db_instance_class": "db.t4g.micro",
        "db_storage_encrypted": True, "db_storage_type": "gp3", "db_max_allocated_storage": 100,
        "db_backup_retention_days": 7, "db_deletion_protection": True, "db_extended_support": False,
        "db_password_rotation_days": None}
    assert cfg.state is None


@pytest.mark.parametrize("value", [None, False])
def test_backend_can_be_switched_off(value: Any) -> None:
    assert parse_config({"name": "example", "module_repo_backend": value}).module_repo_backend \
        is None


def test_empty_sections_mean_defaults() -> None:
    defaults = parse_config({"name": "example"})
    assert parse_config({"name": "example", "network": None, "cluster": None,
                         "module_repo_backend": {}}) == defaults
    assert parse_config({"name": "example", "module_repo_backend": True}) == defaults


def test_given_names_win_and_free_the_name_length() -> None:
    name = "a-rather-long-deployment-name"
    cfg = parse_config({"name": name, "network": {"vpc_name": "vpc-1"},
                        "cluster": {"cluster_name": "c1"},
                        "module_repo_backend": {"exadeploy_id": "mrbe-1"}})
    assert (cfg.network.vpc_name, cfg.cluster.cluster_name) == ("vpc-1", "c1")
    assert cfg.module_repo_backend is not None
    assert cfg.module_repo_backend.exadeploy_id == "mrbe-1"
    # Without a backend, its derived id does not constrain the name either.
    cfg = parse_config({"name": name, "cluster": {"cluster_name": "c1"},
                        "module_repo_backend": None})
    assert cfg.network.vpc_name == f"exafunction-vpc-{name}"


def test_accepted_variants() -> None:
    cfg = parse_config({
        "name": "prod", "region": "us-gov-west-1",
        "state": "s3://my-state-bucket/exaprov/prod.json",
        "cluster": {
            "cluster_version": "1.29",
            "kms_key_administrators": ["arn:aws:iam::111122223333:root",
                                       "arn:aws-cn:iam::111122223333:role/path/admin"],
            "runner_pools": [{**POOL, "additional_taints": [
                {"key": "nvidia.com/gpu", "effect": "NO_SCHEDULE"}],
                "additional_labels": {"example.com/team": "ml-1"}}],
            "additional_node_groups": {"batch_jobs": {"node_instance_type": "c5.2xlarge",
                                                      "max_size": 1}},
            "aws_auth_users": [{"userarn": "arn:aws:iam::111122223333:user/ana",
                                "username": "ana", "groups": ["system:masters"]}],
        },
        "module_repo_backend": {"postgres_version": 17},
    })
    assert cfg.module_repo_backend is not None
    assert cfg.module_repo_backend.postgres_version == "17"
    assert cfg.cluster.runner_pools[0].additional_taints[0].value == ""


# --- the template --------------------------------------------------------------------------

@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize(("name", "region"), [("example", "us-west-1"), ("prod", "eu-west-3"),
                                              ("yes", "us-east-1")])
def test_template_loads_back_to_the_defaults(name: str, region: str, full: bool) -> None:
    text = render_config(name, region, full=full)
    assert parse_config(yaml.safe_load(text)) == parse_config({"name": name, "region": region})


def test_template_file_loads_through_load_config(tmp_path: Path) -> None:
    path = tmp_path / "exaprov.yaml"
    path.write_text(render_config())
    assert load_config(path) == parse_config({"name": "example"})


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every field name of `model` and of the models nested in it, however deep."""
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        stack: list[Any] = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                names |= _field_names(tp, seen)
            stack.extend(getattr(tp, "__args__", ()))
    return names


def test_template_names_every_field() -> None:
    text = render_config()
    names = _field_names(Config, set())
    assert {"suffix", "effect", "rolearn", "userarn", "db_storage_encrypted"} <= names
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", text))
    assert not missing, f"add these keys to config_template.py: {missing}"
