"""Stakeholders' decisions on summaries: the contract (base), its quotas (quota), its backends
(sqlite, dynamodb) and the CSV export (export)."""

from __future__ import annotations

from sumpipe.feedback.base import (
    APPROVE,
    CORRECT,
    DECISIONS,
    EXPORT_COLUMNS,
    REJECT,
    Decision,
    DecisionIdReused,
    DecisionRefused,
    DecisionTooLarge,
    FeedbackStore,
    TooManyDecisions,
)
from sumpipe.feedback.export import export_rows
from sumpipe.feedback.quota import FeedbackLimits
from sumpipe.feedback.sqlite import SqliteFeedbackStore
from sumpipe.settings import Settings


def open_store(settings: Settings) -> FeedbackStore:
    """The stack's table when the settings name one (deployed), else the SQLite file."""
    limits = FeedbackLimits.from_settings(settings)
    if settings.feedback_table:
        # Imported here: boto3 costs the API's cold start a few hundred ms, and only this needs it.
        from sumpipe import aws
        from sumpipe.feedback.dynamodb import DynamoFeedbackStore

        return DynamoFeedbackStore(aws.client("dynamodb"), settings.feedback_table, limits)
    return SqliteFeedbackStore(settings.feedback_db, limits)


__all__ = [
    "APPROVE",
    "CORRECT",
    "DECISIONS",
    "EXPORT_COLUMNS",
    "REJECT",
    "Decision",
    "DecisionIdReused",
    "DecisionRefused",
    "DecisionTooLarge",
    "FeedbackLimits",
    "FeedbackStore",
    "SqliteFeedbackStore",
    "TooManyDecisions",
    "export_rows",
    "open_store",
]
