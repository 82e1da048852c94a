"""Reviewers signed in with Cognito, when the deployed HTTP API takes a JWT (settings.auth_issuer).

API Gateway checks the token before the function sees a request (every route but the page and its
files), so the app verifies nothing itself: it tells the page where to sign in (a `<meta>` in the
page, so no call is needed before signing in), lets the page talk to Cognito (the page's
Content-Security-Policy), and reads who is signed in from the claims API Gateway passes on
(`requestContext.authorizer.jwt.claims`, which Mangum hands over as `scope["aws.event"]`).

Under `sumpipe serve`, or with IAM auth, auth_issuer is empty: no sign-in, no claims.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sumpipe.settings import Settings

META_NAME = "sumpipe-auth"
# A Cognito user pool's issuer: https://cognito-idp.<region>.amazonaws.com/<pool id>.
COGNITO_HOST = re.compile(r"cognito-idp\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")


def auth_endpoint(settings: Settings) -> str:
    """Where the page sends Cognito's calls: the configured endpoint, else the issuer's Cognito
    service; "" when neither is known (an issuer that is not Cognito's, and no endpoint set)."""
    if settings.auth_endpoint:
        return settings.auth_endpoint
    parts = urlsplit(settings.auth_issuer)
    if parts.scheme == "https" and COGNITO_HOST.fullmatch(parts.hostname or ""):
        return f"https://{parts.hostname}/"
    return ""


def page_config(settings: Settings) -> dict[str, str] | None:
    """What the page needs to sign reviewers in; None when it has no sign-in."""
    endpoint = auth_endpoint(settings)
    if not (settings.auth_issuer and settings.auth_client_id and endpoint):
        return None
    return {"endpoint": endpoint, "client_id": settings.auth_client_id}


def endpoint_origin(endpoint: str) -> str:
    """The endpoint's origin, as a CSP source (scheme://host[:port])."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def meta_tag(config: Mapping[str, str]) -> str:
    """The page's `<meta>` carrying the config: JSON, HTML-escaped (quotes included), so a setting's
    value can't end the attribute."""
    return f'<meta name="{META_NAME}" content="{html.escape(json.dumps(config), quote=True)}">'


def signed_in_user(scope: Mapping[str, Any]) -> str:
    """Who API Gateway's JWT authorizer let in: a Cognito access token's `username`, else the
    token's `sub`; "" without claims (`sumpipe serve`, IAM auth, REST API events)."""
    event = scope.get("aws.event")
    if not isinstance(event, Mapping):
        return ""
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    jwt = authorizer.get("jwt") if isinstance(authorizer, Mapping) else None
    claims = jwt.get("claims") if isinstance(jwt, Mapping) else None
    if not isinstance(claims, Mapping):
        return ""
    for name in ("username", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""
