"""Worker Lambda: starts a handed-over job on its instance over SSH and returns (the job runs
detached there)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from sumpipe.flow.events import invocation, process_sqs
from sumpipe.flow.pipeline import Services, dispatch_message
from sumpipe.settings import get_settings


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = Services(get_settings())

    def on_message(record: SQSRecord) -> None:
        attempt = int(record.attributes.approximate_receive_count or 1)
        dispatch_message(services, json.loads(record.body), attempt)

    with invocation(context):
        return process_sqs(event, context, on_message)
