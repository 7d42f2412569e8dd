"""One command's view of a deployment: its config, state store, AWS access, and the runs.

The CLI resolves flags into a `Target`; everything here happens in a fixed
order that keeps the promise "bad input changes nothing": config first (no AWS
call at all), then the state file, then the lock, then AWS.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exaprov import engine, identity, ownership, saved_plan
from exaprov.config import Config, load_config, parse_config
from exaprov.errors import ExaprovError, InputError, StateError
from exaprov.paths import check_file
from exaprov.saved_plan import SavedPlan
from exaprov.state import (
    LocalStateStore,
    State,
    StateStore,
    StateWriter,
    command_line,
    default_state_path,
    describe_holder,
)
from exaprov.timing import CancelToken

log = logging.getLogger(__name__)


@dataclass
class Target:
    """Where the deployment is: resolved from the global flags."""

    config_path: Path = Path("exaprov.yaml")
    state_path: Path | str | None = None  # a local path or an s3:// URL
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    sandbox: bool = False
    credentials: dict[str, str] = field(default_factory=dict)
    # False for the commands that only read the state (plan, status, outputs, kubeconfig).
    writes_state: bool = True


class _LazyClient:
    """Builds a boto3 client on first use (reading the config must not start AWS access)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._build()
        return getattr(self._client, name)


class Deployment:
    def __init__(self, target: Target) -> None:
        self.target = target
        if Path(target.config_path).exists():  # a missing one: load_config says how to make it
            check_file("--config", target.config_path, write=False, what="config file")
        self.cfg: Config = load_config(target.config_path)
        if target.region and target.region != self.cfg.region:
            self.cfg = parse_config({**self.cfg.model_dump(), "region": target.region},
                                    source="--region")
        self._aws: Any = None
        location = str(target.state_path) if target.state_path else self.cfg.state
        self.store: StateStore = self._store(location)
        self.kept: list[str] = []  # what destroy left for the user to keep (final snapshots)

    def _store(self, location: str | None, flag: str | None = None,
               write: bool | None = None) -> StateStore:
        """Local file by default; `--state s3://bucket/key` (or `state:` in the config) for a
        team: the S3 client is built lazily, only when the state is first touched."""
        if location and location.startswith("s3://"):
            from exaprov.state_s3 import S3StateStore, parse_s3_url

            parse_s3_url(location)  # a malformed URL is bad input: exit 2 before any AWS call
            # Its own client: writing the state and its lock is no change to the deployment.
            return S3StateStore(location, _LazyClient(lambda: self.aws.client("s3", guarded=False)))
        path = Path(location) if location else default_state_path(self.cfg.name,
                                                                  sandbox=self.target.sandbox)
        flag = flag or ("--state" if self.target.state_path else
                        "state (the config's key)" if self.cfg.state else "the default state file")
        # Before the lock and any AWS call: a FIFO here would hang while holding the lock.
        check_file(flag, path, write=self.target.writes_state if write is None else write,
                   what="state file")
        return LocalStateStore(path)

    # -- pieces -------------------------------------------------------------------

    @property
    def aws(self) -> Any:
        if self._aws is None:
            from exaprov.aws import Aws  # boto3 loads only when a command talks to AWS

            endpoint = self.target.endpoint_url
            credentials = dict(self.target.credentials)
            if self.target.sandbox:
                from exaprov import sandbox

                endpoint = sandbox.ensure_running()
                credentials = dict(sandbox.SANDBOX_CREDENTIALS)
            self._aws = Aws(self.cfg.region, profile=self.target.profile,
                            endpoint_url=endpoint, credentials=credentials)
        return self._aws

    def read_state(self) -> State | None:
        state = self.store.read()
        if state is not None:
            self.check_identity(state)
        return state

    def check_identity(self, state: State) -> None:
        """The state belongs to this config's deployment and region."""
        where = self.store.location
        if state.data["deployment"] != self.cfg.name:
            raise StateError(f"{where} belongs to deployment {state.data['deployment']!r}, "
                             f"the config names {self.cfg.name!r}",
                             hint="pass the right --config or --state")
        if state.data["region"] != self.cfg.region:
            raise StateError(f"{where} is for region {state.data['region']}, the config "
                             f"(or --region) says {self.cfg.region}",
                             hint="a deployment cannot move region; use the right --region")

    def check_account(self, state: State, writer: StateWriter | None) -> None:
        recorded = state.data.get("account_id")
        if recorded is not None and not (isinstance(recorded, str) and recorded.isdigit()
                                         and len(recorded) == 12):
            raise StateError(f"{self.store.location}: account_id must be a 12-digit string "
                             f"(got {str(recorded)[:40]!r}, a {type(recorded).__name__})",
                             hint="quote it in the state file, or restore the backup")
        account = self.aws.account_id()
        if recorded and recorded != account:
            raise StateError(f"{self.store.location} is for AWS account {recorded}, but the "
                             f"credentials are for {account}",
                             hint="use the profile of the account this deployment lives in")
        if writer is not None and not recorded:
            writer.set_field("account_id", account)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self.store.lock(command_line()) as stale:
            if stale:
                log.warning("the previous holder of the lock, %s, ended without releasing it "
                            "(killed or crashed); the kernel freed the lock, so this run continues "
                            "from the state it saved. `exaprov state unlock` clears such a "
                            "record without running anything.", describe_holder(stale))
            yield

    # -- commands ------------------------------------------------------------------

    def up(self, reporter: engine.Reporter | None = None, cancel: CancelToken | None = None,
           confirm: Callable[[str], bool] | None = None,
           expected: SavedPlan | None = None, ask_first: bool = False) -> engine.RunResult:
        """Converge. With `expected` (a plan saved by `plan --out`), first plan again under the
        lock and refuse, before any change, unless that plan is still exactly what `up` does.
        `ask_first`: every question `confirm` will be asked comes before the first change
        (the steps that may ask are planned first, read-only)."""
        from exaprov.steps import STEPS

        with self.locked():
            state = self.read_state() or State.new(self.cfg.name, self.cfg.region)
            identity.refuse_renames(self.cfg, state)
            self.check_account(state, None)
            ownership.preflight(self.cfg, state, self.aws)  # name clashes: before any change
            if expected is not None:
                result = self._plan_run(state, reporter)
                if result.failed:
                    return result
                expected.check(self.cfg, self._lineage(state), state.serial, result.changes)
            writer = StateWriter(self.store, state)
            self.check_account(state, writer)
            if ask_first and confirm is not None:
                confirm = self._ask_first(state, confirm)
            from exaprov import upgrade

            # A Kubernetes upgrade with EKS insights in ERROR needs the user's go-ahead, asked
            # before the first change of the run.
            upgrade.preflight(self.cfg, state, self.aws, confirm or (lambda question: False),
                              log.warning)
            run = engine.Run(self.cfg, self.aws, writer, engine.Mode.APPLY, reporter, cancel,
                             confirm)
            return engine.apply(STEPS, run)

    def _ask_first(self, state: State, confirm: Callable[[str], bool]) -> Callable[[str], bool]:
        """Plan the steps that may ask, ask what they would, refuse before any change if the
        answer is no (or there is no terminal to ask on). Returns the run's `confirm`: yes to
        what was agreed, and asks anything new (found only while running) as before."""
        from exaprov.steps import STEPS

        plan = engine.Run(self.cfg, self.aws, StateWriter(self.store, state.copy(), dry_run=True),
                          engine.Mode.PLAN)
        engine.apply([s for s in STEPS if s.asks], plan)  # a failure here: the run reports it
        for question in plan.questions:
            try:
                yes = confirm(question)
            except InputError as exc:  # no terminal to ask on
                exc.message += "; nothing was changed"
                exc.args = (exc.message,)
                exc.hint = "pass --yes to confirm: `exaprov up --yes` (`exaprov plan` lists it all)"
                raise
            if not yes:
                raise InputError(f"not confirmed: {question} Nothing was changed",
                                 hint="run `exaprov plan` to see every change, then `exaprov up "
                                      "--yes` to make them, or put the config back")
        agreed = set(plan.questions)
        return lambda question: question in agreed or confirm(question)

    def require_state(self, command: str) -> State:
        """The state, for a command that only reads it: none is bad input, not an empty answer.

        Without the state, `outputs` printed every value empty and exited 0. The usual cause
        is a missing `--sandbox` (or one too many): sandbox deployments keep their state apart.
        """
        state = self.read_state()
        if state is not None:
            return state
        hint = f"build it with `exaprov up{' --sandbox' if self.target.sandbox else ''}`"
        if self.target.state_path is None and self.cfg.state is None:
            elsewhere = default_state_path(self.cfg.name, sandbox=not self.target.sandbox)
            if elsewhere.exists() and not self.target.sandbox:
                hint = (f"a sandbox deployment of that name has its state in {elsewhere}: "
                        f"add --sandbox (`exaprov {command} --sandbox`)")
            elif elsewhere.exists():
                hint = (f"{elsewhere} holds the state of a deployment of that name outside the "
                        f"sandbox: run `exaprov {command}` without --sandbox")
        raise InputError(f"{command}: no state for deployment {self.cfg.name!r} at "
                         f"{self.store.location}", hint=hint)

    def status(self, reporter: engine.Reporter | None = None) -> engine.RunResult:
        """`status`: the plan of a deployment that has a state (without one there is nothing
        to show the status of)."""
        self.require_state("status")
        return self.plan(reporter)

    def plan(self, reporter: engine.Reporter | None = None) -> engine.RunResult:
        """What `up` would do (and, row by row, what `status` shows); read-only calls only."""
        return self.plan_to_save(reporter)[0]

    def plan_to_save(self, reporter: engine.Reporter | None = None
                     ) -> tuple[engine.RunResult, SavedPlan]:
        """The plan, and what `plan --out` writes of it for `up --plan` to check."""
        state = self.read_state() or State.new(self.cfg.name, self.cfg.region)
        identity.refuse_renames(self.cfg, state)
        result = self._plan_run(state, reporter)
        return result, saved_plan.saved(self.cfg, self._lineage(state), state.serial, result.changes)

    @staticmethod
    def _lineage(state: State) -> str | None:
        # A deployment with no state yet gets a new random lineage on every read: it has none.
        return state.lineage if state.serial > 0 else None

    def _plan_run(self, state: State, reporter: engine.Reporter | None) -> engine.RunResult:
        from exaprov.steps import STEPS

        self.check_account(state, None)
        ownership.preflight(self.cfg, state, self.aws)
        # A dry-run writer over a copy: planning records nothing, and the state `up` goes on
        # to use after a `--plan` check is the one it read, untouched.
        run = engine.Run(self.cfg, self.aws, StateWriter(self.store, state.copy(), dry_run=True),
                         engine.Mode.PLAN, reporter)
        return engine.apply(STEPS, run)

    def destroy(self, reporter: engine.Reporter | None = None,
                cancel: CancelToken | None = None,
                disable_deletion_protection: bool = False,
                skip_final_snapshot: bool = False) -> engine.RunResult:
        from exaprov.steps import STEPS

        with self.locked():
            state = self.read_state() or State.new(self.cfg.name, self.cfg.region)
            writer = StateWriter(self.store, state, dry_run=not self._state_exists(state))
            self.cfg = identity.as_built(self.cfg, state)
            self.check_account(state, None)
            self._check_deletion_protection(state, disable_deletion_protection)
            run = engine.Run(self.cfg, self.aws, writer, engine.Mode.APPLY, reporter, cancel)
            run.final_snapshot = not skip_final_snapshot
            result = engine.destroy(STEPS, run)
            self.kept = run.kept
            if not result.failed:
                writer.set_field("peers", {})  # unpeered with the rest; a new `up` starts without them
            return result

    def data_at_stake(self, skip_final_snapshot: bool) -> list[str]:
        """For `destroy`'s question: what holds data, read from the resources the state
        records (read-only calls), and what AWS keeps waiting. Empty without a state."""
        from exaprov.errors import is_not_found
        from exaprov.steps.database import final_snapshot_name

        state = self.read_state()
        if state is None:
            return []
        lines: list[str] = []
        records = state.resources
        database = (records.get("database.instance") or {}).get("id")
        if database:
            try:
                db = self.aws.rds.describe_db_instances(DBInstanceIdentifier=database)[
                    "DBInstances"][0]
                size = f"{db['AllocatedStorage']} GiB"
            except Exception as exc:  # a preview: a database already gone is said so
                if not is_not_found(exc):
                    raise
                size = "already gone"
            then = ("its data is lost (--skip-final-snapshot)" if skip_final_snapshot else
                    f"a final snapshot {final_snapshot_name(database)} is taken first and kept")
            lines.append(f"RDS database {database} ({size}): {then}")
        bucket = (records.get("bucket.bucket") or {}).get("id")
        if bucket:
            count, more = self._objects_in(bucket)
            lines.append(f"S3 bucket {bucket}: {count}{'+' if more else ''} object(s), deleted "
                         "with it")
        if records.get("kms.key"):
            lines.append("the KMS key of the cluster's secrets: scheduled for deletion in 7 days "
                         "(AWS's minimum), cancellable until then")
        return lines

    def _objects_in(self, bucket: str, limit: int = 10_000) -> tuple[int, bool]:
        """How many objects (and versions) the bucket holds, counted up to `limit`."""
        from exaprov.errors import is_not_found

        count = 0
        try:
            pages = self.aws.client("s3").get_paginator("list_object_versions").paginate(
                Bucket=bucket)
            for page in pages:
                count += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
                if count >= limit:
                    return count, True
        except Exception as exc:  # a bucket already gone holds nothing
            if not is_not_found(exc):
                raise
        return count, False

    def _check_deletion_protection(self, state: State, disable: bool) -> None:
        """Before any delete: a protected EKS cluster or RDS instance stops the whole destroy
        (nothing deleted, exit 2), or, with the user's explicit --disable-deletion-protection,
        loses its protection first."""
        from exaprov.steps.database import disable_deletion_protection, protected_databases

        protected = protected_databases(self.cfg, state, self.aws)
        cluster = self._protected_cluster(state)
        if (protected or cluster) and not disable:
            what = ([f"the EKS cluster {cluster} has deletion protection on"] if cluster else []) + \
                [f"the RDS instance {ident} has DeletionProtection on" for ident in protected]
            fixes = ([f"aws eks update-cluster-config --name {cluster} --no-deletion-protection"]
                     if cluster else []) + \
                [f"aws rds modify-db-instance --db-instance-identifier {ident} "
                 "--no-deletion-protection --apply-immediately" for ident in protected]
            raise InputError(
                f"destroy: {'; '.join(what)}; nothing was deleted",
                hint="if it may all go (the database's data too), run `exaprov destroy "
                     "--disable-deletion-protection`, or turn the protection off yourself ("
                     + "; ".join(fixes) + ") and run `exaprov destroy` again")
        if cluster:
            log.warning("turning off deletion protection of EKS cluster %s "
                        "(--disable-deletion-protection)", cluster)
            self._unprotect_cluster(cluster)
        for ident in protected:
            log.warning("turning off DeletionProtection of RDS instance %s (--disable-deletion-"
                        "protection)", ident)
            disable_deletion_protection(self.aws, ident)

    def _protected_cluster(self, state: State) -> str | None:
        """The deployment's EKS cluster, if deletion protection keeps EKS from deleting it (a
        CREATING, FAILED or DELETING cluster can be deleted anyway)."""
        from botocore.exceptions import ClientError

        from exaprov.engine import TAG_DEPLOYMENT
        from exaprov.errors import is_not_found

        name = self.cfg.cluster.cluster_name
        try:
            cluster = self.aws.client("eks").describe_cluster(name=name)["cluster"]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        ours = cluster.get("tags", {}).get(TAG_DEPLOYMENT) == self.cfg.name
        protected = cluster.get("deletionProtection") and cluster["status"] in ("ACTIVE", "UPDATING")
        return name if ours and protected else None

    def _unprotect_cluster(self, name: str) -> None:
        import time

        from exaprov.timing import scaled

        eks = self.aws.client("eks")
        while eks.describe_cluster(name=name)["cluster"]["status"] == "UPDATING":
            time.sleep(scaled(10))  # EKS takes one update at a time
        update = eks.update_cluster_config(name=name, deletionProtection=False)["update"]
        while update["status"] == "InProgress":
            time.sleep(scaled(5))
            update = eks.describe_update(name=name, updateId=update["id"])["update"]
        if update["status"] != "Successful":
            raise ExaprovError(f"destroy: turning off deletion protection of cluster {name} "
                               f"{update['status']}: {update.get('errors')}")
    def rotate_db_password(self, cancel: CancelToken | None = None) -> dict[str, str]:
        """`rotate-db-password`: RDS sets a new master password now (ModifyDBInstance
        RotateMasterUserPassword, applied immediately; AWS requires that), whatever the
        secret's schedule; returns once the secret's AWSCURRENT version is the new one."""
        from exaprov.waiting import wait_until

        with self.locked():
            state = self.read_state()
            database = (state.outputs.get("database") if state else None) or {}
            ident, arn = database.get("rds_identifier"), database.get("rds_password_secret_arn")
            if state is None or not ident or not arn or "(" in str(arn):
                raise InputError(f"rotate-db-password: the deployment {self.cfg.name!r} has no "
                                 "database with an RDS-managed password in its state",
                                 hint="run `exaprov up` first (with a module_repo_backend)")
            self.check_account(state, None)
            secrets = self.aws.client("secretsmanager")

            def current() -> str:
                stages = secrets.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
                return next((v for v, labels in stages.items() if "AWSCURRENT" in labels), "")

            before = current()
            self.aws.rds.modify_db_instance(DBInstanceIdentifier=ident, RotateMasterUserPassword=True,
                                            ApplyImmediately=True)
            # Managed rotation "typically completes within one minute" (Secrets Manager guide).
            after = wait_until(f"the new password of {ident}", current, lambda v: v != before,
                               timeout=15 * 60, interval=5, cancel=cancel or CancelToken(),
                               report=lambda text: log.info("%s", text))
            return {"identifier": ident, "secret_arn": arn, "version": after}

    def peer(self, vpc_id: str, route_table_ids: list[str] | None = None,
             region: str | None = None, profile: str | None = None,
             reporter: engine.Reporter | None = None) -> engine.RunResult:
        """Add a client VPC to the deployment's peers (checked before any change), then
        converge the peering step alone."""
        from exaprov.steps.peering import PEERING, check_peer

        with self.locked():
            state, writer = self._existing_state("peer")
            network = state.outputs["network"]
            peers = dict(state.data.get("peers", {}))
            others = {v: p.get("cidrs", []) for v, p in peers.items() if v != vpc_id}
            cidrs = check_peer(self.aws, network["vpc_cidr_block"], others, vpc_id,
                               region=region, profile=profile,
                               deployment_vpc_id=network["vpc_id"],
                               route_table_ids=route_table_ids)
            peers[vpc_id] = {"route_table_ids": route_table_ids or None, "region": region,
                             "profile": profile, "cidrs": cidrs}
            writer.set_field("peers", peers)
            run = engine.Run(self.cfg, self.aws, writer, engine.Mode.APPLY, reporter)
            return engine.apply([PEERING], run)

    def unpeer(self, vpc_id: str, reporter: engine.Reporter | None = None) -> engine.RunResult:
        """Remove one peer: exactly what `peer` added, nothing else."""
        from exaprov.steps.peering import PEERING

        with self.locked():
            state, writer = self._existing_state("unpeer")
            peers = dict(state.data.get("peers", {}))
            if vpc_id not in peers:
                known = ", ".join(sorted(peers)) or "none"
                raise InputError(f"--vpc-id: {vpc_id} is not peered with this deployment "
                                 f"(peered: {known})")
            del peers[vpc_id]
            writer.set_field("peers", peers)
            run = engine.Run(self.cfg, self.aws, writer, engine.Mode.APPLY, reporter)
            return engine.apply([PEERING], run)

    def _existing_state(self, command: str) -> tuple[State, StateWriter]:
        state = self.read_state()
        if state is None or "network" not in state.outputs:
            raise InputError(f"{command}: the deployment {self.cfg.name!r} has no network yet",
                             hint="run `exaprov up` first")
        writer = StateWriter(self.store, state)
        self.check_account(state, writer)
        return state, writer

    def copy_state(self, to: str | None = None, source: str | None = None) -> None:
        """`state push` (this store → `to`) or `state pull` (`source` → this store), under both
        locks; refuses to overwrite a state of another lineage."""
        origin = self._store(source, "SOURCE", write=False) if source else self.store
        target = self._store(to, "DESTINATION", write=True) if to else self.store
        with origin.lock(command_line()), target.lock(command_line()):
            state = origin.read()
            if state is None:
                raise InputError(f"{origin.location} holds no state to copy")
            existing = target.read()
            if existing is not None and existing.lineage != state.lineage:
                raise StateError(f"{target.location} already holds another deployment's state "
                                 f"(lineage {existing.lineage}); nothing copied")
            copy = state.copy()
            if existing is not None:
                copy.data["serial"] = max(copy.serial, existing.serial)
            target.write(copy)

    def recover(self, write: bool, force: bool = False, peer_profiles: dict[str, str] | None = None,
                reporter: engine.Reporter | None = None) -> Any:
        """`state recover`: rebuild the state from what the tags find (written only if `write`)."""
        from exaprov import recover

        with self.locked() if write else contextlib.nullcontext():
            return recover.recover(self, write=write, force=force, peer_profiles=peer_profiles,
                                   reporter=reporter)

    def lock_holder(self) -> dict[str, Any] | None:
        return self.store.lock_holder()

    def force_unlock(self) -> None:
        self.store.force_unlock()

    def _state_exists(self, state: State) -> bool:
        # Destroy without a state file finds everything by tag and writes no new file.
        return state.serial > 0

    def outputs(self, reveal: bool = False, command: str = "outputs"
                ) -> tuple[dict[str, dict[str, Any]], State]:
        """The output groups the ExaDeploy Kubernetes deployment reads; secret values are read
        from Secrets Manager only if `reveal`."""
        from exaprov import outputs

        state = self.require_state(command)
        groups = outputs.collect(state.outputs, account_id=state.data.get("account_id"),
                                 region=self.cfg.region, vpc_name=self.cfg.network.vpc_name)
        if reveal:
            secrets = self.aws.client("secretsmanager")
            outputs.reveal(groups, lambda arn: secrets.get_secret_value(SecretId=arn)["SecretString"])
        return groups, state
