"""Stakeholders' decisions on summaries: the contract (base) and its backends (sqlite, dynamodb)."""

from __future__ import annotations

from sumpipe.feedback.base import (
    APPROVE,
    CORRECT,
    DECISIONS,
    EXPORT_COLUMNS,
    REJECT,
    Decision,
    FeedbackStore,
    export_rows,
)
from sumpipe.feedback.dynamodb import DynamoFeedbackStore
from sumpipe.feedback.sqlite import SqliteFeedbackStore
from sumpipe.settings import Settings


def open_store(settings: Settings) -> FeedbackStore:
    """The stack's table when the settings name one (deployed), else the SQLite file."""
    if settings.feedback_table:
        from sumpipe import aws

        return DynamoFeedbackStore(aws.client("dynamodb"), settings.feedback_table)
    return SqliteFeedbackStore(settings.feedback_db)


__all__ = [
    "APPROVE",
    "CORRECT",
    "DECISIONS",
    "EXPORT_COLUMNS",
    "REJECT",
    "Decision",
    "DynamoFeedbackStore",
    "FeedbackStore",
    "SqliteFeedbackStore",
    "export_rows",
    "open_store",
]
