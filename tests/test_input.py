"""Every mistake a user can make gets a clear answer before anything happens.

The table: each case is a way to get the config, a flag, a path or the environment wrong.
Each must end in exit 2 with one error message naming the key, flag or file at fault, with
no AWS request made (counted by a botocore hook), no traceback and no file changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from exaprov.cli import main
from tests.bad_configs import POOL
from tests.conftest import write_config
from tests.faults import faults_fixture  # noqa: F401

READ_ONLY_FOLDER = "/proc/1" if os.geteuid() == 0 else None  # root can write any 0500 folder


def _read_only_folder(root: Path) -> Path:
    """A folder this user cannot write in."""
    if READ_ONLY_FOLDER:
        return Path(READ_ONLY_FOLDER)
    folder = root / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def _pools(n: int) -> list[dict[str, Any]]:
    return [{**POOL, "suffix": f"p{i}"} for i in range(n)]


def _config_text(text: str) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        Path("exaprov.yaml").write_text(text)
        return ["plan"]
    return setup


def _config(data: dict[str, Any], *args: str) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        write_config({"name": "example", **data})
        return list(args) or ["plan"]
    return setup


def _args(*args: str, env: dict[str, str] | None = None) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        for key, value in (env or {}).items():
            os.environ[key] = value
        return list(args)
    return setup


def _fifo(flag: str, *command: str) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        os.mkfifo("pipe")
        return [*command, flag, "pipe"]
    return setup


def _unwritable_state(*command: str) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        folder = _read_only_folder(work)
        return [*command, "--state", str(folder / "example.json")]
    return setup


def _init_into_read_only(work: Path) -> list[str]:
    return ["init", "--config", str(_read_only_folder(work) / "exaprov.yaml")]


def _tfstate_into_folder(work: Path) -> list[str]:
    Path("out").mkdir()
    return ["outputs", "-o", "tfstate", "--file", "out"]


def _kubeconfig_folder(work: Path) -> list[str]:
    Path("kube").mkdir()
    return ["kubeconfig", "--file", "kube"]


def _state_with(**fields: Any) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        state = {"format_version": 1, "lineage": "4f9e1a70-0000-4000-8000-000000000000",
                 "serial": 3, "exaprov_version": "0", "deployment": "example",
                 "region": "us-west-1", "account_id": None, "resources": {}, "outputs": {},
                 **fields}
        Path("state").mkdir(mode=0o700)
        Path("state/example.json").write_text(json.dumps(state))
        return ["plan"]
    return setup


_LOCK_HOLDER: list[int] = []


def _lock_held_with_escape_codes(work: Path) -> list[str]:
    """Another (live) exaprov holds the lock, and its lock file says something nasty."""
    Path("state").mkdir(mode=0o700)
    fd = os.open("state/example.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"pid": 1, "host": "\x1b[2J\x1b[31mevil", "command": "up\x07",
                             "since": "now"}).encode())
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # flock locks per open file: we hold it
    _LOCK_HOLDER.append(fd)
    return ["up", "--yes"]


BILLION_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
    for a, b in zip("abcdefghi", "bcdefghij", strict=True))
DEEP = "name: example\ncluster: " + "[" * 500 + "]" * 500 + "\n"

# (case id, setup(work folder) -> command line, text the message must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # regions
    ("region-us-west-9", _config({"region": "us-west-9"}), "region"),
    ("region-xx-fake-1", _config({"region": "xx-fake-1"}), "region"),
    ("region-flag-zz-nowhere-9", _args("plan", "--region", "zz-nowhere-9"), "--region"),
    ("peer-region-flag", _args("peer", "--vpc-id", "vpc-0123456789abcdef0", "--peer-region",
                               "mars-1"), "--peer-region"),
    ("init-region-flag", _args("init", "--config", "new.yaml", "--region", "us-west-9"),
     "--region"),
    # YAML 1.1 number forms
    ("yaml-octal-port", _config_text("name: example\nmodule_repo_backend:\n  db_port: 05432\n"),
     "module_repo_backend.db_port"),
    ("yaml-octal-disk", _config_text("name: example\ncluster:\n  runner_pools:\n"
                                     "    - {suffix: a, node_instance_type: m5.large, "
                                     "max_size: 2, disk_size: 0100}\n"),
     "cluster.runner_pools[0].disk_size"),
    ("yaml-octal-postgres", _config_text("name: example\nmodule_repo_backend:\n"
                                         "  postgres_version: 016\n"),
     "module_repo_backend.postgres_version"),
    ("yaml-sexagesimal", _config_text("name: example\nmodule_repo_backend:\n  db_port: 1:30:00\n"),
     "module_repo_backend.db_port"),
    ("yaml-0o-octal", _config_text("name: example\ncluster:\n  log_retention_in_days: 0o14\n"),
     "cluster.log_retention_in_days"),
    ("yaml-underscores", _config_text("name: example\nmodule_repo_backend:\n  db_storage: 1_000\n"),
     "module_repo_backend.db_storage"),
    ("yaml-yes-is-text", _config_text("name: example\nmodule_repo_backend:\n"
                                      "  db_storage_encrypted: yes\n"),
     "module_repo_backend.db_storage_encrypted"),
    # YAML bombs
    ("yaml-billion-laughs", _config_text(BILLION_LAUGHS), "exaprov.yaml"),
    ("yaml-500-levels", _config_text(DEEP), "exaprov.yaml"),
    ("yaml-alias-loop", _config_text("name: example\ncluster: &c {runner_pools: [*c]}\n"),
     "exaprov.yaml"),
    # paths
    ("state-empty", _args("plan", "--state", ""), "--state"),
    ("config-dev-zero", _args("plan", "--config", "/dev/zero"), "--config"),
    ("config-fifo", _fifo("--config", "plan"), "--config"),
    ("state-fifo", _fifo("--state", "up", "--yes"), "--state"),
    ("state-folder-read-only-up", _unwritable_state("up", "--yes"), "--state"),
    ("state-folder-read-only-recover", _unwritable_state("state", "recover", "--yes"), "--state"),
    ("init-into-read-only-folder", _init_into_read_only, "--config"),
    ("outputs-tfstate-into-folder", _tfstate_into_folder, "--file"),
    ("kubeconfig-file-folder", _kubeconfig_folder, "--file"),
    ("state-push-to-device", _args("state", "push", "/dev/null"), "DESTINATION"),
    # endpoints
    ("endpoint-not-a-url", _args("plan", "--endpoint-url", "not a url"), "--endpoint-url"),
    ("endpoint-env-colons", _args("plan", env={"AWS_ENDPOINT_URL": "::::"}), "AWS_ENDPOINT_URL"),
    ("endpoint-bad-port", _args("plan", "--endpoint-url", "http://127.0.0.1:99999"),
     "--endpoint-url"),
    ("sandbox-and-endpoint", _args("plan", "--sandbox", "--endpoint-url", "http://127.0.0.1:1"),
     "--endpoint-url"),
    # sizes, instance types, limits
    ("max-size-10e30", _config({"cluster": {"runner_pools": [{**POOL, "max_size": 10**30}]}}),
     "cluster.runner_pools[0].max_size"),
    ("min-size-10e30", _config({"cluster": {"runner_pools": [{**POOL, "min_size": 10**30,
                                                              "max_size": 10**30}]}}),
     "cluster.runner_pools[0].min_size"),
    ("instance-type-foo-bar", _config({"cluster": {"runner_pools": [
        {**POOL, "node_instance_type": "foo.bar"}]}}), "cluster.runner_pools[0].node_instance_type"),
    ("gpu-pool-on-m5", _config({"cluster": {"runner_pools": [
        {**POOL, "node_instance_category": "gpu", "node_instance_type": "m5.large"}]}}),
     "cluster.runner_pools[0].node_instance_category"),
    ("inferentia-pool-on-g4dn", _config({"cluster": {"runner_pools": [
        {**POOL, "node_instance_category": "inferentia", "node_instance_type": "g4dn.xlarge"}]}}),
     "cluster.runner_pools[0].node_instance_category"),
    ("64-runner-pools", _config({"cluster": {"runner_pools": _pools(64)}}),
     "cluster.runner_pools"),
    ("quota-env-not-a-number", _args("plan", env={"EXAPROV_EKS_NODE_GROUPS_QUOTA": "lots"}),
     "EXAPROV_EKS_NODE_GROUPS_QUOTA"),
    ("new-family-env-malformed", _args("plan", env={"EXAPROV_EXTRA_INSTANCE_FAMILIES": "m9g"}),
     "EXAPROV_EXTRA_INSTANCE_FAMILIES"),
    # the JSON Schema's former gaps, as exaprov refuses them
    ("schema-gap-cluster-name-30", _config({"cluster": {"cluster_name": "c" * 30}}),
     "cluster.cluster_name"),
    ("schema-gap-cidr-8", _config({"network": {"vpc_cidr_block": "10.0.0.0/8"}}),
     "network.vpc_cidr_block"),
    ("schema-gap-region-mars", _config({"region": "mars-1"}), "region"),
    ("disk-size-fraction", _config({"cluster": {"runner_pools": [{**POOL, "disk_size": 100.5}]}}),
     "cluster.runner_pools[0].disk_size"),
    # smaller ones
    ("route-table-ids-blank", _args("peer", "--vpc-id", "vpc-0123456789abcdef0",
                                    "--route-table-ids", " , "), "--route-table-ids"),
    ("state-account-id-integer", _state_with(account_id=123456789012), "account_id"),
    ("lock-text-escape-codes", _lock_held_with_escape_codes, "locked"),
    ("too-many-public-cidrs", _config({"cluster": {"endpoint_public_access_cidrs": [
        f"10.0.{i}.0/24" for i in range(41)]}}), "cluster.endpoint_public_access_cidrs"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every file and folder under root: mode and content (FIFOs are not read)."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found[str(path.relative_to(root))] = (info.st_mode, content)
    return found


@pytest.fixture
def _clean_env() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    while _LOCK_HOLDER:
        os.close(_LOCK_HOLDER.pop())


@pytest.mark.parametrize(("setup", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_mistake_is_exit_2_naming_it_before_anything_happens(
        workdir: Path, aws: None, calls: Any, _clean_env: None,
        setup: Callable[[Path], list[str]], needle: str) -> None:
    args = setup(workdir)
    before = _snapshot(workdir)
    result = CliRunner().invoke(main, args)
    output = result.output
    assert result.exit_code == 2, (args, output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in output
    assert needle in output, output
    errors = [line for line in output.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, output  # one message (it may list several problems)
    assert "\x1b" not in output and "\x07" not in output  # nothing raw from a file
    assert calls.calls == []
    assert _snapshot(workdir) == before


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


# -- what the rules let through -------------------------------------------------------

def test_yaml_merge_keys_and_aliases_work(tmp_path: Path) -> None:
    from exaprov.config import load_config

    path = tmp_path / "exaprov.yaml"
    path.write_text("name: example\ncluster:\n  runner_pools:\n"
                    "    - &cpu {suffix: a, node_instance_type: m5.large, max_size: 3}\n"
                    "    - <<: *cpu\n      suffix: b\n      max_size: 5\n"
                    "  instance_tags: &tags {owner: ml, since: 2026-01-01, on-call: no}\n"
                    "  autoscaling_group_tags: *tags\n")
    cluster = load_config(path).cluster
    assert [(p.suffix, p.node_instance_type, p.max_size) for p in cluster.runner_pools] == [
        ("a", "m5.large", 3), ("b", "m5.large", 5)]
    # YAML 1.2: dates and yes/no/on/off are text, as a tag value must be.
    assert cluster.instance_tags == cluster.autoscaling_group_tags == {
        "owner": "ml", "since": "2026-01-01", "on-call": "no"}


def test_a_whole_number_written_as_a_float_is_that_number() -> None:
    from exaprov.config import parse_config

    pool = parse_config({"name": "example", "cluster": {"runner_pools": [
        {**POOL, "disk_size": 100.0}]}}).cluster.runner_pools[0]
    assert pool.disk_size == 100 and type(pool.disk_size) is int


def test_opt_ins_for_what_the_installed_data_does_not_know_yet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from exaprov.config import parse_config
    from exaprov.errors import ConfigError

    new = {"name": "example", "region": "ap-newplace-1", "cluster": {"runner_pools": [
        {**POOL, "node_instance_type": "x42q.large"}]}}
    with pytest.raises(ConfigError) as info:
        parse_config(new)
    assert [line.split(":")[0] for line in info.value.problems] == [
        "region", "cluster.runner_pools[0].node_instance_type"]
    assert "EXAPROV_EXTRA_REGIONS=ap-newplace-1" in info.value.problems[0]
    assert "EXAPROV_EXTRA_INSTANCE_FAMILIES=x42q" in info.value.problems[1]
    monkeypatch.setenv("EXAPROV_EXTRA_REGIONS", "ap-newplace-1")
    monkeypatch.setenv("EXAPROV_EXTRA_INSTANCE_FAMILIES", "x42q:arm64")
    cfg = parse_config(new)
    assert cfg.region == "ap-newplace-1"
    from exaprov.steps.node_groups import ami_type

    assert ami_type("cpu", "1.34", "x42q.large") == "AL2023_ARM_64_STANDARD"
    # A raised quota is said the same way.
    many = {"name": "example", "cluster": {"runner_pools": _pools(40)}}
    with pytest.raises(ConfigError, match="Managed node groups per cluster"):
        parse_config(many)
    monkeypatch.setenv("EXAPROV_EKS_NODE_GROUPS_QUOTA", "60")
    assert len(parse_config(many).cluster.runner_pools) == 40


def test_nearest_names_are_offered() -> None:
    from exaprov.config import parse_config
    from exaprov.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"name": "example", "region": "us-west-9", "cluster": {"runner_pools": [
            {**POOL, "node_instance_type": "m5.xlarg"}]}})
    region, itype = info.value.problems
    assert "did you mean" in region and "us-west-1" in region and "us-west-2" in region
    assert "did you mean m5.xlarge" in itype


def test_echoed_values_are_cut_before_rendering() -> None:
    from exaprov.config import parse_config
    from exaprov.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"name": "example", "cluster": {
            "endpoint_public_access_cidrs": ["10.0.0.0/24"] * 100_000}})
    [line] = info.value.problems
    assert len(line) < 400, line


@pytest.mark.parametrize(("itype", "category", "ami"), [
    ("m6g.large", "cpu", "AL2023_ARM_64_STANDARD"),
    ("g5g.xlarge", "gpu", "AL2023_ARM_64_NVIDIA"),
    ("m5.large", "cpu", "AL2023_x86_64_STANDARD"),
    ("g5.xlarge", "gpu", "AL2023_x86_64_NVIDIA"),
    ("inf2.xlarge", "inferentia", "AL2023_x86_64_NEURON"),
])
def test_node_groups_get_the_ami_type_of_their_architecture(
        tmp_path: Path, aws: None, itype: str, category: str, ami: str) -> None:
    """What EKS holds after `up`: each runner group with the AMI type its nodes can boot."""
    import boto3

    from exaprov.steps import STEPS
    from tests.harness import Stack

    stack = Stack(tmp_path, [s for s in STEPS if not s.name.startswith(("database", "backend",
                                                                         "bucket", "peering"))], {
        "name": "example", "module_repo_backend": None, "cluster": {"runner_pools": [
            {**POOL, "suffix": "x", "node_instance_category": category,
             "node_instance_type": itype}]}})
    stack.up()
    eks = boto3.client("eks", region_name="us-west-1")
    group = eks.describe_nodegroup(clusterName="exafunction-cluster-example",
                                   nodegroupName="runner-x")["nodegroup"]
    assert (group["instanceTypes"], group["amiType"]) == ([itype], ami)


# -- file modes -----------------------------------------------------------------------

@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


def test_file_modes_whatever_the_umask(workdir: Path, aws: None, umask_000: None) -> None:
    Path("exaprov.yaml").unlink()
    runner = CliRunner()
    assert runner.invoke(main, ["init", "--name", "example"]).exit_code == 0
    assert stat.S_IMODE(Path("exaprov.yaml").stat().st_mode) == 0o644
    write_config({"name": "example", "module_repo_backend": None,
                  "cluster": {"runner_pools": []}})
    state = Path("state/example.json")
    state.parent.mkdir()
    state.parent.chmod(0o755)  # a folder the user made: left as it is
    result = runner.invoke(main, ["up", "--yes"])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    state.chmod(0o644)  # as an older exaprov or a `cp` may have left it
    assert runner.invoke(main, ["up", "--yes"]).exit_code == 0
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path("state/example.json.backup").stat().st_mode) == 0o600


def test_folders_exaprov_makes_are_0700_whatever_the_umask(tmp_path: Path, umask_000: None) -> None:
    from exaprov.sandbox import sandbox_dir
    from exaprov.state import write_private

    sandbox_dir(tmp_path / "state")
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "sandbox").stat().st_mode) == 0o700
    write_private(tmp_path / "a" / "b" / "s.json", "{}")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "s.json").stat().st_mode) == 0o600


def test_init_keeps_a_tighter_mode(workdir: Path, umask_000: None) -> None:
    Path("exaprov.yaml").chmod(0o600)
    assert CliRunner().invoke(main, ["init", "--force"]).exit_code == 0
    assert stat.S_IMODE(Path("exaprov.yaml").stat().st_mode) == 0o600
    assert yaml.safe_load(Path("exaprov.yaml").read_text())["name"] == "example"


# -- property tests -------------------------------------------------------------------

def _ecma_validator() -> Any:
    """Draft 2020-12 with ECMA-262's `$` (end of input; Python's also matches before a final
    newline), as JSON Schema specifies and editors apply it."""
    import re

    import jsonschema
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, regex: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not re.search(
                regex.replace("$", r"\Z"), instance):
            yield ValidationError(f"{instance!r} does not match {regex!r}")

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(base, {"pattern": pattern})


def _json_shaped(data: Any) -> bool:
    """What a JSON document can hold: string keys, finite numbers."""
    import math

    if isinstance(data, dict):
        return all(isinstance(k, str) and _json_shaped(v) for k, v in data.items())
    if isinstance(data, list):
        return all(_json_shaped(v) for v in data)
    if isinstance(data, float):
        return math.isfinite(data)
    return data is None or isinstance(data, (str, int, bool))


def _schema_breaking(base: dict[str, Any]) -> Any:
    """Configs that break one rule the schema can express (or keep to every rule)."""
    from hypothesis import strategies as st

    from tests.test_fuzz import configs

    def pool(**changes: Any) -> dict[str, Any]:
        return {**base, "cluster": {"runner_pools": [{**POOL, **changes}]}}

    values = st.one_of(
        st.builds(lambda v: {**base, "name": v}, st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
                  | st.text(max_size=8)),
        st.builds(lambda v: {**base, "region": v}, st.sampled_from(
            ["us-west-2", "eu-west-1", "us-west-9", "mars-1", "xx-fake-1", "US-WEST-1"])),
        st.builds(lambda v: {**base, "cluster": {"cluster_name": v}}, st.sampled_from(
            ["c" * 29, "c" * 30, "Abc-1", "1abc", "", None, "a_b"])),
        st.builds(lambda v: {**base, "network": {"vpc_cidr_block": v}}, st.sampled_from(
            ["10.0.0.0/8", "10.0.0.0/16", "10.0.0.0/24", "10.0.0.0/25", "300.0.0.0/16",
             "10.0.1.0/16", "fd00::/56"])),
        st.builds(lambda v: pool(disk_size=v), st.integers(-2, 20000) | st.floats(0, 200)
                  | st.sampled_from([100.0, "100", True])),
        st.builds(lambda a, b: pool(min_size=a, max_size=b), st.integers(-1, 500),
                  st.integers(-1, 500)),
        st.builds(lambda v: pool(node_instance_type=v), st.sampled_from(
            ["m5.large", "foo.bar", "m5.huge", "g4dn.xlarge", "m6g.large", "M5.LARGE"])),
        st.builds(lambda v: pool(suffix=v), st.from_regex(r"[a-z0-9-]{1,60}", fullmatch=True)),
        st.builds(lambda v: {**base, "cluster": {"runner_pools": _pools(v)}},
                  st.integers(0, 30)),
        st.builds(lambda v: {**base, "module_repo_backend": {"postgres_version": v}},
                  st.sampled_from(["16", 16, "016", "16.3", 16.0, 9, "19", True])),
        st.builds(lambda v: {**base, "module_repo_backend": {"db_username": v}},
                  st.sampled_from(["exafunction", "rdsuser", "PG_x", "user", "1a", "a" * 64])),
        st.builds(lambda v: {**base, "tags": v}, st.dictionaries(
            st.sampled_from(["owner", "aws:x", "AWS:y", "Exaprov:z", "", "k" * 129]),
            st.text(max_size=3) | st.just("v" * 257), max_size=3)),
        st.builds(lambda v: {**base, "state": v}, st.sampled_from(
            [None, "", " ", "s3://bucket", "s3://my-bucket/key", "state/x.json"])),
    )
    return values | configs()


def test_the_schema_and_the_validator_agree() -> None:
    """Whatever the config: if exaprov accepts it the schema does; if the schema accepts it and
    exaprov does not, only for rules the schema's description lists as beyond it."""
    from hypothesis import HealthCheck, assume, given, settings

    from exaprov.config import SCHEMA_CANNOT_EXPRESS, json_schema, parse_config
    from exaprov.errors import ConfigError

    validator = _ecma_validator()(json_schema())
    fragments = [fragment for _, fragment in SCHEMA_CANNOT_EXPRESS]

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_schema_breaking({"name": "example"}))
    def check(data: Any) -> None:
        assume(_json_shaped(data))
        schema_errors = [e.message for e in validator.iter_errors(data)]
        try:
            parse_config(data)
        except ConfigError as exc:
            if not schema_errors:
                unexplained = [p for p in exc.problems if not any(f in p for f in fragments)]
                assert not unexplained, (data, unexplained)
        else:
            assert not schema_errors, (data, schema_errors)

    check()


def test_any_yaml_document_is_a_config_or_a_clear_refusal(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from exaprov.config import load_config
    from exaprov.errors import ConfigError

    pieces = st.sampled_from(["name: example\n", "name: ", "&a ", "*a", "<<: ", "[", "]", "{",
                              "}", ", ", "- ", "  ", "\n", ": ", "? ", "!!str ", "!!binary ",
                              "!foo ", "%YAML 1.1\n", "---\n", "...\n", "'", '"', "|\n", ">\n",
                              "#", "0o17", "05432", "1:30", "yes", "~", ".inf", "0x", "1_0",
                              "cluster:\n", "  runner_pools:\n", "\t", "\\", "\x00", "é"])
    path = tmp_path / "exaprov.yaml"

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(pieces | st.text(max_size=5), max_size=40).map("".join))
    def check(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert exc.problems and all("\n" not in p for p in exc.problems)

    check()


def test_any_state_file_is_a_state_or_a_clear_refusal(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from exaprov.errors import StateError
    from exaprov.state import LocalStateStore

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
    valid = {"format_version": 1, "lineage": "x", "serial": 1, "deployment": "example",
             "region": "us-west-1", "resources": {}, "outputs": {}}
    states = st.builds(lambda k, v: {**valid, k: v}, st.sampled_from(sorted(valid)), junk) | junk
    path = tmp_path / "example.json"

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(states.map(json.dumps) | st.text(max_size=30))
    def check(text: str) -> None:
        path.write_text(text)
        try:
            LocalStateStore(path).read()
        except StateError as exc:
            assert str(path) in exc.message

    check()


# -- endpoints that are not AWS -------------------------------------------------------

@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[Any]]]:
    """127.0.0.1: accepts connections and never answers; yields its URL and the accepted ones."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[Any] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_an_endpoint_that_never_answers_is_named_and_given_up_on(
        silent_server: tuple[str, list[Any]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A line names the host after NO_ANSWER_NOTICE seconds; after NO_ANSWER_ATTEMPTS attempts
    (not botocore's 11) the call fails. (The timeouts are shortened for the test.)"""
    from botocore.exceptions import ReadTimeoutError

    from exaprov import aws as aws_module
    from exaprov.aws import Aws

    url, accepted = silent_server
    monkeypatch.setattr(aws_module, "READ_TIMEOUT", 1)
    monkeypatch.setattr(aws_module, "NO_ANSWER_NOTICE", 0.2)
    caplog.set_level("WARNING", logger="exaprov.aws")
    with pytest.raises(ReadTimeoutError):
        Aws("us-west-1", endpoint_url=url).client("sts").get_caller_identity()
    assert len(accepted) == aws_module.NO_ANSWER_ATTEMPTS == 3
    host = url.removeprefix("http://")
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"no answer from {host} after 0 s, still waiting")
               for line in lines), lines
    assert any(f"no answer from {host} after 1 s (sts GetCallerIdentity), retrying" in line
               for line in lines), lines
    assert any(line.endswith("(sts GetCallerIdentity): 3 attempts, giving up") for line in lines), lines


@pytest.fixture
def odd_server() -> Iterator[tuple[str, list[str]]]:
    """127.0.0.1: answers every request with HTTP 501 and an HTML page, except STS (200, not
    XML); yields its URL and the requests' first lines."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            seen.append(body)
            sts = "GetCallerIdentity" in body
            page = b"garbage {" if sts else b"<html><body>501 Not Implemented</body></html>"
            self.send_response(200 if sts else 501)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_answers_that_are_not_aws_name_the_call_without_a_run_again_hint(
        odd_server: tuple[str, list[str]]) -> None:
    from botocore.exceptions import ClientError
    from botocore.parsers import ResponseParserError

    from exaprov.aws import Aws
    from exaprov.errors import from_botocore

    url, seen = odd_server
    aws = Aws("us-west-1", endpoint_url=url)
    with pytest.raises(ClientError) as info:
        aws.rds.describe_db_instances()
    assert len(seen) == 1  # 501 is not retried: the endpoint said it has no such call
    error = from_botocore("database", info.value)
    assert "this endpoint does not implement rds DescribeDBInstances" in error.message
    assert error.hint is None
    with pytest.raises(ResponseParserError) as parse_info:
        aws.client("sts").get_caller_identity()
    error = from_botocore("exaprov", parse_info.value)
    assert "this endpoint does not implement sts GetCallerIdentity" in error.message
    assert error.hint is None


RDS_OPERATIONS = ("DescribeDBInstances", "CreateDBInstance", "ModifyDBInstance",
                  "AddTagsToResource", "DeleteDBInstance", "DescribeDBSubnetGroups",
                  "CreateDBSubnetGroup", "ModifyDBSubnetGroup", "DeleteDBSubnetGroup")


def test_destroy_asks_rds_only_about_what_the_state_records(
        workdir: Path, aws: None, faults: Any, calls: Any) -> None:
    """An endpoint without RDS: `up` stops at the first RDS call, naming it; `destroy` then
    deletes everything `up` made, asking RDS nothing (the state records nothing of RDS)."""
    from tests.faults import inventory

    for operation in RDS_OPERATIONS:
        faults.refuse(operation, "NotImplemented", status=501, message="not implemented")
    # The name-clash pre-flight asks RDS first: without RDS, `up` stops before any change.
    result = CliRunner().invoke(main, ["up", "--yes"])
    assert result.exit_code == 1, result.output
    assert "this endpoint does not implement rds" in result.output
    assert "run the command again" not in result.output
    assert not any(inventory().values())



def test_destroy_asks_rds_only_about_the_subnet_group_the_state_records(
        workdir: Path, aws: None, faults: Any, calls: Any) -> None:
    """An endpoint whose RDS answers reads but implements no change: `up` stops at the DB
    subnet group, after the VPC and more; `destroy` then deletes everything `up` made and
    asks RDS only about the one thing the state records (never about a database)."""
    from tests.faults import inventory

    for operation in RDS_OPERATIONS:
        if not operation.startswith("Describe") and operation != "ListTagsForResource":
            faults.refuse(operation, "NotImplemented", status=501, message="not implemented")
    result = CliRunner().invoke(main, ["up", "--yes"])
    assert result.exit_code == 1, result.output
    assert "this endpoint does not implement rds" in result.output
    assert any(inventory().values())  # up made the network and more before it stopped
    calls.clear()
    result = CliRunner().invoke(main, ["destroy", "--yes"])
    assert result.exit_code == 0, result.output
    assert {c[1] for c in calls.calls if c[0] == "rds"} <= {"DescribeDBSubnetGroups",
                                                             "ListTagsForResource"}
    assert not any(inventory().values())


def test_a_create_answered_501_is_not_taken_for_a_lost_answer(
        workdir: Path, aws: None, faults: Any) -> None:
    """HTTP 501: the endpoint did nothing, so nothing is looked for by tag or sent again."""
    faults.refuse("CreateDBSubnetGroup", "NotImplemented", status=501, message="not implemented")
    result = CliRunner().invoke(main, ["up", "--yes"])
    assert result.exit_code == 1, result.output
    assert "this endpoint does not implement rds CreateDBSubnetGroup" in result.output
    assert "lost" not in result.output
    assert [r.operation for r in faults.refused] == ["CreateDBSubnetGroup"]


@pytest.mark.parametrize("data", [
    {"name": "example", "cluster": {"cluster_name": "c" * 30}},
    {"name": "example", "network": {"vpc_cidr_block": "10.0.0.0/8"}},
    {"name": "example", "region": "mars-1"},
    {"name": "example", "region": "us-west-9"},
    {"name": "Example"},
    {"name": "example", "cluster": {"runner_pools": [{**POOL, "disk_size": 100.5}]}},
    {"name": "example", "cluster": {"runner_pools": [{**POOL, "max_size": 10**30}]}},
    {"name": "example", "cluster": {"runner_pools": [{**POOL, "node_instance_type": "foo.bar"}]}},
    {"name": "example", "cluster": {"runner_pools": _pools(27)}},
    {"name": "example", "module_repo_backend": {"postgres_version": "016"}},
], ids=["cluster-name-30", "cidr-8", "region-mars", "region-unknown", "name-upper",
        "disk-fraction", "max-size-huge", "instance-type-unknown", "27-pools", "postgres-016"])
def test_the_schema_refuses_what_exaprov_refuses(data: dict[str, Any]) -> None:
    from exaprov.config import json_schema

    assert list(_ecma_validator()(json_schema()).iter_errors(data))


def test_the_schema_lists_what_it_cannot_say() -> None:
    from exaprov.config import json_schema

    description = json_schema()["description"]
    for words in ("min_size <= max_size", "suffixes are unique", "host bits",
                  "exafunction-cluster-<name>"):
        assert words in description
    result = CliRunner().invoke(main, ["config", "schema"])
    assert result.exit_code == 0 and json.loads(result.output) == json_schema()


@pytest.mark.parametrize("text", [BILLION_LAUGHS, DEEP, "a: [" + ",".join(["1"] * 60_000) + "]\n",
                                  "name: " + "x" * 200_000 + "\n"],
                         ids=["billion-laughs", "500-levels", "60000-values", "200-KB-scalar"])
def test_hostile_yaml_is_refused_within_bounded_memory(tmp_path: Path, text: str) -> None:
    """The file is refused (or its value is), never expanded: far under 100 MB."""
    import tracemalloc

    from exaprov.config import load_config
    from exaprov.errors import ConfigError

    path = tmp_path / "exaprov.yaml"
    path.write_text(text)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            load_config(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024, peak
    assert all(len(line) < 400 for line in info.value.problems)
