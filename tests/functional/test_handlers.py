"""The three Lambda handlers, called with the events AWS sends, against moto (in-process).

Only paths that never open a connection to an instance are here: moto invents instance addresses,
and connecting to them is forbidden. The SSH paths run in tests/e2e against real sshd."""

from __future__ import annotations

import json
import threading
import time
import uuid
from types import SimpleNamespace
from urllib.parse import quote_plus

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws
from pipeline_aws import pipeline_aws

from lambdas.stop_ec2.handler import lambda_handler as stop_ec2
from lambdas.trigger.handler import lambda_handler as trigger
from lambdas.worker.handler import lambda_handler as worker
from sumpipe import keys
from sumpipe.flow import ec2, pipeline
from sumpipe.ledger import Job
from sumpipe.settings import get_settings

REGION = "us-east-1"
SCHEDULED = {
    "version": "0",
    "id": "1",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2024-01-01T00:00:00Z",
    "region": REGION,
    "resources": [],
    "detail": {},
}
CONTEXT = SimpleNamespace(
    function_name="test", aws_request_id="req-1", invoked_function_arn="arn", memory_limit_in_mb=128
)


@pytest.fixture
def aws(monkeypatch):
    with mock_aws():  # (the queue first: its URL is a setting)
        queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")["QueueUrl"]
        with pipeline_aws(monkeypatch, JOB_QUEUE_URL=queue, JOB_DEADLINE_S="60") as aws:
            aws.s3.put_bucket_versioning(Bucket="in-bucket", VersioningConfiguration={"Status": "Enabled"})
            yield aws


def s3_event(bucket: str, key: str, version: str | None, etag: str) -> dict:
    obj = {"key": quote_plus(key), "eTag": etag, "size": 1, **({"versionId": version} if version else {})}
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": obj},
            }
        ]
    }


def sqs_event(*bodies: dict) -> dict:
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "r",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:q",
                "awsRegion": REGION,
            }
            for body in bodies
        ]
    }


def upload(aws, key: str) -> dict:
    put = aws.s3.put_object(Bucket="in-bucket", Key=key, Body=b"Id,Text\n1,Hello.\n")
    return s3_event("in-bucket", key, put["VersionId"], put["ETag"].strip('"'))


def worker_instance(aws, state: str = "running", stack_name: str = "sumpipe") -> str:
    image = aws.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = aws.ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                # As CloudFormation tags the stack's workers (moto accepts the reserved aws: key).
                "Tags": [
                    {"Key": "sumpipe:role", "Value": "worker"},
                    {"Key": "aws:cloudformation:stack-name", "Value": stack_name},
                ],
            }
        ],
    )["Instances"][0]
    if state == "stopped":
        aws.ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    return instance["InstanceId"]


def state_of(aws, instance_id: str) -> str:
    return aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
        "Name"
    ]


def test_trigger_decodes_the_key_and_records_one_job_however_often_the_event_comes(aws):
    event = upload(aws, "dir/my reviews+1.csv")
    # No tagged instance: the job is recorded, then fails with the reason and a report.
    assert trigger(sqs_event(event, event), CONTEXT) == {"batchItemFailures": []}
    trigger(event, CONTEXT)  # the bare S3 event (S3 -> Lambda directly) works too

    jobs = aws.ledger.list_jobs()
    assert [(j.input_key, j.state) for j in jobs] == [("dir/my reviews+1.csv", "failed")]
    assert "no worker instance tagged sumpipe:role=worker" in jobs[0].error
    report = json.loads(
        aws.s3.get_object(Bucket="out-bucket", Key=keys.output_key(jobs[0].job_id, keys.ERROR))["Body"].read()
    )
    assert report["step"] == "trigger"


def test_trigger_ignores_events_of_other_buckets(aws):
    assert trigger(sqs_event(s3_event("out-bucket", "jobs/x/summary.csv", None, "e")), CONTEXT) == {
        "batchItemFailures": []
    }
    assert aws.ledger.list_jobs() == []


def test_a_record_that_raises_is_reported_alone_for_redelivery(aws, monkeypatch):
    good = upload(aws, "good.csv")
    bad = {
        "Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "in-bucket"}}}]
    }  # no object
    response = trigger(sqs_event(good, bad), CONTEXT)
    assert len(response["batchItemFailures"]) == 1
    assert [j.input_key for j in aws.ledger.list_jobs()] == ["good.csv"]


def running_job(aws, instance_id: str, key: str = "a.csv", deadline_at: float | None = None) -> Job:
    now = time.time()
    job = Job(
        job_id=keys.job_id("in-bucket", key, "v1"),
        input_bucket="in-bucket",
        input_key=key,
        version="v1",
        created_at=now,
        deadline_at=deadline_at or now + 60,
    )
    aws.ledger.create_job(job)
    aws.ledger.assign(job.job_id, instance_id)
    aws.ledger.mark_running(job.job_id)
    return job


def test_stop_ec2_finishes_the_job_and_stops_the_instance_only_when_the_last_one_ends(aws):
    instance_id = worker_instance(aws)
    first, second = running_job(aws, instance_id, "a.csv"), running_job(aws, instance_id, "b.csv")
    aws.s3.put_object(
        Bucket="out-bucket", Key=keys.output_key(first.job_id, keys.MANIFEST), Body=b'{"rows": 7}'
    )
    summary = s3_event("out-bucket", keys.output_key(first.job_id, keys.SUMMARY), None, "e")

    stop_ec2(sqs_event(summary, summary), CONTEXT)  # delivered twice: counted once
    assert aws.ledger.get_job(first.job_id).state == "succeeded"
    assert aws.ledger.get_job(first.job_id).rows == 7
    assert state_of(aws, instance_id) == "running"  # the second job still runs there

    aws.s3.put_object(
        Bucket="out-bucket", Key=keys.output_key(second.job_id, keys.ERROR), Body=b'{"reason": "boom"}'
    )
    stop_ec2(
        sqs_event(s3_event("out-bucket", keys.output_key(second.job_id, keys.ERROR), None, "e")), CONTEXT
    )
    done = aws.ledger.get_job(second.job_id)
    assert (done.state, done.error) == ("failed", "boom")
    assert aws.ledger.instance_load(instance_id).inflight == 0
    assert state_of(aws, instance_id) in ("stopping", "stopped")


def test_the_watchdog_fails_overdue_jobs_with_a_report_and_stops_their_instance(aws):
    instance_id = worker_instance(aws)
    job = running_job(aws, instance_id, deadline_at=time.time() - 1)
    stop_ec2(SCHEDULED, CONTEXT)

    failed = aws.ledger.get_job(job.job_id)
    assert (failed.state, failed.error) == ("failed", "deadline exceeded")
    report = json.loads(
        aws.s3.get_object(Bucket="out-bucket", Key=keys.output_key(job.job_id, keys.ERROR))["Body"].read()
    )
    assert report["step"] == "watchdog"
    assert state_of(aws, instance_id) in ("stopping", "stopped")


def test_the_watchdog_stops_a_worker_left_running_idle(aws, monkeypatch):
    monkeypatch.setenv("SUMPIPE_IDLE_GRACE_S", "0")
    get_settings.cache_clear()
    idle = worker_instance(aws)
    busy = worker_instance(aws)
    running_job(aws, busy)
    # Another stack's worker in the same region carries the same role tag: not ours to stop.
    foreign = worker_instance(aws, stack_name="another-stack")

    stop_ec2(SCHEDULED, CONTEXT)

    assert state_of(aws, idle) in ("stopping", "stopped")
    assert state_of(aws, busy) == "running"
    assert state_of(aws, foreign) == "running"


@pytest.mark.parametrize("size_in_event", [True, False], ids=["event-size", "head-object"])
def test_an_input_over_the_size_limit_is_refused_before_any_instance_starts(aws, monkeypatch, size_in_event):
    monkeypatch.setenv("SUMPIPE_MAX_INPUT_BYTES", "1000")
    get_settings.cache_clear()
    instance_id = worker_instance(aws, state="stopped")
    body = b"Id,Text\n" + b"1,Hello there.\n" * 200
    put = aws.s3.put_object(Bucket="in-bucket", Key="big.csv", Body=body)
    event = s3_event("in-bucket", "big.csv", put["VersionId"], put["ETag"].strip('"'))
    if size_in_event:
        event["Records"][0]["s3"]["object"]["size"] = len(body)
    else:  # an event without the size: the trigger asks S3
        del event["Records"][0]["s3"]["object"]["size"]

    assert trigger(sqs_event(event), CONTEXT) == {"batchItemFailures": []}

    (job,) = aws.ledger.list_jobs()
    assert job.state == "failed"
    assert f"input is {len(body):,} bytes, over the limit of 1,000 bytes" in job.error
    report = json.loads(
        aws.s3.get_object(Bucket="out-bucket", Key=keys.output_key(job.job_id, keys.ERROR))["Body"].read()
    )
    assert report["step"] == "trigger" and report["reason"] == job.error
    assert state_of(aws, instance_id) == "stopped"  # no instance was started for it


# -- interleavings: each race forced through a hook in the flow, no sleeps ----------------------------
# The SSM transport: making an instance ready then touches no address (moto's are invented).


def _queued_job_ids(aws) -> list[str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = get_settings().job_queue_url
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["job_id"] for m in messages]


def test_a_job_arriving_while_its_instance_is_being_stopped_waits_the_stop_out_and_restarts_it(
    aws, monkeypatch
):
    """A finishes, stop_ec2 claims the stop; before StopInstances, B's trigger runs. B must neither
    be counted on the instance being stopped nor be lost: it waits, then restarts the instance."""
    monkeypatch.setenv("SUMPIPE_TRANSPORT", "ssm")
    get_settings.cache_clear()
    instance_id = worker_instance(aws)
    first = running_job(aws, instance_id, "a.csv")
    aws.s3.put_object(Bucket="out-bucket", Key=keys.output_key(first.job_id, keys.MANIFEST), Body=b"{}")
    b_is_waiting = threading.Event()
    real_stop_made, real_stop = pipeline._stop_made, ec2.stop
    results: list[object] = []

    def stop_made(ledger, stopped_id):  # B's trigger, polling for the stop to be made
        b_is_waiting.set()
        return real_stop_made(ledger, stopped_id)

    def stop(client, stopped_id):  # stop_ec2 holds the claim: B's upload arrives now
        thread = threading.Thread(target=lambda: results.append(trigger(upload(aws, "b.csv"), CONTEXT)))
        thread.start()
        assert b_is_waiting.wait(30), "B's trigger never waited for the stop"
        assert aws.ledger.instance_load(stopped_id).inflight == 0  # B not counted on it
        results.append(thread)
        return real_stop(client, stopped_id)

    monkeypatch.setattr(pipeline, "_stop_made", stop_made)
    monkeypatch.setattr(ec2, "stop", stop)
    summary = s3_event("out-bucket", keys.output_key(first.job_id, keys.SUMMARY), None, "e")
    stop_ec2(sqs_event(summary), CONTEXT)
    thread = next(r for r in results if isinstance(r, threading.Thread))
    thread.join(30)

    (second,) = [j for j in aws.ledger.list_jobs() if j.input_key == "b.csv"]
    assert (second.state, second.instance_id) == ("starting", instance_id)
    assert aws.ledger.instance_load(instance_id).inflight == 1
    assert state_of(aws, instance_id) == "running"  # stopped for A, started again for B
    assert _queued_job_ids(aws) == [second.job_id]  # handed to the worker


def test_a_redelivered_event_resumes_a_job_its_trigger_left_starting_once_its_lease_ran_out(aws, monkeypatch):
    """The trigger assigned the job, then died (timeout, crash) before handing it on. The redelivered
    event must carry on with it, not take it for a duplicate; and only one redelivery does."""
    monkeypatch.setenv("SUMPIPE_TRANSPORT", "ssm")
    monkeypatch.setenv("SUMPIPE_START_LEASE_S", "420")
    get_settings.cache_clear()
    instance_id = worker_instance(aws)
    event = upload(aws, "a.csv")
    with monkeypatch.context() as dying:
        dying.setattr(pipeline, "hand_off", lambda *args, **kwargs: None)  # the trigger dies here
        trigger(event, CONTEXT)
    (job,) = aws.ledger.list_jobs()
    assert job.state == "starting" and _queued_job_ids(aws) == []

    trigger(event, CONTEXT)  # redelivered within the lease: its trigger may still be at work
    assert _queued_job_ids(aws) == []

    # Past the lease (as if 500 s later): this redelivery resumes it, the next one doesn't.
    later = time.time() + 500
    monkeypatch.setattr(pipeline.time, "time", lambda: later)
    trigger(event, CONTEXT)
    trigger(event, CONTEXT)
    assert _queued_job_ids(aws) == [job.job_id]
    assert aws.ledger.get_job(job.job_id).state == "starting"
    assert aws.ledger.instance_load(instance_id).inflight == 1  # counted once


def _job_starting_on(aws, instance_id: str, key: str = "a.csv") -> Job:
    now = time.time()
    job_id = keys.job_id("in-bucket", key, "v1")
    job = Job(job_id, "in-bucket", key, "v1", created_at=now, deadline_at=now + 60)
    aws.ledger.create_job(job)
    aws.ledger.assign(job.job_id, instance_id)
    return job


def _attempt(event: dict, count: int) -> dict:
    for record in event["Records"]:
        record["attributes"]["ApproximateReceiveCount"] = str(count)
    return event


def test_the_worker_waits_for_nothing_an_instance_no_longer_ready_fails_the_job_at_once(aws, monkeypatch):
    """The trigger is the one place an instance is waited for; the worker only checks it is still so."""
    monkeypatch.setenv("SUMPIPE_TRANSPORT", "ssm")
    get_settings.cache_clear()
    instance_id = worker_instance(aws, state="stopped")
    job = _job_starting_on(aws, instance_id)
    message = pipeline.JobMessage(job.job_id, instance_id, "10.0.0.1")
    started = time.monotonic()
    assert worker(sqs_event(json.loads(message.body())), CONTEXT) == {"batchItemFailures": []}
    assert time.monotonic() - started < 10
    failed = aws.ledger.get_job(job.job_id)
    assert failed.state == "failed" and f"instance {instance_id} is stopped, not running" in failed.error


def test_a_job_message_for_another_instance_is_ignored(aws):
    instance_id = worker_instance(aws)
    job = _job_starting_on(aws, instance_id)
    stale = pipeline.JobMessage(job.job_id, "i-0123456789abcdef0", "10.0.0.9")  # an earlier assignment's
    assert worker(sqs_event(json.loads(stale.body())), CONTEXT) == {"batchItemFailures": []}
    assert aws.ledger.get_job(job.job_id).state == "starting"


def test_a_job_message_without_its_instance_fails_the_job_once_retries_are_spent(aws):
    instance_id = worker_instance(aws)
    job = _job_starting_on(aws, instance_id)
    body = {"job_id": job.job_id}
    with pytest.raises(BatchProcessingError):  # the whole batch failed: SQS delivers it again
        worker(_attempt(sqs_event(body), 1), CONTEXT)
    assert worker(_attempt(sqs_event(body), pipeline.MAX_DISPATCH_ATTEMPTS), CONTEXT) == {
        "batchItemFailures": []
    }
    failed = aws.ledger.get_job(job.job_id)
    assert failed.state == "failed" and "without its instance and address" in failed.error


def upload_with_options(aws, key: str, metadata: dict[str, str]) -> dict:
    put = aws.s3.put_object(Bucket="in-bucket", Key=key, Body=b"Id,Text\n1,Hello.\n", Metadata=metadata)
    return s3_event("in-bucket", key, put["VersionId"], put["ETag"].strip('"'))


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"sumpipe-sentences": "zero"}, "job option sumpipe-sentences: must be a whole number, got 'zero'"),
        ({"sumpipe-ratio": "1.5"}, "job option sumpipe-ratio: must be a fraction in (0, 1], got 1.5"),
        ({"sumpipe-format": "xlsx"}, "job option sumpipe-format: must be one of csv, jsonl, parquet, got"),
        ({"sumpipe-colour": "red"}, "job option sumpipe-colour: unknown; the options are sumpipe-text-"),
        (
            {"sumpipe-group-by": "ProductId", "sumpipe-method": "kmeans"},
            "job option sumpipe-method: kmeans does not apply to group-by summaries",
        ),
    ],
)
def test_bad_options_fail_the_job_at_once_naming_the_option(aws, metadata, reason):
    instance_id = worker_instance(aws, state="stopped")
    trigger(sqs_event(upload_with_options(aws, "opts.csv", metadata)), CONTEXT)
    [job] = aws.ledger.list_jobs()
    assert job.state == "failed" and job.error.startswith(reason)
    report = json.loads(
        aws.s3.get_object(Bucket="out-bucket", Key=keys.output_key(job.job_id, keys.ERROR))["Body"].read()
    )
    assert (report["step"], report["reason"]) == ("trigger", job.error)
    assert state_of(aws, instance_id) == "stopped"  # no instance started for it


def test_options_are_recorded_with_the_job_and_foreign_metadata_ignored(aws):
    metadata = {
        "sumpipe-text-column": quote_plus("Commentaire été").replace("+", "%20"),
        "sumpipe-format": "jsonl",
        "sumpipe-sentences": "2",
        "owner": "data-team",  # the user's own metadata
    }
    trigger(sqs_event(upload_with_options(aws, "opts.csv", metadata)), CONTEXT)
    [job] = aws.ledger.list_jobs()  # (failed: no worker instance; its options are what is tested)
    assert job.options == {"text-column": "Commentaire été", "sentences": "2", "format": "jsonl"}


def test_a_summary_in_another_format_finishes_its_job(aws):
    instance_id = worker_instance(aws)
    job = running_job(aws, instance_id)
    key = keys.output_key(job.job_id, keys.summary_name("parquet"))
    stop_ec2(sqs_event(s3_event("out-bucket", key, None, "e")), CONTEXT)
    assert aws.ledger.get_job(job.job_id).state == "succeeded"
    assert state_of(aws, instance_id) in ("stopping", "stopped")
