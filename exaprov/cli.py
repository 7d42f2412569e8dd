"""The `exaprov` command: parse flags, call one Deployment method, render the result.

Kept thin and light: boto3, pydantic and the steps are imported inside the
commands that need them, so `exaprov --help` starts at once.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from exaprov import __version__
from exaprov.errors import CHANGES_SENT, ExaprovError

EXIT_OK, EXIT_AWS, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# `plan` / `status --detailed-exitcode`: Terraform's meaning, 2 = there are changes (and then
# every error, bad input included, is 1).
EXIT_CHANGES = 2


def _not_empty(ctx: Any, param: Any, value: Path | None) -> Path | None:
    # Path("") is ".": the error would name the current folder, not the flag.
    if value is not None and str(value) in ("", "."):
        raise click.BadParameter("an empty path; name the config file, e.g. exaprov.yaml")
    return value


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _state_location(ctx: Any, param: Any, value: str | None) -> str | None:
    """A state location is a local path or an s3:// URL, kept as the user wrote it: a Path
    would collapse `s3://bucket/key` into the local path `s3:/bucket/key`."""
    if value is None:
        return None
    # "" would silently mean the default state file (and "." the current folder).
    if value.strip() in ("", "."):
        raise click.BadParameter("an empty path; name the state file (or s3://bucket/key), or "
                                 "leave the flag out for state/<name>.json")
    if _URL.match(value) and not value.startswith("s3://"):
        raise click.BadParameter(f"{value!r}: the only URLs exaprov keeps a state at are "
                                 "s3://bucket/key; anything else is a local file path")
    if value.startswith("s3://"):
        from exaprov.errors import InputError
        from exaprov.state_s3 import parse_s3_url

        try:
            parse_s3_url(value)
        except InputError as exc:
            raise click.BadParameter(exc.message) from None
    return value


def _endpoint_url(ctx: Any, param: Any, value: str | None) -> str | None:
    """An http(s) URL with a host (and a valid port): botocore would raise on anything else
    deep inside the first call, or send requests somewhere unintended."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    source = ctx.get_parameter_source(param.name)
    where = " (from AWS_ENDPOINT_URL)" if source is click.core.ParameterSource.ENVIRONMENT else ""
    shown = repr(value[:80])
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise click.BadParameter(f"{shown}{where} is not an http(s) URL with a host; write one "
                                 "like http://127.0.0.1:5000 or https://ec2.us-west-1.amazonaws.com")
    return value


def _region_flag(ctx: Any, param: Any, value: str | None) -> str | None:
    if value is None:
        return None
    from exaprov.config import region_problem

    if problem := region_problem(value):
        raise click.BadParameter(f"{value[:40]!r} {problem[0]}; {problem[1]}")
    return value


def target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The flags every deployment command takes, after its name."""
    options = [
        click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
                     default=Path("exaprov.yaml"), show_default=True, callback=_not_empty,
                     help="The deployment's config file."),
        click.option("--state", "state_path", default=None, callback=_state_location,
                     metavar="PATH|s3://BUCKET/KEY",
                     help="State file or S3 object (s3://bucket/key) [default: state/<name>.json, "
                          "state/sandbox/deployments/<name>.json with --sandbox]."),
        click.option("--region", default=None, callback=_region_flag,
                     help="AWS region (overrides the config)."),
        click.option("--profile", default=None, help="AWS profile from ~/.aws."),
        click.option("--endpoint-url", default=None, envvar="AWS_ENDPOINT_URL",
                     callback=_endpoint_url,
                     help="An AWS-compatible endpoint (e.g. a local emulator)."),
        click.option("--sandbox", is_flag=True,
                     help="Use exaprov's local AWS emulator on 127.0.0.1 (started if needed)."),
        click.option("-v", "--verbose", is_flag=True, help="Log retries and waits."),
        click.option("--debug", is_flag=True,
                     help="Log one line per AWS call (operation, parameter names, status, time) "
                          "and tracebacks on errors; EXAPROV_DEBUG_BOTOCORE=1 adds botocore's own "
                          "log."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def output_option(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--output", "-o", type=click.Choice(list(choices)), default=choices[0],
                        show_default=True, help="How to print the result.")


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn exaprov's errors into one message and an exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        sent = CHANGES_SENT.count
        try:
            return run(*args, **kwargs)
        except SystemExit as exc:
            # Exit 2 promises that nothing in AWS changed; an error of bad input found after
            # a change (a refusal, a clash found mid-run) is a failure like any other.
            if exc.code == EXIT_INPUT and CHANGES_SENT.count > sent \
                    and not kwargs.get("detailed_exitcode"):
                click.echo("Exit 1, not 2: changes had already been made in AWS when this was "
                           "found (`exaprov plan` shows where things stand).", err=True)
                sys.exit(EXIT_AWS)
            raise

    def run(*args: Any, **kwargs: Any) -> Any:
        from exaprov import interrupts

        _sandbox_run.set(bool(kwargs.get("sandbox")))
        debug = kwargs.get("debug", False)
        _setup_logging(kwargs.get("verbose", False), debug)
        try:
            with interrupts.command():
                return func(*args, **kwargs)
        except ExaprovError as exc:
            if debug:
                logging.getLogger("exaprov").exception("error")
            _print_error(exc)
            sys.exit(_exit_code(exc.exit_code, kwargs))
        except KeyboardInterrupt as exc:
            import signal

            signum = getattr(exc, "signum", signal.SIGINT)
            code, name = interrupts.exit_code(signum), interrupts.describe(signum)
            if getattr(exc, "again", False):
                click.echo(f"\nInterrupted again ({name}): stopped at once. The state file is "
                           "valid; run the command again to continue.", err=True)
            else:
                click.echo(f"\nInterrupted ({name}): stopped before the steps ran or after they "
                           "ended; the state file is valid and the lock released. Run the command "
                           "again to continue.", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # worker threads may sit in an AWS call: do not join
        except Exception as exc:
            if not type(exc).__module__.startswith("botocore"):
                raise
            # Credentials, profile, endpoint or an AWS refusal outside any step.
            if debug:
                logging.getLogger("exaprov").exception("error")
            code = EXIT_INPUT if type(exc).__name__ in _SETUP_ERRORS else EXIT_AWS
            from exaprov.errors import from_botocore, not_implemented_call

            if not_implemented_call(exc):  # not AWS: naming the call is the whole story
                _print_error(from_botocore("exaprov", exc))
                sys.exit(_exit_code(code, kwargs))
            hint = ("check --profile, --region, --endpoint-url and your credentials" +
                    ("" if kwargs.get("sandbox") else "; to try exaprov without an AWS account, "
                     "add --sandbox (a local emulator)"))
            _print_error(ExaprovError(f"AWS: {exc}", hint=hint))
            sys.exit(_exit_code(code, kwargs))

    return wrapper


def _exit_code(code: int, kwargs: dict[str, Any]) -> int:
    """Under --detailed-exitcode, 2 means "changes": an error of any kind is 1."""
    return EXIT_AWS if kwargs.get("detailed_exitcode") and code == EXIT_INPUT else code


def _sandbox_flag(kw: dict[str, Any]) -> str:
    """What to append to a suggested command so that it reaches the same deployment."""
    return " --sandbox" if kw.get("sandbox") else ""


# botocore errors that mean the user's AWS setup is wrong, found before any change.
_SETUP_ERRORS = {"ProfileNotFound", "NoCredentialsError", "PartialCredentialsError",
                 "NoRegionError", "InvalidEndpointURL", "InvalidRegionError"}


# Whether this command runs against the sandbox: every command exaprov suggests must then
# carry --sandbox too, or the user's next command reaches real AWS (or finds no state).
_sandbox_run: contextvars.ContextVar[bool] = contextvars.ContextVar("sandbox_run", default=False)
_SUGGESTED = re.compile(r"`exaprov ((?:up|plan|status|destroy|peer|unpeer|outputs|kubeconfig|"
                        r"state)\b[^`]*)`")


def suggest(text: str) -> str:
    """`text` with --sandbox added to each exaprov command it suggests, in a sandbox run."""
    if not _sandbox_run.get():
        return text
    return _SUGGESTED.sub(lambda m: m.group(0) if "--sandbox" in m.group(1)
                          else f"`exaprov {m.group(1)} --sandbox`", text)


def _echo(text: str) -> None:
    click.echo(suggest(text), err=True)


def _print_error(exc: ExaprovError) -> None:
    click.secho("error: ", fg="red", bold=True, err=True, nl=False)
    _echo(exc.message)
    if exc.hint:
        _echo(f"hint: {exc.hint}")
    state_json = getattr(exc, "state_json", None)  # a state no file could hold
    if state_json:
        click.echo(state_json, err=True, nl=False)


_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.auth", "botocore.awsrequest",
                 "urllib3")


def _setup_logging(verbose: bool, debug: bool) -> None:
    """exaprov's own lines only: -v its retries and waits, --debug also one line per AWS call.

    botocore's internals (about a thousand lines for one plan) are shown only when asked for
    separately, with EXAPROV_DEBUG_BOTOCORE=1 beside --debug.
    """
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    logging.getLogger("exaprov").setLevel(level)
    botocore_too = debug and os.environ.get("EXAPROV_DEBUG_BOTOCORE") == "1"
    logging.getLogger("botocore").setLevel(logging.DEBUG if botocore_too else logging.WARNING)
    # These print request parameters, signed requests and response bodies: a PutSecretValue's
    # SecretString, a CreateAccessKey's secret key. Never, whatever is asked for.
    for name in _BODY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if botocore_too else logging.WARNING)
    # Each retry botocore makes (throttling, 5xx) is one INFO line of exaprov.aws (-v).


def _deployment(kw: dict[str, Any], writes_state: bool = True) -> Any:
    from exaprov.deployment import Deployment, Target
    from exaprov.errors import InputError

    endpoint = kw["endpoint_url"]
    if kw["sandbox"] and endpoint:
        source = click.get_current_context().get_parameter_source("endpoint_url")
        if source is not click.core.ParameterSource.ENVIRONMENT:
            raise InputError("--sandbox and --endpoint-url both name where AWS is: --sandbox "
                             "uses exaprov's own emulator", hint="pass one of them")
        logging.getLogger("exaprov").warning(
            "--sandbox: ignoring AWS_ENDPOINT_URL=%s (the sandbox is its own endpoint)",
            endpoint[:80])
        endpoint = None
    return Deployment(Target(config_path=kw["config_path"], state_path=kw["state_path"],
                             region=kw["region"], profile=kw["profile"],
                             endpoint_url=endpoint, sandbox=kw["sandbox"],
                             writes_state=writes_state))


def _finish(result: Any, verb: str) -> None:
    from exaprov import render

    render.print_run_summary(result, verb,
                             flags=render.target_flags(click.get_current_context().params))
    if result.cancelled:
        from exaprov import interrupts

        _echo(f"Interrupted by {interrupts.describe(result.signum)}: running steps stopped at "
              "their next poll and recorded what they did; the state is saved and the lock "
              f"released. Run `exaprov {verb}` again to continue.")
        sys.exit(interrupts.exit_code(result.signum))
    if result.failed:
        from exaprov.state import StateSaveError

        skipped = [n for n, o in result.outcomes.items() if o.status == "skipped"]
        not_started = f"not started: {', '.join(skipped)}\n" if skipped else ""
        if any(isinstance(o.error, StateSaveError) for o in result.failed):
            # Its message says where the state is (the state file is not it). The steps it
            # stopped, and the same error met again by other steps, add nothing to it.
            from exaprov.aws import Halted

            shown: list[Any] = []
            for o in result.failed:
                if not isinstance(o.error, Halted) and all(o.error is not s for s in shown):
                    shown.append(o.error)
            for error in shown:
                _print_error(error)
            click.echo(not_started + "Run the command again once the state can be saved.",
                       err=True)
            sys.exit(max(e.exit_code for e in shown))
        _exit_on_failure(result, f"{not_started}Everything done so far is recorded; run "
                                 f"`exaprov {verb}` again to continue.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exaprov")
def main() -> None:
    """Provision, and keep converged, the AWS infrastructure of an ExaDeploy system."""


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=Path("exaprov.yaml"), show_default=True)
@click.option("--name", default="example", show_default=True, help="The deployment's name.")
@click.option("--region", default="us-west-1", show_default=True, callback=_region_flag)
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.option("--example", type=click.Choice(["full", "minimal"]), default="full", show_default=True,
              help="full: every key with its default and a comment (a full deployment); minimal: "
                   "name and region only.")
@click.option("--profile", default=None, help="AWS profile to ask EKS for its Kubernetes versions.")
@click.option("--offline", is_flag=True, envvar="EXAPROV_OFFLINE",
              help="Do not ask EKS for its versions: use exaprov's own table.")
@handle_errors
def init(config_path: Path, name: str, region: str, force: bool, example: str,
         profile: str | None, offline: bool) -> None:
    """Write a config file with every key, its default and a comment.

    cluster_version is the newest Kubernetes version in EKS standard support: read from
    eks:DescribeClusterVersions when AWS credentials are at hand, else from exaprov's table."""
    from exaprov.config import parse_config
    from exaprov.config_template import render_config
    from exaprov.paths import check_file

    parse_config({"name": name, "region": region}, source="--name/--region")
    check_file("--config", config_path, write=True, what="config file")
    if config_path.exists() and not force:
        click.echo(f"{config_path} exists; keeping it (--force overwrites).", err=True)
        return
    version, source = _newest_version(region, profile, offline)
    _write_config_file(config_path, render_config(name=name, region=region, full=example == "full",
                                                  cluster_version=version))
    click.echo(f"Kubernetes {version}: the newest in EKS standard support ({source}).", err=True)
    click.echo(f"Wrote {config_path}. Next: `exaprov plan`, then `exaprov up` against your AWS "
               "account, or try it first against the local emulator: `exaprov up --sandbox`.",
               err=True)


def _newest_version(region: str, profile: str | None, offline: bool) -> tuple[str, str]:
    """(version, where it came from). EKS is asked only with credentials at hand, once, with
    short timeouts: init must not hang on a laptop without network or AWS setup."""
    from exaprov import eks_versions
    from exaprov.config import DEFAULT_KUBERNETES_VERSION, SUPPORTED_KUBERNETES_VERSIONS

    def pick(found: dict[str, Any]) -> str | None:
        known = {v: i for v, i in found.items() if v in SUPPORTED_KUBERNETES_VERSIONS}
        return eks_versions.newest_standard(known)

    why = "--offline"
    if not offline:
        try:
            import boto3
            from botocore.config import Config as BotoConfig

            session = boto3.Session(profile_name=profile, region_name=region)
            if session.get_credentials() is None:
                why = "no AWS credentials"
            else:
                eks = session.client("eks", config=BotoConfig(
                    connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}))
                newest = pick(eks_versions.from_eks(eks))
                if newest:
                    return newest, "eks:DescribeClusterVersions"
                why = "EKS listed no version exaprov knows in standard support"
        except Exception as exc:  # noqa: BLE001 - any AWS or network problem: the table
            why = f"EKS could not be asked: {type(exc).__name__}"
    # From the table, only a version whose dates are confirmed (not estimated).
    confirmed = {v: i for v, i in eks_versions.shipped().items() if not i.approximate}
    newest = pick(confirmed) or DEFAULT_KUBERNETES_VERSION
    return newest, f"exaprov's table as of {eks_versions.table_date()}; {why}"


def _write_config_file(path: Path, text: str) -> None:
    """0644 whatever the umask (tighter if the file already was): the config holds no secret,
    but nobody else may change what exaprov builds."""
    mode = 0o644
    try:
        mode &= path.stat().st_mode
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class DetailedExitCommand(click.Command):
    """A command with --detailed-exitcode: there, a usage error is 1, not click's 2."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        asked = "--detailed-exitcode" in args  # before parsing, which consumes `args`
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            if asked:
                exc.exit_code = EXIT_AWS
            raise


def detailed_exitcode_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--detailed-exitcode", is_flag=True,
        help=f"Exit 0 when there is nothing to change, 2 when there {what}, 1 on any error "
             "(bad input included), as `terraform plan -detailed-exitcode`: a CI job can fail "
             "on drift.")


@main.command(cls=DetailedExitCommand)
@target_options
@output_option("table", "json")
@detailed_exitcode_option("are changes")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the plan to this file (mode 0600) for `exaprov up --plan FILE`.")
@handle_errors
def plan(output: str, detailed_exitcode: bool, out_path: Path | None, **kw: Any) -> None:
    """Show what `up` would create, change or delete (read-only)."""
    from exaprov import render, saved_plan
    from exaprov.paths import check_file

    check_file("--out", out_path, write=True, what="plan file")
    result, to_save = _deployment(kw, writes_state=False).plan_to_save()
    _fail_if_failed(result, detailed_exitcode)
    if out_path is not None:
        saved_plan.write(out_path, to_save)
    if output == "json":
        render.print_json({"changes": render.changes_json(result.changes),
                           "summary": render.change_counts(result.changes),
                           "notices": result.notices})
    else:
        render.print_plan(result.changes)
        _print_notices(result.notices)
    if out_path is not None:
        click.echo(f"Wrote the plan to {out_path}. `exaprov up --plan {out_path}"
                   f"{_sandbox_flag(kw)}` applies exactly these changes, or none if anything "
                   "changed since.", err=True)
    if detailed_exitcode and result.changes:
        sys.exit(EXIT_CHANGES)


@main.command()
@target_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting anything.")
@click.option("--plan", "plan_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Apply exactly the plan `exaprov plan --out FILE` wrote; refuse, before any "
                   "change, if the config or the deployment changed since. The reviewed plan "
                   "is the confirmation.")
@handle_errors
def up(yes: bool, plan_path: Path | None, **kw: Any) -> None:
    """Create what is missing, repair drift, apply config changes."""
    from exaprov import render, saved_plan
    from exaprov.paths import check_file

    check_file("--plan", plan_path, write=False, must_exist=True, what="plan file")
    expected = saved_plan.load(plan_path) if plan_path is not None else None
    deployment = _deployment(kw)
    with render.ProgressReporter() as reporter:
        confirm = (lambda question: True) if yes or expected is not None else \
            _asking_over(reporter)
        result = deployment.up(reporter=reporter, confirm=confirm, expected=expected,
                               ask_first=not yes and expected is None)
    _finish(result, "up")


def _asking_over(reporter: Any) -> Callable[[str], bool]:
    """`_confirm` for questions asked while the live view runs: one question at a time (steps
    run in threads), with the live area off the screen so nothing overwrites the prompt."""
    one_at_a_time = threading.Lock()

    def ask(question: str) -> bool:
        with one_at_a_time, reporter.paused():
            return _confirm(question)

    return ask


@main.command(cls=DetailedExitCommand)
@target_options
@output_option("table", "json")
@detailed_exitcode_option("is drift or anything to change")
@handle_errors
def status(output: str, detailed_exitcode: bool, **kw: Any) -> None:
    """Every resource: its ID, live state in AWS, and drift from state and config."""
    from exaprov import render

    result = _deployment(kw, writes_state=False).status()
    _fail_if_failed(result, detailed_exitcode)
    if output == "json":
        rows = render.observed_json(result.observed)
        render.print_json({"resources": rows, "changes": render.changes_json(result.changes),
                           "in_sync": not result.changes, "notices": result.notices})
    else:
        render.print_status(result.observed)
        _print_notices(result.notices)
        click.echo("In sync." if not result.changes else
                   f"Out of sync: {render.summary_line(result.changes)} (`exaprov up"
                   f"{_sandbox_flag(kw)}` fixes it).", err=True)
    if detailed_exitcode and result.changes:
        sys.exit(EXIT_CHANGES)


@main.command()
@target_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--disable-deletion-protection", is_flag=True,
              help="Turn off the deletion protection of the EKS cluster and the database's "
                   "DeletionProtection, and delete them (the data is lost); without it, either "
                   "protection stops destroy before anything is deleted (exit 2).")
@click.option("--skip-final-snapshot", is_flag=True,
              help="Delete the database without taking its final snapshot "
                   "(<exadeploy_id>-final-<UTC date-time>, which exaprov never deletes).")
@handle_errors
def destroy(yes: bool, disable_deletion_protection: bool, skip_final_snapshot: bool,
            **kw: Any) -> None:
    """Delete everything the deployment created, dependants first."""
    from exaprov import render

    deployment = _deployment(kw)
    lifting = " (turning off the deletion protection of its cluster and database)" \
        if disable_deletion_protection else ""
    question = (f"Delete every resource of deployment {deployment.cfg.name!r} in "
                f"{deployment.cfg.region}{lifting}?")
    if not yes and sys.stdin.isatty():
        at_stake = deployment.data_at_stake(skip_final_snapshot)
        if at_stake:
            question = "\n".join(["What holds data:", *(f"  - {line}" for line in at_stake),
                                   question])
    if not yes and not _confirm(question):
        click.echo("Nothing deleted.", err=True)
        sys.exit(EXIT_INPUT)
    with render.ProgressReporter() as reporter:
        result = deployment.destroy(reporter=reporter,
                                    disable_deletion_protection=disable_deletion_protection,
                                    skip_final_snapshot=skip_final_snapshot)
    for kept in deployment.kept:
        click.echo(f"Kept: {kept}.", err=True)
    _finish(result, "destroy")


@main.command()
@target_options
@output_option("table", "json", "tfvars", "env", "tfstate")
@click.option("--reveal", is_flag=True,
              help="Read the secret values (database password, S3 secret key) from Secrets Manager "
                   "and print them; otherwise they appear as references.")
@click.option("--file", "file_path", type=click.Path(path_type=Path), default=None,
              help="With --output tfstate: the Terraform state file to write (mode 0600).")
@handle_errors
def outputs(output: str, reveal: bool, file_path: Path | None, **kw: Any) -> None:
    """What the ExaDeploy Kubernetes deployment needs: cluster, OIDC, database, bucket, keys.

    `--output tfstate --file PATH` writes a Terraform state (format 4) holding only the
    cloud stack's root outputs, so the companion configuration's `terraform_remote_state`
    can read it unchanged. It must hold the secrets to be useful, so it is written only
    on this explicit request, mode 0600.
    """
    from exaprov import outputs as out
    from exaprov import render
    from exaprov.errors import InputError

    if (output == "tfstate") != (file_path is not None):
        raise InputError("--file goes with --output tfstate, and --output tfstate needs --file PATH")
    from exaprov.paths import check_file

    check_file("--file", file_path, write=True, what="Terraform state file")
    deployment = _deployment(kw, writes_state=False)
    groups, state = deployment.outputs(reveal=reveal or output == "tfstate")
    if output == "tfstate":
        from exaprov.state import write_private

        document = out.tfstate(groups, lineage=state.lineage, serial=state.serial)
        write_private(file_path, json.dumps(document, indent=2) + "\n")
        click.echo(f"Wrote {file_path} (mode 0600). It holds the database password and the S3 "
                   "secret key in plain text: keep it private and out of version control.", err=True)
    elif output == "json":
        render.print_json(groups)
    elif output == "tfvars":
        sys.stdout.write(out.render_tfvars(groups))
    elif output == "env":
        sys.stdout.write(out.render_env(groups))
    else:
        for key, value in out.render_table(groups):
            render.out.print(f"{key} = {value}", markup=False)
    if not reveal and output != "tfstate" and groups.get("exafunction_module_repo_backend"):
        click.echo("Secrets are shown as Secrets Manager references; --reveal prints them.", err=True)


@main.command("rotate-db-password")
@target_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def rotate_db_password(yes: bool, **kw: Any) -> None:
    """Give the database a new master password now, and say what to re-apply downstream."""
    deployment = _deployment(kw)
    if not yes and not _confirm(
            f"Rotate the database password of deployment {deployment.cfg.name!r}? The module "
            "repository keeps using the old one, which stops working, until you re-apply it"):
        click.echo("Nothing changed.", err=True)
        sys.exit(EXIT_INPUT)
    done = deployment.rotate_db_password()
    cfg = " ".join(f"{flag} {kw[key]}" for flag, key in (("--config", "config_path"),
                                                        ("--state", "state_path")) if kw.get(key))
    click.echo(f"Rotated the master password of RDS instance {done['identifier']}: Secrets Manager "
               f"secret {done['secret_arn']} holds the new one (version {done['version']}). The "
               "old password no longer opens the database. Re-apply it downstream now:\n"
               f"  1. re-export the outputs: `exaprov outputs {cfg} -o tfstate --file PATH` "
               "(or `--reveal -o tfvars`): exafunction_module_repo_backend.rds_password changed;\n"
               "  2. `terraform apply` the companion configuration "
               "(terraform-aws-exafunction-kube), which writes it into the Kubernetes secret "
               "`rds-password` (key postgres_password; its rds_password_secret_name), or update "
               "that secret yourself;\n"
               "  3. restart the module repository so it reconnects with the new password.")


def _vpc_id(ctx: Any, param: Any, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"vpc-[0-9a-f]{8,17}", value):
        raise click.BadParameter(f"{value!r} is not a VPC ID (vpc- and 8 or 17 hex digits)")
    return value


def _route_tables(ctx: Any, param: Any, value: str | None) -> list[str] | None:
    if value is None:
        return None
    ids = [v.strip() for v in value.split(",") if v.strip()]
    if not ids:
        # Not "every route table": that is what leaving the flag out means.
        raise click.BadParameter(f"{value!r} names no route table; list rtb-… IDs, or leave the "
                                 "flag out for every route table of the client VPC")
    bad = [v for v in ids if not re.fullmatch(r"rtb-[0-9a-f]{8,17}", v)]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: not route table IDs (rtb-…)")
    return ids


@main.command()
@target_options
@click.option("--vpc-id", required=True, callback=_vpc_id, help="The client VPC to peer with.")
@click.option("--route-table-ids", callback=_route_tables, default=None,
              help="Client route tables to route through the peering (comma-separated) "
                   "[default: every route table of the client VPC].")
@click.option("--peer-region", default=None, callback=_region_flag,
              help="The client VPC's region, if another.")
@click.option("--peer-profile", default=None,
              help="AWS profile of the client VPC's account, if another (accepts the peering and "
                   "writes the client-side routes).")
@handle_errors
def peer(vpc_id: str, route_table_ids: list[str] | None, peer_region: str | None,
         peer_profile: str | None, **kw: Any) -> None:
    """Peer a client VPC with the deployment's VPC (routes both ways, SG ingress)."""
    from exaprov import render

    deployment = _deployment(kw)
    with render.ProgressReporter() as reporter:
        result = deployment.peer(vpc_id, route_table_ids, peer_region, peer_profile,
                                 reporter=reporter)
    _finish(result, "peer")


@main.command()
@target_options
@click.option("--vpc-id", required=True, callback=_vpc_id, help="The client VPC to unpeer.")
@handle_errors
def unpeer(vpc_id: str, **kw: Any) -> None:
    """Remove one peering and everything `peer` added for it."""
    from exaprov import render

    deployment = _deployment(kw)
    with render.ProgressReporter() as reporter:
        result = deployment.unpeer(vpc_id, reporter=reporter)
    _finish(result, "unpeer")


@main.group("config")
def config_group() -> None:
    """The config file's format."""


@config_group.command("schema")
def config_schema() -> None:
    """Print the config file's JSON Schema (for editor completion and validation)."""
    from exaprov.config import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.group("state")
def state_group() -> None:
    """Move, unlock, recover and inspect a deployment's state."""


@state_group.command("push")
@target_options
@click.argument("destination")
@handle_errors
def state_push(destination: str, **kw: Any) -> None:
    """Copy the state (default: the local file) to DESTINATION, e.g. s3://bucket/key."""
    deployment = _deployment(kw)
    deployment.copy_state(to=destination)
    click.echo(f"State copied to {destination}. Use `--state {destination}` (or `state: "
               f"{destination}` in the config) from now on.", err=True)


@state_group.command("pull")
@target_options
@click.argument("source")
@handle_errors
def state_pull(source: str, **kw: Any) -> None:
    """Copy the state from SOURCE (e.g. s3://bucket/key) to the local state file (or --state)."""
    deployment = _deployment(kw)
    deployment.copy_state(source=source)
    click.echo(f"State copied from {source} to {deployment.store.location}.", err=True)


def _peer_profiles(ctx: Any, param: Any, values: tuple[str, ...]) -> dict[str, str]:
    profiles = {}
    for value in values:
        vpc_id, sep, profile = value.partition("=")
        if not sep or not profile or not re.fullmatch(r"vpc-[0-9a-f]{8,17}", vpc_id):
            raise click.BadParameter(f"{value!r} is not VPC_ID=PROFILE (e.g. vpc-0abc12345678=client)")
        profiles[vpc_id] = profile
    return profiles


@state_group.command("recover")
@target_options
@output_option("table", "json")
@click.option("--yes", "-y", is_flag=True,
              help="Write the rebuilt state (without it: a dry run that only shows what it found).")
@click.option("--force", is_flag=True,
              help="Replace a readable state that records resources (a copy is kept aside).")
@click.option("--peer-profile", "peer_profiles", multiple=True, callback=_peer_profiles,
              metavar="VPC_ID=PROFILE",
              help="The AWS profile of a peered client VPC in another account (repeatable).")
@handle_errors
def state_recover(output: str, yes: bool, force: bool, peer_profiles: dict[str, str],
                  **kw: Any) -> None:
    """Rebuild a lost or damaged state from the tags of what exists in AWS.

    Runs every step read-only and records what it finds by tag. Without --yes nothing
    is written: it prints what it found and what is missing. With --yes it writes the
    state; a damaged state file is first copied aside (`<name>.damaged-<time>`).
    """
    from exaprov import recover, render

    deployment = _deployment(kw, writes_state=yes)
    with render.ProgressReporter() as reporter:
        recovery = deployment.recover(write=yes, force=force, peer_profiles=peer_profiles,
                                      reporter=reporter)
    if output == "json":
        render.print_json(recover.as_json(recovery))
    else:
        _print_recovery(recovery)
    if recovery.result.failed:
        _exit_on_failure(recovery.result, "Nothing was written: fix the above, then recover again.")


def _print_recovery(recovery: Any) -> None:
    from rich.table import Table

    from exaprov import render

    table = Table(show_edge=False, pad_edge=False, title="Found by tag")
    for col in ("resource", "kind", "id", "live"):
        table.add_column(col, overflow="fold")
    for row in recovery.found:
        table.add_row(row.address, row.kind, row.live_id, row.live)
    render.out.print(table)
    for change in recovery.missing:
        render.out.print(f"  missing {change.address}  [{change.kind}] (`up` creates it)",
                         markup=False)
    for change in recovery.drift:
        render.out.print(f"  drift   {change.address}: {change.detail} (`up` fixes it)",
                         markup=False)
    peers = sorted(recovery.state.data.get("peers") or {})
    summary = (f"{len(recovery.found)} resource(s) found, {len(recovery.missing)} missing, "
               f"{len(peers)} peer(s){': ' + ', '.join(peers) if peers else ''}.")
    click.echo(summary, err=True)
    if recovery.damage:
        click.echo(f"The current state is damaged: {recovery.damage}", err=True)
    elif recovery.previous.startswith("records") and not recovery.written:
        click.echo(f"The current state {recovery.previous}: --yes --force replaces it (a copy is "
                   "kept aside).", err=True)
    if recovery.written:
        aside = f" (the previous one is kept in {recovery.kept_aside})" if recovery.kept_aside else ""
        _echo(f"Wrote {recovery.location}{aside}. Next: `exaprov status`.")
    elif not recovery.result.failed:
        _echo(f"Dry run: nothing written. `exaprov state recover --yes` writes "
              f"{recovery.location}.")


@state_group.command("unlock")
@target_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def state_unlock(yes: bool, **kw: Any) -> None:
    """Clear a lock left by an exaprov that died (check that it is really gone first)."""
    deployment = _deployment(kw)
    holder = deployment.lock_holder()
    if holder is None:
        click.echo("No lock is held.", err=True)
        return
    from exaprov.state import describe_holder

    described = describe_holder(holder)
    if not yes and not _confirm(f"Clear the lock of {described}?"):
        sys.exit(EXIT_INPUT)
    deployment.force_unlock()
    click.echo(f"Cleared the lock of {described}.", err=True)


@main.command()
@target_options
@click.option("--file", "file_path", type=click.Path(path_type=Path), default=None,
              help="The kubeconfig to update [default: first of $KUBECONFIG, else ~/.kube/config].")
@click.option("--alias", default=None, help="The context name [default: the cluster ARN].")
@click.option("--use-exaprov-token", is_flag=True,
              help="Get tokens with `exaprov token` instead of `aws eks get-token` (no AWS CLI needed).")
@handle_errors
def kubeconfig(file_path: Path | None, alias: str | None, use_exaprov_token: bool, **kw: Any) -> None:
    """Add or update the cluster in a kubeconfig, merged by name like `aws eks update-kubeconfig`."""
    from exaprov import kubeconfig as kc
    from exaprov.errors import InputError
    from exaprov.paths import check_file

    check_file("--file" if file_path else "$KUBECONFIG (or ~/.kube/config)",
               file_path or kc.default_path(), write=True, what="kubeconfig")
    deployment = _deployment(kw, writes_state=False)
    groups, _ = deployment.outputs(command="kubeconfig")
    cluster = groups["exafunction_cluster"]
    if not cluster.get("cluster_endpoint"):
        raise InputError("the deployment has no cluster yet",
                         hint=f"run `exaprov up{_sandbox_flag(kw)}` first")
    entry = kc.entry(cluster["cluster_name"], cluster["cluster_arn"], cluster["cluster_endpoint"],
                     cluster["cluster_certificate_authority_data"], deployment.cfg.region, alias=alias,
                     profile=kw["profile"], command="exaprov" if use_exaprov_token else "aws")
    path = kc.update_kubeconfig(file_path or kc.default_path(), entry)
    click.echo(f"Updated context {alias or cluster['cluster_arn']} in {path}.", err=True)


@main.command()
@click.option("--cluster-name", required=True)
@click.option("--region", default=None, callback=_region_flag,
              help="The cluster's region [default: from the AWS config].")
@click.option("--profile", default=None)
@handle_errors
def token(cluster_name: str, region: str | None, profile: str | None) -> None:
    """Print a Kubernetes ExecCredential for the cluster (what `aws eks get-token` prints)."""
    import boto3

    from exaprov.token import get_token

    session = boto3.Session(profile_name=profile, region_name=region)
    render_region = region or session.region_name or "us-east-1"
    click.echo(json.dumps(get_token(session, cluster_name, render_region)))


@main.group()
def sandbox() -> None:
    """The local AWS emulator behind --sandbox: one per user, on 127.0.0.1.

    It stands for one AWS account shared by every folder you work in; its record and log
    are in $XDG_STATE_HOME/exaprov/sandbox (~/.local/state/exaprov/sandbox), or
    $EXAPROV_SANDBOX_HOME/sandbox. What it holds lives in its memory only.
    """


@sandbox.command("start")
@handle_errors
def sandbox_start() -> None:
    """Start the emulator (nothing happens if it is running already)."""
    from exaprov import sandbox as sb

    record, started = sb.start()
    if started:
        click.echo(sb.started_message(record) + ".", err=True)
    else:
        click.echo(f"The sandbox emulator is already running at {record['endpoint']} "
                   f"(pid {record['pid']}).", err=True)
    click.echo("`eval \"$(exaprov sandbox env)\"` points aws-cli and boto3 at it.", err=True)


def _default_region() -> str:
    """The region of ./exaprov.yaml when there is a readable one, else exaprov init's default."""
    try:
        from exaprov.config import load_config

        return load_config(Path("exaprov.yaml")).region
    except (ExaprovError, OSError):
        return "us-west-1"


def _sandbox_regions() -> list[str]:
    """Where this folder's sandbox deployments live: ./exaprov.yaml's region, its sandbox
    states' regions, and the region of the environment."""
    regions = {_default_region()}
    for path in Path("state", "sandbox", "deployments").glob("*.json"):
        try:
            regions.add(str(json.loads(path.read_text())["region"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    regions.update(v for v in (os.environ.get("AWS_REGION"), os.environ.get("AWS_DEFAULT_REGION"))
                   if v)
    return sorted(regions)


@sandbox.command("env")
@click.option("--region", default=None,
              help="The region to export [default: the region of ./exaprov.yaml, else us-west-1].")
@handle_errors
def sandbox_env(region: str | None) -> None:
    """Print shell exports that point aws-cli and boto3 at the emulator (started if needed).

    eval "$(exaprov sandbox env)"; aws ec2 describe-vpcs
    """
    from exaprov import sandbox as sb

    endpoint = sb.ensure_running()
    sys.stdout.write(sb.env_exports(endpoint, region or _default_region()))


@sandbox.command("status")
@output_option("table", "json")
@handle_errors
def sandbox_status(output: str) -> None:
    """Is the emulator running, and where."""
    from exaprov import render
    from exaprov import sandbox as sb

    info = sb.status()
    if output == "json":
        render.print_json(info or {"running": False})
    elif info is None:
        click.echo("No sandbox emulator.")
    else:
        state = "running" if info.get("running") else "not answering"
        click.echo(f"Sandbox emulator {state}: pid {info.get('pid')}, {info.get('endpoint')}")


@sandbox.command("stop")
@click.option("--yes", "-y", is_flag=True,
              help="Stop it even when deployments live in it (they are forgotten).")
@handle_errors
def sandbox_stop(yes: bool) -> None:
    """Stop the emulator: everything in it is forgotten.

    When deployments live in it, they are listed and stop asks first (on a terminal;
    elsewhere it refuses unless --yes).
    """
    from exaprov import sandbox as sb

    info = sb.status()
    if info is not None and info.get("running") and not yes:
        living = sb.deployments(info["endpoint"], _sandbox_regions())
        if living:
            names = ", ".join(f"{name} ({region})" if region else name for name, region in living)
            click.echo(f"The sandbox emulator holds {len(living)} deployment(s): {names}. "
                       "Stopping it forgets them; their sandbox state files then record "
                       "resources that no longer exist (`exaprov up --sandbox` builds them "
                       "anew, `exaprov destroy --sandbox` first removes them cleanly).", err=True)
            if not _confirm("Stop the sandbox emulator and forget them?"):
                click.echo("Not stopped.", err=True)
                sys.exit(EXIT_INPUT)
    if sb.stop_legacy():
        click.echo("Stopped the emulator an older exaprov ran for this folder (state/sandbox).",
                   err=True)
    click.echo("Sandbox emulator stopped." if sb.stop() else "No sandbox emulator was running.")


def _print_notices(notices: list[str]) -> None:
    for notice in notices:
        if notice.startswith("WARNING: "):
            click.secho("warning: ", fg="yellow", bold=True, err=True, nl=False)
            click.echo(notice.removeprefix("WARNING: "), err=True)
        else:
            click.echo(notice, err=True)


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        from exaprov.errors import InputError

        raise InputError(f"{question} — no terminal to ask on",
                         hint="pass --yes to confirm")
    return click.confirm(question, default=False, err=True)


def _fail_if_failed(result: Any, detailed_exitcode: bool = False) -> None:
    if result.failed:
        _exit_on_failure(result, "", detailed_exitcode)


def _exit_on_failure(result: Any, then: str, detailed_exitcode: bool = False) -> None:
    """Print each failed step's error (and `then`), exit with the gravest code."""
    for outcome in result.failed:
        _print_error(outcome.error)
    if then:
        _echo(then)
    if result.cancelled:
        from exaprov import interrupts

        sys.exit(interrupts.exit_code(result.signum))
    code = max(o.error.exit_code for o in result.failed if o.error)
    sys.exit(_exit_code(code, {"detailed_exitcode": detailed_exitcode}))
