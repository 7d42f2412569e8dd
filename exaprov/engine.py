"""The step engine: walks the stack's steps in dependency order, concurrently.

A step is a small record — name, the steps it requires, `ensure` and `destroy`.
`ensure` is written once and serves three commands: in APPLY mode (`up`) it
creates and repairs; in PLAN mode (`plan`, `status`) every mutation becomes a
recorded Change instead, so what `plan` shows is exactly what `up` would do. RECOVER
mode (`state recover`) is PLAN whose finds are recorded: a state rebuilt from tags.
Steps return their outputs; the engine's StateWriter is the only writer of state.

`up` starts each step as soon as the steps it requires are done. A failed step
stops new work, lets running steps finish and record, and leaves the rest
skipped. `destroy` walks the same graph with the edges reversed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from graphlib import TopologicalSorter
from typing import Any, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from exaprov import interrupts
from exaprov.errors import (
    AwsError,
    Cancelled,
    ExaprovError,
    InputError,
    LostAnswer,
    from_botocore,
    is_not_found,
)
from exaprov.lost_answers import creating, was_lost
from exaprov.state import CREATED, DELETING, INTENT, State, StateWriter
from exaprov.timing import CancelToken, scaled
from exaprov.waiting import retry_while, wait_until

log = logging.getLogger(__name__)
T = TypeVar("T")

TAG_DEPLOYMENT = "exaprov:deployment"
TAG_COMPONENT = "exaprov:component"
TAG_RESOURCE = "exaprov:resource"

# Testing knob for crash tests: `EXAPROV_CRASH_AT=after_create:network.vpc` makes the
# process die at that checkpoint as a SIGKILL would (no cleanup, no state write).
ENV_CRASH_AT = "EXAPROV_CRASH_AT"


class Mode(Enum):
    APPLY = "apply"
    PLAN = "plan"
    # `state recover`: a plan (nothing in AWS changes) whose finds are recorded, so the
    # state can be rebuilt from what the steps find by tag.
    RECOVER = "recover"


@dataclass
class Change:
    action: str  # create | update | delete | replace
    address: str
    kind: str
    detail: str = ""


@dataclass
class Observed:
    """One resource as `status` shows it."""

    address: str
    kind: str
    recorded_id: str | None
    live_id: str | None
    live: str  # the resource's own state in AWS, or "missing" / "absent"
    drift: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    step: str
    status: str  # done | failed | skipped | cancelled
    seconds: float = 0.0
    error: ExaprovError | None = None


@dataclass
class RunResult:
    outcomes: dict[str, Outcome]
    changes: list[Change]
    observed: list[Observed]
    notices: list[str] = field(default_factory=list)  # what `plan` / `status` say besides changes
    signum: int | None = None  # the signal that cancelled the run (None: Ctrl-C or none)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.status in ("failed", "cancelled")]

    @property
    def cancelled(self) -> bool:
        return any(o.status == "cancelled" for o in self.outcomes.values())


class Reporter(Protocol):
    """What a command shows while steps run. Two methods are optional (looked up with getattr,
    so a reporter with only these three still works): `planned(steps)`, the steps the run
    walks, once before the first starts; and `waiting(step, resource, state, seconds, done)`,
    each poll of a wait for one resource (done=True when that wait ends), which replaces
    that wait's `activity` lines so each waited-on resource can have a line of its own."""

    def started(self, step: str) -> None: ...

    def activity(self, step: str, text: str) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...


class NullReporter:
    def started(self, step: str) -> None:
        pass

    def activity(self, step: str, text: str) -> None:
        log.info("%s: %s", step, text)

    def waiting(self, step: str, resource: str, state: str, seconds: float, done: bool) -> None:
        if not done:
            log.info("%s: waiting for %s: %s (%.0fs)", step, resource, state, seconds)

    def finished(self, outcome: Outcome) -> None:
        pass


@dataclass(frozen=True)
class Step:
    name: str
    requires: tuple[str, ...]
    ensure: Callable[[StepContext], dict[str, Any]]
    destroy: Callable[[StepContext], None]
    enabled: Callable[[Any], bool] = lambda cfg: True
    title: str = ""
    # Its ensure may ask the user before a change (`ctx.ask`): `up` plans it first, so that
    # every question comes before the first change.
    asks: bool = False


class Run:
    """What the steps of one command share: config, AWS, the state writer, the reporter."""

    def __init__(self, cfg: Any, aws: Any, writer: StateWriter, mode: Mode,
                 reporter: Reporter | None = None, cancel: CancelToken | None = None,
                 confirm: Callable[[str], bool] | None = None) -> None:
        self.cfg = cfg
        self.aws = aws
        self.writer = writer
        self.mode = mode
        self.reporter = reporter or NullReporter()
        self.cancel = cancel or CancelToken()
        self.confirm = confirm or (lambda question: False)
        self._mutex = threading.Lock()
        self.changes: list[Change] = []
        self.questions: list[str] = []  # what a plan found `up` would have to ask
        self.observed: dict[str, Observed] = {}
        self.notices: list[str] = []
        self._shared: dict[Any, Future[Any]] = {}
        # A state that cannot be saved stops every change at once, in every thread.
        guard = getattr(aws, "guard", None)
        if guard is not None:
            writer.on_broken.append(lambda: guard.halt("the state could not be saved"))
        # destroy: take the database's final snapshot (`--skip-final-snapshot` clears it);
        # what destroy leaves for the user to keep (such a snapshot), to name at the end.
        self.final_snapshot = True
        self.kept: list[str] = []

    def shared(self, key: Any, read: Callable[[], T]) -> T:
        """One read per run, shared by every step that asks for it (e.g. one DescribeSubnets
        by the deployment's tag serves network, database and peering). Concurrent askers wait
        for the first; any mutation made through a StepContext empties the cache."""
        with self._mutex:
            future = self._shared.get(key)
            owner = future is None
            if owner:
                future = self._shared[key] = Future()
        assert future is not None
        if owner:
            try:
                future.set_result(read())
            except BaseException as exc:
                with self._mutex:
                    self._shared.pop(key, None)
                future.set_exception(exc)
                raise
        return future.result()

    def invalidate(self) -> None:
        """Forget every shared read: something changed in AWS."""
        with self._mutex:
            self._shared.clear()

    @property
    def state(self) -> State:
        return self.writer.state

    def add_change(self, change: Change) -> None:
        with self._mutex:
            self.changes.append(change)

    def notice(self, text: str) -> None:
        with self._mutex:
            if text not in self.notices:
                self.notices.append(text)

    def observe(self, row: Observed) -> Observed:
        with self._mutex:
            return self.observed.setdefault(row.address, row)


def checkpoint(name: str) -> None:
    if os.environ.get(ENV_CRASH_AT) == name:
        os._exit(137)


def unknown(address: str) -> str:
    """A placeholder for an ID that only exists once `up` creates it."""
    return f"(new {address})"


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("(new ")


class StepContext:
    """What one step sees: config, AWS, its upstream outputs and its own records."""

    def __init__(self, run: Run, step: Step, upstream: dict[str, dict[str, Any]]) -> None:
        self.run = run
        self.step = step.name
        self.cfg = run.cfg
        self.aws = run.aws
        self.upstream = upstream
        self.cancel = run.cancel

    @property
    def planning(self) -> bool:
        """No change to AWS: creates, updates and deletes only become planned changes."""
        return self.run.mode is not Mode.APPLY

    @property
    def recording(self) -> bool:
        """What is found goes into the state (APPLY, and RECOVER rebuilding it)."""
        return self.run.mode is not Mode.PLAN

    def address(self, logical: str) -> str:
        return f"{self.step}.{logical}"

    # -- records ----------------------------------------------------------------

    def recorded(self, logical: str) -> dict[str, Any] | None:
        return self.run.state.resources.get(self.address(logical))

    def recorded_id(self, logical: str) -> str | None:
        rec = self.recorded(logical)
        return rec.get("id") if rec else None

    def recorded_logicals(self) -> list[str]:
        return list(self.run.state.step_resources(self.step))

    def tags(self, logical: str, name: str | None = None,
             extra: dict[str, str] | None = None) -> dict[str, str]:
        """User tags, then exaprov's identity tags (which the user cannot override)."""
        tags = dict(self.cfg.tags)
        tags.update(extra or {})
        if name:
            tags["Name"] = name
        tags.update({TAG_DEPLOYMENT: self.cfg.name, TAG_COMPONENT: self.step,
                     TAG_RESOURCE: logical})
        return tags

    # -- the three things ensure does ---------------------------------------------

    def found(self, logical: str, kind: str, resource_id: str, live: str = "available",
              **attrs: Any) -> str:
        """An existing resource: adopt it into state (if it is not recorded as this ID)."""
        address = self.address(logical)
        recorded = self.recorded_id(logical)
        row = self.run.observe(Observed(address, kind, recorded, resource_id, live))
        if recorded is None:
            row.drift.append("not in state: found by its tags (up adopts it)")
        elif recorded != resource_id:
            row.drift.append(f"state records {recorded}, AWS has {resource_id} (up adopts it)")
        if self.recording:
            self.run.writer.record(address, kind=kind, id=resource_id, status=CREATED, **attrs)
        return resource_id

    def create(self, logical: str, kind: str, create: Callable[[str], str], *,
               detail: str = "", name: str | None = None, listed: bool = False,
               **attrs: Any) -> str:
        """Create a missing resource: intent first, then the call, then its ID, each saved.

        `listed=True`: the create is part of a change already listed (a replacement's new
        resource), so it is not counted again: `up` reports what `plan` showed.
        """
        address = self.address(logical)
        recorded = self.recorded(logical)
        recorded_id = recorded.get("id") if recorded else None
        live = "missing" if recorded_id else "absent"
        row = self.run.observe(Observed(address, kind, recorded_id, None, live))
        if recorded_id:
            row.drift.append(f"state records {recorded_id} but it is gone from AWS")
        if not listed:
            self.run.add_change(Change("create", address, kind, detail))
        if self.planning:
            return unknown(address)
        token = (recorded or {}).get("token") if (recorded or {}).get("status") == INTENT \
            else None
        token = token or uuid.uuid4().hex
        self.run.writer.record(address, fresh=True, kind=kind, status=INTENT, token=token,
                               name=name)
        self.report(f"creating {kind} {name or logical}")
        checkpoint(f"before_create:{address}")
        try:
            with creating():
                resource_id = self.mutate(create, token)
        except AwsError as exc:
            if exc.__cause__ is not None and was_lost(exc.__cause__):
                raise LostAnswer(address, f"{address}: AWS may have made it, but the answer was "
                                 f"lost ({exc.code})",
                                 hint="run `exaprov up` again: it finds it by its tags") from exc
            raise
        checkpoint(f"after_create:{address}")
        self.run.writer.record(address, kind=kind, id=resource_id, status=CREATED, **attrs)
        row.live_id, row.live = resource_id, "created"
        return resource_id

    def update(self, logical: str, kind: str, detail: str, apply: Callable[[], Any], *,
               initial: bool = False) -> None:
        """Repair one drifted attribute (or apply a changed config value).

        `initial=True` marks the finishing touches of a resource created in this run
        (attach, associate, first routes): part of its create, not a change of its own.
        """
        if initial:
            if not self.planning:
                self.mutate(apply)
            return
        address = self.address(logical)
        row = self.run.observed.get(address)
        if row is not None:
            row.drift.append(detail)
        self.run.add_change(Change("update", address, kind, detail))
        if not self.planning:
            self.report(f"updating {kind} {logical}: {detail}")
            self.mutate(apply)

    # -- destroy -----------------------------------------------------------------

    def delete(self, logical: str, kind: str, resource_id: str | None,
               delete: Callable[[str], Any], *, detail: str = "", listed: bool = False) -> None:
        """Delete one resource; "already gone" counts as success. Forgets it afterwards.

        `listed=True`: part of a change already listed (a replacement's old resource)."""
        address = self.address(logical)
        if resource_id is None or is_unknown(resource_id):
            self.forget(logical)
            return
        if not listed:
            self.run.add_change(Change("delete", address, kind, detail or resource_id))
        if self.planning:
            return
        self.run.writer.record(address, kind=kind, id=resource_id, status=DELETING)
        self.report(f"deleting {kind} {resource_id}")
        try:
            self.mutate(delete, resource_id)
        except AwsError as exc:
            if exc.__cause__ is None or not is_not_found(exc.__cause__):
                raise
        self.forget(logical)

    def ask(self, question: str) -> bool:
        """The user's consent to a change (deleting what the config no longer has). A plan
        only notes the question (and goes on as if agreed, to list the change): `up` asks
        every noted question before its first change."""
        if self.planning:
            with self.run._mutex:
                if question not in self.run.questions:
                    self.run.questions.append(question)
            return True
        return self.run.confirm(question)

    def created_in_this_run(self, address: str) -> bool:
        """Whether this run created (or replaced) the resource at `address`: what is then done
        to it, or to what hangs on it, is part of making it, not a change of its own."""
        return any(c.address == address and c.action in ("create", "replace")
                   for c in list(self.run.changes))

    def forget(self, logical: str) -> None:
        if not self.planning:
            self.run.writer.remove(self.address(logical))

    # -- helpers ---------------------------------------------------------------

    def report(self, text: str) -> None:
        self.run.reporter.activity(self.step, text)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an AWS call, turning its failure into an error naming this step."""
        self.cancel.check()
        try:
            return fn(*args)
        except (ClientError, BotoCoreError, ResponseParserError) as exc:
            raise from_botocore(self.step, exc) from exc

    def mutate(self, fn: Callable[..., T], *args: Any) -> T:
        """`call` for a change to AWS: shared reads taken before (or during) it are stale."""
        self.run.invalidate()
        try:
            return self.call(fn, *args)
        finally:
            self.run.invalidate()

    def wait_until(self, what: str, probe: Callable[[], T], ready: Callable[[T], bool], *,
                   timeout: float, interval: float, describe: Callable[[T], str] = str) -> T:
        waiting = getattr(self.run.reporter, "waiting", None)
        progress = None if waiting is None else (
            lambda state, seconds, done: waiting(self.step, what, state, seconds, done))
        return wait_until(what, lambda: self.call(probe), ready, timeout=timeout,
                          interval=interval, cancel=self.cancel, report=self.report,
                          describe=describe, progress=progress)

    def wait_gone(self, what: str, status: Callable[[], str], *, timeout: float,
                  interval: float) -> None:
        """Wait until a deleted resource is gone: `status()` answers NotFound (or "DELETED")."""
        def probe() -> str:
            try:
                return status()
            except ClientError as exc:
                if is_not_found(exc):
                    return "DELETED"
                raise

        self.wait_until(f"{what} to delete", probe, lambda s: s.upper() == "DELETED",
                        timeout=timeout, interval=interval)

    def retry_while(self, what: str, call: Callable[[], T], codes: set[str], *,
                    timeout: float, hint: str | None = None, message: str | None = None) -> T:
        """Retry while AWS says "not yet"; raises the raw ClientError (callers run inside
        create/update/delete, which name the step)."""
        return retry_while(what, call, codes, timeout=timeout, cancel=self.cancel,
                           report=self.report, hint=hint, message=message)


# -- walking the graph -------------------------------------------------------------

MAX_PARALLEL_STEPS = 8


def _walk(graph: dict[str, set[str]], work: Callable[[str], None], run: Run) -> RunResult:
    """Run `work(name)` for every node once its predecessors are done, concurrently."""
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    outcomes: dict[str, Outcome] = {}
    running: dict[Future[None], tuple[str, float]] = {}
    stop = False

    def start(name: str) -> None:
        run.reporter.started(name)
        running[pool.submit(work, name)] = (name, time.monotonic())

    planned = getattr(run.reporter, "planned", None)
    if planned is not None:
        planned(list(graph))
    pool = ThreadPoolExecutor(max_workers=MAX_PARALLEL_STEPS, thread_name_prefix="step")
    abandon = False
    try:
        with _first_ctrl_c_cancels(run.cancel):
            while sorter.is_active() and not (stop and not running):
                stop = stop or run.cancel.cancelled
                if not stop:
                    for name in sorter.get_ready():
                        start(name)
                if not running:
                    break
                done, _ = wait(running, timeout=_CANCEL_POLL, return_when=FIRST_COMPLETED)
                for future in done:
                    name, began = running.pop(future)
                    outcome = _outcome(name, future, time.monotonic() - began)
                    outcomes[name] = outcome
                    run.reporter.finished(outcome)
                    if outcome.status == "done":
                        sorter.done(name)
                    else:
                        stop = True
    except KeyboardInterrupt:
        abandon = True  # second Ctrl-C: do not wait for calls in flight
        raise
    finally:
        pool.shutdown(wait=not abandon, cancel_futures=True)
    for name in graph:
        outcomes.setdefault(name, Outcome(name, "skipped"))
    return RunResult(outcomes, list(run.changes), list(run.observed.values()), list(run.notices),
                     signum=run.cancel.signum)


_CANCEL_POLL = 0.2  # how often the walk notices a cancel while steps are busy (seconds)


@contextlib.contextmanager
def _first_ctrl_c_cancels(cancel: CancelToken) -> Iterator[None]:
    """While steps run, the first SIGINT, SIGTERM or SIGHUP only sets the cancel token
    (running steps stop at their next poll, record and save); a second raises Interrupted.
    A handler rather than catching KeyboardInterrupt, which could land in any line of the
    main thread."""

    def on_signal(signum: int, frame: Any) -> None:
        interrupts.note(signum)
        if cancel.cancelled:
            raise interrupts.Interrupted(cancel.signum or signum, again=True)
        cancel.cancel(signum)

    with interrupts.handled(on_signal):
        yield


def _outcome(name: str, future: Future[None], seconds: float) -> Outcome:
    exc = future.exception()
    if exc is None:
        return Outcome(name, "done", seconds)
    if isinstance(exc, Cancelled):
        return Outcome(name, "cancelled", seconds, exc)
    if isinstance(exc, ExaprovError):
        return Outcome(name, "failed", seconds, exc)
    log.debug("step %s crashed", name, exc_info=exc)
    return Outcome(name, "failed", seconds,
                   ExaprovError(f"{name}: internal error: {type(exc).__name__}: {exc}"))


def apply(steps: Sequence[Step], run: Run) -> RunResult:
    """`up` (APPLY) or `plan`/`status` (PLAN): ensure every enabled step.

    A step the config turned off (e.g. `module_repo_backend: null`) that still has
    resources is destroyed instead — in PLAN mode that lists the deletes; in APPLY
    mode only after `run.confirm` agrees, asked once before anything starts.
    """
    enabled = {s.name: s.enabled(run.cfg) for s in steps}
    active = [s for s in steps if enabled[s.name]]
    removed = [s for s in steps if not enabled[s.name] and run.state.step_resources(s.name)]
    if removed and run.mode is Mode.APPLY:
        names = ", ".join(s.name for s in removed)
        count = sum(len(run.state.step_resources(s.name)) for s in removed)
        if not run.confirm(f"The config no longer has {names}: delete its {count} resource(s)?"):
            raise InputError(f"the config no longer has {names}, whose {count} resource(s) would be "
                             "deleted; nothing was changed",
                             hint="run `exaprov plan` to see them, then `exaprov up --yes` to delete "
                                  "them, or put the config back")
    by_name = {s.name: s for s in [*active, *removed]}
    removed_names = {s.name for s in removed}
    outputs: dict[str, dict[str, Any]] = {}
    outputs_mutex = threading.Lock()

    def work(name: str) -> None:
        step = by_name[name]
        if name in removed_names:
            upstream = {r: run.state.outputs.get(r, {}) for r in step.requires}
            step.destroy(StepContext(run, step, upstream))
            if run.mode is Mode.APPLY:
                run.writer.drop_outputs(name)
            return
        with outputs_mutex:
            # A step run on its own (e.g. `peer`) reads what it requires from the state.
            upstream = {r: outputs[r] if r in outputs else run.state.outputs.get(r, {})
                        for r in step.requires if r in outputs or r not in by_name}
        result = _ensure(step, run, upstream)
        with outputs_mutex:
            outputs[name] = result
        if run.mode is Mode.APPLY or (run.mode is Mode.RECOVER and not _has_unknown(result)):
            run.writer.set_outputs(name, result)

    graph = {s.name: {r for r in s.requires if r in by_name and r not in removed_names}
             for s in active}
    for s in removed:  # among removed steps, dependants go first
        graph.setdefault(s.name, set())
        for required in s.requires:
            if required in removed_names:
                graph.setdefault(required, set()).add(s.name)
    return _walk(graph, work, run)


def _has_unknown(value: Any) -> bool:
    """Outputs naming a resource that does not exist yet (a recovered state leaves them out)."""
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_unknown(v) for v in value)
    return is_unknown(value)


LOST_ANSWERS_PER_RESOURCE = 10  # as many as botocore's attempts at any other call
LOST_ANSWER_PAUSE = 2.0  # seconds (scaled): lets a list by tag catch up with the create


def _ensure(step: Step, run: Run, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A step's ensure; when a create's answer was lost, the step runs again: its lookup by
    tag (or the create's idempotency token, kept in the intent) finds what AWS made. Each
    rerun gets further (what was made is adopted); it stops when one resource's answer is
    lost as often as botocore would have tried."""
    lost: dict[str, int] = {}
    while True:
        try:
            return step.ensure(StepContext(run, step, upstream))
        except LostAnswer as exc:
            lost[exc.address] = lost.get(exc.address, 0) + 1
            if lost[exc.address] >= LOST_ANSWERS_PER_RESOURCE:
                raise
            run.reporter.activity(step.name, f"{exc.message}: looking for it by its tags")
            run.cancel.sleep(scaled(LOST_ANSWER_PAUSE))


def destroy(steps: Sequence[Step], run: Run) -> RunResult:
    """`destroy`: every step's destroy, dependants first."""
    by_name = {s.name: s for s in steps}
    graph: dict[str, set[str]] = {s.name: set() for s in steps}
    for s in steps:
        for required in s.requires:
            graph[required].add(s.name)  # a step goes only after what requires it is gone

    def work(name: str) -> None:
        step = by_name[name]
        upstream = {r: run.state.outputs.get(r, {}) for r in step.requires}
        step.destroy(StepContext(run, step, upstream))
        if run.mode is Mode.APPLY:
            run.writer.drop_outputs(name)

    return _walk(graph, work, run)
