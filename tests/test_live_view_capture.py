"""docs/live-view.md shows the live view as exaprov prints it today: the screens are captured
again here (a sandbox `up` in a tmux terminal, at 1/100 of AWS's durations) and both sets
must parse line by line into the same kinds of lines, with the same moments in them.
Nothing here waits on the clock: the capture polls the screen, each moment bounded."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]

LINES = [
    ("started", r"started the sandbox emulator at http://127\.0\.0\.1:\d+ \(pid \d+\); "
                r"`exaprov sandbox stop` stops it"),
    ("done", r"✓ [a-z-]+ done \(\d+\.\ds\)"),
    ("header", r"exaprov up · \d+ of \d+ steps done · \w+ elapsed"),
    ("step", r"\S [a-z-]+ +\S.*\S +\d+(?:m\d\d)?s"),
    ("wait", r"  ↳ (EKS cluster|node group|RDS instance|NAT gateway) [\w.-]+: [\w-]+, \w+ "
             r"(?:of ~\w+|\(usually ~\w+\))"),
    ("summary", r"up: \d+ created\."),
    ("took", r"Took \w+\."),
    ("next", r"Next:"),
    ("hint", r"  exaprov (outputs|kubeconfig) --sandbox +# [a-z A-Z]+"),
]


def kinds(screen: str) -> list[str]:
    """Each line of a screen as its kind (`wait node group`, `done`, ...); `?` if none fits."""
    found = []
    lines = screen.splitlines()
    # The sandbox's start line is printed before the live view knows the terminal's width and
    # comes out folded at 80 columns in some environments (seen with CI=true): one line.
    for i, line in enumerate(lines[:-1]):
        if line.startswith("started the sandbox emulator") and not line.endswith("stops it"):
            lines[i:i + 2] = [f"{line} {lines[i + 1]}"]
            break
    for line in lines:
        for kind, pattern in LINES:
            match = re.fullmatch(pattern, line)
            if match:
                found.append(f"wait {match.group(1)}" if kind == "wait" else kind)
                break
        else:
            found.append(f"? {line}")
    return found


def load_capture() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capture_live_view",
                                                  ROOT / "docs" / "capture_live_view.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def check_shape(cluster: list[str], node_groups: list[str], end: list[str]) -> None:
    for screen in (cluster, node_groups, end):
        assert not [k for k in screen if k.startswith("?")], screen
        assert screen[0] == "started"
    for screen in (cluster, node_groups):
        live = screen[screen.index("header"):]  # the live area: header first, at the bottom
        assert live.count("header") == 1 and "done" not in live and live[1] == "step"
    assert {"wait EKS cluster", "wait RDS instance"} <= set(cluster)
    assert node_groups.count("wait node group") >= 2
    steps = end.count("done")  # one line per step, each once
    assert steps > 10 and end == ["started", *["done"] * steps, "summary", "took", "next", "hint",
                                  "hint"]


def test_the_documented_screens_have_the_shape_of_todays(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the screens cannot be captured")
    capture = load_capture()
    documented = capture.frames((ROOT / "docs" / "live-view.md").read_text())
    assert len(documented) == 3
    check_shape(*(kinds(screen) for screen in documented))
    # At 1/100 a node group is CREATING for 1.2 s, less than it takes moto to create the six
    # one after the other: here they take 5 s, so that several wait at once, as on AWS; the
    # control plane 3 s (it and the database still overlap: they start together).
    shot = capture.capture(scale=0.01, bound=120.0,
                           durations={"nodegroup_create": 500.0, "cluster_create": 300.0})
    check_shape(kinds(shot.cluster), kinds(shot.node_groups), kinds(shot.end))
    # Written as the script writes it, the fresh capture gives the same document shape.
    assert [kinds(s) for s in capture.frames(capture.markdown(shot))] == \
        [kinds(s) for s in (shot.cluster, shot.node_groups, shot.end)]
