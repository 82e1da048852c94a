"""boto3 client construction: one place for timeouts and retries.

Endpoint, region and credentials come from boto3's own standard variables (AWS_ENDPOINT_URL,
AWS_REGION, ...), so the same code talks to AWS or to the local emulator. Clients are built per
call site (never at import), each from its own session, which keeps them safe to build in threads.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 4, "mode": "standard"})


def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)  # type: ignore[call-overload]
