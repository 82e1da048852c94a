"""The three Lambda handlers, called with the events AWS sends, against moto (in-process).

Only paths that never open a connection to an instance are here: moto invents instance addresses,
and connecting to them is forbidden. The SSH paths run in tests/e2e against real sshd."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace
from urllib.parse import quote_plus

import boto3
import pytest
from moto import mock_aws

from lambdas.stop_ec2.handler import lambda_handler as stop_ec2
from lambdas.trigger.handler import lambda_handler as trigger
from sumpipe import keys
from sumpipe.ledger import Job, Ledger
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
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("in-bucket", "out-bucket"):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket="in-bucket", VersioningConfiguration={"Status": "Enabled"})
        db = boto3.client("dynamodb", region_name=REGION)
        db.create_table(
            TableName="jobs",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
        queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")["QueueUrl"]
        for name, value in {
            "INPUT_BUCKET": "in-bucket",
            "OUTPUT_BUCKET": "out-bucket",
            "JOB_TABLE": "jobs",
            "JOB_QUEUE_URL": queue,
            "JOB_DEADLINE_S": "60",
        }.items():
            monkeypatch.setenv(f"SUMPIPE_{name}", value)
        get_settings.cache_clear()
        yield SimpleNamespace(s3=s3, ledger=Ledger(db, "jobs"), ec2=boto3.client("ec2", region_name=REGION))
        get_settings.cache_clear()


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
