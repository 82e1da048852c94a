"""The API's web security, the same under `sumpipe serve` and behind API Gateway: which hosts it
answers, which pages may change its state, and the headers every response carries.

- **Hosts.** A request whose Host is not the configured public address (settings.public_url, its
  loopback aliases, settings.allowed_hosts) gets a 400: a page on evil.example whose name was
  rebound to 127.0.0.1 can't read /feedback.csv or the jobs. Behind API Gateway the Host is the
  API's own domain or nothing reaches the function, so it isn't checked there.
- **State-changing requests** (POST /feedback, /uploads) must be `application/json`, which no HTML
  form and no `no-cors` fetch can send: another origin's script needs a CORS preflight, which this
  app never grants. And a browser's `Origin`, when sent, must be the page's own (or
  settings.allowed_origins). A request without `Origin` is no browser's (curl, scripts): allowed.
- **Headers.** `nosniff` on everything; `no-store` unless a route or the static files say
  otherwise (exports and job data must not sit in caches); a `default-src 'none'` policy on every
  response that doesn't set its own (the page and /docs do).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sumpipe.settings import Settings, get_settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
JSON_MEDIA_TYPE = "application/json"

# For responses that are data, not documents: nothing in them may load or run anything.
DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
# The page's own files may be cached, but revalidated (a new version shows at once).
CACHEABLE_PREFIXES = ("/static/", "/docs/")


def _netloc_aliases(url: str) -> set[str]:
    """`host:port` of a URL, and when the host is a loopback name, the other loopback names too."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port else ""
    bracketed = f"[{host}]" if ":" in host else host
    names = LOOPBACK_HOSTS if bracketed in LOOPBACK_HOSTS else (bracketed,)
    return {name + port for name in names}


def _api_gateway_domain(scope: Scope) -> str | None:
    """The domain a request came in on, as API Gateway tells the function (None: not through it)."""
    event = scope.get("aws.event")
    if not isinstance(event, Mapping):
        return None
    domain = event.get("requestContext", {}).get("domainName")
    return str(domain).lower() if domain else None


def own_origins(settings: Settings, scope: Scope) -> set[str]:
    """The origins allowed to send state-changing requests: the page's own, and the configured ones."""
    scheme = urlsplit(settings.public_url).scheme or "http"
    origins = {f"{scheme}://{netloc}" for netloc in _netloc_aliases(settings.public_url)}
    origins |= {origin.lower().rstrip("/") for origin in settings.allowed_origins}
    domain = _api_gateway_domain(scope)
    if domain:
        origins.add(f"https://{domain}")
    return origins


def host_allowed(settings: Settings, host: str) -> bool:
    if not host:
        return False
    host = host.lower()
    allowed = _netloc_aliases(settings.public_url) | {name.lower() for name in settings.allowed_hosts}
    # An allowed name without a port allows it on any port.
    return host in allowed or host.rsplit(":", 1)[0] in allowed


def require_json_from_own_origin(request: Request) -> None:
    """A route dependency for the state-changing routes: 415 unless the body is declared JSON,
    403 when a browser says another origin's page sent it."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        raise HTTPException(
            415, f"send the body as {JSON_MEDIA_TYPE} (Content-Type: {media_type[:60] or 'none'})"
        )
    origin = request.headers.get("origin")
    if origin is not None and origin.lower().rstrip("/") not in own_origins(get_settings(), request.scope):
        raise HTTPException(403, f"a page from {origin[:100]!r} may not send this; only the review page may")


def response_headers(path: str) -> dict[str, str]:
    """Headers a response to `path` gets unless the route set them itself."""
    cacheable = path.startswith(CACHEABLE_PREFIXES)
    return {
        **ALWAYS,
        "Cache-Control": "no-cache" if cacheable else "no-store",
        "Content-Security-Policy": DATA_CSP,
    }


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = {**response_headers(""), "content-type": JSON_MEDIA_TYPE, "content-length": str(len(body))}
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class SecurityMiddleware:
    """Refuses unknown hosts and adds the security headers to every response (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "aws.event" not in scope:
            host = Headers(scope=scope).get("host", "")
            if not host_allowed(get_settings(), host):
                await _refuse(send, 400, f"this server does not answer for host {host[:100]!r}")
                return
        extra = response_headers(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
