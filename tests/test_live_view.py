"""What a run shows: the live view on a terminal, one timestamped line per event elsewhere,
and at the end what changed, how long it took and what to run next."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from rich.console import Console

from exaprov import engine, render, sandbox
from exaprov.cli import main
from exaprov.engine import Step, StepContext
from tests.conftest import REGION, cli

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")
ARN = ("arn:aws:elasticloadbalancing:us-west-1:123456789012:loadbalancer/app/"
       + "k8s-exaprov-" + "x" * 202 + "/0123456789abcdef")
# SGR parameters that set a colour (foreground, background, 256/truecolour), not bold or dim.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def test_an_arn_of_300_characters_is_long_enough() -> None:
    assert len(ARN) >= 300


@pytest.fixture
def one_step(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`up` and `destroy` walk one step that reports a 300-character ARN and waits for it
    (the wait ends at its second poll): what the log shows, without building a stack."""
    polls: list[str] = []

    def ensure(ctx: StepContext) -> dict[str, Any]:
        ctx.report(f"deleting {ARN}")
        ctx.wait_until(f"load balancer {ARN} to delete",
                       lambda: polls.append("poll") or len(polls) % 2 == 0, bool,
                       timeout=60, interval=1, describe=lambda gone: "deleted" if gone else "deleting")
        return {}

    step = Step("leftovers", (), ensure, lambda ctx: None)
    monkeypatch.setattr("exaprov.steps.STEPS", (step,))
    return polls


def _events(stderr: str) -> tuple[list[str], list[str]]:
    """The event lines of a log, and the summary after them."""
    lines = stderr.splitlines()
    cut = next(i for i, line in enumerate(lines) if not TIMESTAMP.match(line))
    return lines[:cut], lines[cut:]


def test_the_log_has_a_timestamped_line_per_event_and_a_line_per_node_group(
        aws: None, workdir: Path) -> None:
    planned = json.loads(cli("plan", "-o", "json").stdout)["summary"]["create"]
    result = cli("up", "--yes")  # CliRunner: stderr is not a terminal
    assert result.exit_code == 0, result.output
    events, summary = _events(result.stderr)
    assert len(events) > 30 and summary[0].startswith("up: ")
    assert any(len(line) > 100 for line in events)  # not folded at the console's 80 columns
    eks = boto3.client("eks", region_name=REGION)
    cluster = eks.list_clusters()["clusters"][0]
    groups = eks.list_nodegroups(clusterName=cluster)["nodegroups"]
    assert len(groups) == 6
    for name in groups:  # each waited-on node group has its own line, not one for the step
        assert sum(f"node-groups: node group {name}: ACTIVE after " in line for line in events) == 1
    assert any(f"EKS cluster {cluster}: ACTIVE after " in line for line in events)
    assert any(re.search(r"✓ node-groups done \(\d+\.\ds, \d+/\d+ steps, \d+s in all\)$", line)
               for line in events)
    assert summary[0] == f"up: {planned} created."  # what plan said it would do
    assert re.fullmatch(r"Took \d+s\.", summary[1]), summary
    assert summary[2:] == ["Next:",
                           "  exaprov outputs     # what the ExaDeploy deployment needs",
                           "  exaprov kubeconfig  # kubectl access to the cluster"]


def test_a_300_character_arn_is_one_line_of_the_log(aws: None, workdir: Path,
                                                     one_step: list[str]) -> None:
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    events, _ = _events(result.stderr)
    assert [line[21:] for line in events] == [
        "leftovers: started",
        f"leftovers: deleting {ARN}",
        f"leftovers: load balancer {ARN}: deleting, 0s",
        f"leftovers: load balancer {ARN}: deleted after 0s",
        "✓ leftovers done" + events[-1].split("✓ leftovers done")[1],
    ]
    assert len(one_step) == 2


@pytest.mark.parametrize("no_color", [False, True], ids=["FORCE_COLOR", "FORCE_COLOR+NO_COLOR"])
def test_colour_follows_force_color_and_no_color(aws: None, workdir: Path, one_step: list[str],
                                                 no_color: bool) -> None:
    env = {"FORCE_COLOR": "1", "NO_COLOR": "1" if no_color else None}
    result = CliRunner().invoke(main, ["up", "--yes"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert bool(COLOUR.search(result.stderr)) is not no_color, repr(result.stderr[:400])
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stderr)
    assert f"leftovers: deleting {ARN}\n" in plain
    assert "\x1b[1A" not in result.stderr and "\x1b[2K" not in result.stderr  # a log: no live area


def test_next_steps_name_the_flags_of_the_run(aws: None, workdir: Path, one_step: list[str]) -> None:
    Path("other.yaml").write_text(Path("exaprov.yaml").read_text())
    up = cli("up", "--yes", "--config", "other.yaml")
    assert up.stderr.splitlines()[-3:] == [
        "Next:",
        "  exaprov outputs --config other.yaml     # what the ExaDeploy deployment needs",
        "  exaprov kubeconfig --config other.yaml  # kubectl access to the cluster"]
    destroy = cli("destroy", "--yes", "--config", "other.yaml")
    assert destroy.stderr.splitlines()[-2].startswith("destroy: ")  # nothing to run next
    assert destroy.stderr.splitlines()[-1].startswith("Took ")


@pytest.mark.e2e
def test_next_steps_after_a_sandbox_run_say_sandbox(workdir: Path, one_step: list[str]) -> None:
    try:
        up = cli("up", "--yes", "--sandbox")
        assert up.exit_code == 0, up.output
        assert up.stderr.splitlines()[-3:] == [
            "Next:",
            "  exaprov outputs --sandbox     # what the ExaDeploy deployment needs",
            "  exaprov kubeconfig --sandbox  # kubectl access to the cluster"]
        destroy = cli("destroy", "--yes", "--sandbox")
        assert destroy.stderr.splitlines()[-2:] == [
            "Next:", "  exaprov sandbox stop  # stops the emulator when nothing else lives in it"]
    finally:
        sandbox.stop()


def test_no_next_step_after_a_failed_run(aws: None, workdir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def ensure(ctx: StepContext) -> dict[str, Any]:
        raise engine.ExaprovError("leftovers: it broke")

    monkeypatch.setattr("exaprov.steps.STEPS", (Step("leftovers", (), ensure, lambda ctx: None),))
    result = cli("up", "--yes")
    assert result.exit_code == 1
    assert "Next:" not in result.stderr and "✗ leftovers failed" in result.stderr


# -- what one waited-on resource reads like ----------------------------------------------------

@pytest.fixture
def aws_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "1")


@pytest.mark.parametrize(("resource", "state", "seconds", "shown"), [
    ("cluster exa", "CREATING", 192, "EKS cluster exa: creating, 3m12s of ~10m"),
    ("cluster exa to delete", "DELETING", 30, "EKS cluster exa: deleting, 30s of ~3m"),
    ("node group runner-cpu", "CREATING", 61, "node group runner-cpu: creating, 1m01s of ~2m"),
    ("node group runner-cpu to delete", "DELETING", 5, "node group runner-cpu: deleting, 5s of ~5m"),
    ("database exa-rds", "backing-up", 250, "RDS instance exa-rds: backing-up, 4m10s of ~4m30s"),
    ("database exa-rds to delete", "deleting", 10, "RDS instance exa-rds: deleting, 10s of ~5m"),
    ("NAT gateway nat-1", "pending", 20, "NAT gateway nat-1: pending, 20s of ~2m"),
    ("NAT gateway nat-1 to delete", "deleting", 20, "NAT gateway nat-1: deleting, 20s of ~1m"),
    ("cluster exa", "CREATING", 1000, "EKS cluster exa: creating, 16m40s (usually ~10m)"),
    ("cluster exa", "UPDATING", 75, "EKS cluster exa: updating, 1m15s"),  # no typical figure
    ("peering pcx-1 active", "pending-acceptance", 3, "peering pcx-1 active: pending-acceptance, 3s"),
])
def test_a_wait_reads_with_its_typical_duration(aws_time: None, resource: str, state: str,
                                                seconds: float, shown: str) -> None:
    assert render.describe_wait(resource, state, seconds) == shown


def test_a_finished_wait_says_how_long_it_took(aws_time: None) -> None:
    assert render.describe_wait("node group gpu", "ACTIVE", 125, done=True) == \
        "node group gpu: ACTIVE after 2m05s"


def test_estimates_follow_the_time_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAPROV_TIME_SCALE", "0.1")
    assert render.describe_wait("cluster exa", "CREATING", 12) == "EKS cluster exa: creating, 12s of ~1m"


def test_typical_durations_are_the_emulators_latency_model() -> None:
    from exaprov.emulator import AWS_LATENCY

    keys = {"EKS cluster": "cluster", "node group": "nodegroup", "RDS instance": "rds",
            "NAT gateway": "nat"}
    assert {(kind, phase): AWS_LATENCY[f"{keys[kind]}_{phase}"]
            for kind, phase in render.TYPICAL_SECONDS} == render.TYPICAL_SECONDS


def test_the_log_reminds_of_a_long_wait_and_each_change_of_state(aws_time: None) -> None:
    buffer = io.StringIO()
    reporter = render.ProgressReporter(Console(file=buffer, width=80, markup=False, emoji=False))
    assert reporter.live is False
    with reporter:
        reporter.started("cluster")
        for state, seconds in (("CREATING", 0), ("CREATING", 10), ("CREATING", 20),
                               ("CREATING", 45), ("UPDATING", 50), ("ACTIVE", 55)):
            reporter.waiting("cluster", "cluster exa", state, seconds, False)
        reporter.waiting("cluster", "cluster exa", "ACTIVE", 55, True)
    shown = [line[21:] for line in buffer.getvalue().splitlines()]
    assert all(TIMESTAMP.match(line) for line in buffer.getvalue().splitlines())
    assert shown == ["cluster: started",
                     "cluster: EKS cluster exa: creating, 0s of ~10m",
                     "cluster: EKS cluster exa: creating, 45s of ~10m",  # 30 s after the last
                     "cluster: EKS cluster exa: updating, 50s",  # a new state
                     "cluster: EKS cluster exa: ACTIVE after 55s"]  # ACTIVE: only once


# -- the live view, in a pseudo-terminal -------------------------------------------------------

DRIVER = textwrap.dedent('''
    import os
    from exaprov import render
    from exaprov.engine import Outcome

    reporter = render.ProgressReporter(title="exaprov up")
    assert reporter.live, "stderr is a terminal: the view must be live"
    with reporter:
        reporter.planned(["network", "cluster", "node-groups"])
        reporter.started("network")
        reporter.finished(Outcome("network", "done", 4.2))
        reporter.started("node-groups")
        reporter.activity("node-groups", "creating eks:nodegroup runner-gpu")
        for name in ("default", "scheduler", "runner-cpu", "runner-gpu"):
            reporter.waiting("node-groups", f"node group {name}", "CREATING", 30.0, False)
        reporter._live.refresh()
        os.write(2, b"\\n@@FRAME@@\\n")
        reporter.waiting("node-groups", "node group default", "ACTIVE", 40.0, True)
        reporter._live.refresh()
        os.write(2, b"\\n@@FRAME@@\\n")
        reporter.finished(Outcome("node-groups", "done", 41.0))
''')


def _in_a_pty(env: dict[str, str]) -> str:
    """Run the driver with stdout and stderr on a pseudo-terminal; all it wrote."""
    import pty

    master, slave = pty.openpty()
    os.set_blocking(master, True)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def terminal_env() -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_INTERACTIVE", "TTY_COMPATIBLE")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    yield env


def last_frame(output: str) -> list[str]:
    """The live area as last drawn in `output` (its header and the lines under it)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    start = max(i for i, line in enumerate(lines) if line.startswith("exaprov up · "))
    return lines[start:]


def test_the_live_view_in_a_terminal(terminal_env: dict[str, str]) -> None:
    raw = _in_a_pty(terminal_env)
    assert COLOUR.search(raw)  # a 256-colour terminal gets colour
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    first, second, _ = plain.split("@@FRAME@@")
    assert "✓ network done (4.2s)" in first
    frame1 = last_frame(first)
    header = frame1[0]
    assert re.fullmatch(r"exaprov up · 1 of 3 steps done · \d+s elapsed", header)
    waits = [line for line in frame1 if line.startswith("↳ node group")]
    assert [re.sub(r", \d+s .*", "", w) for w in waits] == [
        f"↳ node group {n}: creating" for n in ("default", "scheduler", "runner-cpu", "runner-gpu")]
    assert any(re.match(r"^. node-groups\s+creating eks:nodegroup runner-gpu\s+\d+s$", line)
               for line in frame1)
    # The wait that ended left the area; the others stay.
    frame2 = last_frame(second)
    assert not any("node group default" in line for line in frame2)
    assert [re.sub(r", \d+s .*", "", w) for w in frame2 if w.startswith("↳")] == [
        f"↳ node group {n}: creating" for n in ("scheduler", "runner-cpu", "runner-gpu")]
    assert "✓ node-groups done (41.0s)" in plain


def test_no_color_in_a_terminal(terminal_env: dict[str, str]) -> None:
    raw = _in_a_pty({**terminal_env, "NO_COLOR": "1"})
    assert not COLOUR.search(raw)
    assert "node group runner-gpu: creating" in raw


def test_log_lines_go_above_the_live_area(monkeypatch: pytest.MonkeyPatch) -> None:
    """-v and --debug lines written while the view is live are printed above it (through rich),
    not straight onto the terminal where the next refresh would overwrite them."""
    import logging

    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, markup=False, emoji=False)
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        reporter = render.ProgressReporter(console, title="exaprov up")
        assert reporter.live
        with reporter:
            reporter.started("network")
            logging.getLogger("exaprov.test").warning("a log line while live")
        assert handler.stream is sys.stderr  # given back afterwards
    finally:
        root.removeHandler(handler)
    assert "a log line while live" in screen.getvalue()


def test_paused_takes_the_live_area_off_while_a_question_is_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, markup=False, emoji=False)
    with render.ProgressReporter(console, title="exaprov up") as reporter:
        reporter.started("node-groups")
        with reporter.paused():
            assert not reporter._live.is_started
            console.file.write("Delete node group x? [y/N] ")
        assert reporter._live.is_started
    assert "Delete node group x? [y/N] " in screen.getvalue()
