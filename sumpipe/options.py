"""Per-job options: what one upload asks of its summary. The contract between `sumpipe submit`,
the trigger, the ledger, the runner and the manifest; nothing else knows these names.

They travel as the input object's own S3 metadata, so they belong to that very version (no
sidecar to race): `sumpipe submit reviews.csv --text-column body --sentences 2` writes
``x-amz-meta-sumpipe-text-column: body``; `aws s3 cp reviews.csv s3://input/ --metadata
sumpipe-text-column=body,sumpipe-sentences=2` does the same; a flag (`sumpipe-themes`) is "true"
or "false". Values are percent-decoded (S3 metadata is ASCII; `submit` percent-encodes a column
name that is not). Metadata not starting with ``sumpipe-`` is the user's own and ignored.

The trigger checks them before any instance starts: a bad one fails the job at once, with
error.json naming the option. The runner turns them into `summarize` flags; a column the input
doesn't have is the summarizer's own one-line error (exit 2), also in error.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from sumpipe import keys

METADATA_PREFIX = "sumpipe-"
METHODS = ("default", "kmeans")
MAX_NAME_CHARS = 256


class OptionError(ValueError):
    """A job option that can't be honoured; the message names it and says why."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"job option {METADATA_PREFIX}{option}: {message}")
        self.option = option


@dataclass(frozen=True)
class JobOptions:
    """None: the summarizer's default (its text column `Text`, its id column `Id` when present,
    the method's budget, one summary per row) or, for `method`, the stack's
    SUMPIPE_SUMMARIZER_METHOD."""

    text_column: str | None = None
    id_column: str | None = None
    sentences: int | None = None
    ratio: float | None = None
    method: str | None = None
    group_by: str | None = None
    # With group_by: each row's 1-5 star rating (None: the summarizer's, Score when present), and
    # a row per theme instead of one per group.
    stars: str | None = None
    themes: bool = False
    format: str = "csv"

    def __post_init__(self) -> None:
        for option in ("text_column", "id_column", "group_by", "stars"):
            _check_name(_flag(option), getattr(self, option))
        if not isinstance(self.themes, bool):
            raise OptionError("themes", f"must be true or false, got {self.themes!r}")
        for option in ("stars", "themes"):
            if getattr(self, option) not in (None, False) and self.group_by is None:
                raise OptionError(option, f"is for group-by summaries; give {METADATA_PREFIX}group-by too")
        if self.sentences is not None and (isinstance(self.sentences, bool) or self.sentences < 1):
            raise OptionError("sentences", f"must be a whole number of at least 1, got {self.sentences!r}")
        if self.ratio is not None and not (math.isfinite(self.ratio) and 0 < self.ratio <= 1):
            raise OptionError("ratio", f"must be a fraction in (0, 1], got {self.ratio!r}")
        if self.sentences is not None and self.ratio is not None:
            raise OptionError("ratio", "give sentences or ratio, not both")
        if self.method is not None and self.method not in METHODS:
            raise OptionError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.format not in keys.SUMMARY_FORMATS:
            formats = ", ".join(keys.SUMMARY_FORMATS)
            raise OptionError("format", f"must be one of {formats}, got {self.format!r}")
        if self.group_by is not None and self.method == "kmeans":
            raise OptionError("method", "kmeans does not apply to group-by summaries; leave it out")

    @property
    def summary_name(self) -> str:
        """The job's summary file: summary.csv, summary.jsonl or summary.parquet."""
        return keys.summary_name(self.format)

    def as_strings(self) -> dict[str, str]:
        """The options that are set, by option name (text-column, ...): the ledger's record, the
        manifest's, and (prefixed and percent-encoded) the object metadata."""
        values = {
            "text-column": self.text_column,
            "id-column": self.id_column,
            "sentences": None if self.sentences is None else str(self.sentences),
            "ratio": None if self.ratio is None else repr(self.ratio),
            "method": self.method,
            "group-by": self.group_by,
            "stars": self.stars,
            "themes": "true" if self.themes else None,
            "format": None if self.format == "csv" else self.format,
        }
        return {name: value for name, value in values.items() if value is not None}

    def as_metadata(self) -> dict[str, str]:
        return {METADATA_PREFIX + name: quote(value, safe="") for name, value in self.as_strings().items()}

    def summarize_args(self, default_method: str) -> list[str]:
        """The `summarize` flags for these options (an argument list, never a shell line)."""
        args = ["--method", self.method or default_method, "--output-format", self.format]
        for flag, value in self.as_strings().items():
            if flag == "themes":
                args.append("--themes")
            elif flag not in ("method", "format"):
                args += [f"--{flag}", value]
        return args


def _flag(attribute: str) -> str:
    return attribute.replace("_", "-")


def _check_name(option: str, value: str | None) -> None:
    if value is None:
        return
    if not value:
        raise OptionError(option, "is empty; leave it out for the default")
    if len(value) > MAX_NAME_CHARS:
        raise OptionError(option, f"is {len(value):,} characters, over {MAX_NAME_CHARS}")
    if not value.isprintable():
        raise OptionError(option, f"holds control characters: {value!r}")


def _true_or_false(text: str) -> bool:
    answer = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
        text.strip().lower()
    )
    if answer is None:
        raise ValueError(text)
    return answer


# option name -> (JobOptions attribute, parser, what a bad value should have been); int() and
# float() take the value with spaces around it.
_PARSERS: dict[str, tuple[str, Callable[[str], object], str]] = {
    "text-column": ("text_column", str, ""),
    "id-column": ("id_column", str, ""),
    "sentences": ("sentences", int, "a whole number"),
    "ratio": ("ratio", float, "a number"),
    "method": ("method", str, ""),
    "group-by": ("group_by", str, ""),
    "stars": ("stars", str, ""),
    "themes": ("themes", _true_or_false, "true or false"),
    "format": ("format", str, ""),
}
OPTION_NAMES = tuple(_PARSERS)


def from_strings(values: Mapping[str, str]) -> JobOptions:
    """JobOptions from option names (text-column, ...) and their text; OptionError naming the
    first option that is unknown or bad."""
    arguments: dict[str, object] = {}
    for name, text in values.items():
        if name not in _PARSERS:
            known = ", ".join(METADATA_PREFIX + option for option in _PARSERS)
            raise OptionError(name, f"unknown; the options are {known}")
        attribute, parse, expected = _PARSERS[name]
        try:
            arguments[attribute] = parse(text)
        except ValueError:
            raise OptionError(name, f"must be {expected}, got {text!r}") from None
    return JobOptions(**arguments)  # type: ignore[arg-type]


def from_metadata(metadata: Mapping[str, str]) -> JobOptions:
    """The options an object's user metadata asks for (keys as S3 returns them: lowercase, without
    x-amz-meta-); OptionError naming the first bad one."""
    return from_strings(
        {
            key.lower().removeprefix(METADATA_PREFIX): unquote(value)
            for key, value in metadata.items()
            if key.lower().startswith(METADATA_PREFIX)
        }
    )
