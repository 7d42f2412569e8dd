"""exaprov's speed under the AWS latency model, in one run: a table, and JSON with the figures.

    pip install '.[sandbox]' && python benchmarks/run.py [--scale 0.0333] [--json PATH]

It starts its own emulators (`python -m exaprov.emulator --latency-model aws`) on 127.0.0.1,
runs the installed `exaprov` against them as a user would, and compares:
(a) `up` from nothing with SPEC's example config against its critical-path bound and the
Terraform modules' order, (b) `destroy` against its bound, (c) a converged `up`, `plan` and
`status`: requests (counted by the emulator) and wall time, (d) `up` with 20 runner pools
against 2, and `peer` x10, (e) `exaprov --help` against `python -c "import click"`.
Durations are AWS's times `--scale`; exaprov runs with EXAPROV_TIME_SCALE set to the same.
See benchmarks/README.md for the model and its sources.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model  # noqa: E402  (the benchmark's own module, next to this file)

HERE = Path(__file__).resolve().parent
REGION = "us-west-1"
DEFAULT_SCALE = 1 / 5
TARGETS = {  # figure: (ratio, at most)
    "up / bound": 1.05, "up / terraform": 0.85, "destroy / bound": 1.10,
    "up 20 pools / up 2 pools": 1.15, "--help / import click": 2.5,
}


def exaprov_command() -> list[str]:
    """The installed console script next to this interpreter; `python -m exaprov` otherwise."""
    script = Path(sys.executable).with_name("exaprov")
    if script.exists():
        return [str(script)]
    found = shutil.which("exaprov")
    return [found] if found else [sys.executable, "-m", "exaprov"]


def base_env(scale: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "EXAPROV_")) and k not in ("HTTP_PROXY", "HTTPS_PROXY")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               EXAPROV_TIME_SCALE=repr(scale), NO_PROXY="127.0.0.1,localhost")
    return env


class Emulator:
    def __init__(self, endpoint: str, proc: subprocess.Popen[bytes]) -> None:
        self.endpoint, self.proc = endpoint, proc

    def requests(self) -> int:
        with urllib.request.urlopen(f"{self.endpoint}/exaprov-emulator/requests", timeout=10) as resp:
            return int(json.load(resp)["total"])

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def warm_up(self) -> None:
        """One read per service: moto builds each backend on first use (IAM loads ~1,000
        managed policies), a cost real AWS never charges, so it stays out of the timings."""
        for service, call in (("iam", "list_roles"), ("ec2", "describe_vpcs"), ("eks", "list_clusters"),
                              ("rds", "describe_db_instances"), ("kms", "list_keys"),
                              ("logs", "describe_log_groups"), ("s3", "list_buckets"),
                              ("sts", "get_caller_identity"), ("secretsmanager", "list_secrets"),
                              ("autoscaling", "describe_auto_scaling_groups")):
            getattr(self.client(service), call)()


@contextmanager
def emulator(scale: float, workdir: Path, latency: str = "aws") -> Iterator[Emulator]:
    ready = workdir / "emulator.port"
    log = open(workdir / "emulator.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "exaprov.emulator", "--host", "127.0.0.1", "--port", "0",
         "--ready-file", str(ready), "--latency-model", latency, "--time-scale", repr(scale)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=base_env(scale))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the emulator did not start; see {workdir / 'emulator.log'}")
            time.sleep(0.05)
        emu = Emulator(f"http://127.0.0.1:{ready.read_text().strip()}", proc)
        emu.warm_up()
        yield emu
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def exaprov(emu: Emulator, cwd: Path, scale: float, *args: str) -> dict[str, Any]:
    """Run one command; its wall time, exit code and the requests the emulator saw meanwhile."""
    before = emu.requests()
    started = time.perf_counter()
    proc = subprocess.run([*exaprov_command(), *args, "--endpoint-url", emu.endpoint], cwd=cwd,
                          env=base_env(scale), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=900)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"exaprov {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {"seconds": seconds, "requests": emu.requests() - before}


def write_config(cwd: Path, pools: int) -> None:
    subprocess.run([*exaprov_command(), "init", "--example", "full", "--force"], cwd=cwd, check=True,
                   capture_output=True, env=base_env(1.0))
    if pools != 2:
        path = cwd / "exaprov.yaml"
        cfg = yaml.safe_load(path.read_text())
        first = cfg["cluster"]["runner_pools"][0]
        cfg["cluster"]["runner_pools"] = [{**first, "suffix": f"pool{i:02d}"} for i in range(pools)]
        path.write_text(yaml.safe_dump(cfg))


def startup(runs: int = 7) -> dict[str, float]:
    """Median wall time of `exaprov --help` and of `python -c "import click"`."""
    def median(cmd: list[str]) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    return {"exaprov_help_s": median([*exaprov_command(), "--help"]),
            "import_click_s": median([sys.executable, "-c", "import click"])}


def measure(scale: float, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"scale": scale, "model": model.figures(scale)}
    first, second, instant = work / "two-pools", work / "twenty-pools", work / "instant"
    for folder in (first, second, instant):
        folder.mkdir()
    print(f"benchmark at 1/{1 / scale:.0f} of AWS time ...", file=sys.stderr)
    with emulator(scale, instant, latency="none") as emu:
        # The same commands with nothing to wait for: the processing time (start-up, CPU of
        # exaprov and the emulator) that does not shrink with the time scale.
        # Twice, keeping the faster: noise only adds, and a smaller `fixed` is the cautious one.
        write_config(instant, 2)
        runs = [(exaprov(emu, instant, scale, "up", "--yes"),
                 exaprov(emu, instant, scale, "destroy", "--yes",
                         "--disable-deletion-protection")) for _ in range(2)]
        out["instant"] = {"up": min((r[0] for r in runs), key=lambda r: r["seconds"]),
                          "destroy": min((r[1] for r in runs), key=lambda r: r["seconds"])}
    with emulator(scale, first) as emu:
        write_config(first, 2)
        out["up"] = exaprov(emu, first, scale, "up", "--yes")
        print(f"  up: {out['up']['seconds']:.2f}s", file=sys.stderr)
        out["converged"] = {name: exaprov(emu, first, scale, *args) for name, args in
                            (("up", ("up", "--yes")), ("plan", ("plan",)), ("status", ("status",)))}
        out["destroy"] = exaprov(emu, first, scale, "destroy", "--yes", "--disable-deletion-protection")
        print(f"  destroy: {out['destroy']['seconds']:.2f}s", file=sys.stderr)
    with emulator(scale, second) as emu:
        write_config(second, 20)
        out["up_20_pools"] = exaprov(emu, second, scale, "up", "--yes")
        print(f"  up, 20 pools: {out['up_20_pools']['seconds']:.2f}s", file=sys.stderr)
        ec2 = emu.client("ec2")
        vpcs = [ec2.create_vpc(CidrBlock=f"10.{i}.0.0/16")["Vpc"]["VpcId"] for i in range(1, 11)]
        peers = [exaprov(emu, second, scale, "peer", "--vpc-id", vpc) for vpc in vpcs]
        out["peer_x10"] = {"seconds": sum(p["seconds"] for p in peers),
                           "requests": sum(p["requests"] for p in peers),
                           "each_s": [round(p["seconds"], 3) for p in peers]}
    out["startup"] = startup()
    return out


def at_aws_speed(wall: float, fixed: float, scale: float) -> float:
    """The wall time at AWS speed: the waiting part scaled back up, the processing part as is."""
    return max(wall - fixed, 0.0) / scale + fixed


def ratios(out: dict[str, Any]) -> dict[str, float]:
    up, destroy, scale = out["model"]["up"], out["model"]["destroy"], out["scale"]
    est_up = at_aws_speed(out["up"]["seconds"], out["instant"]["up"]["seconds"], scale)
    est_destroy = at_aws_speed(out["destroy"]["seconds"], out["instant"]["destroy"]["seconds"], scale)
    return {
        "up / bound (at AWS speed, est.)": est_up / up["bound_aws_s"],
        "up / terraform (at AWS speed, est.)": est_up / up["terraform_aws_s"],
        "destroy / bound (at AWS speed, est.)": est_destroy / destroy["bound_aws_s"],
        "up / bound": out["up"]["seconds"] / up["bound_s"],
        "up / terraform": out["up"]["seconds"] / up["terraform_s"],
        "destroy / bound": out["destroy"]["seconds"] / destroy["bound_s"],
        "destroy / terraform": out["destroy"]["seconds"] / destroy["terraform_s"],
        "up 20 pools / up 2 pools": out["up_20_pools"]["seconds"] / out["up"]["seconds"],
        "--help / import click": out["startup"]["exaprov_help_s"] / out["startup"]["import_click_s"],
    }


def table(out: dict[str, Any]) -> str:
    scale, m, r = out["scale"], out["model"], out["ratios"]

    def aws(seconds: float) -> str:  # the same figure at AWS speed
        return f"{seconds / scale / 60:.1f} min"

    rows = [
        ("up (SPEC example, 2 pools)", out["up"]["seconds"], f"bound {m['up']['bound_s']:.2f}s, "
         f"Terraform {m['up']['terraform_s']:.2f}s",
         ["up / bound", "up / bound (at AWS speed, est.)", "up / terraform",
          "up / terraform (at AWS speed, est.)"]),
        ("destroy", out["destroy"]["seconds"], f"bound {m['destroy']['bound_s']:.2f}s, "
         f"Terraform {m['destroy']['terraform_s']:.2f}s",
         ["destroy / bound", "destroy / bound (at AWS speed, est.)"]),
        ("up, 20 runner pools", out["up_20_pools"]["seconds"], "vs up, 2 pools",
         ["up 20 pools / up 2 pools"]),
    ]
    lines = [f"exaprov under the AWS latency model at 1/{1 / scale:.0f} "
             "(AWS-time equivalents in brackets)", ""]
    lines.append(f"{'measure':28} {'wall':>7} {'(AWS)':>9}  {'against':36} {'ratio':>25} {'target':>7}")
    for name, seconds, against, keys in rows:
        for i, key in enumerate(keys):
            target = TARGETS.get(key.split(" (")[0])
            verdict = "" if target is None else ("ok" if r[key] <= target else "MISSED")
            head = (f"{name:28} {seconds:7.2f} {aws(seconds):>9}  {against:36}" if i == 0
                    else " " * 84)
            label = key.split(" / ", 1)[1].replace("(at AWS speed, est.)", "at AWS speed")
            lines.append(f"{head} {label:>19} {r[key]:5.3f} {'<= ' + str(target):>7} {verdict}")
    inst = out["instant"]
    lines.append(f"(processing that does not scale, from an instant emulator: "
                 f"up {inst['up']['seconds']:.2f}s, destroy {inst['destroy']['seconds']:.2f}s;"
                 " 'at AWS speed' = (wall - that) / scale + that)")
    lines.append("")
    lines.append(f"{'converged':30} {'wall':>8} {'requests':>10}")
    for name, run in out["converged"].items():
        lines.append(f"  {name:28} {run['seconds']:8.2f} {run['requests']:10d}")
    peers = out["peer_x10"]
    lines.append(f"  {'peer x10 (total)':28} {peers['seconds']:8.2f} {peers['requests']:10d}")
    s = out["startup"]
    lines.append("")
    lines.append(f"start-up: exaprov --help {s['exaprov_help_s']:.3f}s, python -c 'import click' "
                 f"{s['import_click_s']:.3f}s: ratio {r['--help / import click']:.2f} (target <= 2.5) "
                 f"{'ok' if r['--help / import click'] <= 2.5 else 'MISSED'}")
    lines.append(f"critical path (up): {' → '.join(m['up']['critical_path'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                        help="emulated time per AWS second (default 1/5: a 10-minute cluster takes 2 min)")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="where to write the figures")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale {args.scale}: must be above 0 and at most 1")
    with tempfile.TemporaryDirectory(prefix="exaprov-bench-") as tmp:
        out = measure(args.scale, Path(tmp))
    out["ratios"] = ratios(out)
    out["targets"] = TARGETS
    out["met"] = {key: out["ratios"][key] <= target for key, target in TARGETS.items()}
    print(table(out))
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nfigures written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
