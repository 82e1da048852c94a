"""The page's batch jobs, on the stack the API serves: upload a table to the input bucket through a
presigned POST the browser sends itself (the file never passes through the API, whatever its
size), list the jobs from the ledger, and download a job's summary through a presigned GET. While
an upload's job is on its way, the page asks whether the chain is broken for it (sumpipe.flow.chain:
the functions' failure lines in their log groups, and the ledger).

Both presigned requests are signed with the API's own credentials (its role when deployed), so
they can do only what that role may: put objects in the input bucket, read the jobs' outputs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from sumpipe import keys, options
from sumpipe.api.bodies import parse_body
from sumpipe.api.filenames import attachment
from sumpipe.api.openapi import ERROR_RESPONSES
from sumpipe.api.security import require_json_from_own_origin
from sumpipe.flow import chain
from sumpipe.settings import Settings, get_settings

if TYPE_CHECKING:
    from sumpipe.ledger import Job, Ledger

router = APIRouter()

UPLOAD_EXPIRES_S = 900
DOWNLOAD_EXPIRES_S = 300
MAX_JOBS_LISTED = 200
# A file name the input bucket keeps as it is: no folders, no characters a URL or a shell would
# treat specially. The job's summary is named after it.
FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ ()+-]{0,199}")
INPUT_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet")
# FILENAME and INPUT_SUFFIXES as one JSON Schema pattern (ECMA regex: no inline flags, so each
# suffix's letters are spelled in both cases), for the OpenAPI document.
FILENAME_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9._ ()+-]*\.("
    + "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in suffix[1:]) for suffix in INPUT_SUFFIXES)
    + ")$"
)
# Every job route answers 503 without a stack.
NEEDS_STACK = {503: ERROR_RESPONSES[503]}


def batch_enabled(settings: Settings) -> bool:
    return bool(settings.input_bucket and settings.output_bucket and settings.job_table)


def _require_batch() -> Settings:
    settings = get_settings()
    if not batch_enabled(settings):
        raise HTTPException(
            503, "batch jobs need a stack: run `sumpipe serve --stack NAME`, or `sumpipe local up` first"
        )
    return settings


# boto3 is imported only when a batch route is used: it costs the API's cold start a few hundred ms.
def _s3() -> Any:
    from sumpipe import aws

    return aws.client("s3", signature_version="s3v4")  # presigned POSTs exist only in SigV4


def _ledger(settings: Settings) -> Ledger:
    from sumpipe import aws
    from sumpipe.ledger import DynamoLedger

    return DynamoLedger(aws.client("dynamodb"), settings.job_table)


class BatchInfo(BaseModel):
    enabled: bool
    max_input_bytes: int
    input_suffixes: list[str]


class UploadIn(BaseModel):
    """The file's name, and the job options (sumpipe.options: text-column, id-column, sentences,
    ratio, method, group-by, stars, themes, format) as text, as `sumpipe submit` takes them."""

    model_config = ConfigDict(strict=True, extra="forbid")

    filename: str = Field(
        max_length=200,
        json_schema_extra={"pattern": FILENAME_PATTERN},
        description="A bare file name of letters, digits, spaces and . _ - ( ) + ending in a table's suffix.",
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        max_length=10,
        json_schema_extra={"propertyNames": {"enum": list(options.OPTION_NAMES)}},
        description="Checked as `sumpipe submit` checks them (sumpipe/options.py): a bad one is a "
        "400 naming it.",
    )


UPLOAD_SCHEMA = UploadIn.model_json_schema()


class UploadOut(BaseModel):
    url: str = Field(description="Where the browser POSTs the form.")
    fields: dict[str, str] = Field(description="The form's fields, before the file (which goes last).")
    key: str


class RowOut(BaseModel):
    """One row of a job's review sample, as the page shows it."""

    id: str
    text: str
    summary: str
    status: str
    input_sentences: list[str] = Field(description="Every sentence of the text.")
    positions: list[int] = Field(description="Which of them the summary is.")


class RowsOut(BaseModel):
    job_id: str
    method: str = Field(description="The summarizer method that made the summaries.")
    rows: list[RowOut] = Field(description="The job's first rows (its review sample).")


class DownloadOut(BaseModel):
    """Where to download a file, for a client that can't follow a redirect with its credentials."""

    url: str = Field(description="A presigned GET of the file (its Content-Disposition names it).")
    expires_in: int = Field(description="Seconds the URL works for.")


# The 200 a download route gives a client asking for JSON: the page, which sends a bearer token
# (deployed behind a JWT authorizer), and a link or a followed redirect can't.
DOWNLOAD_RESPONSE: dict[str, Any] = {
    "description": "With `Accept: application/json`: where to download it, instead of the 303.",
    "content": {"application/json": {"schema": DownloadOut.model_json_schema()}},
}


def wants_url(request: Request) -> bool:
    """Whether the client asked for the download's address as JSON (Accept lists application/json)
    rather than to be redirected to it (curl, links, a browser's navigation)."""
    accepted = request.headers.get("accept", "")
    return any(part.split(";", 1)[0].strip().lower() == "application/json" for part in accepted.split(","))


class JobOut(BaseModel):
    job_id: str
    state: str
    input_key: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    took_s: float | None
    rows: int | None
    error: str | None
    options: dict[str, str]
    summary: str | None = Field(description="Where to download the summary (succeeded jobs).")
    review: str | None = Field(description="Where to read its rows to review (succeeded per-row jobs).")


@router.get("/batch")
def batch() -> BatchInfo:
    """Whether this server has a stack to run batch jobs on, and what an upload may be."""
    settings = get_settings()
    return BatchInfo(
        enabled=batch_enabled(settings),
        max_input_bytes=settings.max_input_bytes,
        input_suffixes=list(INPUT_SUFFIXES),
    )


def input_key_for(filename: str) -> str:
    if not FILENAME.fullmatch(filename):
        raise HTTPException(
            400, "filename: a bare file name of letters, digits, spaces and . _ - ( ) + (at most 200)"
        )
    if not filename.lower().endswith(INPUT_SUFFIXES):
        raise HTTPException(400, f"filename: a table is one of {', '.join(INPUT_SUFFIXES)}")
    return f"uploads/{filename}"


@router.post(
    "/uploads",
    dependencies=[Depends(require_json_from_own_origin)],
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": UPLOAD_SCHEMA}}}
    },
    responses={status: ERROR_RESPONSES[status] for status in (400, 403, 413, 415, 503)},
)
async def upload(request: Request) -> UploadOut:
    """A presigned POST for one upload to the input bucket, with the job options as its metadata
    (the trigger checks them again); the browser comes back to the page when S3 has the file."""
    settings = _require_batch()
    body = await parse_body(request, UploadIn)
    key = input_key_for(body.filename)
    try:
        metadata = options.from_strings(body.options).as_metadata()
    except options.OptionError as error:
        raise HTTPException(400, str(error)) from None
    # Back to the page's configured address: the Host header is the client's to choose.
    back = settings.public_url.rstrip("/") + "/?uploaded=1"
    fields = {"success_action_redirect": back, **{f"x-amz-meta-{k}": v for k, v in metadata.items()}}
    conditions: list[Any] = [{name: value} for name, value in fields.items()]
    conditions.append(["content-length-range", 1, settings.max_input_bytes])
    post = _s3().generate_presigned_post(
        settings.input_bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=UPLOAD_EXPIRES_S
    )
    return UploadOut(url=post["url"], fields=post["fields"], key=key)


def _job_out(job: Job) -> JobOut:
    took = job.finished_at - job.created_at if job.finished_at is not None else None
    return JobOut(
        job_id=job.job_id,
        state=job.state,
        input_key=job.input_key,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        took_s=took,
        rows=job.rows,
        error=job.error,
        options=job.options,
        summary=f"jobs/{job.job_id}/summary" if job.state == "succeeded" else None,
        review=f"jobs/{job.job_id}/rows"
        if job.state == "succeeded" and "group-by" not in job.options
        else None,
    )


class UploadStatusOut(BaseModel):
    key: str
    job_id: str | None = Field(description="The upload's job, once recorded.")
    state: str | None
    broken: str | None = Field(
        description="Why its job won't come (a function keeps failing on it, or none recorded it), in "
        "one line naming the function and its last error; null while it may still come."
    )


@router.get("/uploads/status", responses=NEEDS_STACK)
def upload_status(key: str, since: float) -> UploadStatusOut:
    """The job of the upload of `key` made at `since` (epoch seconds, about), and whether the
    chain is broken for it."""
    from sumpipe import aws

    settings = _require_batch()
    if not key.startswith("uploads/"):
        raise HTTPException(400, "key: an upload's key (uploads/<file name>)")
    input_key_for(key.removeprefix("uploads/"))
    now = time.time()
    since = min(since, now)
    recent = [
        job
        for job in _ledger(settings).list_jobs()
        if job.input_key == key and job.created_at >= since - chain.CLOCK_SLACK_S
    ]
    job = max(recent, key=lambda j: j.created_at) if recent else None
    upload = chain.Upload(key, job.job_id if job else None, since)
    broken, _ = chain.check(aws.client("logs"), chain.named_functions(settings.stack_name), upload, job, now)
    return UploadStatusOut(
        key=key, job_id=job.job_id if job else None, state=job.state if job else None, broken=broken
    )


@router.get("/jobs", responses=NEEDS_STACK)
def jobs() -> list[JobOut]:
    """The most recent jobs first, at most MAX_JOBS_LISTED."""
    settings = _require_batch()
    listed = _ledger(settings).list_jobs()
    return [_job_out(job) for job in reversed(listed[-MAX_JOBS_LISTED:])]


def _succeeded_job(settings: Settings, job_id: str) -> Job:
    job = _ledger(settings).get_job(job_id) if keys.is_job_id(job_id) else None
    if job is None or job.state != "succeeded":
        raise HTTPException(
            404, f"job {job_id[:40]} has no summary" + (f" (it is {job.state})" if job else "")
        )
    return job


def summary_positions(sentences: list[str], summary: str) -> list[int]:
    """Which of a text's sentences its summary is: the summary is some of them, verbatim, in order,
    joined by single spaces."""
    positions, rest = [], summary
    for index, sentence in enumerate(sentences):
        if rest == sentence or rest.startswith(sentence + " "):
            positions.append(index)
            rest = rest[len(sentence) + 1 :]
    return positions


@router.get("/jobs/{job_id}/rows", responses={404: ERROR_RESPONSES[404], **NEEDS_STACK})
def rows(job_id: str) -> RowsOut:
    """The job's review sample (the runner's `summarize --sample`): its first rows, each with its
    text's sentences and which of them the summary is."""
    from summarizer.split import split_sentences

    settings = _require_batch()
    job = _succeeded_job(settings, job_id)
    s3 = _s3()
    try:
        body = s3.get_object(Bucket=settings.output_bucket, Key=keys.output_key(job_id, keys.SAMPLE))["Body"]
    except s3.exceptions.NoSuchKey:  # a group-by job, or one from before samples
        raise HTTPException(404, f"job {job_id} has no rows to review") from None
    found = []
    for line in body.iter_lines():
        row = json.loads(line)
        sentences = split_sentences(row["text"])
        found.append(
            RowOut(**row, input_sentences=sentences, positions=summary_positions(sentences, row["summary"]))
        )
    method = options.from_strings(job.options).method or settings.summarizer_method
    return RowsOut(job_id=job_id, method=method, rows=found)


@router.get(
    "/jobs/{job_id}/summary",
    response_class=RedirectResponse,
    status_code=303,
    responses={200: DOWNLOAD_RESPONSE, 404: ERROR_RESPONSES[404], **NEEDS_STACK},
)
def summary(job_id: str, request: Request) -> Response:
    """303 to a short-lived presigned GET of the job's summary, named after its input; with
    `Accept: application/json`, that URL as JSON (the page fetches it with its token)."""
    settings = _require_batch()
    job = _succeeded_job(settings, job_id)
    name = options.from_strings(job.options).summary_name
    download = f"{PurePosixPath(job.input_key).stem}.{name}"
    url = _s3().generate_presigned_url(
        "get_object",
        Params={
            "Bucket": settings.output_bucket,
            "Key": keys.output_key(job_id, name),
            "ResponseContentDisposition": attachment(download),
        },
        ExpiresIn=DOWNLOAD_EXPIRES_S,
    )
    headers = {"Cache-Control": "no-store"}
    if wants_url(request):
        answer = DownloadOut(url=url, expires_in=DOWNLOAD_EXPIRES_S)
        return JSONResponse(answer.model_dump(), headers=headers)
    return RedirectResponse(url, status_code=303, headers=headers)
