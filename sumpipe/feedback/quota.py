"""The feedback store's quotas, so one client can't grow it without bound: a decision's size in
bytes, and decisions per reviewer per minute. The reviewer is the decision's `reviewer`, the name
the page sends (the only identity the API has; decisions without one share a quota). A minute is
a calendar minute (UTC) of the decision's time, so every backend counts the same window.

Each backend checks the rate atomically with its write (sqlite.py under its write lock,
dynamodb.py as a counter in the same transaction): requests at once can't all slip under it."""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

from sumpipe.feedback.base import Decision, DecisionTooLarge, TooManyDecisions
from sumpipe.settings import Settings


def decision_bytes(decision: Decision) -> int:
    """What a decision costs the store: its text fields, in UTF-8 bytes."""
    return sum(len(value.encode("utf-8")) for value in astuple(decision) if isinstance(value, str))


def minute_of(decision: Decision) -> int:
    """The calendar minute the decision falls in, counted since the epoch."""
    return math.floor(decision.time / 60)


@dataclass(frozen=True)
class FeedbackLimits:
    max_decision_bytes: int
    decisions_per_minute: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackLimits:
        return cls(settings.feedback_max_decision_bytes, settings.feedback_decisions_per_minute)

    def check_size(self, decision: Decision) -> None:
        size = decision_bytes(decision)
        if size > self.max_decision_bytes:
            raise DecisionTooLarge(size, self.max_decision_bytes)

    def rate_exceeded(self, decision: Decision) -> TooManyDecisions:
        """The refusal of a decision over its reviewer's quota: retry when its minute is over."""
        retry_after = max(1, math.ceil((minute_of(decision) + 1) * 60 - decision.time))
        return TooManyDecisions(decision.reviewer, self.decisions_per_minute, retry_after)
