"""Run a chosen list of steps against moto without the CLI (for step tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exaprov import engine
from exaprov.aws import Aws
from exaprov.config import Config, parse_config
from exaprov.state import LocalStateStore, State, StateWriter
from tests.conftest import REGION


class Stack:
    """A deployment's config, state file and AWS clients; `up`/`plan`/`destroy` a step list."""

    def __init__(self, tmp_path: Path, steps: Sequence[engine.Step],
                 config: dict[str, Any] | None = None) -> None:
        self.steps = list(steps)
        self.cfg: Config = parse_config(config or {"name": "example"})
        self.store = LocalStateStore(tmp_path / "state" / f"{self.cfg.name}.json")
        self.aws = Aws(self.cfg.region or REGION)

    def state(self) -> State:
        return self.store.read() or State.new(self.cfg.name, self.cfg.region)

    def _run(self, mode: engine.Mode, confirm: bool = True) -> engine.Run:
        writer = StateWriter(self.store, self.state(), dry_run=mode is engine.Mode.PLAN)
        return engine.Run(self.cfg, self.aws, writer, mode, confirm=lambda q: confirm)

    def up(self, confirm: bool = True) -> engine.RunResult:
        result = engine.apply(self.steps, self._run(engine.Mode.APPLY, confirm))
        _raise_failures(result)
        return result

    def plan(self) -> engine.RunResult:
        result = engine.apply(self.steps, self._run(engine.Mode.PLAN))
        _raise_failures(result)
        return result

    def destroy(self, disable_deletion_protection: bool = False,
                final_snapshot: bool = True) -> engine.RunResult:
        """`engine.destroy`; with `disable_deletion_protection`, first what `exaprov destroy
        --disable-deletion-protection` does to a protected database."""
        if any(step.name == "cluster" for step in self.steps):
            # Tests destroy what they built: the cluster's protection (on by default) goes first.
            eks, name = self.aws.client("eks"), self.cfg.cluster.cluster_name
            if name in eks.list_clusters()["clusters"] and \
                    eks.describe_cluster(name=name)["cluster"].get("deletionProtection"):
                eks.update_cluster_config(name=name, deletionProtection=False)
        if disable_deletion_protection:
            from exaprov.steps.database import disable_deletion_protection as disable
            from exaprov.steps.database import protected_databases

            for ident in protected_databases(self.cfg, self.state(), self.aws):
                disable(self.aws, ident)
        run = self._run(engine.Mode.APPLY)
        run.final_snapshot = final_snapshot
        result = engine.destroy(self.steps, run)
        self.kept = run.kept
        _raise_failures(result)
        return result

    def outputs(self, step: str) -> dict[str, Any]:
        return self.state().outputs.get(step, {})


def _raise_failures(result: engine.RunResult) -> None:
    for outcome in result.failed:
        assert outcome.error is not None
        raise outcome.error
