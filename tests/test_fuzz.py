"""Bad input, fuzzed: configs and command-line flags drawn by hypothesis.

Whatever the input: never a traceback. Either exit 2 with a message naming the key or flag
at fault, having made no AWS call, or a valid plan (read-only calls only).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exaprov.cli import main
from exaprov.config import Config, parse_config
from exaprov.config_template import render_config
from exaprov.errors import ConfigError

BASE: dict[str, Any] = yaml.safe_load(render_config(name="example", region="us-west-1", full=True))
TOP_KEYS = set(Config.model_fields)

# Any YAML value: what a typo, a wrong indent or a wrong paste puts under a key.
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**12) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=6)


def near(value: Any) -> st.SearchStrategy[Any]:
    """Wrong values of the right type (and some of the wrong one) for a key that holds `value`."""
    if isinstance(value, bool):
        return junk
    if isinstance(value, int):
        return st.integers(-2, 70000) | st.sampled_from([value + 1, value - 1, 0, -1, 2**31]) | junk
    if isinstance(value, str):
        return st.sampled_from([value.upper(), value + "-", "", value * 8, f" {value}", value[:-1],
                                value.replace(".", "-")]) | st.text(max_size=30) | junk
    return junk


def key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a config's mappings and lists (containers and leaves)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += key_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += key_paths(value, (*prefix, index))
    return found


def at(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """the full example config with one to three edits: a value replaced, a key removed, or an
    unknown key added, anywhere in the tree."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(key_paths(data) or [()]))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            continue
        parent, key = at(data, path[:-1]), path[-1]
        if action == "replace":
            parent[key] = draw(near(parent[key]))
        elif action == "delete":
            del parent[key]
        elif isinstance(at(data, path), dict):
            at(data, path)[draw(st.text(min_size=1, max_size=15))] = draw(junk)
    return data


QUOTED = re.compile(r"""\[(['"])(.*?)\1\]""")  # a key the message quotes: ['odd: key']


def _root(path: str) -> str:
    """The first key of a problem's path: `a.b[0]` → a; `['odd key'].x` → odd key."""
    quoted = QUOTED.match(path)
    return quoted.group(2) if quoted else re.split(r"[.\[]", path, maxsplit=1)[0]


def _split(line: str) -> tuple[str, str]:
    """`<path>: <why>`, where a quoted key in the path may itself hold ": "."""
    masked = QUOTED.sub(lambda m: "[" + "x" * (len(m.group(0)) - 2) + "]", line)
    cut = masked.find(": ")
    return (line[:cut], line[cut + 2:]) if cut >= 0 else (line, "")


def _spellings(data: Any) -> set[str]:
    """A document's own top-level keys, as written and as a message quotes them (repr)."""
    keys = [str(k) for k in data] if isinstance(data, dict) else []
    return set(keys) | {repr(k)[1:-1] for k in keys}


def check_problems(problems: list[str], data: Any) -> None:
    """Every problem line is `<key path>: <why>`, and the path starts at a key of the schema,
    a key the config really has, or the top level."""
    assert problems
    for line in problems:
        head, why = _split(line)
        assert why, line
        root = _root(head)
        known = TOP_KEYS | _spellings(data)
        assert root in known or head.startswith("(top level)") or head.startswith("tags"), line


# Whole documents of junk too: any keys of the schema (or not) holding anything, or no mapping.
documents = st.dictionaries(st.sampled_from(sorted(TOP_KEYS)) | st.text(max_size=10), junk,
                            max_size=6) | junk


@settings(max_examples=300, deadline=None)
@given(st.one_of(configs(), documents))
def test_any_config_is_valid_or_refused_naming_its_key(data: Any) -> None:
    try:
        cfg = parse_config(data)
    except ConfigError as exc:
        event("refused")
        check_problems(exc.problems, data)
    else:
        event("valid")
        assert cfg.name == data["name"]


# -- the command line ------------------------------------------------------------------

READ_ONLY = [["plan"], ["status"], ["state", "recover"], ["outputs"]]
regions = st.sampled_from(["us-west-1", "us-east-2", "eu-west-1"]) | st.sampled_from(
    ["", "US-WEST-1", "us-west-1a", "mars-north-1", "us_west_1", " us-west-1"]) | st.text(max_size=15)
outputs = st.sampled_from(["table", "json", "yaml", "", "JSON", "tfvars"])
states = st.sampled_from(["state/x.json", "s3://", "s3://bucket", "s3://Bad_Bucket/k", "s3://b/",
                          "s3://ab/k", "nested/deeper/s.json", "/dev/null/x.json"])
vpc_ids = st.sampled_from(["vpc-0123456789abcdef0", "vpc-", "not-a-vpc", "", "vpc-XYZ12345"])


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    if draw(st.integers(0, 4)) == 0:  # nothing is deployed here: these can only be refused
        args = [draw(st.sampled_from(["peer", "unpeer"])), "--vpc-id", draw(vpc_ids)]
        if draw(st.booleans()):
            args += ["--route-table-ids", draw(st.sampled_from(["rtb-0123456789abcdef0", "rtb-", ",",
                                                                 "rtb-1,x", ""]))]
        return args
    args = list(draw(st.sampled_from(READ_ONLY)))
    if draw(st.booleans()):
        args += ["--region", draw(regions)]
    if args[0] != "outputs" or draw(st.booleans()):
        if draw(st.booleans()):
            args += ["--output", draw(outputs)]
    if draw(st.integers(0, 4)) == 0:
        args += ["--state", draw(states)]
    if draw(st.integers(0, 5)) == 0:
        args += [draw(st.sampled_from(["--vpc-id", "--bogus", "-x", "--yes", "--config"])),
                 draw(vpc_ids)]
    return args


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=command_lines(), data=st.one_of(st.just(BASE), configs(), documents))
def test_any_command_line_is_a_plan_or_exit_2_naming_its_fault(
        workdir: Path, aws: None, calls: Any, args: list[str], data: Any) -> None:
    """One moto for every example: these commands only read, so examples cannot disturb each
    other (the calls of each are checked to be reads)."""
    Path("exaprov.yaml").write_text(yaml.safe_dump(data))
    calls.clear()
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args, result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in ((2,) if args[0] in ("peer", "unpeer") else (0, 2)), (args, result.output)
    event(f"exit {result.exit_code}")
    assert calls.mutating() == []
    if result.exit_code == 2:
        assert calls.calls == [], (args, calls.calls)  # refused before any AWS call
        message = result.output.lower()
        assert "error" in message, result.output
        assert _names_its_fault(result.output, args, data), (args, result.output)
    else:
        assert not Path("state").exists() or not any(Path("state").rglob("*.json"))
        if args[0] == "plan":  # a valid plan: every resource of the stack to create
            plan = json.loads(result.stdout) if "json" in args else None
            assert plan["summary"]["create"] > 0 if plan else "Plan: " in result.stdout


def _names_its_fault(output: str, args: list[str], data: Any) -> bool:
    """The message names a flag given, a config key (`key: why` lines), a flag's value, or
    the config file when its top level is not a mapping at all."""
    if not isinstance(data, dict) and "exaprov.yaml" in output:
        return True
    flags = [a for a in args if a.startswith("-")]
    values = [a for a in args if not a.startswith("-") and a]
    if any(flag in output for flag in flags) or any(f"'{v}'" in output or v in output for v in values):
        return True
    lines = [line for line in output.splitlines() if ": " in line]
    roots = TOP_KEYS | _spellings(data)
    return any(_root(_split(line)[0]) in roots for line in lines)


@pytest.mark.parametrize("flag", ["--region", "--output", "--state", "--config"])
def test_a_flag_without_its_value_is_a_usage_error(workdir: Path, flag: str) -> None:
    result = CliRunner().invoke(main, ["plan", flag])
    assert result.exit_code == 2 and flag in result.output


@pytest.mark.parametrize("value", ["", ".", "state"])
def test_a_config_path_that_is_no_file_names_the_flag(workdir: Path, value: str) -> None:
    """Found by the fuzzer: `--config ''` was read as the current folder and the message
    named "." instead of the flag."""
    Path("state").mkdir()
    result = CliRunner().invoke(main, ["plan", "--config", value])
    assert result.exit_code == 2 and "--config" in result.output, result.output
