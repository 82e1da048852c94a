"""GET /feedback.csv behind API Gateway, where a response can't carry an export of any size.

A Lambda's response is at most 6 MB (Mangum gathers a streamed body into one response, and past
the limit API Gateway answers 500), while the export grows with every decision and one text may
be 100,000 characters. So there the export is written to the output bucket, under a key of its
own (sumpipe.keys.feedback_export_key), and the browser is sent (303) to a short-lived presigned
GET of it, as a job's summary is. `sumpipe serve` streams it instead.

The object is the stream's own CSV (sumpipe/feedback/export.py), spooled line by line to a
temporary file (a Lambda's /tmp) and uploaded with boto3's managed transfer, which switches to a
multipart upload for a large one. The presigned GET is signed with the API's own credentials, whose
role may read only the exports (iam/api.json).
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from sumpipe import keys
from sumpipe.api.batch import DOWNLOAD_EXPIRES_S
from sumpipe.api.filenames import attachment
from sumpipe.feedback import Decision, export_rows

EXPORT_NAME = "feedback.csv"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


def behind_api_gateway(scope: Mapping[str, Any]) -> bool:
    """Whether the request came through API Gateway: Mangum puts the event in the ASGI scope."""
    return "aws.event" in scope


def write_export(s3: Any, bucket: str, decisions: Iterable[Decision], made_at: float) -> str:
    """The export of `decisions` written to `bucket`; its key."""
    key = keys.feedback_export_key(made_at, secrets.token_hex(8))
    with tempfile.TemporaryFile() as spool:
        for line in export_rows(decisions):
            spool.write(line.encode("utf-8"))
        spool.seek(0)
        s3.upload_fileobj(spool, bucket, key, ExtraArgs={"ContentType": CSV_MEDIA_TYPE})
    return key


def download_url(s3: Any, bucket: str, key: str) -> str:
    """A presigned GET of the export at `key`, saved as feedback.csv, as short-lived as a summary's."""
    return s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": key, "ResponseContentDisposition": attachment(EXPORT_NAME)},
        ExpiresIn=DOWNLOAD_EXPIRES_S,
    )
