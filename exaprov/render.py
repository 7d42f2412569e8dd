"""What the user sees: progress while steps run, tables and JSON afterwards.

Progress and messages go to stderr; stdout carries results only, so that
`--output json` output can be piped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from exaprov.engine import Change, Observed, Outcome, RunResult

# Everything printed here comes from AWS, the state or the config: an ARN such as
# `arn:aws:secretsmanager:…:secret:…` would become an emoji, and `[bold]` in a tag value
# would vanish, if rich read it as markup. Both consoles print text as it is; exaprov's own
# emphasis goes through `style=` arguments, never through markup in a string.
err = Console(stderr=True, highlight=False, markup=False, emoji=False)
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
if not out.is_terminal:
    out.width = max(out.width, 160)  # piped or logged: keep IDs on one line rather than fold at 80


# Typical AWS durations of the slow waits, in AWS seconds (scaled by EXAPROV_TIME_SCALE like
# every wait), for the live view's estimates ("EKS cluster exa: creating, 3m12s of ~10m"). The
# same figures as the emulator's latency model (exaprov.emulator.AWS_LATENCY; a test keeps the
# two equal), so a sandbox run with that model shows what a run against AWS would.
#   EKS control plane, create: "create a new EKS cluster control plane in 9 minutes or less,
#     on average" (AWS What's New, March 2021); users report 10-14 min (aws/containers-roadmap
#     #1227). Delete: about 3 min; AWS publishes no figure (the emulator's model).
#   Managed node group: about 2 min to ACTIVE for a small group, 4-6 min to delete (it drains
#     and terminates its instances first); AWS publishes no figure (the emulator's model), and
#     the Terraform provider allows 60 min for each.
#   RDS instance (db.t4g.micro, gp3): `creating` 4-5 min, then `backing-up`, where it already
#     serves (hashicorp/terraform#1097, #2886); delete 4-6 min with a final snapshot.
#   NAT gateway: `pending` about 2 min, "up to 10 min" at worst (kubernetes/kops#944;
#     "Still creating... (3m10s elapsed)" in hashicorp/terraform#8687); `deleting` about 1 min.
TYPICAL_SECONDS: dict[tuple[str, str], float] = {
    ("EKS cluster", "create"): 600.0,
    ("EKS cluster", "delete"): 180.0,
    ("node group", "create"): 120.0,
    ("node group", "delete"): 300.0,
    ("RDS instance", "create"): 270.0,
    ("RDS instance", "delete"): 300.0,
    ("NAT gateway", "create"): 120.0,
    ("NAT gateway", "delete"): 60.0,
}

# What a wait's subject starts with (`ctx.wait_until("node group exa-cpu", ...)`) → the kind
# the live view names it by and looks its typical duration up under.
_KINDS = (("cluster ", "EKS cluster"), ("node group ", "node group"),
          ("NAT gateway ", "NAT gateway"), ("database ", "RDS instance"))
_CREATING = {"creating", "pending", "backing-up"}
# States that end a wait (EKS, RDS, EC2, ELB, a wait's own "listed"): shown once, as "… after".
_SETTLED = {"active", "available", "deleted", "successful", "listed", "failed", "create_failed",
            "delete_failed", "degraded", "cancelled", "missing"}
_MARKS = {"done": ("✓", "green"), "failed": ("✗", "red"), "cancelled": ("■", "yellow"),
          "skipped": ("·", "dim")}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def fmt_seconds(seconds: float) -> str:
    """12s, 3m12s, 1h02m: elapsed time as a person reads it."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _fmt_typical(seconds: float) -> str:
    """~10m, ~4m30s, ~2s: a typical duration, rounded as a person would say it."""
    if seconds >= 60:
        rounded = int(round(seconds / 30.0) * 30)
        minutes, secs = divmod(rounded, 60)
        return f"~{minutes}m{secs:02d}s" if secs else f"~{minutes}m"
    return f"~{max(round(seconds), 1)}s"


def describe_wait(resource: str, state: str, seconds: float, done: bool = False) -> str:
    """One waited-on resource as the user reads it:
    `EKS cluster exa: creating, 3m12s of ~10m`; done: `EKS cluster exa: ACTIVE after 9m58s`."""
    subject, deleting = resource, resource.endswith(" to delete")
    if deleting:
        subject = subject[: -len(" to delete")]
    prefix, kind = next(((p, k) for p, k in _KINDS if subject.startswith(p)), ("", None))
    label = f"{kind} {subject[len(prefix):]}" if kind else subject
    if done:
        return f"{label}: {state} after {fmt_seconds(seconds)}"
    phase = "delete" if deleting or "delet" in state.lower() else \
        "create" if state.lower() in _CREATING else None
    word = state.lower() if kind else state
    typical = TYPICAL_SECONDS.get((kind or "", phase or ""))
    if typical is None:
        return f"{label}: {word}, {fmt_seconds(seconds)}"
    from exaprov.timing import scaled

    usual = _fmt_typical(scaled(typical))
    if seconds > scaled(typical) * 1.5:
        return f"{label}: {word}, {fmt_seconds(seconds)} (usually {usual})"
    return f"{label}: {word}, {fmt_seconds(seconds)} of {usual}"


def _timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wants_live(console: Console) -> bool:
    """A live view only on a real terminal (or TTY_INTERACTIVE=1): FORCE_COLOR asks for colour
    in a log, not for cursor movements in it."""
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(isatty and isatty()) and console.is_interactive
    except ValueError:  # a closed stream
        return False


@dataclass
class _Running:
    began: float
    activity: str = "starting"


@dataclass
class _Wait:
    step: str
    state: str
    seconds: float  # waited, as of the last poll
    polled: float  # monotonic time of the last poll
    logged_state: str = ""
    logged_seconds: float = 0.0


class ProgressReporter:
    """What the user sees while steps run.

    On a terminal, a live area: a header (steps done of the total, time elapsed), one line per
    running step with its latest activity, and under it one line per resource it waits for
    (each node group of a step that creates six has its own), with the time waited and, for the
    slow kinds, the typical duration. A step that ends leaves the area: one ✓/✗ line is printed
    above it. Without a terminal (CI, a pipe, a file): one line per event, each with a UTC
    timestamp, never wrapped, so a log shows what exaprov did, waited for and how long.

    Everything shown is a rich Text (never a markup string): names, IDs and states come from AWS,
    the state or the config and are shown as they are. Colour is rich's: off under NO_COLOR, on
    without a terminal under FORCE_COLOR.
    """

    def __init__(self, console: Console | None = None, *, title: str | None = None) -> None:
        self.console = console if console is not None else \
            Console(stderr=True, highlight=False, markup=False, emoji=False)
        self.live = _wants_live(self.console)
        self.title = title if title is not None else _command_title()
        self._mutex = threading.Lock()
        self._began = time.monotonic()
        self.seconds: float | None = None  # the whole run, once it ended
        self._planned: list[str] = []
        self._finished: list[Outcome] = []
        self._running: dict[str, _Running] = {}
        self._waits: dict[tuple[str, str], _Wait] = {}
        self._logged: dict[str, str] = {}
        self._live: Any = None
        self._rerouted: list[tuple[logging.StreamHandler[Any], Any]] = []

    # -- the context: starts and stops the live area ---------------------------------

    def __enter__(self) -> ProgressReporter:
        global last_reporter
        last_reporter = self
        self._began = time.monotonic()
        if self.live:
            from rich.live import Live

            stderr = sys.stderr
            self._live = Live(_Area(self), console=self.console, refresh_per_second=4,
                              transient=True, redirect_stdout=False, redirect_stderr=True)
            self._live.__enter__()
            # -v and --debug log lines: rich redirects sys.stderr above the live area, but a
            # logging handler keeps the stream it was given; point it there too meanwhile.
            if sys.stderr is not stderr:
                self._rerouted = [(h, h.setStream(sys.stderr)) for h in logging.getLogger().handlers
                                  if isinstance(h, logging.StreamHandler) and h.stream is stderr]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self._began
        for handler, stream in self._rerouted:
            if stream is not None:
                handler.setStream(stream)
        self._rerouted = []
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Take the live area off the screen while the user answers a question."""
        live = self._live
        if live is None:
            yield
            return
        live.stop()
        try:
            yield
        finally:
            live.start()

    # -- the Reporter protocol (exaprov.engine) --------------------------------------

    def planned(self, steps: list[str]) -> None:
        with self._mutex:
            self._planned = list(steps)

    def started(self, step: str) -> None:
        with self._mutex:
            self._running[step] = _Running(time.monotonic())
        if not self.live:
            self._log(Text(f"{step}: started", style="dim"))

    def activity(self, step: str, text: str) -> None:
        with self._mutex:
            running = self._running.get(step)
            if running is not None:
                running.activity = text
            changed = self._logged.get(step) != text
            self._logged[step] = text
        if not self.live and changed:
            self._log(Text(f"{step}: {text}"))

    def waiting(self, step: str, resource: str, state: str, seconds: float, done: bool) -> None:
        now = time.monotonic()
        key = (step, resource)
        line: Text | None = None
        with self._mutex:
            if done:
                wait = self._waits.pop(key, None)
                if wait is not None and not self.live:
                    line = Text(f"{step}: {describe_wait(resource, state, seconds, done=True)}")
            else:
                wait = self._waits.setdefault(key, _Wait(step, state, seconds, now))
                wait.state, wait.seconds, wait.polled = state, seconds, now
                # In a log: each change of state, and a reminder every 30 AWS-seconds waited
                # (Terraform's "Still creating... [10s elapsed]", less often); a state that
                # ends the wait (ACTIVE, available, deleted) only in the wait's "after" line.
                if not self.live and state.lower() not in _SETTLED and (
                        state != wait.logged_state
                        or seconds - wait.logged_seconds >= _scaled(30.0)):
                    wait.logged_state, wait.logged_seconds = state, seconds
                    line = Text(f"{step}: {describe_wait(resource, state, seconds)}")
        if line is not None:
            self._log(line)

    def finished(self, outcome: Outcome) -> None:
        with self._mutex:
            self._running.pop(outcome.step, None)
            for key in [k for k in self._waits if k[0] == outcome.step]:
                del self._waits[key]
            self._finished.append(outcome)
            progress = f"{len(self._finished)}/{self._total()}"
        mark, colour = _MARKS.get(outcome.status, ("·", "dim"))
        line = Text.assemble((mark, colour), " ", (outcome.step, "bold"), f" {outcome.status} ",
                             (f"({outcome.seconds:.1f}s", "dim"))
        if not self.live:
            line.append(f", {progress} steps, {fmt_seconds(self.elapsed)} in all", style="dim")
        line.append(")", style="dim")
        self._log(line)

    # -- what is shown -----------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return self.seconds if self.seconds is not None else time.monotonic() - self._began

    def _total(self) -> int:
        return max(len(self._planned), len(self._finished) + len(self._running))

    def _log(self, line: Text) -> None:
        """One event: above the live area, or one timestamped line of a log. Never called
        holding the mutex (the live area's refresh takes it while rich holds its own lock)."""
        if not self.live:
            line = Text.assemble((_timestamp(), "dim"), " ", line)
        self.console.print(line, soft_wrap=True)

    def lines(self) -> list[Text]:
        """The live area: header, each running step, each resource it waits for."""
        now = time.monotonic()
        with self._mutex:
            header = Text.assemble(
                (self.title, "bold"), " · ",
                (f"{len(self._finished)} of {self._total()} steps done", "bold cyan"), " · ",
                (f"{fmt_seconds(self.elapsed)} elapsed", "cyan"))
            rows = [header]
            frame = _SPINNER[int(now * 10) % len(_SPINNER)]
            width = max((len(s) for s in self._running), default=0)
            for step, running in self._running.items():
                rows.append(Text.assemble((frame, "cyan"), " ", (step.ljust(width), "bold"), "  ",
                                          running.activity, "  ",
                                          (fmt_seconds(now - running.began), "dim")))
                for (owner, resource), wait in self._waits.items():
                    if owner == step:
                        text = describe_wait(resource, wait.state,
                                             wait.seconds + (now - wait.polled))
                        rows.append(Text.assemble("  ", ("↳ ", "dim"),
                                                  (text, "yellow" if "usually" in text else "")))
        for row in rows:
            row.no_wrap, row.overflow = True, "ellipsis"
        return rows


class _Area:
    """The live area's renderable: re-read from the reporter at every refresh."""

    def __init__(self, reporter: ProgressReporter) -> None:
        self.reporter = reporter

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield Group(*self.reporter.lines())


def _scaled(seconds: float) -> float:
    from exaprov.timing import scaled

    return scaled(seconds)


def _command_title() -> str:
    """`exaprov up`, `exaprov state recover`: the click command running (`exaprov` outside one)."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except ImportError:  # pragma: no cover - click is a dependency
        ctx = None
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:  # up to the root (`exaprov` itself)
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["exaprov", *names])


# The reporter of the last run, for its summary (how long the run took).
last_reporter: ProgressReporter | None = None


def change_counts(changes: Iterable[Change]) -> dict[str, int]:
    counts = {"create": 0, "update": 0, "delete": 0, "replace": 0}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return counts


def summary_line(changes: list[Change]) -> str:
    counts = change_counts(changes)
    if not any(counts.values()):
        return "No changes."
    return ", ".join(f"{n} to {action}" for action, n in counts.items() if n)


_DONE = {"create": "created", "update": "updated", "delete": "deleted", "replace": "replaced"}


def target_flags(params: dict[str, Any]) -> str:
    """The flags that name the deployment a command ran on, to repeat in the next commands:
    `--sandbox`, and --config / --state / --region / --profile / --endpoint-url when given."""
    flags: list[str] = []
    config = params.get("config_path")
    if config is not None and str(config) != "exaprov.yaml":
        flags += ["--config", str(config)]
    for name, flag in (("state_path", "--state"), ("region", "--region"),
                       ("profile", "--profile"), ("endpoint_url", "--endpoint-url")):
        if params.get(name):
            flags += [flag, str(params[name])]
    if params.get("sandbox"):
        flags.append("--sandbox")
    import shlex

    return "".join(f" {shlex.quote(f)}" for f in flags)


def next_commands(verb: str, flags: str = "") -> list[tuple[str, str]]:
    """What to run after a successful `verb`, each with what it is for."""
    if verb == "up":
        return [(f"exaprov outputs{flags}", "what the ExaDeploy deployment needs"),
                (f"exaprov kubeconfig{flags}", "kubectl access to the cluster")]
    if verb in ("peer", "unpeer"):
        return [(f"exaprov status{flags}", "the peering, its routes and rules")]
    if verb == "destroy" and "--sandbox" in flags.split():
        return [("exaprov sandbox stop", "stops the emulator when nothing else lives in it")]
    return []


def print_run_summary(result: RunResult, verb: str, *, flags: str = "",
                      seconds: float | None = None, console: Console | None = None) -> None:
    """The end of a run: what changed, how long it took, what did not finish, what to run next.
    (Each step's own line was printed as it ended.)"""
    global last_reporter
    console = console or err
    if seconds is None and last_reporter is not None and last_reporter.seconds is not None:
        seconds = last_reporter.seconds  # the run this summary ends; not again for another
    last_reporter = None
    counts = change_counts(result.changes)
    parts = [f"{n} {_DONE[a]}" for a, n in counts.items() if n]
    unfinished = [o for o in result.outcomes.values() if o.status != "done"]
    for outcome in unfinished:
        mark, colour = _MARKS.get(outcome.status, ("·", "dim"))
        console.print(Text.assemble((mark, colour), " ", (outcome.step, "bold"),
                                    f" {outcome.status}"), soft_wrap=True)
    colour = "red" if result.failed else "green"
    console.print(Text.assemble((f"{verb}:", f"bold {colour}"), " ",
                                ", ".join(parts) if parts else "nothing to change", "."),
                  soft_wrap=True)
    if seconds is not None:
        console.print(Text(f"Took {fmt_seconds(seconds)}.", style="dim"), soft_wrap=True)
    if result.failed:
        return
    hints = next_commands(verb, flags)
    if hints:  # one command a line, as it is typed: copied whole, never folded in the middle
        width = max(len(command) for command, _ in hints)
        console.print(Text("Next:", style="bold"))
        for command, why in hints:
            console.print(Text.assemble("  ", (command.ljust(width), "cyan"), ("  # " + why, "dim")),
                          soft_wrap=True)


def changes_json(changes: list[Change]) -> list[dict[str, str]]:
    return [{"action": c.action, "address": c.address, "kind": c.kind, "detail": c.detail}
            for c in changes]


def observed_json(rows: list[Observed]) -> list[dict[str, Any]]:
    return [{"address": r.address, "kind": r.kind, "id": r.live_id or r.recorded_id,
             "recorded_id": r.recorded_id, "live_id": r.live_id, "live": r.live,
             "drift": r.drift, "in_sync": not r.drift and r.live_id is not None}
            for r in sorted(rows, key=lambda r: r.address)]


def print_plan(changes: list[Change]) -> None:
    if not changes:
        out.print("No changes: the deployment matches the config.")
        return
    symbol = {"create": "+", "update": "~", "delete": "-", "replace": "-/+"}
    for c in changes:
        detail = f"  ({c.detail})" if c.detail else ""
        out.print(f"  {symbol.get(c.action, '?')} {c.action:7} {c.address}  [{c.kind}]{detail}",
                  markup=False)
    out.print(f"Plan: {summary_line(changes)}.")


def print_status(rows: list[Observed]) -> None:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("resource", "kind", "id", "live", "drift"):
        table.add_column(col, overflow="fold")
    for r in sorted(rows, key=lambda r: r.address):
        live = r.live.upper() if r.live in ("missing", "absent") else r.live
        table.add_row(r.address, r.kind, r.live_id or r.recorded_id or "-", live,
                      "; ".join(r.drift) or "-")
    out.print(table)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
