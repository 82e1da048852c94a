"""What went wrong talking to AWS, in one line that says what to do: the operator CLI's errors.

botocore raises these with a traceback of fifty lines whose last one ("You must specify a
region.") doesn't say which variable or flag would fix it; `explain` turns each into a sentence
naming the fix (`--region`, `--profile`, `sumpipe deploy`, `sumpipe local up`...).
"""

from __future__ import annotations

import os
import re

from botocore import exceptions

# Error codes AWS services use for a caller that lacks a permission.
ACCESS_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "Forbidden"}
)
EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
REJECTED_CREDENTIALS = frozenset(
    {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidAccessKeyId"}
)
_STACK_MISSING = re.compile(r"Stack with id (?P<name>\S+) does not exist")


def explain(error: BaseException, region: str | None) -> str | None:
    """One line for an AWS error: what happened and what to do. None for anything else."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if isinstance(error, exceptions.NoRegionError):
        return (
            "no AWS region is set: pass --region REGION, or set AWS_DEFAULT_REGION, or give your "
            "profile a region (aws configure)"
        )
    if isinstance(error, exceptions.ProfileNotFound):
        profile = error.kwargs.get("profile", "")
        return (
            f"AWS profile {profile!r} not found in ~/.aws/config or ~/.aws/credentials: check the name "
            "(aws configure list-profiles), or pass another with --profile"
        )
    if isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
        return (
            f"{'no' if isinstance(error, exceptions.NoCredentialsError) else 'incomplete'} AWS credentials: "
            "pass --profile NAME, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or sign in "
            "(aws configure, aws sso login)"
        )
    if isinstance(error, exceptions.TokenRetrievalError | exceptions.SSOError):
        return f"the AWS sign-in has expired ({error}): run aws sso login, then try again"
    if isinstance(error, exceptions.ConnectionError | exceptions.HTTPClientError):
        where = endpoint or f"the {region or 'default'} region's endpoints"
        hint = (
            "check AWS_ENDPOINT_URL; for the local stack run `sumpipe local up`"
            if endpoint
            else "check the network, the proxy and --region"
        )
        return f"cannot reach AWS at {where} ({error}): {hint}"
    if isinstance(error, exceptions.ClientError):
        return _client_error(error, region)
    return None


def error_code(error: exceptions.ClientError) -> str:
    """The error's code as AWS names it (AccessDenied, UserNotFoundException...); "" when none."""
    return str(error.response.get("Error", {}).get("Code", "")).strip()


def _client_error(error: exceptions.ClientError, region: str | None) -> str:
    details = error.response.get("Error", {})
    code = error_code(error)
    message = " ".join(str(details.get("Message", "")).split())
    operation = error.operation_name
    if code in ACCESS_DENIED:
        return (
            f"access denied to {operation}: {message or code}; use --profile with an identity allowed "
            "to do this, or ask your AWS administrator for the permission"
        )
    if code in EXPIRED:
        return f"the AWS credentials have expired ({code}): refresh them (aws sso login, or new session keys)"
    if code in REJECTED_CREDENTIALS:
        return f"AWS rejected the credentials ({code}): check the access key and secret, or the --profile"
    missing = _STACK_MISSING.search(message)
    if missing:
        name = missing["name"]
        return (
            f"stack {name!r} not found in {region or 'this region'}: deploy it (sumpipe deploy --stack "
            f"{name}), or name the one you have with --stack and --region; for the local stack run "
            "`sumpipe local up`"
        )
    return f"AWS {operation} failed: {code}: {message}"
