"""stop_ec2 Lambda: a summary.csv or error.json in the output bucket finishes its job and stops
the instance when nothing else runs on it; the scheduled event runs the watchdog."""

from __future__ import annotations

from typing import Any

from sumpipe.flow.events import invocation, process_s3_notifications
from sumpipe.flow.pipeline import ObjectCreated, Services, accept_output, watchdog
from sumpipe.settings import get_settings


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = Services(get_settings())

    def on_output(created: ObjectCreated) -> None:
        accept_output(services, created)

    with invocation(context):
        if event.get("detail-type") == "Scheduled Event":
            watchdog(services)
            return {}
        return process_s3_notifications(event, context, on_output)
