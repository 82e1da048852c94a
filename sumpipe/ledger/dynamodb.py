"""The ledger in one DynamoDB table, key `pk` (S): `job#<job_id>` holds a job, `instance#<instance_id>`
an instance's in-flight count and stop marks. Job changes that move the count are transactions with
the instance's item; every change is a conditional write (sumpipe/ledger/base.py has the contract).
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from sumpipe.ledger.base import (
    ACTIVE_STATES,
    FINISHED_RETENTION_S,
    QUEUED,
    RUNNING,
    STARTING,
    STOP_LEASE_S,
    TERMINAL_STATES,
    InstanceLoad,
    InstanceStopping,
    Job,
)

_CONFLICT_RETRIES = 6
# The table's sparse index of active jobs by deadline (deploy/template.yaml): only active jobs carry
# the `active` attribute.
ACTIVE_INDEX = "active-by-deadline"
ACTIVE = "1"
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


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
            value = int(value) if k in ("rows", "inflight", "starts", "attempt") else float(value)
        out[k] = value
    return out


def _job_from_item(item: dict[str, Any]) -> Job:
    values = _from_item(item)
    names = {f.name for f in fields(Job)}
    return Job(**{k: v for k, v in values.items() if k in names})


def _is_condition_failure(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


class DynamoLedger:
    """The ledger in one DynamoDB table (a boto3 low-level client and the table name)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(self, job: Job) -> bool:
        """Records a new job; False when this job id is already recorded (a duplicate event)."""
        item = _to_item({"pk": _job_pk(job.job_id), **asdict(job), "active": ACTIVE})
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
        """Active jobs past their deadline, from the sparse index (no Scan: finished jobs aren't in it).
        The index lags writes slightly; every use re-checks with a conditional write."""
        items = self._all_pages(
            self._db.query,
            TableName=self._table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="#active = :active AND deadline_at < :now",
            ExpressionAttributeNames={"#active": "active"},
            ExpressionAttributeValues=_to_item({":active": ACTIVE, ":now": now}),
        )
        return [job for job in map(_job_from_item, items) if not job.terminal]

    def assign(self, job_id: str, instance_id: str, now: float | None = None) -> bool:
        """queued -> starting on `instance_id`, counting the job on that instance. False if not queued;
        InstanceStopping if the instance is being stopped (then nothing is written)."""
        now = time.time() if now is None else now
        counted = self._inflight_update(instance_id, +1, now, count_start=True)
        counted["ConditionExpression"] = "attribute_not_exists(stopping_at) OR stopping_at < :stale"
        counted["ExpressionAttributeValues"].update(_to_item({":stale": now - STOP_LEASE_S}))
        failed = self._transact_failures(
            self._job_update(
                job_id,
                "SET #s = :new, instance_id = :i, updated_at = :now",
                {":new": STARTING, ":i": instance_id, ":now": now},
                expect=(QUEUED,),
            ),
            counted,
        )
        if failed == [1]:
            raise InstanceStopping(f"instance {instance_id} is being stopped")
        return not failed

    def resume_start(self, job_id: str, lease_s: float, now: float | None = None) -> bool:
        """Take over a job left `starting` for over `lease_s` (the trigger that assigned it died before
        handing it on): True for the one caller that may carry on with it."""
        now = time.time() if now is None else now
        update = self._job_update(job_id, "SET updated_at = :now", {":now": now}, expect=(STARTING,))
        update["ConditionExpression"] += " AND updated_at < :expired"
        update["ExpressionAttributeValues"].update(_to_item({":expired": now - lease_s}))
        return self._update(update)

    def claim_runner(self, job_id: str, runner: str, now: float | None = None) -> bool:
        """The runner's claim on its job before any work: True for the first runner of a job that is
        starting or running; a second runner (a duplicate start) gets False. The claim lasts as long
        as the job may run: past its deadline the watchdog fails it."""
        now = time.time() if now is None else now
        update = self._job_update(
            job_id, "SET #runner = :r, updated_at = :now ADD #attempt :one",
            {":r": runner, ":now": now, ":one": 1}, expect=(STARTING, RUNNING),
        )  # fmt: skip
        update["ConditionExpression"] += " AND attribute_not_exists(#runner)"
        update["ExpressionAttributeNames"].update({"#runner": "runner", "#attempt": "attempt"})
        return self._update(update)

    def claim_outcome(self, job_id: str, name: str, now: float | None = None) -> bool:
        """True for the one writer of the job's finishing file (`name`), before writing it: a job
        ends with summary.csv or error.json, never both."""
        now = time.time() if now is None else now
        update = self._job_update(
            job_id, "SET #outcome = :o, updated_at = :now", {":o": name, ":now": now}, expect=ACTIVE_STATES
        )
        update["ConditionExpression"] += " AND attribute_not_exists(#outcome)"
        update["ExpressionAttributeNames"]["#outcome"] = "outcome"
        return self._update(update)

    def mark_running(self, job_id: str, now: float | None = None) -> bool:
        """starting -> running. False if the job is no longer starting (e.g. already finished)."""
        now = time.time() if now is None else now
        return self._update(
            self._job_update(
                job_id,
                "SET #s = :new, started_at = :now, updated_at = :now",
                {":new": RUNNING, ":now": now},
                expect=(STARTING,),
            )
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
        """An active job -> succeeded|failed, un-counting it from its instance in the same
        transaction. False when the job had already finished (a duplicate or racing event)."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"not a terminal state: {state}")
        now = time.time() if now is None else now
        values: dict[str, Any] = {":new": state, ":now": now, ":expires": int(now + FINISHED_RETENTION_S)}
        expression = (
            "REMOVE #active SET #s = :new, finished_at = :now, updated_at = :now, expires_at = :expires"
        )
        if rows is not None:
            values[":rows"] = rows
            expression += ", #rows = :rows"
        if error is not None:
            values[":err"] = error
            expression += ", #error = :err"
        update = self._job_update(job.job_id, expression, values, expect=ACTIVE_STATES)
        update["ExpressionAttributeNames"].update(
            {
                k: v
                for k, v in (("#rows", "rows"), ("#error", "error"), ("#active", "active"))
                if k in expression
            }
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
        return InstanceLoad(
            instance_id,
            int(values.get("inflight", 0)),
            float(values.get("updated_at", 0.0)),
            values.get("stopping_at"),
        )

    def claim_stop(self, instance_id: str, *, idle: bool = False, now: float | None = None) -> bool:
        """True for the one caller that may stop the instance now: nothing is in flight on it, no
        other stop is under way and, unless `idle` (the watchdog's sweep of idle instances), no stop
        was claimed since the last job was assigned to it. It marks the instance `stopping` until
        stop_done() or release_stop(): assign() refuses it meanwhile. Atomic against assign()."""
        now = time.time() if now is None else now
        condition = (
            "(attribute_not_exists(inflight) OR inflight = :zero)"
            " AND (attribute_not_exists(stopping_at) OR stopping_at < :stale)"
        )
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
                    "SET stop_claimed_at_start = if_not_exists(starts, :zero), stop_claimed_at = :now,"
                    " stopping_at = :now"
                ),
                ConditionExpression=condition,
                ExpressionAttributeValues=_to_item({":zero": 0, ":now": now, ":stale": now - STOP_LEASE_S}),
            )
        except Exception as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def stop_done(self, instance_id: str) -> None:
        """The stop was made (EC2 took it): new jobs may be assigned again (they restart it)."""
        self._db.update_item(
            TableName=self._table,
            Key=self._key(_instance_pk(instance_id)),
            UpdateExpression="REMOVE stopping_at",
        )

    def release_stop(self, instance_id: str) -> None:
        """Withdraw a stop claim whose stop did not happen, so the next finish or sweep may claim it."""
        self._db.update_item(
            TableName=self._table,
            Key=self._key(_instance_pk(instance_id)),
            UpdateExpression="REMOVE stop_claimed_at_start, stop_claimed_at, stopping_at",
        )

    # -- internals ----------------------------------------------------------------------------

    def _key(self, pk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}}

    def _scan(self, filter_expression: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        return self._all_pages(
            self._db.scan,
            TableName=self._table,
            FilterExpression=filter_expression,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        )

    @staticmethod
    def _all_pages(operation: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item a Scan or Query returns, page after page."""
        items: list[dict[str, Any]] = []
        while True:
            resp = operation(**kwargs)
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

    def _update(self, update: dict[str, Any]) -> bool:
        """One conditional update: True when written, False when its condition failed."""
        try:
            self._db.update_item(**update)
        except Exception as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def _transact(self, *updates: dict[str, Any]) -> bool:
        """True when written, False when a condition failed."""
        return not self._transact_failures(*updates)

    def _transact_failures(self, *updates: dict[str, Any]) -> list[int]:
        """The positions of the updates whose condition failed (none: all written). Transactions
        touching the same instance counter concurrently can be cancelled with TransactionConflict:
        those retry."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._db.transact_write_items(TransactItems=[{"Update": u} for u in updates])
            except Exception as exc:
                reasons = [r.get("Code") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]
                failed = [i for i, reason in enumerate(reasons) if reason == "ConditionalCheckFailed"]
                if failed:
                    return failed
                if "TransactionConflict" in reasons and attempt + 1 < _CONFLICT_RETRIES:
                    time.sleep(0.05 * 2**attempt)
                    continue
                raise
            return []
        raise AssertionError("unreachable")
