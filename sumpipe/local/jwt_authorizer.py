"""An HTTP API's JWT authorizer, as API Gateway documents it ("Controlling access to HTTP APIs with
JWT authorizers"), for the local stack's API front (sumpipe/local/http_api.py).

A request passes when the token in its identity source (the Authorization header; a "Bearer "
prefix is optional, as AWS allows) is a JWS signed by a key of the issuer's JWKS, with `iss` equal
to the configured issuer, `aud` in the audience list or, when the token has no `aud` (Cognito's
access tokens), `client_id` in it, and `exp`, `nbf` and `iat` valid now. API Gateway checks
nothing else (not `token_use`, not the scopes unless a route names some: ours name none), so
neither does this. Anything else is a 401, as API Gateway answers.

The keys come from the issuer's discovery document's `jwks_uri`. For an issuer that is a Cognito
user pool (`https://cognito-idp.<region>.amazonaws.com/<pool>`) they come from the emulator
instead, which serves the pool's JWKS at `<endpoint>/<pool>/.well-known/jwks.json`: the endpoint
variable routes every other AWS call there, and the pool exists only in the emulator. Keys are
cached per issuer and fetched again for a token whose `kid` is unknown (a rotated key), at most
once per REFETCH_INTERVAL_S so a stream of forged kids can't make the front hammer the issuer.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

COGNITO_ISSUER = re.compile(r"^https://cognito-idp\.[a-z0-9-]+\.amazonaws\.com/(?P<pool>[\w-]+)$")
# API Gateway accepts RS256 only (its documentation: "API Gateway supports RSA-based algorithms only").
ALGORITHMS = ("RS256",)
REFETCH_INTERVAL_S = 10.0
FETCH_TIMEOUT_S = 5.0
# No clock skew is allowed for exp/nbf/iat: the emulator that issues the tokens shares this clock.


class Unauthorized(Exception):
    """The request carries no valid token: the reason is for the log, never for the caller."""


@dataclass(frozen=True)
class JwtConfiguration:
    issuer: str
    audience: tuple[str, ...]
    identity_source: tuple[str, ...] = ("$request.header.Authorization",)


def _fetch_json(url: str) -> Any:
    if not url.startswith(("http://", "https://")):
        raise Unauthorized(f"not an http(s) URL: {url}")
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 (checked above)
        return json.loads(response.read())


class KeyCache:
    """Each issuer's JWKS, fetched on first use and again on an unknown kid."""

    def __init__(self, aws_endpoint: str, fetch: Callable[[str], Any] = _fetch_json) -> None:
        self.aws_endpoint = aws_endpoint.rstrip("/")
        self._fetch = fetch
        self._keys: dict[str, KeySet] = {}
        self._fetched_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def jwks_url(self, issuer: str) -> str:
        cognito = COGNITO_ISSUER.match(issuer)
        if cognito and self.aws_endpoint:
            return f"{self.aws_endpoint}/{cognito['pool']}/.well-known/jwks.json"
        discovery = _fetch_json_or_unauthorized(
            self._fetch, issuer.rstrip("/") + "/.well-known/openid-configuration"
        )
        if not isinstance(discovery, dict) or not isinstance(discovery.get("jwks_uri"), str):
            raise Unauthorized(f"{issuer}: its discovery document names no jwks_uri")
        return str(discovery["jwks_uri"])

    def key_set(self, issuer: str, kid: str | None) -> KeySet:
        with self._lock:
            cached = self._keys.get(issuer)
            known = cached is not None and any(key.kid == kid for key in cached.keys)
            recent = time.monotonic() - self._fetched_at.get(issuer, -REFETCH_INTERVAL_S) < REFETCH_INTERVAL_S
            if cached is not None and (known or recent):
                return cached
            document = _fetch_json_or_unauthorized(self._fetch, self.jwks_url(issuer))
            try:
                fetched = KeySet.import_key_set(document)
            except (JoseError, ValueError, TypeError, KeyError) as error:
                raise Unauthorized(f"{issuer}: its JWKS can't be read ({error})") from None
            self._keys[issuer], self._fetched_at[issuer] = fetched, time.monotonic()
            return fetched


def _fetch_json_or_unauthorized(fetch: Callable[[str], Any], url: str) -> Any:
    try:
        return fetch(url)
    except Unauthorized:
        raise
    except Exception as error:  # the issuer unreachable or answering nonsense: nobody is let in
        raise Unauthorized(f"could not fetch {url}: {error}") from None


def identity(headers: Mapping[str, str], configuration: JwtConfiguration) -> str:
    """The token from the request's identity source (only `$request.header.<name>` is supported:
    the template's); "Bearer " is dropped when present."""
    for source in configuration.identity_source:
        prefix = "$request.header."
        if not source.startswith(prefix):
            raise Unauthorized(f"identity source {source} is not supported locally")
        value = headers.get(source[len(prefix) :].lower(), "").strip()
        if value:
            scheme, _, rest = value.partition(" ")
            return rest.strip() if scheme.lower() == "bearer" and rest else value
    raise Unauthorized("no token in the identity source")


def verify(
    token: str, configuration: JwtConfiguration, keys: KeyCache, now: float | None = None
) -> dict[str, Any]:
    """The token's claims when it passes the authorizer (see the module docstring); else Unauthorized."""
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, UnicodeError) as error:
        raise Unauthorized(f"not a JWS: {error}") from None
    if header.get("alg") not in ALGORITHMS:
        raise Unauthorized(f"algorithm {header.get('alg')!r} is not accepted")
    key_set = keys.key_set(configuration.issuer, header.get("kid"))
    try:
        verified = jws.deserialize_compact(token, key_set, algorithms=list(ALGORITHMS))
        claims = json.loads(verified.payload)
    except (JoseError, ValueError, UnicodeError) as error:
        raise Unauthorized(f"signature not valid: {type(error).__name__}: {error}") from None
    if not isinstance(claims, dict):
        raise Unauthorized("the payload is not a JSON object")
    check_claims(claims, configuration, time.time() if now is None else now)
    return claims


def check_claims(claims: Mapping[str, Any], configuration: JwtConfiguration, now: float) -> None:
    if claims.get("iss") != configuration.issuer:
        raise Unauthorized(f"issuer {claims.get('iss')!r} is not {configuration.issuer!r}")
    audience = claims.get("aud")
    if audience is not None:
        offered: Sequence[Any] = audience if isinstance(audience, list) else [audience]
        if not any(item in configuration.audience for item in offered):
            raise Unauthorized(f"audience {audience!r} is not accepted")
    elif claims.get("client_id") not in configuration.audience:
        raise Unauthorized(f"client_id {claims.get('client_id')!r} is not accepted (and no aud)")
    expires, not_before, issued = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not _is_number(expires) or now >= expires:
        raise Unauthorized("expired or without exp")
    if not_before is not None and (not _is_number(not_before) or now < not_before):
        raise Unauthorized("not valid yet (nbf)")
    if issued is not None and (not _is_number(issued) or issued > now):
        raise Unauthorized("issued in the future (iat)")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def claims_as_strings(claims: Mapping[str, Any]) -> dict[str, str]:
    """The claims as API Gateway passes them to the function (requestContext.authorizer.jwt.claims):
    every value a string; a list is shown as `[a b]`, as API Gateway does."""
    shown = {}
    for name, value in claims.items():
        if isinstance(value, str):
            shown[name] = value
        elif isinstance(value, list):
            shown[name] = "[" + " ".join(str(item) for item in value) + "]"
        elif isinstance(value, bool):
            shown[name] = "true" if value else "false"
        elif isinstance(value, dict):
            shown[name] = json.dumps(value)
        else:
            shown[name] = str(value)
    return shown


def scopes(claims: Mapping[str, Any]) -> list[str] | None:
    """The token's scopes (its `scope` claim, space-separated), or None when it has none."""
    value = claims.get("scope")
    return value.split() if isinstance(value, str) and value else None
