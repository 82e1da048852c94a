"""The ledger in this process's memory: one lock makes each change atomic, as DynamoDB's conditional
writes and transactions do. For the flow's unit tests, where races are played out step by step; the
contract tests (tests/functional/test_ledger.py) hold it to what DynamoLedger does."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from sumpipe.ledger.base import (
    ACTIVE_STATES,
    QUEUED,
    RUNNING,
    STARTING,
    STOP_LEASE_S,
    TERMINAL_STATES,
    InstanceLoad,
    InstanceStopping,
    Job,
)


class MemoryLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._instances: dict[str, dict[str, Any]] = {}

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(self, job: Job) -> bool:
        with self._lock:
            if job.job_id in self._jobs:
                return False
            self._jobs[job.job_id] = job
            return True

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list_jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.created_at)

    def overdue_jobs(self, now: float) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.state in ACTIVE_STATES and j.deadline_at < now]

    def assign(self, job_id: str, instance_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state != QUEUED:
                return False
            instance = self._instance(instance_id)
            if not self._stop_stale(instance, now):
                raise InstanceStopping(f"instance {instance_id} is being stopped")
            self._jobs[job_id] = replace(job, state=STARTING, instance_id=instance_id, updated_at=now)
            self._count(instance, +1, now)
            instance["starts"] = instance.get("starts", 0) + 1
            return True

    def resume_start(self, job_id: str, lease_s: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._change(job_id, (STARTING,), lambda job: job.updated_at < now - lease_s, updated_at=now)

    def claim_runner(self, job_id: str, runner: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in (STARTING, RUNNING) or job.runner is not None:
                return False
            self._jobs[job_id] = replace(job, runner=runner, attempt=job.attempt + 1, updated_at=now)
            return True

    def claim_outcome(self, job_id: str, name: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._change(
            job_id, ACTIVE_STATES, lambda job: job.outcome is None, outcome=name, updated_at=now
        )

    def mark_running(self, job_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._change(
            job_id, (STARTING,), lambda job: True, state=RUNNING, started_at=now, updated_at=now
        )

    def finish(
        self,
        job: Job,
        state: str,
        *,
        rows: int | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> bool:
        if state not in TERMINAL_STATES:
            raise ValueError(f"not a terminal state: {state}")
        now = time.time() if now is None else now
        with self._lock:
            current = self._jobs.get(job.job_id)
            if (
                current is None
                or current.state not in ACTIVE_STATES
                or current.instance_id != job.instance_id
            ):
                return False
            changes: dict[str, Any] = {"state": state, "finished_at": now, "updated_at": now}
            if rows is not None:
                changes["rows"] = rows
            if error is not None:
                changes["error"] = error
            self._jobs[job.job_id] = replace(current, **changes)
            if job.instance_id:
                self._count(self._instance(job.instance_id), -1, now)
            return True

    # -- instances ----------------------------------------------------------------------------

    def instance_load(self, instance_id: str) -> InstanceLoad:
        with self._lock:
            instance = self._instances.get(instance_id, {})
            return InstanceLoad(
                instance_id,
                instance.get("inflight", 0),
                instance.get("updated_at", 0.0),
                instance.get("stopping_at"),
            )

    def claim_stop(self, instance_id: str, *, idle: bool = False, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            instance = self._instance(instance_id)
            if instance.get("inflight", 0) != 0 or not self._stop_stale(instance, now):
                return False
            starts = instance.get("starts")
            claimed_at_start = instance.get("stop_claimed_at_start")
            if not idle and starts is not None and claimed_at_start == starts:
                return False  # this idle period's stop was claimed already
            instance.update(stop_claimed_at_start=starts or 0, stop_claimed_at=now, stopping_at=now)
            return True

    def stop_done(self, instance_id: str) -> None:
        with self._lock:
            self._instance(instance_id).pop("stopping_at", None)

    def release_stop(self, instance_id: str) -> None:
        with self._lock:
            instance = self._instance(instance_id)
            for name in ("stop_claimed_at_start", "stop_claimed_at", "stopping_at"):
                instance.pop(name, None)

    # -- internals ----------------------------------------------------------------------------

    def _instance(self, instance_id: str) -> dict[str, Any]:
        return self._instances.setdefault(instance_id, {})

    @staticmethod
    def _stop_stale(instance: dict[str, Any], now: float) -> bool:
        """No stop under way: no mark, or one older than its lease."""
        stopping_at = instance.get("stopping_at")
        return stopping_at is None or stopping_at < now - STOP_LEASE_S

    @staticmethod
    def _count(instance: dict[str, Any], delta: int, now: float) -> None:
        instance["inflight"] = instance.get("inflight", 0) + delta
        instance["updated_at"] = now

    def _change(self, job_id: str, expect: tuple[str, ...], condition: Any, **changes: Any) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in expect or not condition(job):
                return False
            self._jobs[job_id] = replace(job, **changes)
            return True
