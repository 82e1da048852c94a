"""Request bodies, read and parsed here rather than by FastAPI's body parameters, so that the size
limit is enforced while the body streams in (a 1 GB upload is refused after 1 MiB, not buffered),
non-UTF-8 bytes get their own clear 400, and every bad input maps to a 400 (a 413 only for a body
over the size limit) that names the problem, never a 422 or a 500.

An error names at most MAX_PROBLEMS_LISTED problems and counts the rest: a body with 80,000 unknown
keys gets a short 400, not a 3 MB list. A body over INLINE_MAX_BODY_BYTES is validated in a worker
thread, so the event loop keeps answering other requests meanwhile."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

MAX_BODY_BYTES = 1024 * 1024
MAX_PROBLEMS_LISTED = 10
# Validating a body this small takes well under a millisecond: not worth a thread hand-off.
INLINE_MAX_BODY_BYTES = 64 * 1024
MANY_PROBLEMS = 100


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body is over the limit of {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _describe(error: Any) -> str:
    """One pydantic error as `where: what`, without echoing the (possibly huge) input back."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _reject(exc: ValidationError, model: type[BaseModel], decoded: str) -> HTTPException:
    count = exc.error_count()
    if count > MANY_PROBLEMS:
        # Only unknown keys come in such numbers (every other field fails once); pydantic would
        # spend ~1 µs per problem turning them all into Python objects, holding the GIL.
        problems = [f"{key}: Extra inputs are not permitted" for key in _unknown_keys(model, decoded)]
    else:
        problems = [_describe(e) for e in exc.errors(include_input=False, include_url=False)]
    listed = problems[:MAX_PROBLEMS_LISTED] or [f"{count} problems"]
    detail = "; ".join(listed)
    if count > len(listed):
        detail += f"; and {count - len(listed)} more problems"
    return HTTPException(400, detail)


def _unknown_keys(model: type[BaseModel], decoded: str) -> list[str]:
    body = json.loads(decoded)
    known = {field.alias or name for name, field in model.model_fields.items()}
    return [key for key in body if key not in known][:MAX_PROBLEMS_LISTED] if isinstance(body, dict) else []


Model = TypeVar("Model", bound=BaseModel)


def _validate(model: type[Model], decoded: str) -> Model:
    try:
        return model.model_validate_json(decoded)
    except ValidationError as exc:
        raise _reject(exc, model, decoded) from None


async def parse_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body as `model`, or an HTTPException (400, 413 over the size limit) that
    names the problem."""
    body = await _read_body(request)
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    if not decoded.strip():
        raise HTTPException(400, 'request body is empty; send JSON like {"text": "..."}')
    if len(body) > INLINE_MAX_BODY_BYTES:
        return await run_in_threadpool(_validate, model, decoded)
    return _validate(model, decoded)
