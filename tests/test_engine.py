"""The step engine with fake steps and no AWS: order, overlap, failure, cancel, records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from exaprov.engine import (
    ENV_CRASH_AT,
    Change,
    Mode,
    Outcome,
    Run,
    Step,
    StepContext,
    apply,
    destroy,
    is_unknown,
    unknown,
)
from exaprov.errors import AwsError, Cancelled, ExaprovError, InputError, WaitTimeout
from exaprov.state import CREATED, DELETING, INTENT, LocalStateStore, State, StateWriter

REPO = Path(__file__).resolve().parents[1]
WAIT = 5.0  # seconds any event/barrier may take before the test counts as hung


# -- helpers ------------------------------------------------------------------------


def make_run(tmp_path: Path, mode: Mode = Mode.APPLY, state: State | None = None,
             reporter: Any = None) -> Run:
    store = LocalStateStore(tmp_path / "s.json")
    writer = StateWriter(store, state or State.new("t", "us-west-1"))
    return Run(SimpleNamespace(name="t", tags={}), None, writer, mode, reporter=reporter)


def reload_run(tmp_path: Path, mode: Mode = Mode.APPLY) -> Run:
    """A fresh run over what the previous one left on disk (a new process, as it were)."""
    state = LocalStateStore(tmp_path / "s.json").read()
    assert state is not None
    return make_run(tmp_path, mode, state)


def on_disk(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "s.json").read_text())


def noop_destroy(ctx: StepContext) -> None:
    pass


def step(name: str, requires: tuple[str, ...] = (),
         ensure: Callable[[StepContext], dict[str, Any]] | None = None,
         destroy: Callable[[StepContext], None] = noop_destroy,
         enabled: Callable[[Any], bool] | None = None) -> Step:
    def default_ensure(ctx: StepContext) -> dict[str, Any]:
        return {}

    kwargs: dict[str, Any] = {"enabled": enabled} if enabled else {}
    return Step(name, requires, ensure or default_ensure, destroy, **kwargs)


def context(run: Run, name: str = "s") -> StepContext:
    return StepContext(run, step(name), {})


def client_error(code: str, operation: str = "DeleteVpc") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}}, operation)


class Recorder:
    """Start/end events of fake steps, in the order they happened."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, what: str, name: str) -> None:
        with self._lock:
            self.events.append((what, name))

    def index(self, what: str, name: str) -> int:
        return self.events.index((what, name))

    def names(self, what: str) -> list[str]:
        return [n for w, n in self.events if w == what]


class EventReporter:
    """A Reporter that lets a test wait until the engine has taken in a step's outcome."""

    def __init__(self) -> None:
        self.finished_events: dict[str, threading.Event] = {}
        self.activities: list[tuple[str, str]] = []

    def event(self, name: str) -> threading.Event:
        return self.finished_events.setdefault(name, threading.Event())

    def started(self, step: str) -> None:
        pass

    def activity(self, step: str, text: str) -> None:
        self.activities.append((step, text))

    def finished(self, outcome: Outcome) -> None:
        self.event(outcome.step).set()


# -- walking the graph ------------------------------------------------------------------


def test_steps_start_after_what_they_require_and_independent_ones_overlap(
        tmp_path: Path) -> None:
    rec = Recorder()
    barrier = threading.Barrier(2, timeout=WAIT)

    def body(name: str, meet: bool = False) -> Callable[[StepContext], dict[str, Any]]:
        def ensure(ctx: StepContext) -> dict[str, Any]:
            rec.add("start", name)
            if meet:
                barrier.wait()  # both b and c must be running at once, or this times out
            rec.add("end", name)
            return {}
        return ensure

    steps = [
        step("d", ("b", "c"), body("d")),
        step("b", ("a",), body("b", meet=True)),
        step("c", ("a",), body("c", meet=True)),
        step("a", (), body("a")),
    ]
    result = apply(steps, make_run(tmp_path))

    assert {n: o.status for n, o in result.outcomes.items()} == dict.fromkeys("abcd", "done")
    assert not result.failed and not result.cancelled
    for s in steps:
        for required in s.requires:
            assert rec.index("start", s.name) > rec.index("end", required), rec.events
    assert sorted(rec.names("start")) == ["a", "b", "c", "d"]  # each step ran once


def test_a_failed_step_skips_its_dependants_and_lets_running_ones_finish(
        tmp_path: Path) -> None:
    reporter = EventReporter()
    b_running = threading.Event()
    ran: list[str] = []
    error = ExaprovError("a: something broke")

    def a(ctx: StepContext) -> dict[str, Any]:
        assert b_running.wait(WAIT)
        raise error

    def b(ctx: StepContext) -> dict[str, Any]:
        b_running.set()
        # Finish only after the engine has seen a fail: b is "already running" then.
        assert reporter.event("a").wait(WAIT)
        return {"b": 1}

    def record(name: str) -> Callable[[StepContext], dict[str, Any]]:
        def ensure(ctx: StepContext) -> dict[str, Any]:
            ran.append(name)
            return {}
        return ensure

    steps = [step("a", (), a), step("b", (), b), step("after_a", ("a",), record("after_a")),
             step("after_b", ("b",), record("after_b"))]
    result = apply(steps, make_run(tmp_path, reporter=reporter))

    statuses = {n: o.status for n, o in result.outcomes.items()}
    assert statuses == {"a": "failed", "b": "done", "after_a": "skipped",
                        "after_b": "skipped"}
    assert result.outcomes["a"].error is error
    assert [o.step for o in result.failed] == ["a"]
    assert ran == []
    # b's outputs were still recorded: it finished its work.
    assert on_disk(tmp_path)["outputs"] == {"b": {"b": 1}}


def test_a_crashing_step_is_failed_with_an_internal_error_not_a_crash(tmp_path: Path) -> None:
    def boom(ctx: StepContext) -> dict[str, Any]:
        raise ValueError("unexpected shape")

    result = apply([step("boom", (), boom), step("later", ("boom",))], make_run(tmp_path))

    outcome = result.outcomes["boom"]
    assert outcome.status == "failed"
    assert isinstance(outcome.error, ExaprovError)
    assert "boom: internal error: ValueError: unexpected shape" in outcome.error.message
    assert result.outcomes["later"].status == "skipped"


def test_disabled_steps_are_not_run(tmp_path: Path) -> None:
    ran: list[str] = []
    seen_cfg: list[Any] = []

    def ensure(ctx: StepContext) -> dict[str, Any]:
        ran.append(ctx.step)
        return {}

    def off(cfg: Any) -> bool:
        seen_cfg.append(cfg)
        return False

    run = make_run(tmp_path)
    result = apply([step("on", (), ensure), step("off", (), ensure, enabled=off),
                    step("after", ("off",), ensure)], run)

    assert sorted(ran) == ["after", "on"]
    assert "off" not in result.outcomes
    assert seen_cfg == [run.cfg]


@pytest.mark.parametrize("mode", [Mode.APPLY, Mode.PLAN])
def test_outputs_reach_dependants_and_are_saved_when_applying(tmp_path: Path,
                                                              mode: Mode) -> None:
    seen: dict[str, Any] = {}

    def vpc(ctx: StepContext) -> dict[str, Any]:
        return {"vpc_id": "vpc-1"}

    def subnets(ctx: StepContext) -> dict[str, Any]:
        seen["upstream"] = ctx.upstream
        if mode is Mode.APPLY:  # the state on disk already holds vpc's outputs
            seen["disk"] = on_disk(tmp_path)["outputs"]
        return {"subnet_ids": ["subnet-1"]}

    run = make_run(tmp_path, mode)
    result = apply([step("subnets", ("vpc",), subnets), step("vpc", (), vpc)], run)

    assert not result.failed
    assert seen["upstream"] == {"vpc": {"vpc_id": "vpc-1"}}
    if mode is Mode.APPLY:
        assert seen["disk"] == {"vpc": {"vpc_id": "vpc-1"}}
        expected = {"vpc": {"vpc_id": "vpc-1"}, "subnets": {"subnet_ids": ["subnet-1"]}}
        assert run.state.outputs == expected
        assert on_disk(tmp_path)["outputs"] == expected
    else:
        assert run.state.outputs == {}
        assert not (tmp_path / "s.json").exists()


def test_destroy_runs_dependants_first_with_upstream_from_state(tmp_path: Path) -> None:
    rec = Recorder()
    upstreams: dict[str, Any] = {}

    def body(name: str) -> Callable[[StepContext], None]:
        def destroy_fn(ctx: StepContext) -> None:
            rec.add("start", name)
            upstreams[name] = ctx.upstream
            rec.add("end", name)
        return destroy_fn

    run = make_run(tmp_path)
    outputs = {"vpc": {"vpc_id": "vpc-1"}, "subnets": {"subnet_ids": ["s-1"]},
               "db": {"db": "x"}}
    for name, out in outputs.items():
        run.writer.set_outputs(name, out)

    steps = [step("vpc", (), destroy=body("vpc")),
             step("subnets", ("vpc",), destroy=body("subnets")),
             step("db", ("subnets",), destroy=body("db"))]
    result = destroy(steps, run)

    assert {n: o.status for n, o in result.outcomes.items()} == dict.fromkeys(outputs, "done")
    assert rec.index("start", "subnets") > rec.index("end", "db")
    assert rec.index("start", "vpc") > rec.index("end", "subnets")
    assert upstreams == {"db": {"subnets": {"subnet_ids": ["s-1"]}},
                         "subnets": {"vpc": {"vpc_id": "vpc-1"}}, "vpc": {}}
    assert run.state.outputs == {}
    assert on_disk(tmp_path)["outputs"] == {}


def test_a_failed_destroy_skips_what_it_requires(tmp_path: Path) -> None:
    ran: list[str] = []

    def record(ctx: StepContext) -> None:
        ran.append(ctx.step)

    def stuck(ctx: StepContext) -> None:
        raise ExaprovError("subnets: still in use")

    run = make_run(tmp_path)
    result = destroy([step("vpc", (), destroy=record),
                      step("subnets", ("vpc",), destroy=stuck),
                      step("db", ("subnets",), destroy=record)], run)

    assert {n: o.status for n, o in result.outcomes.items()} == {
        "db": "done", "subnets": "failed", "vpc": "skipped"}
    assert ran == ["db"]


# -- StepContext.create ----------------------------------------------------------------


def test_create_saves_an_intent_before_the_call_then_the_id(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ctx = context(run)
    during: dict[str, Any] = {}

    def create_vpc(token: str) -> str:
        during["token"] = token
        during["record"] = on_disk(tmp_path)["resources"].get("s.vpc")
        return "vpc-123"

    resource_id = ctx.create("vpc", "vpc", create_vpc, detail="10.0.0.0/16",
                             name="exa-vpc", cidr="10.0.0.0/16")

    assert resource_id == "vpc-123"
    assert during["record"] == {"kind": "vpc", "status": INTENT, "token": during["token"],
                                "name": "exa-vpc"}
    saved = on_disk(tmp_path)["resources"]["s.vpc"]
    assert saved["status"] == CREATED
    assert saved["id"] == "vpc-123"
    assert saved["cidr"] == "10.0.0.0/16"
    assert run.changes == [Change("create", "s.vpc", "vpc", "10.0.0.0/16")]


def test_create_reuses_the_token_of_a_leftover_intent(tmp_path: Path) -> None:
    tokens: list[str] = []

    def fails(token: str) -> str:
        tokens.append(token)
        raise client_error("InternalError", "CreateVpc")

    def works(token: str) -> str:
        tokens.append(token)
        return "vpc-1"

    with pytest.raises(AwsError):
        context(make_run(tmp_path)).create("vpc", "vpc", fails)
    assert on_disk(tmp_path)["resources"]["s.vpc"]["status"] == INTENT

    # The next run (after a crash) reads the intent and retries with the same token.
    assert context(reload_run(tmp_path)).create("vpc", "vpc", works) == "vpc-1"
    assert tokens[0] == tokens[1]
    assert on_disk(tmp_path)["resources"]["s.vpc"]["token"] == tokens[0]

    # Once created, a recreate (the resource vanished) must not replay the old token.
    context(reload_run(tmp_path)).create("vpc", "vpc", works)
    assert tokens[2] != tokens[0]


def test_an_intent_for_a_recreate_does_not_keep_the_vanished_id(tmp_path: Path) -> None:
    ctx = context(make_run(tmp_path))
    ctx.found("vpc", "vpc", "vpc-old", cidr="10.0.0.0/16")
    during: dict[str, Any] = {}

    def create_vpc(token: str) -> str:
        during["record"] = on_disk(tmp_path)["resources"]["s.vpc"]
        return "vpc-new"

    ctx.create("vpc", "vpc", create_vpc)
    # A crash here must not leave state claiming vpc-old is being created.
    assert during["record"]["status"] == INTENT
    assert "id" not in during["record"]
    assert "cidr" not in during["record"]


def test_create_in_plan_mode_only_records_a_change(tmp_path: Path) -> None:
    run = make_run(tmp_path, Mode.PLAN)
    called: list[str] = []

    result = context(run).create("vpc", "vpc", lambda token: called.append(token) or "x",
                                 detail="10.0.0.0/16")

    assert result == unknown("s.vpc")
    assert is_unknown(result)
    assert called == []
    assert run.changes == [Change("create", "s.vpc", "vpc", "10.0.0.0/16")]
    assert run.state.resources == {}
    assert not (tmp_path / "s.json").exists()
    assert [(o.address, o.live) for o in run.observed.values()] == [("s.vpc", "absent")]


# -- StepContext.found / update ------------------------------------------------------


def test_found_adopts_and_reports_a_different_recorded_id_as_drift(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ctx = context(run)

    assert ctx.found("vpc", "vpc", "vpc-1", cidr="10.0.0.0/16") == "vpc-1"
    assert on_disk(tmp_path)["resources"]["s.vpc"] == {
        "kind": "vpc", "id": "vpc-1", "status": CREATED, "cidr": "10.0.0.0/16"}
    assert any("not in state" in d for d in run.observed["s.vpc"].drift)

    # A later run finds another VPC than the one recorded: drift, and up adopts it.
    run2 = reload_run(tmp_path)
    context(run2).found("vpc", "vpc", "vpc-2")
    row = run2.observed["s.vpc"]
    assert (row.recorded_id, row.live_id) == ("vpc-1", "vpc-2")
    assert row.drift == ["state records vpc-1, AWS has vpc-2 (up adopts it)"]
    assert on_disk(tmp_path)["resources"]["s.vpc"]["id"] == "vpc-2"


def test_found_in_plan_mode_reports_but_does_not_write(tmp_path: Path) -> None:
    run = make_run(tmp_path, Mode.PLAN)
    context(run).found("vpc", "vpc", "vpc-1")
    assert run.observed["s.vpc"].drift
    assert run.state.resources == {}
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("mode", [Mode.APPLY, Mode.PLAN])
def test_update_records_a_change_and_applies_only_in_apply(tmp_path: Path, mode: Mode) -> None:
    run = make_run(tmp_path, mode)
    ctx = context(run)
    calls: list[str] = []
    ctx.found("vpc", "vpc", "vpc-1")

    ctx.update("vpc", "vpc", "dns hostnames off -> on", lambda: calls.append("update"))

    assert run.changes == [Change("update", "s.vpc", "vpc", "dns hostnames off -> on")]
    assert "dns hostnames off -> on" in run.observed["s.vpc"].drift
    assert calls == (["update"] if mode is Mode.APPLY else [])


@pytest.mark.parametrize("mode", [Mode.APPLY, Mode.PLAN])
def test_an_initial_update_is_part_of_the_create(tmp_path: Path, mode: Mode) -> None:
    run = make_run(tmp_path, mode)
    calls: list[str] = []

    context(run).update("igw", "igw", "attach", lambda: calls.append("attach"), initial=True)

    assert run.changes == []
    assert calls == (["attach"] if mode is Mode.APPLY else [])


# -- StepContext.delete / call -------------------------------------------------------


def test_delete_counts_not_found_as_success_and_forgets(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ctx = context(run)
    ctx.found("vpc", "vpc", "vpc-1")
    seen: list[str] = []

    def gone(resource_id: str) -> None:
        seen.append(resource_id)
        raise client_error("InvalidVpcID.NotFound")

    ctx.delete("vpc", "vpc", "vpc-1", gone)

    assert seen == ["vpc-1"]
    assert run.changes == [Change("delete", "s.vpc", "vpc", "vpc-1")]
    assert "s.vpc" not in run.state.resources
    assert on_disk(tmp_path)["resources"] == {}


def test_delete_failure_names_the_step_and_operation(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ctx = context(run)
    ctx.found("vpc", "vpc", "vpc-1")

    def busy(resource_id: str) -> None:
        raise client_error("DependencyViolation")

    with pytest.raises(AwsError) as caught:
        ctx.delete("vpc", "vpc", "vpc-1", busy)

    err = caught.value
    assert (err.step, err.operation, err.code) == ("s", "DeleteVpc", "DependencyViolation")
    assert err.message.startswith("s: DeleteVpc failed (DependencyViolation)")
    assert on_disk(tmp_path)["resources"]["s.vpc"]["status"] == DELETING


def test_delete_of_an_unknown_id_only_forgets_and_plan_does_not_call(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ctx = context(run)
    ctx.run.writer.record("s.vpc", kind="vpc", status=INTENT, token="t")
    calls: list[str] = []

    ctx.delete("vpc", "vpc", None, calls.append)
    assert calls == [] and run.changes == []
    assert "s.vpc" not in run.state.resources

    plan = make_run(tmp_path / "plan", Mode.PLAN)
    plan.writer.state.resources["s.vpc"] = {"kind": "vpc", "id": "vpc-1", "status": CREATED}
    context(plan).delete("vpc", "vpc", "vpc-1", calls.append)
    assert calls == []
    assert plan.changes == [Change("delete", "s.vpc", "vpc", "vpc-1")]
    assert plan.state.resources["s.vpc"]["status"] == CREATED


def test_call_turns_aws_errors_into_errors_naming_the_step(tmp_path: Path) -> None:
    ctx = context(make_run(tmp_path), "network")

    def denied() -> None:
        raise client_error("UnauthorizedOperation", "CreateVpc")

    with pytest.raises(AwsError) as caught:
        ctx.call(denied)
    err = caught.value
    assert (err.step, err.operation, err.code) == ("network", "CreateVpc",
                                                   "UnauthorizedOperation")
    assert "UnauthorizedOperation happened" in err.message
    assert isinstance(err.__cause__, ClientError)

    def offline() -> None:
        raise EndpointConnectionError(endpoint_url="https://ec2.example")

    with pytest.raises(AwsError) as caught:
        ctx.call(offline)
    assert (caught.value.step, caught.value.code) == ("network", "EndpointConnectionError")

    assert ctx.call(lambda x: x + 1, 1) == 2


# -- waiting, retrying, cancelling --------------------------------------------------


def test_cancel_stops_a_step_blocked_in_a_wait(tmp_path: Path) -> None:
    polled = threading.Event()
    ran: list[str] = []

    def waits(ctx: StepContext) -> dict[str, Any]:
        def probe() -> str:
            polled.set()
            return "pending"

        # 3600 s scaled by 0.001: 3.6 s, so only the cancel can end it in time.
        ctx.wait_until("nat gateway nat-1", probe, lambda s: s == "available",
                       timeout=3600, interval=60)
        return {}

    def after(ctx: StepContext) -> dict[str, Any]:
        ran.append("after")
        return {}

    run = make_run(tmp_path)

    def canceller() -> None:
        if polled.wait(WAIT):
            run.cancel.cancel()

    thread = threading.Thread(target=canceller)
    thread.start()
    try:
        result = apply([step("nat", (), waits), step("after", ("nat",), after)], run)
    finally:
        run.cancel.cancel()  # never leave the canceller (or a step) waiting
        thread.join(WAIT)

    assert result.outcomes["nat"].status == "cancelled"
    assert isinstance(result.outcomes["nat"].error, Cancelled)
    assert result.outcomes["after"].status == "skipped"
    assert result.cancelled
    assert ran == []


def test_wait_until_timeout_names_the_resource_and_its_last_state(tmp_path: Path) -> None:
    reporter = EventReporter()
    ctx = context(make_run(tmp_path, reporter=reporter), "nat")
    polls: list[int] = []

    def probe() -> str:
        polls.append(1)
        return "pending"

    with pytest.raises(WaitTimeout) as caught:
        ctx.wait_until("nat gateway nat-1", probe, lambda s: s == "available",
                       timeout=5, interval=1, describe=lambda s: f"in state {s}")
    assert "nat gateway nat-1 still in state pending" in caught.value.message
    assert polls
    assert reporter.activities and reporter.activities[0][0] == "nat"

    assert ctx.wait_until("x", lambda: "available", lambda s: s == "available",
                          timeout=5, interval=1) == "available"


def test_retry_while_retries_the_given_codes_then_succeeds(tmp_path: Path) -> None:
    ctx = context(make_run(tmp_path))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise client_error("DependencyViolation")
        return "deleted"

    assert ctx.retry_while("delete vpc", flaky, {"DependencyViolation"},
                           timeout=600) == "deleted"
    assert len(calls) == 3


def test_retry_while_gives_up_after_its_bound(tmp_path: Path) -> None:
    ctx = context(make_run(tmp_path))
    calls: list[int] = []

    def stuck() -> None:
        calls.append(1)
        raise client_error("DependencyViolation")

    with pytest.raises(ClientError) as caught:
        ctx.retry_while("delete vpc", stuck, {"DependencyViolation"}, timeout=20,
                        hint="an ENI still uses it")
    assert len(calls) > 1
    assert caught.value.response["Error"]["Code"] == "DependencyViolation"
    message = caught.value.response["Error"]["Message"]
    assert "still failing after" in message and "delete vpc" in message
    assert "an ENI still uses it" in message


def test_retry_while_does_not_retry_other_codes(tmp_path: Path) -> None:
    ctx = context(make_run(tmp_path))
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise client_error("UnauthorizedOperation")

    with pytest.raises(ClientError) as caught:
        ctx.retry_while("delete vpc", denied, {"DependencyViolation"}, timeout=600)
    assert len(calls) == 1
    assert caught.value.response["Error"]["Message"] == "UnauthorizedOperation happened"


# -- crash checkpoints (in a subprocess: they end the process) ---------------------------


def run_python(code: str, crash_at: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(ENV_CRASH_AT, None)
    if crash_at is not None:
        env[ENV_CRASH_AT] = crash_at
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_checkpoint_kills_the_process_at_the_named_point() -> None:
    code = "from exaprov.engine import checkpoint\ncheckpoint('after_create:s.vpc')\n" \
           "print('survived')"
    crashed = run_python(code, "after_create:s.vpc")
    assert crashed.returncode == 137
    assert "survived" not in crashed.stdout

    elsewhere = run_python(code, "before_create:s.vpc")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "survived" in elsewhere.stdout


CREATE_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from types import SimpleNamespace
    from exaprov.engine import Mode, Run, Step, StepContext
    from exaprov.state import LocalStateStore, State, StateWriter

    store = LocalStateStore(Path(sys.argv[1]))
    writer = StateWriter(store, State.new("t", "us-west-1"))
    run = Run(SimpleNamespace(name="t", tags={}), None, writer, Mode.APPLY)
    ctx = StepContext(run, Step("s", (), lambda c: {}, lambda c: None), {})

    def create(token):
        print("created", token, flush=True)
        return "vpc-1"

    ctx.create("vpc", "vpc", create)
    print("finished", flush=True)
""")


def test_a_crash_after_create_leaves_the_intent_with_its_token(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    crashed = run_python(CREATE_SCRIPT, "after_create:s.vpc", str(path))

    assert crashed.returncode == 137, crashed.stderr
    assert "finished" not in crashed.stdout
    token = crashed.stdout.split()[1]
    record = json.loads(path.read_text())["resources"]["s.vpc"]
    assert record["status"] == INTENT
    assert record["token"] == token
    assert "id" not in record


@pytest.mark.parametrize("mode", [Mode.APPLY, Mode.PLAN])
def test_a_step_turned_off_with_resources_is_destroyed_after_confirmation(
        tmp_path: Path, mode: Mode) -> None:
    destroyed: list[str] = []

    def destroy(ctx: StepContext) -> None:
        destroyed.append(ctx.step)
        ctx.delete("thing", "kind", ctx.recorded_id("thing"), lambda rid: None,
                   detail="DATA LOSS: thing")

    run = make_run(tmp_path)
    run.writer.record("gone.thing", kind="kind", id="t-1", status="created")
    run.writer.record("gone-child.thing", kind="kind", id="t-2", status="created")
    run.writer.dry_run = mode is Mode.PLAN
    steps = [step("gone", (), lambda ctx: {}, destroy=destroy, enabled=lambda cfg: False),
             step("gone-child", ("gone",), lambda ctx: {}, destroy=destroy,
                  enabled=lambda cfg: False),
             step("never", (), lambda ctx: {}, destroy=destroy, enabled=lambda cfg: False)]
    run.mode = mode
    if mode is Mode.APPLY:
        run.confirm = lambda question: False
        with pytest.raises(InputError, match="gone"):
            apply(steps, run)
        assert destroyed == []
        run.confirm = lambda question: "2 resource(s)" in question
    result = apply(steps, run)
    assert destroyed == ["gone-child", "gone"]  # dependants first; `never` has nothing to delete
    assert [(c.action, c.address) for c in result.changes] == [
        ("delete", "gone-child.thing"), ("delete", "gone.thing")]
    assert bool(run.state.resources) is (mode is Mode.PLAN)
