"""Failure paths through the real chain: every one ends `failed` with a reason, and the instance
still stops. Short deadline and SSH timeouts so the waits are seconds."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sumpipe import keys
from sumpipe.aws import client
from sumpipe.local.hosts import generate_ed25519_keypair, namespace_pids
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, ec2_state, run_job, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"
# Long enough that the host-down job below fails through the worker's bounded retries well before
# the watchdog's deadline would fail it, even on a loaded 2-core machine.
DEADLINE_S = 15
STACK_SETTINGS = {
    "SUMPIPE_JOB_DEADLINE_S": str(DEADLINE_S),
    "SUMPIPE_CONNECT_TIMEOUT_S": "0.5",
    "SUMPIPE_CONNECT_ATTEMPTS": "3",
    "SUMPIPE_INSTANCE_READY_TIMEOUT_S": "5",
}


def _job_pids(namespace: str, job_id: str, is_program: Callable[[list[bytes]], bool]) -> list[int]:
    found = []
    for pid in namespace_pids(namespace):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if is_program(argv) and any(job_id.encode() in arg for arg in argv):
            found.append(pid)
    return found


def runner_pids(namespace: str, job_id: str) -> list[int]:
    return _job_pids(
        namespace,
        job_id,
        lambda argv: any(b"sumpipe.instance.runner" in a or b"sumpipe-runner" in a for a in argv),
    )


def summarizer_pids(namespace: str, job_id: str) -> list[int]:
    """The `summarize` child the runner starts on the job's input (its path carries the job id):
    `python .../bin/summarize INPUT ...` (the console script) or `python -m summarizer.cli INPUT ...`."""

    def is_summarizer(argv: list[bytes]) -> bool:
        return b"summarizer.cli" in argv or any(Path(a.decode()).name == "summarize" for a in argv[:2])

    return _job_pids(namespace, job_id, is_summarizer)


def test_a_hung_job_is_failed_by_the_watchdog_and_an_unreachable_host_fails_after_bounded_retries(
    running_stack,
):
    target = running_stack.target
    hung = operator.submit_file(target, SAMPLE, key=f"hung-{uuid.uuid4().hex}.csv")
    wait_until(lambda: runner_pids(running_stack.host_namespace, hung.job_id), what="the runner to start")
    for pid in runner_pids(running_stack.host_namespace, hung.job_id):
        os.kill(pid, signal.SIGSTOP)

    # The instance stays up for the hung job; now its sshd stops answering (it accepts TCP, never
    # says hello), like a host that is down or wedged.
    sshd_pid = int((running_stack.hosts_dir / running_stack.host_namespace / "sshd.pid").read_text())
    os.kill(sshd_pid, signal.SIGSTOP)
    try:
        down = run_job(target, SAMPLE, key=f"host-down-{uuid.uuid4().hex}.csv", timeout_s=30)
    finally:
        os.kill(sshd_pid, signal.SIGCONT)
    assert down.state == "failed"
    assert "after 3 attempts" in down.error, down.error
    report = json.loads(operator.output_object(target, down.job_id, keys.ERROR))
    assert report["step"] == "worker" and report["reason"] == down.error
    assert ec2_state(target) == "running"  # the hung job is still in flight on it

    job = operator.wait_for_job(target, hung.job_id, DEADLINE_S + 20)
    assert job.state == "failed" and job.error == "deadline exceeded"
    report = json.loads(operator.output_object(target, hung.job_id, keys.ERROR))
    assert report["step"] == "watchdog"
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")
    wait_until(lambda: not runner_pids(running_stack.host_namespace, hung.job_id), what="the runner killed")


def test_a_changed_host_key_fails_the_job_without_retrying_and_the_instance_stops(running_stack):
    target = running_stack.target
    ssm = client("ssm")
    name = target.outputs["KnownHostsParameterName"]
    # The instance up and done booting first: it publishes its real key at every boot, which would
    # otherwise race the impostor put below.
    instance_id = target.outputs["WorkerInstanceIds"].split(",")[0]
    booted = running_stack.hosts_dir / running_stack.host_namespace / "booted"  # (gone once it stops)
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")
    wait_until(lambda: not booted.exists(), what="its host to go down (the mirror lags EC2 a little)")
    client("ec2").start_instances(InstanceIds=[instance_id])
    wait_until(booted.exists, what="the instance to boot")
    original = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    host, _, _, instance_id = original.split()
    _, impostor_key = generate_ed25519_keypair()
    # Published as the instance would publish it, under its id: only the key is another.
    impostor = f"{host} {impostor_key} {instance_id}\n"
    ssm.put_parameter(Name=name, Value=impostor, Type="String", Overwrite=True)
    try:
        job = run_job(target, SAMPLE, key=f"host-key-{uuid.uuid4().hex}.csv", timeout_s=30)
    finally:
        ssm.put_parameter(Name=name, Value=original, Type="String", Overwrite=True)

    assert job.state == "failed"
    assert "host key" in job.error and "changed" in job.error, job.error
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")
    lines = operator.job_log_lines(target, job.job_id)
    # No retry on a bad key. (A connect that timed out first, on a loaded machine, is retried: fine.)
    retried = [ln.record for ln in lines if ln.record["message"] == "ssh connect failed"]
    assert not [r for r in retried if "key" in str(r.get("error", "")).lower()], retried


def test_a_killed_summarizer_fails_the_job_at_once_with_a_report_and_the_instance_stops(running_stack):
    target = running_stack.target
    submitted = operator.submit_file(target, SAMPLE, key=f"oom-{uuid.uuid4().hex}.csv")

    def summarizer_started() -> list[int]:
        job = target.ledger().get_job(submitted.job_id)
        assert job is None or not job.terminal, f"the job ended first: {job}"
        return summarizer_pids(running_stack.host_namespace, submitted.job_id)

    for pid in wait_until(summarizer_started, what="the summarizer to start"):
        os.kill(pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does

    # Failed by the runner that survived it, well before the watchdog's deadline would.
    job = operator.wait_for_job(target, submitted.job_id, DEADLINE_S - 5)
    assert job.state == "failed"
    assert job.error == "the summarizer was killed by SIGKILL (out of memory?)", job.error
    report = json.loads(operator.output_object(target, job.job_id, keys.ERROR))
    assert report["step"] == "runner" and report["reason"] == job.error
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")
