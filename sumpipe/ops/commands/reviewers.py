"""`sumpipe reviewers add | list | remove`: who may sign in to the deployed review page.

The reviewers are the users of the Cognito user pool whose tokens the stack's HTTP API accepts
(ApiAuth=jwt). That pool is found the same way on AWS and on the local stack: from the API
function's own configuration, its SUMPIPE_AUTH_ISSUER variable (the issuer the page signs reviewers
in with), not from the stack's ReviewerPoolId output, which the local stack's emulator doesn't make
(moto runs no AWS::Cognito::* in CloudFormation). An issuer that is not a Cognito pool's holds its
users itself; no issuer means IAM auth or no API at all.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from sumpipe.aws import client
from sumpipe.ops.aws_errors import error_code
from sumpipe.ops.commands.jobs import shown, use_local_stack_if_up

ISSUER_VARIABLE = "SUMPIPE_AUTH_ISSUER"
# A Cognito user pool's issuer: https://cognito-idp.<region>.amazonaws.com[.cn]/<region>_<id>.
# (CloudFormation's ProviderName form, with no scheme, is taken too: it names the same pool.)
COGNITO_ISSUER = re.compile(
    r"(?:https://)?cognito-idp\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<pool>(?P=region)_[0-9A-Za-z]+)/?"
)
# The stack's pool asks for 12 characters with upper and lower case and digits (deploy/template.yaml,
# ReviewerPool's PasswordPolicy); 20 of the 62 letters and digits are ~119 bits, and no symbol a
# terminal or a chat client could mangle on the way to the reviewer.
PASSWORD_LENGTH = 20
PASSWORD_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits)


class ReviewersError(Exception):
    """The reviewers can't be managed here; the message says why and what to do, in one line."""


@dataclass(frozen=True)
class Pool:
    pool_id: str
    region: str
    page_url: str  # "" when unknown


@dataclass(frozen=True)
class Reviewer:
    username: str
    status: str
    enabled: bool
    created: datetime | None


@dataclass(frozen=True)
class Added:
    username: str
    temporary_password: str | None  # None: Cognito emailed it
    email: str | None


# -- finding the pool ------------------------------------------------------------------------------


def _stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str] | None:
    """The stack's outputs; None when there is no such stack."""
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as error:
        if "does not exist" in str(error.response.get("Error", {}).get("Message", "")):
            return None
        raise
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def pool_of_issuer(issuer: str) -> tuple[str, str] | None:
    """(pool id, region) when `issuer` is a Cognito user pool's; else None."""
    found = COGNITO_ISSUER.fullmatch(issuer.strip())
    return (found["pool"], found["region"]) if found else None


def find_pool(cloudformation: Any, lambda_client: Any, stack_name: str) -> Pool:
    """The user pool the stack's API signs reviewers in with (see the module docstring)."""
    outputs = _stack_outputs(cloudformation, stack_name)
    # The output when the stack has one; else the template's name for the function, which a stack
    # the emulator runs (or one being created) has too.
    function = (outputs or {}).get("ApiFunctionName") or f"{stack_name}-api"
    try:
        configuration = lambda_client.get_function_configuration(FunctionName=function)
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        if outputs is None:
            raise ReviewersError(
                f"stack {stack_name!r} not found: name yours with --stack (and --region), or deploy it "
                "with its API (sumpipe deploy --api)"
            ) from error
        raise ReviewersError(
            f"stack {stack_name!r} has no API, so no review page to sign in to: deploy it with "
            f"`sumpipe deploy --api --stack {stack_name}`"
        ) from error
    variables = (configuration.get("Environment") or {}).get("Variables") or {}
    issuer = variables.get(ISSUER_VARIABLE, "").strip()
    if not issuer:
        raise ReviewersError(
            f"the API of stack {stack_name!r} takes SigV4-signed requests (ApiAuth=iam), so it has no "
            "reviewers to sign in; for the review page's sign-in redeploy with "
            f"`sumpipe deploy --api --stack {stack_name} --param ApiAuth=jwt`"
        )
    found = pool_of_issuer(issuer)
    if found is None:
        raise ReviewersError(
            f"the API of stack {stack_name!r} accepts tokens from {shown(issuer)}, not a Cognito user "
            "pool's: reviewers are added and removed at that issuer"
        )
    pool_id, region = found
    page = (outputs or {}).get("ApiUrl") or variables.get("SUMPIPE_PUBLIC_URL", "")
    return Pool(pool_id, region, page.rstrip("/") + "/" if page else "")


# -- the reviewers -----------------------------------------------------------------------------------


def temporary_password() -> str:
    """A password the pool's policy accepts: each class at least once, the rest from all of them."""
    alphabet = "".join(PASSWORD_CLASSES)
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH))
        if all(any(ch in chars for ch in password) for chars in PASSWORD_CLASSES):
            return password


def add_reviewer(cognito: Any, pool: Pool, username: str, email: str | None = None) -> Added:
    """Create the reviewer with a temporary password the first sign-in replaces. With an email
    address Cognito sends the invitation (with the password) there; without, nothing is sent and
    the caller hands the password over."""
    password = temporary_password()
    arguments: dict[str, Any] = {
        "UserPoolId": pool.pool_id,
        "Username": username,
        "TemporaryPassword": password,
    }
    if email:
        # Verified: the operator vouches for it, and the pool recovers passwords by verified email.
        arguments["UserAttributes"] = [
            {"Name": "email", "Value": email},
            {"Name": "email_verified", "Value": "true"},
        ]
        arguments["DesiredDeliveryMediums"] = ["EMAIL"]
    else:
        arguments["MessageAction"] = "SUPPRESS"
    try:
        cognito.admin_create_user(**arguments)
    except ClientError as error:
        raise _user_error(error, pool, username) or error from error
    return Added(username, None if email else password, email)


def list_reviewers(cognito: Any, pool: Pool) -> Iterator[Reviewer]:
    for page in cognito.get_paginator("list_users").paginate(UserPoolId=pool.pool_id):
        for user in page.get("Users", []):
            yield Reviewer(
                user["Username"], user.get("UserStatus", ""), bool(user.get("Enabled", True)),
                user.get("UserCreateDate"),
            )


def remove_reviewer(cognito: Any, pool: Pool, username: str) -> None:
    try:
        cognito.admin_delete_user(UserPoolId=pool.pool_id, Username=username)
    except ClientError as error:
        raise _user_error(error, pool, username) or error from error


def _user_error(error: ClientError, pool: Pool, username: str) -> ReviewersError | None:
    """One line for what Cognito says about this user or these arguments; None for anything else
    (access denied, expired credentials...: sumpipe.ops.aws_errors explains those)."""
    code = error_code(error)
    message = " ".join(str(error.response.get("Error", {}).get("Message", "")).split())
    who = shown(username)
    if code == "UsernameExistsException":
        return ReviewersError(
            f"{who} is already a reviewer in {pool.pool_id}: `sumpipe reviewers list` shows them; to "
            "start over, remove them first"
        )
    if code == "UserNotFoundException":
        return ReviewersError(f"no reviewer {who} in {pool.pool_id}: `sumpipe reviewers list` shows who is")
    if code == "ResourceNotFoundException":
        return ReviewersError(
            f"user pool {pool.pool_id} ({pool.region}) not found, though the stack's API names it: "
            "redeploy the stack (sumpipe deploy --api)"
        )
    if code in ("InvalidParameterException", "InvalidPasswordException"):
        return ReviewersError(f"Cognito refused {who}: {shown(message)}")
    return None


# -- the command -----------------------------------------------------------------------------------


def _clients(args: argparse.Namespace) -> tuple[Pool, Any]:
    use_local_stack_if_up(aws_named=bool(args.region or args.profile))
    stack_name = args.stack or os.environ.get("SUMPIPE_STACK_NAME") or "sumpipe"
    pool = find_pool(client("cloudformation"), client("lambda"), stack_name)
    # The pool's own region: an issuer names it, whatever region the stack was looked up in.
    return pool, client("cognito-idp", region_name=pool.region)


def _created(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def run_add(args: argparse.Namespace) -> int:
    pool, cognito = _clients(args)
    added = add_reviewer(cognito, pool, args.username, args.email)
    print(f"added reviewer {shown(added.username)} to user pool {pool.pool_id}")
    if added.temporary_password is not None:
        print(f"temporary password: {added.temporary_password}")
    else:
        print(f"Cognito emails the invitation, with a temporary password, to {shown(added.email)}")
    if pool.page_url:
        print(f"review page: {pool.page_url}")
    print("the first sign-in asks for a new password (12+ characters, upper and lower case, a digit)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    pool, cognito = _clients(args)
    reviewers = list(list_reviewers(cognito, pool))
    width = max([len("USERNAME"), *(len(shown(r.username)) for r in reviewers)])
    print(f"{'USERNAME':{width}}  {'STATUS':21}  {'ENABLED':7}  CREATED")
    for reviewer in reviewers:
        print(
            f"{shown(reviewer.username):{width}}  {reviewer.status:21}  "
            f"{'yes' if reviewer.enabled else 'no':7}  {_created(reviewer.created)}"
        )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    pool, cognito = _clients(args)
    remove_reviewer(cognito, pool, args.username)
    print(f"removed reviewer {shown(args.username)} from user pool {pool.pool_id}")
    # API Gateway's JWT authorizer checks a token's signature and expiry only.
    print("a page they have open keeps working until its token expires (within the hour)")
    return 0


def _run(function: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(function(args))
        except ReviewersError as error:
            print(f"sumpipe reviewers: error: {error}", file=sys.stderr)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "reviewers", help="who may sign in to the deployed review page (the stack's Cognito user pool)"
    )
    commands = parser.add_subparsers(dest="reviewers_command", required=True, metavar="ACTION")

    add = commands.add_parser("add", help="add a reviewer: prints a temporary password, or emails it")
    add.add_argument("username", metavar="USERNAME", help="the name they sign in with")
    add.add_argument(
        "--email", metavar="ADDRESS", help="send Cognito's invitation, with the temporary password, here"
    )
    add.set_defaults(func=_run(run_add))

    listing = commands.add_parser("list", help="the reviewers: username, status, enabled, created")
    listing.set_defaults(func=_run(run_list))

    remove = commands.add_parser("remove", help="remove a reviewer")
    remove.add_argument("username", metavar="USERNAME")
    remove.set_defaults(func=_run(run_remove))

    for command in (add, listing, remove):
        command.add_argument(
            "--stack", default=None,
            help="CloudFormation stack name (default: SUMPIPE_STACK_NAME, else sumpipe)",
        )
