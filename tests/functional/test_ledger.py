"""The job ledger's conditional writes against moto's DynamoDB (in-process)."""

import time

import boto3
import pytest
from moto import mock_aws

from sumpipe.ledger import FAILED, RUNNING, STARTING, SUCCEEDED, Job, Ledger

JOB = Job(job_id="j-00000000000000000001", input_bucket="in", input_key="a.csv", version="v1", etag="e1")


@pytest.fixture
def ledger(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(
            TableName="jobs",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield Ledger(db, "jobs")


def test_a_job_is_created_once(ledger):
    assert ledger.create_job(JOB)
    assert not ledger.create_job(JOB)
    assert ledger.get_job(JOB.job_id) == JOB
    assert [j.job_id for j in ledger.list_jobs()] == [JOB.job_id]


def test_assign_counts_the_job_on_its_instance_once(ledger):
    ledger.create_job(JOB)
    assert ledger.assign(JOB.job_id, "i-1")
    assert not ledger.assign(JOB.job_id, "i-1")  # a duplicate event can't double-start it
    job = ledger.get_job(JOB.job_id)
    assert (job.state, job.instance_id) == (STARTING, "i-1")
    assert ledger.instance_load("i-1").inflight == 1


def test_two_finish_events_race_and_only_one_counts(ledger):
    ledger.create_job(JOB)
    ledger.assign(JOB.job_id, "i-1")
    assert ledger.mark_running(JOB.job_id)
    job = ledger.get_job(JOB.job_id)
    assert job.state == RUNNING
    assert ledger.finish(job, SUCCEEDED, rows=3)
    assert not ledger.finish(job, FAILED, error="late duplicate")
    done = ledger.get_job(JOB.job_id)
    assert (done.state, done.rows, done.error) == (SUCCEEDED, 3, None)
    assert ledger.instance_load("i-1").inflight == 0


def test_a_stop_is_claimed_once_per_idle_period(ledger):
    for n in (1, 2):
        job = Job(job_id=f"j-0000000000000000000{n}", input_bucket="in", input_key=f"{n}.csv", version="v")
        ledger.create_job(job)
        ledger.assign(job.job_id, "i-1")
    assert not ledger.claim_stop("i-1")  # two in flight
    ledger.finish(ledger.get_job("j-00000000000000000001"), SUCCEEDED)
    assert not ledger.claim_stop("i-1")  # one still in flight
    ledger.finish(ledger.get_job("j-00000000000000000002"), FAILED, error="x")
    assert ledger.claim_stop("i-1")
    assert not ledger.claim_stop("i-1")  # racing finishers: the stop happens once
    assert ledger.claim_stop("i-1", idle=True)  # the watchdog's idle sweep may stop it again


def test_overdue_jobs_are_the_active_ones_past_their_deadline(ledger):
    now = time.time()
    ledger.create_job(
        Job(
            job_id="j-00000000000000000001",
            input_bucket="in",
            input_key="a",
            version="v",
            deadline_at=now - 1,
        )
    )
    ledger.create_job(
        Job(
            job_id="j-00000000000000000002",
            input_bucket="in",
            input_key="b",
            version="v",
            deadline_at=now + 100,
        )
    )
    assert [j.job_id for j in ledger.overdue_jobs(now)] == ["j-00000000000000000001"]
    ledger.finish(ledger.get_job("j-00000000000000000001"), FAILED, error="deadline exceeded")
    assert ledger.overdue_jobs(now) == []
