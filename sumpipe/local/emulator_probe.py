"""The local stack's start-up probe of the emulator's S3 authorization: real calls, after IAM is
enforced, that fail `local up` in one line when moto doesn't authorize S3 as AWS does (moto 5.2.6
asked HeadObject for a non-existent s3:HeadObject, and every job hung on 403)."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import boto3

from sumpipe.local.motoserver import REGION, EmulatorError


def check_s3_authorization(endpoint: str, administrator: dict[str, str]) -> None:
    """Proves, through real calls, that the emulator authorizes S3 requests as AWS does once IAM is
    enforced; EmulatorError (one line naming moto's version) if it doesn't.

    As the administrator (credentials as create_administrator returns them) it makes a throwaway
    bucket with two objects and a role allowed only s3:GetObject on one of them, and assumes the
    role. With the role's credentials, a HeadObject of that object (S3 authorizes HeadObject as
    s3:GetObject: moto 5.2.6 asked for s3:HeadObject and refused it) and a presigned GET of it (the
    path authenticate_presigned_s3_requests serves) must succeed, and a HeadObject of the other
    object must be refused, or the probe proves nothing. Everything is removed afterwards. The
    version named is the moto this interpreter imports: the emulator's own, as start() runs it
    with this interpreter."""
    import moto
    from botocore.config import Config
    from botocore.exceptions import ClientError

    emulator = f"the emulator (moto {moto.__version__})"
    remedy = "its S3 authorization is broken; run scripts/setup to install the locked version"
    name = f"sumpipe-probe-{uuid.uuid4().hex[:12]}"
    config = Config(signature_version="s3v4", retries={"total_max_attempts": 1})
    admin = boto3.session.Session(
        aws_access_key_id=administrator["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=administrator["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    s3, iam, sts = (admin.client(api, endpoint_url=endpoint, config=config) for api in ("s3", "iam", "sts"))
    try:
        try:
            s3.create_bucket(Bucket=name)
            for key in ("granted", "refused"):
                s3.put_object(Bucket=name, Key=key, Body=b"probe")
            administrator_arn = sts.get_caller_identity()["Arn"]
            role_arn = iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=_policy("sts:AssumeRole", principal={"AWS": administrator_arn}),
            )["Role"]["Arn"]
            iam.put_role_policy(
                RoleName=name,
                PolicyName="probe",
                PolicyDocument=_policy("s3:GetObject", resource=f"arn:aws:s3:::{name}/granted"),
            )
            credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName="probe")["Credentials"]
        except ClientError as error:
            raise EmulatorError(
                f"{emulator} refuses the administrator's {error.operation_name} ({_refusal(error)}): "
                "run scripts/setup to install the locked version"
            ) from None
        role = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            config=config,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        try:
            role.head_object(Bucket=name, Key="granted")
        except ClientError as error:
            raise EmulatorError(
                f"{emulator} refuses HeadObject to a role allowed s3:GetObject ({_refusal(error)}): {remedy}"
            ) from None
        url = role.generate_presigned_url("get_object", {"Bucket": name, "Key": "granted"}, ExpiresIn=60)
        if not url.startswith("http://"):
            raise ValueError(f"not the local emulator's endpoint: {endpoint}")
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (http only, checked above)
                served = "" if answer.read() == b"probe" else "another content"
        except urllib.error.HTTPError as error:
            served = f"HTTP {error.code}"
        if served:
            raise EmulatorError(
                f"{emulator} refuses a presigned GET by a role allowed s3:GetObject ({served}): {remedy}"
            )
        try:
            role.head_object(Bucket=name, Key="refused")
        except ClientError as error:
            if _refusal(error).startswith("403 "):
                return
            raise EmulatorError(
                f"{emulator} answers HeadObject of an object the role is not granted with "
                f"{_refusal(error)}, not 403: {remedy}"
            ) from None
        raise EmulatorError(f"{emulator} lets a role HeadObject an object it is not granted: {remedy}")
    finally:
        _remove_probe(s3, iam, name)


def _policy(action: str, resource: str | None = None, principal: dict[str, str] | None = None) -> str:
    """An IAM policy document allowing one action (on a resource, or to a principal)."""
    statement: dict[str, Any] = {"Effect": "Allow", "Action": action}
    if resource is not None:
        statement["Resource"] = resource
    if principal is not None:
        statement["Principal"] = principal
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _refusal(error: Any) -> str:
    """A ClientError as its HTTP status and error code ("403 AccessDenied"); for an answer with no
    body (HEAD) botocore's code is the status, so its message stands instead ("403 Forbidden")."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    code = error.response.get("Error", {}).get("Code", "")
    return f"{status} {error.response.get('Error', {}).get('Message', '') if code == str(status) else code}"


def _remove_probe(s3: Any, iam: Any, name: str) -> None:
    """The probe's bucket, objects and role, whichever of them exist."""
    from botocore.exceptions import ClientError

    for remove in (
        lambda: iam.delete_role_policy(RoleName=name, PolicyName="probe"),
        lambda: iam.delete_role(RoleName=name),
        *(lambda key=key: s3.delete_object(Bucket=name, Key=key) for key in ("granted", "refused")),
        lambda: s3.delete_bucket(Bucket=name),
    ):
        with contextlib.suppress(ClientError):
            remove()
