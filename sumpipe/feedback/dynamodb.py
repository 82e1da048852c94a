"""The feedback store in the stack's DynamoDB table (deploy/template.yaml `FeedbackTable`, key
`decision_id`). Each decision is one conditional put (`attribute_not_exists`), so a retried
request never writes twice and two reviewers' decisions are two items, both kept.

The per-reviewer quota is a counter item per reviewer and minute in the same table, keyed
`rate#<minute>#<reviewer>` (a page's decision id has no "#", so never one of these), raised in the
same transaction as the put on condition it is under the limit: requests at once can't all pass
it. Counters expire through the table's TTL (`expires`) once their minute is over; the API's role
may update only these keys (iam/api.json)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from sumpipe.feedback.base import Decision, DecisionIdReused, is_retry
from sumpipe.feedback.quota import FeedbackLimits, minute_of

RATE_KEY_PREFIX = "rate#"
_ATTEMPTS = 5
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


def _decision(item: dict[str, Any]) -> Decision:
    values = {name: _deserialize(value) for name, value in item.items()}
    values["time"] = float(values["time"])
    return Decision(**values)


class DynamoFeedbackStore:
    """A boto3 low-level DynamoDB client and the table's name."""

    def __init__(self, dynamodb: Any, table: str, limits: FeedbackLimits) -> None:
        self._db = dynamodb
        self._table = table
        self.limits = limits

    def record(self, decision: Decision) -> bool:
        self.limits.check_size(decision)
        item = {
            name: _serialize(Decimal(str(value)) if isinstance(value, float) else value)
            for name, value in asdict(decision).items()
        }
        minute = minute_of(decision)
        put = {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(decision_id)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        count = {
            "TableName": self._table,
            "Key": {"decision_id": {"S": f"{RATE_KEY_PREFIX}{minute}#{decision.reviewer}"}},
            "UpdateExpression": "ADD #recorded :one SET #expires = :expires",
            "ConditionExpression": "attribute_not_exists(#recorded) OR #recorded < :limit",
            "ExpressionAttributeNames": {"#recorded": "recorded", "#expires": "expires"},
            "ExpressionAttributeValues": {
                ":one": {"N": "1"},
                ":limit": {"N": str(self.limits.decisions_per_minute)},
                ":expires": {"N": str((minute + 2) * 60)},
            },
        }
        attempt = 0
        while True:
            attempt += 1
            try:
                self._db.transact_write_items(TransactItems=[{"Put": put}, {"Update": count}])
                return True
            except self._db.exceptions.TransactionCanceledException as error:
                reasons = error.response["CancellationReasons"]
                codes = [reason.get("Code") for reason in reasons]
                if codes[0] == "ConditionalCheckFailed":
                    if is_retry(_decision(reasons[0]["Item"]), decision):
                        return False
                    raise DecisionIdReused(decision.decision_id) from None
                if codes[1] == "ConditionalCheckFailed":
                    raise self.limits.rate_exceeded(decision) from None
                # Another transaction on the reviewer's counter at the same moment: try again.
                if "TransactionConflict" not in codes or attempt == _ATTEMPTS:
                    raise
                time.sleep(0.02 * 2**attempt)

    def decisions(self) -> Iterator[Decision]:
        found: list[Decision] = []
        for page in self._db.get_paginator("scan").paginate(TableName=self._table, ConsistentRead=True):
            found.extend(
                _decision(item)
                for item in page["Items"]
                if not item["decision_id"]["S"].startswith(RATE_KEY_PREFIX)
            )
        # A scan has no order: sorted here as the SQLite store sorts.
        found.sort(key=lambda d: (d.time, d.decision_id))
        yield from found
