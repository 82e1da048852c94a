"""stop_ec2 Lambda: a summary.csv or error.json in the output bucket finishes its job and stops
the instance when nothing else runs on it; the scheduled event runs the watchdog."""

from __future__ import annotations

from typing import Any

from sumpipe.events import invocation, process_s3_notifications
from sumpipe.pipeline import Clients, ObjectCreated, accept_output, watchdog
from sumpipe.settings import get_settings


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings, clients = get_settings(), Clients()

    def on_output(created: ObjectCreated) -> None:
        accept_output(settings, clients, created)

    with invocation(context):
        if event.get("detail-type") == "Scheduled Event":
            watchdog(settings, clients)
            return {}
        return process_s3_notifications(event, context, on_output)
