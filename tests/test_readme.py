"""README's quick start, run as written in a fresh virtual environment against the sandbox."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


def readme_command(marker: str) -> str:
    """The first line of the fenced block after `<!-- marker -->` (what .ci/run reads too)."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```\w*\n(.+?)\n", text)
    assert match, f"README.md has no {marker}"
    return match.group(1)


def test_the_quick_start_works_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    checkout = tmp_path / "exaprov"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:  # a clean copy: what a newcomer clones, nothing installed by hand
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    env["EXAPROV_TIME_SCALE"] = "0.01"
    command = readme_command("quickstart-command")
    try:
        done = subprocess.run(["bash", "-ec", command], cwd=checkout, env=env, capture_output=True,
                              text=True, timeout=900, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "In sync." in done.stderr
        assert (checkout / "exaprov.yaml").exists()
    finally:
        subprocess.run([str(env_dir / "bin" / "exaprov"), "sandbox", "stop", "--yes"], cwd=checkout,
                       env=env, capture_output=True, timeout=60, check=False)
