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
from sumpipe.feedback.sqlite import SqliteFeedbackStore
from sumpipe.settings import Settings


def open_store(settings: Settings) -> FeedbackStore:
    """The stack's table when the settings name one (deployed), else the SQLite file."""
    if settings.feedback_table:
        # Imported here: boto3 costs the API's cold start a few hundred ms, and only this needs it.
        from sumpipe import aws
        from sumpipe.feedback.dynamodb import DynamoFeedbackStore

        return DynamoFeedbackStore(aws.client("dynamodb"), settings.feedback_table)
    return SqliteFeedbackStore(settings.feedback_db)


__all__ = [
    "APPROVE",
    "CORRECT",
    "DECISIONS",
    "EXPORT_COLUMNS",
    "REJECT",
    "Decision",
    "FeedbackStore",
    "SqliteFeedbackStore",
    "export_rows",
    "open_store",
]
