"""The job runner, in-process against moto (the summarizer is the real `summarize` child): one runner
per job, and one finishing file per job, whatever else starts or fails it meanwhile."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pipeline_aws import pipeline_aws

from sumpipe import keys
from sumpipe.flow import pipeline
from sumpipe.instance import runner
from sumpipe.ledger import Job
from sumpipe.settings import get_settings

REGION = "us-east-1"
REVIEWS = b"Id,Text\n1,The tea is fresh and fragrant. The tin keeps it dry. Shipping took two days.\n"


@pytest.fixture
def aws(monkeypatch, tmp_path: Path):
    monkeypatch.setenv(runner.LOG_DIR_ENV, str(tmp_path / "runner-logs"))
    with pipeline_aws(monkeypatch) as aws:
        s3, ledger = aws.s3, aws.ledger
        put = s3.put_object(Bucket="in-bucket", Key="reviews.csv", Body=REVIEWS)
        now = time.time()
        job = Job(
            job_id=keys.job_id("in-bucket", "reviews.csv", put["ETag"].strip('"')),
            input_bucket="in-bucket",
            input_key="reviews.csv",
            version=put["ETag"].strip('"'),
            etag=put["ETag"].strip('"'),
            created_at=now,
            deadline_at=now + 600,
        )
        ledger.create_job(job)
        ledger.assign(job.job_id, "i-1")
        ledger.mark_running(job.job_id)
        # What `sumpipe-runner start` makes before it detaches `run` (whose stdout it is).
        (tmp_path / "runner-logs").mkdir()
        (tmp_path / "runner-logs" / f"{job.job_id}.jsonl").touch()
        yield SimpleNamespace(s3=s3, ledger=ledger, job=job, logs=tmp_path / "runner-logs")


def outputs(aws) -> set[str]:
    listed = aws.s3.list_objects_v2(Bucket="out-bucket", Prefix=f"jobs/{aws.job.job_id}/").get("Contents", [])
    return {item["Key"].rsplit("/", 1)[-1] for item in listed}


def test_a_second_start_of_a_job_is_a_logged_no_op(aws, caplog):
    assert runner.run(aws.job.job_id) == 0
    assert keys.SUMMARY in outputs(aws)
    aws.s3.delete_object(Bucket="out-bucket", Key=keys.output_key(aws.job.job_id, keys.SUMMARY))

    assert runner.run(aws.job.job_id) == 0  # a redelivered start: the job is still in flight
    assert keys.SUMMARY not in outputs(aws)  # nothing written again
    assert "job already claimed by another runner; nothing to do" in caplog.messages
    job = aws.ledger.get_job(aws.job.job_id)
    assert job.attempt == 1 and job.runner and job.outcome == keys.SUMMARY


def test_a_job_failed_while_its_runner_works_ends_with_error_json_only(aws, monkeypatch, caplog):
    """The watchdog fails the job (past its deadline) while the runner is summarizing; the runner,
    done a moment later, must not add summary.csv to the error.json the user already has."""
    real_do_job = runner.do_job

    def do_job_then_the_watchdog(*args, **kwargs):
        manifest = real_do_job(*args, **kwargs)
        pipeline.watchdog(pipeline.Services(get_settings()), now=aws.job.deadline_at + 1)
        return manifest

    monkeypatch.setattr(runner, "do_job", do_job_then_the_watchdog)
    assert runner.run(aws.job.job_id) == 0

    assert keys.ERROR in outputs(aws) and keys.SUMMARY not in outputs(aws)
    job = aws.ledger.get_job(aws.job.job_id)
    assert (job.state, job.error, job.outcome) == ("failed", "deadline exceeded", keys.ERROR)
    assert "the job's outcome was already decided; not writing mine" in caplog.messages


def test_a_runner_that_finished_first_keeps_its_summary_and_the_late_failure_is_dropped(aws):
    assert runner.run(aws.job.job_id) == 0
    pipeline.fail_job(pipeline.Services(get_settings()), aws.job.job_id, "deadline exceeded", "watchdog")
    assert outputs(aws) >= {keys.SUMMARY} and keys.ERROR not in outputs(aws)
    assert aws.ledger.get_job(aws.job.job_id).state == "running"  # summary.csv's event finishes it


def test_a_runner_that_claimed_success_and_died_is_failed_once_its_grace_is_over(aws):
    assert aws.ledger.claim_runner(aws.job.job_id, "host:1")
    assert aws.ledger.claim_outcome(aws.job.job_id, keys.SUMMARY)  # ... and then it died
    services = pipeline.Services(get_settings())
    pipeline.watchdog(services, now=aws.job.deadline_at + 1)
    assert aws.ledger.get_job(aws.job.job_id).state == "running"  # its upload may still be coming
    pipeline.watchdog(services, now=aws.job.deadline_at + pipeline.SUMMARY_GRACE_S + 1)
    job = aws.ledger.get_job(aws.job.job_id)
    assert job.state == "failed" and "summary.csv never came" in job.error
    assert outputs(aws) == {keys.ERROR}


def test_the_jobs_files_are_on_the_work_disk_not_in_tmp(aws, monkeypatch, tmp_path):
    """Through `run` (against moto, the real summarizer child): the job's directory is made under
    SUMPIPE_WORK_DIR (the bootstrap's /var/lib/sumpipe/work, on the root volume), and the summarizer's
    own temporary files (a Parquet input's spool) go there too, never in the temporary directory
    (/tmp: a RAM disk on Amazon Linux 2023), which stays untouched."""
    ram_disk, disk = tmp_path / "tmp", tmp_path / "var-lib-sumpipe-work"
    ram_disk.mkdir()
    monkeypatch.setenv("TMPDIR", str(ram_disk))
    monkeypatch.setenv("SUMPIPE_WORK_DIR", str(disk))
    get_settings.cache_clear()
    seen = {}
    start_summarizer, popen = runner.start_summarizer, runner.subprocess.Popen

    def observed(workdir, summary_name, options):
        seen["workdir"] = workdir
        return start_summarizer(workdir, summary_name, options)

    def observed_popen(command, *args, **kwargs):
        if "--report" in command:  # the summarizer child: the environment it is given
            seen["tmpdir"] = kwargs["env"]["TMPDIR"]
        return popen(command, *args, **kwargs)

    monkeypatch.setattr(runner.subprocess, "Popen", observed_popen)
    monkeypatch.setattr(runner, "start_summarizer", observed)
    try:
        assert runner.run(aws.job.job_id) == 0
    finally:
        get_settings.cache_clear()
    assert keys.SUMMARY in outputs(aws)
    assert seen["workdir"].parent == disk
    assert seen["tmpdir"] == str(seen["workdir"])
    assert list(ram_disk.iterdir()) == []
    assert list(disk.iterdir()) == []  # the job's directory goes with the job
