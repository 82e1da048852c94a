"""A hung job ends on the instance itself at its deadline, with no watchdog at all: the runner lives
under a hard limit (`timeout`), turns it into a failure report, and the instance then stops."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

from sumpipe import keys
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, ec2_state, wait_until
from .test_failures import summarizer_pids

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DEADLINE_S = 8
STACK_SETTINGS = {"SUMPIPE_JOB_DEADLINE_S": str(DEADLINE_S)}
WATCHDOG_INTERVAL_S = 0  # no watchdog: nothing but the instance can end the job


def test_a_hung_job_is_failed_on_the_instance_at_its_deadline_without_the_watchdog(running_stack):
    target = running_stack.target
    submitted = operator.submit_file(target, DATA / "reviews_sample.csv", key=f"hang-{uuid.uuid4().hex}.csv")
    pids = wait_until(
        lambda: summarizer_pids(running_stack.host_namespace, submitted.job_id),
        what="the summarizer to start",
    )
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # hung: alive, doing nothing, forever

    job = operator.wait_for_job(target, submitted.job_id, DEADLINE_S + 40)
    assert job.state == "failed"
    assert (
        job.error == f"stopped on the instance at the job deadline ({DEADLINE_S} s, SUMPIPE_JOB_DEADLINE_S)"
    )
    report = json.loads(operator.output_object(target, job.job_id, keys.ERROR))
    assert report["step"] == "runner"
    wait_until(lambda: ec2_state(target) == "stopped", what="the instance to stop")
    assert not summarizer_pids(running_stack.host_namespace, submitted.job_id)
