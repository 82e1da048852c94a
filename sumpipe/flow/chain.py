"""Is the chain broken for an upload? What a client waiting for a job (`sumpipe submit --wait`,
`sumpipe demo`, the review page) asks while the job hasn't finished, so that it never waits silently.

No back channel: only what the chain itself leaves, on AWS as in the local stack.

- Each function's failure lines in its log group: every SQS record a function fails on is logged
  with `"event": "record_failed"`, the error in one line and the job id, or (the trigger, before
  there is a job) the uploaded object's key (sumpipe.flow.events).
- Optionally, the functions' dead-letter queues, peeked at (received with visibility timeout 0, so
  left as they are): an event lands there after its queue's maxReceiveCount failed deliveries.
- The ledger: whether the upload's job is recorded, and when it last changed (`updated_at`).

`verdict` applies the waiting policy to what was found: broken when a function has failed on the
upload as often as SQS will deliver it (the template's maxReceiveCount) or its event is in the
dead-letter queue; when a function keeps failing on it and the job hasn't moved for `stall_s` (on AWS
a failed event comes back only after its queue's visibility timeout, tens of minutes); or when no job
is recorded `record_timeout_s` after the upload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sumpipe import keys

if TYPE_CHECKING:
    from sumpipe.ledger import Job

# The functions a job's events go through, in order (the names `sumpipe logs --function` takes).
FUNCTIONS = ("trigger", "worker", "stop_ec2")
# The stack outputs naming each function and its queue's dead-letter queue.
FUNCTION_OUTPUTS = {
    "trigger": "TriggerFunctionName",
    "worker": "WorkerFunctionName",
    "stop_ec2": "StopFunctionName",
}
DLQ_OUTPUTS = {
    "trigger": "InputEventsDeadLetterQueueUrl",
    "worker": "JobDeadLetterQueueUrl",
    "stop_ec2": "OutputEventsDeadLetterQueueUrl",
}
# The `event` of the line a function logs for each record it fails on (sumpipe.flow.events).
RECORD_FAILED = "record_failed"
# Log lines are searched from this long before the upload (the uploader's clock may be ahead).
CLOCK_SLACK_S = 60.0


class ChainBroken(RuntimeError):
    """The job won't come: a function keeps failing on its upload, or nothing recorded it."""


@dataclass(frozen=True)
class Upload:
    """What a client waits for: the uploaded object's key, its job id when the client knows it (the
    CLI: from the upload's version), and when it was uploaded (epoch seconds)."""

    key: str
    job_id: str | None
    uploaded_at: float


@dataclass(frozen=True)
class Failures:
    """One function's failures on an upload: when each was logged, and the last one's error."""

    function: str
    at: tuple[float, ...]
    error: str

    @property
    def count(self) -> int:
        return len(self.at)


@dataclass(frozen=True)
class Policy:
    record_timeout_s: float = 120.0
    # The template's maxReceiveCount: SQS delivers an event that many times, then dead-letters it.
    max_failures: int = 5
    stall_s: float = 120.0


def log_group(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def _matches(record: dict[str, Any], function: str, upload: Upload) -> bool:
    """A failure line about the upload: one naming its job, or the trigger's naming the uploaded key
    (the trigger may name another job id: when it can't read the object, it can't learn its
    version, and falls back on the etag)."""
    if record.get("event") != RECORD_FAILED:
        return False
    if upload.job_id is not None and record.get("job_id") == upload.job_id:
        return True
    return function == "trigger" and record.get("object_key") == upload.key


def log_events(logs: Any, group: str, **filters: Any) -> Iterator[dict[str, Any]]:
    """Every event of the log group that FilterLogEvents gives for `filters`, page by page; none
    when the group doesn't exist (yet: a function that never ran has none)."""
    kwargs: dict[str, Any] = {"logGroupName": group, **filters}
    try:
        while True:
            page = logs.filter_log_events(**kwargs)
            yield from page.get("events", [])
            if not page.get("nextToken"):
                return
            kwargs["nextToken"] = page["nextToken"]
    except logs.exceptions.ResourceNotFoundException:
        return


def function_failures(logs: Any, function: str, function_name: str, upload: Upload) -> Failures | None:
    """The function's logged failures on the upload (None: none, or no log group yet)."""
    found: list[tuple[float, str]] = []
    for event in log_events(
        logs,
        log_group(function_name),
        filterPattern=f'"{RECORD_FAILED}"',
        startTime=int((upload.uploaded_at - CLOCK_SLACK_S) * 1000),
    ):
        try:
            record = json.loads(event["message"])
        except ValueError:
            continue
        if isinstance(record, dict) and _matches(record, function, upload):
            found.append((event["timestamp"] / 1000, str(record.get("error") or "unknown error")))
    if not found:
        return None
    found.sort()
    return Failures(function, tuple(at for at, _ in found), found[-1][1])


def _mentions(body: str, upload: Upload) -> bool:
    """Whether a dead-lettered message is the upload's: one naming its job (a job message, an
    output object's key), or an S3 event for the uploaded key."""
    if upload.job_id is not None and upload.job_id in body:
        return True
    try:
        event = json.loads(body)
    except ValueError:
        return False
    records = event.get("Records") if isinstance(event, dict) else None
    for record in records if isinstance(records, list) else []:
        key = (((record or {}).get("s3") or {}).get("object") or {}).get("key")
        if isinstance(key, str) and keys.decode_event_key(key) == upload.key:
            return True
    return False


def dead_lettered(sqs: Any, queue_url: str, upload: Upload) -> bool:
    """Whether the upload's message is among those the dead-letter queue shows (a peek of up to
    ten: they stay in the queue, visible). A message keeps the time it was first sent: one sent
    before the upload is an earlier upload's."""
    messages = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["SentTimestamp"],
    ).get("Messages", [])
    since_ms = (upload.uploaded_at - CLOCK_SLACK_S) * 1000
    return any(
        int(m.get("Attributes", {}).get("SentTimestamp", 0)) >= since_ms
        and _mentions(m.get("Body", ""), upload)
        for m in messages
    )


def verdict(
    upload: Upload,
    job: Job | None,
    failures: list[Failures],
    dead: list[str],
    now: float,
    policy: Policy = Policy(),
) -> str | None:
    """Why the chain is broken for the upload, in one line; None while it may still come."""
    if job is not None and job.terminal:
        return None
    by_function = {f.function: f for f in failures}
    for function in FUNCTIONS:
        failed = by_function.get(function)
        if function in dead:
            return _message(failed, upload, function, "its event is in the dead-letter queue")
        if failed is not None and failed.count >= policy.max_failures:
            return _message(failed, upload, function)
    # Failing since the job last moved (or since the upload, with no job): for how long?
    moved_at = job.updated_at if job is not None else upload.uploaded_at
    since = [at for f in failures for at in f.at if at >= moved_at]
    if since and now - min(since) >= policy.stall_s:
        stalled = max(failures, key=lambda f: f.at[-1])
        return _message(stalled, upload, stalled.function, f"no progress for {now - min(since):.0f}s")
    if job is None and now - upload.uploaded_at >= policy.record_timeout_s:
        if failures:
            first = failures[0]
            return _message(
                first, upload, first.function, f"no job recorded {policy.record_timeout_s:.0f}s on"
            )
        return (
            f"no job recorded for {upload.key} within {policy.record_timeout_s:.0f}s of the upload, and no "
            "function logged a failure on it: is the trigger receiving the input bucket's events? "
            "see: sumpipe logs --function trigger"
        )
    return None


def _message(failed: Failures | None, upload: Upload, function: str, note: str = "") -> str:
    if failed is None:
        return (
            f"{function} gave up on {upload.key} without logging why ({note}); "
            f"see: sumpipe logs --function {function}"
        )
    times = "once" if failed.count == 1 else f"{failed.count} times"
    return (
        f"{function} failed {times} on {upload.key}: {failed.error}"
        + (f" ({note})" if note else "")
        + f"; see: sumpipe logs --function {function}"
    )


def check(
    logs: Any,
    function_names: Mapping[str, str],
    upload: Upload,
    job: Job | None,
    now: float,
    *,
    sqs: Any = None,
    dead_letter_queues: Mapping[str, str] | None = None,
    policy: Policy = Policy(),
) -> tuple[str | None, list[Failures]]:
    """The verdict on the upload (None: keep waiting) and the failures found. `function_names`:
    trigger/worker/stop_ec2 -> the deployed function's name; the dead-letter queues are peeked at
    only when `sqs` and their URLs are given."""
    failures = [
        found
        for function in FUNCTIONS
        if function in function_names
        and (found := function_failures(logs, function, function_names[function], upload)) is not None
    ]
    dead = [
        function
        for function, url in (dead_letter_queues or {}).items()
        if sqs is not None and url and dead_lettered(sqs, url, upload)
    ]
    return verdict(upload, job, failures, dead, now, policy), failures


def named_functions(stack_name: str) -> dict[str, str]:
    """The functions' names as the template gives them (`${AWS::StackName}-trigger`, ...)."""
    return {
        "trigger": f"{stack_name}-trigger",
        "worker": f"{stack_name}-worker",
        "stop_ec2": f"{stack_name}-stop-ec2",
    }


def stack_function_names(outputs: Mapping[str, str]) -> dict[str, str]:
    return {function: outputs[name] for function, name in FUNCTION_OUTPUTS.items() if name in outputs}


def stack_dead_letter_queues(outputs: Mapping[str, str]) -> dict[str, str]:
    return {function: outputs[name] for function, name in DLQ_OUTPUTS.items() if name in outputs}
