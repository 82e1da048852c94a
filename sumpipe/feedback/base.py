"""The feedback store: what stakeholders decided about the summaries they were shown.

A decision is one row, never changed once written: two reviewers deciding on the same text at
the same time write two rows, and the export has both (no read-modify-write, so nothing to lose).
Each decision carries an id the page makes when the reviewer clicks; recording it again (a retried
request) is answered as already recorded, not written twice.

Backends (like the ledger's): `SqliteFeedbackStore`, a file, the default for `sumpipe serve`, and
`DynamoFeedbackStore`, the stack's table when deployed. The same contract tests run against both.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, field, fields
from datetime import UTC, datetime
from typing import Protocol

APPROVE, CORRECT, REJECT = "approve", "correct", "reject"
DECISIONS = (APPROVE, CORRECT, REJECT)


@dataclass(frozen=True)
class Decision:
    text_id: str  # the text's id: a batch row's id column, or a hash of a pasted text
    text: str
    method: str  # the summarizer method that made the summary shown
    summary_shown: str
    decision: str  # one of DECISIONS
    corrected_summary: str  # what the reviewer wanted instead ("" unless decision is correct)
    reviewer: str
    time: float  # when it was decided, seconds since the epoch
    reason: str = ""  # why (rejections; optional)
    job_id: str = ""  # the batch job the text came from ("" for a pasted text)
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)


# The export's columns (GET /feedback.csv), in order: the decision's fields, its time as ISO 8601.
EXPORT_COLUMNS = tuple(f.name for f in fields(Decision))


class FeedbackStore(Protocol):
    def record(self, decision: Decision) -> bool:
        """Write `decision`; False when one with its id was already recorded (nothing is written)."""
        ...

    def decisions(self) -> Iterator[Decision]:
        """Every recorded decision, oldest first."""
        ...


def export_rows(decisions: Iterable[Decision]) -> Iterator[str]:
    """The CSV export, a line at a time (header first), so a large store streams."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def take() -> str:
        line = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return line

    writer.writerow(EXPORT_COLUMNS)
    yield take()
    for decision in decisions:
        row = list(astuple(decision))
        row[EXPORT_COLUMNS.index("time")] = datetime.fromtimestamp(decision.time, UTC).isoformat(
            timespec="milliseconds"
        )
        writer.writerow(row)
        yield take()
