"""A plan written to a file by `plan --out`, and the check `up --plan` makes before applying it.

A reviewer approves the changes a plan lists; `up --plan FILE` must then make exactly those
changes or none. The file records what the plan was computed from: the config (as parsed,
so comments and key order do not matter), the state's lineage and serial (every recorded
change bumps the serial), and the changes themselves. `up --plan` refuses, before any AWS
change, when any of them differs now: the config was edited, another run changed the
deployment, or AWS drifted so that a new plan lists other changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exaprov.config import Config
from exaprov.engine import Change
from exaprov.errors import InputError

FORMAT = "exaprov-plan"
VERSION = 1


class StalePlanError(InputError):
    """The saved plan no longer describes what `up` would do: nothing was changed."""


def config_digest(cfg: Config) -> str:
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def change_rows(changes: list[Change]) -> list[dict[str, str]]:
    return [{"action": c.action, "address": c.address, "kind": c.kind, "detail": c.detail}
            for c in changes]


@dataclass(frozen=True)
class SavedPlan:
    deployment: str
    region: str
    config_sha256: str
    lineage: str | None
    serial: int
    changes: list[dict[str, str]]

    def document(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "deployment": self.deployment,
                "region": self.region, "config_sha256": self.config_sha256,
                "state": {"lineage": self.lineage, "serial": self.serial},
                "changes": self.changes}

    def check(self, cfg: Config, lineage: str | None, serial: int, changes: list[Change]) -> None:
        """Raise `StalePlanError` naming the first thing that differs from when it was saved."""
        if (self.deployment, self.region) != (cfg.name, cfg.region):
            raise StalePlanError(f"the plan is for deployment {self.deployment!r} in {self.region}; "
                                 f"the config names {cfg.name!r} in {cfg.region}",
                                 hint="pass the --config (and --region) the plan was made with")
        if self.config_sha256 != config_digest(cfg):
            raise StalePlanError("the config changed since the plan was written; nothing was changed",
                                 hint="run `exaprov plan --out FILE` again and review it")
        if (self.lineage, self.serial) != (lineage, serial):
            raise StalePlanError(
                f"the deployment changed since the plan was written (state serial {self.serial}, "
                f"now {serial}); nothing was changed",
                hint="run `exaprov plan --out FILE` again and review it")
        now = change_rows(changes)
        if now != self.changes:
            added = [f"{c['action']} {c['address']}" for c in now if c not in self.changes]
            gone = [f"{c['action']} {c['address']}" for c in self.changes if c not in now]
            what = "; ".join(filter(None, [
                f"now also: {', '.join(added)}" if added else "",
                f"no longer: {', '.join(gone)}" if gone else ""])) or "the order of changes differs"
            raise StalePlanError(f"AWS changed since the plan was written ({what}); nothing was "
                                 "changed", hint="run `exaprov plan --out FILE` again and review it")


def saved(cfg: Config, lineage: str | None, serial: int, changes: list[Change]) -> SavedPlan:
    return SavedPlan(cfg.name, cfg.region, config_digest(cfg), lineage, serial, change_rows(changes))


def load(path: Path) -> SavedPlan:
    """Read a plan file; anything that is not one is bad input (exit 2)."""
    where = f"--plan {path}"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{where}: no such file",
                         hint="write one with `exaprov plan --out FILE`") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{where}: not a readable plan file ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{where}: not a plan written by `exaprov plan --out`")
    if data.get("version") != VERSION:
        raise InputError(f"{where}: plan format version {data.get('version')!r}; this exaprov "
                         f"reads version {VERSION}")
    try:
        state = data["state"]
        plan = SavedPlan(str(data["deployment"]), str(data["region"]), str(data["config_sha256"]),
                         state["lineage"], int(state["serial"]),
                         [{k: str(c[k]) for k in ("action", "address", "kind", "detail")}
                          for c in data["changes"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: the plan file is damaged ({exc!r})") from None
    return plan


def write(path: Path, plan: SavedPlan) -> None:
    from exaprov.state import write_private

    try:
        write_private(path, json.dumps(plan.document(), indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"--out {path}: could not write the plan ({exc.strerror or exc})") from None
