"""The local stack's realtime API as AWS runs it: the template deployed into the emulator the way the
local stack deploys it (moto's CloudFormation, then the reviewer pool, the HTTP API and its JWT
authorizer made by API), IAM enforced, and the local HTTP API front (sumpipe/local/http_api.py)
in front of the API function run from its zip with its role's credentials.

Real HTTP to the front, real tokens from the emulator's Cognito (a reviewer made by the
administrator signs in unsigned with USER_PASSWORD_AUTH, then sets a password through the
NEW_PASSWORD_REQUIRED challenge, as the page does): the page's files are open, everything else
needs a token API Gateway's JWT authorizer would accept.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import httpx
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from joserfc import jwt
from joserfc.jwk import RSAKey

from sumpipe.local import motoserver
from sumpipe.local.resources import deploy_local_stack
from sumpipe.local.runtime import venv_site_packages
from sumpipe.local.stack import api_front, function_role_credentials

pytestmark = pytest.mark.slow

STACK = "apitest"
PASSWORD = "Temporary-12345"  # pragma: allowlist secret (a test user's, in the emulator)
NEW_PASSWORD = "Reviewer12345Pass"  # pragma: allowlist secret
TEXT = (
    "I bought these for my dog. He loves them and asks for more every evening. The bag was torn "
    "when it arrived, though. Customer service sent a new one within two days. I will buy them again."
)
# (method, path, body): what only a signed-in reviewer may call.
PROTECTED = [
    ("GET", "/health", None),
    ("GET", "/jobs", None),
    ("POST", "/summarize", {"text": TEXT, "sentences": 2}),
    ("GET", "/feedback.csv", None),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    state_dir = tmp_path_factory.mktemp("local-api")
    port = motoserver.free_port()
    server = motoserver.start(port, ["127.0.0.1"], state_dir / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    front = None
    with pytest.MonkeyPatch.context() as env:
        try:
            administrator = motoserver.create_administrator(endpoint)
            for name in motoserver.OTHER_IDENTITY_VARIABLES:
                env.delenv(name, raising=False)
            variables = {**motoserver.endpoint_environment(endpoint), **administrator}
            for name, value in {**variables, "AWS_EC2_METADATA_DISABLED": "true"}.items():
                env.setenv(name, value)
            session = boto3.session.Session()
            api_url = f"http://127.0.0.1:{motoserver.free_port()}"
            outputs = deploy_local_stack(
                session, STACK, network_cidr="127.77.0.0/16", api_url=api_url,
                # No worker host is started here: the workers' wheelhouse is never used.
                overrides={"WheelhouseKey": "unused/wheelhouse.tar"},
            )  # fmt: skip
            credentials = function_role_credentials(session, outputs["ApiFunctionName"])
            front = api_front(session, state_dir, STACK, outputs, credentials, api_url, endpoint, {})
            motoserver.enforce_iam(endpoint)
            front.start()
            cognito = session.client("cognito-idp")
            pool, client_id = outputs["ReviewerPoolId"], outputs["ReviewerPoolClientId"]
            cognito.admin_create_user(UserPoolId=pool, Username="ana", TemporaryPassword=PASSWORD)
            other_client = cognito.create_user_pool_client(UserPoolId=pool, ClientName="another-app")
            yield SimpleNamespace(
                url=outputs["ApiUrl"], endpoint=endpoint, state_dir=state_dir, session=session,
                outputs=outputs, pool=pool, client_id=client_id,
                other_client_id=other_client["UserPoolClient"]["ClientId"],
            )  # fmt: skip
        finally:
            if front is not None:
                front.stop()
            server.kill()
            server.wait()


def _unsigned_cognito(endpoint: str) -> Any:
    """Cognito as the page's browser calls it: no AWS credentials at all."""
    return boto3.client(
        "cognito-idp",
        endpoint_url=endpoint,
        region_name=motoserver.REGION,
        config=Config(signature_version=UNSIGNED),
    )


@pytest.fixture(scope="module")
def tokens(api: SimpleNamespace) -> dict[str, str]:
    """The reviewer's tokens, from a first sign-in as the page does it (NEW_PASSWORD_REQUIRED)."""
    cognito = _unsigned_cognito(api.endpoint)
    started = cognito.initiate_auth(
        ClientId=api.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "ana", "PASSWORD": PASSWORD},
    )
    assert started["ChallengeName"] == "NEW_PASSWORD_REQUIRED"
    answered = cognito.respond_to_auth_challenge(
        ClientId=api.client_id,
        ChallengeName="NEW_PASSWORD_REQUIRED",
        Session=started["Session"],
        ChallengeResponses={"USERNAME": "ana", "NEW_PASSWORD": NEW_PASSWORD},
    )
    return dict(answered["AuthenticationResult"])


def _call(url: str, method: str, path: str, body: Any, token: str | None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, url + path, json=body, headers=headers, timeout=60, follow_redirects=False)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _segment(claims: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


def _moto_signing_key() -> RSAKey:
    """The key moto's Cognito signs its tokens with (its JWKS's only key): to make a token that is
    signed right but expired."""
    from moto.utilities.utils import load_resource

    return RSAKey.import_key(load_resource("cognitoidp/resources/jwks-private.json"))


def test_the_page_and_its_files_are_open(api: SimpleNamespace) -> None:
    page = httpx.get(api.url + "/", timeout=60)
    assert page.status_code == 200, page.text
    assert "text/html" in page.headers["content-type"]
    script = httpx.get(api.url + "/static/page.js", timeout=60)
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_refused_without_a_token(api: SimpleNamespace, method: str, path: str, body: Any) -> None:
    response = _call(api.url, method, path, body, None)
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_refused_with_bad_tokens(api: SimpleNamespace, tokens: dict[str, str]) -> None:
    cognito = _unsigned_cognito(api.endpoint)
    other = cognito.initiate_auth(
        ClientId=api.other_client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "ana", "PASSWORD": NEW_PASSWORD},
    )["AuthenticationResult"]
    good = _claims(tokens["AccessToken"])
    expired_claims = {**good, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    expired = jwt.encode({"alg": "RS256", "kid": "dummy", "typ": "JWT"}, expired_claims, _moto_signing_key())
    stranger = RSAKey.generate_key(2048, parameters={"kid": "dummy"})
    forged = jwt.encode({"alg": "RS256", "kid": "dummy", "typ": "JWT"}, good, stranger)
    header, payload, signature = tokens["AccessToken"].split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    bad = {
        "another client's access token": other["AccessToken"],
        "another client's id token": other["IdToken"],
        "expired": expired,
        "signed with a key not in the JWKS": forged,
        "tampered signature": f"{header}.{payload}.{flipped}",
        "tampered payload": f"{header}.{_segment({**good, 'username': 'bo'})}.{signature}",
    }
    for reason, token in bad.items():
        for method, path, body in PROTECTED:
            response = _call(api.url, method, path, body, token)
            assert response.status_code == 401, (reason, method, path, response.text)
            assert response.json() == {"message": "Unauthorized"}


def test_the_reviewers_token_is_accepted(api: SimpleNamespace, tokens: dict[str, str]) -> None:
    for token in (tokens["AccessToken"], tokens["IdToken"]):
        assert _call(api.url, "GET", "/health", None, token).status_code == 200
    # Without "Bearer ", as API Gateway also accepts.
    bare = httpx.get(api.url + "/health", headers={"Authorization": tokens["AccessToken"]}, timeout=60)
    assert bare.status_code == 200
    jobs = _call(api.url, "GET", "/jobs", None, tokens["AccessToken"])
    assert jobs.status_code == 200, jobs.text
    summary = _call(api.url, "POST", "/summarize", {"text": TEXT, "sentences": 2}, tokens["AccessToken"])
    assert summary.status_code == 200, summary.text
    assert summary.json()["summary"]
    # A browser's POST from the page itself: its origin is the front's (SUMPIPE_PUBLIC_URL).
    from_page = _call(
        api.url, "POST", "/summarize", {"text": TEXT, "sentences": 1}, tokens["AccessToken"], Origin=api.url
    )
    assert from_page.status_code == 200, from_page.text
    export = _call(api.url, "GET", "/feedback.csv", None, tokens["AccessToken"])
    assert export.status_code in (200, 302, 303, 307), export.text


def test_limits_and_routing(api: SimpleNamespace, tokens: dict[str, str]) -> None:
    huge = httpx.post(api.url + "/summarize", content=b"x" * (10 * 1024 * 1024 + 1), timeout=60)
    assert huge.status_code == 413
    # Only GET is the open route's: any other method on / is $default's, and needs a token.
    assert httpx.post(api.url + "/", json={}, timeout=60).status_code == 401
    missing = _call(api.url, "GET", "/no-such-route", None, tokens["AccessToken"])
    assert missing.status_code == 404  # the app's own 404, through $default


def test_the_functions_lines_reach_its_log_group(api: SimpleNamespace, tokens: dict[str, str]) -> None:
    assert _call(api.url, "GET", "/health", None, tokens["AccessToken"]).status_code == 200
    logs = api.session.client("logs")
    events = logs.filter_log_events(logGroupName=f"/aws/lambda/{api.outputs['ApiFunctionName']}")["events"]
    assert any("START RequestId" in event["message"] for event in events)


def test_the_function_runs_from_its_zip(api: SimpleNamespace) -> None:
    """Its environments' `sumpipe` is the zip's: the venv's editable install of the project is not
    processed (python -I -S), only its site-packages stand in for the layers."""
    code_dir = api.state_dir / "api-code"
    probe = (
        "import sys; sys.path[:0] = sys.argv[1:]; import sumpipe, lambdas, fastapi; "
        "print(sumpipe.__file__); print(lambdas.__file__)"
    )
    layers = [str(path) for path in venv_site_packages()]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(code_dir), *layers],
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(line.startswith(str(code_dir)) for line in done.stdout.splitlines()), done.stdout
    pids = list((api.state_dir / "lambda").glob("*.pid"))
    assert pids, "no API execution environment was started"
    argv = Path(f"/proc/{pids[0].read_text().strip()}/cmdline").read_bytes().split(b"\0")
    assert argv[1:3] == [b"-I", b"-S"]
    assert str(code_dir).encode() in argv


# -- the front's API Gateway behaviour, against a stand-in function ------------------------------


class _StandIn:
    """An execution environment answering each event with `answer(event)` (a reply line)."""

    def __init__(self, answer: Any) -> None:
        self.answer, self.events = answer, []

    def invoke_raw(self, event: dict[str, Any], timeout_s: float | None = None) -> bytes:
        self.events.append(event)
        return bytes(self.answer(event, timeout_s))

    def stop(self) -> None:
        pass


def _front(answer: Any, *, timeout_s: float = 30.0, function_timeout_s: float = 29.0) -> Any:
    from sumpipe.local import http_api, jwt_authorizer

    routes = (
        http_api.Route("GET /", "NONE", "arn:aws:lambda:us-east-1:123456789012:function:f", timeout_s),
        http_api.Route(
            "GET /static/{proxy+}", "NONE", "arn:aws:lambda:us-east-1:123456789012:function:f", timeout_s
        ),
        http_api.Route(
            "GET /jobs/{id}", "AWS_IAM", "arn:aws:lambda:us-east-1:123456789012:function:f", timeout_s
        ),
        http_api.Route("$default", "NONE", "arn:aws:lambda:us-east-1:123456789012:function:f", timeout_s),
    )
    stand_in = _StandIn(answer)
    pool = http_api.FunctionPool(lambda _index: stand_in, size=1)  # type: ignore[arg-type,return-value]
    front = http_api.HttpApiFront(
        http_api.HttpApi("abc123", "123456789012", routes), {"f": pool}, jwt_authorizer.KeyCache(""),
        function_timeouts_s={"f": function_timeout_s},
    )  # fmt: skip
    front.start()
    return front, stand_in


def _reply(result: Any) -> bytes:
    return json.dumps({"result": result}).encode()


def test_the_event_and_the_response_as_api_gateway_makes_them() -> None:
    result = {
        "statusCode": 201,
        "headers": {"content-type": "application/octet-stream", "x-one": "1"},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": base64.b64encode(b"\x00\xff").decode(),
        "isBase64Encoded": True,
    }
    front, stand_in = _front(lambda _event, _timeout: _reply(result))
    try:
        response = httpx.post(
            front.url + "/static/a/b.js?x=1&x=2&y=",
            content=b"\x89PNG",
            headers={"Content-Type": "image/png", "Cookie": "s=1; t=2", "X-Multi": "a"},
            timeout=10,
        )
        assert response.status_code == 201
        assert response.content == b"\x00\xff"
        assert response.headers["x-one"] == "1"
        assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]
        event = stand_in.events[-1]
        # POST is not the GET route's: $default's.
        assert event["routeKey"] == "$default"
        assert event["rawPath"] == "/static/a/b.js" and event["rawQueryString"] == "x=1&x=2&y="
        assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
        assert event["cookies"] == ["s=1", "t=2"] and "cookie" not in event["headers"]
        assert event["isBase64Encoded"] and base64.b64decode(event["body"]) == b"\x89PNG"
        context = event["requestContext"]
        assert context["domainName"] == front.url.removeprefix("http://")
        assert context["http"]["method"] == "POST" and context["stage"] == "$default"
        assert "authorizer" not in context
        assert httpx.get(front.url + "/static/a/b.js", timeout=10).status_code == 201
        assert stand_in.events[-1]["routeKey"] == "GET /static/{proxy+}"
        assert "body" not in stand_in.events[-1]
        # SigV4 is not verified locally: an AWS_IAM route refuses everything rather than pretend.
        assert httpx.get(front.url + "/jobs/1", timeout=10).status_code == 403
    finally:
        front.stop()


def test_api_gateways_limits() -> None:
    from sumpipe.local.http_api import RESPONSE_PAYLOAD_LIMIT
    from sumpipe.local.runtime import FunctionError, InvocationTimeout

    def answer(event: dict[str, Any], timeout_s: float | None) -> bytes:
        match event["rawPath"]:
            case "/big":
                return _reply({"statusCode": 200, "body": "x" * RESPONSE_PAYLOAD_LIMIT})
            case "/raises":
                raise FunctionError("f raised ValueError")
            case "/slow":
                raise InvocationTimeout("f timed out")
            case _:
                return _reply({"hello": "world"})

    front, _ = _front(answer)
    try:
        internal = {"message": "Internal Server Error"}
        assert httpx.get(front.url + "/big", timeout=10).json() == internal
        assert httpx.get(front.url + "/raises", timeout=10).json() == internal
        # The function's own timeout (29 s) ends before the integration's (30 s): a function error.
        assert httpx.get(front.url + "/slow", timeout=10).status_code == 500
        inferred = httpx.get(front.url + "/other", timeout=10)
        assert inferred.status_code == 200 and inferred.json() == {"hello": "world"}
    finally:
        front.stop()
    front, _ = _front(answer, timeout_s=5.0, function_timeout_s=29.0)
    try:  # the integration gives up first
        assert httpx.get(front.url + "/slow", timeout=10).status_code == 503
    finally:
        front.stop()
