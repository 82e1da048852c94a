"""`sumpipe reviewers add | list | remove` against moto (a server on loopback, as the local stack's
emulator): the pool is found from the API function's SUMPIPE_AUTH_ISSUER as on AWS; a reviewer added
signs in with the printed temporary password and is asked for a new one; the other-issuer, IAM and
missing-stack cases end with one line and exit status 1."""

from __future__ import annotations

import io
import json
import re
import string
import zipfile
from typing import Any

import pytest

from sumpipe.ops.cli import main
from sumpipe.ops.commands import reviewers

STACK = "revs"
PAGE = "https://abc123.execute-api.us-east-1.amazonaws.com/"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def _api_function(session: Any, variables: dict[str, str], name: str = f"{STACK}-api") -> None:
    """A function named as the template names the stack's API function, with `variables`."""
    iam = session.client("iam")
    try:
        role = iam.get_role(RoleName="api-role")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        trust = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }],
        }
        role = iam.create_role(RoleName="api-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    session.client("lambda").create_function(
        FunctionName=name, Runtime="python3.12", Role=role, Handler="handler.lambda_handler",
        Code={"ZipFile": _zip()}, Environment={"Variables": variables},
    )  # fmt: skip


@pytest.fixture
def pool(moto_session: Any) -> dict[str, str]:
    """The stack's reviewer pool and page client as deploy/template.yaml makes them, and its API
    function naming the pool as its issuer."""
    cognito = moto_session.client("cognito-idp")
    pool_id = cognito.create_user_pool(
        PoolName=f"{STACK}-reviewers",
        AdminCreateUserConfig={"AllowAdminCreateUserOnly": True},
        Policies={"PasswordPolicy": {"MinimumLength": 12, "RequireLowercase": True, "RequireUppercase": True,
                                     "RequireNumbers": True, "RequireSymbols": False}},
    )["UserPool"]["Id"]  # fmt: skip
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName=f"{STACK}-review-page", GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]  # fmt: skip
    issuer = f"https://cognito-idp.us-east-1.amazonaws.com/{pool_id}"
    _api_function(moto_session, {
        "SUMPIPE_AUTH_ISSUER": issuer, "SUMPIPE_AUTH_CLIENT_ID": client_id, "SUMPIPE_PUBLIC_URL": PAGE,
    })  # fmt: skip
    return {"pool_id": pool_id, "client_id": client_id}


def _sumpipe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    """`sumpipe args` in this process: (exit status, stdout lines, stderr lines)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def _one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = _sumpipe(capsys, *args)
    assert (code, out) == (1, []), err
    [line] = err
    assert line.startswith("sumpipe reviewers: error: ")
    return line.removeprefix("sumpipe reviewers: error: ")


def test_add_list_sign_in_remove(
    moto_session: Any, pool: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _sumpipe(capsys, "reviewers", "add", "alice", "--stack", STACK)
    assert (code, err) == (0, [])
    assert out[0] == f"added reviewer alice to user pool {pool['pool_id']}"
    password = re.fullmatch(r"temporary password: (\S+)", out[1])[1]  # type: ignore[index]
    assert out[2:] == [
        f"review page: {PAGE}",
        "the first sign-in asks for a new password (12+ characters, upper and lower case, a digit)",
    ]

    code, out, err = _sumpipe(capsys, "reviewers", "list", "--stack", STACK)
    assert (code, err) == (0, [])
    assert out[0].split() == ["USERNAME", "STATUS", "ENABLED", "CREATED"]
    [row] = out[1:]
    assert row.split()[:3] == ["alice", "FORCE_CHANGE_PASSWORD", "yes"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", " ".join(row.split()[3:]))

    # The page's first sign-in, with the printed password: Cognito asks for a new one.
    cognito = moto_session.client("cognito-idp")
    answer = cognito.initiate_auth(
        ClientId=pool["client_id"], AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "alice", "PASSWORD": password},
    )  # fmt: skip
    assert answer["ChallengeName"] == "NEW_PASSWORD_REQUIRED"

    # Added twice: one line, the pool unchanged.
    line = _one_line_error(capsys, "reviewers", "add", "alice", "--stack", STACK)
    assert line.startswith(f"alice is already a reviewer in {pool['pool_id']}")

    code, out, err = _sumpipe(capsys, "reviewers", "remove", "alice", "--stack", STACK)
    assert (code, err) == (0, [])
    assert out[0] == f"removed reviewer alice from user pool {pool['pool_id']}"
    assert cognito.list_users(UserPoolId=pool["pool_id"])["Users"] == []
    line = _one_line_error(capsys, "reviewers", "remove", "alice", "--stack", STACK)
    assert line.startswith(f"no reviewer alice in {pool['pool_id']}")


def test_with_an_email_cognito_sends_the_invitation(
    moto_session: Any, pool: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["reviewers", "add", "bob", "--email", "bob@example.com", "--stack", STACK]
    code, out, err = _sumpipe(capsys, *args)
    assert (code, err) == (0, [])
    assert not any("password:" in line for line in out)
    assert "Cognito emails the invitation, with a temporary password, to bob@example.com" in out
    user = moto_session.client("cognito-idp").admin_get_user(UserPoolId=pool["pool_id"], Username="bob")
    attributes = {a["Name"]: a["Value"] for a in user["UserAttributes"]}
    assert (attributes["email"], attributes["email_verified"]) == ("bob@example.com", "true")
    assert user["UserStatus"] == "FORCE_CHANGE_PASSWORD"


def test_the_region_and_stack_may_follow_the_action(
    moto_session: Any,
    pool: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUMPIPE_STACK_NAME", STACK)
    code, out, err = _sumpipe(capsys, "reviewers", "list", "--region", "us-east-1")
    assert (code, out[1:], err) == (0, [], [])


def test_another_issuer_holds_its_own_reviewers(
    moto_session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _api_function(moto_session, {"SUMPIPE_AUTH_ISSUER": "https://example.eu.auth0.com/"})
    line = _one_line_error(capsys, "reviewers", "add", "alice", "--stack", STACK)
    assert line == (
        f"the API of stack '{STACK}' accepts tokens from https://example.eu.auth0.com/, not a "
        "Cognito user pool's: reviewers are added and removed at that issuer"
    )


@pytest.mark.parametrize("variables", [{}, {"SUMPIPE_AUTH_ISSUER": ""}])
def test_iam_auth_has_no_reviewers(
    moto_session: Any, variables: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _api_function(moto_session, variables)
    line = _one_line_error(capsys, "reviewers", "list", "--stack", STACK)
    assert line.startswith(f"the API of stack '{STACK}' takes SigV4-signed requests (ApiAuth=iam)")
    assert line.endswith(f"`sumpipe deploy --api --stack {STACK} --param ApiAuth=jwt`")


def test_no_api_no_stack(moto_session: Any, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, "reviewers", "list", "--stack", STACK)
    assert line.startswith(f"stack '{STACK}' not found: name yours with --stack")


def test_a_stack_without_its_api(moto_session: Any, capsys: pytest.CaptureFixture[str]) -> None:
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    moto_session.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    line = _one_line_error(capsys, "reviewers", "add", "alice", "--stack", STACK)
    assert line == (
        f"stack '{STACK}' has no API, so no review page to sign in to: deploy it with "
        f"`sumpipe deploy --api --stack {STACK}`"
    )


def test_issuers_of_a_cognito_pool() -> None:
    assert reviewers.pool_of_issuer("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123") == (
        "eu-west-1_AbC123",
        "eu-west-1",
    )
    # CloudFormation's ProviderName form, and China's partition.
    assert reviewers.pool_of_issuer("cognito-idp.cn-north-1.amazonaws.com.cn/cn-north-1_x9") == (
        "cn-north-1_x9",
        "cn-north-1",
    )
    for other in (
        "https://example.eu.auth0.com/",
        "https://cognito-idp.eu-west-1.amazonaws.com.evil.example/eu-west-1_AbC123",
        "https://cognito-idp.eu-west-1.amazonaws.com/us-east-1_AbC123",  # another region's pool id
        "http://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123",
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123/extra",
    ):
        assert reviewers.pool_of_issuer(other) is None, other


def test_temporary_passwords_meet_the_pools_policy() -> None:
    passwords = {reviewers.temporary_password() for _ in range(200)}
    assert len(passwords) == 200
    for password in passwords:
        assert len(password) >= 12
        assert set(password) <= set(string.ascii_letters + string.digits)
        assert any(c.islower() for c in password) and any(c.isupper() for c in password)
        assert any(c.isdigit() for c in password)
