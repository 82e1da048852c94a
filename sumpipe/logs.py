"""Structured (JSON) logging for every step of the pipeline.

Everything logs through one powertools Logger (service "sumpipe"), so the Lambda handlers, the
shared pipeline code and the runner all write the same JSON shape. The job id is attached with
`job_context`, which uses thread-safe keys: the local runtime runs several handlers in threads of
one process, and a job id must never leak onto another job's lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger

SERVICE = "sumpipe"


def get_logger() -> Logger:
    """The pipeline's logger. Loggers of the same service share one handler and formatter."""
    return Logger(service=SERVICE, level=os.environ.get("SUMPIPE_LOG_LEVEL", "INFO"))


@contextmanager
def job_context(logger: Logger, **keys: Any) -> Iterator[None]:
    """Adds keys (job_id, ...) to every line logged in this thread until the block ends."""
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    except Exception as exc:
        # The keys go on with the exception, so the line that reports it outside this block
        # (sumpipe.flow.events) names the job too; the innermost block's keys win.
        carry_keys(exc, **keys)
        raise
    finally:
        logger.thread_safe_remove_keys(list(keys))


_CARRIED = "sumpipe_log_keys"


def carry_keys(exc: BaseException, **keys: Any) -> None:
    """Adds log keys to an exception (those it already carries, from inner blocks, win)."""
    setattr(exc, _CARRIED, {**keys, **carried_keys(exc)})


def carried_keys(exc: BaseException) -> dict[str, Any]:
    """The `job_context` keys of the blocks `exc` was raised through (job_id, ...)."""
    return dict(getattr(exc, _CARRIED, None) or {})
