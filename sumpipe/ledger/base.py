"""The job ledger: what every backend keeps and guarantees (`Ledger`), and its records.

A job record, and per instance how many jobs are in flight on it. The in-flight count only changes
atomically with a job state change, and every state change is conditional on the state it leaves,
so a duplicate or racing event can neither double-start a job nor double-count an instance.

Backends (the model is powertools' idempotency persistence layer): `DynamoLedger` (the deployed
one, sumpipe/ledger/dynamodb.py) and `MemoryLedger` (one process, for the flow's unit tests).
The same contract tests run against both.

Exclusions, each one conditional write:
- stop vs assign: claim_stop marks the instance `stopping_at` (only with nothing in flight), and
  assign requires no such mark, so a job is never given to an instance being stopped; the mark goes
  once the stop was made (stop_done) or given up (release_stop), or after STOP_LEASE_S;
- one starter per job: a job left `starting` (its trigger died) is taken over by one redelivered
  event, once its start lease has run out (resume_start);
- one runner per job: the runner claims the job before any work (claim_runner), for as long as the
  job may run (its deadline);
- one outcome per job: whoever writes the job's finishing file (the runner's summary, anyone's
  error.json) claims the outcome first (claim_outcome), so a job never ends with both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED = "queued", "starting", "running", "succeeded", "failed"
ACTIVE_STATES = (QUEUED, STARTING, RUNNING)
TERMINAL_STATES = (SUCCEEDED, FAILED)

# Finished jobs expire from the ledger (DynamoDB's TTL on `expires_at`) after this long.
FINISHED_RETENTION_S = 30 * 86400
# A stop mark older than this is stale (its stopper died between the claim and the stop).
STOP_LEASE_S = 120.0


@dataclass(frozen=True)
class Job:
    job_id: str
    input_bucket: str
    input_key: str
    version: str  # the S3 version id, or the etag when the bucket is not versioned
    etag: str = ""
    state: str = QUEUED
    instance_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    deadline_at: float = 0.0
    rows: int | None = None
    error: str | None = None
    runner: str | None = None  # who runs it: "<host>:<pid>" of the runner that claimed it
    attempt: int = 0  # how many runners claimed it (1 when all went well)
    outcome: str | None = None  # the finishing file claimed: the summary or error.json
    # What the upload asked of its summary (sumpipe.options, as option name -> text); {} = defaults.
    options: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class InstanceLoad:
    instance_id: str
    inflight: int
    updated_at: float
    stopping_at: float | None = None


class InstanceStopping(Exception):
    """assign() was refused because the instance is being stopped: wait the stop out, then retry."""


class Ledger(Protocol):
    """What the flow, the runner and the operator's commands need of the ledger. `now` defaults to
    the current time; every method that changes something is one atomic conditional write."""

    def create_job(self, job: Job) -> bool:
        """Records a new job; False when this job id is already recorded (a duplicate event)."""
        ...

    def get_job(self, job_id: str) -> Job | None: ...

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        ...

    def overdue_jobs(self, now: float) -> list[Job]:
        """Active jobs past their deadline."""
        ...

    def assign(self, job_id: str, instance_id: str, now: float | None = None) -> bool:
        """queued -> starting on `instance_id`, counting the job on that instance. False if not queued;
        InstanceStopping if the instance is being stopped (then nothing is written)."""
        ...

    def resume_start(self, job_id: str, lease_s: float, now: float | None = None) -> bool:
        """Take over a job left `starting` for over `lease_s` (the trigger that assigned it died before
        handing it on): True for the one caller that may carry on with it."""
        ...

    def claim_runner(self, job_id: str, runner: str, now: float | None = None) -> bool:
        """The runner's claim on its job before any work: True for the first runner of a job that is
        starting or running; a second runner (a duplicate start) gets False."""
        ...

    def claim_outcome(self, job_id: str, name: str, now: float | None = None) -> bool:
        """True for the one writer of the job's finishing file (`name`), before writing it."""
        ...

    def mark_running(self, job_id: str, now: float | None = None) -> bool:
        """starting -> running. False if the job is no longer starting (e.g. already finished)."""
        ...

    def finish(
        self,
        job: Job,
        state: str,
        *,
        rows: int | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> bool:
        """An active job -> succeeded|failed, un-counting it from its instance atomically. False when
        the job had already finished, or its instance is not `job.instance_id` any more."""
        ...

    def instance_load(self, instance_id: str) -> InstanceLoad: ...

    def claim_stop(self, instance_id: str, *, idle: bool = False, now: float | None = None) -> bool:
        """True for the one caller that may stop the instance now: nothing is in flight on it, no
        other stop is under way and, unless `idle` (the watchdog's sweep of idle instances), no stop
        was claimed since the last job was assigned to it. It marks the instance `stopping` until
        stop_done() or release_stop(): assign() refuses it meanwhile."""
        ...

    def stop_done(self, instance_id: str) -> None:
        """The stop was made (EC2 took it): new jobs may be assigned again (they restart it)."""
        ...

    def release_stop(self, instance_id: str) -> None:
        """Withdraw a stop claim whose stop did not happen, so the next finish or sweep may claim it."""
        ...
