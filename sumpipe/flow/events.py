"""Lambda event plumbing shared by the handlers: SQS batches with partial failure reports, S3
notifications (bare or wrapped in SQS), and the invocation's log keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from sumpipe.flow.pipeline import ObjectCreated, s3_records
from sumpipe.logs import get_logger, job_context

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
    return process_partial_response(event=event, record_handler=handle, processor=processor, context=context)


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
            handle(created)

    return process_sqs(event, context, handle_record)
