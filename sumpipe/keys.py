"""The S3 key layout and the job id: the contract between the trigger, the runner and stop_ec2."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote_plus

JOB_ID_RE = re.compile(r"j-[0-9a-f]{20}")  # whole string only: used with fullmatch
JOBS_PREFIX = "jobs/"
# A job's summary is summary.<format>, the format chosen per job (sumpipe.options); CSV by default.
SUMMARY_FORMATS = ("csv", "jsonl", "parquet")
SUMMARY = "summary.csv"
SUMMARIES = tuple(f"summary.{fmt}" for fmt in SUMMARY_FORMATS)
MANIFEST = "manifest.json"
ERROR = "error.json"
RUNNER_LOG = "runner.log.jsonl"
# The first rows with their texts and summaries (`summarize --sample`), for the review page.
SAMPLE = "sample.jsonl"
# Output files whose creation finishes a job (the output bucket notifies only these).
FINISHING_FILES = (*SUMMARIES, ERROR)
# The review page's feedback exports, written to the output bucket for a presigned download when
# the API runs behind API Gateway (sumpipe/api/feedback_download.py). Outside jobs/, so no job
# event comes of them; only the API's role may write and read them (iam/api.json), and the
# template's lifecycle rule deletes them after a day.
EXPORTS_PREFIX = "exports/"


def summary_name(fmt: str) -> str:
    if fmt not in SUMMARY_FORMATS:
        raise ValueError(f"not a summary format: {fmt!r}")
    return f"summary.{fmt}"


def job_id(bucket: str, key: str, version: str) -> str:
    """The same object version (or etag, when the bucket is unversioned) is always the same job."""
    digest = hashlib.sha256(f"{bucket}\0{key}\0{version}".encode()).hexdigest()
    return "j-" + digest[:20]


def is_job_id(value: str) -> bool:
    return JOB_ID_RE.fullmatch(value) is not None


def require_job_id(value: str) -> str:
    if not is_job_id(value):
        raise ValueError(f"not a job id: {value[:40]!r}")
    return value


def output_key(job: str, name: str) -> str:
    return f"{JOBS_PREFIX}{require_job_id(job)}/{name}"


def feedback_export_key(made_at: float, nonce: str) -> str:
    """An export's own object (two exports at once never share one): its UTC time, so a listing is
    in time order, then `nonce`, a random hex string."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", nonce):
        raise ValueError(f"not a hex nonce: {nonce[:70]!r}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(made_at))
    return f"{EXPORTS_PREFIX}feedback-{stamp}-{nonce}.csv"


def decode_event_key(raw: str) -> str:
    """S3 event notifications carry keys URL-encoded (spaces as '+')."""
    return unquote_plus(raw)


@dataclass(frozen=True)
class OutputFile:
    job_id: str
    name: str


def parse_output_key(key: str) -> OutputFile | None:
    """`jobs/<job_id>/<name>` -> OutputFile, anything else -> None."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != JOBS_PREFIX or not is_job_id(parts[1]):
        return None
    return OutputFile(job_id=parts[1], name=parts[2])
