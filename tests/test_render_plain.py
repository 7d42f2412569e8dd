"""Values from AWS, the state or the config are printed as they are: never markup, never emoji.

rich reads `:secret:` as an emoji code and `[bold]` as markup by default, so an ARN of a
Secrets Manager secret came out as `…123456789012㊙exaprov/…`: a value a user copies must be
the value AWS holds, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from exaprov import outputs, render
from exaprov.engine import Change, Observed, Outcome, RunResult

HOSTILE = "arn:aws:secretsmanager:us-west-1:123456789012:secret:exaprov/[bold]db[/bold]:smile:-AbCdEf"


@contextmanager
def captured() -> Iterator[list[str]]:
    """What both consoles print, wide enough that no value is folded."""
    texts: list[str] = []
    saved = render.out.width, render.err.width
    render.out.width = render.err.width = 400
    try:
        with render.out.capture() as out, render.err.capture() as err:
            yield texts
    finally:
        render.out.width, render.err.width = saved
    texts.extend([out.get(), err.get()])


def assert_verbatim(texts: list[str]) -> None:
    printed = "".join(texts)
    assert HOSTILE in printed, printed
    assert "㊙" not in printed and "😄" not in printed


def test_plan_lines_print_values_verbatim() -> None:
    with captured() as texts:
        render.print_plan([Change("update", f"cluster.{HOSTILE}", "secret", detail=HOSTILE)])
    assert_verbatim(texts)


def test_status_table_prints_values_verbatim() -> None:
    row = Observed(address="database.secret", kind="secret", recorded_id=HOSTILE,
                   live_id=HOSTILE, live="available", drift=[HOSTILE])
    with captured() as texts:
        render.print_status([row])
    assert_verbatim(texts)


def test_run_summary_prints_step_names_verbatim() -> None:
    result = RunResult(outcomes={HOSTILE: Outcome(HOSTILE, "failed", 1.0)}, changes=[], observed=[])
    with captured() as texts:
        render.print_run_summary(result, "up")
    assert_verbatim(texts)


def test_next_step_hints_print_flags_verbatim() -> None:
    result = RunResult(outcomes={"network": Outcome("network", "done", 1.0)}, changes=[], observed=[])
    with captured() as texts:
        render.print_run_summary(result, "up", flags=render.target_flags({"config_path": HOSTILE}))
    assert_verbatim(texts)


@pytest.mark.parametrize("live", [False, True], ids=["log", "terminal"])
def test_progress_lines_print_activity_verbatim(live: bool) -> None:
    with captured() as texts:
        reporter = render.ProgressReporter(render.err)
        reporter.live = live
        with reporter:
            reporter.started("database")
            reporter.activity("database", f"waiting for {HOSTILE}")
            reporter.waiting("database", f"database {HOSTILE}", HOSTILE, 3.0, False)
            if live:  # the live view's own rendering of the running step and its wait
                for line in reporter.lines():
                    line.no_wrap = False
                    render.err.print(line)
            reporter.waiting("database", f"database {HOSTILE}", HOSTILE, 4.0, True)
            reporter.finished(Outcome("database", "done", 1.0))
    assert_verbatim(texts)


def test_outputs_table_prints_values_verbatim() -> None:
    groups = {"exafunction_module_repo_backend": {"db_password_secret_arn": HOSTILE}}
    with captured() as texts:
        for key, value in outputs.render_table(groups):
            render.out.print(f"{key} = {value}")
    assert_verbatim(texts)


def test_recovery_table_prints_values_verbatim() -> None:
    from exaprov.cli import _print_recovery

    recovery = SimpleNamespace(
        found=[Observed(HOSTILE, "secret", None, HOSTILE, "available")],
        missing=[Change("create", HOSTILE, "secret")], drift=[Change("update", "x", "y", HOSTILE)],
        state=SimpleNamespace(data={"peers": {}}), damage=None, previous="absent", written=False,
        location="state", kept_aside=None,
        result=SimpleNamespace(failed=[]))
    with captured() as texts:
        _print_recovery(recovery)
    assert_verbatim(texts)
