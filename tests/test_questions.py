"""Questions asked during a run: shown whole with their [y/N], never drawn over by the live view."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

DRIVER = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-west-1", EXAPROV_TIME_SCALE="0.001",
                      MOTO_EC2_LOAD_DEFAULT_AMIS="false")
    import boto3, yaml
    from moto import mock_aws
    from exaprov import emulator
    emulator.install_extensions()
    from exaprov.cli import main
    from exaprov.deployment import Deployment, Target

    pool = {"node_instance_type": "m5.xlarge", "min_size": 0, "max_size": 1}
    def config(*suffixes):
        Path("exaprov.yaml").write_text(yaml.safe_dump({
            "name": "example", "module_repo_backend": None,
            "cluster": {"runner_pools": [{"suffix": s, **pool} for s in suffixes]}}))

    with mock_aws():
        config("cpu", "gpu")
        assert not Deployment(Target()).up(confirm=lambda q: True).failed
        config("cpu")
        try:
            main(["up"])
        except SystemExit as exit:
            code = exit.code
        groups = boto3.client("eks").list_nodegroups(clusterName="exafunction-cluster-example")
        print("@@RESULT@@", code, " ".join(sorted(groups["nodegroups"])), flush=True)
''')


def answer_in_a_terminal(driver: str, folder: Path, answer: bytes) -> str:
    """Run `driver` on a pseudo-terminal, answer its first [y/N] question; all it wrote."""
    import pty

    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", driver], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=folder, close_fds=True)
    os.close(slave)
    seen = b""
    try:
        while b"[y/N]" not in seen:
            chunk = os.read(master, 65536)  # blocks until the child writes; EOF fails the test
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        os.write(master, answer)
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=120) is not None
    return seen.decode(errors="replace")


def test_a_pool_removal_asks_y_n_on_a_terminal_and_nothing_draws_over_it(tmp_path: Path) -> None:
    text = answer_in_a_terminal(DRIVER, tmp_path, b"n\n")
    prompt_at = text.index("[y/N]")
    question = text[text.rfind("\n", 0, prompt_at) + 1:text.index("\n", prompt_at)]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", question)
    assert re.search(r"Delete node group runner-gpu .*\[y/N\]: n$", plain), repr(question)
    # Between the prompt and the echo of the answer the child wrote nothing: no redraw.
    assert re.fullmatch(r"\[y/N\]: n", question[question.index("[y/N]"):].rstrip()), repr(question)
    result = text[text.index("@@RESULT@@"):].split()
    assert result[1] != "0"  # refused
    assert "runner-gpu" in result[2:]  # and not deleted


def test_a_node_group_replacement_asks_like_a_removal(workdir: Path, aws: None, calls: Any) -> None:
    import boto3

    from tests.conftest import REGION, cli, write_config

    pool = {"suffix": "cpu", "node_instance_type": "m5.xlarge", "min_size": 0, "max_size": 1}
    write_config({"name": "example", "module_repo_backend": None,
                  "cluster": {"runner_pools": [pool]}})
    assert cli("up", "--yes").exit_code == 0
    write_config({"name": "example", "module_repo_backend": None,
                  "cluster": {"runner_pools": [{**pool, "node_instance_type": "m5.2xlarge"}]}})
    eks = boto3.client("eks", region_name=REGION)
    before = sorted(eks.list_nodegroups(clusterName="exafunction-cluster-example")["nodegroups"])
    calls.clear()
    refused = cli("up")  # no terminal to ask on, no --yes
    assert refused.exit_code == 2, refused.output
    assert "Replace node group runner-cpu (m5.xlarge/" in refused.output and "--yes" in refused.output
    assert calls.mutating() == []
    assert sorted(eks.list_nodegroups(clusterName="exafunction-cluster-example")["nodegroups"]) \
        == before
    assert cli("up", "--yes").exit_code == 0
    groups = eks.list_nodegroups(clusterName="exafunction-cluster-example")["nodegroups"]
    replaced = [g for g in groups if g.startswith("runner-cpu")]
    assert len(replaced) == 1 and replaced != ["runner-cpu"]
    assert eks.describe_nodegroup(clusterName="exafunction-cluster-example", nodegroupName=replaced[0])[
        "nodegroup"]["instanceTypes"] == ["m5.2xlarge"]


DESTROY_DRIVER = textwrap.dedent('''
    import os
    from pathlib import Path
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-west-1", EXAPROV_TIME_SCALE="0.001",
                      MOTO_EC2_LOAD_DEFAULT_AMIS="false")
    import boto3, yaml
    from moto import mock_aws
    from exaprov import emulator
    emulator.install_extensions()
    from exaprov.cli import main
    from exaprov.deployment import Deployment, Target

    with mock_aws():
        Path("exaprov.yaml").write_text(yaml.safe_dump({"name": "example", "cluster": {
            "runner_pools": [{"suffix": "cpu", "node_instance_type": "m5.xlarge",
                              "min_size": 0, "max_size": 1}]}}))
        deployment = Deployment(Target())
        assert not deployment.up(confirm=lambda q: True).failed
        bucket = deployment.read_state().resources["bucket.bucket"]["id"]
        for n in range(3):
            boto3.client("s3").put_object(Bucket=bucket, Key=f"module-{n}", Body=b"x")
        try:
            main(["destroy", "--disable-deletion-protection"])
        except SystemExit as exit:
            code = exit.code
        left = boto3.client("rds").describe_db_instances()["DBInstances"]
        print("@@RESULT@@", code, len(left), flush=True)
''')


def test_destroy_says_what_holds_data_before_asking(tmp_path: Path) -> None:
    text = answer_in_a_terminal(DESTROY_DRIVER, tmp_path, b"n\n")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", text)
    question = plain[plain.index("What holds data:"):plain.index("[y/N]")]
    assert re.search(r"RDS database exafunction-mrbe-example-rds \(20 GiB\): a final snapshot "
                     r"exafunction-mrbe-example-final-\d{8}-\d{6} is taken first", question), question
    assert re.search(r"S3 bucket module-repo-exafunction-mrbe-example-\w+: 3 object\(s\)", question)
    assert "KMS key" in question and "7 days" in question
    result = plain[plain.index("@@RESULT@@"):].split()
    assert result[1] == "2" and result[2] == "1"  # refused, the database still there
