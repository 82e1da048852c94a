"""A broken chain is never waited on silently: `sumpipe submit --wait` (the code path `sumpipe demo`
waits on) stops, non-zero, naming the failing function and its last error, or saying no job was
recorded; and a message that keeps failing ends in its dead-letter queue after the queue's
maxReceiveCount, as on AWS, instead of coming back forever.

The chain is broken the way a `sumpipe deploy` of an edited iam/trigger.json breaks it: the trigger
role's policy in the running stack loses an action (test_iam_enforced.role_without)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sumpipe.aws import client
from sumpipe.flow import chain
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, wait_until
from .test_iam_enforced import role_without

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"
SUMPIPE = str(Path(sys.executable).with_name("sumpipe"))
STACK_SETTINGS = {"SUMPIPE_IDLE_GRACE_S": "1"}


def submit_wait(key: str, *flags: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`sumpipe submit --wait` as a user runs it (the stack's endpoint is in the environment), and
    how long it took from its start (which is when it uploads)."""
    started = time.monotonic()
    done = subprocess.run(
        [SUMPIPE, "submit", str(SAMPLE), "--key", key, "--wait", "--timeout", "900", *flags],
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done, time.monotonic() - started


def max_receive_count(queue_url: str) -> int:
    """How often SQS delivers the queue's messages before dead-lettering them (the template's)."""
    attributes = client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    return int(json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"])


def trigger_failure_lines(target: operator.Stack, key: str) -> list[dict]:
    group = chain.log_group(target.outputs["TriggerFunctionName"])
    events = client("logs").filter_log_events(logGroupName=group, filterPattern='"record_failed"')["events"]
    lines = [json.loads(e["message"]) for e in events]
    return [line for line in lines if line.get("object_key") == key]


def test_submit_wait_stops_naming_the_trigger_and_its_denial(running_stack):
    """The trigger may not read the input (s3:GetObject gone): HeadObject is refused with 403,
    every time. The wait ends well within 3 minutes of the upload, and says so in one line."""
    key = f"denied-{uuid.uuid4().hex}.csv"
    with role_without(running_stack, "TriggerRole", "trigger.json", "s3:GetObject"):
        done, took_s = submit_wait(key)
    assert done.returncode == 1, (done.stdout, done.stderr)
    (verdict,) = [line for line in done.stderr.splitlines() if line.startswith("sumpipe submit: ")]
    deliveries = max_receive_count(running_stack.target.outputs["InputEventsQueueUrl"])
    assert f"trigger failed {deliveries} times on {key}: HeadObject 403 Forbidden" in verdict, verdict
    assert "see: sumpipe logs --function trigger" in verdict, verdict
    assert took_s < 180, f"took {took_s:.0f}s"
    # The failures were reported as they came, before the verdict.
    assert "so far): HeadObject 403 Forbidden" in done.stderr.split("sumpipe submit: ")[0], done.stderr
    # ... and the command the verdict points to shows them.
    shown = subprocess.run(
        [SUMPIPE, "logs", "--function", "trigger", "--minutes", "30"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert any(key in line and "HeadObject 403 Forbidden" in line for line in shown.stdout.splitlines())


def test_a_message_that_keeps_failing_ends_in_the_dead_letter_queue(running_stack):
    """Delivered maxReceiveCount times (the queue's RedrivePolicy, from the template), then moved to
    the dead-letter queue, and not delivered again."""
    target = running_stack.target
    sqs = client("sqs")
    queue, dlq = target.outputs["InputEventsQueueUrl"], target.outputs["InputEventsDeadLetterQueueUrl"]
    deliveries = max_receive_count(queue)
    key = f"dead-letter-{uuid.uuid4().hex}.csv"
    with role_without(running_stack, "TriggerRole", "trigger.json", "s3:GetObject"):
        submitted = operator.submit_file(target, SAMPLE, key)
        upload = submitted.upload
        wait_until(lambda: chain.dead_lettered(sqs, dlq, upload), timeout_s=150, what="the dead-letter queue")
        failures = trigger_failure_lines(target, key)
        assert [line["receive_count"] for line in failures] == list(range(1, deliveries + 1))
        # Gone from its queue, so never delivered again, however long the role stays broken.
        visible = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        assert visible == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
        time.sleep(5)
        assert len(trigger_failure_lines(target, key)) == deliveries


def test_submit_wait_stops_when_no_job_is_recorded(running_stack, tmp_path):
    """The input bucket sends no events (its notification configuration is gone, as after a
    hand-made change to the bucket): the trigger is never invoked, so nothing is logged or
    dead-lettered; the wait ends once the bound passes with no job recorded."""
    target = running_stack.target
    s3, bucket = client("s3"), target.input_bucket
    configuration = s3.get_bucket_notification_configuration(Bucket=bucket)
    configuration.pop("ResponseMetadata", None)
    assert configuration.get("QueueConfigurations"), configuration
    key = f"unnotified-{uuid.uuid4().hex}.csv"
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    try:
        done, _ = submit_wait(key, "--record-timeout", "20")
    finally:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)
    assert done.returncode == 1, (done.stdout, done.stderr)
    (verdict,) = [line for line in done.stderr.splitlines() if line.startswith("sumpipe submit: ")]
    assert f"no job recorded for {key} within 20s of the upload" in verdict, verdict
    assert "see: sumpipe logs --function trigger" in verdict, verdict
    assert not [job for job in target.ledger().list_jobs() if job.input_key == key]
    # With the events back, the chain works again.
    again, _ = submit_wait(f"notified-{uuid.uuid4().hex}.csv", "-o", str(tmp_path / "summary.csv"))
    assert again.returncode == 0, again.stderr
