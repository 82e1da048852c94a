"""GET /feedback.csv as the deployed API answers it: through the API Lambda's handler (Mangum, fed
API Gateway HTTP API events), where a response can't exceed 6 MB. An export of any size is written
to the output bucket and downloaded through a presigned GET (sumpipe/api/feedback_download.py).
The page, which sends a bearer token a redirect can't carry, asks for that GET's address as JSON
(as for a job's summary); and behind the JWT authorizer, a decision is the signed-in reviewer's.

Against the local stack's emulator (its own moto server process, which checks presigned URLs as
S3 does) with IAM enforced: the handler runs with credentials of a role holding iam/api.json, so
the export is written and signed with exactly what the deployed function may do."""

from __future__ import annotations

import copy
import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from pipeline_aws import create_job_table

from sumpipe import keys
from sumpipe.api.filenames import attachment
from sumpipe.feedback import EXPORT_COLUMNS, FeedbackLimits, export_rows
from sumpipe.feedback.dynamodb import DynamoFeedbackStore
from sumpipe.ledger import SUCCEEDED, DynamoLedger, Job
from sumpipe.local import motoserver
from sumpipe.local.resources import moto_evaluable
from sumpipe.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
INPUT_BUCKET = "stack-input"
OUTPUT_BUCKET = "stack-output"
FEEDBACK_TABLE = "stack-feedback"
JOB_TABLE = "stack-jobs"
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
TEXT_CHARS = 100_000  # the API's longest text
# Past Lambda's response limit, and past boto3's multipart threshold (8 MiB): the upload is in parts.
DECISIONS = 88
# Spread over reviewers, so each stays under the default quota (60 decisions a minute).
REVIEWERS = ("Ana", "Bo", "Cy", "Di")


def _api_policy() -> str:
    """iam/api.json as the template resolves it, in the form the emulator enforces."""
    names = {"${AWS::Partition}": "aws", "${InputBucket}": INPUT_BUCKET, "${OutputBucket}": OUTPUT_BUCKET}
    document = moto_evaluable(json.loads((ROOT / "iam" / "api.json").read_text()))
    for statement in document["Statement"]:
        if statement["Resource"] != "*":
            template = statement["Resource"]["Fn::Sub"]
            for name, value in names.items():
                template = template.replace(name, value)
            statement["Resource"] = template
    return json.dumps(document)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The emulator with the stack's output bucket and feedback table, IAM enforced, and the API
    role's credentials."""
    port = motoserver.free_port()
    server = motoserver.start(port, ["127.0.0.1"], tmp_path_factory.mktemp("moto") / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    try:
        admin = boto3.session.Session(
            **{name.lower(): value for name, value in motoserver.create_administrator(endpoint).items()},
            region_name=motoserver.REGION,
        )
        s3 = admin.client("s3", endpoint_url=endpoint)
        for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
            s3.create_bucket(Bucket=bucket)
        dynamodb = admin.client("dynamodb", endpoint_url=endpoint)
        dynamodb.create_table(  # as deploy/template.yaml's FeedbackTable
            TableName=FEEDBACK_TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "decision_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "decision_id", "KeyType": "HASH"}],
        )
        create_job_table(dynamodb, JOB_TABLE)
        iam, sts = admin.client("iam", endpoint_url=endpoint), admin.client("sts", endpoint_url=endpoint)
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": sts.get_caller_identity()["Arn"]},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = iam.create_role(RoleName="api", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.put_role_policy(RoleName="api", PolicyName="api", PolicyDocument=_api_policy())
        credentials = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="api")["Credentials"]
        motoserver.enforce_iam(endpoint)
        yield SimpleNamespace(endpoint=endpoint, admin=admin, role=credentials)
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def deployed_api(emulator: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The API Lambda's handler with the function's environment (the template's settings) and its
    role's credentials."""
    environment = {
        **motoserver.endpoint_environment(emulator.endpoint),
        "AWS_ACCESS_KEY_ID": emulator.role["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": emulator.role["SecretAccessKey"],
        "AWS_SESSION_TOKEN": emulator.role["SessionToken"],
        "SUMPIPE_FEEDBACK_TABLE": FEEDBACK_TABLE,
        "SUMPIPE_INPUT_BUCKET": INPUT_BUCKET,
        "SUMPIPE_OUTPUT_BUCKET": OUTPUT_BUCKET,
        "SUMPIPE_JOB_TABLE": JOB_TABLE,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    get_settings.cache_clear()
    from lambdas.api.handler import lambda_handler

    yield lambda_handler
    get_settings.cache_clear()


def _event(
    method: str,
    path: str,
    body: dict | None = None,
    accept: str | None = None,
    claims: dict[str, str] | None = None,
) -> dict:
    """The recorded HTTP API (payload 2.0) event with the method, path and body swapped in; its
    Accept header (the recording's is application/json) and the JWT authorizer's claims, if given."""
    event = copy.deepcopy(json.loads((DATA / "api_gateway_v2_event.json").read_text()))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"] = json.dumps(body) if body is not None else ""
    event["headers"]["content-length"] = str(len(event["body"].encode()))
    if accept is not None:
        event["headers"]["accept"] = accept
    if claims is not None:  # as API Gateway passes a verified token's claims on
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event


def _long_text(n: int) -> str:
    """A 100,000-character text of its own, with a line break and a cell a spreadsheet would run."""
    sentences = (
        f"Text {n}.\r\n=SUM(A1) is just words. "
        + "The chips are thick and crunchy, and the bag was full. " * 2000
    )
    return sentences[:TEXT_CHARS]


def test_an_export_past_the_lambda_response_limit_downloads_whole(
    deployed_api: Any, emulator: SimpleNamespace
) -> None:
    texts = {}
    for n in range(DECISIONS):
        text = _long_text(n)
        decision = {
            "text": text,
            "method": "default",
            "summary_shown": f"Text {n}.",
            "decision": "approve",
            "reviewer": REVIEWERS[n % len(REVIEWERS)],
        }
        answer = deployed_api(_event("POST", "/feedback", decision), None)
        assert answer["statusCode"] == 201, answer["body"]
        texts[json.loads(answer["body"])["decision_id"]] = text

    answer = deployed_api(_event("GET", "/feedback.csv", accept="*/*"), None)  # as curl or a link asks

    assert answer["statusCode"] == 303, answer.get("body")
    assert len(json.dumps(answer)) < 10_000  # what Lambda returns is the redirect, not the export
    assert answer["headers"]["cache-control"] == "no-store"
    download = httpx.get(answer["headers"]["location"], timeout=60)
    assert download.status_code == 200, download.text[:500]
    assert download.headers["content-disposition"] == attachment("feedback.csv")
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert len(download.content) > 8 * 1024 * 1024 > LAMBDA_RESPONSE_LIMIT
    # The very CSV `sumpipe serve` streams (sumpipe/feedback/export.py), every decision in it.
    store = DynamoFeedbackStore(emulator.admin.client("dynamodb", endpoint_url=emulator.endpoint),
                                FEEDBACK_TABLE, FeedbackLimits.from_settings(Settings()))  # fmt: skip
    assert download.text == "".join(export_rows(store.decisions()))
    rows = list(csv.DictReader(io.StringIO(download.text, newline="")))
    assert len(rows) == DECISIONS
    for row in rows:
        text = texts[row["decision_id"]]
        assert len(text) == TEXT_CHARS and row["text"] == text  # intact, its CR LF and "=" too
    # Under the key contract's prefix, which only the API's role may write and read.
    key = unquote(urlsplit(answer["headers"]["location"]).path).removeprefix(f"/{OUTPUT_BUCKET}/")
    assert key.startswith(keys.EXPORTS_PREFIX) and key.endswith(".csv"), key


def test_the_api_role_may_write_only_the_exports(deployed_api: Any, emulator: SimpleNamespace) -> None:
    """IAM is enforced: the role that writes exports is refused anywhere else in the bucket."""
    role = boto3.client(
        "s3",
        endpoint_url=emulator.endpoint,
        region_name=motoserver.REGION,
        aws_access_key_id=emulator.role["AccessKeyId"],
        aws_secret_access_key=emulator.role["SecretAccessKey"],
        aws_session_token=emulator.role["SessionToken"],
    )
    role.put_object(Bucket=OUTPUT_BUCKET, Key=keys.feedback_export_key(0, "00ff00ff"), Body=b"x")
    with pytest.raises(ClientError, match="AccessDenied"):
        role.put_object(Bucket=OUTPUT_BUCKET, Key="elsewhere/feedback.csv", Body=b"x")


def test_the_page_gets_the_exports_address_as_json(deployed_api: Any) -> None:
    """A link can't send the page's bearer token: the page fetches the export with it, asking for
    JSON, and goes to the presigned GET it is given."""
    answer = deployed_api(_event("GET", "/feedback.csv", accept="application/json"), None)

    assert answer["statusCode"] == 200, answer.get("body")
    assert answer["headers"]["content-type"] == "application/json"
    assert answer["headers"]["cache-control"] == "no-store"
    where = json.loads(answer["body"])
    assert set(where) == {"url", "expires_in"} and where["expires_in"] == 300
    download = httpx.get(where["url"], timeout=60)
    assert download.status_code == 200, download.text[:500]
    assert download.headers["content-disposition"] == attachment("feedback.csv")
    assert download.text.splitlines()[0].split(",") == list(EXPORT_COLUMNS)


def test_the_page_gets_a_job_summarys_address_as_json(deployed_api: Any, emulator: SimpleNamespace) -> None:
    dynamodb = emulator.admin.client("dynamodb", endpoint_url=emulator.endpoint)
    input_key = f"uploads/reviews {uuid.uuid4().hex[:8]}.csv"
    job_id = keys.job_id(INPUT_BUCKET, input_key, "v1")
    now = time.time()
    job = Job(job_id, INPUT_BUCKET, input_key, "v1", state=SUCCEEDED, created_at=now,
              finished_at=now, rows=1)  # fmt: skip
    assert DynamoLedger(dynamodb, JOB_TABLE).create_job(job)
    summary = b"id,summary\n1,Thick and crunchy.\n"
    emulator.admin.client("s3", endpoint_url=emulator.endpoint).put_object(
        Bucket=OUTPUT_BUCKET, Key=keys.output_key(job_id, keys.SUMMARY), Body=summary
    )
    path = f"/jobs/{job_id}/summary"

    answer = deployed_api(_event("GET", path, accept="application/json"), None)

    assert answer["statusCode"] == 200, answer.get("body")
    assert answer["headers"]["cache-control"] == "no-store"
    where = json.loads(answer["body"])
    assert set(where) == {"url", "expires_in"} and where["expires_in"] == 300
    download = httpx.get(where["url"], timeout=30)
    assert download.status_code == 200 and download.content == summary, download.text[:500]
    assert download.headers["content-disposition"].startswith("attachment;")
    # Others (curl, a link) are still redirected to the same kind of address.
    redirect = deployed_api(_event("GET", path, accept="*/*"), None)
    assert redirect["statusCode"] == 303
    assert httpx.get(redirect["headers"]["location"], timeout=30).content == summary


@pytest.mark.parametrize(
    ("claims", "recorded_as"),
    [
        ({"username": "ana.lima", "sub": "5a1c0f4e-0000-4000-8000-000000000001"}, "ana.lima"),
        ({"sub": "5a1c0f4e-0000-4000-8000-000000000002"}, "5a1c0f4e-0000-4000-8000-000000000002"),
        (None, "Someone Else"),  # no authorizer (IAM auth): the name the page sends, as before
    ],
    ids=["username", "sub", "no-claims"],
)
def test_a_decision_is_the_signed_in_reviewers_whatever_the_body_says(
    deployed_api: Any, emulator: SimpleNamespace, claims: dict[str, str] | None, recorded_as: str
) -> None:
    decision = {
        "text": f"A text of its own, {uuid.uuid4().hex}.",
        "method": "default",
        "summary_shown": "A text.",
        "decision": "approve",
        "reviewer": "Someone Else",
    }
    answer = deployed_api(_event("POST", "/feedback", decision, claims=claims), None)
    assert answer["statusCode"] == 201, answer["body"]
    decision_id = json.loads(answer["body"])["decision_id"]
    store = DynamoFeedbackStore(emulator.admin.client("dynamodb", endpoint_url=emulator.endpoint),
                                FEEDBACK_TABLE, FeedbackLimits.from_settings(Settings()))  # fmt: skip
    [recorded] = [d for d in store.decisions() if d.decision_id == decision_id]
    assert recorded.reviewer == recorded_as
    # And the export says so.
    where = json.loads(deployed_api(_event("GET", "/feedback.csv", accept="application/json"), None)["body"])
    rows = csv.DictReader(io.StringIO(httpx.get(where["url"], timeout=60).text, newline=""))
    assert [row["reviewer"] for row in rows if row["decision_id"] == decision_id] == [recorded_as]
