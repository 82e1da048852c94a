"""GET /docs: Swagger UI for the OpenAPI document, from files installed with the package (the
`fastapi-offline` distribution ships Swagger UI 5), never from a CDN: it works offline, and its
content security policy allows nothing from elsewhere. Off where settings.api_docs is false (the
API Lambda, whose layer doesn't carry the files); /openapi.json is always served."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from sumpipe.settings import get_settings

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).with_name("static")
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
# Swagger UI sets inline styles and shows its icons as data: URIs; everything else is this server's.
DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=1)
def swagger_ui_dir() -> Path | None:
    """Where the installed Swagger UI files are (found without importing their package)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).with_name("static")
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def _docs_dir() -> Path:
    folder = swagger_ui_dir() if get_settings().api_docs else None
    if folder is None:
        raise HTTPException(404, "Not Found")
    return folder


@router.get("/docs")
def docs() -> FileResponse:
    _docs_dir()
    return FileResponse(STATIC / "docs.html", media_type="text/html", headers=DOCS_HEADERS)


@router.get("/docs/{asset}")
def docs_asset(asset: str) -> FileResponse:
    folder = _docs_dir()
    if asset not in ASSETS:
        raise HTTPException(404, "Not Found")
    return FileResponse(folder / asset, media_type=ASSETS[asset], headers=DOCS_HEADERS)
