"""Capture the live view of a sandbox `exaprov up`, as screen text, into docs/live-view.md.

    python docs/capture_live_view.py            # AWS's durations at 1/20: about a minute
    python docs/capture_live_view.py --scale 0.01 --out /tmp/live-view.md

It runs `exaprov init` and `exaprov up --sandbox --yes` in a fresh folder, in a terminal of
its own (a tmux session on a private socket, 140x32), against a sandbox emulator of its own
(EXAPROV_SANDBOX_HOME in that folder, so the user's emulator is left alone) that follows AWS's
durations (`--latency-model aws`) at the given time scale; exaprov's polls use the same scale.
It reads the screen until two moments have come, each bounded in time:

1. the EKS control plane and the database are being created (`↳ EKS cluster …` and
   `↳ RDS instance …` lines), and
2. node groups are being created in parallel (two or more `↳ node group …` lines),

then the screen once the command has ended (the ✓ lines and the summary). Needs tmux.
tests/test_live_view_capture.py runs `capture()` at a fast scale and checks that the frames
in docs/live-view.md still have the shape of what exaprov prints.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 140, 32  # wide enough that no line of exaprov wraps
POLL = 0.1  # seconds between two looks at the screen
DONE = "@@exaprov-up-ended@@"


@dataclass
class Capture:
    cluster: str  # the screen while the control plane is created
    node_groups: str  # ... while node groups are created in parallel
    end: str  # ... once `up` has ended
    scale: float


def cluster_moment(screen: str) -> bool:
    return "↳ EKS cluster " in screen and "↳ RDS instance " in screen


def node_groups_moment(screen: str) -> bool:
    return len(re.findall(r"^\s*↳ node group ", screen, flags=re.M)) >= 2


def capture(scale: float = 0.05, bound: float = 300.0,
            durations: dict[str, float] | None = None) -> Capture:
    """Run a sandbox `up` in a private tmux session; the screen at the two moments and at the end.

    `durations`: AWS seconds that replace the model's for some keys (`nodegroup_create`: 600),
    as EXAPROV_EMULATOR_<KEY>_SECONDS does; still multiplied by `scale`."""
    if shutil.which("tmux") is None:
        raise RuntimeError("tmux is not installed")
    work = Path(tempfile.mkdtemp(prefix="exaprov-live-view-"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_INTERACTIVE", "TTY_COMPATIBLE", "TMUX")}
    env.update({
        "EXAPROV_SANDBOX_HOME": str(work / "sandbox-home"),
        "EXAPROV_EMULATOR_LATENCY_MODEL": "aws", "EXAPROV_EMULATOR_TIME_SCALE": str(scale),
        "EXAPROV_TIME_SCALE": str(scale), "TERM": "xterm-256color",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    })
    env.update({f"EXAPROV_EMULATOR_{key.upper()}_SECONDS": str(seconds)
                for key, seconds in (durations or {}).items()})
    exaprov = [sys.executable, "-m", "exaprov"]
    subprocess.run([*exaprov, "init"], cwd=work, env=env, check=True, capture_output=True)
    socket = f"exaprov-capture-{os.getpid()}"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    command = f"{' '.join(exaprov)} up --sandbox --yes; echo {DONE}; sleep 3600"
    subprocess.run([*tmux, "new-session", "-d", "-s", "up", "-x", str(WIDTH), "-y", str(HEIGHT),
                    "-c", str(work), command], env=env, check=True)
    try:
        deadline = time.monotonic() + bound

        def screen_when(moment: Callable[[str], bool], what: str) -> str:
            while True:
                # -J: a line the terminal wrapped (the pane can come out narrower than asked
                # when the tmux server is busy) is read back as the one line exaprov printed.
                joined = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-t", "up"],
                                        env=env, capture_output=True, text=True, check=True).stdout
                screen = "\n".join(line.rstrip() for line in joined.splitlines()) + "\n"
                if moment(screen):
                    return screen
                if DONE in screen and moment is not ended:
                    raise RuntimeError(f"`up` ended before {what}:\n{screen}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no {what} within {bound:g} s:\n{screen}")
                time.sleep(POLL)

        def ended(screen: str) -> bool:
            return DONE in screen

        cluster = screen_when(cluster_moment, "EKS cluster and database being created")
        node_groups = screen_when(node_groups_moment, "node groups being created")
        end = screen_when(ended, "end of `up`")
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, capture_output=True, check=False)
        subprocess.run([*exaprov, "sandbox", "stop", "--yes"], cwd=work, env=env,
                       capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return Capture(_tidy(cluster), _tidy(node_groups), _tidy(end.split(DONE)[0]), scale)


def _tidy(screen: str) -> str:
    """The screen's text without trailing blanks, and the temporary folder's name hidden."""
    lines = [line.rstrip() for line in screen.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    text = "\n".join(lines)
    return re.sub(r"/tmp/exaprov-live-view-\w+", "/tmp/work", text)


def markdown(shot: Capture) -> str:
    fraction = f"1/{round(1 / shot.scale)}" if shot.scale < 1 else "AWS's own speed"
    return f"""# The live view of `exaprov up`

Captured by `python docs/capture_live_view.py` (a sandbox `up` whose emulator follows AWS's
typical durations, at {fraction} of AWS time — every duration and estimate on these screens
is that fraction of what AWS takes: `of ~30s` is AWS's ~10 min). The screen is a terminal of
{WIDTH}x{HEIGHT}; colour is not shown. `tests/test_live_view_capture.py` checks that these
frames still have the shape of what exaprov prints.

On a terminal, exaprov keeps a live area at the bottom: a header with the steps done of the
total and the time elapsed; one line per running step with its latest activity; under it one
`↳` line per resource it waits for, with the time waited and, for the slow kinds, AWS's typical
duration. A step that ends leaves the area as one `✓` (or `✗`) line above it. Without a
terminal (CI), each event is one line with a UTC timestamp instead, never wrapped.

## While the EKS control plane and the database are created

```text
{shot.cluster}
```

## While the node groups are created, in parallel

```text
{shot.node_groups}
```

## At the end

```text
{shot.end}
```
"""


def frames(markdown_text: str) -> list[str]:
    """The screens in a live-view.md, in order."""
    return re.findall(r"```text\n(.*?)\n```", markdown_text, flags=re.S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.05,
                        help="the time scale of AWS's durations (default 0.05: 1/20)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "live-view.md")
    args = parser.parse_args(argv)
    shot = capture(args.scale)
    args.out.write_text(markdown(shot))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
