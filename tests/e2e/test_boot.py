"""The worker hosts boot as EC2 instances boot: from their own user data (deploy/bootstrap.sh), on the
cached worker image, with nothing set up for them from outside. A broken bootstrap breaks the stack."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sumpipe.aws import client
from sumpipe.instance.runner import HARD_LIMIT_GRACE_S
from sumpipe.local.hosts import namespaces_available

from .conftest import DATA, ec2_state, run_job, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"
REPO = Path(__file__).resolve().parents[2]


def test_each_host_is_set_up_by_its_own_user_data_and_runs_jobs_with_its_settings(running_stack):
    host_dir = running_stack.hosts_dir / running_stack.host_namespace
    root = host_dir / "root"
    assert (host_dir / "user-data-status").read_text() == "0"
    user_data = (host_dir / "user-data").read_text()
    assert user_data.startswith("#!/bin/bash\n") and "sumpipe bootstrap starting" in user_data
    # The runner's settings come from the file the bootstrap wrote, not from sshd.
    runner_env = (root / "etc/sumpipe/runner.env").read_text()
    assert f"SUMPIPE_JOB_TABLE={running_stack.target.outputs['JobTableName']}\n" in runner_env
    assert "SetEnv" not in (root / "etc/ssh/sshd_config").read_text()
    authorized = (root / "var/lib/sumpipe/.ssh/authorized_keys").read_text()
    assert authorized.startswith('restrict,command="/opt/sumpipe/job-runner" ssh-ed25519 ')

    job = run_job(running_stack.target, SAMPLE)
    assert job.state == "succeeded", job.error
    # The runner's log landed where runner.env puts it, on that host's own disk.
    assert (root / "var/lib/sumpipe/runner-logs" / f"{job.job_id}.jsonl").is_file()


def test_every_start_publishes_the_host_key_again(running_stack):
    target = running_stack.target
    instance_id = target.outputs["WorkerInstanceIds"].split(",")[0]
    name = target.outputs["KnownHostsParameterName"]
    ssm, ec2 = client("ssm"), client("ec2")
    booted = running_stack.hosts_dir / running_stack.host_namespace / "booted"
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")
    wait_until(lambda: not booted.exists(), what="its host to go down (the mirror lags EC2 a little)")
    published = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    assert published.rstrip().endswith(f" {instance_id}")
    ssm.put_parameter(Name=name, Value="# emptied by the test\n", Type="String", Overwrite=True)

    ec2.start_instances(InstanceIds=[instance_id])
    wait_until(booted.exists, what="the instance to boot")
    # The boot units ran (not the user data again): the instance's line is back, and only it.
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"].splitlines() == published.splitlines()
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")


def test_each_job_schedules_a_backstop_shutdown_and_an_instance_that_shuts_down_is_stopped(running_stack):
    target = running_stack.target
    host_dir = running_stack.hosts_dir / running_stack.host_namespace
    job = run_job(target, SAMPLE)
    assert job.state == "succeeded", job.error
    # The job's start scheduled the instance's own power-off (through sudo, as root), past its deadline.
    requests = [json.loads(line) for line in (host_dir / "shutdown.log").read_text().splitlines()]
    scheduled = [r for r in requests if job.created_at <= r["requested_at"] <= job.finished_at]
    assert [r["args"][:2] for r in scheduled] == [["-h", f"+{backstop_minutes(running_stack)}"]]

    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop after its job")
    client("ec2").start_instances(InstanceIds=[target.outputs["WorkerInstanceIds"].split(",")[0]])
    booted = host_dir / "booted"
    wait_until(booted.exists, what="the instance to boot")
    # The instance's own `shutdown -h now` (what its idle shutdown runs): EC2 stops it.
    subprocess.run([host_dir / "root/usr/local/sbin/shutdown", "-h", "now"], check=True, capture_output=True)
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance that shut itself down to stop")
    wait_until(lambda: not booted.exists(), what="its host to go down")


def backstop_minutes(stack) -> int:
    """What deploy/bootstrap.sh's schedule-shutdown asks for: the job deadline, the runner's kill
    grace and a minute to report, in whole minutes."""
    runner_env = (stack.hosts_dir / stack.host_namespace / "root/etc/sumpipe/runner.env").read_text()
    settings = dict(line.split("=", 1) for line in runner_env.splitlines() if "=" in line)
    deadline = int(settings["SUMPIPE_JOB_DEADLINE_S"])
    return math.ceil((deadline + HARD_LIMIT_GRACE_S + 60) / 60)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The project's files (what a commit of the working tree would hold), in a directory of its own."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout  # fmt: skip
    copy = tmp_path / "repo"
    for name in filter(None, listed.decode().split("\0")):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    return copy


def test_demo_fails_naming_the_instance_when_the_bootstrap_exits_at_once(repo_copy):
    if not namespaces_available():
        pytest.skip("the local stack needs root and network namespaces")
    bootstrap = repo_copy / "deploy" / "bootstrap.sh"
    text = bootstrap.read_text()
    bootstrap.write_text(text.replace("set -euo pipefail\n", "set -euo pipefail\nexit 0\n", 1))
    env = {**os.environ, "PYTHONPATH": str(repo_copy)}
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "sumpipe.ops.cli", "demo", "--file", str(SAMPLE)],
        cwd=repo_copy, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "booted without publishing its host key" in output, output
    assert not (repo_copy / ".sumpipe" / "local" / "stack.pid").exists()
