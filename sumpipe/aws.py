"""boto3 client construction: one place for timeouts and retries.

Endpoint, region and credentials come from boto3's own standard variables (AWS_ENDPOINT_URL,
AWS_DEFAULT_REGION, AWS_PROFILE...) and its default credential chain (a Lambda's role variables,
an instance profile through the instance metadata service), so the same code talks to AWS or to
the local emulator.
Clients are built where they are used, never at import. Each thread keeps one boto3 session
(sessions are not thread-safe) so that service models are parsed once per thread, not once per
client: that is most of a client's construction time.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 4, "mode": "standard"})
# A session resolves its credentials once; a new one is made when these variables change (a
# process that points at another stack, as the test suite does).
_SESSION_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")
_local = threading.local()


def client(service: str, **config: Any) -> Any:
    """A client of `service`; `config` adds botocore Config settings (e.g. signature_version)."""
    session = getattr(_local, "session", None)
    if getattr(_local, "pinned", False):
        assert session is not None
    else:
        environment = tuple(os.environ.get(name) for name in _SESSION_VARIABLES)
        if session is None or environment != getattr(_local, "environment", None):
            session = _local.session = boto3.session.Session()
            _local.environment = environment
    return session.client(service, config=_CONFIG.merge(Config(**config)) if config else _CONFIG)  # type: ignore[call-overload]


def use_session(session: boto3.session.Session) -> None:
    """Every client this thread builds from now on comes from `session`: how the local Lambda
    runtime gives each function's threads the credentials of that function's own role."""
    _local.session = session
    _local.pinned = True
