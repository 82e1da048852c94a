"""The feedback store: what stakeholders decided about the summaries they were shown.

A decision is one row, never changed once written: two reviewers deciding on the same text at
the same time write two rows, and the export has both (no read-modify-write, so nothing to lose).
Each decision carries an id the page makes when the reviewer clicks; recording it again (a retried
request) is answered as already recorded, not written twice. The same id with a different decision
is refused: a reused id, not a retry.

Every store enforces the same quotas (sumpipe/feedback/quota.py), checked and written atomically.

Backends (like the ledger's): `SqliteFeedbackStore`, a file, the default for `sumpipe serve`, and
`DynamoFeedbackStore`, the stack's table when deployed. The same contract tests run against both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
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


def is_retry(recorded: Decision, decision: Decision) -> bool:
    """`decision` is `recorded` sent again: everything but the time (stamped per request) equal."""
    return replace(decision, time=recorded.time) == recorded


class DecisionRefused(Exception):
    """`FeedbackStore.record` wrote nothing; the message says why, in one line for the reviewer."""


class DecisionIdReused(DecisionRefused):
    def __init__(self, decision_id: str) -> None:
        super().__init__(f"decision_id {decision_id} was already recorded with a different decision")


class DecisionTooLarge(DecisionRefused):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the decision's text fields are {size:,} bytes (UTF-8), over the limit of {limit:,} "
            "bytes per decision (feedback_max_decision_bytes)"
        )


class TooManyDecisions(DecisionRefused):
    def __init__(self, reviewer: str, limit: int, retry_after: int) -> None:
        who = f"reviewer {reviewer!r}" if reviewer else "reviewers without a name"
        super().__init__(
            f"{who} recorded {limit} decisions this minute, the limit per minute "
            f"(feedback_decisions_per_minute); try again in {retry_after} s"
        )
        self.retry_after = retry_after


class FeedbackStore(Protocol):
    def record(self, decision: Decision) -> bool:
        """Write `decision`; False when this very decision was already recorded (a retry: nothing
        is written). Raises a DecisionRefused when its id was recorded with a different decision,
        or it is over a quota."""
        ...

    def decisions(self) -> Iterator[Decision]:
        """Every recorded decision, oldest first."""
        ...
