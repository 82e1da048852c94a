"""The name a download is saved under, as a `Content-Disposition` header (RFC 6266).

The name comes from an input key, and input keys are anyone's: `aws s3 cp` takes any key, not just
the page's checked file names. So the header is built here and only here: the name is reduced to
a plain base name (no quotes, backslashes, semicolons, control characters or path separators, so
nothing can end the parameter and add one), and sent twice, as an ASCII `filename=` fallback and
as `filename*=UTF-8''` with every other byte percent-encoded (RFC 8187), which browsers prefer.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# What a name keeps: letters and digits of any script, and these. Everything else becomes "_".
_UNSAFE = re.compile(r"[^\w .()+-]")
_ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9 ._()+-]")
MAX_NAME_CHARS = 150
FALLBACK_NAME = "download"


def safe_download_name(name: str) -> str:
    """`name` as a file name any system saves as it is: its last path segment, unsafe characters
    replaced, no leading dots (hidden files), at most MAX_NAME_CHARS characters."""
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip(" .")
    if len(cleaned) > MAX_NAME_CHARS:
        _, dot, suffix = cleaned.rpartition(".")
        keep = suffix if dot and len(suffix) <= 10 else ""
        cleaned = cleaned[: MAX_NAME_CHARS - len(keep) - 1].rstrip(" .") + (f".{keep}" if keep else "")
    return cleaned or FALLBACK_NAME


def attachment(name: str) -> str:
    """The `Content-Disposition` value that saves the response as (a safe form of) `name`."""
    safe = safe_download_name(name)
    ascii_name = _ASCII_UNSAFE.sub("_", safe).strip(" .") or FALLBACK_NAME
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != safe:
        header += f"; filename*=UTF-8''{quote(safe, safe='')}"
    return header
