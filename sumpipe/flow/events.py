"""Lambda event plumbing shared by the handlers: SQS batches with partial failure reports, S3
notifications (bare or wrapped in SQS), and the invocation's log keys.

Every record a handler fails on is logged as one structured line (`"event": "record_failed"`) with
the error in one line, SQS's receive count, and the job id and the S3 object's key when known, before SQS
delivers it again. It goes to the function's log group, on AWS as in the local stack: that is how a
waiting client (`sumpipe submit --wait`, the review page; sumpipe.flow.chain) learns that the chain
is broken, where and why."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import ClientError

from sumpipe.flow.chain import RECORD_FAILED
from sumpipe.flow.pipeline import ObjectCreated, s3_records
from sumpipe.logs import carried_keys, carry_keys, get_logger, job_context

logger = get_logger()


def is_sqs_event(event: dict[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and records[0].get("eventSource") == "aws:sqs"


@contextmanager
def invocation(context: Any) -> Iterator[None]:
    """Tags every line of this invocation with the function and request (thread-safe keys)."""
    with job_context(
        logger,
        function_name=getattr(context, "function_name", None),
        request_id=getattr(context, "aws_request_id", None),
    ):
        yield


def process_sqs(event: dict[str, Any], context: Any, handle: Callable[[SQSRecord], None]) -> dict[str, Any]:
    """Runs `handle` on each record; failed records are reported so SQS redelivers only those."""
    processor = BatchProcessor(event_type=EventType.SQS)

    def handle_logged(record: SQSRecord) -> None:
        try:
            handle(record)
        except Exception as exc:
            extra = {
                "event": RECORD_FAILED,
                "error": describe_error(exc),
                "receive_count": int(record.attributes.approximate_receive_count or 1),
                "message_id": record.message_id,
                **carried_keys(exc),
            }
            logger.error("event not handled; SQS will deliver it again", extra=extra)
            raise

    return process_partial_response(
        event=event, record_handler=handle_logged, processor=processor, context=context
    )


def describe_error(exc: BaseException) -> str:
    """The error in one line: for AWS, the operation, HTTP status and code first
    (`HeadObject 403 Forbidden`, `PutItem 400 AccessDeniedException: User: ... is not authorized...`)."""
    if isinstance(exc, ClientError):
        details = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
        code, message = str(details.get("Code", "")), " ".join(str(details.get("Message", "")).split())
        if code == status:  # a HEAD's error has no body: its code is the status, its message the reason
            text = " ".join(w for w in (exc.operation_name, status, message) if w)
        else:
            head = " ".join(w for w in (exc.operation_name, status, code) if w)
            text = f"{head}: {message}" if message else head
    else:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:1000]


def process_s3_notifications(
    event: dict[str, Any], context: Any, handle: Callable[[ObjectCreated], None]
) -> dict[str, Any]:
    """S3 ObjectCreated notifications, delivered through SQS (the deployed path) or directly."""
    if not is_sqs_event(event):
        for created in s3_records(event):
            handle(created)
        return {}

    def handle_record(record: SQSRecord) -> None:
        for created in s3_records(json.loads(record.body)):
            try:
                handle(created)
            except Exception as exc:
                # The object the event was for, on the line that reports the failure.
                carry_keys(exc, object_key=created.key)
                raise

    return process_sqs(event, context, handle_record)
