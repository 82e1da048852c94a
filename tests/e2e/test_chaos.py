"""Chaos on the local stack: two workers, 30 uploads staggered over 20 s, one of their events delivered
3 more times, one runner killed with SIGKILL mid-job, and every Lambda execution environment killed
with SIGKILL mid-flight (the service starts new ones). Sampled all along: no instance is ever stopped
under a job it runs. At the end: one job per upload, every job finished, exactly one of summary.csv
and error.json per job, every instance stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from sumpipe import keys
from sumpipe.aws import client
from sumpipe.local import stack
from sumpipe.local.hosts import namespace_pids, pid_alive
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
UPLOADS = 30
SPREAD_S = 20.0
WORKERS = 2
# Short enough that the job whose runner is killed is failed by the watchdog within the test; long
# enough for a job whose trigger was killed to be resumed when its batch comes back, past the local
# start lease (stack.LOCAL_START_LEASE_S), and finish.
STACK_SETTINGS = {"SUMPIPE_JOB_DEADLINE_S": "90", "SUMPIPE_IDLE_GRACE_S": "5"}
# The upload after which the environments are killed: mid-flight, with jobs starting and running.
KILL_RUNTIME_AFTER = 12
WATCHDOG_INTERVAL_S = 1.0
ROWS = (DATA / "reviews_sample.csv").read_text().splitlines()


def _python_runner_pids(namespace: str) -> dict[int, str]:
    """The runner processes (not their `timeout` wrappers) on a host: pid -> job id."""
    found = {}
    for pid in namespace_pids(namespace):
        try:
            argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if argv and Path(argv[0]).name != "timeout" and "run" in argv and any("sumpipe" in a for a in argv):
            found[pid] = argv[-1]
    return found


def _environment_pids(state_dir: Path) -> dict[str, int]:
    """Each Lambda execution environment's pid, by its pid file's name (sumpipe.local.runtime)."""
    found = {}
    for pid_file in (state_dir / stack.LAMBDA_PIDS).glob("*.pid"):
        with contextlib.suppress(FileNotFoundError, ValueError):
            found[pid_file.stem] = int(pid_file.read_text())
    return found


def _log_lines(group: str, phrase: str) -> int:
    events = client("logs").filter_log_events(logGroupName=group).get("events", [])
    return sum(phrase in event["message"] for event in events)


def _s3_event(bucket: str, key: str) -> dict:
    head = client("s3").head_object(Bucket=bucket, Key=key)
    obj = {
        "key": key,
        "versionId": head["VersionId"],
        "eTag": head["ETag"].strip('"'),
        "size": head["ContentLength"],
    }
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": bucket}, "object": obj}}  # fmt: skip
    return {"Records": [record]}


def test_thirty_staggered_uploads_with_duplicates_and_a_killed_runner(running_stack, tmp_path):
    target = running_stack.target
    instance_ids = target.outputs["WorkerInstanceIds"].split(",")
    assert len(instance_ids) == WORKERS
    namespaces = [f"{running_stack.config.prefix}-h{i}" for i in range(WORKERS)]
    ec2, ledger = client("ec2"), target.ledger()
    uploads: list[operator.Submitted] = []
    violations: list[str] = []
    killed: list[str] = []
    killed_environments: dict[str, int] = {}
    done = threading.Event()

    def upload_all() -> None:
        for n in range(UPLOADS):
            # A different table each time (a different object version is a different job anyway).
            path = tmp_path / f"chaos-{n}.csv"
            path.write_text("\n".join([ROWS[0], *ROWS[1 + n * 5 : 6 + n * 5]]) + "\n")
            uploads.append(operator.submit_file(target, path, f"chaos-{uuid.uuid4().hex}-{n}.csv"))
            if n == 3:  # at-least-once delivery: this event comes 3 more times
                event = _s3_event(target.input_bucket, uploads[-1].key)
                for _ in range(3):
                    client("sqs").send_message(
                        QueueUrl=target.outputs["InputEventsQueueUrl"], MessageBody=json.dumps(event)
                    )
            time.sleep(SPREAD_S / UPLOADS)

    def kill_one_runner() -> None:
        while not done.is_set() and not killed:
            for namespace in namespaces:
                for pid, job_id in _python_runner_pids(namespace).items():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(job_id)
                    return
            time.sleep(0.05)

    def kill_the_lambda_runtime() -> None:
        while not done.is_set() and len(uploads) < KILL_RUNTIME_AFTER:
            time.sleep(0.05)
        for name, pid in _environment_pids(running_stack.config.state_dir).items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed_environments[name] = pid

    samples: list[float] = []

    def sample() -> None:
        """No instance is stopped (or stopping) while a job that was running on it before runs on."""
        while not done.is_set():
            samples.append(time.time())
            at = time.time()
            reservations = ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
            states = {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}
            for job in ledger.list_jobs():
                down = states.get(job.instance_id or "") in ("stopping", "stopped")
                if job.state == "running" and down and job.started_at and job.started_at < at:
                    violations.append(f"{job.job_id} running on {job.instance_id}, {states[job.instance_id]}")
            time.sleep(0.2)

    threads = [
        threading.Thread(target=f) for f in (upload_all, kill_one_runner, kill_the_lambda_runtime, sample)
    ]
    for thread in threads:
        thread.start()
    try:
        threads[0].join()
        wait_until(lambda: len(uploads) == UPLOADS, 5, "the uploads")
        jobs = [operator.wait_for_job(target, upload.job_id, 150) for upload in uploads]
    finally:
        done.set()
        for thread in threads:
            thread.join()

    outcomes = [job.state for job in jobs]
    trigger_group = f"/aws/lambda/{target.outputs['TriggerFunctionName']}"
    print(
        f"chaos: {UPLOADS} uploads over {SPREAD_S:.0f} s on {WORKERS} workers, 3 duplicate deliveries, "
        f"runner of {killed} killed, {len(killed_environments)} Lambda environments killed after upload "
        f"{KILL_RUNTIME_AFTER} ({_log_lines(trigger_group, 'resuming a job left starting')} jobs left "
        f"starting resumed); {outcomes.count('succeeded')} succeeded, {outcomes.count('failed')} failed; "
        f"{len(samples)} samples, {len(violations)} violations"
    )
    assert violations == []
    # Every environment was killed, and the service started a new one in its place.
    state_dir = running_stack.config.state_dir
    pid_files = {path.stem for path in (state_dir / stack.LAMBDA_PIDS).glob("*.pid")}
    assert killed_environments and set(killed_environments) == pid_files

    def all_restarted() -> bool:
        pids = _environment_pids(state_dir)
        return all(
            pids.get(name, pid) != pid and pid_alive(pids[name]) for name, pid in killed_environments.items()
        )

    wait_until(all_restarted, 30, "new environments in place of the killed ones")
    # One job per upload (the duplicated event included), each finished.
    mine = {u.job_id for u in uploads}
    assert len(mine) == UPLOADS
    assert {j.input_key for j in ledger.list_jobs() if j.job_id in mine} == {u.key for u in uploads}
    assert all(job.terminal for job in jobs)
    # Exactly one finishing file per job.
    s3 = client("s3")
    for job in jobs:
        listed = s3.list_objects_v2(Bucket=target.output_bucket, Prefix=f"jobs/{job.job_id}/").get(
            "Contents", []
        )
        names = {item["Key"].rsplit("/", 1)[-1] for item in listed}
        assert len(names & {keys.SUMMARY, keys.ERROR}) == 1, (job.job_id, job.state, names)
        assert (keys.SUMMARY in names) == (job.state == "succeeded")
    # The killed runner's job failed (the watchdog, at its deadline); all the others succeeded, those
    # whose invocations died with their environments included.
    assert len(killed) == 1
    assert [j.job_id for j in jobs if j.state == "failed"] == killed
    # Every instance stops once idle.
    wait_until(
        lambda: all(
            i["State"]["Name"] == "stopped"
            for r in ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
            for i in r["Instances"]
        ),
        60,
        "every instance to stop",
    )
