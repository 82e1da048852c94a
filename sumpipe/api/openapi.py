"""The OpenAPI document, made to say what the server does: every status a route returns is listed
with its body, and nothing it never returns. FastAPI lists a 422 for every route with parameters;
this app answers a bad parameter with a 400 (request_validation_error), as it does a bad body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sumpipe.api.bodies import MAX_PROBLEMS_LISTED


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in one line.")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


# For the routes' `responses=`: each status the app answers with {"detail": ...}.
ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: _error("Malformed request: the problems, at most 10 named, and how many more."),
    403: _error("A browser page from another origin sent it (settings.allowed_origins)."),
    404: _error("No such job, or it has nothing of that kind."),
    413: _error("The body is over the size limit."),
    415: _error("The body is not declared application/json."),
    503: _error("Batch jobs need a stack, and this server has none."),
}


async def request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A missing or malformed query or path parameter: a 400 naming it, as for a bad body."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in errors[:MAX_PROBLEMS_LISTED]
    ]
    if len(errors) > len(problems):
        problems.append(f"and {len(errors) - len(problems)} more problems")
    return JSONResponse({"detail": "; ".join(problems)}, status_code=400)


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, made once: FastAPI's, with its 422s turned into the 400s the app
    answers instead."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", _as_openapi(ERROR_RESPONSES[400]))
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components.setdefault("ErrorOut", ErrorOut.model_json_schema())
    app.openapi_schema = schema
    return schema


def _as_openapi(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": response["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }
