"""The job ledger: one DynamoDB table, key `pk` (S).

`job#<job_id>` holds a job; `instance#<instance_id>` holds how many jobs are in flight on an
instance. The in-flight count only changes in the same transaction as a job state change, and every
state change is conditional on the state it leaves, so a duplicate or racing event can neither
double-start a job nor double-count an instance.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED = "queued", "starting", "running", "succeeded", "failed"
ACTIVE_STATES = (QUEUED, STARTING, RUNNING)
TERMINAL_STATES = (SUCCEEDED, FAILED)

_CONFLICT_RETRIES = 6
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


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

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class InstanceLoad:
    instance_id: str
    inflight: int
    updated_at: float


def _job_pk(job_id: str) -> str:
    return f"job#{job_id}"


def _instance_pk(instance_id: str) -> str:
    return f"instance#{instance_id}"


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _serialize(Decimal(str(v)) if isinstance(v, float) else v)
        for k, v in values.items()
        if v is not None
    }


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in item.items():
        value = _deserialize(v)
        if isinstance(value, Decimal):
            value = int(value) if k in ("rows", "inflight", "starts") else float(value)
        out[k] = value
    return out


def _job_from_item(item: dict[str, Any]) -> Job:
    values = _from_item(item)
    names = {f.name for f in fields(Job)}
    return Job(**{k: v for k, v in values.items() if k in names})


def _is_condition_failure(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


class Ledger:
    """The ledger over a DynamoDB client (boto3 low-level) and a table name."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(self, job: Job) -> bool:
        """Records a new job; False when this job id is already recorded (a duplicate event)."""
        item = _to_item({"pk": _job_pk(job.job_id), **asdict(job)})
        try:
            self._db.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except Exception as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def get_job(self, job_id: str) -> Job | None:
        resp = self._db.get_item(TableName=self._table, Key=self._key(_job_pk(job_id)), ConsistentRead=True)
        return _job_from_item(resp["Item"]) if "Item" in resp else None

    def list_jobs(self) -> list[Job]:
        jobs = [_job_from_item(i) for i in self._scan("begins_with(pk, :p)", {":p": _serialize("job#")})]
        return sorted(jobs, key=lambda j: j.created_at)

    def overdue_jobs(self, now: float) -> list[Job]:
        return [j for j in self.list_jobs() if not j.terminal and j.deadline_at and j.deadline_at < now]

    def assign(self, job_id: str, instance_id: str, now: float | None = None) -> bool:
        """queued -> starting on `instance_id`, counting the job on that instance. False if not queued."""
        now = time.time() if now is None else now
        return self._transact(
            self._job_update(
                job_id,
                "SET #s = :new, instance_id = :i, updated_at = :now",
                {":new": STARTING, ":i": instance_id, ":now": now},
                expect=(QUEUED,),
            ),
            self._inflight_update(instance_id, +1, now, count_start=True),
        )

    def mark_running(self, job_id: str, now: float | None = None) -> bool:
        """starting -> running. False if the job is no longer starting (e.g. already finished)."""
        now = time.time() if now is None else now
        try:
            self._db.update_item(
                **self._job_update(
                    job_id,
                    "SET #s = :new, started_at = :now, updated_at = :now",
                    {":new": RUNNING, ":now": now},
                    expect=(STARTING,),
                )
            )
        except Exception as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def finish(
        self,
        job: Job,
        state: str,
        *,
        rows: int | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> bool:
        """An active job -> succeeded|failed, un-counting it from its instance in the same
        transaction. False when the job had already finished (a duplicate or racing event)."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"not a terminal state: {state}")
        now = time.time() if now is None else now
        values: dict[str, Any] = {":new": state, ":now": now}
        expression = "SET #s = :new, finished_at = :now, updated_at = :now"
        if rows is not None:
            values[":rows"] = rows
            expression += ", #rows = :rows"
        if error is not None:
            values[":err"] = error
            expression += ", #error = :err"
        update = self._job_update(job.job_id, expression, values, expect=ACTIVE_STATES)
        update["ExpressionAttributeNames"].update(
            {k: v for k, v in (("#rows", "rows"), ("#error", "error")) if k in expression}
        )
        # The instance was counted at assign(); a job that never got one (still queued) has none.
        # Re-reading inside the condition keeps that pairing exact: the job's instance_id must be
        # what we un-count.
        if job.instance_id:
            update["ConditionExpression"] += " AND instance_id = :i"
            update["ExpressionAttributeValues"][":i"] = _serialize(job.instance_id)
            return self._transact(update, self._inflight_update(job.instance_id, -1, now))
        update["ConditionExpression"] += " AND attribute_not_exists(instance_id)"
        return self._transact(update)

    # -- instances ----------------------------------------------------------------------------

    def instance_load(self, instance_id: str) -> InstanceLoad:
        resp = self._db.get_item(
            TableName=self._table, Key=self._key(_instance_pk(instance_id)), ConsistentRead=True
        )
        values = _from_item(resp.get("Item", {}))
        return InstanceLoad(instance_id, int(values.get("inflight", 0)), float(values.get("updated_at", 0.0)))

    def claim_stop(self, instance_id: str, *, idle: bool = False, now: float | None = None) -> bool:
        """True for the one caller that may stop the instance now: nothing is in flight on it and,
        unless `idle` (the watchdog's sweep of idle instances), no stop was claimed since the last
        job was assigned to it. Atomic against assign(): a job assigned first makes this False."""
        now = time.time() if now is None else now
        condition = "(attribute_not_exists(inflight) OR inflight = :zero)"
        if not idle:
            condition += (
                " AND (attribute_not_exists(stop_claimed_at_start)"
                " OR attribute_not_exists(starts) OR stop_claimed_at_start <> starts)"
            )
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(_instance_pk(instance_id)),
                UpdateExpression=(
                    "SET stop_claimed_at_start = if_not_exists(starts, :zero), stop_claimed_at = :now"
                ),
                ConditionExpression=condition,
                ExpressionAttributeValues=_to_item({":zero": 0, ":now": now}),
            )
        except Exception as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def release_stop(self, instance_id: str) -> None:
        """Withdraw a stop claim whose stop did not happen, so the next finish or sweep may claim it."""
        self._db.update_item(
            TableName=self._table,
            Key=self._key(_instance_pk(instance_id)),
            UpdateExpression="REMOVE stop_claimed_at_start, stop_claimed_at",
        )

    # -- internals ----------------------------------------------------------------------------

    def _key(self, pk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}}

    def _scan(self, filter_expression: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": filter_expression,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        while True:
            resp = self._db.scan(**kwargs)
            items.extend(resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _job_update(
        self, job_id: str, expression: str, values: dict[str, Any], expect: tuple[str, ...]
    ) -> dict[str, Any]:
        expected = {f":expect{i}": s for i, s in enumerate(expect)}
        return {
            "TableName": self._table,
            "Key": self._key(_job_pk(job_id)),
            "UpdateExpression": expression,
            "ConditionExpression": f"#s IN ({', '.join(expected)})",
            "ExpressionAttributeNames": {"#s": "state"},
            "ExpressionAttributeValues": _to_item({**values, **expected}),
        }

    def _inflight_update(
        self, instance_id: str, delta: int, now: float, count_start: bool = False
    ) -> dict[str, Any]:
        # `starts` counts assignments: a stop is claimed once per idle period (see claim_stop).
        return {
            "TableName": self._table,
            "Key": self._key(_instance_pk(instance_id)),
            "UpdateExpression": "ADD inflight :d"
            + (", starts :one" if count_start else "")
            + " SET updated_at = :now",
            "ExpressionAttributeValues": _to_item(
                {":d": delta, ":now": now, **({":one": 1} if count_start else {})}
            ),
        }

    def _transact(self, *updates: dict[str, Any]) -> bool:
        """True when written, False when a condition failed. Transactions touching the same
        instance counter concurrently can be cancelled with TransactionConflict: those retry."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._db.transact_write_items(TransactItems=[{"Update": u} for u in updates])
            except Exception as exc:
                reasons = [r.get("Code") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    return False
                if "TransactionConflict" in reasons and attempt + 1 < _CONFLICT_RETRIES:
                    time.sleep(0.05 * 2**attempt)
                    continue
                raise
            return True
        raise AssertionError("unreachable")
