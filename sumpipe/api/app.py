"""The realtime summarization API (`POST /summarize`, `GET /health`) and the review page.

The page (`GET /`, sumpipe/api/static) lets stakeholders summarize a text and approve, correct or
reject the summary; `POST /feedback` records each decision in the feedback store (sumpipe/feedback)
and `GET /feedback.csv` exports them all (deployed, through the output bucket:
sumpipe/api/feedback_download.py). On a stack, the page also uploads tables and lists and
downloads their jobs (sumpipe/api/batch.py). Deployed behind a JWT authorizer, reviewers sign in
on the page first, and a decision is the signed-in reviewer's (sumpipe/api/auth.py).

One ASGI application serves every path: `sumpipe serve` runs it under uvicorn, and the API
Lambda (`lambdas/api/handler.py`) wraps the same object with Mangum. The summarizer runs in the
request path; the word vectors are memory-mapped and loaded once per process.

Bodies are read and checked by sumpipe/api/bodies.py: bad input is a 400 (413 for a body over the
size limit) that names the problem, never a 422 or a 500. Hosts, origins and the headers every
response carries are sumpipe/api/security.py's; every status a route returns is in the OpenAPI
document (tests/functional/test_openapi_conformance.py fuzzes the server against it).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

import glove
from summarizer import Budget, Summarizer
from summarizer.engine import METHODS, Method
from summarizer.split import split_sentences
from sumpipe.api import auth, batch, docs
from sumpipe.api.batch import DOWNLOAD_EXPIRES_S, DOWNLOAD_RESPONSE, DownloadOut, wants_url
from sumpipe.api.bodies import MAX_BODY_BYTES, parse_body
from sumpipe.api.feedback_download import (
    CSV_MEDIA_TYPE,
    EXPORT_NAME,
    behind_api_gateway,
    download_url,
    write_export,
)
from sumpipe.api.filenames import attachment
from sumpipe.api.openapi import ERROR_RESPONSES, document, request_validation_error
from sumpipe.api.security import SecurityMiddleware, require_json_from_own_origin
from sumpipe.feedback import (
    CORRECT,
    Decision,
    DecisionIdReused,
    DecisionRefused,
    DecisionTooLarge,
    FeedbackStore,
    TooManyDecisions,
    export_rows,
    open_store,
)
from sumpipe.settings import Settings, get_settings

MAX_TEXT_CHARS = 100_000
MAX_TEXTS = 100
MAX_SENTENCES = 100
MAX_REASON_CHARS = 2000
# Requests up to this many characters in total are summarized on the event loop (a few ms at most).
INLINE_MAX_CHARS = 10_000


def _whole_float_as_int(value: object) -> object:
    # JSON Schema's "integer" includes 2.0; strict pydantic would refuse it (and still refuses 2.5,
    # "2" and true).
    return int(value) if isinstance(value, float) and value.is_integer() else value


SentenceCount = Annotated[int, Field(ge=1, le=MAX_SENTENCES), BeforeValidator(_whole_float_as_int)]


class SummarizeRequest(BaseModel):
    """Exactly one of `text` / `texts`; at most one of `sentences` / `ratio` (neither: the default budget)."""

    # strict: "3" is not a sentence count and true is not a number; unknown fields are typos, refused.
    # The schema says what the validator below checks: one non-null input, not both budgets.
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
            ],
            "not": {
                "required": ["sentences", "ratio"],
                "properties": {"sentences": {"type": "integer"}, "ratio": {"type": "number"}},
            },
        },
    )

    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="One text to summarize.")
    texts: list[Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]] | None = Field(
        None, min_length=1, max_length=MAX_TEXTS, description="Several texts, summarized as one batch."
    )
    method: Method | None = Field(None, description="Default: $SUMPIPE_SUMMARIZER_METHOD, else default.")
    sentences: SentenceCount | None = Field(None, description="Sentences per summary.")
    ratio: float | None = Field(None, gt=0, le=1, description="Fraction of the input's sentences to keep.")
    with_input_sentences: bool = Field(
        False, description="Also answer every sentence of the input (`input_sentences`), for the page."
    )

    @model_validator(mode="after")
    def _one_input_one_budget(self) -> SummarizeRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" or "texts"')
        if self.sentences is not None and self.ratio is not None:
            raise ValueError('give at most one of "sentences" or "ratio"')
        return self


class SummaryOut(BaseModel):
    summary: str = Field(description='The selected sentences joined by " ".')
    sentences: list[str] = Field(description="The selected sentences, verbatim, in document order.")
    positions: list[int] = Field(description="0-based index of each selected sentence in the input.")
    n_sentences_in: int
    n_sentences_out: int
    status: str = Field(description='"ok", "passthrough", "empty" or "error: <reason>".')
    input_sentences: list[str] | None = Field(
        None, description="Every sentence of the input, when asked for (`positions` index them)."
    )


class BatchOut(BaseModel):
    results: list[SummaryOut] = Field(description="One summary per input text, in input order.")


class FeedbackIn(BaseModel):
    """A reviewer's decision on a summary they were shown (the page sends it)."""

    # The schema says what the validator below checks: "correct" needs a correction with a
    # non-blank character, the other decisions none. (A correction equal to the summary shown is
    # the page's to stop, as it does: JSON Schema can't compare two fields, so the API takes it.)
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "if": {"required": ["decision"], "properties": {"decision": {"const": "correct"}}},
            "then": {
                "required": ["corrected_summary"],
                "properties": {"corrected_summary": {"pattern": r"\S"}},
            },
            "else": {"properties": {"corrected_summary": {"maxLength": 0}}},
        },
    )

    decision_id: str | None = Field(
        None,
        pattern=r"^[0-9A-Za-z-]{8,64}$",
        description="Made by the client once per click, so a retried request is recorded once.",
    )
    text_id: str | None = Field(
        None, max_length=200, description="The text's id (a batch row's); default: a hash of the text."
    )
    job_id: str = Field("", max_length=64, description="The batch job the text came from, if any.")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    method: Method
    summary_shown: str = Field(max_length=MAX_TEXT_CHARS)
    decision: Literal["approve", "correct", "reject"]
    corrected_summary: str = Field("", max_length=MAX_TEXT_CHARS)
    reason: str = Field("", max_length=MAX_REASON_CHARS)
    reviewer: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _correction_only_with_correct(self) -> FeedbackIn:
        if self.decision == CORRECT:
            if not self.corrected_summary.strip():
                raise ValueError('decision "correct" needs a corrected_summary')
        elif self.corrected_summary:
            raise ValueError('corrected_summary is only for decision "correct"')
        return self


FEEDBACK_SCHEMA = FeedbackIn.model_json_schema()


class FeedbackOut(BaseModel):
    decision_id: str
    recorded: bool = Field(description="False: a decision with this id was already recorded.")


class HealthOut(BaseModel):
    status: Literal["ok"]
    vectors_loaded: bool


class Engine:
    """The process's word vectors (loaded once, memory-mapped) and its summarizer per method."""

    def __init__(self) -> None:
        self._vectors: glove.WordVectors | None = None
        self._lock = threading.Lock()
        self.summarizer = lru_cache(maxsize=len(METHODS))(self._build_summarizer)

    @property
    def vectors_loaded(self) -> bool:
        return self._vectors is not None

    def vectors(self) -> glove.WordVectors:
        if self._vectors is None:
            with self._lock:
                if self._vectors is None:
                    self._vectors = glove.load()  # the default is memory-mapped; $SUMPIPE_GLOVE overrides
        return self._vectors

    def _build_summarizer(self, method: Method) -> Summarizer:
        return Summarizer(method=method, vectors=self.vectors())

    def summarize(
        self,
        texts: Sequence[str],
        method: Method,
        sentences: int | None,
        ratio: float | None,
        with_input_sentences: bool = False,
    ) -> list[SummaryOut]:
        # neither: the method's own default
        budget = None if sentences is None and ratio is None else Budget(sentences=sentences, ratio=ratio)
        summaries = self.summarizer(method).summarize_many(list(texts), budget)
        return [
            SummaryOut(
                summary=" ".join(s.sentences),
                sentences=s.sentences,
                positions=s.positions,
                n_sentences_in=s.n_input,
                n_sentences_out=len(s.sentences),
                status=s.status,
                input_sentences=split_sentences(text) if with_input_sentences else None,
            )
            for text, s in zip(texts, summaries, strict=True)
        ]

    def warm(self) -> None:
        """Load the vectors and run one tiny summary, so lazy imports happen before the first request."""
        self.summarize(["Warm up. The vectors are loaded now."], get_settings().summarizer_method, None, None)


engine = Engine()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The local server warms up before accepting connections; the Lambda handler warms up in its
    # init phase instead (Mangum would run a lifespan on every invocation).
    await run_in_threadpool(engine.warm)
    yield


app = FastAPI(
    title="sumpipe realtime summarization",
    version="1",
    summary="Extractive summaries (GloVe sentence embeddings, nearest-to-centroid sentences).",
    lifespan=_lifespan,
    # /docs is sumpipe/api/docs.py's (Swagger UI from the package, not a CDN); no ReDoc.
    docs_url=None,
    redoc_url=None,
)
app.add_middleware(SecurityMiddleware)
app.add_exception_handler(RequestValidationError, request_validation_error)
app.openapi = lambda: document(app)  # type: ignore[method-assign]


@app.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not bad input: answered in the API's JSON error shape. Starlette logs the traceback.
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


@app.get("/health")
def health() -> HealthOut:
    return HealthOut(status="ok", vectors_loaded=engine.vectors_loaded)


@app.post(
    "/summarize",
    response_model=SummaryOut | BatchOut,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SummarizeRequest.model_json_schema()}},
        }
    },
    responses={
        400: {
            **ERROR_RESPONSES[400],
            "description": "Malformed body: not UTF-8, not JSON, wrong types, unknown fields, a text "
            f"over {MAX_TEXT_CHARS} characters, more than {MAX_TEXTS} texts.",
        },
        413: {**ERROR_RESPONSES[413], "description": f"Body over {MAX_BODY_BYTES} bytes."},
    },
)
async def summarize(request: Request) -> SummaryOut | BatchOut:
    """Summarize `{"text": ...}` (answers one summary) or `{"texts": [...]}` (answers `results`)."""
    parsed = await parse_body(request, SummarizeRequest)
    texts = [parsed.text] if parsed.text is not None else parsed.texts
    method = parsed.method or get_settings().summarizer_method
    job = (texts, method, parsed.sentences, parsed.ratio, parsed.with_input_sentences)
    # A review-sized request takes about a millisecond: handing it to a thread would cost a good
    # part of that again. A big one goes to a worker thread so the event loop keeps serving.
    if sum(map(len, texts)) <= INLINE_MAX_CHARS:
        results = engine.summarize(*job)
    else:
        results = await run_in_threadpool(engine.summarize, *job)
    return results[0] if parsed.text is not None else BatchOut(results=results)


STATIC = Path(__file__).with_name("static")
# The page loads only its own files; the user's text is only ever inserted as text, and this keeps
# any injected markup from running scripts or loading anything.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        # No form-action: the upload form is posted to the input bucket's own address.
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
# Where the sign-in config goes in the page, and the body's opening tag, marked signed out so
# nothing but the sign-in form shows before page.js runs.
PAGE_HEAD_MARK = '<meta charset="utf-8">\n'
PAGE_BODY_MARK = "<body>"
app.mount("/static", StaticFiles(directory=STATIC), name="static")
app.include_router(batch.router)
app.include_router(docs.router)


@lru_cache(maxsize=4)
def _page(config_json: str) -> tuple[str, dict[str, str]]:
    """index.html and its headers, for the sign-in config (JSON; "" for none)."""
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    if not config_json:
        return text, PAGE_HEADERS
    config = json.loads(config_json)
    if PAGE_HEAD_MARK not in text or PAGE_BODY_MARK not in text:
        raise RuntimeError("index.html lost the marks the sign-in config is put at")
    text = text.replace(PAGE_HEAD_MARK, PAGE_HEAD_MARK + auth.meta_tag(config) + "\n", 1)
    text = text.replace(PAGE_BODY_MARK, '<body class="signed-out">', 1)
    # The page's scripts may call Cognito's endpoint and nothing else outside the page's origin.
    policy = PAGE_HEADERS["Content-Security-Policy"].replace(
        "default-src 'self';",
        f"default-src 'self'; connect-src 'self' {auth.endpoint_origin(config['endpoint'])};",
    )
    return text, {**PAGE_HEADERS, "Content-Security-Policy": policy}


@app.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    """The review page, with its sign-in config when reviewers sign in (no call needed to learn it)."""
    config = auth.page_config(get_settings())
    text, headers = _page(json.dumps(config, sort_keys=True) if config else "")
    return HTMLResponse(text, headers=headers)


@lru_cache(maxsize=4)
def _store_for(settings: Settings) -> FeedbackStore:
    return open_store(settings)


def feedback_store() -> FeedbackStore:
    """The process's feedback store, opened on first use (settings are read then, not at import)."""
    return _store_for(get_settings())


def text_id_of(text: str) -> str:
    """A pasted text's id: the same text gets the same id, so decisions on it can be grouped."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@app.post(
    "/feedback",
    status_code=201,
    dependencies=[Depends(require_json_from_own_origin)],
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": FEEDBACK_SCHEMA}}}
    },
    responses={
        200: {"model": FeedbackOut, "description": "Already recorded (a retry): nothing written."},
        **{status: ERROR_RESPONSES[status] for status in (400, 403, 415)},
        # The store's refusals (sumpipe/feedback/quota.py), mapped by _refusal below.
        409: {**ERROR_RESPONSES[400], "description": "The decision_id was recorded with another decision."},
        413: {
            **ERROR_RESPONSES[413],
            "description": "The body is over the size limit, or the decision over the store's "
            "(settings.feedback_max_decision_bytes).",
        },
        429: {
            **ERROR_RESPONSES[400],
            "description": "The reviewer recorded settings.feedback_decisions_per_minute decisions "
            "this minute; Retry-After says when to try again.",
            "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
        },
    },
)
async def feedback(request: Request) -> Any:
    """Record a reviewer's decision: approve, correct (with the corrected summary) or reject.
    Behind a JWT authorizer the reviewer is the signed-in user, whatever the body says."""
    parsed = await parse_body(request, FeedbackIn)
    # Signed in, a reviewer can't record decisions (or spend a quota) in someone else's name.
    reviewer = auth.signed_in_user(request.scope) or parsed.reviewer.strip()
    decision = Decision(
        text_id=parsed.text_id or text_id_of(parsed.text),
        text=parsed.text,
        method=parsed.method,
        summary_shown=parsed.summary_shown,
        decision=parsed.decision,
        corrected_summary=parsed.corrected_summary.strip(),
        reason=parsed.reason.strip(),
        reviewer=reviewer,
        time=time.time(),
        job_id=parsed.job_id,
        **({"decision_id": parsed.decision_id} if parsed.decision_id else {}),
    )
    try:
        recorded = await run_in_threadpool(feedback_store().record, decision)
    except DecisionRefused as refused:
        return _refusal(refused)
    answer = FeedbackOut(decision_id=decision.decision_id, recorded=recorded)
    return answer if recorded else JSONResponse(answer.model_dump(), status_code=200)


def _refusal(refused: DecisionRefused) -> JSONResponse:
    """A decision the store refused, as the HTTP status that says why."""
    if isinstance(refused, TooManyDecisions):
        headers = {"Retry-After": str(refused.retry_after)}
        return JSONResponse({"detail": str(refused)}, status_code=429, headers=headers)
    status = {DecisionTooLarge: 413, DecisionIdReused: 409}[type(refused)]
    return JSONResponse({"detail": str(refused)}, status_code=status)


@app.get(
    "/feedback.csv",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The CSV (`sumpipe serve`, whatever the Accept header says). Deployed, "
            "with `Accept: application/json`: where to download it, as for the 303.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                **DOWNLOAD_RESPONSE["content"],
            },
        },
        303: {
            "description": "Deployed (behind API Gateway): to a presigned GET (5 minutes) of the "
            "same CSV, written to the output bucket, since a Lambda's response is at most 6 MB."
        },
    },
)
def feedback_export(request: Request) -> Response:
    """Every decision as CSV (sumpipe/feedback/export.py), oldest first; cells a spreadsheet
    would run are neutralized, ids kept exact unless they could execute."""
    settings = get_settings()
    decisions = feedback_store().decisions()
    # A function without an output bucket (not the template's) streams: fine up to 6 MB.
    if behind_api_gateway(request.scope) and settings.output_bucket:
        from sumpipe import aws  # boto3 only when used: it costs the API's cold start

        s3 = aws.client("s3", signature_version="s3v4")
        key = write_export(s3, settings.output_bucket, decisions, time.time())
        url = download_url(s3, settings.output_bucket, key)
        headers = {"Cache-Control": "no-store"}
        # The page sends a bearer token, which a followed redirect or a link can't carry: it asks
        # for the address and goes there itself.
        if wants_url(request):
            answer = DownloadOut(url=url, expires_in=DOWNLOAD_EXPIRES_S)
            return JSONResponse(answer.model_dump(), headers=headers)
        return RedirectResponse(url, status_code=303, headers=headers)
    return StreamingResponse(
        export_rows(decisions),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": attachment(EXPORT_NAME)},
    )
