"""The AWS emulator of the local stack: moto in server mode, in a process of its own.

It listens on loopback (for the CLI and the Lambda runtime) and, when the hosts live in network
namespaces, also on the bridge address (for the job runner on the hosts). Both listeners are in
one process, so they serve the same emulated account. It never binds a wildcard address.

    python -m sumpipe.local.motoserver --port 4566 --bind 127.0.0.1 --bind 10.200.0.1
"""

from __future__ import annotations

import argparse
import base64
import hmac
import importlib
import inspect
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, quote, urlencode, urlparse

import boto3

REGION = "us-east-1"
# Until IAM is enforced moto accepts any credentials: these placeholders (not secrets) make the
# calls that create the administrator below.
BOOTSTRAP_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bootstrap", "AWS_SECRET_ACCESS_KEY": "bootstrap"}
# The operator principal of the local stack (`sumpipe deploy`, `submit`, `jobs`, `logs`, the stack
# daemon itself): allowed everything, as an account administrator is.
ADMIN_USER = "sumpipe-local-admin"
# Other ways a shell names an AWS identity: dropped wherever the administrator's key is put in
# place, since the emulator knows no identity but its own.
OTHER_IDENTITY_VARIABLES = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def endpoint_environment(endpoint: str) -> dict[str, str]:
    """Where the emulator is and its region (standard variables only; credentials come separately:
    the administrator's for operators, a role's for functions and instances)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}


def create_administrator(endpoint: str) -> dict[str, str]:
    """An IAM user allowed everything, and its access key as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY:
    made before IAM is enforced, it is the principal every operator command uses."""
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=BOOTSTRAP_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=BOOTSTRAP_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    iam.create_user(UserName=ADMIN_USER)
    iam.put_user_policy(
        UserName=ADMIN_USER, PolicyName="administrator", PolicyDocument=json.dumps(ADMIN_POLICY)
    )
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def enforce_iam(endpoint: str, enforced: bool = True) -> None:
    """From now on the emulator checks every request against its caller's IAM policies (actions,
    and resources for S3; see sumpipe/local/resources.py), or, with `enforced=False`, no longer."""
    if not endpoint.startswith("http://"):
        raise ValueError(f"not the local emulator's endpoint: {endpoint}")
    # Not form-encoded: moto reads the raw body, which Flask leaves empty for a form.
    request = urllib.request.Request(  # noqa: S310
        f"{endpoint}/moto-api/reset-auth",
        data=b"0" if enforced else b"inf",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only, checked above)
        if response.status != 200:
            raise RuntimeError(f"the emulator refused to enforce IAM: HTTP {response.status}")


class EmulatorError(RuntimeError):
    """The emulator can't stand in for AWS: one line saying why."""


def start(port: int, binds: list[str], log_path: Path, timeout_s: float = 20.0) -> subprocess.Popen[bytes]:
    """Starts the server process and returns once every listener accepts connections; EmulatorError
    with the line it ended on if it exits first (e.g. a moto whose hooked methods changed)."""
    argv = [sys.executable, "-m", "sumpipe.local.motoserver", "--port", str(port)]
    for address in binds:
        argv += ["--bind", address]
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    pending = list(binds)
    while pending:
        if process.poll() is not None:
            with log_path.open("rb") as log:
                log.seek(offset)
                lines = log.read().decode(errors="replace").strip().splitlines()
            last = lines[-1].strip() if lines else "no output"
            raise EmulatorError(f"moto server exited ({process.returncode}): {last} (log: {log_path})")
        try:
            with socket.create_connection((pending[0], port), timeout=0.5):
                pending.pop(0)
                continue
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise EmulatorError(
                    f"moto server not listening on {pending[0]}:{port} after {timeout_s}s"
                ) from None
        time.sleep(0.02)
    return process


# moto's private methods this server replaces (see the two functions below), with the parameters
# each replacement is written for. moto may change them in any release, so serve() checks them
# before replacing anything.
HOOKED_METHODS = {
    ("moto.core.authorization", "ActionAuthenticatorMixin", "_authenticate_and_authorize_s3_action"): (
        "self", "bucket_name", "key_name",
    ),
    ("moto.dynamodb.responses", "DynamoHandler", "call_action"): ("self",),
    ("moto.iam.access_control", "IAMRequestBase", "_create_aws_request"): ("self",),
}  # fmt: skip


def hooked_method_problem() -> str | None:
    """One line naming moto's version and the first hooked method that is missing or whose
    parameters differ from what its replacement expects; None when every one is as expected."""
    import moto

    for (module, owner, name), expected in HOOKED_METHODS.items():
        try:
            method = getattr(getattr(importlib.import_module(module), owner, None), name, None)
        except ImportError:
            method = None
        wanted = f"{module}.{owner}.{name}({', '.join(expected)})"
        if not callable(method):
            found = "it has no such method"
        else:
            try:
                parameters = tuple(inspect.signature(method).parameters.values())
            except (TypeError, ValueError):
                parameters = None
            if (
                parameters is not None
                and tuple(p.name for p in parameters) == expected
                and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
            ):
                continue
            found = f"it has {name}{inspect.signature(method)}" if parameters is not None else "it differs"
        return (
            f"moto {moto.__version__}: the local stack's emulator replaces {wanted}, but {found}; "
            "run scripts/setup to install the locked moto"
        )
    return None


# Cognito's operations AWS lists as unsigned ("signed versus unsigned APIs" in the user pools
# guide): a browser calls them with no AWS credentials, authorized by the client id, the session of
# a challenge or the user's own token. moto exempts some (PUBLIC_OPERATIONS, a class attribute of
# its ActionAuthenticatorMixin, read on every request) and answers the others, once IAM is enforced,
# with an internal error (KeyError HTTP_AUTHORIZATION): the review page could not finish a first
# sign-in (NEW_PASSWORD_REQUIRED) nor sign out. serve() adds these to moto's list.
UNSIGNED_COGNITO_OPERATIONS = tuple(
    f"AWSCognitoIdentityProviderService.{name}"
    for name in (
        "InitiateAuth",
        "RespondToAuthChallenge",
        "GlobalSignOut",
        "RevokeToken",
        "ChangePassword",
        "ForgotPassword",
        "ConfirmForgotPassword",
        "SignUp",
        "ConfirmSignUp",
        "ResendConfirmationCode",
        "GetUser",
        "DeleteUser",
        "UpdateUserAttributes",
        "DeleteUserAttributes",
        "VerifyUserAttribute",
        "GetUserAttributeVerificationCode",
        "AssociateSoftwareToken",
        "VerifySoftwareToken",
        "SetUserMFAPreference",
        "ListDevices",
        "GetDevice",
        "ForgetDevice",
        "ConfirmDevice",
        "UpdateDeviceStatus",
    )
)
PUBLIC_OPERATIONS_ATTRIBUTE = ("moto.core.authorization", "ActionAuthenticatorMixin", "PUBLIC_OPERATIONS")


def public_operations_problem() -> str | None:
    """One line when moto no longer has the list of operations it serves unsigned; else None."""
    import moto

    module, owner, name = PUBLIC_OPERATIONS_ATTRIBUTE
    try:
        operations = getattr(getattr(importlib.import_module(module), owner, None), name, None)
    except ImportError:
        operations = None
    if isinstance(operations, list) and all(isinstance(item, str) for item in operations):
        return None
    return (
        f"moto {moto.__version__}: the local stack's emulator extends the list {module}.{owner}.{name}, "
        "but it has no such list; run scripts/setup to install the locked moto"
    )


def serve_unsigned_cognito_operations() -> None:
    """Cognito's unsigned operations (UNSIGNED_COGNITO_OPERATIONS) served unsigned, as AWS does,
    once IAM is enforced. moto authorizes each of them as its own code does, by the token or the
    session in the request, or not at all: the emulator is no stricter and no laxer than that."""
    from moto.core.authorization import ActionAuthenticatorMixin

    public = ActionAuthenticatorMixin.PUBLIC_OPERATIONS
    public.extend(name for name in UNSIGNED_COGNITO_OPERATIONS if name not in public)


# Methods whose requests carry no body: their SigV4 payload hash is the empty string's.
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE"})


def check_bodyless_signatures_as_signed() -> None:
    """A signed GET to a REST service (Lambda's GetFunctionConfiguration, API Gateway's GetApis, ...)
    checked over the empty body it was signed with, as AWS checks it.

    With IAM enforced, moto recomputes a signature over `body or data`, and for a bodyless request
    of a REST service its `data` is the request's headers: every such GET was refused with
    SignatureDoesNotMatch, the administrator's included, so `sumpipe reviewers add` (which reads
    the API function's configuration) could not run against the local stack. It replaces moto's
    private IAMRequestBase._create_aws_request (checked on start by hooked_method_problem()): the
    request it builds is kept, with the empty body in place of the headers."""
    from moto.iam.access_control import IAMRequestBase

    create = IAMRequestBase._create_aws_request
    if getattr(create, "bodyless", False):
        return

    def create_aws_request(self: Any) -> Any:
        request = create(self)
        if not self._body and str(self._method).upper() in _BODYLESS_METHODS:
            request.data = b""
        return request

    create_aws_request.bodyless = True  # type: ignore[attr-defined]
    IAMRequestBase._create_aws_request = create_aws_request  # type: ignore[method-assign]


def make_dynamodb_requests_atomic() -> None:
    """Each DynamoDB request applied whole, as DynamoDB does; moto doesn't, under concurrency.

    The server answers each request on its own thread, and moto's DynamoDB holds nothing while
    it works: an UpdateItem checks its condition and then writes, so two conditional writes can
    both pass; and a TransactWriteItems that is cancelled restores a deep copy of the whole table
    taken when it began, undoing every write other requests made meanwhile. The ledger's
    exclusions rely on DynamoDB's guarantees (a conditional write is atomic, a cancelled
    transaction writes nothing), so under the emulator a refused job assignment once brought back
    a stop mark that its stopper had already removed, and the instance refused jobs until the
    mark's lease ran out. One lock around every DynamoDB request, serialization of the answer
    included, gives the emulator DynamoDB's behaviour. Other emulators fixed the same race in
    themselves (floci-io/floci#572, stackshy/cloudemu#661). It replaces moto's private
    DynamoHandler.call_action (checked on start by hooked_method_problem()): moto has no hook
    around a request's handling but its internal WSGI app, which ThreadedMotoServer won't take."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "serialized", False):
        return
    lock = threading.Lock()
    handle = DynamoHandler.call_action

    def call_action(self: DynamoHandler) -> object:
        with lock:
            return handle(self)

    call_action.serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign,assignment]


# The SigV4 fields of a presigned URL's query and of a browser form's POST policy.
_QUERY_SIGNATURE = "X-Amz-Signature"
_FORM_SIGNATURE = "x-amz-signature"
# Form fields a POST policy needn't name (AWS: the signature, the policy, the file, x-ignore-*).
_UNCONDITIONED_FIELDS = frozenset({"policy", "x-amz-signature", "file"})


def authenticate_presigned_s3_requests() -> None:
    """S3's two ways of handing a browser a signed request, presigned URLs and POST policies,
    checked as S3 checks them once IAM is enforced.

    moto reads only the Authorization header: with IAM enforced, a presigned GET or a browser's
    form POST fails with an internal error (there is no header to read), so the review page's
    upload and download could not be rehearsed. Here each is checked as S3 does: the SigV4
    signature (over the canonical query of a URL, over the policy document of a form) with the
    signer's secret; the expiry; for a form, every policy condition against the form's fields and
    the file's size, and every field against the conditions; then the signer's IAM permission for
    the action on the object, as for any request. A request with no signature at all is anonymous,
    and refused.

    Why it replaces moto's private `ActionAuthenticatorMixin._authenticate_and_authorize_s3_action`
    (checked on start by hooked_method_problem()): moto has no documented hook for how a request
    is authenticated, and its check is not at the edge of the server but inside each S3 handler,
    which calls that method once it has parsed the bucket, the key and the IAM action. A WSGI
    middleware around the app ThreadedMotoServer serves (DomainDispatcherApplication, itself
    internal: ThreadedMotoServer takes no app) could verify a presigned URL or a POST policy, but
    can't make moto serve the request afterwards: the handler's own check would still read the
    Authorization header the request lacks. The only ways past it are global (the auth switch
    INITIAL_NO_AUTH_ACTION_COUNT, shared by the server's threads) or forging a header signature
    with the signer's secret, reimplementing moto's canonical request, after which moto would
    authorize a POST upload on the bucket only, not on the key the policy names. And the signer's
    secret and policies are in moto's IAM backend either way, reached through moto's own
    S3IAMRequest as for a header-signed request."""
    from moto.core.authorization import ActionAuthenticatorMixin

    authorize = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action
    if getattr(authorize, "presigned", False):
        return

    def authenticate(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        from moto import settings

        enforced = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
        if not enforced or "Authorization" in self.headers:
            return authorize(self, bucket_name=bucket_name, key_name=key_name)
        if self.method == "OPTIONS" and "Access-Control-Request-Method" in self.headers:
            # A browser's CORS preflight: never signed, and answered by AWS without credentials (S3
            # by the bucket's CORS rules; Cognito's endpoint for the page's sign-in, which moto
            # routes here, a preflight carrying no X-Amz-Target to name its service).
            return None
        query = parse_qs(urlparse(self.uri).query, keep_blank_values=True)
        if _QUERY_SIGNATURE in query:
            return _check_presigned_url(self, {k: v[0] for k, v in query.items()}, bucket_name, key_name)
        # The form's own fields (moto adds names of its own to its querystring).
        form = {k.lower(): v for k, v in (getattr(self, "form_data", None) or {}).items()}
        if _FORM_SIGNATURE in form:
            return _check_post_policy(self, form, bucket_name)
        _deny("Anonymous access is not allowed: the request is not signed")

    authenticate.presigned = True  # type: ignore[attr-defined]
    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = authenticate  # type: ignore[method-assign]


def _deny(message: str) -> NoReturn:
    from moto.s3.exceptions import S3ClientError

    raise S3ClientError("AccessDenied", message)


def _signer_request(response: Any, credential: str, token: str | None, action: str) -> Any:
    """moto's own IAM request for the signer named by `credential` (AKID/date/region/s3/aws4_request):
    it finds the signer's secret and policies, as for a request signed in its header."""
    from moto.iam.access_control import S3IAMRequest

    if len(credential.split("/")) != 5:
        _deny("The credential is not an access key id and a scope (AKID/date/region/s3/aws4_request)")
    headers = {"Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=-"}
    if token:
        headers["X-Amz-Security-Token"] = token
    return S3IAMRequest(
        account_id=response.current_account,
        method=response.method,
        path=response.raw_path,
        data=response.data,
        body=b"",
        headers=headers,
        action=action,
    )


def _check_expiry(signed_at: datetime, expires_at: datetime) -> None:
    now = datetime.now(UTC)
    if now > expires_at:
        _deny(f"Request has expired ({expires_at:%Y-%m-%dT%H:%M:%SZ})")
    if signed_at > now + timedelta(minutes=15):  # S3's allowance for clock skew
        _deny("Request is signed for a time in the future")


def _check_presigned_url(response: Any, query: dict[str, str], bucket: str | None, key: str | None) -> None:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    if query.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        _deny("Only AWS4-HMAC-SHA256 presigned URLs are supported")
    try:
        signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires_in = int(query["X-Amz-Expires"])
        credential = query["X-Amz-Credential"]
    except (KeyError, ValueError):
        _deny("The presigned URL lacks X-Amz-Date, X-Amz-Expires or X-Amz-Credential")
    if not 1 <= expires_in <= 604800:
        _deny("X-Amz-Expires must be between 1 second and 7 days")
    _check_expiry(signed_at, signed_at + timedelta(seconds=expires_in))
    iam = _signer_request(response, credential, query.get("X-Amz-Security-Token"), response._get_action())
    # Recomputed as the signer computed it: the same URL (the signature left out) and timestamp,
    # with the signer's secret, by botocore's own query signer.
    unsigned = urlencode([(k, v) for k, v in query.items() if k != _QUERY_SIGNATURE], quote_via=quote)
    signed_headers = query.get("X-Amz-SignedHeaders", "host").split(";")
    headers = {name: response.headers.get(name, "") for name in signed_headers if name != "host"}
    request = AWSRequest(
        method=response.method,
        url=f"http://{response.headers['Host']}{response.raw_path}?{unsigned}",
        headers=headers,
    )
    request.context["timestamp"] = query["X-Amz-Date"]
    signer = S3SigV4QueryAuth(iam._access_key.create_credentials(), "s3", iam._region, expires=expires_in)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, query[_QUERY_SIGNATURE]):
        iam._raise_signature_does_not_match()
    arn = f"{bucket or '*'}/{key}" if key else (bucket or "*")
    iam.check_action_permitted(f"arn:aws:s3:::{arn}")


def _check_post_policy(response: Any, form: dict[str, str], bucket: str | None) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    if form.get("x-amz-algorithm") != "AWS4-HMAC-SHA256" or "policy" not in form:
        _deny("A POST upload needs a policy signed with AWS4-HMAC-SHA256")
    try:
        policy = json.loads(base64.b64decode(form["policy"], validate=True))
        expires_at = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
        signed_at = datetime.strptime(form["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        conditions = list(policy["conditions"])
    except (KeyError, ValueError, TypeError):
        _deny("Invalid Policy: the policy, its expiration, its conditions or x-amz-date is malformed")
    _check_expiry(signed_at, expires_at)
    iam = _signer_request(
        response, form.get("x-amz-credential", ""), form.get("x-amz-security-token"), "PutObject"
    )
    signer = SigV4Auth(iam._access_key.create_credentials(), "s3", iam._region)
    request = AWSRequest(method="POST", url="http://s3")
    request.context["timestamp"] = form["x-amz-date"]
    if not hmac.compare_digest(signer.signature(form["policy"], request), form[_FORM_SIGNATURE]):
        iam._raise_signature_does_not_match()
    fields = {**form, "bucket": bucket or ""}
    conditioned = _check_conditions(conditions, fields, len(response.body or b""))
    unnamed = sorted(
        name
        for name in form
        if name not in conditioned | _UNCONDITIONED_FIELDS and not name.startswith("x-ignore-")
    )
    if unnamed:
        _deny(f"Invalid according to Policy: Extra input fields: {', '.join(unnamed)}")
    iam.check_action_permitted(f"arn:aws:s3:::{bucket}/{form.get('key', '')}")


def _check_conditions(conditions: list[Any], fields: dict[str, str], size: int) -> set[str]:
    """Every condition holds for the form's fields (lowercased names) and the file's size; the
    names of the fields the conditions cover."""
    covered: set[str] = set()
    for condition in conditions:
        if isinstance(condition, dict) and len(condition) == 1:
            [(name, value)] = condition.items()
            operator, name = "eq", name.lower()
        elif isinstance(condition, list) and len(condition) == 3 and condition[0] == "content-length-range":
            if not int(condition[1]) <= size <= int(condition[2]):
                _deny(f"Your proposed upload size {size} is outside the policy's content-length-range")
            continue
        elif isinstance(condition, list) and len(condition) == 3 and str(condition[1]).startswith("$"):
            operator, name, value = str(condition[0]).lower(), str(condition[1])[1:].lower(), condition[2]
        else:
            _deny(f"Invalid Policy: unknown condition {json.dumps(condition)}")
        actual = fields.get(name)
        if actual is None or not (
            actual == value if operator == "eq" else operator == "starts-with" and actual.startswith(value)
        ):
            _deny(f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}")
        covered.add(name)
    return covered


def serve(port: int, binds: list[str]) -> None:
    from moto.server import ThreadedMotoServer

    problem = hooked_method_problem() or public_operations_problem()
    if problem is not None:
        sys.exit(problem)  # one line on stderr, which start() reports
    make_dynamodb_requests_atomic()
    authenticate_presigned_s3_requests()
    check_bodyless_signatures_as_signed()
    serve_unsigned_cognito_operations()
    servers = [ThreadedMotoServer(ip_address=address, port=port, verbose=False) for address in binds]
    for server in servers:
        server.start()
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stopping:
        time.sleep(0.2)
    for server in servers:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="moto server for the local stack")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", action="append", required=True, help="address to listen on (repeatable)")
    args = parser.parse_args()
    if any(ipaddress.ip_address(address).is_unspecified for address in args.bind):
        parser.error("refusing to listen on a wildcard address")
    print(f"moto server pid {os.getpid()} on {', '.join(args.bind)} port {args.port}", flush=True)
    serve(args.port, args.bind)


if __name__ == "__main__":
    main()
