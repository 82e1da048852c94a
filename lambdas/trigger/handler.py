"""Trigger Lambda: an object created in the input bucket becomes a job started on a worker."""

from __future__ import annotations

from typing import Any

from sumpipe.flow.events import invocation, process_s3_notifications
from sumpipe.flow.pipeline import ObjectCreated, Services, accept_upload
from sumpipe.settings import get_settings


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = Services(get_settings())

    def on_upload(created: ObjectCreated) -> None:
        accept_upload(services, created)

    with invocation(context):
        return process_s3_notifications(event, context, on_upload)
