"""boto3 client construction: one place for timeouts and retries.

Endpoint, region and credentials come from boto3's own standard variables (AWS_ENDPOINT_URL,
AWS_REGION, ...), so the same code talks to AWS or to the local emulator. Clients are built where
they are used, never at import. Each thread keeps one boto3 session (sessions are not thread-safe)
so that service models are parsed once per thread, not once per client: that is most of a
client's construction time.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 4, "mode": "standard"})
_local = threading.local()


def client(service: str) -> Any:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = boto3.session.Session()
    return session.client(service, config=_CONFIG)  # type: ignore[call-overload]
