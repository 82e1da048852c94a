"""The local stack enforces each role's IAM policy: take one action the flow needs away from a role
and the chain fails there, saying which action was refused.

The role's policy in the running stack is replaced by its own document minus that action (the
same change a `sumpipe deploy` of an edited iam/<role>.json makes), and restored afterwards. The
emulator evaluates a role's policies at every request, so the change applies at once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sumpipe import keys
from sumpipe.aws import client
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, ec2_state, run_job, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"
IAM_DIR = Path(__file__).resolve().parents[2] / "iam"
STACK_SETTINGS = {
    "SUMPIPE_CONNECT_TIMEOUT_S": "1",
    "SUMPIPE_CONNECT_ATTEMPTS": "2",
    "SUMPIPE_INSTANCE_READY_TIMEOUT_S": "10",
    "SUMPIPE_IDLE_GRACE_S": "1",
}


@contextmanager
def role_without(running_stack, role_logical_id: str, policy_file: str, action: str) -> Iterator[None]:
    """The role's inline policy without `action` while the block runs."""
    source = json.loads((IAM_DIR / policy_file).read_text())
    assert any(action in s["Action"] for s in source["Statement"]), f"{policy_file} doesn't grant {action}"
    iam = client("iam")
    resources = client("cloudformation").list_stack_resources(StackName=running_stack.config.stack_name)
    (role,) = [
        r["PhysicalResourceId"]
        for r in resources["StackResourceSummaries"]
        if r["LogicalResourceId"] == role_logical_id
    ]
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    original = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    reduced = {
        **original,
        "Statement": [
            {**s, "Action": [a for a in s["Action"] if a != action]}
            for s in original["Statement"]
            if s["Action"] != [action]
        ],
    }
    iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(reduced))
    try:
        yield
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(original))


def jobs_listing() -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("sumpipe")), "jobs"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_failed_naming(target, job, step: str, *names: str) -> None:
    assert job.state == "failed", job
    for name in names:
        assert name in job.error, job.error
    report = json.loads(operator.output_object(target, job.job_id, keys.ERROR))
    assert report["step"] == step and report["reason"] == job.error
    line = next(line for line in jobs_listing().splitlines() if line.startswith(job.job_id))
    assert "failed" in line and all(name in line for name in names), line


@pytest.mark.parametrize(
    ("role", "policy_file", "action", "step", "named"),
    [
        # The instance can't read the uploaded object (the runner reads the exact version the
        # job was made for, which needs s3:GetObjectVersion): the download is refused.
        ("InstanceRole", "instance.json", "s3:GetObjectVersion", "runner", ("AccessDenied", "GetObject")),
        # ... can't read its job from the ledger: failed at once, not left running.
        ("InstanceRole", "instance.json", "dynamodb:GetItem", "runner", ("AccessDenied", "dynamodb:GetItem")),
        # The trigger can't start the stopped worker.
        ("TriggerRole", "trigger.json", "ec2:StartInstances", "trigger", ("ec2:StartInstances",)),
        # The worker can't read the pipeline's SSH key.
        ("WorkerRole", "worker.json", "secretsmanager:GetSecretValue", "worker", ("GetSecretValue",)),
    ],
    ids=["instance-s3", "instance-ledger", "trigger", "worker"],
)
def test_a_role_missing_an_action_fails_the_job_naming_the_refusal(
    running_stack, role, policy_file, action, step, named
):
    target = running_stack.target
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop between jobs")
    with role_without(running_stack, role, policy_file, action):
        job = run_job(target, SAMPLE, key=f"denied-{uuid.uuid4().hex}.csv", timeout_s=60)
    assert_failed_naming(target, job, step, *named)
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop after the failure")
    # With the action given back, the same chain works.
    assert run_job(target, SAMPLE, key=f"allowed-{uuid.uuid4().hex}.csv", timeout_s=60).state == "succeeded"


def test_stop_ec2_without_stop_instances_keeps_the_job_and_says_why_the_instance_runs_on(running_stack):
    """The job's outcome doesn't depend on the stop; the refused stop is logged under the job and
    its claim released, so the idle sweep stops the instance once the role may again."""
    target = running_stack.target
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop between jobs")
    with role_without(running_stack, "StopRole", "stop_ec2.json", "ec2:StopInstances"):
        job = run_job(target, SAMPLE, key=f"no-stop-{uuid.uuid4().hex}.csv", timeout_s=60)
        assert job.state == "succeeded"

        def refused_stop() -> list:
            lines = operator.job_log_lines(target, job.job_id)
            return [ln for ln in lines if ln.record.get("event") == "instance_stop_failed"]

        (line,) = wait_until(refused_stop, what="the refused stop in the job's log")[:1]
        assert "ec2:StopInstances" in line.record["error"], line.record
        assert ec2_state(target) == "running"
    wait_until(lambda: ec2_state(target) == "stopped", timeout_s=30, what="the idle sweep to stop it")
