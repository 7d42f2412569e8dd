"""SIGINT, SIGTERM and SIGHUP while the engine walks its steps (real signals, this process).

The first signal only cancels: the running step stops at its next poll and records; the
run reports which signal it was. A second stops at once. A signal the shell ignores
(`nohup`) stays ignored. The end-to-end tests (tests/test_interruptions.py) send the same
signals to the installed command.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exaprov import interrupts
from exaprov.engine import StepContext, apply
from exaprov.errors import Cancelled
from tests.test_engine import make_run, on_disk, step

WAIT = 5.0


@pytest.fixture(autouse=True)
def _default_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in interrupts.SIGNALS}
    for sig in interrupts.SIGNALS:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def waiting_step(sent: list[int], signals: list[int]) -> object:
    """A step that records a create, then sends the signals (from its worker thread) and
    waits on the cancel token as every poll does."""
    def ensure(ctx: StepContext) -> dict[str, str]:
        ctx.run.writer.record(ctx.address("thing"), kind="k", id="thing-1", status="created")
        for sig in signals:
            sent.append(sig)
            os.kill(os.getpid(), sig)
            # Python runs pending handlers by signal number, not by arrival: the next
            # signal goes once the main thread has handled this one.
            with pytest.raises(Cancelled):
                ctx.cancel.sleep(WAIT)
        ctx.cancel.sleep(WAIT)
        raise AssertionError("not cancelled")
    return step("slow", ensure=ensure)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_the_first_signal_cancels_and_the_run_says_which(tmp_path: Path, sig: int) -> None:
    run = make_run(tmp_path)
    sent: list[int] = []
    result = apply([waiting_step(sent, [sig]), step("after", ("slow",))], run)  # type: ignore[list-item]

    assert sent == [sig]
    assert result.cancelled and result.signum == sig
    assert result.outcomes["slow"].status == "cancelled"
    assert isinstance(result.outcomes["slow"].error, Cancelled)
    assert result.outcomes["after"].status == "skipped"
    assert on_disk(tmp_path)["resources"]["slow.thing"]["id"] == "thing-1"  # recorded, saved
    assert interrupts.exit_code(result.signum) == 128 + sig
    # The handlers of the walk are gone with it.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    sent: list[int] = []
    with pytest.raises(interrupts.Interrupted) as caught:
        apply([waiting_step(sent, [signal.SIGTERM, signal.SIGINT])], run)  # type: ignore[list-item]
    assert caught.value.again and caught.value.signum == signal.SIGTERM  # the first one's code
    assert on_disk(tmp_path)["resources"]["slow.thing"]["status"] == "created"


def test_an_ignored_signal_stays_ignored(tmp_path: Path) -> None:
    """`nohup exaprov up`: SIGHUP is ignored before exaprov starts and must stay so."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    seen = threading.Event()

    def ensure(ctx: StepContext) -> dict[str, str]:
        os.kill(os.getpid(), signal.SIGHUP)
        seen.set()
        return {}

    result = apply([step("s", ensure=ensure)], make_run(tmp_path))
    assert seen.is_set() and not result.cancelled and result.outcomes["s"].status == "done"
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_outside_the_steps_a_signal_interrupts_the_command() -> None:
    """Before the steps run (config, lock, a question): the signal unwinds the command (and
    its lock) with Interrupted, whose code is the signal's."""
    with pytest.raises(interrupts.Interrupted) as caught, interrupts.command():
        os.kill(os.getpid(), signal.SIGHUP)
        threading.Event().wait(WAIT)
    assert caught.value.signum == signal.SIGHUP and not caught.value.again
    assert interrupts.exit_code(caught.value.signum) == 129
