"""The local stack's fallback for machines without root or network namespaces: each worker host is a
real sshd listening at its instance's private IP, a loopback address (the stack's subnet lies in
127.0.0.0/8), on an unprivileged port. Forced with `hosts="loopback"`, so it runs as root too;
one test runs the whole stack as an unprivileged user, as a user without root would."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import os
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from sumpipe import keys
from sumpipe.aws import client
from sumpipe.flow.remote import HostUnreachable, wait_port_open
from sumpipe.local import stack
from sumpipe.local.hosts import SSH_USER, pid_alive, read_pid
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, RunningStack, _free_loopback_subnet, ec2_state, stack_up, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Every job this module submits to the loopback stack: none may leave a process behind.
JOB_IDS: list[str] = []


def _processes_mentioning(*needles: str) -> list[str]:
    """`pid user args` of live processes whose command line contains one of the needles."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,user,args"], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines()[1:] if any(needle in line for needle in needles)]


def _runner_processes(job_id: str) -> list[str]:
    return [line for line in _processes_mentioning(job_id) if "runner" in line]


@pytest.fixture(scope="module")
def loopback_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    seed = f"{__name__}-{os.getpid()}"
    config = stack.StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"),
        hosts="loopback",
        prefix="l" + hashlib.sha256(seed.encode()).hexdigest()[:6],
        subnet=_free_loopback_subnet(seed),
        watchdog_interval_s=0.5,
    )
    with stack_up(config) as (running, info):
        assert info.hosts == "loopback"
        yield running


def _submit(target: operator.Stack, path: Path) -> str:
    job_id = operator.submit_file(target, path).job_id
    JOB_IDS.append(job_id)
    return job_id


def _big_upload(directory: Path) -> Path:
    """The sample 30 times over (distinct ids): a job long enough to be caught while it runs."""
    rows = pd.read_csv(SAMPLE)
    big = pd.concat([rows] * 30, ignore_index=True)
    big["Id"] = range(1, len(big) + 1)
    path = directory / "reviews x30.csv"
    big.to_csv(path, index=False)
    return path


def _host_address(target: operator.Stack) -> tuple[str, int]:
    """(ip, port) of the worker's sshd, from the known_hosts line the host published: `[ip]:port key`."""
    name = client("ssm").get_parameter(Name=target.outputs["KnownHostsParameterName"])["Parameter"]["Value"]
    ip, port = name.split()[0].strip("[").split("]:")
    return ip, int(port)


def _instance(target: operator.Stack) -> dict:
    instance_id = target.outputs["WorkerInstanceIds"].split(",")[0]
    return client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def test_a_reviews_csv_becomes_summary_csv_through_loopback_hosts(loopback_stack, tmp_path):
    target = loopback_stack.target
    instance = _instance(target)
    ip = ipaddress.ip_address(instance["PrivateIpAddress"])
    assert ip.is_loopback and ip in ipaddress.ip_network(loopback_stack.config.subnet)
    assert "PublicIpAddress" not in instance
    rows = pd.read_csv(SAMPLE).head(60)
    upload = tmp_path / "reviews head.csv"
    rows.to_csv(upload, index=False)

    started = time.monotonic()
    job = operator.wait_for_job(target, _submit(target, upload), 60)
    elapsed = time.monotonic() - started

    assert job.state == "succeeded", job.error  # the ledger's record
    summary = pd.read_csv(io.BytesIO(operator.output_object(target, job.job_id, keys.SUMMARY)),
                          keep_default_na=False)
    assert list(summary["id"]) == list(rows["Id"])
    assert (summary["status"] == "ok").sum() > 30
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")
    # Stopping the instance stopped its host: nothing listens at its address any more.
    host_ip, port = _host_address(target)
    assert host_ip == str(ip) and port > 1024  # an unprivileged port: no root needed
    with pytest.raises(HostUnreachable):
        wait_port_open(host_ip, port, timeout=0.2)
    assert _processes_mentioning(str(loopback_stack.hosts_dir)) == []  # its sshd
    assert _runner_processes(job.job_id) == []
    print(f"loopback hosts: upload -> summary.csv and ledger succeeded in {elapsed:.2f}s")


def test_stopping_the_instance_kills_the_detached_job(loopback_stack, tmp_path):
    """The runner's job detaches from the SSH session (its own session, reparented away from sshd);
    stopping the instance must still end it, as a stopped EC2 instance ends every process."""
    target = loopback_stack.target
    job_id = _submit(target, _big_upload(tmp_path))
    running = wait_until(lambda: _runner_processes(job_id), 30, "the detached runner job")
    assert any(f" run {job_id}" in line for line in running)
    # Started and handed back to the worker (the runner's process appears a moment before that).
    wait_until(lambda: target.ledger().get_job(job_id).state == "running", 30, "the job marked running")
    client("ec2").stop_instances(InstanceIds=[_instance(target)["InstanceId"]])

    wait_until(lambda: _runner_processes(job_id) == [], 10, "the detached job to be killed")
    assert target.ledger().get_job(job_id).state == "running"  # it never finished


def test_down_leaves_no_process_of_the_stack(loopback_stack, tmp_path):
    state_dir, hosts_dir = loopback_stack.config.state_dir, loopback_stack.hosts_dir
    moto_pid = read_pid(state_dir / "moto.pid")
    assert moto_pid is not None and pid_alive(moto_pid)
    job_id = _submit(loopback_stack.target, _big_upload(tmp_path))  # a host running a detached job
    wait_until(lambda: _runner_processes(job_id), 30, "the detached runner job")
    assert _processes_mentioning(str(hosts_dir))  # its sshd

    stack.down(state_dir)

    assert _processes_mentioning(str(hosts_dir), str(state_dir), *JOB_IDS) == []
    assert not pid_alive(moto_pid)
    assert not hosts_dir.exists()


def _unprivileged_python(user: str) -> tuple[list[str], dict[str, str]] | None:
    """How `user` can run this project: our interpreter when it can reach it, else the same-version
    system interpreter on our venv's packages; None when neither works."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = Path(sys.prefix) / "lib" / version / "site-packages"
    candidates = [
        ([sys.executable], {}),
        ([f"/usr/bin/{version}"], {"PYTHONPATH": f"{REPO_ROOT}:{site_packages}"}),
    ]
    for argv, env in candidates:
        probe = ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in env.items()], *argv,
                 "-c", "import sumpipe.local.stack, moto, summarizer"]
        if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
            return argv, env
    return None


def test_an_unprivileged_user_runs_the_whole_stack(monkeypatch):
    """What `sumpipe local up` does for a user without root: here the hosts' own login user runs
    the stack, so its sshd can only log in that same user."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the tests above ran the stack as this user")
    try:
        uid = pwd.getpwnam(SSH_USER).pw_uid
    except KeyError:
        pytest.skip(f"no {SSH_USER} user (the loopback_stack fixture creates it when run as root)")
    python = _unprivileged_python(SSH_USER)
    if python is None:
        pytest.skip(f"{SSH_USER} can run neither {sys.executable} (under a private home?) nor a system "
                    "python of the same version with the venv's packages")
    argv, env = python
    workdir = Path(tempfile.mkdtemp(prefix="sumpipe-nonroot-"))
    os.chown(workdir, uid, -1)
    state_dir = workdir / "stack"
    subnet = _free_loopback_subnet(f"{__name__}-nonroot-{os.getpid()}")

    def sumpipe_as_user(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", SSH_USER, "--", "env", *[f"{k}={v}" for k, v in env.items()],
                   *argv, "-m", "sumpipe.ops.cli", *args, "--dir", str(state_dir)]
        return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=120)

    try:
        up = sumpipe_as_user("local", "up", "--hosts", "auto", "--subnet", subnet)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "loopback worker hosts" in up.stdout  # auto: no namespaces without root
        for name, value in stack.read_env_file(state_dir / "env").items():
            monkeypatch.setenv(name, value)
        target = operator.Stack(stack.info(state_dir).outputs)
        job = operator.wait_for_job(target, operator.submit_file(target, SAMPLE).job_id, 60)
        assert job.state == "succeeded", job.error
        # The daemon and the job's runner (its log on the host) ran as the unprivileged user.
        daemon = read_pid(state_dir / "stack.pid")
        assert daemon is not None and Path(f"/proc/{daemon}").stat().st_uid == uid
        hosts_dir = Path((state_dir / "hosts-dir").read_text().strip())
        assert (hosts_dir / "runner-logs" / f"{job.job_id}.jsonl").stat().st_uid == uid
    finally:
        down = sumpipe_as_user("local", "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert _processes_mentioning(str(workdir)) == []
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
