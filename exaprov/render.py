"""What the user sees: progress while steps run, tables and JSON afterwards.

Progress and messages go to stderr; stdout carries results only, so that
`--output json` output can be piped.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from exaprov.engine import Change, Observed, Outcome, RunResult

# Everything printed here comes from AWS, the state or the config: an ARN such as
# `arn:aws:secretsmanager:…:secret:…` would become an emoji, and `[bold]` in a tag value
# would vanish, if rich read it as markup. Both consoles print text as it is; exaprov's own
# emphasis goes through `style=` arguments, never through markup in a string.
err = Console(stderr=True, highlight=False, markup=False, emoji=False)
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
if not out.is_terminal:
    out.width = max(out.width, 160)  # piped or logged: keep IDs on one line rather than fold at 80


class ProgressReporter:
    """One line per running step with its latest activity and elapsed time.

    On a terminal the lines are live (rich); elsewhere (CI, pipes) each activity
    is printed once, so logs still show what exaprov waited for and how long.
    """

    def __init__(self, console: Console = err) -> None:
        self.console = console
        self.live = console.is_terminal
        self._mutex = threading.Lock()
        self._started: dict[str, float] = {}
        self._activity: dict[str, str] = {}
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressReporter:
        if self.live:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(),
                                      TextColumn("{task.fields[step]}", style="bold", markup=False),
                                      TextColumn("{task.description}", markup=False),
                                      TimeElapsedColumn(),
                                      console=self.console, transient=True)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def started(self, step: str) -> None:
        with self._mutex:
            self._started[step] = time.monotonic()
            if self._progress is not None:
                self._tasks[step] = self._progress.add_task("starting", step=step, total=None)

    def activity(self, step: str, text: str) -> None:
        with self._mutex:
            if self._progress is not None and step in self._tasks:
                self._progress.update(self._tasks[step], description=text)
            elif self._activity.get(step) != text:
                elapsed = time.monotonic() - self._started.get(step, time.monotonic())
                self.console.print(f"{step}: {text} [{elapsed:.0f}s]", markup=False)
            self._activity[step] = text

    def finished(self, outcome: Outcome) -> None:
        with self._mutex:
            if self._progress is not None and outcome.step in self._tasks:
                self._progress.remove_task(self._tasks.pop(outcome.step))
            mark = {"done": "✓", "failed": "✗", "cancelled": "■"}.get(outcome.status, "·")
            self.console.print(f"{mark} {outcome.step} {outcome.status} "
                               f"({outcome.seconds:.1f}s)", markup=False)


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


def print_run_summary(result: RunResult, verb: str) -> None:
    table = Table(title=None, show_edge=False, pad_edge=False)
    for col in ("step", "status", "time", "changes"):
        table.add_column(col)
    per_step: dict[str, int] = {}
    for change in result.changes:
        per_step[change.address.split(".")[0]] = per_step.get(change.address.split(".")[0], 0) + 1
    for name, outcome in result.outcomes.items():
        table.add_row(name, outcome.status, f"{outcome.seconds:.1f}s", str(per_step.get(name, 0)))
    err.print(table)
    counts = change_counts(result.changes)
    done = {"create": "created", "update": "updated", "delete": "deleted", "replace": "replaced"}
    parts = [f"{n} {done[a]}" for a, n in counts.items() if n]
    err.print(f"{verb}: " + (", ".join(parts) if parts else "nothing to change") + ".",
              markup=False)


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
