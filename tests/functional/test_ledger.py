"""The job ledger's contract: every test runs against each backend, DynamoLedger on moto's DynamoDB
(in-process) and MemoryLedger, so the flow's unit tests on the memory one see the deployed behaviour."""

import time

import boto3
import pytest
from moto import mock_aws
from pipeline_aws import create_job_table

from sumpipe.ledger import (
    FAILED,
    FINISHED_RETENTION_S,
    RUNNING,
    STARTING,
    STOP_LEASE_S,
    SUCCEEDED,
    DynamoLedger,
    InstanceStopping,
    Job,
    MemoryLedger,
)

JOB = Job(job_id="j-00000000000000000001", input_bucket="in", input_key="a.csv", version="v1", etag="e1")


@pytest.fixture(params=["dynamodb", "memory"])
def ledger(request, monkeypatch):
    if request.param == "memory":
        yield MemoryLedger()
        return
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        create_job_table(db)
        yield DynamoLedger(db, "jobs")


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
    assert not ledger.claim_stop("i-1", idle=True)  # nor does a sweep interfere while it is made
    ledger.stop_done("i-1")
    assert not ledger.claim_stop("i-1")  # the same idle period: no second stop by a finisher
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


# -- exclusions: one decision each, however the calls interleave -----------------------------------

JOB_B = Job(job_id="j-00000000000000000002", input_bucket="in", input_key="b.csv", version="v1", etag="e2")


def test_a_stop_claim_and_a_new_assignment_exclude_each_other(ledger):
    """Finish A, claim the stop, then B arrives: B is refused until the stop was made (it then
    restarts the instance), and the stop can't be claimed once B is in flight."""
    ledger.create_job(JOB)
    ledger.assign(JOB.job_id, "i-1")
    ledger.finish(ledger.get_job(JOB.job_id), SUCCEEDED)
    assert ledger.claim_stop("i-1")
    ledger.create_job(JOB_B)
    with pytest.raises(InstanceStopping):
        ledger.assign(JOB_B.job_id, "i-1")
    assert ledger.get_job(JOB_B.job_id).state == "queued"  # nothing written
    assert ledger.instance_load("i-1").inflight == 0
    assert ledger.instance_load("i-1").stopping_at is not None
    ledger.stop_done("i-1")
    assert ledger.assign(JOB_B.job_id, "i-1")
    assert not ledger.claim_stop("i-1", idle=True)  # B is in flight


def test_an_assignment_first_makes_the_stop_claim_fail(ledger):
    ledger.create_job(JOB)
    ledger.assign(JOB.job_id, "i-1")
    assert not ledger.claim_stop("i-1")
    assert ledger.instance_load("i-1").stopping_at is None


def test_a_stop_mark_left_by_a_dead_stopper_expires(ledger):
    now = time.time()
    assert ledger.claim_stop("i-1", idle=True, now=now)
    ledger.create_job(JOB)
    with pytest.raises(InstanceStopping):
        ledger.assign(JOB.job_id, "i-1", now=now + STOP_LEASE_S - 1)
    assert ledger.assign(JOB.job_id, "i-1", now=now + STOP_LEASE_S + 1)


def test_a_failed_stop_releases_the_mark_and_the_claim(ledger):
    assert ledger.claim_stop("i-1")
    ledger.release_stop("i-1")
    assert ledger.instance_load("i-1").stopping_at is None
    assert ledger.claim_stop("i-1")  # the next finish may try again


def test_a_job_left_starting_is_resumed_once_its_lease_ran_out_and_by_one_caller(ledger):
    now = time.time()
    ledger.create_job(JOB)
    ledger.assign(JOB.job_id, "i-1", now=now)
    assert not ledger.resume_start(JOB.job_id, lease_s=420, now=now + 60)  # its trigger may be alive
    assert ledger.resume_start(JOB.job_id, lease_s=420, now=now + 500)
    assert not ledger.resume_start(JOB.job_id, lease_s=420, now=now + 501)  # taken: a new lease
    ledger.mark_running(JOB.job_id)
    assert not ledger.resume_start(JOB.job_id, lease_s=420, now=now + 5000)  # only `starting` jobs


def test_one_runner_claims_a_job_and_a_second_start_is_refused(ledger):
    ledger.create_job(JOB)
    assert not ledger.claim_runner(JOB.job_id, "host:1")  # queued: not started by anyone
    ledger.assign(JOB.job_id, "i-1")
    assert ledger.claim_runner(JOB.job_id, "host:1")
    assert not ledger.claim_runner(JOB.job_id, "host:2")
    job = ledger.get_job(JOB.job_id)
    assert (job.runner, job.attempt) == ("host:1", 1)


def test_a_job_has_one_outcome(ledger):
    ledger.create_job(JOB)
    ledger.assign(JOB.job_id, "i-1")
    assert ledger.claim_outcome(JOB.job_id, "error.json")
    assert not ledger.claim_outcome(JOB.job_id, "summary.csv")
    assert ledger.get_job(JOB.job_id).outcome == "error.json"


def test_finished_jobs_leave_the_active_index_and_expire(ledger):
    now = time.time()
    for n, deadline in ((1, now - 10), (2, now + 100), (3, now - 5)):
        job = Job(job_id=f"j-0000000000000000000{n}", input_bucket="in", input_key=f"{n}.csv", version="v",
                  deadline_at=deadline)  # fmt: skip
        ledger.create_job(job)
    ledger.finish(ledger.get_job("j-00000000000000000003"), FAILED, error="x", now=now)
    assert [j.job_id for j in ledger.overdue_jobs(now)] == ["j-00000000000000000001"]
    if isinstance(ledger, MemoryLedger):
        return  # (the table's TTL and sparse index below are DynamoDB's)
    item = ledger._db.get_item(TableName="jobs", Key={"pk": {"S": "job#j-00000000000000000003"}})["Item"]
    assert "active" not in item and int(item["expires_at"]["N"]) == int(now + FINISHED_RETENTION_S)
