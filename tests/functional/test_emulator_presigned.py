"""The local stack's emulator checks presigned URLs and browser POST uploads as S3 does once IAM is
enforced: the signature with the signer's secret, the expiry, a POST policy's conditions, and the
signer's IAM permission for the object. Stock moto reads only the Authorization header, so with
IAM enforced every one of these requests fails with an internal error (the review page's upload and
download could not be rehearsed), and without it every one passes, forged or not.

Run against the local stack's own moto server process (sumpipe.local.motoserver), IAM enforced."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace

import boto3
import httpx
import pytest
from botocore.config import Config

from sumpipe.local import motoserver

BUCKET = "uploads-bucket"
CSV = b"Id,Text\n1,Crunchy and thick. Would buy again.\n"


def _s3(endpoint: str, key: dict[str, str]) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=motoserver.REGION,
        aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"],
        config=Config(signature_version="s3v4"),
    )


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    port = motoserver.free_port()
    server = motoserver.start(port, ["127.0.0.1"], tmp_path_factory.mktemp("moto") / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    try:
        admin = motoserver.create_administrator(endpoint)
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name=motoserver.REGION, **{
                name.lower(): value for name, value in admin.items()
            }
        )  # fmt: skip
        # A signer allowed only to read and write under uploads/ (what the page's API may do).
        iam.create_user(UserName="page")
        iam.put_user_policy(
            UserName="page",
            PolicyName="uploads",
            PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": f"arn:aws:s3:::{BUCKET}/uploads/*",
                }],
            }),
        )  # fmt: skip
        access = iam.create_access_key(UserName="page")["AccessKey"]
        page = {
            "AWS_ACCESS_KEY_ID": access["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": access["SecretAccessKey"],
        }
        admin_s3 = _s3(endpoint, admin)
        admin_s3.create_bucket(Bucket=BUCKET)
        motoserver.enforce_iam(endpoint)
        admin_s3.put_object(Bucket=BUCKET, Key="uploads/a file.csv", Body=CSV)
        admin_s3.put_object(Bucket=BUCKET, Key="private/secret.csv", Body=b"no")
        yield SimpleNamespace(endpoint=endpoint, page=_s3(endpoint, page), admin=admin_s3)
    finally:
        server.kill()
        server.wait()


def _error(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text}"


def test_a_presigned_get_is_served_to_its_signers_rights(emulator: SimpleNamespace) -> None:
    url = emulator.page.generate_presigned_url(
        "get_object",
        Params={"Bucket": BUCKET, "Key": "uploads/a file.csv", "ResponseContentDisposition": "attachment"},
        ExpiresIn=60,
    )
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == CSV, _error(answer)
    assert answer.headers["content-disposition"] == "attachment"
    # Signed by someone who may not read it: refused, however well signed.
    outside = emulator.page.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "private/secret.csv"}, ExpiresIn=60
    )
    assert httpx.get(outside).status_code == 403


@pytest.mark.parametrize(
    ("forge", "words"),
    [
        (lambda url: url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), "SignatureDoesNotMatch"),
        (lambda url: url.replace("a%20file.csv", "b%20file.csv"), "SignatureDoesNotMatch"),
        (lambda url: url.replace("X-Amz-Expires=60", "X-Amz-Expires=6000"), "SignatureDoesNotMatch"),
        (lambda url: url.split("?")[0], ""),
    ],
    ids=["signature", "other key", "longer expiry", "unsigned"],
)
def test_a_forged_presigned_get_is_refused(emulator: SimpleNamespace, forge, words: str) -> None:
    url = emulator.page.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "uploads/a file.csv"}, ExpiresIn=60
    )
    answer = httpx.get(forge(url))
    assert answer.status_code == 403 and words in answer.text, _error(answer)


def test_an_expired_presigned_get_is_refused(emulator: SimpleNamespace) -> None:
    url = emulator.page.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "uploads/a file.csv"}, ExpiresIn=1
    )
    time.sleep(1.5)
    answer = httpx.get(url)
    assert answer.status_code == 403 and "expired" in answer.text, _error(answer)


def _post(emulator: SimpleNamespace, key: str = "uploads/new.csv", max_bytes: int = 10_000) -> dict:
    return emulator.page.generate_presigned_post(
        BUCKET,
        key,
        Fields={"success_action_redirect": "http://127.0.0.1:9/back", "x-amz-meta-text-column": "Text"},
        Conditions=[
            {"success_action_redirect": "http://127.0.0.1:9/back"},
            {"x-amz-meta-text-column": "Text"},
            ["content-length-range", 1, max_bytes],
        ],
        ExpiresIn=60,
    )


def test_a_browser_post_upload_within_its_policy_is_stored(emulator: SimpleNamespace) -> None:
    post = _post(emulator)
    answer = httpx.post(post["url"], data=post["fields"], files={"file": ("reviews.csv", CSV)})
    assert answer.status_code == 303, _error(answer)
    assert answer.headers["location"] == "http://127.0.0.1:9/back?key=uploads%2Fnew.csv&bucket=" + BUCKET
    stored = emulator.admin.get_object(Bucket=BUCKET, Key="uploads/new.csv")
    assert stored["Body"].read() == CSV and stored["Metadata"] == {"text-column": "Text"}


def _forged_policy(fields: dict[str, str]) -> dict[str, str]:
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [
        c for c in policy["conditions"] if not (isinstance(c, list) and c[0] == "content-length-range")
    ]
    return {**fields, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}


@pytest.mark.parametrize(
    ("forge", "body", "words"),
    [
        (lambda f: {**f, "key": "uploads/other.csv"}, CSV, "Policy Condition failed"),
        (lambda f: {**f, "x-amz-meta-method": "kmeans"}, CSV, "Extra input fields: x-amz-meta-method"),
        (lambda f: {**f, "x-amz-meta-text-column": "Summary"}, CSV, "Policy Condition failed"),
        (lambda f: f, b"x" * 10_001, "content-length-range"),
        (_forged_policy, b"x" * 10_001, "SignatureDoesNotMatch"),
        (lambda f: {k: v for k, v in f.items() if k != "x-amz-signature"}, CSV, "not signed"),
    ],
    ids=["other key", "extra field", "changed field", "too big", "forged policy", "unsigned"],
)
def test_a_browser_post_outside_its_policy_is_refused(
    emulator: SimpleNamespace, forge, body: bytes, words: str
) -> None:
    post = _post(emulator)
    answer = httpx.post(post["url"], data=forge(post["fields"]), files={"file": ("reviews.csv", body)})
    assert answer.status_code == 403 and words in answer.text, _error(answer)


def test_a_browser_post_signed_by_someone_who_may_not_write_there_is_refused(
    emulator: SimpleNamespace,
) -> None:
    post = _post(emulator, key="private/new.csv")
    answer = httpx.post(post["url"], data=post["fields"], files={"file": ("reviews.csv", CSV)})
    assert answer.status_code == 403 and "AccessDenied" in answer.text, _error(answer)
