"""Request bodies, read and parsed here rather than by FastAPI's body parameters, so that the size
limit is enforced while the body streams in (a 1 GB upload is refused after 1 MiB, not buffered),
non-UTF-8 bytes get their own clear 400, and every bad input maps to a 400 or 413 that names the
problem, never a 422 or a 500."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

MAX_BODY_BYTES = 1024 * 1024
# pydantic error types that mean "too large" rather than "malformed": answered with 413.
_SIZE_ERRORS = frozenset({"string_too_long", "too_long"})


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


def _reject(exc: ValidationError) -> HTTPException:
    errors = exc.errors(include_input=False, include_url=False)
    status = 413 if any(e["type"] in _SIZE_ERRORS for e in errors) else 400
    return HTTPException(status, "; ".join(_describe(e) for e in errors))


Model = TypeVar("Model", bound=BaseModel)


async def parse_body(request: Request, model: type[Model]) -> Model:
    """The request's JSON body as `model`, or an HTTPException (400/413) that names the problem."""
    body = await _read_body(request)
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    if not decoded.strip():
        raise HTTPException(400, 'request body is empty; send JSON like {"text": "..."}')
    try:
        request = model.model_validate_json(decoded)
    except ValidationError as exc:
        raise _reject(exc) from None
    return request
