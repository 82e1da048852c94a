"""The flow's functions (sumpipe/flow/pipeline.py) on in-memory backends: the ledger is a
MemoryLedger (held to DynamoLedger's behaviour by tests/functional/test_ledger.py), and the transport
is `InstanceDouble` below, a test double standing in for the job runner on an instance (the SSH and
SSM transports are tested against a real sshd and the emulator elsewhere). S3, SQS and EC2 are
moto's, in-process (the pipeline's buckets from pipeline_aws). Each race is played out in a fixed
order by a hook, never by sleeping."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import boto3
import pytest
from pipeline_aws import REGION, pipeline_aws

from sumpipe import keys
from sumpipe.flow import ec2, pipeline, remote
from sumpipe.flow.pipeline import JobMessage, ObjectCreated, ReadyInstance, Services
from sumpipe.ledger import FAILED, RUNNING, STARTING, SUCCEEDED, InstanceStopping, MemoryLedger
from sumpipe.settings import Settings

MOTO_IMAGE = "ami-12c6146b"  # one of the images moto knows


@dataclass
class InstanceDouble:
    """The job runner's side of the transport: records each command, answers as the runner's
    `start` does (or raises `error`), and counts the connections closed."""

    error: Exception | None = None
    commands: list[tuple[str, str]] = field(default_factory=list)  # (instance, command)
    closed: int = 0

    def connect(self, ready: ReadyInstance) -> InstanceDouble.Connection:
        return InstanceDouble.Connection(self, ready.instance.instance_id)

    @dataclass
    class Connection:
        double: InstanceDouble
        instance_id: str

        def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> remote.CommandResult:
            remote.check_command(command)
            self.double.commands.append((self.instance_id, command))
            if self.double.error is not None:
                raise self.double.error
            answer = {"job_id": command.split()[1], "pid": 4242}
            return remote.CommandResult(0, json.dumps(answer).encode(), b"")

        def close(self) -> None:
            self.double.closed += 1


@dataclass
class World:
    services: Services
    ledger: MemoryLedger
    instance: InstanceDouble
    instance_id: str
    s3: object
    sqs: object
    ec2: object

    def upload(self, key: str = "reviews.csv", body: bytes = b"Id,Text\n1,Good.\n") -> ObjectCreated:
        put = self.s3.put_object(Bucket="in-bucket", Key=key, Body=body)
        return ObjectCreated("in-bucket", key, put.get("VersionId"), put["ETag"].strip('"'), len(body))

    def job_messages(self) -> list[JobMessage]:
        url = self.services.settings.job_queue_url
        found = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        for message in found:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return [JobMessage.parse(json.loads(m["Body"])) for m in found]

    def runner_finishes(self, job_id: str, rows: int = 1) -> ObjectCreated:
        """What the runner does at the end of a good job: its manifest, then summary.csv."""
        assert self.ledger.claim_outcome(job_id, keys.SUMMARY)
        self.s3.put_object(Bucket="out-bucket", Key=keys.output_key(job_id, keys.MANIFEST),
                           Body=json.dumps({"rows": rows}).encode())  # fmt: skip
        key = keys.output_key(job_id, keys.SUMMARY)
        put = self.s3.put_object(Bucket="out-bucket", Key=key, Body=b"id,summary\n1,Good.\n")
        return ObjectCreated("out-bucket", key, None, put["ETag"].strip('"'))

    def instance_state(self) -> str:
        return ec2.describe(self.ec2, self.instance_id).state

    def services_with(self, clients: dict[str, object] | None = None, **settings: object) -> Services:
        """Another function's Services over the same ledger and instance (e.g. other settings, or a
        client of its own)."""
        changed = self.services.settings.model_copy(update=settings)
        return Services(changed, ledger=self.ledger, transport=self.instance.connect, clients=clients)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    with pipeline_aws(monkeypatch) as aws:
        aws.s3.put_bucket_versioning(Bucket="in-bucket", VersioningConfiguration={"Status": "Enabled"})
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        tags = [{"Key": "sumpipe:role", "Value": "worker"}, {"Key": ec2.STACK_NAME_TAG, "Value": "sumpipe"}]
        instance_id = aws.ec2.run_instances(
            ImageId=MOTO_IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]  # fmt: skip
        settings = Settings(
            input_bucket="in-bucket", output_bucket="out-bucket", job_table="unused", job_queue_url=queue,
            transport="ssm", instance_ready_timeout_s=30, job_deadline_s=60,
        )  # fmt: skip
        ledger, instance = MemoryLedger(), InstanceDouble()
        yield World(
            Services(settings, ledger=ledger, transport=instance.connect),
            ledger, instance, instance_id, aws.s3, sqs, aws.ec2,
        )  # fmt: skip


def test_an_upload_is_started_once_finished_once_and_its_instance_stopped(world: World) -> None:
    job_id = pipeline.accept_upload(world.services, world.upload())
    assert world.ledger.get_job(job_id).state == STARTING
    (message,) = world.job_messages()
    assert (message.job_id, message.instance_id) == (job_id, world.instance_id)

    pipeline.dispatch_job(world.services, message)
    assert world.instance.commands == [(world.instance_id, f"start {job_id}")]
    assert world.instance.closed == 1
    assert world.ledger.get_job(job_id).state == RUNNING

    pipeline.accept_output(world.services, world.runner_finishes(job_id, rows=7))
    job = world.ledger.get_job(job_id)
    assert (job.state, job.rows, job.outcome) == (SUCCEEDED, 7, keys.SUMMARY)
    assert world.ledger.instance_load(world.instance_id).inflight == 0
    assert world.instance_state() == "stopped"


def test_duplicate_events_and_messages_start_the_job_once(world: World) -> None:
    upload = world.upload()
    job_id = pipeline.accept_upload(world.services, upload)
    assert pipeline.accept_upload(world.services, upload) == job_id  # S3 delivered the event twice
    (message,) = world.job_messages()
    pipeline.dispatch_job(world.services, message)
    pipeline.dispatch_job(world.services, message)  # SQS delivered the message twice
    assert world.instance.commands == [(world.instance_id, f"start {job_id}")]
    assert world.ledger.instance_load(world.instance_id).inflight == 1


def test_an_instance_that_cannot_be_reached_fails_the_job_with_a_report_and_is_stopped(world: World) -> None:
    world.instance.error = remote.HostUnreachable("connection refused after 4 attempts")
    job_id = pipeline.accept_upload(world.services, world.upload())
    (message,) = world.job_messages()
    pipeline.dispatch_job(world.services, message)

    assert world.instance.closed == 1
    job = world.ledger.get_job(job_id)
    assert (job.state, job.outcome) == (FAILED, keys.ERROR)
    assert job.error == "could not start the job on the worker: connection refused after 4 attempts"
    report_key = keys.output_key(job_id, keys.ERROR)
    report = json.loads(world.s3.get_object(Bucket="out-bucket", Key=report_key)["Body"].read())
    assert (report["reason"], report["step"]) == (job.error, "worker")
    assert world.instance_state() == "stopped"


def test_a_job_left_by_a_dead_trigger_is_resumed_by_one_redelivery_after_its_lease(world: World) -> None:
    upload = world.upload()
    dead_trigger = world.services_with(job_queue_url=world.services.settings.job_queue_url + "-gone")
    with pytest.raises(Exception, match=r"NonExistentQueue|does not exist"):
        pipeline.accept_upload(dead_trigger, upload)  # assigned, then died before handing it on
    job_id = keys.job_id(upload.bucket, upload.key, upload.version_id)
    assert world.ledger.get_job(job_id).state == STARTING

    pipeline.accept_upload(world.services, upload)  # within the lease: maybe the trigger still lives
    assert world.job_messages() == []
    pipeline.accept_upload(world.services_with(start_lease_s=0), upload)  # lease over: carried on
    (message,) = world.job_messages()
    assert message.job_id == job_id
    pipeline.accept_upload(world.services, upload)  # the resumed start has a lease of its own
    assert world.job_messages() == []
    assert world.ledger.instance_load(world.instance_id).inflight == 1


def test_a_job_arriving_during_a_stop_waits_it_out_and_restarts_the_instance(world: World) -> None:
    world.ledger.claim_stop(world.instance_id, idle=True)  # a stopper is between its claim and its stop

    refused: list[str] = []
    assign = world.ledger.assign

    def stop_completes_when_refused(job_id: str, instance_id: str, now: float | None = None) -> bool:
        try:
            return assign(job_id, instance_id, now)
        except InstanceStopping:
            # The order under test: the new job is refused first, then the stopper's stop lands.
            refused.append(job_id)
            ec2.stop(world.ec2, instance_id)
            world.ledger.stop_done(instance_id)
            raise

    world.ledger.assign = stop_completes_when_refused  # type: ignore[method-assign]
    job_id = pipeline.accept_upload(world.services, world.upload())

    assert refused == [job_id]
    assert world.ledger.get_job(job_id).state == STARTING
    assert world.instance_state() == "running"  # started again for this job
    (message,) = world.job_messages()
    pipeline.dispatch_job(world.services, message)
    assert world.ledger.get_job(job_id).state == RUNNING


def test_a_finish_claims_the_stop_once_and_a_stop_that_fails_is_released(world: World) -> None:
    job_id = pipeline.accept_upload(world.services, world.upload())
    pipeline.dispatch_job(world.services, world.job_messages()[0])
    # An EC2 client for another region: the instance isn't there, so its stop fails.
    wrong_ec2 = world.services_with(clients={"ec2": boto3.client("ec2", region_name="eu-west-1")})
    pipeline.accept_output(wrong_ec2, world.runner_finishes(job_id))

    assert world.ledger.get_job(job_id).state == SUCCEEDED
    assert world.instance_state() == "running"  # the stop failed...
    assert world.ledger.instance_load(world.instance_id).stopping_at is None  # ...and was released
    assert pipeline.stop_if_idle(world.services, world.instance_id, idle_sweep=True)
    assert world.instance_state() == "stopped"
